"""In a real Chromium: pages fit a phone, themes stay readable, htmx swaps keep focus and state."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from rosetta_web.monitor.rounds import sample_sources
from rosetta_web.sources.services import after_round

from ..clients import OVERFLOW_JS
from ..constants import PHONE
from ..factories import add_alerts, add_source, create_operator
from ..pg import free_port
from .htmx import wait_settled

# Each starts Chromium and a server: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow


# WCAG contrast of an element's text on the first opaque background at or above it.
CONTRAST_JS = """
(el) => {
  const rgb = (s) => s.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => {
    const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  let node = el, bg = null;
  while (node && node.nodeType === 1) {
    const c = rgb(getComputedStyle(node).backgroundColor);
    if (c.length < 4 || c[3] === 1) { bg = c; break; }
    node = node.parentElement;
  }
  const style = getComputedStyle(el);
  const [hi, lo] = [lum(rgb(style.color)), lum(bg || [255, 255, 255])].sort((a, b) => b - a);
  return { ratio: (hi + 0.05) / (lo + 0.05), opacity: Number(style.opacity) };
}
"""


@pytest.fixture
def pipeline_row(app, live_server, page, ready_source, ready_destination, sign_in) -> Any:
    """Sign in, then add a destination and a (paused) pipeline on a source ready for CDC
    through the forms; yield its row."""
    create_operator(app)
    add_source(
        app,
        "production-postgres",
        ready_source["pg_port"],
        user="postgres",
        database=ready_source["pg_database"],
        publication_name=ready_source["publication_name"],
        slot_name=ready_source["slot_name"],
    )
    sign_in()
    page.goto(live_server + "/destinations/new")
    for field, value in ready_destination.items():
        page.fill(f"#{field}", value)
    page.click("main button.primary")
    expect(page.locator(".flash")).to_contain_text("Ready")
    page.goto(live_server + "/pipelines/new")
    page.fill("#name", "prod-to-sf")
    page.select_option("#source_id", label="production-postgres")
    page.select_option("#destination_id", label="snowflake-production")
    page.select_option("#status", "PAUSE")
    page.click("main button.primary")
    row = page.locator("#pipelines-table tbody tr").first
    expect(row.locator(".status-cell .badge")).to_have_text("PAUSE")
    return row


def dead_sources(app, *names: str) -> list[int]:
    """Register sources on ports nothing listens on and sample them: each ends in ERROR."""
    ids = [add_source(app, name, free_port()) for name in names]
    with app.app_context():
        samples = after_round(sample_sources())
    dead = [sample for sample in samples if sample.source_id in ids]
    assert len(dead) == len(ids) and not any(sample.ok for sample in dead)
    return ids


def test_pages_fit_a_phone(app, pipeline_row, live_server, page):
    """At 390 px no page is wider than the screen, and the nav stays on the dark top bar."""
    dead_sources(app, "a-source-with-a-rather-long-name")
    page.set_viewport_size(PHONE)
    add_alerts(app)
    pages = ("/", "/sources/", "/pipelines/", "/sources/new", "/destinations/", "/sources/1")
    alert_pages = ("/alerts/", "/alerts/settings", "/alerts/channels/", "/alerts/channels/new")
    for path in pages + alert_pages + ("/alerts/channels/1", "/alerts/channels/1/edit"):
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            page.goto(live_server + path)
            widths = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
            assert widths[0] <= widths[1], (path, scheme, widths, page.evaluate(OVERFLOW_JS))
            bar = page.locator(".topbar").bounding_box()
            for link in page.locator(".topbar a, .topbar button").all():
                box = link.bounding_box()
                assert box["x"] >= bar["x"] and box["x"] + box["width"] <= bar["x"] + bar["width"]
                assert box["y"] >= bar["y"] and box["y"] + box["height"] <= bar["y"] + bar["height"]
                assert page.evaluate(CONTRAST_JS, link.element_handle())["ratio"] >= 4.5, path
    # A list's rows are cards (test_phone_tables.py); a table that is still wide scrolls
    # inside its own box instead of widening the page.
    page.goto(live_server + "/docs")
    scroller = page.locator(".table-scroll").first
    assert scroller.evaluate("(el) => el.scrollWidth > el.clientWidth")
    assert scroller.evaluate("(el) => getComputedStyle(el).overflowX") == "auto"


def test_row_actions_are_table_cells_in_line_with_their_row(pipeline_row, page):
    """Edit/Delete sit in a real table cell, level with the other cells of their row."""
    cell = pipeline_row.locator("td.actions")
    assert cell.evaluate("(el) => getComputedStyle(el).display") == "table-cell"
    first = pipeline_row.locator("td").first.bounding_box()
    box = cell.bounding_box()
    assert abs(box["y"] - first["y"]) < 1 and abs(box["height"] - first["height"]) < 1


def test_status_button_keeps_keyboard_focus_after_the_row_swap(pipeline_row, page):
    """Pressing Start (then Pause) with the keyboard leaves focus on that button of the new row."""
    row_id = pipeline_row.get_attribute("id")
    page.evaluate(f"document.getElementById('{row_id}').dataset.old = 'yes'")
    page.focus(f"#{row_id}-start")
    page.keyboard.press("Enter")
    expect(page.locator(f"#{row_id} .status-cell .badge")).to_have_text("START")
    # htmx replaced the row, and gave the new row's Start button the focus.
    expect(page.locator(f"#{row_id}")).not_to_have_attribute("data-old", "yes")
    expect(page.locator(f"#{row_id}-start")).to_be_focused()
    # Until htmx has settled the new row, its forms are not yet wired: Enter would post them
    # the plain way and reload the page, as any operator typing that fast would see too.
    wait_settled(page)
    page.keyboard.press("Tab")
    expect(page.locator(f"#{row_id}-pause")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator(f"#{row_id} .status-cell .badge")).to_have_text("PAUSE")
    expect(page.locator(f"#{row_id}-pause")).to_be_focused()


def test_refresh_asks_for_confirmation_and_start_does_not(pipeline_row, page):
    """REFRESH re-snapshots every table: it asks first, and nothing changes when declined."""
    row_id = pipeline_row.get_attribute("id")
    asked: list[str] = []

    def answer(accept: bool) -> Any:
        def handler(dialog: Any) -> None:
            asked.append(dialog.message)
            if accept:
                dialog.accept()
            else:
                dialog.dismiss()

        return handler

    page.once("dialog", answer(False))
    page.click(f"#{row_id}-refresh")
    assert len(asked) == 1 and "snapshot" in asked[0]
    page.wait_for_timeout(300)  # a request, had one been sent, would have swapped the row
    expect(page.locator(f"#{row_id} .status-cell .badge")).to_have_text("PAUSE")

    page.once("dialog", answer(True))
    page.click(f"#{row_id}-refresh")
    expect(page.locator(f"#{row_id} .status-cell .badge")).to_have_text("REFRESH")
    assert len(asked) == 2

    page.on("dialog", answer(False))
    page.click(f"#{row_id}-start")
    expect(page.locator(f"#{row_id} .status-cell .badge")).to_have_text("START")
    assert len(asked) == 2  # Start asked nothing


def test_opened_why_stays_open_when_the_dashboard_refreshes(app, live_server, page, sign_in):
    """The poll's swap keeps the "why" the operator opened open, and the others closed."""
    create_operator(app)
    opened, closed = dead_sources(app, "dead-one", "dead-two")
    sign_in()
    page.click(f"#why-{opened} summary")
    expect(page.locator(f"#why-{opened}")).to_have_attribute("open", "")
    page.evaluate("document.getElementById('dashboard-table').dataset.old = 'yes'")
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    # Wait for the swap: the new table has not the old one's mark.
    # (expect, not wait_for_function: a string predicate is eval'd, which the CSP forbids)
    expect(page.locator("#dashboard-table")).not_to_have_attribute("data-old", "yes")
    expect(page.locator(f"#why-{opened}")).to_have_attribute("open", "")
    expect(page.locator(f"#why-{closed}")).not_to_have_attribute("open", "")


def test_zero_badges_and_favicon(app, live_server, page, sign_in):
    """Zero counts are readable (4.5:1, no opacity) in both themes; the favicon is served."""
    create_operator(app)
    sign_in()
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        badges = page.locator("#dashboard-summary .badge.zero").all()
        assert badges
        for badge in badges:
            seen = page.evaluate(CONTRAST_JS, badge.element_handle())
            assert seen["opacity"] == 1 and seen["ratio"] >= 4.5, (scheme, badge.inner_text(), seen)
    href = page.locator("link[rel=icon]").get_attribute("href")
    response = page.request.get(live_server + href)
    assert response.ok and response.headers["content-type"].startswith("image/svg+xml")
