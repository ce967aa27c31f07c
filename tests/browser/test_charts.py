"""In a real Chromium: a source's page draws its WAL charts and switches range in place."""

from __future__ import annotations

from datetime import timedelta

from playwright.sync_api import expect

from rosetta_web.extensions import db as _db
from rosetta_web.models import SourceState, WalMetric
from rosetta_web.timeutil import utcnow

from ..conftest import PASSWORD, add_source, create_operator


def _seed(app) -> int:
    """Two days of 5-minute samples, with an hour missing three hours ago."""
    source_id = add_source(app, "charted", 5432)
    now = utcnow()
    with app.app_context():
        for step in range(2 * 24 * 12):
            moment = now - timedelta(minutes=5 * step)
            if timedelta(hours=3) < now - moment < timedelta(hours=4):
                continue
            _db.session.add(
                WalMetric(
                    source_id=source_id,
                    recorded_at=moment,
                    current_lsn="0/0",
                    wal_position_bytes=10**9 - step * 3_000_000,
                    size_bytes=2**30 + step * 1000,
                    retained_bytes=50_000_000 + (step % 12) * 1_000_000,
                    slot_count=1,
                    inactive_slot_count=0,
                )
            )
        _db.session.add(
            SourceState(
                source_id=source_id,
                status="OK",
                consecutive_failures=0,
                last_sampled_at=now,
                retained_bytes=50_000_000,
                size_bytes=2**30,
            )
        )
        _db.session.commit()
    return source_id


def test_charts_draw_and_switch_range_without_navigation(app, live_server, page):
    """The page draws points from the history endpoint; 1h redraws in place and lands in the URL."""
    create_operator(app)
    source_id = _seed(app)
    page.goto(f"{live_server}/sources/{source_id}")
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("main button.primary")
    expect(page).to_have_url(f"{live_server}/sources/{source_id}")

    charts = page.locator("#wal-charts")
    expect(charts).to_have_attribute("data-range", "24h")
    day_points = int(charts.get_attribute("data-points"))
    drawn = page.evaluate(
        "document.getElementById('chart-wal').data[0].y.filter(v => v !== null).length"
    )
    assert drawn > 100
    gaps = page.evaluate(
        "document.getElementById('chart-wal').data[0].y.filter(v => v === null).length"
    )
    assert gaps >= 1  # the missing hour is a gap, not a line drawn across it
    assert page.locator("#chart-wal .scatterlayer .trace").count() >= 1
    assert page.locator("#chart-rate .scatterlayer .trace").count() == 1
    tick = page.locator("#chart-wal .ytick text").last.text_content()
    assert tick.endswith("B") and ("M" in tick or "G" in tick)  # human units on the axis

    page.evaluate("window.marker = 'same page'")
    page.click("#wal-charts a[data-range='1h']")
    expect(charts).to_have_attribute("data-range", "1h")
    expect(page).to_have_url(f"{live_server}/sources/{source_id}?range=1h")
    assert int(charts.get_attribute("data-points")) < day_points
    assert page.evaluate("window.marker") == "same page"
    expect(page.locator("#wal-charts a[aria-current]")).to_have_text("1h")

    # A link to the range shows the same view.
    page.goto(f"{live_server}/sources/{source_id}?range=7d")
    expect(charts).to_have_attribute("data-range", "7d")
