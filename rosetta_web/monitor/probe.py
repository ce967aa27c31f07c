"""Probe sources: connect, read the WAL position, slots and WAL size, retry; no Flask, no ORM."""

from __future__ import annotations

import ipaddress
import logging
import math
import random
import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.extensions

from . import queries

log = logging.getLogger(__name__)

APPLICATION_NAME = "rosetta-wal-monitor"
FIRST_RETRY_DELAY_SECONDS = 0.25
# SQLSTATE classes that another attempt will not fix: bad credentials, unknown database,
# missing privileges. Connection failures and timeouts are worth retrying.
PERMANENT_SQLSTATE_PREFIXES = ("28", "3D", "42")
PERMANENT_MESSAGES = ("authentication failed", "does not exist", "no pg_hba.conf entry")


class Resolver:
    """Threads that look host names up, so a slow resolver costs a source its own time budget,
    no more. One per app (monitor/workers.py), handed to the probe on each Target."""

    def __init__(self, workers: int = 8) -> None:
        # Threads start on the first lookup of a name (an address needs none).
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wal-resolver")


@dataclass(frozen=True)
class Target:
    """Where and as whom to sample one source."""

    source_id: int
    name: str
    host: str
    port: int
    database: str
    user: str
    password: str = field(repr=False)
    publication: str | None = None  # the source's publication, whose existence is sampled
    # Where host names are looked up; without one, a lookup gets a thread of its own.
    resolver: Resolver | None = field(default=None, repr=False, compare=False)


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


class SampleFailure(Exception):
    """An attempt failed; `permanent` says whether retrying is pointless."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def one_line(message: str) -> str:
    """Put a server's message on one line, each of its lines kept as a sentence.

    Nothing in it is replaced or masked: the connection never carries a DSN for a server to
    echo, so its words are shown as it said them ("Connection refused. Is the server…").
    """
    lines = [" ".join(line.split()) for line in str(message).splitlines()]
    text = " ".join(line if line[-1] in ".?!:;," else f"{line}." for line in lines if line)
    return text.removesuffix(".")[:300]


def explain(exc: Exception, target: Target, connecting: bool) -> SampleFailure:
    """Say in Rosetta's words what failed, beside the server's own message."""
    code = getattr(exc, "pgcode", None) or ""
    theirs = one_line(getattr(exc, "pgerror", None) or str(exc) or type(exc).__name__)
    # While connecting, libpq gives no SQLSTATE: its words tell what happened.
    signing_in = ("authentication failed", "pg_hba.conf", 'role "')
    if code.startswith("28") or (connecting and any(words in theirs for words in signing_in)):
        ours = f"cannot sign in as {target.user}"
    elif code == "3D000" or (connecting and "does not exist" in theirs and "database" in theirs):
        ours = f"no database {target.database} on {target.host}:{target.port}"
    elif code.startswith("42"):
        ours = f"{target.user} may not read what the monitor needs"
    elif connecting:
        ours = f"cannot connect to {target.host}:{target.port}"
    else:
        ours = "reading the WAL position and slots failed"
    permanent = code.startswith(PERMANENT_SQLSTATE_PREFIXES) or any(
        phrase in theirs for phrase in PERMANENT_MESSAGES
    )
    return SampleFailure(f"{ours}: {theirs}", permanent)


def _wait(conn: Any, deadline: float, doing: str, timeout_s: float) -> None:
    """Drive an asynchronous psycopg2 connection until it is ready or the deadline passes."""
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SampleFailure(f"timed out after {timeout_s:g} s {doing}")
        if state == psycopg2.extensions.POLL_READ:
            select.select([conn.fileno()], [], [], remaining)
        elif state == psycopg2.extensions.POLL_WRITE:
            select.select([], [conn.fileno()], [], remaining)
        else:  # pragma: no cover - psycopg2 raises on errors before reporting another state
            raise SampleFailure(f"unexpected connection state {state}")


def run(conn: Any, sql: Any, deadline: float, timeout_s: float, params: Any = None) -> Any:
    """Run one statement on an asynchronous connection within the deadline; return its cursor."""
    cursor = conn.cursor()
    cursor.execute(sql, params)
    _wait(conn, deadline, "waiting for the server to answer", timeout_s)
    return cursor


def _query(conn: Any, sql: str, deadline: float, timeout_s: float) -> Any:
    return run(conn, sql, deadline, timeout_s).fetchone()


def _resolve(
    host: str, port: int, deadline: float, timeout_s: float, resolver: Resolver | None = None
) -> str | None:
    """Look a host name up within the deadline (libpq would block on it); None for an address."""
    if host.startswith("/"):  # a Unix socket directory
        return None
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    resolver = resolver or Resolver(workers=1)
    lookup = resolver.executor.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        found = lookup.result(timeout=max(deadline - time.monotonic(), 0))
    except FutureTimeout:
        raise SampleFailure(f"timed out after {timeout_s:g} s looking up {host}") from None
    except UnicodeError:  # no name in DNS can be spelled so (IDNA refuses it)
        raise SampleFailure(
            f"cannot look up {host}: not a valid host name", permanent=True
        ) from None
    except socket.gaierror as exc:
        raise SampleFailure(
            f"cannot look up {host}: {exc.strerror}", permanent=exc.errno == socket.EAI_NONAME
        ) from None
    # typeshed allows an int address for non-IP families, which a TCP lookup never returns.
    return ",".join(dict.fromkeys(str(info[4][0]) for info in found))


def connect(target: Target, deadline: float, timeout_s: float, read_only: bool = True) -> Any:
    """Open an asynchronous connection to the target within the deadline.

    Raises SampleFailure for a name lookup or a timeout, psycopg2.Error for the server's
    refusal (explain() words it).
    """
    addresses = _resolve(target.host, target.port, deadline, timeout_s, target.resolver)
    remaining = max(deadline - time.monotonic(), 0.001)
    host = target.host
    hostaddr: str | None = None  # psycopg2 leaves None parameters out of the DSN
    if addresses:
        # libpq connects to hostaddr and still checks TLS certificates against host.
        host = ",".join([target.host] * (addresses.count(",") + 1))
        hostaddr = addresses
    conn = _connect(target, host, hostaddr, remaining, read_only)
    try:
        _wait(conn, deadline, "connecting", timeout_s)
    except BaseException:
        conn.close()
        raise
    return conn


def _sample_once(target: Target, deadline: float, timeout_s: float) -> dict[str, Any]:
    """Open one short read-only connection and read the WAL position, slots and WAL size."""
    conn = None
    connecting = True
    try:
        conn = connect(target, deadline, timeout_s)
        connecting = False
        row = _query(conn, queries.SAMPLE, deadline, timeout_s)
        figures = {
            "server_version": row[0][:120],  # e.g. "14.12 (Ubuntu 14.12-0ubuntu0.22.04.1)"
            "in_recovery": row[1],
            "current_lsn": row[2],
            "wal_position_bytes": row[3],
            "system_identifier": row[5],
            "max_slot_wal_keep_size": row[6],
            "slots": [_slot(item) for item in row[7]],
            "size_bytes": None,
        }
        if row[4]:
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


def _connect(
    target: Target, host: str, hostaddr: str | None, remaining: float, read_only: bool
) -> Any:
    """Open the connection asynchronously, every setting a keyword (never a DSN to echo)."""
    options = f"-c statement_timeout={max(1, int(remaining * 1000))}"
    if read_only:
        options += " -c default_transaction_read_only=on"
    return psycopg2.connect(
        host=host,
        hostaddr=hostaddr,
        port=target.port,
        dbname=target.database,
        user=target.user,
        password=target.password,
        application_name=APPLICATION_NAME,
        connect_timeout=max(2, math.ceil(remaining)),
        options=options,
        async_=True,
    )


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
