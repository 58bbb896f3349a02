"""The WordPress plugin's files: valid PHP, Debian's phpcs with plugins/phpcs.xml, WordPress conventions.

`php -l` checks every PHP file in the repository (the plugin, and the test WordPress's tools and theme in
tests/cms/); the conventions hold for the plugin's files, which are what a site owner installs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cms.wordpress import PLUGIN, REPO, require_program

PHP_FILES = sorted(PLUGIN.rglob("*.php"))
RULESET = REPO / "plugins" / "phpcs.xml"


def run(*command: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)


def repository_php_files() -> list[Path]:
    """Every PHP file git knows of: tracked, or new and not ignored."""
    listed = run("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "*.php")
    assert listed.returncode == 0, listed.stderr
    return sorted({REPO / name for name in listed.stdout.split("\0") if name})


REPOSITORY_PHP_FILES = repository_php_files()


def test_the_php_files_checked_include_the_plugin_and_the_test_wordpresss_tools_and_theme() -> None:
    checked = set(REPOSITORY_PHP_FILES)
    assert set(PHP_FILES) <= checked
    for folder in ("wp-tools", "wp-theme"):
        assert {path for path in checked if path.parent == REPO / "tests" / "cms" / folder}, folder


@pytest.mark.parametrize("path", REPOSITORY_PHP_FILES, ids=lambda path: str(path.relative_to(REPO)))
def test_every_php_file_is_valid_php(path: Path) -> None:
    linted = run(require_program("php", "php-cli"), "-l", str(path))
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_plugin_passes_phpcs_with_the_projects_ruleset() -> None:
    checked = run(
        require_program("phpcs", "php-codesniffer"), f"--standard={RULESET}", "--report=full", cwd=RULESET.parent
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


BAD_PHP = """<?php
/**
 * A file that breaks the ruleset.
 *
 * @package Bad
 */

function fetch_everything($url) {
    $a = [1, 2];
    return wp_remote_get( $url );
}
"""


def test_the_ruleset_rejects_what_it_forbids(tmp_path: Path) -> None:
    bad = tmp_path / "bad.php"
    bad.write_text(BAD_PHP)
    checked = run(require_program("phpcs", "php-codesniffer"), f"--standard={RULESET}", "--report=emacs", str(bad))
    assert checked.returncode != 0
    for sniff in (
        "Generic.WhiteSpace.DisallowSpaceIndent",
        "Generic.Arrays.DisallowShortArraySyntax",
        "Generic.PHP.ForbiddenFunctions",
        "Squiz.Functions.FunctionDeclarationArgumentSpacing",
        "Squiz.Commenting.FunctionComment",
    ):
        assert sniff in checked.stdout, checked.stdout


@pytest.mark.parametrize("path", PHP_FILES, ids=lambda path: str(path.relative_to(PLUGIN)))
def test_no_php_file_runs_when_requested_directly(path: Path) -> None:
    source = path.read_text()
    guards = ("defined( 'ABSPATH' ) || exit;", "defined( 'WP_UNINSTALL_PLUGIN' ) || exit;")
    returns_data_only = re.fullmatch(r"<\?php\s*/\*\*.*?\*/\s*return array\(.*\);\s*", source, re.DOTALL)
    assert returns_data_only or any(guard in source for guard in guards)


I18N = r"\b(?:__|_e|esc_html__|esc_html_e|esc_attr__|esc_attr_e)\(\s*"
STRING = r"""(['"])(?:\\.|(?!\1).)*\1"""
WITH_DOMAIN = re.compile(I18N + STRING + r"\s*,\s*'([^']*)'\s*\)")
WITHOUT_DOMAIN = re.compile(I18N + STRING + r"\s*\)")


def test_every_translatable_string_uses_the_plugins_text_domain() -> None:
    sources = {path.name: path.read_text() for path in [*PHP_FILES, PLUGIN / "block" / "index.js"]}
    domains = {(name, match.group(2)) for name, source in sources.items() for match in WITH_DOMAIN.finditer(source)}
    assert {domain for _, domain in domains} == {"distribute"}, domains
    assert not [m.group(0) for source in sources.values() for m in WITHOUT_DOMAIN.finditer(source)]
    assert sum(len(WITH_DOMAIN.findall(source)) for source in sources.values()) > 40


def test_the_plugin_header_and_the_readme_agree() -> None:
    header = (PLUGIN / "distribute.php").read_text()
    readme = (PLUGIN / "readme.txt").read_text()
    version = re.search(r"^ \* Version:\s*(\S+)", header, re.M)
    assert version and re.search(rf"^Stable tag: {re.escape(version.group(1))}$", readme, re.M)
    for field in ("Requires at least", "Requires PHP", "License"):
        ours = re.search(rf"^ \* {field}:\s*(.+)$", header, re.M)
        assert ours and re.search(rf"^{field}: {re.escape(ours.group(1).strip())}$", readme, re.M), field
    assert re.search(r"^ \* Text Domain:\s*distribute$", header, re.M)


def test_the_readme_has_the_wordpress_org_header_and_sections_with_the_external_services_disclosure() -> None:
    readme = (PLUGIN / "readme.txt").read_text()
    assert readme.startswith("=== distribute ===\n")
    header = readme.split("\n\n", 1)[0]
    # WordPress.org usernames, comma-separated: who may answer in the plugin's support forum.
    assert re.search(r"^Contributors: [a-z0-9_-]+(?:, [a-z0-9_-]+)*$", header, re.M), header
    sections = re.findall(r"^== (.+) ==$", readme, re.M)
    for section in ("Description", "External services", "Installation", "Frequently Asked Questions", "Changelog"):
        assert section in sections
    summary = readme.split("\n\n", 2)[1]
    assert len(summary) <= 150 and "\n" not in summary  # the short description
    services = readme.split("== External services ==", 1)[1].split("\n== ", 1)[0]
    for disclosed in ("SERVER/embed/CAMPAIGN", "IP address", "origin", "WebSocket", "Contribute", "results"):
        assert disclosed in services


def test_the_block_is_described_by_block_json_with_server_side_rendering_and_no_build_step() -> None:
    block = json.loads((PLUGIN / "block" / "block.json").read_text())
    assert block["name"] == "distribute/embed"
    assert block["textdomain"] == "distribute"
    assert block["render"] == "file:./render.php" and (PLUGIN / "block" / "render.php").exists()
    assert block["editorScript"] == "file:./index.js"
    assert (PLUGIN / "block" / "index.asset.php").exists()
    assert set(block["attributes"]) == {"campaign", "server", "height", "throttle", "site"}


def test_the_block_editor_script_is_valid_javascript() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: `make test` installs Node.js")
    checked = run(node, "--check", str(PLUGIN / "block" / "index.js"))
    assert checked.returncode == 0, checked.stderr
