"""In a real Chromium: a source's page draws its WAL charts and switches range in place."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from playwright.sync_api import expect

from rosetta_web.extensions import db as _db
from rosetta_web.models import SampleError
from rosetta_web.monitor import rollups
from rosetta_web.timeutil import utcnow

from ..factories import PASSWORD, add_source, create_operator, new_state, wal_metric

# Each starts Chromium and a server: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow


def _seed(app) -> int:
    """Two days of 5-minute samples; three hours ago, an hour of failed samples."""
    source_id = add_source(app, "charted", 5432)
    now = utcnow()
    with app.app_context():
        for step in range(2 * 24 * 12):
            moment = now - timedelta(minutes=5 * step)
            if timedelta(hours=3) < now - moment < timedelta(hours=4):
                _db.session.add(
                    SampleError(source_id=source_id, recorded_at=moment, error="timed out")
                )
                continue
            _db.session.add(
                wal_metric(
                    source_id,
                    moment,
                    wal_position_bytes=10**9 - step * 3_000_000,
                    size_bytes=2**30 + step * 1000,
                    retained_bytes=50_000_000 + (step % 12) * 1_000_000,
                )
            )
        _db.session.add(
            new_state(source_id, last_sampled_at=now, retained_bytes=50_000_000, size_bytes=2**30)
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
    line = "document.getElementById('chart-wal').data.find(t => t.name === 'WAL directory')"
    drawn = page.evaluate(f"{line}.y.filter(v => v !== null).length")
    assert drawn > 100
    gaps = page.evaluate(f"{line}.y.filter(v => v === null).length")
    assert gaps >= 1  # the failed hour breaks the line instead of a line drawn across it
    # Nor is its min-max band shaded across the failed hour: one shape per unbroken run of
    # samples (its points between nulls), none spanning the gap.
    band = page.evaluate(
        "document.getElementById('chart-wal').data"
        ".find(t => t.legendgroup === 'WAL directory' && t.fill === 'toself').x"
    )
    shapes, shape = [], []
    for moment in [*band, None]:
        if moment is None:
            if shape:
                shapes.append(shape)
            shape = []
        else:
            shape.append(datetime.fromisoformat(moment.replace("Z", "+00:00")))
    failed_at = utcnow() - timedelta(hours=3, minutes=30)
    assert len(shapes) >= 2
    for times in shapes:
        assert not min(times) < failed_at < max(times), "a band spans the failed samples"
    failed = "document.getElementById('chart-wal').data.find(t => t.name === 'failed samples')"
    assert page.evaluate(f"{failed}.text[0]") == "timed out"
    assert page.locator("#chart-rate .scatterlayer .trace").count() >= 1
    ticks = page.locator("#chart-wal .ytick text").all_text_contents()
    assert ticks[-1].endswith((" MB", " GB"))  # 1024-based units, as pg_size_pretty's
    # The x axis reaches to now, past the last sample.
    end = page.evaluate("document.getElementById('chart-wal').layout.xaxis.range[1]")
    assert datetime.fromisoformat(end.replace("Z", "+00:00")) >= utcnow() - timedelta(minutes=1)

    page.evaluate("window.marker = 'same page'")
    page.click("#wal-charts a[data-range='1h']")
    expect(charts).to_have_attribute("data-range", "1h")
    expect(page).to_have_url(f"{live_server}/sources/{source_id}?range=1h")
    assert int(charts.get_attribute("data-points")) < day_points
    assert page.evaluate("window.marker") == "same page"
    # The range just chosen is the one highlighted.
    expect(page.locator("#wal-charts a[aria-current='true']")).to_have_text("1h")
    colour = "getComputedStyle(document.querySelector(\"#wal-charts a[data-range='%s']\")).color"
    assert page.evaluate(colour % "1h") != page.evaluate(colour % "24h")

    # A link to the range shows the same view.
    page.goto(f"{live_server}/sources/{source_id}?range=7d")
    expect(charts).to_have_attribute("data-range", "7d")


def test_a_long_range_draws_hours_with_their_band_and_a_gap_where_none_was_sampled(
    app, live_server, page, sign_in
):
    """7 days are drawn from the hourly roll-ups: each point an hour's last sample, its band
    the hour's min to max, a failed sample a red mark that does not cut the line, and five
    hours without a sample a break in the line and the band; the year is a link away."""
    create_operator(app)
    source_id = add_source(app, "charted", 5432)
    now = utcnow()
    quiet = (now - timedelta(hours=35), now - timedelta(hours=30))
    with app.app_context():
        for step in range(3 * 24 * 12):
            moment = now - timedelta(minutes=5 * step)
            if quiet[0] < moment < quiet[1]:
                continue
            if step == 100:
                _db.session.add(SampleError(source_id=source_id, recorded_at=moment, error="boom"))
                continue
            _db.session.add(
                wal_metric(
                    source_id,
                    moment,
                    wal_position_bytes=10**9 - step * 3_000_000,
                    size_bytes=2**30 + (step % 12) * 2**20,
                )
            )
        _db.session.add(new_state(source_id, last_sampled_at=now, size_bytes=2**30))
        _db.session.commit()
        with _db.engine.begin() as connection:
            rollups.backfill(connection)
    sign_in()
    page.goto(f"{live_server}/sources/{source_id}?range=7d")
    charts = page.locator("#wal-charts")
    expect(charts).to_have_attribute("data-range", "7d")
    assert charts.get_attribute("data-bucket-seconds") == "3600"
    line = "document.getElementById('chart-wal').data.find(t => t.name === 'WAL directory')"
    x = page.evaluate(f"{line}.x")
    y = page.evaluate(f"{line}.y")
    breaks = [
        datetime.fromisoformat(t.replace("Z", "+00:00"))
        for t, v in zip(x, y, strict=True)
        if v is None
    ]
    assert len(breaks) == 1 and quiet[0] < breaks[0] < quiet[1]  # the failure does not cut it
    assert 3 * 24 - 5 - 1 <= len(x) - 1 <= 3 * 24 + 1  # an hour a point
    assert "in this hour" in page.evaluate(f"{line}.text.find(t => t.includes('in this'))")
    band = page.evaluate(
        "document.getElementById('chart-wal').data"
        ".find(t => t.legendgroup === 'WAL directory' && t.fill === 'toself')"
    )
    shapes, shape = [], []
    for moment, value in zip([*band["x"], None], [*band["y"], None], strict=True):
        if moment is None:
            if shape:
                shapes.append(shape)
            shape = []
        else:
            shape.append((datetime.fromisoformat(moment.replace("Z", "+00:00")), value))
    assert len(shapes) == 2  # one on each side of the gap
    for points in shapes:
        times = [t for t, _ in points]
        assert not min(times) < quiet[0] + timedelta(hours=1) < max(times), "a band spans the gap"
        assert min(v for _, v in points) < max(v for _, v in points)  # min to max, not a line
    failed = "document.getElementById('chart-wal').data.find(t => t.name === 'failed samples')"
    assert page.evaluate(f"{failed}.text") == ["boom"]

    page.click("#wal-charts a[data-range='365d']")
    expect(charts).to_have_attribute("data-range", "365d")
    expect(page.locator("#wal-charts a[aria-current='true']")).to_have_text("1y")
    assert charts.get_attribute("data-bucket-seconds") == "86400"


def test_a_range_and_the_slot_filter_keep_each_other_in_the_url(app, live_server, page, sign_in):
    """Filtering the slots keeps the charts' range in the address, and choosing a range keeps
    the slot filter: a reload, or the address shared, shows the same view."""
    create_operator(app)
    source_id = _seed(app)
    sign_in()
    page.goto(f"{live_server}/sources/{source_id}?slot=nothing")
    charts = page.locator("#wal-charts")
    expect(charts).to_have_attribute("data-range", "24h")

    page.click("#wal-charts a[data-range='7d']")
    expect(charts).to_have_attribute("data-range", "7d")
    expect(page).to_have_url(f"{live_server}/sources/{source_id}?slot=nothing&range=7d")

    page.fill("#slot-filter input[name='slot']", "cdc")
    expect(page).to_have_url(f"{live_server}/sources/{source_id}?slot=cdc&range=7d")
    page.reload()
    expect(charts).to_have_attribute("data-range", "7d")
    expect(page.locator("#slot-filter input[name='slot']")).to_have_value("cdc")

    # Without script, the range links and the filter's form carry the other parameter too.
    assert page.get_attribute("#wal-charts a[data-range='1h']", "href") == "?slot=cdc&range=1h"
    expect(page.locator("#slot-filter input[type='hidden'][name='range']")).to_have_value("7d")
