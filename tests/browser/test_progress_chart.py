"""In a real Chromium: a pipeline's page draws the rows it loaded and its lag from the progress
history, switches range in place, leaves empty minutes as gaps, and draws again every 30 s."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import text

from rosetta_web.extensions import db as _db
from rosetta_web.models import PipelineLag, PipelineMinute, PipelineRun
from rosetta_web.timeutil import utcnow

from ..constants import PHONE
from ..factories import ENGINE_OWNER, add_engine_process, add_pipeline, create_operator

# Each starts Chromium and a server: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow

# The minutes of the seeded history left empty: the engine was down 5 to 6 hours ago.
GAP = range(5 * 60, 6 * 60)
ROWS_JS = (
    "['inserted', 'updated', 'deleted'].map((op) => document.getElementById('chart-rows')"
    ".data.find((t) => t.name === op).y.reduce((a, b) => a + b, 0))"
)
LAG_JS = "document.getElementById('chart-lag').data[0]"


def _when(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _seed(app: Any) -> tuple[int, dict[str, list[int]]]:
    """A streaming pipeline with 20 hours of minutes (rows by operation and lag) but for an
    hour-long gap, and one minute 30 hours ago; return its id and the rows of the last 24 h
    and of the last 7 days, by operation."""
    pipeline_id = add_pipeline(app)
    add_engine_process(app)
    now = utcnow()
    minute = now.replace(second=0, microsecond=0)
    day = [0, 0, 0]
    with app.app_context():
        _db.session.add(
            PipelineRun(
                pipeline_id=pipeline_id,
                state="streaming",
                owner=ENGINE_OWNER,
                since=now - timedelta(days=2),
                updated_at=now,
                lag_seconds=3.0,
                lag_bytes=20_000,
            )
        )
        for k in range(1, 20 * 60):
            if k in GAP:
                continue
            counts = (k % 10 + 1, 2, k % 2)
            day = [a + b for a, b in zip(day, counts, strict=True)]
            at = minute - timedelta(minutes=k)
            _db.session.add(
                PipelineMinute(
                    pipeline_id=pipeline_id,
                    minute=at,
                    table_name="public.orders",
                    inserted=counts[0],
                    updated=counts[1],
                    deleted=counts[2],
                )
            )
            _db.session.add(
                PipelineLag(pipeline_id=pipeline_id, minute=at, lag_seconds=k % 7, lag_bytes=k)
            )
        _db.session.add(
            PipelineMinute(
                pipeline_id=pipeline_id,
                minute=minute - timedelta(hours=30),
                table_name="public.orders",
                inserted=1000,
                updated=0,
                deleted=0,
            )
        )
        _db.session.commit()
    return pipeline_id, {"24h": day, "7d": [day[0] + 1000, day[1], day[2]]}


def test_chart_draws_the_history_and_switches_range_in_place(app, live_server, page, sign_in):
    """The page draws the rows of the last 24 h by operation as stored, its lag with a gap
    where nothing was recorded, over an axis spanning the whole range; 1h and 7d redraw in
    place and land in the URL; a range with nothing in it says so; and the chart is drawn
    again 30 s later with what the engine wrote meanwhile."""
    create_operator(app)
    pipeline_id, rows = _seed(app)
    sign_in()
    page.clock.install()
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server}/pipelines/{pipeline_id}")
    chart = page.locator("#progress-charts")
    expect(chart).to_have_attribute("data-range", "24h")
    assert int(chart.get_attribute("data-points")) > 100
    assert page.evaluate(ROWS_JS) == rows["24h"]
    assert chart.get_attribute("data-rows") == str(sum(rows["24h"]))
    # The gap: no bar in it (but for the buckets at its edges, a few minutes wide), and the
    # lag's line broken there by a null point.
    bars = [_when(x) for x in page.evaluate("document.getElementById('chart-rows').data[0].x")]
    now = utcnow()
    assert not any(now - timedelta(minutes=352) < x < now - timedelta(minutes=308) for x in bars)
    lag_x, lag_y = page.evaluate(f"[{LAG_JS}.x, {LAG_JS}.y]")
    breaks = [_when(x) for x, y in zip(lag_x, lag_y, strict=True) if y is None]
    assert len(breaks) == 1
    assert now - timedelta(hours=6, minutes=5) < breaks[0] < now - timedelta(hours=5)
    assert page.evaluate(f"{LAG_JS}.connectgaps") is False
    # The axis spans the range asked for, not only the minutes recorded.
    start, end = page.evaluate("document.getElementById('chart-rows').layout.xaxis.range")
    assert abs((_when(start) - (now - timedelta(hours=24))).total_seconds()) < 120
    assert abs((_when(end) - now).total_seconds()) < 120
    # The lag's hover says its WAL as pg_size_pretty prints it.
    assert "behind, " in page.evaluate(f"{LAG_JS}.text.find((t) => t.includes('bytes'))")

    page.evaluate("window.marker = 'same page'")
    page.click("#progress-charts a[data-range='1h']")
    expect(chart).to_have_attribute("data-range", "1h")
    expect(page).to_have_url(f"{live_server}/pipelines/{pipeline_id}?range=1h")
    expect(page.locator("#progress-charts a[aria-current='true']")).to_have_text("1h")
    assert chart.get_attribute("data-bucket-seconds") == "60"
    assert 50 <= int(chart.get_attribute("data-points")) <= 60
    page.click("#progress-charts a[data-range='7d']")
    expect(chart).to_have_attribute("data-range", "7d")
    assert page.evaluate(ROWS_JS) == rows["7d"]
    assert page.evaluate("window.marker") == "same page"

    # A range with nothing recorded says so, and draws no empty axes.
    page.fill("#progress-charts input[name=start]", "2020-01-01T00:00")
    page.fill("#progress-charts input[name=end]", "2020-01-02T00:00")
    page.click("#progress-charts button[type=submit]")
    expect(chart).to_have_attribute("data-points", "0")
    expect(page.locator("#progress-charts .chart-message")).to_contain_text(
        "Nothing recorded in this range"
    )
    expect(page.locator("#chart-rows")).to_be_hidden()
    assert "start=2020-01-01T00%3A00" in page.url
    assert page.evaluate("window.marker") == "same page"

    # Back to the last 24 h; the engine loads 5,000 rows; 30 s later the chart shows them.
    page.go_back()
    page.go_back()
    expect(chart).to_have_attribute("data-range", "1h")
    with app.app_context():
        _db.session.add(
            PipelineMinute(
                pipeline_id=pipeline_id,
                minute=utcnow().replace(second=0, microsecond=0),
                table_name="public.orders",
                inserted=5000,
                updated=0,
                deleted=0,
            )
        )
        _db.session.commit()
    before = int(chart.get_attribute("data-rows"))
    with page.expect_response(lambda r: "/progress/history" in r.url):
        page.clock.fast_forward("00:31")
    expect(chart).to_have_attribute("data-rows", str(before + 5000))
    assert page.evaluate("window.marker") == "same page"


def test_sizes_in_the_chart_read_as_pg_size_pretty_prints_them(app, live_server, page, sign_in):
    """The chart's sizes (the lag's WAL on hover) read exactly as psql's pg_size_pretty prints
    them, at every unit's edge; and the page fits a phone with its chart."""
    create_operator(app)
    pipeline_id, _ = _seed(app)
    sign_in()
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server}/pipelines/{pipeline_id}")
    expect(page.locator("#progress-charts")).to_have_attribute("data-range", "24h")
    sizes = [0, 1, 10239, 10240, 10485247, 10485248, 20971519, 20971520, 123456789]
    sizes += [-10240, 5 * 1024**3, 11 * 1024**4, 2**62]
    with app.app_context():
        query = text("SELECT pg_size_pretty(s) FROM unnest(CAST(:sizes AS bigint[])) AS s")
        printed = list(_db.session.scalars(query, {"sizes": sizes}))
    assert page.evaluate(f"{sizes}.map(window.RosettaCharts.sizePretty)") == printed
    widths = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    assert widths[0] <= widths[1], widths
    box = page.locator("#chart-rows").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
