"""In a real Chromium: set up the first account, sign in, create a source, change a status."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from ..factories import PASSWORD
from ..seed import DESTINATION, SOURCE

# Each starts Chromium and a server: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow


def test_setup_login_create_source_and_start_pipeline(live_server, page):
    """An operator's first visit, end to end, over real HTTP in headless Chromium."""
    page.goto(live_server + "/")
    expect(page).to_have_url(live_server + "/setup")
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.fill("#confirm", PASSWORD)
    page.click("main button.primary")
    expect(page.locator(".flash")).to_contain_text("Welcome, alice")

    page.click("text=Sign out")
    expect(page).to_have_url(live_server + "/login")
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("main button.primary")
    expect(page.locator("h1")).to_have_text("Dashboard")
    expect(page.locator("#dashboard-table")).to_contain_text("No sources yet")

    page.click("nav >> text=Sources")
    page.click("text=New source")
    for field, value in SOURCE.items():
        page.fill(f"#{field}", str(value))
    page.fill("#name", "Bad Name")
    page.click("main button.primary")
    # The error sits beside the field and the operator's input is still there.
    expect(page.locator(".field.has-error .error")).to_contain_text("lowercase letters")
    expect(page.locator("#pg_host")).to_have_value("postgres.example.com")
    page.fill("#name", SOURCE["name"])
    page.fill("#pg_password", SOURCE["pg_password"])
    page.click("main button.primary")
    expect(page.locator(".flash")).to_contain_text("Source 'production-postgres' created.")
    expect(page.locator("#sources-table")).to_contain_text("postgres.example.com:5432")

    # The name filter swaps the table with htmx, keeping the page.
    page.fill("input[type=search]", "nothing-like-it")
    expect(page.locator("#sources-table")).to_contain_text("No source matches")
    expect(page).to_have_url(live_server + "/sources/?q=nothing-like-it")

    page.goto(live_server + "/destinations/new")
    for field, value in DESTINATION.items():
        page.fill(f"#{field}", value)
    page.click("main button.primary")
    page.goto(live_server + "/pipelines/new")
    page.fill("#name", "prod-to-sf")
    page.select_option("#source_id", label="production-postgres")
    page.select_option("#destination_id", label="snowflake-production")
    page.click("main button.primary")
    row = page.locator("#pipeline-1")
    expect(row.locator(".status-cell .badge")).to_have_text("PAUSE")

    page.evaluate("window.marker = 'same page'")
    row.locator("button", has_text="Start").click()
    # postgres.example.com cannot be reached: the row says so and the pipeline stays paused.
    expect(page.locator("#pipeline-1 .row-refusal")).to_contain_text(
        "Source 'production-postgres' is not ready for CDC: connection failed."
    )
    expect(page.locator("#pipeline-1 .status-cell .badge")).to_have_text("PAUSE")
    # htmx swapped the row: no navigation happened.
    assert page.evaluate("window.marker") == "same page"
