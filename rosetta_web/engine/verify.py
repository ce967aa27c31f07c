"""Verify: does the destination hold what the source holds, value for value?

For each table: the row counts at both ends, and a comparison of a random sample of keys
(every key of a table under FULL_BELOW rows), value by value in the form the type map gives
each value. The source is read in one snapshot, at a WAL position; the destination only once
the pipeline has loaded past that position, so a change still in flight is not taken for a
difference. A key that differs is read again at both ends, after the pipeline has passed the
new position: what differs then is a real difference.

The source sees one count per table and one index scan per batch of sampled keys; the sample
itself comes from TABLESAMPLE SYSTEM, which reads only the pages it picks. No Flask here: the
engine process runs it (rosetta_web/engine/verifying.py) and stores what it found.
"""

from __future__ import annotations

import json
import logging
import math
import random
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import psycopg2
from psycopg2 import sql

from ..postgres.connection import Target
from .bulk import CATALOG, SESSION, Planned, plan_table, relation_of
from .changes import Column, TableName
from .loader import LSN_COLUMN, Loader, snowflake_name
from .typemap import snowflake_type

log = logging.getLogger(__name__)

SAMPLE_KEYS = 1000
FULL_BELOW = 10_000  # rows: a smaller table has every key compared
KEY_BATCH = 1000  # keys read per statement: one index scan each
DIFFERING_SHOWN = 20
# Reads of a key that differs: the first, then again after the pipeline passed the new
# position; a key that differs every time differs for real.
READS = 3
MISSING = "missing at the destination"
EXTRA = "only at the destination"
VALUES = "values differ"
NOT_CAUGHT_UP = (
    "read before the pipeline had loaded up to the source's position (it is paused, or "
    "behind): a difference may be a change it has not loaded yet"
)
KEY_TYPES = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND a.attname = ANY(%s)
"""


class VerifyFailed(Exception):
    """Verify could not be done: the source or the destination could not be read."""


@dataclass(frozen=True)
class Differing:
    """A key whose row differs: its key values, the columns that differ, and how."""

    key: dict[str, Any]
    columns: list[str]
    problem: str


@dataclass
class TableVerdict:
    """What Verify found of one table."""

    table: str
    source_rows: int | None = None
    destination_rows: int | None = None
    sampled: int = 0
    differing: list[Differing] = field(default_factory=list)
    differing_keys: int = 0  # all of them; `differing` shows the first DIFFERING_SHOWN
    note: str | None = None
    compared: bool = True  # False: a table Verify cannot compare (no key), left out of ok

    @property
    def ok(self) -> bool:
        """Tell whether the table is the same at both ends (True for one not compared)."""
        if not self.compared:
            return True
        return self.differing_keys == 0 and self.source_rows == self.destination_rows


# ---- Values in one form at both ends ---------------------------------------------------


def _float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def normal(column: Column, value: Any) -> Any:
    """Return a value, as the source stages it or as Snowflake returns it, in one form to
    compare: numbers exact, times as datetimes (UTC for TIMESTAMP_TZ), JSON parsed."""
    if value is None:
        return None
    family = snowflake_type(column).family
    if family == "NUMBER":
        return Decimal(str(value))
    if family == "FLOAT":
        number = float(value)  # "NaN", "inf" and "-inf" as the source stages them, too
        if math.isnan(number):
            return "NaN"
        # A real is a float at the source and a double at the destination.
        return _float32(number) if column.pg_type == "FLOAT4" else number
    if family == "BOOLEAN":
        return bool(value)
    if family == "BINARY":
        return bytes(value).hex().upper() if not isinstance(value, str) else value.upper()
    if family in ("VARIANT", "ARRAY"):
        return json.loads(value) if isinstance(value, str) else value
    if family == "TIMESTAMP_TZ":
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    if family == "TIMESTAMP_NTZ":
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return moment.replace(tzinfo=None)
    if family == "DATE":
        return date.fromisoformat(value) if isinstance(value, str) else value
    if family == "TIME":
        return time.fromisoformat(value) if isinstance(value, str) else value
    return value if isinstance(value, str) else str(value)


def _shown(value: Any) -> Any:
    """Return a key's value as JSON shows it."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return value


# ---- One table ------------------------------------------------------------------------


@dataclass
class _Rows:
    """Rows by key (in the one form), each with its key as read and its values."""

    rows: dict[tuple[Any, ...], tuple[tuple[Any, ...], list[Any]]] = field(default_factory=dict)

    def add(self, raw_key: tuple[Any, ...], key: tuple[Any, ...], values: list[Any]) -> None:
        """Keep one row."""
        self.rows[key] = (raw_key, values)


class Verifier:
    """Verify the tables of one pipeline against its destination."""

    def __init__(
        self,
        source: Target,
        loader: Loader,
        tables: Sequence[tuple[str, str]],
        sample_keys: int,
        passed: Callable[[int], bool],
        timeout_s: float,
    ) -> None:
        """`passed(lsn)` waits until the pipeline has loaded past the source position `lsn`
        and tells whether it did (False: it is paused, or did not get there in time)."""
        self.source = source
        self.loader = loader
        self.tables = [TableName(schema, name) for schema, name in tables]
        self.sample_keys = sample_keys
        self.passed = passed
        self.timeout_s = timeout_s
        self._busy: list[Any] = []
        self._cancelled = threading.Event()

    def run(self, done: Callable[[TableVerdict], None] | None = None) -> list[TableVerdict]:
        """Verify each table in turn, telling `done` of each; raise VerifyFailed."""
        verdicts = []
        for table in self.tables:
            if self._cancelled.is_set():
                raise VerifyFailed("stopped")
            verdict = self._table(table)
            verdicts.append(verdict)
            if done is not None:
                done(verdict)
        return verdicts

    def cancel(self) -> None:
        """Interrupt the source read under way (from another thread)."""
        self._cancelled.set()
        for conn in list(self._busy):
            try:
                conn.cancel()
            except psycopg2.Error:
                pass

    def _table(self, table: TableName) -> TableVerdict:
        verdict = TableVerdict(str(table))
        key_types: dict[str, str] = {}  # the key's types, as the keys are read back by them
        with self._snapshot() as (cur, lsn):
            cur.execute(CATALOG, (table.schema, table.name))
            catalog = cur.fetchall()
            if not catalog:
                raise VerifyFailed(f"{table} does not exist at the source")
            planned = plan_table(table, catalog)
            keyed = any(row[5] for row in catalog)
            if isinstance(planned, str) or not keyed:
                verdict.source_rows = _count(cur, relation_of(table, catalog[0][4]))
            else:
                cur.execute(KEY_TYPES, (table.schema, table.name, list(planned.key)))
                key_types = {name: type_name for name, type_name in cur.fetchall()}
        if not keyed:
            verdict.compared = False
            verdict.note = (
                "no primary key: its destination keeps a row per change (at least once), "
                "so Verify does not compare it"
            )
            return verdict
        if isinstance(planned, str):
            verdict.note = f"{planned}: Verify compares its row counts only"
            if not self.passed(lsn):
                verdict.note = _joined(verdict.note, NOT_CAUGHT_UP)
            verdict.destination_rows = self._destination_count(table)
            return verdict
        return self._compare(planned, verdict, key_types)

    def _destination_count(self, table: TableName) -> int | None:
        return self.loader.count(table) if self.loader.stored_columns(table) else None

    def _compare(
        self, planned: Planned, verdict: TableVerdict, key_types: dict[str, str]
    ) -> TableVerdict:
        table = planned.table
        stored = self.loader.stored_columns(table)
        if not stored:
            verdict.note = "the destination has no table for it yet"
            with self._snapshot() as (cur, _lsn):
                verdict.source_rows = _count(cur, planned.relation)
            return verdict
        columns = [c for c in planned.columns if snowflake_name(c.name) in stored]
        left_out = [c.name for c in planned.columns if snowflake_name(c.name) not in stored]
        if left_out:
            verdict.note = f"not at the destination, so not compared: {', '.join(left_out)}"
        positions = [planned.columns.index(c) for c in columns]
        key_at = [[c.name for c in columns].index(name) for name in planned.key]
        key_columns = [columns[i] for i in key_at]
        destination_sample: list[tuple[Any, ...]] = []
        if self.loader.count(table) >= FULL_BELOW:
            # Keys only the destination has are found from its side.
            destination_sample = self.loader.sample_keys(
                table, planned.key, max(1, self.sample_keys // 10)
            )
        # Each row's last writer's source position: a row written after the source's read
        # is newer than what it is compared with, not different.
        written_at = LSN_COLUMN if LSN_COLUMN in stored else None
        names = [snowflake_name(c.name) for c in columns] + ([written_at] if written_at else [])
        wanted: list[tuple[Any, ...]] | None = None  # None: every key
        changing = 0
        for attempt in range(READS):
            recount = attempt == 0 or verdict.source_rows != verdict.destination_rows
            with self._snapshot() as (cur, lsn):
                if recount:
                    verdict.source_rows = _count(cur, planned.relation)
                rows = verdict.source_rows or 0
                if attempt == 0 and rows >= FULL_BELOW:
                    wanted = self._sample(cur, planned, rows)
                    picked = set(wanted)
                    wanted += [k for k in destination_sample if k not in picked]
                source = self._source_rows(cur, planned, positions, key_at, wanted, key_types)
            caught_up = self.passed(lsn)
            if recount:
                verdict.destination_rows = self.loader.count(table)
            destination = _Rows()
            newer = set()
            for row in self.loader.read_rows(table, names, planned.key, wanted):
                raw = tuple(row[i] for i in key_at)
                values = [normal(c, v) for c, v in zip(columns, row, strict=False)]
                key = tuple(values[i] for i in key_at)
                destination.add(raw, key, values)
                if written_at and row[-1] is not None and int(row[-1]) > lsn:
                    newer.add(key)
            if attempt == 0:
                verdict.sampled = len(set(source.rows) | set(destination.rows))
            differing = _differences(columns, key_columns, source, destination)
            settled = [(raw, d, key) for raw, d, key in differing if key not in newer]
            changing = len(differing) - len(settled)
            verdict.differing_keys = len(settled)
            verdict.differing = [d for _, d, _ in settled[:DIFFERING_SHOWN]]
            if not differing and verdict.source_rows == verdict.destination_rows:
                break
            if not caught_up:
                # Paused, or behind: reading again would find the same.
                verdict.note = _joined(verdict.note, NOT_CAUGHT_UP)
                break
            # Read again what differed, once the pipeline has passed a new position.
            wanted = [raw for raw, _, _ in differing]
        if changing:
            verdict.note = _joined(
                verdict.note,
                f"{changing} of the keys changed at the source every time they were read: "
                "not compared",
            )
        return verdict

    def _sample(self, cur: Any, planned: Planned, rows: int) -> list[tuple[Any, ...]]:
        """Pick sample_keys keys at random among the rows of about as many pages, which is all
        TABLESAMPLE SYSTEM reads: keys spread over the table, not bunched in a few pages."""
        cur.execute(
            "SELECT relpages FROM pg_class WHERE oid = %s::regclass",
            (f"{_quoted(planned.table.schema)}.{_quoted(planned.table.name)}",),
        )
        row = cur.fetchone()
        pages = int(row[0]) if row and row[0] and row[0] > 0 else max(1, rows // 100)
        percent = min(100.0, 100.0 * 1.5 * self.sample_keys / pages)
        names = sql.SQL(", ").join(sql.Identifier(name) for name in planned.key)
        cur.execute(
            sql.SQL("SELECT {} FROM {} TABLESAMPLE SYSTEM (%s)").format(names, planned.relation),
            (percent,),
        )
        keys = [tuple(row) for row in cur.fetchall()]
        return random.sample(keys, min(self.sample_keys, len(keys)))

    def _source_rows(
        self,
        cur: Any,
        planned: Planned,
        positions: list[int],
        key_at: list[int],
        keys: list[tuple[Any, ...]] | None,
        key_types: dict[str, str],
    ) -> _Rows:
        """Read the rows of `keys` (every row when None), each value as the stream stages it."""
        columns = [planned.columns[i] for i in positions]
        select = sql.SQL("SELECT json_build_array({}) FROM {}").format(
            sql.SQL(", ").join(planned.items[i] for i in positions), planned.relation
        )
        found = _Rows()
        batches: Iterator[list[tuple[Any, ...]] | None] = (
            iter([None])
            if keys is None
            else (keys[i : i + KEY_BATCH] for i in range(0, len(keys), KEY_BATCH))
        )
        for batch in batches:
            if batch == []:
                continue
            statement, params = select, None
            if batch is not None:
                statement, params = self._where_keys(select, planned.key, key_types, batch)
            cur.execute(statement, params)
            for (row,) in cur.fetchall():
                values = [normal(c, v) for c, v in zip(columns, row, strict=True)]
                key = tuple(values[i] for i in key_at)
                found.add(key, key, values)
        return found

    @staticmethod
    def _where_keys(
        select: sql.Composed,
        key: Sequence[str],
        key_types: dict[str, str],
        batch: list[tuple[Any, ...]],
    ) -> tuple[sql.Composed, list[Any]]:
        """Add `WHERE key IN (...)` for a batch: one index scan of the primary key."""
        one = sql.SQL("({})").format(
            sql.SQL(", ").join(sql.SQL("%s::" + key_types[name]) for name in key)
        )
        names = sql.SQL(", ").join(sql.Identifier(name) for name in key)
        statement = sql.SQL("{} WHERE ({}) IN ({})").format(
            select, names, sql.SQL(", ").join([one] * len(batch))
        )
        return statement, [_param(value) for values in batch for value in values]

    @contextmanager
    def _snapshot(self) -> Iterator[tuple[Any, int]]:
        """A read-only snapshot of the source and its WAL position: every transaction it
        sees committed before that position."""
        try:
            conn = psycopg2.connect(
                host=self.source.host,
                port=self.source.port,
                dbname=self.source.database,
                user=self.source.user,
                password=self.source.password,
                application_name="rosetta-verify",
                connect_timeout=max(2, int(self.timeout_s)),
            )
        except psycopg2.Error as exc:
            raise VerifyFailed(f"cannot connect to the source: {_words(exc)}") from exc
        with closing(conn):
            self._busy.append(conn)
            try:
                conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
                with conn.cursor() as cur:
                    cur.execute(SESSION)
                    cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
                    row = cur.fetchone()
                    assert row is not None
                    yield cur, int(row[0])
                conn.rollback()
            except psycopg2.Error as exc:
                if self._cancelled.is_set():
                    raise VerifyFailed("stopped") from None
                raise VerifyFailed(f"cannot read the source: {_words(exc)}") from exc
            finally:
                self._busy.remove(conn)


def _param(value: Any) -> Any:
    """Return a key's value as a parameter PostgreSQL casts to the key's type."""
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _joined(first: str | None, second: str) -> str:
    return f"{first}; {second}" if first else second


def _count(cur: Any, relation: sql.Composed) -> int:
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(relation))
    row = cur.fetchone()
    return int(row[0]) if row else 0


def _differences(
    columns: list[Column], key_columns: list[Column], source: _Rows, destination: _Rows
) -> list[tuple[tuple[Any, ...], Differing, tuple[Any, ...]]]:
    """Return each key that differs: as read (to read it again), how, and in the one form."""
    found = []
    for key in sorted(set(source.rows) | set(destination.rows), key=repr):
        at_source, at_destination = source.rows.get(key), destination.rows.get(key)
        if at_source is not None and at_destination is not None:
            names = [
                c.name
                for c, a, b in zip(columns, at_source[1], at_destination[1], strict=False)
                if a != b
            ]
            if not names:
                continue
            raw, problem = at_source[0], VALUES
        elif at_source is not None:
            raw, names, problem = at_source[0], [c.name for c in columns], MISSING
        else:
            assert at_destination is not None
            raw, names, problem = at_destination[0], [c.name for c in columns], EXTRA
        shown = {c.name: _shown(v) for c, v in zip(key_columns, key, strict=True)}
        found.append((raw, Differing(shown, names, problem), key))
    return found


def _words(exc: psycopg2.Error) -> str:
    return " ".join(str(getattr(exc, "pgerror", None) or exc).split())
