"""A source's replication objects: list its tables, create and drop its publication and slots.

No request and no ORM here. Each operation opens one short connection with the source's own
credentials, bounded by the monitor's timeout. Identifiers reach SQL only through
psycopg2.sql.Identifier, values only as parameters. The server's refusal comes back as the
server said it, never as a traceback.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2
from psycopg2 import sql

from ..errors import DomainError
from .connection import SampleFailure, Target, connect, explain, one_line, run

# What PostgreSQL allows in a replication slot's name (ReplicationSlotValidateName).
SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")
# An identifier longer than this many bytes is truncated by PostgreSQL (NAMEDATALEN - 1).
MAX_IDENTIFIER_BYTES = 63
# SQLSTATEs: "that object is in use" (a consumer took the slot between the look and the
# drop), and a statement cancelled by statement_timeout.
OBJECT_IN_USE = "55006"
QUERY_CANCELED = "57014"


class SourceUnreachable(DomainError):
    """The source could not be reached or signed in to within the timeout."""

    status = 502
    error = "SourceUnreachableError"


class SourceRefused(DomainError):
    """The source's server refused the statement (no privilege, a setting, a name taken)."""

    error = "SourceRefusedError"

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.details = {"sqlstate": sqlstate}


class SlotActive(DomainError):
    """A consumer is connected to the slot: it cannot be dropped."""

    error = "SlotActiveError"

    def __init__(self, name: str, pid: int | None, application_name: str | None) -> None:
        who = f"pid {pid}" if pid is not None else "a process"
        if application_name:
            who += f", application {application_name}"
        super().__init__(
            f"Slot {name} is active: a consumer is connected ({who}). Stop the consumer first."
        )
        self.details = {"slot_name": name, "pid": pid, "application_name": application_name}


class SlotCreationWaits(SourceRefused):
    """A new slot waited past the timeout for a transaction that was already writing."""

    def __init__(self, name: str, timeout_s: float, writer: tuple[int, str, int] | None) -> None:
        message = (
            f"Slot {name} was not created: after {timeout_s:g} s PostgreSQL was still waiting "
            "for the transactions already writing to end"
        )
        if writer is not None:
            pid, application, seconds = writer
            message += (
                f"; the oldest, pid {pid}{f' ({application})' if application else ''}, "
                f"has been open {seconds} s"
            )
        super().__init__(message + ". End it, or try again once it commits.", QUERY_CANCELED)
        if writer is not None:
            self.details = {**self.details, "pid": writer[0], "application_name": writer[1]}


class SlotNotFound(DomainError):
    """The server has no slot of that name."""

    status = 404
    error = "EntityNotFoundError"

    def __init__(self, name: str) -> None:
        super().__init__(f"No replication slot {name} on the source's server")
        self.details = {"entity_type": "Slot", "entity_id": name}


class PublicationNotFound(DomainError):
    """The source's database has no publication of that name."""

    status = 404
    error = "EntityNotFoundError"

    def __init__(self, name: str) -> None:
        super().__init__(f"No publication {name} in the source's database")
        self.details = {"entity_type": "Publication", "entity_id": name}


class Invalid(DomainError):
    """A value fails validation; `field` names it for the form and the 422."""

    status = 422
    error = "ValidationError"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.details = {"fields": {field: [message]}}


def slot_name_error(name: str) -> str | None:
    """Say what is wrong with a slot name, as PostgreSQL would refuse it; None when valid."""
    if not name:
        return "Enter a slot name."
    if len(name) > 63:
        return "A slot name has at most 63 characters."
    if not SLOT_NAME.fullmatch(name):
        return "A slot name uses only lowercase letters, digits and '_'."
    return None


def identifier_error(name: str) -> str | None:
    """Say what is wrong with a publication name; any PostgreSQL identifier is allowed."""
    if not name:
        return "Enter a name."
    if "\x00" in name:
        return "A name cannot contain the NUL character."
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        return (
            f"A name has at most {MAX_IDENTIFIER_BYTES} bytes "
            "(PostgreSQL would silently shorten it)."
        )
    return None


@dataclass(frozen=True)
class SlotInfo:
    """A slot as the server shows it now, with the consumer connected to it."""

    slot_name: str
    slot_type: str
    plugin: str | None
    database: str | None
    active: bool
    pid: int | None
    application_name: str | None
    client_addr: str | None
    backend_start: datetime | None
    retained_bytes: int | None
    # What dropping it frees: what it retains beyond the server's other slots.
    frees_bytes: int | None


# The slot, its consumer, the WAL it retains, and what dropping it frees: the server keeps
# the WAL its oldest slot needs, so only what this slot retains beyond every other slot goes.
SLOT_INFO = """
WITH pos AS (
    SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()
                ELSE pg_current_wal_lsn() END AS lsn
), retained AS (
    SELECT slot_name, pg_wal_lsn_diff(pos.lsn, restart_lsn)::bigint AS bytes
      FROM pg_replication_slots, pos
)
SELECT s.slot_name::text, s.slot_type, s.plugin::text, s.database::text, s.active, s.active_pid,
       a.application_name, host(a.client_addr), a.backend_start, mine.bytes,
       greatest(mine.bytes - coalesce((SELECT max(o.bytes) FROM retained o
                                        WHERE o.slot_name <> s.slot_name), 0), 0)
  FROM pg_replication_slots s
  JOIN retained mine ON mine.slot_name = s.slot_name
  LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid
 WHERE s.slot_name = %s
"""

# The transaction writing the longest: a new slot waits for every one of them to end. A role
# without pg_monitor sees only its own (backend_xid is hidden).
# A client's transaction first: an autovacuum's with an xid ends by itself, a session left
# open in a transaction does not, and that is the one to name.
OLDEST_WRITER = """
SELECT pid, coalesce(application_name, ''), extract(epoch FROM now() - xact_start)::int
  FROM pg_stat_activity
 WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
 ORDER BY backend_type <> 'client backend', xact_start
 LIMIT 1
"""

TABLES = """
SELECT n.nspname::text, c.relname::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
 ORDER BY 1, 2
"""


class Session:
    """One connection to a source, every statement within one deadline."""

    def __init__(self, conn: Any, target: Target, deadline: float, timeout_s: float) -> None:
        self.conn = conn
        self.target = target
        self.deadline = deadline
        self.timeout_s = timeout_s

    def run(self, statement: Any, params: Any = None) -> Any:
        try:
            return run(self.conn, statement, self.deadline, self.timeout_s, params)
        except SampleFailure as exc:
            raise SourceUnreachable(str(exc)) from None
        except psycopg2.Error as exc:
            raise SourceRefused(
                one_line(getattr(exc, "pgerror", None) or str(exc)), getattr(exc, "pgcode", None)
            ) from None


@contextmanager
def session(target: Target, timeout_s: float) -> Iterator[Session]:
    """Open a read-write connection to the source within `timeout_s`, or raise
    SourceUnreachable saying why."""
    deadline = time.monotonic() + timeout_s
    try:
        conn = connect(target, deadline, timeout_s, read_only=False)
    except psycopg2.Error as exc:
        raise SourceUnreachable(str(explain(exc, target, connecting=True))) from None
    except SampleFailure as exc:
        raise SourceUnreachable(str(exc)) from None
    except OSError as exc:
        raise SourceUnreachable(f"cannot connect to {target.host}:{target.port}: {exc}") from None
    try:
        yield Session(conn, target, deadline, timeout_s)
    finally:
        conn.close()


def list_tables(s: Session) -> list[tuple[str, str]]:
    """Return the (schema, table) of every table a publication can list, by name."""
    return [(schema, table) for schema, table in s.run(TABLES).fetchall()]


@dataclass(frozen=True)
class PublishedTable:
    """A table a publication lists, and whether it has a primary key (Debezium keys its
    changes by it; a table without one is loaded as an append-only history)."""

    schema: str
    table: str
    has_primary_key: bool

    @property
    def name(self) -> str:
        """Name it as the pages and the API do: schema.table."""
        return qualified(self.schema, self.table)


# Each table the publication lists, with whether it has a primary key, as the readiness
# check's PUBLISHED_TABLES decides it.
PUBLISHED_KEYS = """
SELECT t.schemaname::text, t.tablename::text,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
  FROM pg_publication_tables t
  JOIN pg_namespace n ON n.nspname = t.schemaname
  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename
 WHERE t.pubname = %s
 ORDER BY t.schemaname, t.tablename
"""


def published_tables(s: Session, name: str) -> list[PublishedTable]:
    """Return every table the publication lists, by name, each saying whether it has a
    primary key."""
    return [PublishedTable(*row) for row in s.run(PUBLISHED_KEYS, (name,)).fetchall()]


def qualified(schema: str, table: str) -> str:
    """Name a table as the pages and the API do: schema.table, unquoted."""
    return f"{schema}.{table}"


def publication_exists(s: Session, name: str) -> bool:
    return bool(s.run("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone())


def create_publication(s: Session, name: str, tables: list[str] | None) -> None:
    """Create the publication FOR ALL TABLES (`tables` None) or for the named tables.

    A name not among the database's tables is refused (Invalid, naming it) before anything is
    created.
    """
    statement = sql.SQL("CREATE PUBLICATION {} ").format(sql.Identifier(name))
    if tables is None:
        s.run(statement + sql.SQL("FOR ALL TABLES"))
        return
    known = {qualified(schema, table): (schema, table) for schema, table in list_tables(s)}
    missing = [table for table in tables if table not in known]
    if missing:
        raise Invalid(
            "tables",
            f"No table {', '.join(missing)} in the source's database "
            "(name each as schema.table, e.g. public.orders).",
        )
    chosen = [sql.Identifier(*known[table]) for table in dict.fromkeys(tables)]
    s.run(statement + sql.SQL("FOR TABLE ") + sql.SQL(", ").join(chosen))


def drop_publication(s: Session, name: str) -> None:
    """Drop the publication; PublicationNotFound when it does not exist."""
    if not publication_exists(s, name):
        raise PublicationNotFound(name)
    s.run(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(name)))


def create_slot(s: Session, name: str) -> None:
    """Create a logical slot decoding with pgoutput in the source's database.

    PostgreSQL makes it wait for every transaction already writing to end: one open past the
    timeout is a refusal naming it (when the role may see it), not an unreachable source.
    """
    writer = s.run(OLDEST_WRITER).fetchone()
    try:
        s.run("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
    except (SourceUnreachable, SourceRefused) as exc:
        if isinstance(exc, SourceRefused) and exc.details["sqlstate"] != QUERY_CANCELED:
            raise
        raise SlotCreationWaits(name, s.timeout_s, writer) from None


def slot_info(s: Session, name: str) -> SlotInfo:
    """Read the slot and its consumer now; SlotNotFound when there is no such slot."""
    row = s.run(SLOT_INFO, (name,)).fetchone()
    if row is None:
        raise SlotNotFound(name)
    return SlotInfo(*row)


def drop_slot(s: Session, name: str) -> SlotInfo:
    """Drop an inactive slot; return it as it was just before (what it retained and freed).

    An active slot is refused (SlotActive), also when a consumer takes it between the look
    and the drop.
    """
    info = slot_info(s, name)
    if info.active:
        raise SlotActive(name, info.pid, info.application_name)
    try:
        s.run("SELECT pg_drop_replication_slot(%s)", (name,))
    except SourceRefused as exc:
        if exc.details["sqlstate"] == OBJECT_IN_USE:
            again = slot_info(s, name)
            raise SlotActive(name, again.pid, again.application_name) from None
        raise
    return info


# The table an engine's heartbeat writes to: its change, published, moves the slot while the
# published tables are idle and other tables are busy. One row per slot writing to it.
HEARTBEAT_SCHEMA = "public"
HEARTBEAT_TABLE = "rosetta_heartbeat"
# {} is the table's name, quoted: sql.Identifier when the engine runs it, the server's
# quote_ident() in a readiness check's fix.
HEARTBEAT_DDL = (
    "CREATE TABLE IF NOT EXISTS {} (slot_name text PRIMARY KEY, beat_at timestamptz NOT NULL)"
)
# Whether the heartbeat table exists, and whether the publication lists it.
HEARTBEAT_PUBLISHED = """
SELECT p.puballtables,
       to_regclass(quote_ident(%(schema)s) || '.' || quote_ident(%(table)s)) IS NOT NULL,
       EXISTS (SELECT 1 FROM pg_publication_tables t
                WHERE t.pubname = p.pubname AND t.schemaname = %(schema)s
                  AND t.tablename = %(table)s)
  FROM pg_publication p
 WHERE p.pubname = %(publication)s
"""


def add_heartbeat_table(s: Session, publication: str) -> None:
    """Create the engine's heartbeat table when it is missing and add it to the publication
    when the publication does not list it (a FOR ALL TABLES one lists it once it exists);
    raise SourceRefused when the role may not.

    Each statement runs only when needed: CREATE TABLE IF NOT EXISTS needs CREATE on the
    schema even when the table exists, and a table added twice is an error.
    """
    found = s.run(
        HEARTBEAT_PUBLISHED,
        {"schema": HEARTBEAT_SCHEMA, "table": HEARTBEAT_TABLE, "publication": publication},
    ).fetchone()
    if found is None:
        raise PublicationNotFound(publication)
    all_tables, exists, published = found
    table = sql.Identifier(HEARTBEAT_SCHEMA, HEARTBEAT_TABLE)
    if not exists:
        s.run(sql.SQL(HEARTBEAT_DDL).format(table))
    if not all_tables and not published:
        s.run(
            sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(sql.Identifier(publication), table)
        )
