"""Sample a source: its WAL position, every slot of its server and the WAL directory's size,
retried with backoff within one time budget; no Flask, no ORM. The monitor stores the samples.

A server is sampled once for all of its sources (`sample_servers`): over one source's
connection, kept open between rounds when a `KeptConnections` is given.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg2
from psycopg2.extras import RealDictCursor

from . import sampling_queries as queries
from .connection import SampleFailure, Target, connect, explain, run

log = logging.getLogger(__name__)

FIRST_RETRY_DELAY_SECONDS = 0.25


@dataclass
class SlotSample:
    """One replication slot as a sample saw it."""

    slot_name: str
    plugin: str | None
    slot_type: str
    database: str | None
    active: bool
    retained_bytes: int | None
    lag_bytes: int | None
    wal_status: str | None
    safe_wal_size: int | None
    inactive_since: datetime | None = None  # PostgreSQL 17 says it; older servers do not


# The figures of a sample that are stored, under the same names as the columns.
SAMPLE_FIGURES = (
    "current_lsn",
    "wal_position_bytes",
    "size_bytes",
    "retained_bytes",
    "slot_count",
    "inactive_slot_count",
)


@dataclass
class Sample:
    """The outcome of sampling one source: its figures, or why it failed."""

    source_id: int
    name: str
    ok: bool
    duration_ms: int
    attempts: int
    error: str | None = None
    current_lsn: str | None = None
    wal_position_bytes: int | None = None
    size_bytes: int | None = None
    server_version: str | None = None
    in_recovery: bool | None = None
    system_identifier: str | None = None
    max_slot_wal_keep_size: str | None = None
    # Every slot of the server; the source's own figures count those of its database.
    slots: list[SlotSample] = field(default_factory=list)
    database: str | None = None
    address: str | None = None  # host:port, naming a server whose identifier is unknown
    status: str | None = None  # the source's status once the sample is stored
    publication_exists: bool | None = None  # None: not asked (the target names none)
    permanent: bool = False  # failed in a way another attempt will not fix (SampleFailure's)

    @property
    def own_slots(self) -> list[SlotSample]:
        """Return the slots of the source's own database."""
        return [slot for slot in self.slots if slot.database == self.database]

    @property
    def retained_bytes(self) -> int | None:
        """Return the most WAL a slot of the source's database retains (None without slots)."""
        values = [slot.retained_bytes for slot in self.own_slots if slot.retained_bytes is not None]
        return max(values) if values else None

    @property
    def inactive_slot_count(self) -> int:
        """Count the slots no consumer is connected to."""
        return sum(1 for slot in self.own_slots if not slot.active)

    @property
    def slot_count(self) -> int:
        """Count the slots of the source's own database."""
        return len(self.own_slots)

    def figures(self) -> dict[str, Any]:
        """Return what a stored sample and the source's latest state both keep, by name."""
        return {name: getattr(self, name) for name in SAMPLE_FIGURES}


def _query(conn: Any, sql: str, deadline: float, timeout_s: float) -> Any:
    return run(conn, sql, deadline, timeout_s).fetchone()


def _read(
    conn: Any, target: Target, deadline: float, timeout_s: float, lists_waldir: bool = False
) -> dict[str, Any]:
    """Read the WAL position, the slots, the WAL directory's size and the publication: in one
    round trip when the role is known to list the WAL directory (`lists_waldir`), else two
    when it may (SAMPLE says so)."""
    params = {"publication": target.publication}
    row = None
    if lists_waldir:
        try:
            row = run(
                conn,
                queries.SAMPLE_WITH_WAL_DIRECTORY,
                deadline,
                timeout_s,
                params,
                cursor_factory=RealDictCursor,
            ).fetchone()
        except psycopg2.errors.InsufficientPrivilege:
            pass  # no longer may (its grant revoked): read as a role that may not
    if row is None:
        row = run(
            conn, queries.SAMPLE, deadline, timeout_s, params, cursor_factory=RealDictCursor
        ).fetchone()
        if row["may_list_waldir"]:
            row["wal_directory_bytes"] = _query(
                conn, queries.WAL_DIRECTORY_BYTES, deadline, timeout_s
            )[0]
    return {
        # e.g. "14.12 (Ubuntu 14.12-0ubuntu0.22.04.1)"
        "server_version": row["server_version"][:120],
        "in_recovery": row["in_recovery"],
        "current_lsn": row["current_lsn"],
        "wal_position_bytes": row["wal_position_bytes"],
        "system_identifier": row["system_identifier"],
        "max_slot_wal_keep_size": row["max_slot_wal_keep_size"],
        "slots": [_slot(item) for item in row["slots"]],
        "size_bytes": row.get("wal_directory_bytes"),
        "publication_exists": row["publication_exists"],  # null when the target names none
    }


def _sample_once(
    target: Target,
    deadline: float,
    timeout_s: float,
    kept: KeptConnections | None = None,
    key: Hashable = None,
) -> dict[str, Any]:
    """Read the figures over the connection kept for `key`, or a new one (kept afterwards when
    `kept` is given, closed otherwise).

    A kept connection the server has dropped meanwhile (a restart, an idle timeout) is
    replaced at once, within the same attempt; one that times out is closed, never kept.
    """
    conn = kept.take(key, target) if kept is not None else None
    reused = conn is not None
    lists_waldir = kept is not None and kept.rank(target.source_id) == 0
    connecting = False
    try:
        while True:
            if conn is None:
                connecting = True
                conn = connect(target, deadline, timeout_s, keep=kept is not None)
                connecting = False
            try:
                figures = _read(conn, target, deadline, timeout_s, lists_waldir)
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                if not reused:
                    raise
                conn.close()
                conn = None
                reused = False
                continue
            if kept is not None:
                kept.give(key, target, conn)
                conn = None
            return figures
    except psycopg2.Error as exc:
        raise explain(exc, target, connecting) from None
    finally:
        if conn is not None:
            conn.close()


def _slot(item: dict[str, Any]) -> SlotSample:
    slot = item["slot"]
    return SlotSample(
        slot_name=slot["slot_name"],
        plugin=slot.get("plugin"),
        slot_type=slot.get("slot_type") or "unknown",
        database=slot.get("database"),
        active=bool(slot.get("active")),
        retained_bytes=item.get("retained_bytes"),
        lag_bytes=item.get("lag_bytes"),
        wal_status=slot.get("wal_status"),
        safe_wal_size=slot.get("safe_wal_size"),
        inactive_since=(
            datetime.fromisoformat(slot["inactive_since"]) if slot.get("inactive_since") else None
        ),
    )


def sample_source(
    target: Target,
    timeout_s: float,
    max_retries: int,
    kept: KeptConnections | None = None,
    key: Hashable = None,
) -> Sample:
    """Sample one source, retrying with backoff and jitter, all within `timeout_s` seconds
    (over the connection kept for `key` when `kept` is given)."""
    started = time.monotonic()
    deadline = started + timeout_s
    attempts = 0
    failure = SampleFailure("not attempted")
    figures: dict[str, Any] | None = None
    while figures is None:
        attempts += 1
        try:
            figures = _sample_once(target, deadline, timeout_s, kept, key)
            continue
        except SampleFailure as exc:
            failure = exc
        except OSError as exc:
            failure = SampleFailure(f"cannot connect to {target.host}:{target.port}: {exc}")
        except Exception as exc:  # a bug must cost one source its sample, not the round
            log.exception("sampling %s failed unexpectedly", target.name)
            failure = SampleFailure(f"internal error: {type(exc).__name__}", permanent=True)
        if failure.permanent or attempts > max_retries:
            break
        delay = FIRST_RETRY_DELAY_SECONDS * 2 ** (attempts - 1) * random.uniform(0.5, 1.0)
        # Sleep only if time remains for another attempt after it.
        if time.monotonic() + delay >= deadline - 0.05:
            break
        time.sleep(delay)
    return Sample(
        source_id=target.source_id,
        name=target.name,
        database=target.database,
        address=f"{target.host}:{target.port}",
        ok=figures is not None,
        duration_ms=int((time.monotonic() - started) * 1000),
        attempts=attempts,
        **(figures if figures is not None else {"error": str(failure)}),
        permanent=figures is None and failure.permanent,
    )


def _shared(sample: Sample, target: Target) -> Sample:
    """Hand a server's sample to another of its sources: the server's figures, the source's own
    database (its slots and retained WAL are counted from it); its publication not asked."""
    return dataclasses.replace(
        sample,
        source_id=target.source_id,
        name=target.name,
        database=target.database,
        address=f"{target.host}:{target.port}",
        publication_exists=None,
        status=None,
    )


@dataclass(frozen=True)
class ServerGroup:
    """The sources of one server, sampled once for all of them.

    `key` names the server for the connections kept (None: keep none, as for a source whose
    server is not known yet).
    """

    key: Hashable
    targets: list[Target]


def _sample_server(
    server: ServerGroup, timeout_s: float, max_retries: int, kept: KeptConnections | None
) -> list[Sample]:
    """Sample a server over one source's connection and share the figures with the others.

    The source whose role sees the most is chosen: one known to list the WAL directory, else
    one not known not to (each is tried until one can, after a restart). When a source cannot
    sign in or read (a failure another attempt will not fix), the next one is tried; when the
    server cannot be reached, every source gets that failure, at the cost of one timeout.
    """
    targets = server.targets
    if kept is not None:
        targets = sorted(targets, key=lambda target: kept.rank(target.source_id))
    keeping = kept if server.key is not None else None
    own: dict[int, Sample] = {}
    best: Sample | None = None
    for target in targets:
        sample = sample_source(target, timeout_s, max_retries, keeping, server.key)
        own[target.source_id] = sample
        if sample.ok:
            if kept is not None:
                kept.learn(target.source_id, sample.size_bytes is not None)
            best = sample
            if sample.size_bytes is not None or kept is None:
                break
            if not any(
                kept.rank(other.source_id) < 2 for other in targets if other.source_id not in own
            ):
                break
        elif not sample.permanent:
            if best is None:
                best = dataclasses.replace(sample, duration_ms=0, attempts=0)
            break
    if best is None:
        return list(own.values())
    found: list[Sample] = []
    for target in server.targets:
        read = own.get(target.source_id)  # a failure stays its source's own
        if read is not None and (read is best or not read.ok):
            found.append(read)
        else:
            found.append(_shared(best, target))
    return found


def sample_servers(
    servers: list[ServerGroup],
    timeout_s: float,
    max_retries: int,
    concurrency: int,
    kept: KeptConnections | None = None,
) -> list[Sample]:
    """Sample every server concurrently with a bounded pool; return a sample per source."""
    if not servers:
        return []
    workers = max(1, min(concurrency, len(servers)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wal-sampler") as pool:
        found = pool.map(lambda one: _sample_server(one, timeout_s, max_retries, kept), servers)
        return [sample for samples in found for sample in samples]


@dataclass
class _Kept:
    conn: Any
    fingerprint: tuple[Any, ...]
    used: int  # the round it was last used in


def _fingerprint(target: Target) -> tuple[Any, ...]:
    return (
        target.source_id,
        target.host,
        target.port,
        target.database,
        target.user,
        target.password,
    )


class KeptConnections:
    """One connection per server, kept open between rounds (as postgres_exporter keeps its own).

    A connection is taken for a server's sample and given back after it; one whose source's
    connection settings changed is closed instead of being reused, and `end_round` closes
    those no round has used for `UNUSED_ROUNDS` rounds. Never more than one per key.
    """

    UNUSED_ROUNDS = 3

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kept: dict[Hashable, _Kept] = {}
        self.round = 0
        self.keeping = True  # False: each connection is closed after its sample
        # Whether each source's role may list the WAL directory, as its own samples said.
        self.sees_wal_directory: dict[int, bool] = {}

    def learn(self, source_id: int, sees_wal_directory: bool) -> None:
        """Remember what a source's own sample could read."""
        self.sees_wal_directory[source_id] = sees_wal_directory

    def rank(self, source_id: int) -> int:
        """Order a server's sources: 0 sees the WAL directory, 1 not known, 2 does not."""
        known = self.sees_wal_directory.get(source_id)
        return 1 if known is None else 0 if known else 2

    def take(self, key: Hashable, target: Target) -> Any:
        """Return the connection kept for `key` to `target` (None: none, or another's)."""
        if not self.keeping:
            return None
        with self.lock:
            found = self.kept.pop(key, None)
        if found is None:
            return None
        if found.fingerprint != _fingerprint(target) or found.conn.closed:
            found.conn.close()
            return None
        return found.conn

    def give(self, key: Hashable, target: Target, conn: Any) -> None:
        """Keep `conn` for `key` until it is taken again (close it when not keeping)."""
        if not self.keeping:
            conn.close()
            return
        with self.lock:
            other = self.kept.pop(key, None)
            self.kept[key] = _Kept(conn, _fingerprint(target), self.round)
        if other is not None:
            other.conn.close()

    def end_round(self) -> None:
        """Count a round; close the connections unused for the last `UNUSED_ROUNDS` rounds."""
        with self.lock:
            self.round += 1
            idle = [
                key
                for key, found in self.kept.items()
                if self.round - found.used > self.UNUSED_ROUNDS or not self.keeping
            ]
            closing = [self.kept.pop(key) for key in idle]
        for found in closing:
            found.conn.close()

    def source_ids(self) -> dict[Hashable, int]:
        """Return the source whose connection is kept, by key."""
        with self.lock:
            return {key: found.fingerprint[0] for key, found in self.kept.items()}

    def close_changed(self, targets: dict[Hashable, Target | None]) -> None:
        """Close the connections kept for sources now gone (None) or connecting otherwise."""
        with self.lock:
            changed = []
            for key, found in self.kept.items():
                if key not in targets:
                    continue
                target = targets[key]
                if target is None or found.fingerprint != _fingerprint(target):
                    changed.append(key)
                    self.sees_wal_directory.pop(found.fingerprint[0], None)
        self.close(changed)

    def close(self, keys: list[Hashable] | None = None) -> None:
        """Close the connections kept for `keys` (all of them by default)."""
        with self.lock:
            closing = [
                self.kept.pop(key)
                for key in (list(self.kept) if keys is None else keys)
                if key in self.kept
            ]
        for found in closing:
            found.conn.close()
