"""A pipeline's progress as the engine writes it: totals and minutes added up across writes,
the history's buckets, and the minutes expired with the WAL history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import time_machine
from sqlalchemy import func, select

from rosetta_web.engine.changes import Change, TableName
from rosetta_web.engine.loader import LoadReport, TableCounts
from rosetta_web.engine.progress import Tally, write
from rosetta_web.extensions import db as _db
from rosetta_web.models import PipelineLag, PipelineMinute, PipelineRun
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
