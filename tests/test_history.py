"""WAL history bucketed in SQL, its endpoint, the dashboard, and the vendored plotly.js."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rosetta_web.extensions import db as _db
from rosetta_web.formatting import sparkline
from rosetta_web.models import Pipeline, SlotMetric, WalMetric
from rosetta_web.monitor import history
from rosetta_web.timeutil import utcnow

from .conftest import add_source, sampled_source

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# (seconds after T0, WAL directory bytes, retained bytes, WAL position bytes)
SAMPLES = [
    (-30, 90, 5, -3000),  # before the range: left out
    (0, 100, 10, 0),
    (60, 110, 500, 6000),  # a spike in retained WAL
    (90, 120, 20, 9000),  # exactly on a bucket edge: belongs to bucket 1
    (150, 130, 30, 15000),
    (180, 140, 40, 24000),  # a burst of writing: 300 B/s
    (240, 150, 50, 30000),
    # 270-450 s: samples failed, buckets 3 and 4 stay empty
    (450, 160, 60, 60000),
    (540, 170, 70, 60000),
    (899, 180, 80, 70000),
    (900, 190, 90, 80000),  # at the end: left out (the range is [start, end))
]
SLOT_SAMPLES = {0: 10, 60: 500, 450: 60}


def _seed(app) -> int:
    """Store the samples as the monitor would, each with its rate since the one before."""
    source_id = add_source(app, "synthetic", 5432)
    with app.app_context():
        previous = None
        for offset, size, retained, position in SAMPLES:
            rate = None if previous is None else (position - previous[1]) / (offset - previous[0])
            previous = (offset, position)
            metric = WalMetric(
                wal_rate_bytes_per_second=rate,
                source_id=source_id,
                recorded_at=T0 + timedelta(seconds=offset),
                current_lsn="0/0",
                wal_position_bytes=position,
                size_bytes=size,
                retained_bytes=retained,
                slot_count=1,
                inactive_slot_count=0,
            )
            _db.session.add(metric)
            _db.session.flush()
            if offset in SLOT_SAMPLES:
                _db.session.add(
                    SlotMetric(
                        wal_metric_id=metric.id,
                        source_id=source_id,
                        recorded_at=metric.recorded_at,
                        slot_name="slot_a",
                        slot_type="logical",
                        active=True,
                        retained_bytes=SLOT_SAMPLES[offset],
                    )
                )
        _db.session.commit()
    return source_id


@pytest.mark.parametrize("backend", ["app", "sqlite_app"])
def test_bucketing_matches_a_hand_computed_history(request, backend):
    """Ten 90 s buckets: edges, spikes (max), gaps (null) and rates come out as computed."""
    app = request.getfixturevalue(backend)
    source_id = _seed(app)
    with app.app_context():
        win = history.window(
            T0.isoformat(),
            (T0 + timedelta(seconds=900)).isoformat(),
            max_points=10,
            interval_s=60,
        )
        assert (win.bucket_seconds, win.buckets) == (90, 10)
        result = history.history(source_id, win)
    none2 = [None, None]
    size = result["series"]["size_bytes"]
    assert size["last"] == [110, 130, 150, *none2, 160, 170, *none2, 180]
    assert size["min"] == [100, 120, 140, *none2, 160, 170, *none2, 180]
    assert size["max"] == [110, 130, 150, *none2, 160, 170, *none2, 180]
    retained = result["series"]["retained_bytes"]
    assert retained["max"] == [500, 30, 50, *none2, 60, 70, *none2, 80]  # the spike survives
    assert retained["last"][0] == 500 and retained["min"][0] == 10
    rate = result["series"]["wal_rate_bytes_per_second"]
    assert rate["last"] == [100, 100, 100, *none2, 142.857, 0, *none2, 27.855]
    assert rate["max"][2] == 300 and rate["min"][2] == 100
    assert result["slots"]["slot_a"]["retained_bytes"]["max"] == [500, *[None] * 4, 60, *[None] * 4]
    assert result["buckets"][1] == "2026-03-01T12:01:30Z" and len(result["buckets"]) == 10


def test_window_never_buckets_finer_than_sampling():
    """Buckets are at least 1.5 sampling intervals wide, and never more than max_points."""
    now = T0
    short = history.window("1h", None, 1000, 300, now=now)
    assert short.bucket_seconds == 450 and short.buckets == 8
    long = history.window("30d", None, 1000, 300, now=now)
    assert long.buckets <= 1000 and long.bucket_seconds == 2592
    assert history.window(None, None, 1000, 60, now=now).start == now - timedelta(hours=24)
    with pytest.raises(history.HistoryParameterError, match="end must be after start"):
        history.window("2026-03-02T00:00:00Z", "2026-03-01T00:00:00Z", 10, 60, now=now)
    with pytest.raises(history.HistoryParameterError, match="ISO-8601"):
        history.window("yesterday", None, 10, 60, now=now)


def test_history_endpoint_parameters_and_errors(app, api):
    """The endpoint returns at most max_points buckets and answers bad parameters with 422."""
    source_id = _seed(app)
    start, end = "2026-03-01T12:00:00Z", "2026-03-01T12:15:00Z"
    app.config["WAL_MONITOR_INTERVAL_SECONDS"] = 60
    body = api.get(f"/api/v1/sources/{source_id}/wal-history?start={start}&end={end}&max_points=10")
    data = body.get_json()
    assert body.status_code == 200 and len(data["buckets"]) == 10
    assert data["series"]["size_bytes"]["max"][0] == 110
    few = api.get(f"/api/v1/sources/{source_id}/wal-history?start=30d&max_points=7").get_json()
    assert len(few["buckets"]) <= 7 and few["end"] > few["start"]
    default = api.get(f"/api/v1/sources/{source_id}/wal-history").get_json()
    assert default["bucket_seconds"] * len(default["buckets"]) >= 24 * 3600
    for query, field in (
        (f"start={end}&end={start}", "end"),
        ("start=last+tuesday", "start"),
        ("end=2026-13-45", "end"),
        ("max_points=0", "max_points"),
        ("max_points=5001", "max_points"),
        ("max_points=many", "max_points"),
        ("start=99999999d", "start"),
        ("start=9999999999999999w", "start"),
        ("end=0001-01-01T00:00:00", "start"),
        ("end=9999-12-31T23:59:59-05:00", "end"),
    ):
        response = api.get(f"/api/v1/sources/{source_id}/wal-history?{query}")
        assert response.status_code == 422, query
        assert list(response.get_json()["details"]["fields"]) == [field]
    assert api.get("/api/v1/sources/999/wal-history").status_code == 404


def _many_sources(app, count: int, start: int = 0) -> None:
    now = int(utcnow().timestamp()) // 1800 * 1800
    with app.app_context():
        for i in range(start, start + count):
            _db.session.add(
                sampled_source(
                    i,
                    status="ERROR" if i == 3 else "OK",
                    last_error="connection refused" if i == 3 else None,
                    retained_bytes=i * 1_000_000,
                    size_bytes=i * 2_000_000,
                    inactive_slot_count=i % 2,
                    last_sampled_at=utcnow(),
                    retained_history=[[now - 1800 * k, i * 1000 + k] for k in range(48, 0, -1)],
                )
            )
        _db.session.commit()


def test_dashboard_reads_in_constant_queries_worst_first(app, browser, count_queries):
    """The dashboard costs the same few queries for 5 or 200 sources and lists worst first."""
    _many_sources(app, 5)
    with count_queries() as few:
        assert browser.get("/").status_code == 200
    _many_sources(app, 195, start=5)
    with app.app_context():
        _db.session.add(
            Pipeline(name="p", source_id=1, destination_id=_destination(), status="START")
        )
        _db.session.commit()
    with count_queries() as many:
        html = browser.get("/").get_data(as_text=True)
    assert len(many.statements) == len(few.statements) <= 4
    names = [line.split(">")[1].split("<")[0] for line in html.split('<td><a href="/sources/')[1:]]
    assert names[:3] == ["src-0003", "src-0199", "src-0198"]  # ERROR first, then most retained
    assert html.count('<svg class="sparkline"') == 200
    assert "1 ERROR" in html and "199 OK" in html and "100</span>" in html  # inactive slots
    assert "1 START" in html
    assert "connection refused" in html  # the error, expandable


def _destination() -> int:
    from rosetta_web.models import Destination

    destination = Destination(
        name="d",
        snowflake_account="a",
        snowflake_user="u",
        snowflake_database="db",
        snowflake_schema="s",
        snowflake_private_key_path="k.p8",
    )
    _db.session.add(destination)
    _db.session.flush()
    return destination.id


def test_dashboard_poll_returns_only_the_table(app, browser):
    """The htmx poll gets the table fragment, with its refresh time and the poll trigger."""
    _many_sources(app, 3)
    response = browser.get("/", headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith('<section id="dashboard-table"')
    assert "<html" not in html
    # The counts above the table come along, swapped in out of band.
    assert '<section class="summary" id="dashboard-summary" hx-swap-oob="true">' in html
    assert "every 30s [document.visibilityState === &#39;visible&#39;]" in html or (
        "every 30s [document.visibilityState === 'visible']" in html
    )
    assert "Refreshed <time" in html and "HX-Request" in response.headers["Vary"]


def test_sparkline_breaks_at_gaps():
    """A missing half hour splits the sparkline into separate lines."""
    now = T0
    base = int(now.timestamp()) // 1800 * 1800

    def path(points):
        return str(sparkline(points, now)).split(' d="')[1].split('"')[0]

    joined = path([[base - 3600, 10], [base - 1800, 20], [base, 5]])
    assert joined.count("M") == 1 and joined.count("L") == 2
    gapped = path([[base - 5400, 10], [base - 1800, 20], [base, 5]])
    assert gapped.count("M") == 2 and gapped.count("L") == 1
    assert "peak 20 Bytes" in str(sparkline([[base, 20]], now))
    # A source failing for a day keeps older points; they are not drawn, nor count as peak.
    stale = path([[base - 30 * 3600, 999], [base - 1800, 20], [base, 5]])
    assert "-" not in stale and stale.count("M") == 1
    assert "—" in str(sparkline([[base - 30 * 3600, 999]], now))
    assert "—" in str(sparkline(None, now))


def test_vendored_plotly_is_the_plotly_package_bundle():
    """static/vendor's plotly.js is byte for byte the bundle of the pinned plotly package."""
    import plotly
    from plotly.offline import get_plotlyjs_version

    vendored = Path(__file__).resolve().parent.parent / "static" / "vendor"
    bundled = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    file = vendored / f"plotly-{get_plotlyjs_version()}.min.js"
    assert file.exists(), f"vendor plotly.js {get_plotlyjs_version()} as {file.name}"
    assert (
        hashlib.sha256(file.read_bytes()).digest() == hashlib.sha256(bundled.read_bytes()).digest()
    )


def test_source_page_before_the_first_sample_says_when_it_comes(app, browser):
    """A source not sampled yet shows an empty state with the next round's time, no chart."""
    source_id = add_source(app, "fresh", 5432)
    html = browser.get(f"/sources/{source_id}").get_data(as_text=True)
    assert 'id="no-samples"' in html and "wal-charts" not in html
    assert "flask rosetta sample --source fresh" in html
