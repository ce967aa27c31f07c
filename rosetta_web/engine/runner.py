"""One pipeline's Debezium engine: run in a thread, each batch loaded into Snowflake before
its offset is committed, drained or stopped on demand.

Debezium calls `handle` with a batch (what arrived within the batch window, up to the batch
size). The batch is loaded, retried with backoff while the destination is unavailable, and
only then marked processed: Debezium commits the offset of what is marked, and the slot's
confirmed position follows the committed offset, so the source frees WAL only for what is
in Snowflake. A batch that can never load stops this pipeline alone.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..postgres.replication_objects import HEARTBEAT_TABLE
from ..readiness.destination import SnowflakeTarget
from ..timeutil import utcnow
from .bulk import Copied, CopyFailed, InitialCopy, Planned, slots_full
from .changes import Change, Reader, TableName
from .loader import BatchRefused, DestinationUnavailable, Loader, LoadReport, open_destination
from .progress import Tally
from .properties import NOTIFICATIONS, SOURCE_RETRY_S, PipelineSpec
from .state import Recorder, scrub

log = logging.getLogger(__name__)

# Where Debezium sends its heartbeat records (topic.heartbeat.prefix's default, then the
# pipeline's topic.prefix): they carry no change, but say that Debezium read all before them.
HEARTBEATS = "__debezium-heartbeat."
# Debezium's streaming metrics of a pipeline's connector (its topic.prefix): `Connected` is
# true while it streams, false or gone once it lost the source.
STREAMING_METRICS = "debezium.postgres:type=connector-metrics,context=streaming,server={}"
SOURCE_LOST = (
    f"Debezium lost its connection to the source; it connects again every {SOURCE_RETRY_S} s "
    "(the engine's log says why)."
)


@dataclass(frozen=True)
class Backoff:
    """Waits between tries: from `first_s`, doubling, up to `most_s`."""

    first_s: float = 30.0
    most_s: float = 900.0

    def delay(self, attempt: int) -> float:
        """Return the wait before try number `attempt` (1 is the first retry)."""
        return float(min(self.most_s, self.first_s * 2 ** max(0, attempt - 1)))


class Stopped(Exception):
    """The batch in hand was not loaded because the pipeline stops."""


@dataclass
class Refresh:
    """A REFRESH asked of a running engine: Debezium's incremental snapshot of `tables`, or
    (`initial`) the initial snapshot of an engine started without offsets."""

    tables: list[tuple[str, str]]
    signalled_at: Any = None  # when the snapshot was asked for: rows loaded later are newer
    done: bool = False
    initial: bool = False
    started: bool = False  # Debezium said this snapshot started (a leftover's end is not ours)


def _java_classes() -> Any:
    """Define the Java interfaces' Python implementations (once the JVM runs)."""
    import jpype

    @jpype.JImplements("io.debezium.engine.DebeziumEngine$ChangeConsumer")
    class Consumer:
        def __init__(self, run: Run) -> None:
            self.run = run

        @jpype.JOverride
        def handleBatch(self, records: Any, committer: Any) -> None:  # noqa: N802 - Java's
            self.run.handle(records, committer)

        @jpype.JOverride
        def supportsTombstoneEvents(self) -> bool:  # noqa: N802 - Java's
            return False

    @jpype.JImplements("io.debezium.engine.DebeziumEngine$CompletionCallback")
    class Completion:
        def __init__(self, run: Run) -> None:
            self.run = run

        @jpype.JOverride
        def handle(self, success: bool, message: Any, error: Any) -> None:
            self.run.completed(bool(success), str(message) if message is not None else "", error)

    @jpype.JImplements("io.debezium.engine.DebeziumEngine$ConnectorCallback")
    class Started:
        def __init__(self, run: Run) -> None:
            self.run = run

        @jpype.JOverride
        def taskStarted(self) -> None:  # noqa: N802 - Java's
            self.run.task_started()

        @jpype.JOverride
        def pollingStarted(self) -> None:  # noqa: N802 - Java's
            self.run.polling_started()

    return Consumer, Completion, Started


_classes: Any = None


def _engine_classes() -> Any:
    global _classes
    if _classes is None:
        _classes = _java_classes()
    return _classes


class Run:
    """One pipeline's engine, from start to its end (stopped, drained, or failed)."""

    def __init__(
        self,
        spec: PipelineSpec,
        properties: dict[str, Any],
        destination: SnowflakeTarget,
        recorder: Recorder,
        backoff: Backoff,
        timeout_s: float,
        query_timeout_s: float,
    ) -> None:
        self.spec = spec
        self.properties = properties
        self.destination = destination
        self.recorder = recorder
        self.backoff = backoff
        self.timeout_s = timeout_s
        self.query_timeout_s = query_timeout_s
        self.loader: Loader | None = None
        self.stopping = threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()
        self.in_batch = threading.Lock()
        self.refused: str | None = None  # why a batch can never load
        self.outcome: str | None = None  # what the engine said when it ended
        self.engine: Any = None
        self.thread: threading.Thread | None = None
        self.state = self.recorded = "starting"
        self.snapshot_done = False  # the initial snapshot, when there is one, is complete
        self.last_lsn: int | None = None
        self.reader = Reader()  # JVM strings arrive as str (convertStrings)
        self.polling = threading.Event()
        self.streamed = False  # Debezium's streaming metrics said it is connected, once
        self.unconnected_since: float | None = None  # since when they say it is not (monotonic)
        self.lost_from: str | None = None  # the state before the source was lost
        self.signalling = threading.Lock()
        self.recording = threading.RLock()  # the state, from Debezium's and the supervisor's
        self.attempts = 0  # failed starts before this one
        self.refresh: Refresh | None = None
        self.on_refreshed: Callable[[Run], None] | None = None
        self.first_copy = False  # no offsets: the tables are copied before streaming
        self.copying: InitialCopy | None = None
        # Written by a ProgressWriter.
        self.progress = Tally(spec.pipeline_id, spec.source, spec.created_at)

    @property
    def pipeline_id(self) -> int:
        return self.spec.pipeline_id

    def start(self) -> None:
        """Run the pipeline in a thread of its own: its first copy when it has no offsets,
        then Debezium's engine."""
        self.recorder.state(self.pipeline_id, "starting")
        self.thread = threading.Thread(
            target=self._run, name=f"pipeline-{self.pipeline_id}", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        try:
            if self.first_copy:
                self._copy_first()
            if not self.stopping.is_set():
                self.engine = self._build()
                self.engine.run()
        except Stopped:
            pass
        except CopyFailed as exc:
            if not self.stopping.is_set():
                self.outcome = f"the initial copy failed: {exc}"
        except BatchRefused:
            pass  # recorded as failed by _with_retries
        except Exception as exc:  # the engine's own failure, said by `completed` too
            if self.outcome is None:
                self.outcome = str(exc)
        finally:
            self._close_loader()
            self.finished.set()

    def _build(self) -> Any:
        import jpype

        consumer_class, completion_class, started_class = _engine_classes()
        properties = jpype.JClass("java.util.Properties")()
        for key, value in self.properties.items():
            properties.setProperty(str(key), str(value))
        engine_class = jpype.JClass("io.debezium.engine.DebeziumEngine")
        json_format = jpype.JClass("io.debezium.engine.format.Json")
        return (
            engine_class.create(json_format)
            .using(properties)
            .using(completion_class(self))
            .using(started_class(self))
            .notifying(consumer_class(self))
            .build()
        )

    def _copy_first(self) -> None:
        """Copy every table in bulk at one exact point and move the slot there, so Debezium
        streams what follows without a snapshot of its own; leave the copy to Debezium's
        snapshot when a table cannot be copied so, or no slot is to spare for the copy."""
        copy = InitialCopy(self.spec.source, self.spec.slot, list(self.spec.tables), self.timeout_s)
        planned = copy.plan()
        for schema, table in self.spec.tables:
            self.progress.snapshot(f"{schema}.{table}", "pending", 0)
        if isinstance(planned, str):
            log.info(
                "pipeline %d: Debezium's snapshot copies the tables: %s", self.pipeline_id, planned
            )
            return
        refresh = self.refresh if self.refresh is not None and self.refresh.initial else None
        self.copying = copy
        # Log in to Snowflake while PostgreSQL writes the first table (a failure is retried
        # by the first load).
        login = threading.Thread(target=self._open_quietly, daemon=True)
        login.start()
        self._record("refreshing" if refresh is not None else "snapshotting")
        synced_at = utcnow()

        def load(copied: Copied, lsn: int) -> None:
            login.join()
            one = copied.planned
            self._with_retries(
                lambda loader: loader.copy_table(
                    one.table, one.columns, one.key, copied.files, lsn, synced_at
                )
            )
            self.progress.snapshot(str(one.table), "done", copied.rows)

        def starting(one: Planned) -> None:
            self.progress.snapshot(str(one.table), "copying")

        try:
            self.last_lsn = copy.run(planned, load, starting)
            self.progress.copied_at(self.last_lsn)
        except CopyFailed as exc:
            if not slots_full(exc):
                raise
            log.warning(
                "pipeline %d: Debezium's snapshot copies the tables: %s", self.pipeline_id, exc
            )
            return
        finally:
            self.copying = None
            login.join()  # its session, if it opens one late, is closed when the run ends
        self.properties["snapshot.mode"] = "no_data"
        self.snapshot_done = True
        if refresh is not None:  # everything is copied again: nothing is left to sweep
            refresh.done = True
            if self.on_refreshed is not None:
                self.on_refreshed(self)
        with self.recording:
            self.state = self.recorded = "starting"
            self.recorder.state(
                self.pipeline_id,
                "starting",
                reason=f"The first copy is loaded ({copy.rows:,} rows of {len(planned)} "
                f"tables); Debezium starts streaming from where it was taken.",
                last_lsn=self.last_lsn,
            )

    # ---- Debezium's callbacks, on the engine's threads ---------------------------------

    def task_started(self) -> None:
        """Debezium's task runs: the engine is started (it says `starting` until its first
        batch or its snapshot's first notification says what it does)."""
        self.started.set()

    def polling_started(self) -> None:
        """Debezium's task polls: signals may be sent now, and after a first copy in bulk the
        engine streams."""
        self.polling.set()
        if self.snapshot_done and self.state == "starting":
            self._record("streaming")
        if self.refresh is not None and self.refresh.signalled_at is None:
            self._signal_refresh()

    def watch_source(self) -> None:
        """Say `retrying` while Debezium has lost the source (it starts its task again by
        itself): at once when it had streamed, or when it has not streamed for twice its wait
        between tries since it began polling. Say what it did before once it is connected
        again."""
        if self.stopping.is_set() or self.finished.is_set() or not self.polling.is_set():
            return
        connected = _streaming_connected(self.properties["topic.prefix"])
        now = time.monotonic()
        with self.recording:
            if connected:
                self.streamed, self.unconnected_since = True, None
                back, self.lost_from = self.lost_from, None
                if back is not None and self.state == "retrying":
                    self._record(back)
                return
            if self.unconnected_since is None:
                self.unconnected_since = now
            lost = self.streamed or now - self.unconnected_since >= 2 * SOURCE_RETRY_S
            # Not while a snapshot of Debezium's own reads the tables before it streams.
            streams = self.snapshot_done and self.state in ("streaming", "refreshing")
            if lost and streams and self.lost_from is None:
                self.lost_from = self.state
                self._retrying(SOURCE_LOST, SOURCE_LOST, SOURCE_RETRY_S)

    def completed(self, success: bool, message: str, error: Any) -> None:
        """Debezium's engine ended: keep why, for the supervisor to record and retry."""
        cause = message
        if error is not None:
            cause = str(error.getMessage() or error.toString())
        self.outcome = cause or message

    def handle(self, records: Any, committer: Any) -> None:
        """Load one batch, then mark it processed so its offset is committed."""
        with self.in_batch:
            if self.stopping.is_set():
                return  # not marked: replayed at the next start
            changes: list[Change] = []
            refreshed = False
            # A heartbeat with no change after it: Debezium has read everything before it.
            caught_up = False
            beat: Change | None = None  # the last change of the heartbeat table
            for record in records:
                value = record.value()
                destination = str(record.destination())
                if destination == NOTIFICATIONS:
                    refreshed = self._notified(value) or refreshed
                    continue
                if destination.startswith(HEARTBEATS):
                    caught_up = True
                    continue
                change = self.reader.parse(record.key(), value)
                if change is None:
                    continue
                if change.table.name == HEARTBEAT_TABLE:
                    beat, caught_up = change, True
                else:
                    changes.append(change)
                    caught_up = False
            if changes:
                self.progress.receiving()
            try:
                if changes:
                    self.progress.loaded(self._load(changes), changes)
                if refreshed:
                    self._sweep()
            except Stopped:
                return
            for record in records:
                committer.markProcessed(record)
            committer.markBatchFinished()
            self._after_batch(changes, beat, caught_up)

    # ---- REFRESH -----------------------------------------------------------------------

    def refresh_now(self, tables: list[tuple[str, str]]) -> None:
        """Ask for an incremental snapshot of `tables`, once Debezium polls."""
        if self.refresh is not None and not self.refresh.done:
            return
        self.refresh = Refresh(tables)
        if self.polling.is_set():
            self._signal_refresh()

    def copy_again(self, tables: list[tuple[str, str]]) -> None:
        """Start from no offsets: the first copy copies `tables` again. In bulk the tables then
        hold exactly the copy; by Debezium's snapshot, what it did not write is swept as a
        REFRESH's is."""
        self.refresh = Refresh(tables, signalled_at=utcnow(), initial=True)

    def _signal_refresh(self) -> None:
        import jpype

        with self.signalling:  # the supervisor's thread and Debezium's may both get here
            refresh = self.refresh
            if refresh is None or refresh.signalled_at is not None:
                return
            # Rows the snapshot writes, and rows streamed meanwhile, are stamped after this.
            refresh.signalled_at = utcnow()
        for schema, table in refresh.tables:
            self.progress.snapshot(f"{schema}.{table}", "pending", 0)
        signal = jpype.JClass("io.debezium.engine.DebeziumEngine$Signal")
        signaler = self.engine.getSignaler()
        # A snapshot left over from an earlier run of this pipeline would end first, and
        # its sweep would remove rows this one has yet to write: stop it.
        signaler.signal(
            signal(str(uuid.uuid4()), "stop-snapshot", json.dumps({"type": "INCREMENTAL"}), None)
        )
        collections = [re.escape(f"{schema}.{table}") for schema, table in refresh.tables]
        signaler.signal(
            signal(
                str(uuid.uuid4()),
                "execute-snapshot",
                json.dumps({"data-collections": collections, "type": "INCREMENTAL"}),
                None,
            )
        )
        self._record("refreshing")

    def _notified(self, value: str) -> bool:
        """Read one of Debezium's notifications; True when our REFRESH's snapshot is done."""
        payload = json.loads(value).get("payload") or {}
        log.log(
            logging.DEBUG if payload.get("type") == "IN_PROGRESS" else logging.INFO,  # per chunk
            "pipeline %d: %s %s",
            self.pipeline_id,
            payload.get("aggregate_type"),
            payload.get("type"),
        )
        if payload.get("aggregate_type") == "Initial Snapshot":
            if payload.get("type") == "COMPLETED":
                self.snapshot_done = True
                self.progress.snapshot_done()
            elif self.state != "refreshing":
                self._record("snapshotting")
        refresh = self.refresh
        if refresh is None or refresh.signalled_at is None or refresh.done:
            return False
        kind = "Initial Snapshot" if refresh.initial else "Incremental Snapshot"
        if payload.get("aggregate_type") != kind:
            return False
        if payload.get("type") == "STARTED":
            refresh.started = True
        return bool(refresh.started and payload.get("type") == "COMPLETED")

    def _sweep(self) -> None:
        """Remove what the refresh did not write: rows that exist only at the destination."""
        refresh = self.refresh
        assert refresh is not None
        for schema, table in refresh.tables:
            name = TableName(schema, table)
            self._with_retries(lambda loader: loader.sweep(name, refresh.signalled_at))  # noqa: B023
        refresh.done = True
        self.snapshot_done = True
        self.progress.snapshot_done()
        self._record("streaming")
        if self.on_refreshed is not None:
            self.on_refreshed(self)

    def _after_batch(self, changes: list[Change], beat: Change | None, caught_up: bool) -> None:
        # The heartbeat table's change is committed with the batch: the offset passes it.
        passed = [*changes, beat] if beat is not None else changes
        if passed:
            self.last_lsn = max(change.lsn for change in passed) or self.last_lsn
        if any(change.snapshot in (None, "false", "last") for change in changes):
            if not self.snapshot_done and self.state == "snapshotting":
                self.progress.snapshot_done()
            self.snapshot_done = True
        self.progress.passed(
            self.last_lsn, beat.committed_ms if beat is not None else None, caught_up
        )
        with self.recording:
            # The last LSN goes with the progress, written every few seconds.
            self._record(self._doing(changes))

    def _doing(self, changes: list[Change]) -> str:
        """Say what the engine does after a batch of `changes`."""
        if "refreshing" in (self.state, self.lost_from):  # a REFRESH goes on past a lost source
            state = "refreshing"
        elif changes and changes[-1].snapshot not in (None, "false", "incremental", "last"):
            state = "snapshotting"  # the initial snapshot goes on past this batch
        elif self.state == "snapshotting" and not self.snapshot_done:
            state = "snapshotting"
        else:
            state = "streaming"
        return state

    def _record(self, state: str, always: bool = False) -> None:
        """Record the state when it changes (or `always`, with the last LSN loaded)."""
        with self.recording:
            if always or state != self.recorded:
                self.state = self.recorded = state
                self.recorder.state(self.pipeline_id, state, last_lsn=self.last_lsn)

    def _retrying(self, reason: str, error: str, wait_s: float) -> None:
        """Record `retrying`, why, and the next try `wait_s` from now."""
        self.state = self.recorded = "retrying"
        self.recorder.state(
            self.pipeline_id,
            "retrying",
            reason=reason,
            next_try_at=utcnow() + timedelta(seconds=wait_s),
            error=error,
        )

    def _load(self, changes: list[Change]) -> LoadReport:
        report = LoadReport()

        def load(loader: Loader) -> None:
            nonlocal report
            report = loader.load(changes)

        self._with_retries(load)
        return report

    def _with_retries(self, work: Callable[[Loader], Any]) -> None:
        """Do `work` with the loader, retried with backoff while the destination is
        unavailable; a refusal fails the pipeline; raise Stopped when it stops meanwhile."""
        attempt = 0
        doing = self.state  # what it goes back to saying once the destination answers
        while True:
            if self.stopping.is_set() and self.copying is not None:
                raise Stopped()  # a copy is done again at the next start
            try:
                if self.loader is None:
                    self.loader = _open_loader(
                        self.destination, self.timeout_s, self.query_timeout_s
                    )
                work(self.loader)
                if attempt:
                    self._record(doing)
                return
            except DestinationUnavailable as exc:
                self._close_loader()
                attempt += 1
                wait_s = self.backoff.delay(attempt)
                self._retrying(
                    f"Snowflake: {exc}",
                    f"Loading failed, try {attempt}; next in {wait_s:.0f} s: {exc}",
                    wait_s,
                )
                if self.stopping.wait(wait_s):
                    raise Stopped() from None
            except BatchRefused as exc:
                self.refused = str(exc)
                self.state = self.recorded = "failed"
                self.recorder.state(
                    self.pipeline_id, "failed", reason=self.refused, error=self.refused
                )
                raise

    def _open_quietly(self) -> None:
        try:
            self.loader = _open_loader(self.destination, self.timeout_s, self.query_timeout_s)
        except DestinationUnavailable:
            pass  # said by the load that tries again

    def _close_loader(self) -> None:
        if self.loader is not None:
            self.loader.close()
            self.loader = None

    # ---- The supervisor's side ---------------------------------------------------------

    def stop(self, drain: bool, timeout_s: float = 60.0) -> None:
        """Stop the engine: with `drain`, the batch in flight is loaded and committed first;
        without, at once (a retry's wait is cut short either way)."""
        self.stopping.set()
        deadline = time.monotonic() + timeout_s
        copying = self.copying
        if copying is not None:
            copying.cancel()
        if not self.started.is_set():  # closing a starting engine can fail: wait for it
            while not (self.started.is_set() or self.finished.is_set()):
                if time.monotonic() > deadline:
                    break
                self.finished.wait(0.2)
        if drain and self.in_batch.acquire(timeout=max(0.0, deadline - time.monotonic())):
            self.in_batch.release()
        if self.engine is not None and not self.finished.is_set():
            try:
                self.engine.close()
            except Exception as exc:  # closed already, or never started
                log.info(
                    "pipeline %d: close: %s",
                    self.pipeline_id,
                    scrub(str(exc), self.recorder.secrets),
                )
        self.finished.wait(max(0.0, deadline - time.monotonic()))


def _streaming_connected(prefix: str) -> bool | None:
    """Debezium's streaming metric `Connected` of the connector named `prefix`; None while it
    has none (not streaming yet, or its task is starting again) or it cannot be read."""
    import jpype

    server = jpype.JClass("java.lang.management.ManagementFactory").getPlatformMBeanServer()
    name = jpype.JClass("javax.management.ObjectName")(STREAMING_METRICS.format(prefix))
    try:
        return bool(server.getAttribute(name, "Connected"))
    except jpype.JException:  # InstanceNotFoundException, mostly
        return None


def _open_loader(target: SnowflakeTarget, timeout_s: float, query_timeout_s: float) -> Loader:
    connection = open_destination(target, timeout_s, query_timeout_s)
    return Loader(connection, target.database, target.schema)
