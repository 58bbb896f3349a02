"""The one definition of the embed iframe (distribute/snippet.json) and the cases every output is checked on.

`reference_snippet` renders the definition the way distribute.embed.embed_snippet, the WordPress
plugin and the Hugo shortcode must: it is what embed_snippet would be if it read the file. The
plugins' copies (`COPIES`) are generated from it by `make snippets`, and are not committed.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distribute.embed import DEFAULT_HEIGHT, embed_snippet

REPO = Path(__file__).resolve().parents[2]
DEFINITION = REPO / "distribute" / "snippet.json"
COPIES = (
    REPO / "plugins" / "wordpress" / "distribute" / "snippet.json",
    REPO / "plugins" / "hugo" / "data" / "distribute" / "snippet.json",
)


def definition() -> dict[str, Any]:
    return json.loads(DEFINITION.read_text(encoding="utf-8"))


def reference_snippet(
    server: str, campaign: str, *, height: int | None = None, throttle: str | None = None, site: str | None = None
) -> str:
    spec = definition()
    server = server.rstrip("/")
    throttle = throttle or spec["throttle"]["default"]
    height = height or spec["height"]["default"]
    if not re.fullmatch(spec["patterns"]["server"], server):
        raise ValueError(f"bad server {server!r}")
    if not re.fullmatch(spec["patterns"]["campaign"], campaign):
        raise ValueError(f"bad campaign {campaign!r}")
    if throttle not in spec["throttle"]["levels"]:
        raise ValueError(f"bad throttle {throttle!r}")
    if not spec["height"]["min"] <= height <= spec["height"]["max"]:
        raise ValueError(f"bad height {height!r}")
    campaign = campaign if campaign == "any" else str(int(campaign))
    src = spec["src"].replace("{server}", server).replace("{campaign}", campaign)
    if throttle != spec["throttle"]["default"]:
        src += spec["src_throttle"].replace("{throttle}", throttle)
    if site:
        if not re.fullmatch(spec["patterns"]["site"], site):
            raise ValueError(f"bad site {site!r}")
        src += ("&" if "?" in src else "?") + spec["src_site"].replace("{site}", site)
    values = {"{src}": src, "{height}": str(height)}
    parts = []
    for attribute in spec["attributes"]:
        value = attribute["value"]
        for placeholder, filled in values.items():
            value = value.replace(placeholder, filled)
        parts.append(f'{attribute["name"]}="{html.escape(value, quote=True)}"')
    return "<iframe " + " ".join(parts) + "></iframe>"


@dataclass(frozen=True)
class Case:
    """One embed, as each CMS writes it; `expected` is distribute's own snippet for it."""

    server: str
    campaign: str
    height: int | None = None
    throttle: str | None = None
    site: str | None = None  # a registered site's key

    def expected(self) -> str:
        return embed_snippet(
            self.server,
            self.campaign,
            height=self.height or DEFAULT_HEIGHT,
            throttle=self.throttle or "low",
            site=self.site or "",
        )

    def options(self) -> dict[str, str]:
        given = {"campaign": self.campaign, "server": self.server, "height": self.height, "throttle": self.throttle}
        given["site"] = self.site
        return {key: str(value) for key, value in given.items() if value is not None}

    def shortcode(self) -> str:
        return "[distribute " + " ".join(f'{k}="{v}"' for k, v in self.options().items()) + "]"

    def block(self) -> str:
        attributes = {k: (int(v) if k == "height" else v) for k, v in self.options().items()}
        return f"<!-- wp:distribute/embed {json.dumps(attributes)} /-->"

    def hugo(self) -> str:
        return "{{< distribute " + " ".join(f'{k}="{v}"' for k, v in self.options().items()) + " >}}"


CASES = (
    Case("https://compute.example.org", "12"),
    Case("https://compute.example.org/", "any", throttle="medium"),
    Case("http://127.0.0.1:8000/distribute/", "007", height=300, throttle="high"),
    Case("https://compute.example.org//", "0", height=120, throttle="low"),
    Case("http://compute.example.org:8080", "99999999999999999999", height=2000),
    Case("https://compute.example.org", "any", site="Site_Key-0123456789abcdef"),
    Case("https://compute.example.org", "any", throttle="medium", site="k3y"),
)
