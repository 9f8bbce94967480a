"""Headless Chromium for the interop tests: the ``browser`` fixture of tests/browser/conftest.py.

Re-exported, not copied: one place launches Chromium. Same rule as there: a test that uses it must
not use async fixtures (Playwright's sync API marks the thread's event loop as running).
"""

from browser.conftest import browser

__all__ = ["browser"]
