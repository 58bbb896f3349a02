"""`make dist`'s artefacts used as their users use them: the wheel installed into a fresh virtual
environment and serving the harness, the WordPress plugin zip installed into a fresh WordPress through
the plugin upload code, the Hugo component imported as a module by a fresh Hugo site.

`make dist` runs once for the module, into a temporary folder (its DIST variable).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from distribute.embed import BUILD_DIR, embed_snippet
from tests.cms.hugo import HUGO_VERSIONS, build_site, hugo_program
from tests.cms.wordpress import PLUGIN, WordPress, iframes

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
SERVER = "https://compute.example.org"
# What the wheel must carry besides Python modules for the server to serve the harness and the snippet.
HARNESS = ["runner.js", "broker.js", "broker.css"]


@dataclass(frozen=True)
class Dist:
    folder: Path

    @property
    def wheel(self) -> Path:
        return self.folder / f"distribute_compute-{VERSION}-py3-none-any.whl"

    @property
    def sdist(self) -> Path:
        return self.folder / f"distribute_compute-{VERSION}.tar.gz"

    @property
    def wordpress_zip(self) -> Path:
        return self.folder / f"distribute-wordpress-{VERSION}.zip"

    @property
    def hugo_component(self) -> Path:
        return self.folder / "distribute-hugo"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    folder = tmp_path_factory.mktemp("dist") / "out"
    made = subprocess.run(
        ["make", "--no-print-directory", "dist", f"DIST={folder}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert made.returncode == 0, f"make dist failed:\n{made.stdout[-3000:]}\n{made.stderr[-3000:]}"
    return Dist(folder)


def test_make_dist_builds_the_sdist_the_wheel_the_wordpress_zip_and_the_hugo_component(dist: Dist) -> None:
    made = sorted(path.name for path in dist.folder.iterdir())
    assert made == sorted(
        [
            dist.wheel.name,
            dist.sdist.name,
            dist.wordpress_zip.name,
            "distribute-hugo",
            f"distribute-hugo-{VERSION}.tar.gz",
        ]
    )


def test_the_wheel_carries_the_built_harness_and_the_snippet_definition(dist: Dist) -> None:
    packed = set(zipfile.ZipFile(dist.wheel).namelist())
    assert {f"distribute/static/embed/{name}" for name in HARNESS} <= packed
    assert "distribute/snippet.json" in packed


def test_the_sdist_carries_the_built_harness_and_the_snippet_definition(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as sdist:
        packed = set(sdist.getnames())
    top = f"distribute_compute-{VERSION}"
    assert {f"{top}/distribute/static/embed/{name}" for name in HARNESS} <= packed
    assert f"{top}/distribute/snippet.json" in packed


@dataclass(frozen=True)
class Installed:
    python: Path
    dependencies: Path  # the test environment's packages, less the checkout's own and its plugins


@pytest.fixture(scope="module")
def installed_wheel(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """A fresh virtual environment with the wheel alone installed (no index: nothing else comes in)."""
    base = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base / "venv")], check=True, timeout=120)
    python = base / "venv" / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", dist.wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # The runtime dependencies come from the test environment, without the checkout's editable
    # install or the example plugin (whose entry points would name modules that are not there).
    dependencies = base / "dependencies"
    dependencies.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(("distribute", "__editable__")):
            (dependencies / entry.name).symlink_to(entry)
    return Installed(python, dependencies)


def run_installed(installed: Installed, *args: str, cwd: Path) -> subprocess.Popen[bytes]:
    """The fresh environment's Python, its dependencies on PYTHONPATH (which runs no .pth file)."""
    env = {**os.environ, "PYTHONPATH": str(installed.dependencies), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [str(installed.python), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_the_installed_wheel_finds_its_harness_inside_itself(installed_wheel: Installed, tmp_path: Path) -> None:
    code = "import distribute.embed as e; print(e.__file__); print(e._load_build() is not None)"
    ran = run_installed(installed_wheel, "-c", code, cwd=tmp_path)
    out, err = ran.communicate(timeout=60)
    assert ran.returncode == 0, err.decode()[-3000:]
    where, found = out.decode().split()
    assert Path(where).is_relative_to(installed_wheel.python.parents[1]), where  # the wheel's copy, not the checkout's
    assert found == "True"


def test_a_server_from_the_installed_wheel_serves_the_runner(installed_wheel: Installed, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'distribute.db'}"
    server = run_installed(
        installed_wheel, "-m", "distribute", "serve", "--port", "0", "--database", database, cwd=tmp_path
    )
    try:
        assert server.stdout is not None
        first_line = server.stdout.readline().decode()
        assert first_line.startswith("distribute serving on "), first_line + server.stderr.read(3000).decode()
        url = first_line.split()[3].rstrip(",")
        response = httpx.get(f"{url}/embed/runner", timeout=30)
        assert response.status_code == 200, response.text[-2000:]
        assert (BUILD_DIR / "runner.js").read_text(encoding="utf-8") in response.text
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_wordpress_zip_holds_the_plugin_folder_and_its_snippet_at_its_root(dist: Dist) -> None:
    packed = set(zipfile.ZipFile(dist.wordpress_zip).namelist())
    expected = {f"distribute/{path.relative_to(PLUGIN).as_posix()}" for path in PLUGIN.rglob("*") if path.is_file()}
    assert "distribute/snippet.json" in expected
    assert expected <= packed
    assert {name.split("/")[0] for name in packed} == {"distribute"}


@pytest.fixture(scope="module")
def wordpress_from_zip(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WordPress]:
    site = WordPress.start(tmp_path_factory.mktemp("wordpress-from-zip"), plugin_zip=dist.wordpress_zip)
    yield site
    site.stop()


def test_the_wordpress_zip_installs_through_the_upload_code_and_activates(wordpress_from_zip: WordPress) -> None:
    plugins = wordpress_from_zip.root / "wp-content" / "plugins" / "distribute"
    assert (plugins / "snippet.json").read_bytes() == (PLUGIN / "snippet.json").read_bytes()
    assert wordpress_from_zip.php("return is_plugin_active( 'distribute/distribute.php' );") is True


def test_a_post_in_the_wordpress_with_the_zip_renders_the_iframe(wordpress_from_zip: WordPress) -> None:
    wordpress_from_zip.set_settings(server_url=SERVER)
    post = wordpress_from_zip.create_post("From the zip", '[distribute campaign="7"]')
    with wordpress_from_zip.client() as client:
        response = client.get(post.url)
    assert response.status_code == 200, response.text[-2000:]
    assert iframes(response.text) == iframes(embed_snippet(SERVER, 7))


@pytest.mark.parametrize("which", list(HUGO_VERSIONS))
def test_a_hugo_site_imports_the_component_as_a_module_and_renders_the_iframe(
    dist: Dist, tmp_path: Path, which: str
) -> None:
    # The site has no themes/ folder of its own: the module is imported from where `make dist` put it.
    built = build_site(
        tmp_path,
        hugo=hugo_program(which),
        pages={"module": '{{< distribute campaign="4" >}}'},
        params=f'server = "{SERVER}"',
        use=f"[[module.imports]]\npath = {json.dumps(str(dist.hugo_component))}\n",
        component=None,
    )
    assert built.returncode == 0, built.output
    assert embed_snippet(SERVER, 4) in built.page("module")
