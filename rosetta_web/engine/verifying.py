"""The Verify runs an engine process takes: one at a time, each in a thread of its own, what
each table showed stored as soon as it is known.

A Verify asked for waits, state running and no owner, until an engine process takes it; one
whose engine process stopped is taken again by another. Waiting for the pipeline to pass a
source position reads the position its own engine wrote, wherever that engine runs.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from typing import Any

from flask import Flask
from sqlalchemy import or_, select, update

from ..destinations import services as destinations
from ..engines import live_engines
from ..extensions import db
from ..models import Pipeline, PipelineRun, PipelineVerification
from ..monitor.rounds import target_of as source_target
from ..postgres.replication_objects import (
    HEARTBEAT_SCHEMA,
    HEARTBEAT_TABLE,
    published_tables,
    session,
)
from ..timeutil import utcnow
from .loader import DestinationUnavailable, Loader, open_destination
from .verify import TableVerdict, Verifier, VerifyFailed

log = logging.getLogger(__name__)

# How long Verify waits for the pipeline to load past a source position before it compares
# anyway (and says so): the engine's heartbeat moves an idle pipeline on every 10 s.
PASS_WAIT_S = 120.0
PASS_POLL_S = 1.0
RUNNING = ("START", "REFRESH")


class Verifications:
    """Take the Verify runs that wait, one at a time, and run them."""

    def __init__(self, app: Flask, owner: str, timeout_s: float, query_timeout_s: float) -> None:
        self.app = app
        self.owner = owner
        self.timeout_s = timeout_s
        self.query_timeout_s = query_timeout_s
        self.thread: threading.Thread | None = None
        self.verifier: Verifier | None = None
        self.stopping = threading.Event()

    def poll(self) -> None:
        """Take the oldest Verify that waits, unless one runs here already (in an app
        context: the supervisor's look)."""
        if self.stopping.is_set() or (self.thread is not None and self.thread.is_alive()):
            return
        live = list(live_engines(utcnow()).live)
        waiting = db.session.execute(
            select(PipelineVerification.id, PipelineVerification.owner)
            .where(
                PipelineVerification.state == "running",
                or_(
                    PipelineVerification.owner.is_(None),
                    PipelineVerification.owner.not_in(live),
                ),
            )
            .order_by(PipelineVerification.id)
            .limit(1)
        ).first()
        if waiting is None:
            return
        taken = db.session.execute(
            update(PipelineVerification)
            .where(
                PipelineVerification.id == waiting.id,
                PipelineVerification.state == "running",
                PipelineVerification.owner.is_(None)
                if waiting.owner is None
                else PipelineVerification.owner == waiting.owner,
            )
            .values(owner=self.owner, tables=[])
        )
        db.session.commit()
        if not getattr(taken, "rowcount", 0):
            return  # another engine process took it first
        log.info("Verify %d: taken", waiting.id)
        self.thread = threading.Thread(
            target=self._run, args=(waiting.id,), name=f"verify-{waiting.id}", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        """Stop the Verify under way; another engine process takes it again."""
        self.stopping.set()
        if self.verifier is not None:
            self.verifier.cancel()
        if self.thread is not None:
            self.thread.join(15)

    def _run(self, verification_id: int) -> None:
        with self.app.app_context():
            try:
                self._verify(verification_id)
            except (VerifyFailed, DestinationUnavailable) as exc:
                self._end(verification_id, None, str(exc))
            except Exception as exc:  # one Verify failing must not end the engine process
                log.exception("Verify %d failed", verification_id)
                self._end(verification_id, None, f"Verify failed: {exc}")
            finally:
                self.verifier = None
                db.session.remove()

    def _verify(self, verification_id: int) -> None:
        verification = db.session.get(PipelineVerification, verification_id)
        assert verification is not None
        pipeline = db.session.get(Pipeline, verification.pipeline_id)
        assert pipeline is not None
        source = pipeline.source
        if not source.publication_name:
            raise VerifyFailed(f"source {source.name} names no publication")
        target = source_target(source)
        with session(target, self.timeout_s) as s:
            tables = [
                (t.schema, t.table)
                for t in published_tables(s, source.publication_name)
                if (t.schema, t.table) != (HEARTBEAT_SCHEMA, HEARTBEAT_TABLE)
            ]
        if not tables:
            raise VerifyFailed(f"publication {source.publication_name} publishes no table")
        destination = destinations.target_of(pipeline.destination)
        connection = open_destination(destination, self.timeout_s, self.query_timeout_s)
        loader = Loader(connection, destination.database, destination.schema)
        pipeline_id, sample_keys = pipeline.id, verification.sample_keys
        db.session.rollback()  # hold no transaction open while it runs
        try:
            self.verifier = Verifier(
                target,
                loader,
                tables,
                sample_keys,
                lambda lsn: self._passed(pipeline_id, lsn),
                self.timeout_s,
            )
            found: list[dict[str, Any]] = []

            def done(verdict: TableVerdict) -> None:
                found.append(_stored(verdict))
                self._write(verification_id, tables=list(found))

            verdicts = self.verifier.run(done)
        finally:
            loader.close()
        self._end(verification_id, all(v.ok for v in verdicts), None)
        log.info(
            "Verify %d of pipeline %d: %s",
            verification_id,
            pipeline_id,
            "the same" if all(v.ok for v in verdicts) else "differences found",
        )

    def _passed(self, pipeline_id: int, lsn: int) -> bool:
        """Wait until the pipeline's engine has loaded past `lsn`; False at once when no
        engine runs it, or after PASS_WAIT_S."""
        deadline = time.monotonic() + PASS_WAIT_S
        while not self.stopping.is_set():
            db.session.rollback()  # see what the engines wrote since
            run = db.session.get(PipelineRun, pipeline_id)
            status = db.session.scalar(select(Pipeline.status).where(Pipeline.id == pipeline_id))
            if run is not None and run.last_lsn is not None and run.last_lsn >= lsn:
                return True
            live = live_engines(utcnow()).live
            if status not in RUNNING or run is None or run.owner not in live:
                return False
            if time.monotonic() >= deadline:
                return False
            self.stopping.wait(PASS_POLL_S)
        raise VerifyFailed("stopped")

    def _write(self, verification_id: int, **values: Any) -> None:
        """Store what is known so far, while this process still owns the Verify."""
        db.session.execute(
            update(PipelineVerification)
            .where(
                PipelineVerification.id == verification_id,
                PipelineVerification.owner == self.owner,
            )
            .values(**values)
        )
        db.session.commit()

    def _end(self, verification_id: int, ok: bool | None, message: str | None) -> None:
        if message == "stopped" and self.stopping.is_set():
            # Given back: another engine process takes it again.
            self._write(verification_id, owner=None)
            return
        self._write(
            verification_id,
            state="failed" if message else "done",
            ok=ok,
            message=message,
            finished_at=utcnow(),
        )


def _stored(verdict: TableVerdict) -> dict[str, Any]:
    """Return a table's verdict as the Verify row stores it."""
    return {
        "table": verdict.table,
        "source_rows": verdict.source_rows,
        "destination_rows": verdict.destination_rows,
        "sampled": verdict.sampled,
        "differing": [asdict(d) for d in verdict.differing],
        "differing_keys": verdict.differing_keys,
        "ok": verdict.ok,
        "note": verdict.note,
    }
