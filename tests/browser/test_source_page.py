"""In a real Chromium: the page of a source on a server with 500 slots draws the worst, finds
any other by name, and keeps its chart readable."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from ..clients import OVERFLOW_JS
from ..constants import PHONE
from ..factories import add_slot_server, create_operator

# Each starts Chromium and a server: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow


def test_500_slots_filter_in_place_and_show_all(app, live_server, page, sign_in):
    """The worst 10 of each table; typing a name swaps the tables alone (the box keeps its
    focus, the chart stays, the URL keeps the filter); "Show all" draws the rest; the chart
    draws 20 slot lines and the most the other 480 retain; the page fits a phone."""
    create_operator(app)
    source_id, _ = add_slot_server(app, 500)
    page.set_viewport_size({"width": 1280, "height": 800})
    sign_in()
    page.goto(f"{live_server}/sources/{source_id}")
    charts = page.locator("#wal-charts")
    expect(charts).to_have_attribute("data-points", "3")
    traces = page.evaluate(
        "document.getElementById('chart-wal').data"
        ".filter(t => t.mode === 'lines+markers').map(t => t.name)"
    )
    assert len(traces) == 22  # the WAL directory, 20 slots, the others
    assert "the other 480 slots (the most one retains)" in traces
    assert page.locator("#slots-table tbody tr").count() == 10
    assert page.locator("#other-slots-table tbody tr").count() == 10

    page.evaluate("window.marker = 'same page'")
    box = page.get_by_label("Filter the server's slots by name")
    box.fill("slot_04")
    expect(page.locator("#slots-summary")).to_contain_text("“slot_04”: 10")
    expect(page).to_have_url(f"{live_server}/sources/{source_id}?slot=slot_04")
    names = page.locator("#slot-tables td.cell-title").all_text_contents()
    assert sorted(names) == [f"slot_{k:03d}" for k in range(40, 50)]
    assert page.evaluate("document.activeElement.name") == "slot"
    assert page.evaluate("window.marker") == "same page"

    box.fill("")
    expect(page.locator("#other-slots-more")).to_contain_text("The worst 10 of 375")
    page.get_by_role("link", name="Show all 375").click()
    expect(page.locator("#other-slots-table tbody tr")).to_have_count(375)
    expect(page).to_have_url(f"{live_server}/sources/{source_id}?slots=all")
    box.fill("slot_1")  # still every match, not the worst 10 of them
    expect(page.locator("#slots-summary")).to_contain_text("“slot_1”:")
    expect(page.locator("#other-slots-table tbody tr")).to_have_count(
        sum(1 for k in range(1, 501) if "slot_1" in f"slot_{k:03d}" and k % 4 != 1)
    )
    assert page.evaluate("window.marker") == "same page"

    page.set_viewport_size(PHONE)
    page.goto(f"{live_server}/sources/{source_id}")
    expect(charts).to_have_attribute("data-points", "3")
    assert page.evaluate(OVERFLOW_JS) == []
    # Its 22 lines' legend takes rows: the chart grows so that the lines keep room.
    assert page.locator("#chart-wal .main-svg").first.bounding_box()["height"] >= 700
