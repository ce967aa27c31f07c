"""In a real Chromium, under Rosetta's Content-Security-Policy: every page works and the
browser reports no violation (no inline script, no eval, nothing from elsewhere)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from rosetta_web.extensions import db as _db
from rosetta_web.monitor.rounds import sample_sources
from rosetta_web.sources.services import after_round
from rosetta_web.timeutil import utcnow

from ..factories import add_source, create_operator, new_alert
from ..pg import free_port

pytestmark = pytest.mark.slow

# Recorded from the first script that runs on each page, before the page's own.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__violations.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline') + ' '
    + (e.sourceFile || '') + ':' + e.lineNumber);
});
"""


def test_every_page_works_under_the_policy(
    app, live_server, page, source_db, ready_destination, sign_in
):
    """Pages, charts, the dashboard's refresh, htmx buttons and filters, and the confirm
    dialog all work with scripts from Rosetta alone; Chromium reports no CSP violation."""
    create_operator(app)
    sampled = add_source(app, "shop", source_db["port"], user="postgres")  # ready to start
    add_source(app, "dead", free_port())
    with app.app_context():
        after_round(sample_sources())
        now = utcnow()
        alert = new_alert(
            sampled,
            key="retained_wal:csp",
            severity="critical",
            source_name="shop",
            slot_name="rosetta_slot",
            value=11 * 1024**3,
            threshold=10 * 1024**3,
            message="slot `rosetta_slot` retains 11 GB of WAL (critical at 10 GB)",
            started_at=now,
            evaluated_at=now,
        )
        _db.session.add(alert)
        _db.session.commit()
        alert_id = alert.id
    page.add_init_script(RECORD_VIOLATIONS)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    violations: list[Any] = []

    def goto(path: str) -> None:
        """Leave the page, keeping what it reported, and open the next one."""
        violations.extend(page.evaluate("window.__violations || []"))
        page.goto(live_server + path)

    sign_in()
    assert page.evaluate("htmx.config.allowEval") is False

    # The dashboard refreshes itself when the tab comes back: ui.js, not an eval'd filter.
    with page.expect_response(lambda r: r.request.headers.get("hx-request") == "true") as poll:
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    assert poll.value.status == 200
    expect(page.locator("#dashboard-table")).to_be_visible()

    goto(f"/sources/{sampled}")
    expect(page.locator("#wal-charts")).to_have_attribute("data-range", "24h")
    assert page.locator("#chart-wal .scatterlayer .trace").count() >= 1
    page.click("#wal-charts a[data-range='1h']")
    expect(page.locator("#wal-charts")).to_have_attribute("data-range", "1h")

    # Readiness: Check swaps the section in place; the drop and publication pages open.
    page.click("#check-button")
    expect(page.locator("#check-slot .badge")).to_have_text("pass")
    goto(f"/sources/{sampled}/slots/rosetta_slot/drop")
    expect(page.locator("#slot-consumer")).to_have_text("none connected")
    goto(f"/sources/{sampled}/publication/new")
    expect(page.locator("#tables")).to_contain_text("public.orders")

    goto("/sources/")
    page.fill("input[type=search]", "dea")
    expect(page.locator("#sources-table tbody tr")).to_have_count(1)

    goto("/destinations/new")
    for name, value in ready_destination.items():
        page.fill(f"#{name}", value)
    page.click("main button.primary")
    goto("/pipelines/new")
    page.fill("#name", "p1")
    page.select_option("#source_id", label="shop")
    page.select_option("#destination_id", label=ready_destination["name"])
    page.click("main button.primary")
    row = page.locator("#pipelines-table tbody tr").first
    row.locator("button", has_text="Start").click()
    expect(row.locator(".status-cell .badge")).to_have_text("START")
    goto("/pipelines/1")
    expect(page.locator("#slot-consumer")).to_contain_text("none connected")
    goto("/pipelines/")
    row = page.locator("#pipelines-table tbody tr").first
    expect(row.locator(".disagreement")).to_contain_text("START requested, no consumer for")
    page.on("dialog", lambda dialog: dialog.accept())
    row.locator("button", has_text="Refresh").click()
    expect(
        page.locator("#pipelines-table tbody tr").first.locator(".status-cell .badge")
    ).to_have_text("REFRESH")

    # The alert pages: the banner, Acknowledge and Silence in place, the history's filters,
    # the settings, a channel with its test notification.
    goto("/alerts/")
    expect(page.locator("#alert-banner a")).to_contain_text("1 critical")
    page.click(f"#alert-{alert_id}-ack")
    expect(page.locator(f"#alert-{alert_id}-acked")).to_be_visible()
    page.click(f"#alert-{alert_id}-silence summary")
    page.click(f"#alert-{alert_id}-silence button[type=submit]")
    expect(page.locator(f"#alert-{alert_id}-silenced")).to_be_visible()
    expect(page.locator("#alert-banner a")).to_have_count(0)
    page.select_option("#history-state", "firing")
    expect(page).to_have_url(live_server + "/alerts/?state=firing")
    goto("/alerts/settings")
    page.click("#settings-form button.primary")
    expect(page.locator(".flash")).to_be_visible()
    goto("/alerts/channels/new")
    page.fill("#name", "hook")
    page.fill("#url", f"http://127.0.0.1:{free_port()}/hook")
    page.fill("#secret", "a-long-enough-signing-secret")
    page.click("main button.primary")
    page.click("#channels-table a:text('hook')")
    page.click("#send-test")
    expect(page.locator("#test-outcome")).to_contain_text("Not delivered")

    for path in ("/account", "/docs", f"/sources/{sampled}/edit", "/no-such-page", "/"):
        goto(path)
    violations.extend(page.evaluate("window.__violations"))
    assert violations == [], violations
    assert not [text for text in console if "Content Security Policy" in text], console
