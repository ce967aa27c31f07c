"""A pipeline's progress as its engine records it: state, lag, rows per table, errors; and its
history per minute for a chart."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from sqlalchemy import Float, func, literal, select
from sqlalchemy.orm import joinedload

from ..engines import engine_state, live_engines
from ..extensions import db
from ..models import (
    ENGINE_STATES,
    PIPELINE_STATUSES,
    SNAPSHOT_STATES,
    Pipeline,
    PipelineLag,
    PipelineMinute,
    PipelineRun,
    PipelineTable,
)
from ..monitor.history import Window
from ..monitor.rollups import epoch_seconds, whole
from ..shapes import ChoiceArg, Declared, Described
from ..timeutil import ParameterError, as_utc
from .services import engine_errors, lag_warning_seconds

# The chart's ranges, as the WAL charts offer them.
RANGES = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
RANGE = ChoiceArg(
    "range",
    choices=tuple(RANGES),
    default="24h",
    description="How far back from end (default now); start, when sent, replaces it",
)
MINUTE_S = 60


@dataclass(frozen=True)
class TableProgress(Declared):
    """What the pipeline moved of one source table."""

    table: Annotated[str, Described("The source table: schema.table")]
    snapshot: Annotated[
        str | None,
        Described(
            "Its first copy (or REFRESH): pending, copying, done; null when none was recorded",
            {"type": ["string", "null"], "enum": [*SNAPSHOT_STATES, None]},
        ),
    ]
    snapshot_rows: Annotated[int, Described("Rows its last copy loaded (so far)")]
    inserted: Annotated[int, Described("Rows inserted since the first copy, as MERGE counted")]
    updated: Annotated[int, Described("Rows updated, as MERGE counted")]
    deleted: Annotated[int, Described("Rows deleted, as MERGE counted")]
    last_change_at: Annotated[datetime | None, Described("When rows of it were last loaded")]


@dataclass(frozen=True)
class ProgressError(Declared):
    """One failure or retry its engine recorded."""

    at: datetime
    message: str


@dataclass(frozen=True)
class Progress(Declared):
    """A pipeline's progress, as the engine that owns it records it every few seconds."""

    api_name = "Progress"

    state: Annotated[
        str, Described("What the engine is doing", {"type": "string", "enum": list(ENGINE_STATES)})
    ]
    owner: Annotated[str | None, Described("The engine process that owns it: host:pid")]
    since: Annotated[datetime | None, Described("Since when it has been in this state")]
    last_lsn: Annotated[
        int | None, Described("The last source WAL position loaded and committed, bytes since 0/0")
    ]
    lag_bytes: Annotated[
        int | None,
        Described(
            "The source's current WAL position minus last_lsn when written, as "
            "pg_wal_lsn_diff gives it; null when no live engine owns it"
        ),
    ]
    lag_seconds: Annotated[
        float | None,
        Described(
            "Now minus the source commit time of the last change loaded; 0 when caught up "
            "and idle; null when no live engine owns it"
        ),
    ]
    updated_at: Annotated[datetime | None, Described("When its engine last wrote it")]
    tables: Annotated[list[TableProgress], Described("Each table, by name")]
    errors: Annotated[
        list[ProgressError], Described("The last 50 errors and retries, newest first")
    ]


@dataclass(frozen=True)
class CopyProgress:
    """Where a first copy (snapshotting) or a REFRESH (refreshing) stands."""

    tables_done: int
    tables: int
    rows: int


def copy_progress(pipeline: Pipeline, progress: Progress) -> CopyProgress | None:
    """Count the tables copied of those the copy takes, and the rows copied so far, while
    the engine is snapshotting or refreshing; None otherwise. A REFRESH of named tables counts
    those alone; one of all leaves out the tables it skipped (no primary key)."""
    if progress.state not in ("snapshotting", "refreshing"):
        return None
    taken = [t for t in progress.tables if t.snapshot is not None]
    if progress.state == "refreshing" and pipeline.refresh_tables:
        taken = [t for t in taken if t.table in pipeline.refresh_tables]
    elif progress.state == "refreshing" and pipeline.refresh_skipped:
        taken = [t for t in taken if t.table not in pipeline.refresh_skipped]
    return CopyProgress(
        tables_done=sum(1 for t in taken if t.snapshot == "done"),
        tables=len(taken),
        rows=sum(t.snapshot_rows for t in taken),
    )


def pipeline_progress(pipeline: Pipeline) -> Progress:
    """Return the pipeline's progress: its engine's state and lag, its tables, its errors."""
    engine = engine_state(pipeline)
    run = pipeline.run
    live = engine.owner is not None and run is not None
    tables = db.session.scalars(
        select(PipelineTable)
        .where(PipelineTable.pipeline_id == pipeline.id)
        .order_by(PipelineTable.table_name)
    )
    return Progress(
        state=engine.state,
        owner=engine.owner,
        since=engine.since,
        last_lsn=engine.last_lsn,
        lag_bytes=run.lag_bytes if live and run is not None else None,
        lag_seconds=run.lag_seconds if live and run is not None else None,
        updated_at=engine.updated_at,
        tables=[
            TableProgress(
                table=t.table_name,
                snapshot=t.snapshot,
                snapshot_rows=t.snapshot_rows,
                inserted=t.inserted,
                updated=t.updated,
                deleted=t.deleted,
                last_change_at=as_utc(t.last_change_at) if t.last_change_at else None,
            )
            for t in tables
        ],
        errors=[ProgressError(e.at, e.message) for e in engine_errors(pipeline)],
    )


def progress_window(range_name: str | None, start: datetime | None, end: datetime) -> Window:
    """Resolve the chart's range: from `start` (or end minus `range_name`) to `end`, as
    wal-history resolves its own; raise ParameterError naming what is wrong."""
    try:
        begin = start if start is not None else end - RANGES[range_name or "24h"]
        begin.timestamp()  # the buckets are counted in seconds since 1970
    except (OverflowError, ValueError):
        raise ParameterError("start", "start is out of range.") from None
    if end <= begin:
        raise ParameterError("end", "end must be after start.")
    return Window(begin, end)


@dataclass(frozen=True)
class ProgressHistory(Declared):
    """A pipeline's rows loaded (by operation) and lag over a range, for a chart."""

    api_name = "ProgressHistory"

    pipeline_id: int
    start: datetime
    end: datetime
    bucket_seconds: Annotated[
        int,
        Described(
            "The width of the buckets (60: one a minute, more for a long range), whose edges "
            "are multiples of it since 1970"
        ),
    ]
    times: Annotated[
        list[datetime],
        Described("Each bucket's start; buckets with nothing recorded are left out (a gap)"),
    ]
    inserted: Annotated[list[int], Described("Rows inserted in each bucket, all tables")]
    updated: Annotated[list[int], Described("Rows updated in each bucket")]
    deleted: Annotated[list[int], Described("Rows deleted in each bucket")]
    lag_seconds: Annotated[
        list[float | None], Described("The highest lag in seconds written in each bucket")
    ]
    lag_bytes: Annotated[
        list[int | None], Described("The highest lag in bytes written in each bucket")
    ]


def bucket_width(win: Window, max_points: int) -> int:
    """Return the buckets' width: whole minutes, no more than `max_points` of them."""
    span = (win.end - win.start).total_seconds()
    minutes = max(1, math.ceil(span / max_points / MINUTE_S))
    return minutes * MINUTE_S


def progress_history(pipeline: Pipeline, win: Window, max_points: int) -> ProgressHistory:
    """Return the pipeline's rows per bucket (summed over its tables) and its highest lag."""
    width = bucket_width(win, max_points)

    def bucket(column: Any) -> Any:
        return whole(epoch_seconds(column) / literal(float(width), Float)).label("bucket")

    rows_bucket = bucket(PipelineMinute.minute)
    rows = db.session.execute(
        select(
            rows_bucket,
            func.sum(PipelineMinute.inserted),
            func.sum(PipelineMinute.updated),
            func.sum(PipelineMinute.deleted),
        )
        .where(
            PipelineMinute.pipeline_id == pipeline.id,
            PipelineMinute.minute >= win.start,
            PipelineMinute.minute < win.end,
        )
        .group_by(rows_bucket)
    ).all()
    lag_bucket = bucket(PipelineLag.minute)
    lags = db.session.execute(
        select(lag_bucket, func.max(PipelineLag.lag_seconds), func.max(PipelineLag.lag_bytes))
        .where(
            PipelineLag.pipeline_id == pipeline.id,
            PipelineLag.minute >= win.start,
            PipelineLag.minute < win.end,
        )
        .group_by(lag_bucket)
    ).all()
    counts = {int(row[0]): (int(row[1] or 0), int(row[2] or 0), int(row[3] or 0)) for row in rows}
    lag = {int(row[0]): (row[1], row[2]) for row in lags}
    buckets = sorted(set(counts) | set(lag))
    return ProgressHistory(
        pipeline_id=pipeline.id,
        start=win.start,
        end=win.end,
        bucket_seconds=width,
        times=[datetime.fromtimestamp(b * width, UTC) for b in buckets],
        inserted=[counts.get(b, (0, 0, 0))[0] for b in buckets],
        updated=[counts.get(b, (0, 0, 0))[1] for b in buckets],
        deleted=[counts.get(b, (0, 0, 0))[2] for b in buckets],
        lag_seconds=[lag.get(b, (None, None))[0] for b in buckets],
        lag_bytes=[
            int(v) if (v := lag.get(b, (None, None))[1]) is not None else None for b in buckets
        ],
    )


@dataclass(frozen=True)
class PipelineSummary:
    """The pipelines counted for the dashboard and the API's summary."""

    by_status: dict[str, int]  # by wanted status
    by_state: dict[str, int]  # by what their engines do (stopped when none owns one)
    behind: int  # owned by a live engine and over its pipeline_lag warning threshold
    worst_lag: dict[str, Any] | None  # the one furthest behind in seconds


def pipeline_summary() -> PipelineSummary:
    """Count the pipelines by wanted status, by what their engines are doing (stopped when
    none owns one) and how many are behind, and name the one furthest behind in seconds among
    those a live engine owns: two queries, however many pipelines."""
    engines = live_engines()
    by_status = dict.fromkeys(PIPELINE_STATUSES, 0)
    by_state = dict.fromkeys(ENGINE_STATES, 0)
    behind: list[tuple[float, int, str, PipelineRun]] = []
    count = 0
    pipelines = db.session.scalars(
        select(Pipeline).options(joinedload(Pipeline.run), joinedload(Pipeline.source))
    )
    for pipeline in pipelines:
        by_status[pipeline.status] += 1
        by_state[engine_state(pipeline, engines).state] += 1
        run = pipeline.run
        if run is not None and run.owner in engines.live and run.lag_seconds is not None:
            behind.append((-run.lag_seconds, -(run.lag_bytes or 0), pipeline.name, run))
            warning = lag_warning_seconds(pipeline.source)
            count += warning is not None and run.lag_seconds > warning
    if not behind:
        return PipelineSummary(by_status, by_state, count, None)
    _, _, name, run = min(behind, key=lambda one: one[:3])
    worst = {
        "pipeline_id": run.pipeline_id,
        "pipeline": name,
        "lag_seconds": run.lag_seconds,
        "lag_bytes": run.lag_bytes,
    }
    return PipelineSummary(by_status, by_state, count, worst)
