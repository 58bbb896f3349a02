"""One definition of the embed iframe (plugins/snippet.json), and distribute's own snippet follows it.

test_wordpress.py and test_hugo.py compare what each CMS emits with `embed_snippet` on the same
cases (tests/cms/snippet.py), so the three agree attribute by attribute.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from distribute.embed import DEFAULT_HEIGHT, SNIPPET_SANDBOX, THROTTLE_LEVELS
from tests.cms.snippet import CASES, COPIES, DEFINITION, Case, definition, reference_snippet


@pytest.mark.parametrize("copy", COPIES, ids=lambda path: str(path.relative_to(DEFINITION.parent.parent)))
def test_each_plugin_carries_an_identical_copy_of_the_definition(copy: Path) -> None:
    assert copy.read_bytes() == DEFINITION.read_bytes(), f"run: cp {DEFINITION} {copy}"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.shortcode())
def test_distributes_own_snippet_is_the_defined_iframe(case: Case) -> None:
    assert case.expected() == reference_snippet(case.server, case.campaign, height=case.height, throttle=case.throttle)


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
