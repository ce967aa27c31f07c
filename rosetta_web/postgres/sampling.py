"""Sample a source: its WAL position, every slot of its server and the WAL directory's size,
retried with backoff within one time budget; no Flask, no ORM. The monitor stores the samples."""

from __future__ import annotations

import logging
import random
import time
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


def _sample_once(target: Target, deadline: float, timeout_s: float) -> dict[str, Any]:
    """Open one short read-only connection and read the WAL position, slots and WAL size."""
    conn = None
    connecting = True
    try:
        conn = connect(target, deadline, timeout_s)
        connecting = False
        row = run(
            conn, queries.SAMPLE, deadline, timeout_s, cursor_factory=RealDictCursor
        ).fetchone()
        figures = {
            # e.g. "14.12 (Ubuntu 14.12-0ubuntu0.22.04.1)"
            "server_version": row["server_version"][:120],
            "in_recovery": row["in_recovery"],
            "current_lsn": row["current_lsn"],
            "wal_position_bytes": row["wal_position_bytes"],
            "system_identifier": row["system_identifier"],
            "max_slot_wal_keep_size": row["max_slot_wal_keep_size"],
            "slots": [_slot(item) for item in row["slots"]],
            "size_bytes": None,
        }
        if row["may_list_waldir"]:
            figures["size_bytes"] = _query(conn, queries.WAL_DIRECTORY_BYTES, deadline, timeout_s)[
                0
            ]
        if target.publication is not None:
            exists = run(
                conn, queries.PUBLICATION_EXISTS, deadline, timeout_s, (target.publication,)
            )
            figures["publication_exists"] = bool(exists.fetchone()[0])
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


def sample_source(target: Target, timeout_s: float, max_retries: int) -> Sample:
    """Sample one source, retrying with backoff and jitter, all within `timeout_s` seconds."""
    started = time.monotonic()
    deadline = started + timeout_s
    attempts = 0
    failure = SampleFailure("not attempted")
    figures: dict[str, Any] | None = None
    while figures is None:
        attempts += 1
        try:
            figures = _sample_once(target, deadline, timeout_s)
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
    )


def sample_all(
    targets: list[Target], timeout_s: float, max_retries: int, concurrency: int
) -> list[Sample]:
    """Sample every target concurrently with a bounded pool; return samples in target order."""
    if not targets:
        return []
    workers = max(1, min(concurrency, len(targets)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wal-sampler") as pool:
        return list(pool.map(lambda t: sample_source(t, timeout_s, max_retries), targets))
