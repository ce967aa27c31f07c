"""What the engine writes of each pipeline it owns: its state, its errors, its own heartbeat."""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Collection
from datetime import datetime
from pathlib import Path

from flask import Flask
from sqlalchemy import delete, select, text, update

from ..errors import DATABASE_UNAVAILABLE
from ..extensions import db
from ..models import EngineProcess, Pipeline, PipelineError, PipelineRun
from ..timeutil import utcnow
from .properties import OFFSETS_TABLE

log = logging.getLogger(__name__)

# How many errors and retries are kept per pipeline.
ERRORS_KEPT = 50
# Debezium puts its whole configuration, passwords included, in some of its errors.
CONFIGURATION = re.compile(r"\{[^{}]*connector\.class=[^{}]*\}")
# ... and its task lists it, one property a line, in its log when it starts.
CONFIGURATION_LINES = re.compile(r"configuration:(?:\n {3}[^\n]*)+")
PASSWORD = re.compile(r"(password\s*=\s*)[^,}\s]*", re.IGNORECASE)
MESSAGE_CHARS = 2000
SECRET_MIN_CHARS = 4


def scrub(message: str, secrets: Collection[str]) -> str:
    """Cut Debezium's configuration out of a message, and every secret in it; keep it short."""
    return mask(message, secrets)[:MESSAGE_CHARS]


def mask(text: str, secrets: Collection[str]) -> str:
    """Cut Debezium's configuration out of a text, and every secret in it."""
    text = CONFIGURATION_LINES.sub("(configuration)", CONFIGURATION.sub("(configuration)", text))
    text = PASSWORD.sub(r"\1********", text)
    # A copy: the supervisor adds secrets while Debezium's threads log.
    for secret in tuple(secrets):
        if len(secret) >= SECRET_MIN_CHARS:  # a shorter one would mask parts of figures
            text = text.replace(secret, "********")
    return text


def offsets_folder() -> Path | None:
    """Return where offsets are files: `offsets/` beside the SQLite database file; None when
    they are tables of the metadata PostgreSQL."""
    if db.engine.dialect.name == "postgresql":
        return None
    database = db.engine.url.database
    return Path(database).resolve().parent / "offsets" if database else None


def offsets_exist(pipeline_id: int) -> bool:
    """Tell whether the pipeline has stored offsets (a position to resume from)."""
    folder = offsets_folder()
    if folder is None:
        table = OFFSETS_TABLE.format(int(pipeline_id))
        if not db.session.execute(
            text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}
        ).scalar():
            return False
        return bool(db.session.execute(text(f"SELECT EXISTS (SELECT 1 FROM {table})")).scalar())
    path = folder / f"pipeline-{int(pipeline_id)}.dat"
    return path.exists() and path.stat().st_size > 0


def stored_offsets(pipeline_id: int) -> list[tuple[str | None, str | None]] | None:
    """Return the pipeline's committed offsets as Debezium's JdbcOffsetBackingStore wrote
    them, `(offset_key, offset_val)` in the order written (none: never committed); None when
    they are a file of Java-serialized bytes (SQLite), which is not read here."""
    if offsets_folder() is not None:
        return None
    table = OFFSETS_TABLE.format(int(pipeline_id))
    if not db.session.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table}).scalar():
        return []
    # Each save deletes the table and inserts every partition's offset: what is there is one
    # save's, in the order of record_insert_seq.
    rows = db.session.execute(
        text(
            f"SELECT offset_key, offset_val FROM {table} "
            "ORDER BY record_insert_ts, record_insert_seq"
        )
    )
    return [(row.offset_key, row.offset_val) for row in rows]


def forget_offsets(pipeline_id: int) -> None:
    """Forget a deleted pipeline's offsets in the session's transaction: its table on
    PostgreSQL, its file on SQLite."""
    folder = offsets_folder()
    if folder is None:
        table = OFFSETS_TABLE.format(int(pipeline_id))
        db.session.execute(text(f"DROP TABLE IF EXISTS {table}"))
    else:
        (folder / f"pipeline-{int(pipeline_id)}.dat").unlink(missing_ok=True)


def process_identity() -> str:
    """Name this engine process: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Recorder:
    """Write pipeline states from any thread of the engine process, each in its own session."""

    def __init__(self, app: Flask, owner: str) -> None:
        self.app = app
        self.owner = owner
        self.secrets: set[str] = set()  # passwords the engines were given, never written

    def state(
        self,
        pipeline_id: int,
        state: str,
        reason: str | None = None,
        next_try_at: datetime | None = None,
        last_lsn: int | None = None,
        error: str | None = None,
    ) -> None:
        """Record the pipeline's state (and an error or retry to keep); never raise."""
        reason = scrub(reason, self.secrets) if reason is not None else None
        error = scrub(error, self.secrets) if error is not None else None
        with self.app.app_context():
            try:
                self._write(pipeline_id, state, reason, next_try_at, last_lsn, error)
            except DATABASE_UNAVAILABLE as exc:
                db.session.rollback()
                log.warning("pipeline %d: state %s not recorded: %s", pipeline_id, state, exc)
            finally:
                db.session.remove()

    def _write(
        self,
        pipeline_id: int,
        state: str,
        reason: str | None,
        next_try_at: datetime | None,
        last_lsn: int | None,
        error: str | None,
    ) -> None:
        if db.session.get(Pipeline, pipeline_id) is None:
            return  # deleted meanwhile
        now = utcnow()
        run = db.session.get(PipelineRun, pipeline_id)
        if run is None:
            run = PipelineRun(pipeline_id=pipeline_id, state=state, since=now)
            db.session.add(run)
        elif run.state != state or run.owner != self.owner:
            run.since = now
        run.state = state
        run.reason = reason
        run.owner = self.owner if state not in ("stopped", "paused") else None
        run.next_try_at = next_try_at
        run.updated_at = now
        if last_lsn is not None:
            run.last_lsn = last_lsn
        if error is not None:
            log.warning("pipeline %d: %s", pipeline_id, error)
            db.session.add(PipelineError(pipeline_id=pipeline_id, at=now, message=error))
            db.session.flush()
            kept = (
                select(PipelineError.id)
                .where(PipelineError.pipeline_id == pipeline_id)
                .order_by(PipelineError.at.desc(), PipelineError.id.desc())
                .limit(ERRORS_KEPT)
            )
            db.session.execute(
                delete(PipelineError).where(
                    PipelineError.pipeline_id == pipeline_id, PipelineError.id.not_in(kept)
                )
            )
        db.session.commit()

    def refreshed(self, pipeline_id: int) -> None:
        """A REFRESH is done: the pipeline goes back to START; never raise."""
        with self.app.app_context():
            try:
                db.session.execute(
                    update(Pipeline)
                    .where(Pipeline.id == pipeline_id, Pipeline.status == "REFRESH")
                    .values(status="START", refresh_tables=None, refresh_skipped=None)
                )
                db.session.commit()
            except DATABASE_UNAVAILABLE as exc:
                db.session.rollback()
                log.warning("pipeline %d: refresh done, START not recorded: %s", pipeline_id, exc)
            finally:
                db.session.remove()

    def alive(self, problem: str | None, started_at: datetime) -> None:
        """Say that this process runs (and what keeps it from running engines); may raise
        DATABASE_UNAVAILABLE."""
        row = db.session.get(EngineProcess, self.owner)
        now = utcnow()
        if row is None:
            row = EngineProcess(id=self.owner, started_at=started_at)
            db.session.add(row)
        row.seen_at = now
        row.problem = problem
        db.session.commit()

    def gone(self) -> None:
        """Say that this process stops; never raise."""
        try:
            db.session.execute(delete(EngineProcess).where(EngineProcess.id == self.owner))
            db.session.commit()
        except DATABASE_UNAVAILABLE:
            db.session.rollback()
