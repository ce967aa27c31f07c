"""A pipeline's progress as the engine writes it: totals and minutes added up across writes,
the history's buckets, and the minutes expired with the WAL history; and as the operator sees
it on the pipeline's page, the pipelines list and the dashboard."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import time_machine
from sqlalchemy import delete, func, select, text

from rosetta_web.engine.changes import Change, TableName
from rosetta_web.engine.loader import LoadReport, TableCounts
from rosetta_web.engine.progress import Tally, write
from rosetta_web.extensions import db as _db
from rosetta_web.models import (
    EngineProcess,
    Pipeline,
    PipelineLag,
    PipelineMinute,
    PipelineRun,
    PipelineTable,
)
from rosetta_web.monitor import rounds
from rosetta_web.postgres.connection import Target
from rosetta_web.timeutil import utcnow

from .factories import ENGINE_OWNER as OWNER
from .factories import add_engine_process, add_pipeline

SOURCE = Target(1, "s", "127.0.0.1", 5432, "shop", "u", "p")
ITEMS = TableName("public", "items")


def _change(op: str) -> Change:
    return Change(ITEMS, op, ("id",), (), {"id": 1}, lsn=100, committed_ms=1)


def _loaded(tally: Tally, inserted: int, updated: int, deleted: int) -> None:
    report = LoadReport({"ITEMS": TableCounts(inserted, updated, deleted)})
    tally.loaded(report, [_change("c"), _change("u")])


def _written(app, pipeline_id: int, tally: Tally, lag_bytes: int | None = None) -> None:
    with app.app_context():
        write(tally, tally.take(), lag_bytes)
        _db.session.remove()


def test_writes_add_up_in_totals_and_minutes(app, api):
    """Two writes of what two batches loaded add up: the table's totals and its minute show
    the sum, the first copy's rows stay as copied, and /progress shows the lag written."""
    pipeline_id = add_pipeline(app)
    add_engine_process(app)
    now = utcnow()
    with app.app_context():
        _db.session.add(
            PipelineRun(
                pipeline_id=pipeline_id, state="streaming", owner=OWNER, since=now, updated_at=now
            )
        )
        _db.session.commit()
    tally = Tally(pipeline_id, SOURCE)
    with time_machine.travel(datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC), tick=False):
        tally.snapshot("public.items", "done", 300)
        _loaded(tally, 5, 2, 1)
        tally.passed(4242, None, caught_up=False)
        _written(app, pipeline_id, tally, lag_bytes=99)
        _loaded(tally, 3, 1, 0)
        tally.passed(4343, None, caught_up=True)
        _written(app, pipeline_id, tally, lag_bytes=56)
    progress = api.get(f"/api/v1/pipelines/{pipeline_id}/progress").get_json()
    (table,) = progress["tables"]
    assert table["table"] == "public.items" and table["snapshot"] == "done"
    assert (table["snapshot_rows"], table["inserted"], table["updated"], table["deleted"]) == (
        300,
        8,
        3,
        1,
    )
    assert progress["last_lsn"] == 4343 and progress["lag_bytes"] == 56
    assert progress["lag_seconds"] == 0
    history = api.get(
        f"/api/v1/pipelines/{pipeline_id}/progress/history"
        "?start=2026-03-01T11:00:00Z&end=2026-03-01T13:00:00Z"
    ).get_json()
    assert history["times"] == ["2026-03-01T12:00:00Z"] and history["bucket_seconds"] == 60
    assert (history["inserted"], history["updated"], history["deleted"]) == ([8], [3], [1])
    assert history["lag_bytes"] == [99]  # the minute's highest


def test_a_deleted_pipelines_last_counts_never_reach_a_new_pipeline_with_its_id(app, api):
    """A stopped engine's counts are written once more after it stops. Its pipeline deleted
    meanwhile and a new one stored under the same id (SQLite gives the highest id again):
    those counts are dropped, and the new pipeline's progress shows only its own."""
    old_id = add_pipeline(app, name="old")
    with app.app_context():
        old = _db.session.get(Pipeline, old_id)
        stale = Tally(old_id, SOURCE, old.created_at)
        _db.session.delete(old)
        _db.session.commit()
    _loaded(stale, 7, 0, 0)
    with time_machine.travel(utcnow() + timedelta(seconds=1), tick=True):
        new_id = add_pipeline(app, name="new")
    with app.app_context():
        new = _db.session.get(Pipeline, new_id)
        if new_id != old_id:  # PostgreSQL never gives an id again: give it by hand
            new.id = old_id
            _db.session.commit()
            new = _db.session.get(Pipeline, old_id)
        now = utcnow()
        _db.session.add(
            PipelineRun(
                pipeline_id=old_id, state="streaming", owner=OWNER, since=now, updated_at=now
            )
        )
        _db.session.commit()
        fresh = Tally(old_id, SOURCE, new.created_at)
    _loaded(fresh, 2, 1, 0)
    _written(app, old_id, stale)
    _written(app, old_id, fresh)
    (table,) = api.get(f"/api/v1/pipelines/{old_id}/progress").get_json()["tables"]
    assert (table["inserted"], table["updated"], table["deleted"]) == (2, 1, 0)


def test_history_refuses_an_unknown_range(app, api):
    """range takes the WAL charts' values only; another is a 422 naming it."""
    pipeline_id = add_pipeline(app)
    answer = api.get(f"/api/v1/pipelines/{pipeline_id}/progress/history?range=2h")
    assert answer.status_code == 422
    assert "range" in answer.get_json()["details"]["fields"]
    answer = api.get(f"/api/v1/pipelines/{pipeline_id}/progress/history?range=7d")
    assert answer.status_code == 200 and answer.get_json()["bucket_seconds"] == 660


def test_expiry_deletes_minutes_older_than_the_retention(app):
    """The WAL retention job deletes progress minutes (rows and lag) older than its days and
    keeps the newer ones."""
    pipeline_id = add_pipeline(app)
    tally = Tally(pipeline_id, SOURCE)
    now = utcnow()
    with app.app_context():
        _db.session.add(
            PipelineRun(pipeline_id=pipeline_id, state="streaming", since=now, updated_at=now)
        )
        _db.session.commit()
    for days_ago in (31, 1):
        with time_machine.travel(now - timedelta(days=days_ago), tick=False):
            _loaded(tally, 1, 0, 0)
            tally.passed(1, None, caught_up=True)
            _written(app, pipeline_id, tally, lag_bytes=10)
    with app.app_context():
        counted = [select(func.count()).select_from(m) for m in (PipelineMinute, PipelineLag)]
        assert [_db.session.scalar(c) for c in counted] == [2, 2]
        rounds.delete_expired(30)
        assert [_db.session.scalar(c) for c in counted] == [1, 1]
        kept = _db.session.scalar(select(PipelineMinute.minute))
        assert kept is not None and kept > now - timedelta(days=2)


# ---- Shown on the pipeline's page, the pipelines list and the dashboard ------------------


def _text(html: str) -> str:
    """The text of an HTML fragment, tags dropped, entities read and white space folded."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()


def _element(html: str, element_id: str) -> tuple[str, str]:
    """The opening tag and the text of the element with that id (one without nested tags of
    its own kind)."""
    match = re.search(rf'(<(\w+)[^>]*\bid="{element_id}"[^>]*>)(.*?)</\2>', html, re.S)
    assert match, f"no #{element_id}"
    return match[1], _text(match[3])


def _pg_size_pretty(app, size: int) -> str:
    """What psql prints for the size, asked of the test cluster."""
    with app.app_context():
        query = text("SELECT pg_size_pretty(CAST(:size AS bigint))")
        return _db.session.scalar(query, {"size": size})


def _streaming(app, pipeline_id: int, state: str = "streaming", **fields) -> None:
    """Store the run of a live engine that owns the pipeline (its process beats)."""
    now = utcnow()
    values = {"owner": OWNER, "since": now - timedelta(minutes=5), "updated_at": now, **fields}
    with app.app_context():
        _db.session.add(PipelineRun(pipeline_id=pipeline_id, state=state, **values))
        _db.session.commit()


ORDERS = TableName("public", "orders")


def test_page_shows_the_lag_and_each_tables_rows_as_the_engine_wrote_them(app, browser):
    """A run's writes show on the pipeline's live part: lag in words ("42 s", then "0 s —
    caught up" once a heartbeat ends a batch), lag in WAL as psql's pg_size_pretty prints it
    with the exact bytes as its title, and each table's stored counts with thousands
    separators; with no live engine the lag says so."""
    pipeline_id = add_pipeline(app)
    add_engine_process(app)
    _streaming(app, pipeline_id)
    tally = Tally(pipeline_id, SOURCE)
    tally.snapshot("public.items", "done", 1_234_567)
    tally.snapshot("public.orders", "done", 98)
    _loaded(tally, 1500, 20, 3)
    orders = [Change(ORDERS, "c", ("id",), (), {"id": 1}, lsn=100, committed_ms=1)]
    tally.loaded(LoadReport({"ORDERS": TableCounts(7, 0, 2_000_001)}), orders)
    now_ms = int(utcnow().timestamp() * 1000)
    tally.passed(0x16_B374D848, now_ms - 42_000, caught_up=False)
    _written(app, pipeline_id, tally, lag_bytes=123_456_789)

    html = browser.get(f"/pipelines/{pipeline_id}/engine").get_data(as_text=True)
    assert _element(html, "lag-seconds")[1] == "42 s"
    tag, shown = _element(html, "lag-bytes")
    assert shown == _pg_size_pretty(app, 123_456_789) == "118 MB"
    assert 'title="123,456,789 bytes"' in tag
    with app.app_context():
        query = select(PipelineTable).order_by(PipelineTable.table_name)
        stored = _db.session.scalars(query).all()
    rows = re.findall(r'<tr>\s*<td class="cell-title" data-label="Table">(.*?)</tr>', html, re.S)
    assert [_text(row).split()[:6] for row in rows] == [
        [t.table_name, t.snapshot, f"{t.snapshot_rows:,}", f"{t.inserted:,}", f"{t.updated:,}"]
        + [f"{t.deleted:,}"]
        for t in stored
    ]
    assert [t.table_name for t in stored] == ["public.items", "public.orders"]
    assert "1,234,567" in rows[0] and "2,000,001" in rows[1]  # as stored, separated
    assert 'class="num" data-label="Inserted">1,500</td>' in rows[0]
    assert _element(html, "rows-total")[1] == f"{1500 + 20 + 3 + 7 + 2_000_001:,}"
    assert re.search(r"\d+ s ago", _text(rows[0]))  # its last change, just now

    tally.passed(0x16_B374D900, None, caught_up=True)
    _written(app, pipeline_id, tally, lag_bytes=0)
    html = browser.get(f"/pipelines/{pipeline_id}").get_data(as_text=True)
    assert _element(html, "lag-seconds")[1] == "0 s — caught up"
    assert _element(html, "lag-bytes")[1] == _pg_size_pretty(app, 0) == "0 bytes"

    with app.app_context():
        _db.session.execute(delete(EngineProcess))
        _db.session.get(PipelineRun, pipeline_id).updated_at = utcnow() - timedelta(minutes=5)
        _db.session.commit()
    html = browser.get(f"/pipelines/{pipeline_id}/engine").get_data(as_text=True)
    assert _element(html, "lag-seconds")[1] == "no live engine"
    assert _element(html, "lag-bytes")[1] == "no live engine"


def test_a_first_copy_shows_tables_done_of_total_and_rows_so_far(app, browser):
    """While snapshotting, the page says how many tables of the copy are done and how many
    rows it copied so far, each table with its snapshot state; streaming, it says neither."""
    pipeline_id = add_pipeline(app)
    add_engine_process(app)
    _streaming(app, pipeline_id, state="snapshotting")
    tally = Tally(pipeline_id, SOURCE)
    tally.snapshot("public.items", "done", 1_000_000)
    tally.snapshot("public.orders", "copying", 250)
    tally.snapshot("public.refunds", "pending", 0)
    _written(app, pipeline_id, tally, lag_bytes=None)
    html = browser.get(f"/pipelines/{pipeline_id}/engine").get_data(as_text=True)
    assert _element(html, "copy-tables")[1] == "1 of 3 tables"
    assert _element(html, "copy-rows")[1] == "1,000,250 rows copied so far"
    assert _element(html, "lag-seconds")[1] == "not known yet"
    badges = re.findall(r'<span class="badge snapshot-(\w+)">', html)
    assert badges == ["done", "copying", "pending"]

    with app.app_context():
        _db.session.get(PipelineRun, pipeline_id).state = "streaming"
        _db.session.commit()
    html = browser.get(f"/pipelines/{pipeline_id}/engine").get_data(as_text=True)
    assert 'id="copy-card"' not in html


def _listed(html: str) -> list[tuple[str, str, str]]:
    """Each row of the pipelines list: its name, its engine's state and its lag, in order."""
    rows = re.findall(r'<tr id="pipeline-\d+">(.*?)</tr>', html, re.S)
    found = []
    for row in rows:
        name = _text(re.search(r'data-label="Name">(.*?)</td>', row, re.S)[1])
        state = re.search(r'class="badge engine-(\w+)"', row)[1]
        lag = _text(re.search(r'data-label="Lag" class="num lag-cell">(.*?)</td>', row, re.S)[1])
        found.append((name, state, lag))
    return found


def test_list_shows_state_and_lag_worst_first_and_keeps_filtering(app, browser, api):
    """The pipelines list puts failed, then retrying, then the furthest behind first (those
    with no lag last), shows each one's engine state and lag in words with its WAL as the
    title; the name filter keeps that order; the API lists by name as before."""
    add_engine_process(app)
    lags = {
        "a-caught-up": ("streaming", 0.0, 0),
        "b-far-behind": ("streaming", 754.0, 5 * 1024**3),
        "c-failed": ("failed", None, None),
        "d-a-little-behind": ("streaming", 4.4, 8192),
        "e-retrying": ("retrying", 30.0, 1000),
        "f-unknown": ("starting", None, None),
    }
    ids = {}
    for name, (state, seconds, size) in lags.items():
        ids[name] = add_pipeline(app, name=name)
        _streaming(app, ids[name], state=state, lag_seconds=seconds, lag_bytes=size)
    ids["g-paused"] = add_pipeline(app, status="PAUSE", name="g-paused")

    html = browser.get("/pipelines/").get_data(as_text=True)
    assert _listed(html) == [
        ("c-failed", "failed", "—"),
        ("e-retrying", "retrying", "30 s"),
        ("b-far-behind", "streaming", "12 min"),
        ("d-a-little-behind", "streaming", "4 s"),
        ("a-caught-up", "streaming", "0 s caught up"),
        ("f-unknown", "starting", "—"),
        ("g-paused", "paused", "—"),
    ]
    behind = re.search(rf'<tr id="pipeline-{ids["b-far-behind"]}">(.*?)</tr>', html, re.S)[1]
    title = f"{_pg_size_pretty(app, 5 * 1024**3)} of WAL (5,368,709,120 bytes)"
    assert f'<span class="lag warn-text" title="{title}">12 min</span>' in behind

    filtered = browser.get("/pipelines/?q=behind", headers={"HX-Request": "true"})
    assert [row[0] for row in _listed(filtered.get_data(as_text=True))] == [
        "b-far-behind",
        "d-a-little-behind",
    ]
    listed = api.get("/api/v1/pipelines").get_json()
    assert [p["name"] for p in listed] == sorted(lags) + ["g-paused"]


def test_dashboard_counts_pipelines_behind_and_links_the_worst(app, browser, api, count_queries):
    """The dashboard counts the pipelines a live engine runs more than 5 min behind (not one
    whose engine is gone, however far behind it was), names the one furthest behind with a
    link to its page, counts them by engine state, and still reads in eight queries (the
    alert settings among them: their pipeline_lag warning is what behind means)."""
    add_engine_process(app)
    with count_queries() as none:
        browser.get("/")
    for name, seconds in (("p-700", 700.0), ("p-301", 301.0), ("p-300", 300.0), ("p-4", 4.0)):
        _streaming(app, add_pipeline(app, name=name), lag_seconds=seconds, lag_bytes=4096)
    gone = add_pipeline(app, name="p-gone")
    _streaming(app, gone, owner="old-host:1", lag_seconds=99_999.0)
    with app.app_context():
        _db.session.get(PipelineRun, gone).updated_at = utcnow() - timedelta(hours=1)
        _db.session.commit()
    with count_queries() as five:
        html = browser.get("/").get_data(as_text=True)
    assert len(five.statements) == len(none.statements) <= 8
    assert _element(html, "pipelines-behind")[1] == "2 behind"
    worst = re.search(r'id="worst-lag">(.*?)</span>\s*</span>', html, re.S)[1]
    assert '<a href="/pipelines/1">p-700</a>' in worst and "11 min" in _text(worst)
    card = html[html.index('id="pipelines-card"') :].split("</div>", 1)[0]
    by_state = re.findall(r'class="badge engine-\w+">([^<]*)</span>', card)
    assert by_state == ["1 stopped", "4 streaming"]  # trouble first
    summary = api.get("/api/v1/summary").get_json()
    assert summary["pipelines_behind"] == 2 and summary["worst_lag"]["pipeline"] == "p-700"
