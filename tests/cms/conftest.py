"""Fixtures of the CMS tests: one real WordPress (with its private MariaDB) for the session, Chromium.

`chromium` is tests/browser's `browser` fixture, but fails instead of skipping when Chromium or the
built harness is missing: these tests start from what `make test` installs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from distribute.embed import BUILD_DIR
from tests.browser.conftest import CHROMIUM, BrowserThread, browser, engines, host_site
from tests.cms.wordpress import WordPress

__all__ = ["browser", "chromium", "engines", "host_site", "wordpress"]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cms: starts WordPress, MariaDB or Hugo (tests/cms)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.cms)
        if "chromium" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def wordpress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WordPress]:
    site = WordPress.start(tmp_path_factory.mktemp("wordpress"))
    yield site
    site.stop()


@pytest.fixture
def chromium(request: pytest.FixtureRequest) -> BrowserThread:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs the Debian package chromium")
    if not (BUILD_DIR / "runner.js").exists():
        pytest.fail("the browser harness is not built: `make test` builds it (make embed)")
    return request.getfixturevalue("browser")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
