"""Headless Chromium (Debian's /usr/bin/chromium) for browser tests, through Playwright's sync API.

- ``browser``: one Chromium per test module. Playwright gives it a fresh, empty profile
  (user data dir) in a temporary folder and deletes it at close; Chromium's ``HOME`` is a
  temporary folder too, so nothing is read from or written to the real home.
- ``page``: a new browser context (own cookies and storage) and page for each test. When the test
  fails, a full-page screenshot is saved to ``test-artifacts/<test id>.png``.

Why per module and not per session: while Playwright's sync API is alive it marks the thread's
event loop as running, so every pytest-asyncio test after it fails with "Runner.run() cannot be
called from a running event loop". Closing it at the end of each module keeps the async tests of
other folders working; a launch costs about half a second. For the same reason, a browser test must
not use async fixtures.

Only Debian's Chromium is used: Playwright's own browser download is never needed.
Every test in this folder gets the ``browser`` marker (``pytest -m "not browser"`` skips them).
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # This machine has no network but loopback: without these, Chromium keeps trying to reach
    # Google's services in the background.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

_BROWSER_DIR = Path(__file__).parent
_reports = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _BROWSER_DIR in item.path.parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_reports, {})[report.when] = report
    return report


@pytest.fixture(scope="module")
def browser(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Browser]:
    """A test module may add Chromium flags in ``CHROMIUM_EXTRA_ARGS`` (e.g. host resolver
    rules that send an attacker's host name to a local listener)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (scripts/test does)")
    home = tmp_path_factory.mktemp("chromium-home")
    env: dict[str, str | float | bool] = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_ARGS, *getattr(request.module, "CHROMIUM_EXTRA_ARGS", ())],
            env=env,
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(15_000)
    new_page = context.new_page()
    try:
        yield new_page
    finally:
        reports = request.node.stash.get(_reports, {})
        if any(r.failed for r in reports.values()):
            _save_screenshot(new_page, request)
        context.close()


def _save_screenshot(page: Page, request: pytest.FixtureRequest) -> None:
    folder = request.config.rootpath / "test-artifacts"
    folder.mkdir(exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid).strip("_")[:180]
    path = folder / f"{name}.png"
    try:
        page.screenshot(path=path, full_page=True)
    except Exception as e:  # the page may be gone; the test's own failure matters more
        print(f"could not save screenshot {path}: {e}")
    else:
        print(f"screenshot saved: {path}")
