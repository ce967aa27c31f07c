"""Headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ..factories import PASSWORD

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """Find the system Chromium; the test command installs it when missing."""
    path = (
        os.environ.get("CHROMIUM_PATH")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    if not path:
        pytest.fail("Chromium not found: run the README's test command, which installs it")
    return path


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    # Assertions wait as long as actions do. Playwright's own 5 s is too short on two cores
    # shared by three test workers: CI once saw a page's charts fetch their history 4.6 s after
    # charts.js arrived, while Chromium parsed Plotly.
    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.fixture
def sign_in(page: Any, live_server: str) -> Callable[..., None]:
    """Return a function that signs in through the login form, as alice (whom create_operator
    makes) unless told, and waits for the dashboard and its scripts."""
    from playwright.sync_api import expect

    def sign_in(username: str = "alice", password: str = PASSWORD) -> None:
        page.goto(live_server + "/login")
        page.fill("#username", username)
        page.fill("#password", password)
        page.click("main button.primary")
        expect(page.locator("h1")).to_have_text("Dashboard")
        page.wait_for_load_state("load")  # its deferred scripts (htmx) have run

    return sign_in
