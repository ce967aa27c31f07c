"""The engine process: which pipelines it owns, starting and stopping their engines.

Any number of engine processes share the pipelines. Each running pipeline is owned by one
process at a time: on PostgreSQL, the holder of an advisory lock keyed by the pipeline on
the metadata database; on SQLite, the one process holding a file lock beside the database.
A lock lives as long as its connection, so an owner that dies (kill -9) frees its pipelines
and another process takes them at its next look. An owner whose lock connection fails stops
its engines at once, before another process can take them (fencing).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from select import select as select_fds
from typing import IO, Any

import psycopg2
from flask import Flask
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import joinedload
from sqlalchemy.pool import NullPool

from ..destinations import services as destinations
from ..errors import DATABASE_UNAVAILABLE, Outage
from ..extensions import db
from ..models import ENGINE_CHANNEL, Pipeline
from ..monitor.rounds import target_of as source_target
from ..postgres.replication_objects import (
    HEARTBEAT_SCHEMA,
    HEARTBEAT_TABLE,
    SourceRefused,
    add_heartbeat_table,
    published_tables,
    qualified,
    session,
)
from ..readiness import NotReady
from ..sources import services as sources
from ..timeutil import as_utc, utcnow
from . import jvm
from .progress import ProgressWriter, Tally
from .properties import (
    UNUSED_PASSWORD,
    Batching,
    PipelineSpec,
    debezium_properties,
    offset_storage,
    pipeline_spec,
)
from .runner import Backoff, Refresh, Run
from .state import (
    Recorder,
    forget_offsets,
    offsets_exist,
    offsets_folder,
    process_identity,
)
from .verifying import Verifications

log = logging.getLogger(__name__)

# pg_try_advisory_lock(key1, key2) namespace for pipelines: "ROSE"; key2 is the pipeline's id.
PIPELINE_LOCK_SPACE = 0x524F5345
# How often a wait for a change looks whether the process is asked to stop.
STOP_CHECK_S = 0.25
RUNNING = ("START", "REFRESH")


@dataclass(frozen=True)
class Settings:
    """The engine's settings, read from the app's configuration."""

    poll_s: float
    batching: Batching
    backoff: Backoff
    heap_mb: int
    timeout_s: float
    query_timeout_s: float

    @classmethod
    def of(cls, config: dict[str, Any]) -> Settings:
        """Read the settings from the app's configuration."""
        return cls(
            poll_s=float(config["ENGINE_POLL_SECONDS"]),
            batching=Batching(
                seconds=float(config["ENGINE_BATCH_SECONDS"]),
                rows=int(config["ENGINE_BATCH_ROWS"]),
                queue_bytes=int(config["ENGINE_QUEUE_MB"]) * 1024 * 1024,
            ),
            backoff=Backoff(
                float(config["ENGINE_RETRY_MIN_SECONDS"]), float(config["ENGINE_RETRY_MAX_SECONDS"])
            ),
            heap_mb=int(config["ENGINE_HEAP_MB"]),
            timeout_s=float(config["WAL_MONITOR_TIMEOUT_SECONDS"]),
            query_timeout_s=float(config["ENGINE_QUERY_TIMEOUT_SECONDS"]),
        )


class Ownership:
    """Which pipelines this process owns."""

    def __init__(self, app: Flask) -> None:
        url = app.config["SQLALCHEMY_DATABASE_URI"]
        self.engine: Engine | None = None
        self.connection: Connection | None = None
        self.lock_file: IO[str] | None = None
        with app.app_context():
            folder = offsets_folder()  # beside the SQLite database, where its offsets are
        self.lock_path = os.path.join(str(folder or app.instance_path), "engine.lock")
        self.owned: set[int] = set()
        if url.startswith("postgresql"):
            self.engine = create_engine(
                url,
                poolclass=NullPool,
                connect_args={
                    "connect_timeout": 10,
                    "application_name": "rosetta-engine",
                    # The owner notices a dead lock connection within ~25 s, the server a
                    # dead owner within ~60 s (then another process may take over).
                    "keepalives": 1,
                    "keepalives_idle": 10,
                    "keepalives_interval": 5,
                    "keepalives_count": 3,
                    "tcp_user_timeout": 25_000,  # unacknowledged data, too, fails in 25 s
                    "options": (
                        "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 "
                        "-c tcp_keepalives_count=3 -c tcp_user_timeout=60000"
                    ),
                },
            )

    def held(self) -> bool:
        """Confirm the lock connection (or file lock) still holds; False: every pipeline owned
        is lost and its engine must stop now."""
        if self.engine is None:
            return self.lock_file is not None or self._take_file()
        if self.connection is None:
            try:
                self.connection = self.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT"
                )
                self.connection.exec_driver_sql(f"LISTEN {ENGINE_CHANNEL}")
            except DATABASE_UNAVAILABLE:
                self._drop_connection()
                return False
            self.owned.clear()
            return True
        try:
            self.connection.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            self._drop_connection()
            return False

    def wait(self, seconds: float, stop: threading.Event) -> None:
        """Wait up to `seconds` for a pipeline to change (a NOTIFY on the lock connection;
        on SQLite, only the time), or for `stop`."""
        deadline = time.monotonic() + seconds
        raw: Any = None  # psycopg2's connection: its socket, its notifies
        if self.connection is not None:
            raw = self.connection.connection.dbapi_connection
            if raw is not None and raw.notifies:  # heard during the last look
                raw.notifies.clear()
                return
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if raw is None:
                stop.wait(min(left, STOP_CHECK_S))
                continue
            try:
                ready, _, _ = select_fds([raw], [], [], min(left, STOP_CHECK_S))
                if ready:
                    raw.poll()
                    if raw.notifies:
                        raw.notifies.clear()
                        return
            except (OSError, ValueError, psycopg2.Error):
                return  # the next look finds the connection dead

    def _drop_connection(self) -> None:
        if self.connection is not None:
            try:
                self.connection.invalidate()
                self.connection.close()
            except Exception:  # a dead connection; its locks are gone with it
                pass
        self.connection = None
        self.owned.clear()

    def _take_file(self) -> bool:
        os.makedirs(os.path.dirname(self.lock_path), exist_ok=True)
        lock_file = open(self.lock_path, "a")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            return False
        self.lock_file = lock_file
        return True

    def take(self, pipeline_id: int) -> bool:
        """Take the pipeline if no other process owns it."""
        if pipeline_id in self.owned:
            return True
        if self.engine is None:
            taken = self.lock_file is not None
        else:
            if self.connection is None:
                return False
            taken = bool(
                self.connection.execute(
                    text("SELECT pg_try_advisory_lock(:space, :id)"),
                    {"space": PIPELINE_LOCK_SPACE, "id": pipeline_id},
                ).scalar()
            )
        if taken:
            self.owned.add(pipeline_id)
        return taken

    def release(self, pipeline_id: int) -> None:
        """Let another process take the pipeline."""
        if pipeline_id not in self.owned:
            return
        self.owned.discard(pipeline_id)
        if self.connection is not None:
            try:
                self.connection.execute(
                    text("SELECT pg_advisory_unlock(:space, :id)"),
                    {"space": PIPELINE_LOCK_SPACE, "id": pipeline_id},
                )
            except Exception as exc:  # the next look finds the connection dead and fences
                log.warning("Engine: could not release pipeline %d: %s", pipeline_id, exc)

    def close(self) -> None:
        """Release everything."""
        self._drop_connection()
        if self.engine is not None:
            self.engine.dispose()
        if self.lock_file is not None:
            self.lock_file.close()
            self.lock_file = None


@dataclass
class Waiting:
    """A pipeline this process owns whose engine is not running: until when, and why."""

    until: datetime | None  # None: failed for good, until its status is set again
    attempts: int
    failed_at: datetime


class Supervisor:
    """Run the engines of the pipelines this process owns."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.settings = Settings.of(app.config)
        self.owner = process_identity()
        self.recorder = Recorder(app, self.owner)
        self.ownership = Ownership(app)
        self.runs: dict[int, Run] = {}
        self.waiting: dict[int, Waiting] = {}
        self.started_at = utcnow()
        self.problem = jvm.java_problem()
        self.stop_event = threading.Event()
        self.outage = Outage("not running pipelines", "Engine: ", log)
        self.ended: list[Tally] = []  # tallies of engines stopped since the last write
        self.ending = threading.Lock()
        self.progress = ProgressWriter(app, self._tallies, self.settings.timeout_s)
        self.verifications = Verifications(
            app, self.owner, self.settings.timeout_s, self.settings.query_timeout_s
        )

    def _stopped(self, run: Run) -> None:
        with self.ending:
            self.ended.append(run.progress)

    def _tallies(self) -> list[Tally]:
        """Return the progress to write: each running engine's, and once more the stopped
        ones' (what they loaded since the last write)."""
        with self.ending:
            ended, self.ended = self.ended, []
        return ended + [run.progress for run in list(self.runs.values())]

    # ---- The loop ----------------------------------------------------------------------

    def run_forever(self) -> None:
        """Look at the pipelines every poll interval until stopped."""
        if self.problem is None:
            try:
                jvm.start(self.settings.heap_mb, self.recorder.secrets)
            except Exception as exc:
                self.problem = f"The Java runtime cannot start: {exc}"
        if self.problem is not None:
            log.error("Engine: %s", self.problem)
        self.progress.start()
        self.tick()
        log.info(
            "Engine: took the pipelines it may run; it looks again every %g s%s",
            self.settings.poll_s,
            ", and at once when a pipeline changes" if self.ownership.engine else "",
        )
        while not self.stop_event.is_set():
            self.ownership.wait(self.settings.poll_s, self.stop_event)
            if not self.stop_event.is_set():
                self.tick()
        self.shutdown()

    def tick(self) -> None:
        """Take, start, retry and stop pipelines as their wanted statuses say."""
        with self.app.app_context():
            try:
                self._tick()
                self.outage.answered()
            except DATABASE_UNAVAILABLE as exc:
                db.session.rollback()
                self.outage.failed(exc)
            except Exception:  # a fault of one look must not end the process and its engines
                db.session.rollback()
                log.exception("Engine: looking at the pipelines failed; looking again")
            finally:
                db.session.remove()

    def _tick(self) -> None:
        if not self.ownership.held():
            if self.runs or self.waiting:
                log.warning("Engine: lost the metadata database; stopping every engine now")
            self._fence()
            self.recorder.alive(self.problem, self.started_at)  # raises in an outage
            return
        self.recorder.alive(self.problem, self.started_at)
        wanted = {
            pipeline.id: pipeline
            for pipeline in db.session.scalars(
                select(Pipeline)
                .where(Pipeline.status.in_(RUNNING))
                .options(joinedload(Pipeline.source), joinedload(Pipeline.destination))
            )
        }
        for pipeline_id in list(self.runs) + list(self.waiting):
            if pipeline_id not in wanted:
                self._let_go(pipeline_id)
        for run in list(self.runs.values()):
            if run.finished.is_set():
                self._ended(run)
            else:
                run.watch_source()
        for pipeline_id, pipeline in wanted.items():
            running = self.runs.get(pipeline_id)
            if running is not None:
                self._follow_refresh(running, pipeline)
                continue
            waiting = self.waiting.get(pipeline_id)
            if waiting is not None:
                changed = as_utc(pipeline.updated_at) > waiting.failed_at
                if waiting.until is None and not changed:
                    continue
                if waiting.until is not None and utcnow() < waiting.until and not changed:
                    continue
            elif self.problem is not None:
                continue  # an engine process that can run engines takes it
            if self.problem is not None or not self.ownership.take(pipeline_id):
                continue
            self._start(pipeline, waiting)
        self.verifications.poll()

    def _follow_refresh(self, run: Run, pipeline: Pipeline) -> None:
        """Ask a running engine for the REFRESH its pipeline wants, once per request."""
        if pipeline.status != "REFRESH":
            if run.refresh is not None and run.refresh.done:
                run.refresh = None  # a later REFRESH is a new one
            return
        if run.refresh is not None and run.refresh.done:
            if as_utc(pipeline.updated_at) <= run.refresh.signalled_at:
                self.recorder.refreshed(pipeline.id)  # its first word was lost in an outage
                return
            run.refresh = None  # REFRESH asked again since that one
        if run.refresh is None:
            self._refresh(run, pipeline)

    def _refresh(self, run: Run, pipeline: Pipeline) -> None:
        """Ask the engine for an incremental snapshot of the tables the REFRESH re-reads; with
        none (each one named or published lacks a primary key) it is done at once."""
        tables = refresh_tables(pipeline, run.spec)
        if tables:
            run.refresh_now(tables)
            return
        log.info("Engine: pipeline %s: no table with a primary key to refresh", pipeline.name)
        run.refresh = Refresh([], signalled_at=utcnow(), done=True)
        self.recorder.refreshed(pipeline.id)

    def _start(self, pipeline: Pipeline, waiting: Waiting | None) -> None:
        try:
            why = cannot_run(pipeline)
        except Exception as exc:  # the checks themselves could not run
            why = f"Cannot check the source: {exc}"
        if why is not None:
            self._retry_later(pipeline.id, why, waiting)
            return
        try:
            spec = self._spec(pipeline)
            destination = destinations.target_of(pipeline.destination)
        except Exception as exc:  # the source unreachable, a secret unreadable
            self._retry_later(pipeline.id, f"Cannot start: {exc}", waiting)
            return
        offsets = offset_storage(
            self.app.config["SQLALCHEMY_DATABASE_URI"], offsets_folder(), pipeline.id
        )
        properties = debezium_properties(spec, offsets, self.settings.batching)
        self.recorder.secrets.update(
            value
            for key, value in properties.items()
            if key.endswith("password") and value != UNUSED_PASSWORD
        )
        if destination.passphrase:
            self.recorder.secrets.add(destination.passphrase)
        run = Run(
            spec,
            properties,
            destination,
            self.recorder,
            self.settings.backoff,
            self.settings.timeout_s,
            self.settings.query_timeout_s,
        )
        run.on_refreshed = lambda done: self.recorder.refreshed(done.pipeline_id)
        run.attempts = waiting.attempts if waiting is not None else 0
        run.first_copy = not offsets_exist(pipeline.id)
        if pipeline.status == "REFRESH" and run.first_copy:
            run.copy_again(list(spec.tables))  # no offsets: copy everything again
        elif pipeline.status == "REFRESH":
            self._refresh(run, pipeline)
        try:
            run.start()
        except Exception as exc:
            self._retry_later(pipeline.id, f"The engine did not start: {exc}", waiting)
            return
        self.runs[pipeline.id] = run
        self.waiting.pop(pipeline.id, None)
        log.info("Engine: pipeline %s (%d) started", pipeline.name, pipeline.id)

    def _spec(self, pipeline: Pipeline) -> PipelineSpec:
        source = pipeline.source
        if not source.slot_name:
            raise ValueError(f"source {source.name} names no replication slot")
        target = source_target(source)
        heartbeat = (HEARTBEAT_SCHEMA, HEARTBEAT_TABLE)
        with session(target, self.settings.timeout_s) as s:
            published = published_tables(s, source.publication_name)
            spec = pipeline_spec(
                pipeline.id,
                pipeline.name,
                target,
                source.publication_name,
                source.slot_name,
                published,
                heartbeat=True,
                created_at=pipeline.created_at,
            )
            if spec.tables:
                # The source's `heartbeat` check passed (START waits for it): the role may
                # create and publish the table, unless that changed since.
                try:
                    add_heartbeat_table(s, source.publication_name)
                except SourceRefused as exc:
                    raise SourceRefused(
                        f"the heartbeat table {qualified(*heartbeat)} cannot be created or "
                        f"published: {exc}. The source's heartbeat check gives the SQL to run.",
                        exc.details["sqlstate"],
                    ) from None
        if not spec.tables:
            raise ValueError(f"publication {source.publication_name} publishes no table")
        return spec

    def _retry_later(self, pipeline_id: int, reason: str, waiting: Waiting | None) -> None:
        attempts = (waiting.attempts if waiting else 0) + 1
        wait_s = self.settings.backoff.delay(attempts)
        until = utcnow() + timedelta(seconds=wait_s)
        self.waiting[pipeline_id] = Waiting(until, attempts, utcnow())
        self.recorder.state(
            pipeline_id,
            "retrying",
            reason=reason,
            next_try_at=until,
            error=f"{reason} (try {attempts}; next in {wait_s:.0f} s)",
        )

    def _ended(self, run: Run) -> None:
        """Record why an engine ended on its own, and when it is tried again."""
        del self.runs[run.pipeline_id]
        self._stopped(run)
        if run.refused is not None:
            self.waiting[run.pipeline_id] = Waiting(None, 0, utcnow())
            return  # recorded as failed by the run
        reason = run.outcome or "the engine stopped"
        if SLOT_BEHIND in reason:
            # Retrying cannot help: the changes after the last loaded position are gone, and
            # so is the use of those offsets: the next start copies every table.
            self.waiting[run.pipeline_id] = Waiting(None, 0, utcnow())
            forget_offsets(run.pipeline_id)
            db.session.commit()
            lost = SLOT_LOST.format(slot=run.spec.slot)
            self.recorder.state(run.pipeline_id, "failed", reason=lost, error=lost)
            return
        # An engine that never got to load is retried with a longer wait each time.
        before = None if run.polling.is_set() else Waiting(None, run.attempts, utcnow())
        self._retry_later(run.pipeline_id, f"The engine stopped: {reason}", before)

    def _let_go(self, pipeline_id: int) -> None:
        """Drain and stop a pipeline that is paused or deleted, and release it."""
        run = self.runs.pop(pipeline_id, None)
        self.waiting.pop(pipeline_id, None)
        if run is not None:
            run.stop(drain=True)
            self._stopped(run)
        self.ownership.release(pipeline_id)
        pipeline = db.session.get(Pipeline, pipeline_id)
        if pipeline is not None:
            self.recorder.state(pipeline_id, "paused", last_lsn=run.last_lsn if run else None)
            log.info("Engine: pipeline %s (%d) paused", pipeline.name, pipeline_id)
        else:
            forget_offsets(pipeline_id)
            db.session.commit()

    def _fence(self) -> None:
        """Stop every engine at once: another process may own their pipelines now."""
        for run in self.runs.values():
            run.stop(drain=False, timeout_s=10)  # its tally is not written: not ours now
        self.runs.clear()
        self.waiting.clear()

    def shutdown(self) -> None:
        """Drain and stop every engine, release every pipeline, say this process is gone."""
        runs = list(self.runs.values())
        log.info("Engine: stopping; draining %d pipeline(s)", len(runs))
        self.verifications.stop()
        stoppers = [
            threading.Thread(target=run.stop, kwargs={"drain": True, "timeout_s": 15})
            for run in runs
        ]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(20)
        for run in runs:
            self._stopped(run)
        self.runs.clear()
        self.progress.stop()  # writes what they loaded last
        with self.app.app_context():
            for run in runs:
                self.recorder.state(run.pipeline_id, "stopped", reason="its engine process stopped")
            self.recorder.gone()
            db.session.remove()
        self.runs.clear()
        self.ownership.close()
        log.info("Engine: stopped")


# What Debezium says when the slot no longer holds the changes after the stored offset.
SLOT_BEHIND = "is no longer available on the server"
SLOT_LOST = (
    "The slot {slot} no longer holds the changes after the last position loaded (it was "
    "dropped and created again, or lost its WAL): what changed in between cannot be streamed. "
    "REFRESH copies every table again."
)


def refresh_tables(pipeline: Pipeline, spec: PipelineSpec) -> list[tuple[str, str]]:
    """Return the tables a REFRESH re-reads: the ones named, or all the publication's; never
    one without a primary key (its destination is an append-only history that a REFRESH
    cannot repair, and Debezium's incremental snapshot would only skip it with a warning)."""
    keyed = [table for table in spec.tables if table not in spec.keyless]
    if not pipeline.refresh_tables:
        return keyed
    named = set(pipeline.refresh_tables)
    return [table for table in keyed if qualified(*table) in named]


def cannot_run(pipeline: Pipeline) -> str | None:
    """Say why a pipeline must not start: its source or its destination fails a readiness
    check (checked again when stale), as START itself is refused; None when it may."""
    try:
        sources.require_ready(pipeline.source)
        destinations.require_ready(pipeline.destination)
    except NotReady as exc:
        return str(exc)
    return None
