"""In a real Chromium: the dashboard's list, a page at a time, filtered, kept in the URL."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from ..constants import PHONE
from ..factories import add_fleet, create_operator
from .htmx import wait_settled

# Each starts Chromium and a server: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow


def test_more_filters_and_the_refresh_keep_the_list_in_the_url(app, live_server, page, sign_in):
    """The "more" button appends the next page and the URL then lists them all; typing a name
    and choosing a state redraw the list and go into the URL; that URL opened afresh shows the
    same; the refresh redraws the same filtered rows; on a phone the filters fit."""
    with app.app_context():
        add_fleet(130, 3)
    create_operator(app)
    sign_in()
    rows = page.locator("#dashboard-rows tr")
    expect(rows).to_have_count(50)
    page.click("#dashboard-more-link")
    expect(rows).to_have_count(100)
    expect(page).to_have_url(live_server + "/?shown=100")
    expect(page.locator("#dashboard-shown")).to_contain_text("The worst 100 of 130 sources")

    page.fill("#dashboard-q", "src-0001")  # applies as typed, no Enter needed
    expect(rows).to_have_count(10)
    expect(page).to_have_url(live_server + "/?q=src-0001")
    page.select_option("#dashboard-state", "inactive")
    expect(page).to_have_url(re.compile(r"/\?q=src-0001&state=inactive$"))
    names = ["src-00014"]  # the one of src-00010 to src-00019 whose slot has no consumer
    expect(rows.locator("td.cell-title")).to_have_text(names)

    wait_settled(page)  # the new list's refresh is wired
    page.evaluate("document.getElementById('dashboard-table').dataset.old = 'yes'")
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    expect(page.locator("#dashboard-table")).not_to_have_attribute("data-old", "yes")
    expect(rows.locator("td.cell-title")).to_have_text(names)

    page.reload()
    expect(page.locator("#dashboard-q")).to_have_value("src-0001")
    expect(page.locator("#dashboard-state")).to_have_value("inactive")
    expect(rows.locator("td.cell-title")).to_have_text(names)

    page.set_viewport_size(PHONE)
    for control in ("#dashboard-q", "#dashboard-state", "#dashboard-filters button"):
        box = page.locator(control).bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (control, box)
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
