"""Fixtures for the process tests: (re-exported) the headless Chromium and host site of tests/browser."""

from tests.browser.conftest import browser, engines, host_site  # noqa: F401  (a Chromium worker behind nginx)
