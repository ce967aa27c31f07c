"""Connect to a source: within a deadline, the password kept out of every message, and the
server's refusal said in Rosetta's words beside its own (SampleFailure); no Flask, no ORM."""

from __future__ import annotations

import ipaddress
import math
import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.extensions

APPLICATION_NAME = "rosetta-monitor"
# SQLSTATE classes that another attempt will not fix: bad credentials, unknown database,
# missing privileges. Connection failures and timeouts are worth retrying.
PERMANENT_SQLSTATE_PREFIXES = ("28", "3D", "42")
PERMANENT_MESSAGES = ("authentication failed", "does not exist", "no pg_hba.conf entry")


class Resolver:
    """Threads that look host names up, so a slow resolver costs a source its own time budget,
    no more. One per app (monitor/workers.py), handed to the connection on each Target."""

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


def run(
    conn: Any,
    sql: Any,
    deadline: float,
    timeout_s: float,
    params: Any = None,
    cursor_factory: Any = None,
) -> Any:
    """Run one statement on an asynchronous connection within the deadline; return its cursor
    (of `cursor_factory`'s kind when given, e.g. RealDictCursor to read columns by name)."""
    cursor = conn.cursor(cursor_factory=cursor_factory)
    cursor.execute(sql, params)
    _wait(conn, deadline, "waiting for the server to answer", timeout_s)
    return cursor


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


def connect(
    target: Target, deadline: float, timeout_s: float, read_only: bool = True, keep: bool = False
) -> Any:
    """Open an asynchronous connection to the target within the deadline (`keep`: one kept
    between rounds, whose statements each get `timeout_s`, not what remains of this one's).

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
    conn = _connect(target, host, hostaddr, remaining, read_only, timeout_s if keep else remaining)
    try:
        _wait(conn, deadline, "connecting", timeout_s)
    except BaseException:
        conn.close()
        raise
    return conn


def _connect(
    target: Target,
    host: str,
    hostaddr: str | None,
    remaining: float,
    read_only: bool,
    statement_s: float,
) -> Any:
    """Open the connection asynchronously, every setting a keyword (never a DSN to echo)."""
    options = f"-c statement_timeout={max(1, int(statement_s * 1000))}"
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
