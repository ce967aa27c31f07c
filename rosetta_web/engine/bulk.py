"""A pipeline's first copy, done in bulk: PostgreSQL writes each table as JSON lines, Snowflake
loads them with one PUT, COPY INTO and INSERT, and Debezium then streams from the exact point
the copy saw.

Debezium's own snapshot reads every row through the engine, one event at a time, at a few
thousand rows a second. Here PostgreSQL does the reading: `COPY (SELECT …) TO STDOUT` writes
each row as a JSON line `{"r": [...]}` holding its values in the very form the loader stages a
streamed row's (the typemap's), one array item per column, gzipped into files in the temporary
directory, then loaded into the target table in one statement (`INSERT OVERWRITE`: the table
holds exactly the copy after it).

Exactness comes from PostgreSQL: a temporary logical slot created with EXPORT_SNAPSHOT names
an LSN and a snapshot that sees exactly the transactions committed before it. Every table is
read in that one snapshot, the pipeline's slot is advanced to that LSN, and Debezium, started
without offsets and without a snapshot of its own (`snapshot.mode=no_data`), streams from the
slot's confirmed position: the changes after the copy, each once. A table without a key is
copied as exactly as a keyed one.

A type this module cannot write exactly as Debezium would send it (see BULK_TYPES) leaves the
pipeline to Debezium's own snapshot, as does a source with no replication slot to spare.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from ..postgres.connection import Target
from .changes import Column, TableName, kind_of
from .typemap import snowflake_type

log = logging.getLogger(__name__)

# Columns whose every value PostgreSQL writes here exactly as Debezium's event, read by
# changes.py and typemap.py, would stage it. The value is the SQL of one column's array item.
_PLAIN = "{c}"
_TEXT = "{c}::text"
BULK_TYPES = {
    # Integers, booleans, text, uuids: json_build_array writes them as the stream stages them
    # (char(n) padded as its output function pads it).
    **dict.fromkeys(("INT2", "INT4", "INT8", "BOOL", "TEXT", "VARCHAR", "BPCHAR"), _PLAIN),
    "UUID": _TEXT,
    # Arrays of those: a JSON array, NULL items as null.
    **dict.fromkeys(("_INT2", "_INT4", "_INT8", "_BOOL", "_TEXT", "_VARCHAR"), _PLAIN),
    # NaN and ±Infinity as the stream stages a float's: "NaN", "inf", "-inf".
    **dict.fromkeys(
        ("FLOAT4", "FLOAT8"),
        "CASE WHEN {c} = 'Infinity' THEN '\"inf\"'::json "
        "WHEN {c} = '-Infinity' THEN '\"-inf\"'::json ELSE to_json({c}) END",
    ),
    # Exact, as text; a NUMBER column has no room for NaN or ±Infinity (NULL, as streamed).
    "NUMERIC": _TEXT,
    # Years 1 to 9999 only (Snowflake's), infinity NULL; ISO 8601, UTC for timestamptz.
    "DATE": "CASE WHEN {c} BETWEEN '0001-01-01' AND '9999-12-31' THEN {c}::text END",
    "TIMESTAMP": "CASE WHEN {c} >= '0001-01-01' AND {c} < '10000-01-01' THEN to_json({c}) END",
    "TIMESTAMPTZ": (
        "CASE WHEN {c} >= '0001-01-01 00:00:00+00' AND {c} < '10000-01-01 00:00:00+00' "
        "THEN to_json({c}) END"
    ),
    # Debezium reads 24:00:00 as the next midnight's 00:00:00.
    "TIME": "CASE WHEN {c} = '24:00:00' THEN '00:00:00' ELSE {c}::text END",
    # Debezium's ISO 8601 string: every part written, seconds without trailing zeros.
    "INTERVAL": (
        "'P' || extract(year FROM {c})::int || 'Y' || extract(month FROM {c})::int || 'M' "
        "|| extract(day FROM {c})::int || 'DT' || extract(hour FROM {c})::int || 'H' "
        "|| extract(minute FROM {c})::int || 'M' || trim_scale(extract(second FROM {c}))::text "
        "|| 'S'"
    ),
    "BYTEA": "upper(encode({c}, 'hex'))",
    "JSON": _TEXT,
    "JSONB": _TEXT,
}
NUMBER_WORDS = "CASE WHEN {c} IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE {c}::text END"
# A file's share of a table, before gzip: Snowflake loads files of this size in parallel.
FILE_BYTES = 128 * 1024 * 1024
WRITE_BYTES = 1024 * 1024
# COPY's text format would escape every backslash of the JSON. CSV quotes a value only where
# it holds the delimiter, the quote or a line break; a JSON line holds none of these
# (control characters are escaped in JSON strings), so each line is written as it is.
AS_IS = "WITH (FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01')"
# PostgreSQL's SQLSTATE when max_replication_slots (or another limit) is reached.
LIMIT_REACHED = "53400"
# The session the copy reads in: dates, timestamps and intervals written as planned above.
SESSION = (
    "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; "
    "SET LOCAL IntervalStyle = 'postgres'; SET LOCAL extra_float_digits = 1"
)
CATALOG = """
SELECT a.attname, upper(t.typname), t.typtype, a.atttypmod, c.relkind,
       coalesce((SELECT k.n FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
                 WHERE k.attnum = a.attnum), 0)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attgenerated = ''
ORDER BY a.attnum
"""


class CopyFailed(Exception):
    """The bulk copy could not be done now: the reason, for the pipeline's state."""


@dataclass(frozen=True)
class Planned:
    """One table to copy: its columns as the stream will describe them, its key, and the
    SELECT writing each row as a JSON object `{"r": [...]}`, an array item per column (the
    object, because a file of one bare array reads as an array of rows to some readers)."""

    table: TableName
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    items: tuple[sql.Composable, ...]  # each column's array item, as the stream stages it
    relation: sql.Composed  # the table to read: ONLY it, or a partitioned table's partitions

    @property
    def select(self) -> sql.Composed:
        """The SELECT writing every row as its JSON object."""
        return sql.SQL("""SELECT '{{"r":' || json_build_array({}) || '}}' FROM {}""").format(
            sql.SQL(", ").join(self.items), self.relation
        )


@dataclass(frozen=True)
class Copied:
    """One table written out: its files (gzipped JSON lines) in their folder, and rows."""

    planned: Planned
    folder: Path
    files: list[Path]
    rows: int


def numeric_size(typmod: int) -> tuple[int | None, int | None]:
    """Return numeric(p,s)'s precision and scale from its type modifier; None, None when
    unconstrained."""
    if typmod < 0:
        return None, None
    packed = typmod - 4
    return (packed >> 16) & 0xFFFF, ((packed & 0x7FF) ^ 1024) - 1024


def plan_table(table: TableName, catalog: list[tuple[Any, ...]]) -> Planned | str:
    """Plan one table's copy from its catalog rows; a string says why it cannot be."""
    if not catalog:
        return f"{table} has no columns to copy"
    columns: list[Column] = []
    items: list[sql.Composable] = []
    keyed: list[tuple[int, str]] = []
    relkind = catalog[0][4]
    for name, pg_type, typtype, typmod, _relkind, key_position in catalog:
        expression = "{c}" if typtype == "e" else BULK_TYPES.get(pg_type)
        if expression is None:
            return f"{table} column {name} is {pg_type.lower()}"
        length, scale = numeric_size(typmod) if pg_type == "NUMERIC" else (None, None)
        if scale is not None and scale < 0:
            return f"{table} column {name} is numeric with a negative scale"
        column = Column(name, pg_type, kind_of(pg_type, typtype == "e"), length=length, scale=scale)
        if pg_type == "NUMERIC" and snowflake_type(column).family == "NUMBER":
            expression = NUMBER_WORDS
        columns.append(column)
        items.append(sql.SQL(expression).format(c=sql.Identifier(name)))
        if key_position:
            keyed.append((key_position, name))
    return Planned(
        table,
        tuple(columns),
        tuple(name for _, name in sorted(keyed)),
        tuple(items),
        relation_of(table, relkind),
    )


def relation_of(table: TableName, relkind: str) -> sql.Composed:
    """Return the table as a FROM reads it: ONLY it, or a partitioned table's partitions."""
    return sql.SQL("{}{}.{}").format(
        sql.SQL("" if relkind == "p" else "ONLY "),
        sql.Identifier(table.schema),
        sql.Identifier(table.name),
    )


class _Files:
    """A file-like sink for COPY's rows: buffered, gzipped, cut into files of FILE_BYTES."""

    def __init__(self, folder: Path, stem: str) -> None:
        self.folder = folder
        self.stem = stem
        self.files: list[Path] = []
        self.rows = 0
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._in_file = 0
        self._out: Any = None
        self._zip: Any = None

    def write(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        self.rows += 1  # psycopg2 writes one row per call
        if self._buffered >= WRITE_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._out is None or self._in_file >= FILE_BYTES:
            self._finish()
            path = self.folder / f"{self.stem}-{len(self.files)}.json.gz"
            self._out = path.open("wb")
            self._zip = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip, fast
            self.files.append(path)
            self._in_file = 0
        data = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        self._in_file += len(data)
        self._out.write(self._zip.compress(data))

    def _finish(self) -> None:
        if self._out is not None:
            self._out.write(self._zip.flush())
            self._out.close()
            self._out = None

    def close(self) -> None:
        self._flush()
        self._finish()


class InitialCopy:
    """Copy a pipeline's tables at one exact point, then move its slot there."""

    def __init__(
        self,
        source: Target,
        slot: str,
        tables: list[tuple[str, str]],
        timeout_s: float,
    ) -> None:
        self.source = source
        self.slot = slot
        self.tables = [TableName(schema, name) for schema, name in tables]
        self.timeout_s = timeout_s
        self.rows = 0  # copied so far
        self._busy: list[Any] = []  # the connections a cancel interrupts
        self._cancelled = threading.Event()

    def plan(self) -> list[Planned] | str:
        """Plan every table's copy; a string says why Debezium's snapshot must do it. Raise
        CopyFailed when the source cannot be read."""
        planned: list[Planned] = []
        try:
            with closing(self._connect()) as conn, conn.cursor() as cur:
                for table in self.tables:
                    cur.execute(CATALOG, (table.schema, table.name))
                    one = plan_table(table, cur.fetchall())
                    if isinstance(one, str):
                        return one
                    planned.append(one)
        except psycopg2.Error as exc:
            raise CopyFailed(f"cannot read the tables' columns: {_words(exc)}") from exc
        return planned

    def run(
        self,
        planned: list[Planned],
        load: Callable[[Copied, int], None],
        starting: Callable[[Planned], None] | None = None,
    ) -> int:
        """Copy each planned table and `load` it (with the copy's LSN), all from one snapshot,
        saying to `starting` which table is read next; move the slot to that LSN; return it.
        Raise CopyFailed, or what `load` raises."""
        with self._exported() as (lsn, snapshot), closing(self._connect()) as conn:
            self._advance(lsn)
            self._busy.append(conn)
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
                cur.execute(SESSION)
                for one in planned:
                    if starting is not None:
                        starting(one)
                    started = time.monotonic()
                    copied = self._write(cur, one)
                    read_s = time.monotonic() - started
                    self.rows += copied.rows
                    try:
                        load(copied, lsn)
                    finally:
                        shutil.rmtree(copied.folder, ignore_errors=True)
                    log.info(
                        "Initial copy of %s: %d rows, read in %.1f s, loaded in %.1f s",
                        one.table,
                        copied.rows,
                        read_s,
                        time.monotonic() - started - read_s,
                    )
            conn.rollback()
        return lsn

    def cancel(self) -> None:
        """Interrupt what the copy waits for (from another thread): the temporary slot, which
        waits for the source's running transactions, or the table being read."""
        self._cancelled.set()
        for conn in list(self._busy):
            with suppress(psycopg2.Error):
                conn.cancel()

    def _write(self, cur: Any, one: Planned) -> Copied:
        if self._cancelled.is_set():
            raise CopyFailed("stopped")
        folder = Path(tempfile.mkdtemp(prefix="rosetta-copy-"))
        sink = _Files(folder, uuid.uuid4().hex)
        try:
            statement = sql.SQL("COPY ({}) TO STDOUT {}").format(one.select, sql.SQL(AS_IS))
            cur.copy_expert(statement, sink, size=WRITE_BYTES)
            sink.close()
        except psycopg2.Error as exc:
            sink.close()
            shutil.rmtree(folder, ignore_errors=True)
            if self._cancelled.is_set():
                raise CopyFailed("stopped") from None
            raise CopyFailed(f"reading {one.table}: {_words(exc)}") from exc
        return Copied(one, folder, sink.files, sink.rows)

    @contextmanager
    def _exported(self) -> Iterator[tuple[int, str]]:
        """A temporary slot's consistent point and exported snapshot, valid while it lasts."""
        try:
            conn = self._connect(psycopg2.extras.LogicalReplicationConnection)
        except psycopg2.Error as exc:
            raise CopyFailed(f"cannot open a replication connection: {_words(exc)}") from exc
        with closing(conn):
            self._busy.append(conn)
            name = f"rosetta_copy_{uuid.uuid4().hex[:16]}"
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        f"CREATE_REPLICATION_SLOT {name} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT"
                    )
                    row = cur.fetchone()
            except psycopg2.Error as exc:
                if self._cancelled.is_set():
                    raise CopyFailed("stopped") from None
                raise CopyFailed(f"cannot create a temporary slot: {_words(exc)}") from exc
            high, low = str(row[1]).split("/")
            yield (int(high, 16) << 32) + int(low, 16), str(row[2])

    def _advance(self, lsn: int) -> None:
        """Move the pipeline's slot to the copy's LSN: what it held before is in the copy."""
        position = f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
        with closing(self._connect()) as conn:
            conn.autocommit = True
            cur = conn.cursor()
            try:
                cur.execute(
                    "SELECT confirmed_flush_lsn <= %s::pg_lsn FROM pg_replication_slots "
                    "WHERE slot_name = %s",
                    (position, self.slot),
                )
                row = cur.fetchone()
                if row is None:
                    raise CopyFailed(f"replication slot {self.slot} does not exist")
                if not row[0]:
                    raise CopyFailed(
                        f"replication slot {self.slot} is already past the copy's position "
                        f"{position}: another consumer moved it"
                    )
                cur.execute("SELECT pg_replication_slot_advance(%s, %s)", (self.slot, position))
            except psycopg2.Error as exc:
                raise CopyFailed(f"cannot move slot {self.slot}: {_words(exc)}") from exc

    def _connect(self, factory: Any = None) -> Any:
        """A plain (blocking) connection to the source, every setting a keyword."""
        return psycopg2.connect(
            host=self.source.host,
            port=self.source.port,
            dbname=self.source.database,
            user=self.source.user,
            password=self.source.password,
            application_name="rosetta-engine-copy",
            connect_timeout=max(2, int(self.timeout_s)),
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
            connection_factory=factory,
        )


def _words(exc: psycopg2.Error) -> str:
    return " ".join(str(getattr(exc, "pgerror", None) or exc).split())


def slots_full(exc: CopyFailed) -> bool:
    """Tell whether the copy failed for want of a replication slot or sender to spare."""
    cause = exc.__cause__
    return isinstance(cause, psycopg2.Error) and getattr(cause, "pgcode", None) == LIMIT_REACHED
