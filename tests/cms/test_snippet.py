"""One definition of the embed iframe (distribute/snippet.json), and distribute's own snippet follows it.

test_wordpress.py and test_hugo.py compare what each CMS emits with `embed_snippet` on the same
cases (tests/cms/snippet.py), so the three agree attribute by attribute.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from distribute.embed import DEFAULT_HEIGHT, SNIPPET_SANDBOX, THROTTLE_LEVELS
from tests.cms.snippet import CASES, COPIES, DEFINITION, REPO, Case, definition, reference_snippet


@pytest.mark.parametrize("copy", COPIES, ids=lambda path: str(path.relative_to(REPO)))
def test_each_plugin_carries_a_generated_copy_equal_to_the_definition(copy: Path) -> None:
    assert copy.is_file(), f"{copy.relative_to(REPO)} is missing: run `make snippets`"
    assert copy.read_bytes() == DEFINITION.read_bytes(), f"{copy.relative_to(REPO)} is stale: run `make snippets`"


def test_the_generated_copies_are_not_committed() -> None:
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert [str(copy.relative_to(REPO)) for copy in COPIES if str(copy.relative_to(REPO)) not in ignored] == []


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.shortcode())
def test_distributes_own_snippet_is_the_defined_iframe(case: Case) -> None:
    assert case.expected() == reference_snippet(
        case.server, case.campaign, height=case.height, throttle=case.throttle, site=case.site
    )


def test_the_definition_agrees_with_distributes_constants() -> None:
    spec = definition()
    assert tuple(spec["throttle"]["levels"]) == THROTTLE_LEVELS
    assert spec["height"]["default"] == DEFAULT_HEIGHT
    assert {"name": "sandbox", "value": SNIPPET_SANDBOX} in spec["attributes"]


@pytest.mark.parametrize(
    ("pattern", "value", "valid"),
    [
        ("campaign", "12", True),
        ("campaign", "any", True),
        ("campaign", "12\n", False),
        ("campaign", "12 ", False),
        ("campaign", "-1", False),
        ("server", "https://compute.example.org", True),
        ("server", "http://127.0.0.1:8000/distribute", True),
        ("server", "javascript:alert(1)", False),
        ("server", 'https://x.example/"><script>', False),
        ("server", "https://x.example/?a=1&b=2", False),
        ("server", "https://user@x.example", False),
        ("height", "300", True),
        ("height", "300px", False),
        ("site", "Site_Key-0123456789abcdef", True),
        ("site", 'key"><script>', False),
        ("site", "key&campaign=1", False),
    ],
)
def test_the_patterns_accept_only_plain_values(pattern: str, value: str, valid: bool) -> None:
    assert bool(re.fullmatch(definition()["patterns"][pattern], value)) is valid


def test_the_paste_forms_name_the_campaign_and_server() -> None:
    paste = definition()["paste"]
    filled = {
        cms: form.replace("{campaign}", "12").replace("{server}", "https://c.example") for cms, form in paste.items()
    }
    assert filled == {
        "wordpress": '[distribute campaign="12" server="https://c.example"]',
        "hugo": '{{< distribute campaign="12" server="https://c.example" >}}',
    }
