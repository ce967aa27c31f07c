"""What each pipeline moved and how far behind it is, counted in memory by its engine and
written to the metadata database every few seconds, never once per batch.

A `Tally` belongs to one pipeline's run: the engine's threads add to it as batches load and
the first copy goes on. A `ProgressWriter` thread takes what each tally gathered every
FLUSH_SECONDS, asks the source for its current WAL position, and writes the lot in one
transaction per pipeline: per-table totals and per-minute buckets added to (upserts), the lag
and last LSN on the pipeline's run. What a failed write took is put back for the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import Flask
from sqlalchemy import func
from sqlalchemy.dialects import postgresql, sqlite

from ..errors import DATABASE_UNAVAILABLE
from ..extensions import db
from ..models import PipelineLag, PipelineMinute, PipelineRun, PipelineTable
from ..postgres.connection import Target, connect, run
from ..postgres.sampling_queries import POSITION
from ..timeutil import as_utc, utcnow
from .changes import Change
from .loader import LoadReport, target_table_name

log = logging.getLogger(__name__)

# How often progress is written: at most this often, and so at least every 10 s.
FLUSH_SECONDS = 5.0
# Debezium's heartbeat interval (heartbeat.interval.ms): a caught-up engine hears from the
# source this often. Three missed heartbeats and it no longer says it is caught up.
HEARTBEAT_SECONDS = 10.0
CAUGHT_UP_FOR_S = 3 * HEARTBEAT_SECONDS
OPS = ("inserted", "updated", "deleted")


@dataclass
class TableTally:
    """One table's counts since the last write, and its first copy's state."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    snapshot: str | None = None  # set: write it (pending, copying, done)
    snapshot_rows: int | None = None  # set: the copy's rows so far (replaces the stored)
    snapshot_added: int = 0  # rows Debezium's snapshot read since the last write
    last_change_at: datetime | None = None


@dataclass
class Taken:
    """What a tally gathered since the last write."""

    tables: dict[str, TableTally]
    minutes: dict[tuple[datetime, str], list[int]]
    last_lsn: int | None
    lag_seconds: float | None


def minute_of(moment: datetime) -> datetime:
    """Return the start of the minute a moment falls in."""
    return moment.replace(second=0, microsecond=0)


def _qualified(change: Change) -> str:
    return f"{change.table.schema}.{change.table.name}"


@dataclass
class Tally:
    """A pipeline's progress since its last write, added to by the engine's threads."""

    pipeline_id: int
    source: Target
    created_at: datetime | None = None  # the pipeline's: the same id may name a new one later
    tables: dict[str, TableTally] = field(default_factory=dict)
    minutes: dict[tuple[datetime, str], list[int]] = field(default_factory=dict)
    last_lsn: int | None = None
    # The source commit time (ms since 1970) of the last change loaded or heartbeat passed.
    source_ms: int | None = None
    # When (monotonic) a batch ended on a heartbeat with nothing after it: caught up.
    caught_up_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _table(self, name: str) -> TableTally:
        tally = self.tables.get(name)
        if tally is None:
            tally = self.tables[name] = TableTally()
        return tally

    def receiving(self) -> None:
        """A batch with changes arrived: the engine is behind until it is loaded."""
        with self.lock:
            self.caught_up_at = None

    def loaded(self, report: LoadReport, changes: Iterable[Change]) -> None:
        """Count what MERGE reported of a loaded batch, by source table. A table whose changes
        in the batch are all snapshot reads counts them as its snapshot's rows."""
        now = utcnow()
        by_target: dict[str, str] = {}
        reads_only: dict[str, bool] = {}
        last_ms = 0
        for change in changes:
            table = _qualified(change)
            by_target[target_table_name(change.table)] = table
            reads_only[table] = reads_only.get(table, True) and change.op == "r"
            last_ms = max(last_ms, change.committed_ms)
        with self.lock:
            for target, counts in report.tables.items():
                name = by_target.get(target)
                if name is None:
                    continue
                tally = self._table(name)
                tally.last_change_at = now
                if reads_only[name]:
                    tally.snapshot_added += counts.inserted + counts.updated
                    if tally.snapshot is None:
                        tally.snapshot = "copying"
                    continue
                figures = (counts.inserted, counts.updated, counts.deleted)
                tally.inserted += figures[0]
                tally.updated += figures[1]
                tally.deleted += figures[2]
                bucket = self.minutes.setdefault((minute_of(now), name), [0, 0, 0])
                for i, figure in enumerate(figures):
                    bucket[i] += figure
            if last_ms:
                self.source_ms = last_ms

    def passed(self, lsn: int | None, committed_ms: int | None, caught_up: bool) -> None:
        """A batch is committed: its offset reaches `lsn`, committed at the source at
        `committed_ms`; `caught_up` when it ended on a heartbeat with no change after it."""
        with self.lock:
            if lsn:
                self.last_lsn = lsn
            if committed_ms:
                self.source_ms = max(self.source_ms or 0, committed_ms)
            self.caught_up_at = time.monotonic() if caught_up else None

    def copied_at(self, lsn: int) -> None:
        """The first copy stands at `lsn`."""
        with self.lock:
            self.last_lsn = lsn

    def snapshot(self, table: str, state: str, rows: int | None = None) -> None:
        """Say where a table's copy stands (and its rows so far, when known)."""
        with self.lock:
            tally = self._table(table)
            tally.snapshot = state
            if rows is not None:
                tally.snapshot_rows = rows
                tally.snapshot_added = 0
            if state == "done":
                tally.last_change_at = utcnow()

    def snapshot_done(self) -> None:
        """Debezium's snapshot is complete: every table it was copying is done."""
        with self.lock:
            for tally in self.tables.values():
                if tally.snapshot == "copying":
                    tally.snapshot = "done"

    def lag_seconds(self, now: datetime) -> float | None:
        """Say how far behind the engine is in time: 0 when it caught up (a heartbeat ended
        its last batch) within CAUGHT_UP_FOR_S, else now minus the source commit time of the
        last change it loaded (or heartbeat it passed); None before it knows."""
        with self.lock:
            if self.caught_up_at is not None:
                if time.monotonic() - self.caught_up_at <= CAUGHT_UP_FOR_S:
                    return 0.0
            if self.source_ms is None:
                return None
            # Two clocks: the source's commit time and this host's. Skew is not lag.
            return max(0.0, now.timestamp() - self.source_ms / 1000)

    def take(self) -> Taken:
        """Take what was gathered since the last write (the tally starts again)."""
        lag = self.lag_seconds(utcnow())
        with self.lock:
            taken = Taken(self.tables, self.minutes, self.last_lsn, lag)
            self.tables, self.minutes = {}, {}
            return taken

    def put_back(self, taken: Taken) -> None:
        """Add back what a failed write took, for the next write."""
        with self.lock:
            for name, old in taken.tables.items():
                new = self.tables.get(name)
                if new is None:
                    self.tables[name] = old
                    continue
                new.inserted += old.inserted
                new.updated += old.updated
                new.deleted += old.deleted
                new.snapshot = new.snapshot or old.snapshot
                if new.snapshot_rows is None:
                    new.snapshot_rows = old.snapshot_rows
                    new.snapshot_added += old.snapshot_added
                new.last_change_at = new.last_change_at or old.last_change_at
            for key, counts in taken.minutes.items():
                bucket = self.minutes.setdefault(key, [0, 0, 0])
                for i, figure in enumerate(counts):
                    bucket[i] += figure


def _insert(model: Any) -> Any:
    """INSERT … ON CONFLICT for the metadata database's dialect (both spell it the same)."""
    if db.session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def write(tally: Tally, taken: Taken, lag_bytes: int | None) -> None:
    """Write what was taken in one transaction: totals and minutes added, the run's lag."""
    pipeline_id = tally.pipeline_id
    run = db.session.get(PipelineRun, pipeline_id)
    if run is None:
        return  # the pipeline was deleted, or its engine has written nothing yet
    if tally.created_at is not None and as_utc(run.pipeline.created_at) != as_utc(tally.created_at):
        return  # the pipeline was deleted, and its id is a new pipeline's now
    now = utcnow()
    run.updated_at = now
    if taken.last_lsn is not None:
        run.last_lsn = taken.last_lsn
    run.lag_bytes = lag_bytes
    run.lag_seconds = taken.lag_seconds
    for name, t in taken.tables.items():
        values: dict[str, Any] = {
            "pipeline_id": pipeline_id,
            "table_name": name,
            "snapshot": t.snapshot,
            "snapshot_rows": (t.snapshot_rows or 0) + t.snapshot_added,
            "inserted": t.inserted,
            "updated": t.updated,
            "deleted": t.deleted,
            "last_change_at": t.last_change_at,
        }
        stmt = _insert(PipelineTable).values(values)
        c, new = PipelineTable, stmt.excluded
        changes: dict[str, Any] = {op: getattr(c, op) + getattr(new, op) for op in OPS}
        if t.snapshot is not None:
            changes["snapshot"] = new.snapshot
        if t.snapshot_rows is not None:
            changes["snapshot_rows"] = new.snapshot_rows
        elif t.snapshot_added:
            changes["snapshot_rows"] = c.snapshot_rows + new.snapshot_rows
        if t.last_change_at is not None:
            changes["last_change_at"] = new.last_change_at
        db.session.execute(
            stmt.on_conflict_do_update(index_elements=["pipeline_id", "table_name"], set_=changes)
        )
    for (minute, name), counts in taken.minutes.items():
        figures = dict(zip(OPS, counts, strict=True))
        stmt = _insert(PipelineMinute).values(
            pipeline_id=pipeline_id, minute=minute, table_name=name, **figures
        )
        m, new = PipelineMinute, stmt.excluded
        db.session.execute(
            stmt.on_conflict_do_update(
                index_elements=["pipeline_id", "minute", "table_name"],
                set_={op: getattr(m, op) + getattr(new, op) for op in OPS},
            )
        )
    if taken.lag_seconds is not None or lag_bytes is not None:
        stmt = _insert(PipelineLag).values(
            pipeline_id=pipeline_id,
            minute=minute_of(now),
            lag_seconds=taken.lag_seconds,
            lag_bytes=lag_bytes,
        )
        lag, new = PipelineLag, stmt.excluded
        db.session.execute(
            stmt.on_conflict_do_update(
                index_elements=["pipeline_id", "minute"],
                set_={
                    # The minute's highest: a chart of a minute shows its worst moment.
                    "lag_seconds": _greatest(lag.lag_seconds, new.lag_seconds),
                    "lag_bytes": _greatest(lag.lag_bytes, new.lag_bytes),
                },
            )
        )
    db.session.commit()


def _greatest(old: Any, new: Any) -> Any:
    """The larger of two nullable figures, on PostgreSQL and on SQLite."""
    if db.session.get_bind().dialect.name == "postgresql":
        return func.greatest(old, new)  # ignores NULLs
    return func.max(func.coalesce(old, new), func.coalesce(new, old))


class SourcePosition:
    """One kept connection to a pipeline's source for its current WAL position."""

    def __init__(self, source: Target, timeout_s: float) -> None:
        self.source = source
        self.timeout_s = timeout_s
        self.conn: Any = None

    def bytes(self) -> int | None:
        """Return the source's current WAL position in bytes since 0/0; None when it cannot
        be read now (the connection is opened again at the next write)."""
        deadline = time.monotonic() + self.timeout_s
        try:
            if self.conn is None:
                self.conn = connect(self.source, deadline, self.timeout_s)
            # An asynchronous connection commits each statement: no transaction stays open.
            row = run(self.conn, POSITION, deadline, self.timeout_s).fetchone()
            return int(row[0])
        except Exception as exc:  # a source down: the lag is unknown until it answers
            log.info("progress: the source's WAL position is unreadable: %s", exc)
            self.close()
            return None

    def close(self) -> None:
        """Close the connection; never raise."""
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # already broken
                pass
            self.conn = None


class ProgressWriter:
    """Write the progress of every pipeline this process runs, every FLUSH_SECONDS."""

    def __init__(self, app: Flask, tallies: Callable[[], list[Tally]], timeout_s: float) -> None:
        self.app = app
        self.tallies = tallies
        self.timeout_s = timeout_s
        self.positions: dict[int, SourcePosition] = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def start(self) -> None:
        """Write in a thread of its own."""
        self.thread.start()

    def stop(self) -> None:
        """Write once more and stop."""
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(self.timeout_s + FLUSH_SECONDS)
        self.flush()
        for position in self.positions.values():
            position.close()

    def _loop(self) -> None:
        while not self.stop_event.wait(FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        """Write what each pipeline's tally gathered; never raise."""
        tallies = self.tallies()
        running = {tally.pipeline_id for tally in tallies}
        for pipeline_id in set(self.positions) - running:
            self.positions.pop(pipeline_id).close()
        for tally in tallies:
            taken = tally.take()
            lag_bytes = None
            if taken.last_lsn is not None:
                position = self.positions.get(tally.pipeline_id)
                if position is None or position.source != tally.source:
                    position = self.positions[tally.pipeline_id] = SourcePosition(
                        tally.source, self.timeout_s
                    )
                current = position.bytes()
                # Read now, as the lag is written: the WAL monitor's last sample may be
                # minutes old, and an old position against a fresh last LSN would understate
                # the lag (even below zero). pg_wal_lsn_diff(current, last) is this difference.
                lag_bytes = current - taken.last_lsn if current is not None else None
            with self.app.app_context():
                try:
                    write(tally, taken, lag_bytes)
                except DATABASE_UNAVAILABLE as exc:
                    db.session.rollback()
                    tally.put_back(taken)
                    log.warning("pipeline %d: progress not written: %s", tally.pipeline_id, exc)
                except Exception:
                    db.session.rollback()
                    tally.put_back(taken)
                    log.exception("pipeline %d: progress not written", tally.pipeline_id)
                finally:
                    db.session.remove()
