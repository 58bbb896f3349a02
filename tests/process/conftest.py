"""Fixtures for the process tests, re-exported: the headless Chromium and host site of tests/browser, and
two `distribute serve` processes on one PostgreSQL (`pair`)."""

from tests.browser.conftest import browser, engines, host_site  # noqa: F401  (a Chromium worker behind nginx)
from tests.process.test_presence import pair  # noqa: F401  (two servers on one PostgreSQL)
