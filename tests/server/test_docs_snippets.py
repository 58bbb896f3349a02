"""The iframe snippets shown in README.md and docs/*.md are the one `embed_snippet` produces.

The docs show the snippet typed out by hand, for a made-up server and campaign. Each one must carry
exactly the attributes `distribute.embed.embed_snippet` gives that server and campaign: the same
title, size, style, loading, referrer policy and sandbox tokens, nothing more and nothing less. Only
the server URL and the campaign (and a `?throttle=` level, which embed_snippet also takes) are the
doc's own. The only other iframe a doc may spell out is the runner frame of harness-security.md,
which is not a snippet (the browser tests check its sandbox).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from distribute.embed import embed_snippet

REPO = Path(__file__).resolve().parents[2]
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
IFRAME = re.compile(r"<iframe\b[^>]*>", re.IGNORECASE)  # a start tag, across line breaks
SNIPPET_SRC = re.compile(
    r"(?P<server>https?://[^\s\"'<>]+?)/embed/(?P<campaign>[0-9]+|any)(?:\?throttle=(?P<throttle>\w+))?"
)


class _StartTag(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def attributes(html: str) -> list[tuple[str, str | None]]:
    """The attributes of the first tag in `html`, in order, as a browser reads them (entities decoded)."""
    parser = _StartTag()
    parser.feed(html)
    parser.close()
    assert parser.tags, html
    return parser.tags[0][1]


@dataclass(frozen=True)
class DocIframe:
    """An `<iframe ...>` start tag with attributes, where a doc spells one out."""

    path: Path
    line: int
    tag: str
    after: str  # what follows the start tag

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def attributes(self) -> dict[str, str | None]:
        return dict(attributes(self.tag))


def doc_iframes() -> list[DocIframe]:
    """Every iframe start tag with attributes in the docs (a bare `<iframe>` in prose is a mention)."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in IFRAME.finditer(text):
            if attributes(match.group(0)):
                line = text.count("\n", 0, match.start()) + 1
                found.append(DocIframe(path, line, match.group(0), text[match.end() : match.end() + 9]))
    return found


IFRAMES = doc_iframes()
SNIPPETS = [iframe for iframe in IFRAMES if "src" in iframe.attributes]


def test_the_readme_and_the_embedding_guide_show_the_snippet() -> None:
    shown_in = {iframe.path.relative_to(REPO).as_posix() for iframe in SNIPPETS}
    assert {"README.md", "docs/embedding.md"} <= shown_in


def test_every_other_iframe_in_the_docs_is_the_runner_frame() -> None:
    others = {(iframe.where, tuple(iframe.attributes.items())) for iframe in IFRAMES if iframe not in SNIPPETS}
    assert {attrs for _, attrs in others} <= {(("sandbox", "allow-scripts"),)}, others
    assert all(where.startswith("docs/harness-security.md:") for where, _ in others), others


@pytest.mark.parametrize("iframe", SNIPPETS, ids=lambda iframe: iframe.where)
def test_each_snippet_in_the_docs_has_exactly_the_attributes_embed_snippet_gives(iframe: DocIframe) -> None:
    shown = iframe.attributes
    src = SNIPPET_SRC.fullmatch(shown["src"] or "")
    assert src, f"{iframe.where}: src={shown['src']!r} is not SERVER/embed/CAMPAIGN[?throttle=LEVEL]"
    expected = dict(attributes(embed_snippet(src["server"], src["campaign"], throttle=src["throttle"] or "low")))
    differences = {
        name: {"doc": shown.get(name, "<missing>"), "embed_snippet": expected.get(name, "<missing>")}
        for name in expected.keys() | shown.keys()
        if shown.get(name, "<missing>") != expected.get(name, "<missing>")
    }
    assert not differences, f"{iframe.where}: {differences}"
    assert len(attributes(iframe.tag)) == len(shown), f"{iframe.where}: an attribute is given twice"
    assert iframe.after == "</iframe>", f"{iframe.where}: the start tag is not followed by </iframe>"
