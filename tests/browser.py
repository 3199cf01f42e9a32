"""Real headless Chromium for the report's browser tests.

Playwright drives Debian's Chromium at /usr/bin/chromium (CI installs it with
apt); it never downloads a browser of its own (no ``playwright install``).
Without that binary the tests skip and say why.

``page`` is a fresh page at 1280x800 that records what went wrong in it:
console errors, uncaught exceptions, and every request that is not the report
file itself (the report must work offline, so any such request is a failure).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing that phones home on its own: any request the tests
# see must then come from the page.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Journal:
    """What a page did that a self-contained report must not do."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    failed_requests: list[str] = field(default_factory=list)

    def other_requests(self, allowed: str) -> list[str]:
        """The requests for anything but ``allowed`` (the report's own URL)."""
        return [url for url in self.requests if url.split("#")[0] != allowed]


@dataclass
class ReportPage:
    page: Page
    journal: Journal


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[ReportPage]:
    """A fresh 1280x800 page whose console errors and requests are journaled."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    journal = Journal()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            journal.console_errors.append(message.text)

    def on_failed(request: Request) -> None:
        journal.failed_requests.append(f"{request.url}: {request.failure}")

    opened.on("console", on_console)
    opened.on("pageerror", lambda error: journal.page_errors.append(str(error)))
    opened.on("request", lambda request: journal.requests.append(request.url))
    opened.on("requestfailed", on_failed)
    yield ReportPage(opened, journal)
    context.close()
