"""The Hugo shortcode, built into a test site (tests/cms/hugo-site) by the oldest Hugo it supports
(Debian 12's 0.111) and by a current release: every test runs with both."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from distribute.embed import embed_snippet
from tests.cms.hugo import HUGO_VERSIONS, MODULE_CONFIG, build_site, hugo_program
from tests.cms.snippet import CASES
from tests.cms.wordpress import iframes

SERVER = "https://compute.example.org"


@pytest.fixture(params=list(HUGO_VERSIONS))
def hugo(request: pytest.FixtureRequest) -> str:
    return hugo_program(request.param)


@pytest.mark.parametrize("which", HUGO_VERSIONS)
def test_the_hugos_are_the_oldest_supported_version_and_a_current_release(which: str) -> None:
    ran = subprocess.run([hugo_program(which), "version"], capture_output=True, text=True, timeout=30, check=True)
    assert ran.stdout.startswith(f"hugo {HUGO_VERSIONS[which]}"), ran.stdout


def test_the_shortcode_emits_exactly_distributes_own_snippet(tmp_path: Path, hugo: str) -> None:
    built = build_site(tmp_path, hugo=hugo, pages={"every": "\n\n".join(case.hugo() for case in CASES)})
    assert built.returncode == 0, built.output
    page = built.page("every")
    assert iframes(page) == [iframes(case.expected())[0] for case in CASES]  # attribute by attribute, in order
    for case in CASES:
        assert case.expected() in page  # and byte for byte


def test_what_the_shortcode_leaves_out_comes_from_params_distribute(tmp_path: Path, hugo: str) -> None:
    params = f'server = "{SERVER}/"\nthrottle = "medium"\nheight = 300\ncampaign = "8"\n'
    built = build_site(
        tmp_path,
        hugo=hugo,
        pages={"defaults": "{{< distribute >}}", "own": '{{< distribute campaign="9" >}}'},
        params=params,
    )
    assert built.returncode == 0, built.output
    assert embed_snippet(SERVER, 8, height=300, throttle="medium") in built.page("defaults")
    assert embed_snippet(SERVER, 9, height=300, throttle="medium") in built.page("own")


def test_the_component_also_works_as_a_module_import(tmp_path: Path, hugo: str) -> None:
    built = build_site(
        tmp_path,
        hugo=hugo,
        pages={"module": '{{< distribute campaign="4" >}}'},
        params=f'server = "{SERVER}"',
        use=MODULE_CONFIG,
    )
    assert built.returncode == 0, built.output
    assert embed_snippet(SERVER, 4) in built.page("module")


def test_a_missing_campaign_fails_the_build_with_the_message(tmp_path: Path, hugo: str) -> None:
    built = build_site(
        tmp_path, hugo=hugo, pages={"broken": "Some text.\n\n{{< distribute >}}"}, params=f'server = "{SERVER}"'
    )
    assert built.returncode != 0
    assert 'the campaign is missing: write {{< distribute campaign="12" >}}' in built.output
    assert "broken.md:6:1" in built.output  # the file and line


def test_a_missing_server_fails_the_build_with_the_message(tmp_path: Path, hugo: str) -> None:
    built = build_site(tmp_path, hugo=hugo, pages={"broken": '{{< distribute campaign="12" >}}'})
    assert built.returncode != 0
    assert (
        'the server is missing: add server="https://…" to the shortcode, or set server under [params.distribute]'
        in built.output
    )


@pytest.mark.parametrize(
    ("shortcode", "message"),
    [
        (
            '{{< distribute campaign="12&quot; onload=&quot;alert(1)" >}}',
            'the campaign must be a campaign number or "any"',
        ),
        ('{{< distribute campaign="<script>alert(1)</script>" >}}', 'the campaign must be a campaign number or "any"'),
        (
            '{{< distribute campaign="12" server="javascript:alert(1)" >}}',
            "the server must be an http:// or https:// address",
        ),
        ('{{< distribute campaign="12" server="https://x.example/\\"><script>" >}}', "the server must be an http"),
        (
            '{{< distribute campaign="12" height="300 onload=alert(1)" >}}',
            "the height must be a number of pixels from 120 to 2000",
        ),
        ('{{< distribute campaign="12" height="90" >}}', "the height must be a number of pixels from 120 to 2000"),
        ('{{< distribute campaign="12" throttle="turbo" >}}', "the throttle must be one of low, medium, high"),
    ],
)
def test_an_invalid_value_fails_the_build_and_is_never_emitted(
    tmp_path: Path, hugo: str, shortcode: str, message: str
) -> None:
    built = build_site(tmp_path, hugo=hugo, pages={"hostile": shortcode}, params=f'server = "{SERVER}"')
    assert built.returncode != 0
    assert message in built.output
    assert not (built.public / "posts" / "hostile" / "index.html").exists() or not iframes(built.page("hostile"))
