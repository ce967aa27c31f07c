"""WAL history bucketed in SQL, its endpoint, the dashboard, and the vendored plotly.js."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rosetta_web.extensions import db as _db
from rosetta_web.models import Pipeline, SampleError, Source
from rosetta_web.monitor import history
from rosetta_web.sources.services import server_of
from rosetta_web.sparkline import draw, render
from rosetta_web.timeutil import ParameterError, utcnow

from .factories import (
    add_source,
    new_destination,
    new_server,
    new_state,
    sampled_source,
    slot_metric,
    wal_metric,
)

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


FAILURE_AT = 300  # a failed sample between two good ones


def _seed(app) -> int:
    """Store the samples as the monitor would, each with its rate since the one before."""
    source_id = add_source(app, "synthetic", 5432)
    with app.app_context():
        server = new_server(
            "127.0.0.1:5432",
            "7000000000000000001",
            last_sampled_at=T0 + timedelta(seconds=900),  # as the monitor keeps it
        )
        _db.session.add(server)
        _db.session.flush()
        _db.session.add(new_state(source_id, server_id=server.id))
        previous = None
        for offset, size, retained, position in SAMPLES:
            rate = None if previous is None else (position - previous[1]) / (offset - previous[0])
            previous = (offset, position)
            moment = T0 + timedelta(seconds=offset)
            _db.session.add(
                wal_metric(
                    source_id,
                    moment,
                    wal_rate_bytes_per_second=rate,
                    wal_position_bytes=position,
                    size_bytes=size,
                    retained_bytes=retained,
                )
            )
            if offset in SLOT_SAMPLES:
                _db.session.add(
                    slot_metric(
                        server.id,
                        moment,
                        "slot_a",
                        database="shop",
                        retained_bytes=SLOT_SAMPLES[offset],
                    )
                )
        _db.session.add(
            SampleError(
                source_id=source_id,
                recorded_at=T0 + timedelta(seconds=FAILURE_AT),
                error="connection refused. Is the server running?",
            )
        )
        _db.session.commit()
    return source_id


def _history(app, source_id: int, start: str, end: str, max_points: int) -> dict:
    with app.app_context():
        source = _db.session.get(Source, source_id)
        return history.history(source, server_of(source), history.window(start, end), max_points)


def _at(*offsets: int) -> list[str]:
    return [(T0 + timedelta(seconds=o)).isoformat().replace("+00:00", "Z") for o in offsets]


@pytest.mark.parametrize("backend", ["app", "sqlite_app"])
def test_few_samples_come_back_at_their_own_times(request, backend):
    """No more samples than max_points: each sample at its time with its values, failures too."""
    app = request.getfixturevalue(backend)
    source_id = _seed(app)
    result = _history(app, source_id, T0.isoformat(), (T0 + timedelta(seconds=900)).isoformat(), 10)
    assert result["bucket_seconds"] == 0
    assert result["times"] == _at(0, 60, 90, 150, 180, 240, FAILURE_AT, 450, 540, 899)
    size = result["series"]["size_bytes"]
    assert size["last"] == [100, 110, 120, 130, 140, 150, None, 160, 170, 180]
    assert size["min"] == size["last"] and size["max"] == size["last"]
    assert result["errors"][6] == "connection refused. Is the server running?"
    assert result["errors"].count(None) == 9
    slot = result["slots"]["slot_a"]
    assert slot["last"] == [10, 500, None, None, None, None, None, 60, None, None]
    assert slot["own"] is True and result["other_slots"] is None


@pytest.mark.parametrize("backend", ["app", "sqlite_app"])
def test_buckets_are_drawn_at_their_last_sample_with_a_min_max_band(request, backend):
    """More samples than max_points: 180 s buckets on epoch multiples, each point at its last
    sample's time with its values, the spike kept in the band, the failure a null point."""
    app = request.getfixturevalue(backend)
    source_id = _seed(app)
    result = _history(app, source_id, T0.isoformat(), (T0 + timedelta(seconds=900)).isoformat(), 5)
    assert result["bucket_seconds"] == 180
    assert result["times"] == _at(150, 240, FAILURE_AT, 450, 540, 899)
    size = result["series"]["size_bytes"]
    assert size["last"] == [130, 150, None, 160, 170, 180]
    assert size["min"] == [100, 140, None, 160, 170, 180]
    retained = result["series"]["retained_bytes"]
    assert retained["last"][0] == 30 and retained["max"][0] == 500  # the spike survives
    rate = result["series"]["wal_rate_bytes_per_second"]
    assert rate["last"] == [100, 100, None, 142.857, 0, 27.855]
    assert rate["max"][1] == 300
    assert result["errors"] == [
        None,
        None,
        "connection refused. Is the server running?",
        None,
        None,
        None,
    ]
    assert result["slots"]["slot_a"]["max"] == [500, None, None, 60, None, None]
    # Asked again later with a range that moved with it, the buckets' points stay put.
    later = _history(
        app,
        source_id,
        (T0 + timedelta(seconds=7)).isoformat(),
        (T0 + timedelta(seconds=907)).isoformat(),
        5,
    )
    assert later["times"] == result["times"] + _at(900)  # and the sample now in range
    assert later["series"]["size_bytes"]["last"][:-1] == size["last"]


@pytest.mark.parametrize("backend", ["app", "sqlite_app"])
def test_points_keep_their_samples_microseconds(request, backend):
    """A sample stored at .000001 or .999999 of a second is drawn at that microsecond, raw and
    in buckets, as the database itself prints its time (times are read as whole microseconds
    since 1970, not as timestamps)."""
    app = request.getfixturevalue(backend)
    source_id = add_source(app, "precise", 5432)
    fractions = (1, 999_999, 500_000, 0)
    with app.app_context():
        server = new_server("127.0.0.1:5432", "7000000000000000002", last_sampled_at=T0)
        _db.session.add(server)
        _db.session.flush()
        _db.session.add(new_state(source_id, server_id=server.id))
        for i, fraction in enumerate(fractions):
            moment = T0 + timedelta(seconds=60 * i, microseconds=fraction)
            _db.session.add(wal_metric(source_id, moment, size_bytes=i, retained_bytes=i))
            _db.session.add(slot_metric(server.id, moment, "slot_a", retained_bytes=i))
        _db.session.commit()
        if backend == "app":
            printed = "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
        else:
            printed = "replace(recorded_at, ' ', 'T')"
        stored = _db.session.scalars(
            _db.text(f"SELECT {printed} FROM wal_metrics ORDER BY recorded_at")
        ).all()
    # As ISO-8601 prints them: no fraction when there is none.
    expected = [text.removesuffix(".000000") + "Z" for text in stored]
    assert expected[0].endswith(":00.000001Z") and expected[1].endswith(":00.999999Z")
    assert expected[3].endswith(":00Z")
    end = (T0 + timedelta(minutes=5)).isoformat()
    raw = _history(app, source_id, T0.isoformat(), end, 10)
    assert raw["bucket_seconds"] == 0 and raw["times"] == expected
    assert raw["slots"]["slot_a"]["last"] == [0, 1, 2, 3]
    bucketed = _history(app, source_id, T0.isoformat(), end, 2)
    assert bucketed["bucket_seconds"] == 150
    assert bucketed["times"] == [expected[2], expected[3]]  # each bucket's last sample
    assert bucketed["slots"]["slot_a"]["last"] == [2, 3]


def test_window_reads_relative_and_absolute_times():
    """Relative and ISO times resolve against now; wrong ones name their field."""
    now = T0
    assert history.window("1h", None, now=now).start == now - timedelta(hours=1)
    assert history.window(None, None, now=now).start == now - timedelta(hours=24)
    with pytest.raises(ParameterError, match="end must be after start"):
        history.window("2026-03-02T00:00:00Z", "2026-03-01T00:00:00Z", now=now)
    with pytest.raises(ParameterError, match="ISO-8601"):
        history.window("yesterday", None, now=now)


def test_history_endpoint_parameters_and_errors(app, api):
    """The endpoint returns at most max_points points and answers bad parameters with 422."""
    source_id = _seed(app)
    start, end = "2026-03-01T12:00:00Z", "2026-03-01T12:15:00Z"
    body = api.get(f"/api/v1/sources/{source_id}/wal-history?start={start}&end={end}&max_points=5")
    data = body.get_json()
    assert body.status_code == 200 and len(data["times"]) == 6 and data["bucket_seconds"] == 180
    assert data["series"]["size_bytes"]["max"][0] == 130
    few = api.get(f"/api/v1/sources/{source_id}/wal-history?start=30d&max_points=7").get_json()
    assert len(few["times"]) <= 7 * 2 and few["end"] > few["start"]
    for query, field in (
        (f"start={end}&end={start}", "end"),
        ("start=last+tuesday", "start"),
        ("end=2026-13-45", "end"),
        ("max_points=0", "max_points"),
        ("max_points=", "max_points"),  # blank is not absent: the document says a number
        ("max_points=5_0", "max_points"),
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
    # A start before 1970 reads as all history (the buckets count seconds since then).
    ancient = api.get(f"/api/v1/sources/{source_id}/wal-history?start=0001-01-02T00:00:00Z")
    assert ancient.status_code == 200 and ancient.get_json()["start"].startswith("1970-01-01")
    assert api.get("/api/v1/sources/999/wal-history").status_code == 404


def _many_sources(app, count: int, start: int = 0) -> None:
    now = int(utcnow().timestamp()) // 600 * 600
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
                    retained_sparkline=draw(
                        [[now - 600 * k, i * 1000 + k] for k in range(143, -1, -1)]
                    ),
                )
            )
        _db.session.commit()


def test_dashboard_reads_in_constant_queries_worst_first(app, browser, count_queries):
    """The dashboard costs the same few queries for 5 or 200 sources and lists the worst 50
    first, with the counts of all."""
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
    # The same seven for 5 sources or 200 (the summary's engine states read the live engines
    # and the pipelines with their runs, in place of the count by status).
    assert len(many.statements) == len(few.statements) <= 8
    cells = html.split('<td class="cell-title" data-label="Source"><a href="/sources/')[1:]
    names = [line.split(">")[1].split("<")[0] for line in cells]
    assert names[:3] == ["src-0003", "src-0199", "src-0198"]  # ERROR first, then most retained
    assert html.count('<svg class="sparkline"') == 50 and len(names) == 50
    assert names[-1] == "src-0151"
    assert "1 ERROR" in html and "199 OK" in html
    assert "1 START" in html
    assert "connection refused" in html  # the error, expandable


def _destination() -> int:
    destination = new_destination()
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
    # ui.js sends the trigger every 30 s while the tab is visible (no eval under the CSP).
    assert 'hx-trigger="rosetta:refresh" data-refresh-seconds="30"' in html
    assert "Refreshed <time" in html and "HX-Request" in response.headers["Vary"]


def test_sparkline_breaks_at_gaps_and_slides_with_time():
    """A missing 10 minutes splits the sparkline; as time passes, the line slides left and is
    gone after a day."""
    now = T0
    base = int(now.timestamp()) // 600 * 600

    def path(points, at=now):
        return str(render(draw(points), at)).split(' d="')[1].split('"')[0]

    joined = path([[base - 1200, 10], [base - 600, 20], [base, 5]])
    assert joined.count("M") == 1 and joined.count("L") == 2
    assert joined.startswith("M141,") and "L143," in joined  # the last bucket at the right end
    gapped = path([[base - 1800, 10], [base - 600, 20], [base, 5]])
    assert gapped.count("M") == 2 and gapped.count("L") == 1
    assert "peak 20 bytes" in str(render(draw([[base, 20]]), now))
    later = str(render(draw([[base, 20]]), now + timedelta(hours=2)))
    assert 'viewBox="12 0 143 24"' in later  # two hours on: 12 buckets further left
    # A source failing for a day keeps its old line; it is not drawn any more.
    assert "—" in str(render(draw([[base, 999]]), now + timedelta(hours=25)))
    assert "—" in str(render(None, now))


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
    assert "Sample now" in html
