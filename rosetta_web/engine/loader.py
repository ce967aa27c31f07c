"""The Snowflake loader: a batch of changes, in source order, into the destination's tables.

Per source table and batch: its rows are collapsed to the last change of each key (an
unchanged TOASTed column keeps the value an earlier change of the batch gave it), written
as gzipped JSON lines, PUT to the session's temporary stage under a fresh path, COPYed into
a raw VARIANT table, cast from there into a typed staging table, then MERGEd into the target
keyed by the primary key: one MERGE per set of still-unchanged TOASTed columns (a MERGE's SET
names only the columns it changes). A table without a key is appended to instead, with the
operation in `_ROSETTA_OP`. A TRUNCATE truncates the target first and only the changes after
it load. MERGE keyed by the primary key makes a batch replayable: loading it again after a
crash leaves the same table.

No statement runs inside an explicit transaction: each autocommits. A crash part way leaves
some tables loaded and others not; the batch's replay loads them all again, to the same end.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..readiness.destination import SnowflakeTarget, connect
from .changes import Change, Column, TableName
from .typemap import (
    SnowflakeType,
    StoredColumn,
    ValueRefused,
    describe,
    holds,
    snowflake_type,
    staged_value,
)

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection
    from snowflake.connector.cursor import SnowflakeCursor

LSN_COLUMN = "_ROSETTA_LSN"
SYNCED_AT_COLUMN = "_ROSETTA_SYNCED_AT"
OP_COLUMN = "_ROSETTA_OP"
GROUP_COLUMN = "_ROSETTA_GROUP"
META_COLUMNS = (LSN_COLUMN, SYNCED_AT_COLUMN, OP_COLUMN)
STAGE = "_ROSETTA_LOAD"
RAW_TABLE = "_ROSETTA_RAW"
STAGING_PREFIX = "_ROSETTA_STAGED__"
UPSERTS = ("c", "u", "r")
# A name PostgreSQL keeps as written only when quoted: lower case letters, digits, _ and $.
_FOLDED = re.compile(r"[a-z_][a-z0-9_$]*")
# Errors that end a session rather than refuse a statement: expired or unknown session.
_SESSION_GONE = {390104, 390111, 390112, 390114}
# SQLSTATE classes of a refused value: data exception (22), integrity constraint (23).
DATA_SQLSTATE_CLASSES = ("22", "23")


class DestinationUnavailable(Exception):
    """Snowflake cannot be reached or logged in to now: retry the batch later."""


class BatchRefused(Exception):
    """A batch Snowflake will never load as it is: the table, the key and the reason."""

    def __init__(
        self,
        table: TableName,
        reason: str,
        key: dict[str, Any] | None = None,
        column: str | None = None,
    ) -> None:
        self.table = table
        self.reason = reason
        self.key = key  # the row's key columns and values; None when Snowflake does not say
        self.column = column
        where = str(table) + (f" key {key}" if key else "")
        where += f" column {column}" if column else ""
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class TableCounts:
    """What one batch did to one destination table, as MERGE (or INSERT) reported it."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    truncated: bool = False


@dataclass
class LoadReport:
    """What one batch did, by destination table name."""

    tables: dict[str, TableCounts] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Return the rows inserted, updated and deleted, all tables together."""
        return sum(c.inserted + c.updated + c.deleted for c in self.tables.values())


@dataclass
class _Staged:
    """A key's last change in a batch: upsert or delete, its values, what is still unchanged."""

    op: str
    values: dict[str, Any]
    unchanged: frozenset[str]
    lsn: int


def snowflake_name(name: str) -> str:
    """Return the Snowflake name of a source name: upper case when PostgreSQL folded it."""
    return name.upper() if _FOLDED.fullmatch(name) else name


def target_table_name(table: TableName) -> str:
    """Return the destination table of a source table: ITEMS, or SALES__ITEMS outside public."""
    name = snowflake_name(table.name)
    return name if table.schema == "public" else f"{snowflake_name(table.schema)}__{name}"


def staging_table_name(table: TableName) -> str:
    """Return the session's temporary staging table of a source table's last load."""
    return STAGING_PREFIX + target_table_name(table)


def quote(name: str) -> str:
    """Quote a stored Snowflake name for SQL, exactly as stored."""
    return '"' + name.replace('"', '""') + '"'


def open_destination(
    target: SnowflakeTarget, timeout_s: float, query_timeout_s: float
) -> SnowflakeConnection:
    """Log in to the destination with its key pair; raise DestinationUnavailable if it fails.
    A statement that has not answered within `query_timeout_s` (retries included) fails as
    unavailable, so a destination cut off mid-load is retried, not waited on for ever."""
    import snowflake.connector

    try:
        return connect(target, timeout_s, query_timeout_s)
    except (ValueError, OSError, snowflake.connector.Error) as exc:
        raise DestinationUnavailable(f"cannot log in to Snowflake: {exc}") from exc


class Loader:
    """Load batches of changes into one Snowflake database and schema."""

    def __init__(self, conn: SnowflakeConnection, database: str, schema: str) -> None:
        self.conn = conn
        self.database = database
        self.schema = schema
        self._schema_sql = f"{quote(database)}.{quote(schema)}"
        self._session_ready = False

    def load(self, changes: Sequence[Change]) -> LoadReport:
        """Load a batch, in source order; return what MERGE reported, table by table.

        Raise BatchRefused for a batch Snowflake will never load, DestinationUnavailable
        when Snowflake cannot be reached (the batch may then be loaded again as it is).
        """
        by_table: dict[TableName, list[Change]] = {}
        for change in changes:
            by_table.setdefault(change.table, []).append(change)
        synced_at = datetime.now(UTC).isoformat()
        report = LoadReport()
        for table, table_changes in by_table.items():
            with self._statements(table, "loading") as cur:
                counts = self._load_table(cur, table, table_changes, synced_at)
            if counts is not None:
                report.tables[target_table_name(table)] = counts
        return report

    def copy_table(
        self,
        table: TableName,
        columns: Sequence[Column],
        key: tuple[str, ...],
        files: Sequence[Path],
        lsn: int,
        synced_at: datetime,
    ) -> int:
        """Replace the target's rows with a bulk copy of the source table: `files` of gzipped
        JSON lines `{"r": [...]}`, an array item per column staged as `load` stages it.
        Return the rows loaded. Raise DestinationUnavailable or BatchRefused as load does
        (nothing half done is left: the target changes in one statement)."""
        name = target_table_name(table)
        target = f"{self._schema_sql}.{quote(name)}"
        with self._statements(table, "copying") as cur:
            stored = self._stored_columns(cur, name)
            if stored:
                self._evolve(cur, table, target, stored, list(columns))
            else:
                self._create(cur, target, list(columns), key)
            path = f"{STAGE}/{uuid.uuid4().hex}/"
            for file in files:
                cur.execute(f"PUT '{_file_url(str(file))}' @{path} AUTO_COMPRESS=FALSE")
            _fill_raw(cur, path if files else None)
            names = [quote(snowflake_name(c.name)) for c in columns]
            values = [_item_cast(c, i) for i, c in enumerate(columns)]
            if not key:
                names.append(quote(OP_COLUMN))
                values.append("'r'")
            names += [quote(LSN_COLUMN), quote(SYNCED_AT_COLUMN)]
            values += [str(int(lsn)), "%s::TIMESTAMP_TZ"]
            cur.execute(
                f"INSERT OVERWRITE INTO {target} ({', '.join(names)}) "
                f"SELECT {', '.join(values)} FROM {RAW_TABLE}",
                (synced_at.astimezone(UTC).isoformat(),),
            )
            row = cur.fetchone()
            return int(row[0]) if row else 0

    def sweep(self, table: TableName, written_since: datetime) -> int:
        """Delete the target's rows no load has written since `written_since` (what a REFRESH
        did not find at the source); return how many. Raise DestinationUnavailable or
        BatchRefused as load does."""
        target = f"{self._schema_sql}.{quote(target_table_name(table))}"
        with self._statements(table, "sweeping") as cur:
            stored = self._stored_columns(cur, target_table_name(table))
            if not stored or OP_COLUMN in stored:
                return 0  # none yet, or a keyless table's history: nothing is swept
            synced = quote(SYNCED_AT_COLUMN)  # NULL: a row no load wrote
            cur.execute(
                f"DELETE FROM {target} WHERE {synced} IS NULL OR {synced} < %s::TIMESTAMP_TZ",
                (written_since.astimezone(UTC).isoformat(),),
            )
            row = cur.fetchone()
            return int(row[0]) if row else 0

    # ---- What Verify reads --------------------------------------------------------------

    def stored_columns(self, table: TableName) -> dict[str, StoredColumn]:
        """Return the target's columns by stored name; empty when it does not exist."""
        with self._statements(table, "reading") as cur:
            return self._stored_columns(cur, target_table_name(table))

    def count(self, table: TableName) -> int:
        """Return how many rows the target holds."""
        with self._statements(table, "counting") as cur:
            cur.execute(f"SELECT count(*) FROM {self._target(table)}")
            row = cur.fetchone()
            return int(row[0]) if row else 0

    def sample_keys(self, table: TableName, key: Sequence[str], rows: int) -> list[tuple[Any, ...]]:
        """Return the keys of about `rows` rows of the target, chosen at random."""
        names = ", ".join(quote(snowflake_name(name)) for name in key)
        with self._statements(table, "sampling") as cur:
            cur.execute(f"SELECT {names} FROM {self._target(table)} SAMPLE ({int(rows)} ROWS)")
            return [tuple(row) for row in cur.fetchall()]

    def read_rows(
        self,
        table: TableName,
        columns: Sequence[str],
        key: Sequence[str],
        keys: Sequence[tuple[Any, ...]] | None,
    ) -> list[tuple[Any, ...]]:
        """Return the target's `columns` (stored names) of the rows with these `keys` (values
        of the `key` columns, source names), or of every row when `keys` is None."""
        listed = ", ".join(quote(name) for name in columns)
        statement = f"SELECT {listed} FROM {self._target(table)}"
        params: list[Any] = []
        if keys is not None:
            if not keys:
                return []
            names = [quote(snowflake_name(name)) for name in key]
            one = "(" + ", ".join(["%s"] * len(names)) + ")"
            statement += (
                f" WHERE ({', '.join(names)}) IN ({', '.join([one] * len(keys))})"
                if len(names) > 1
                else f" WHERE {names[0]} IN ({', '.join(['%s'] * len(keys))})"
            )
            params = [value for values in keys for value in values]
        with self._statements(table, "reading") as cur:
            cur.execute(statement, params or None)
            return [tuple(row) for row in cur.fetchall()]

    def _target(self, table: TableName) -> str:
        return f"{self._schema_sql}.{quote(target_table_name(table))}"

    def close(self) -> None:
        """Log out; never raise (the session may be gone already)."""
        try:
            self.conn.close(retry=False)
        except Exception:  # a connection already broken has nothing left to close
            pass

    @contextmanager
    def _cursor(self) -> Iterator[SnowflakeCursor]:
        cur = self.conn.cursor()
        try:
            if not self._session_ready:
                # The stage and staging tables are temporary: they go with the session.
                cur.execute(f"USE SCHEMA {self._schema_sql}")
                cur.execute(f"CREATE TEMPORARY STAGE IF NOT EXISTS {STAGE}")
                self._session_ready = True
            yield cur
        finally:
            cur.close()

    @contextmanager
    def _statements(self, table: TableName, doing: str) -> Iterator[SnowflakeCursor]:
        """A cursor whose failures say whether Snowflake refused (BatchRefused) or could not
        answer (DestinationUnavailable, the session then opened again)."""
        import snowflake.connector

        try:
            with self._cursor() as cur:
                yield cur
        except snowflake.connector.Error as exc:
            if _refusal(exc):
                raise BatchRefused(table, _words(exc)) from exc
            self._session_ready = False
            raise DestinationUnavailable(f"Snowflake failed {doing} {table}: {exc}") from exc
        except OSError as exc:  # the connector lets some network errors through
            self._session_ready = False
            raise DestinationUnavailable(f"Snowflake failed {doing} {table}: {exc}") from exc

    def _load_table(
        self, cur: SnowflakeCursor, table: TableName, changes: list[Change], synced_at: str
    ) -> TableCounts | None:
        """Load one table's changes of the batch; None when there was nothing to do."""
        truncates = [i for i, change in enumerate(changes) if change.op == "t"]
        rows = changes[truncates[-1] + 1 :] if truncates else changes
        target = f"{self._schema_sql}.{quote(target_table_name(table))}"
        stored = self._stored_columns(cur, target_table_name(table))
        columns = _columns(rows)
        key = next((c.key for c in reversed(rows)), ())
        if not stored and not rows:
            return None  # a truncate of a table never loaded
        if stored:
            self._evolve(cur, table, target, stored, columns)
        else:
            self._create(cur, target, columns, key)
        if truncates:
            cur.execute(f"TRUNCATE TABLE {target}")
        counts = TableCounts(truncated=bool(truncates))
        if not rows:
            return counts
        dropped = [
            name
            for name in stored
            if name not in META_COLUMNS and name not in {snowflake_name(c.name) for c in columns}
        ]
        if key:
            staged = _collapse(rows)
            groups = _groups(staged)
            self._stage(cur, table, columns, key, _staged_rows(staged, groups), synced_at)
            inserted = updated = deleted = 0
            for unchanged, number in groups.items():
                staging = staging_table_name(table)
                cur.execute(_merge_sql(target, staging, columns, key, unchanged, number, dropped))
                row = cur.fetchone()
                if row is not None:
                    inserted += int(row[0])
                    updated += int(row[1]) if len(row) > 1 else 0
                    deleted += int(row[2]) if len(row) > 2 else 0
            return TableCounts(inserted, updated, deleted, bool(truncates))
        appended = [(c.op, c.row or {}, c.lsn, 0) for c in rows]
        self._stage(cur, table, columns, key, appended, synced_at)
        names = [quote(snowflake_name(c.name)) for c in columns]
        names += [quote(OP_COLUMN), quote(LSN_COLUMN), quote(SYNCED_AT_COLUMN)]
        listed = ", ".join(names)
        cur.execute(
            f"INSERT INTO {target} ({listed}) SELECT {listed} "
            f"FROM {quote(staging_table_name(table))}"
        )
        row = cur.fetchone()
        return TableCounts(inserted=int(row[0]) if row else 0, truncated=bool(truncates))

    def _stored_columns(self, cur: SnowflakeCursor, name: str) -> dict[str, StoredColumn]:
        """Read the destination table's columns; empty when it does not exist."""
        cur.execute(
            "SELECT column_name, data_type, numeric_precision, numeric_scale, "
            f"character_maximum_length FROM {quote(self.database)}.INFORMATION_SCHEMA.COLUMNS "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (self.schema, name),
        )
        return {
            row[0]: StoredColumn(row[0], str(row[1]).upper(), row[2], row[3], row[4])
            for row in cur.fetchall()
        }

    def _create(
        self, cur: SnowflakeCursor, target: str, columns: list[Column], key: tuple[str, ...]
    ) -> None:
        """Create the target table from the source's columns, the key declared."""
        declared = [
            f"{quote(snowflake_name(c.name))} {snowflake_type(c).declared}" for c in columns
        ]
        if not key:
            declared.append(f"{quote(OP_COLUMN)} VARCHAR(1)")
        declared += [f"{quote(LSN_COLUMN)} NUMBER(20,0)", f"{quote(SYNCED_AT_COLUMN)} TIMESTAMP_TZ"]
        if key:
            keys = ", ".join(quote(snowflake_name(name)) for name in key)
            declared.append(f"PRIMARY KEY ({keys})")
        cur.execute(f"CREATE TABLE IF NOT EXISTS {target} ({', '.join(declared)})")

    def _evolve(
        self,
        cur: SnowflakeCursor,
        table: TableName,
        target: str,
        stored: dict[str, StoredColumn],
        columns: list[Column],
    ) -> None:
        """Add the columns the target lacks; refuse a column whose type it cannot hold."""
        for column in columns:
            name = snowflake_name(column.name)
            wanted = snowflake_type(column)
            if name not in stored:
                cur.execute(f"ALTER TABLE {target} ADD COLUMN {quote(name)} {wanted.declared}")
            elif not holds(stored[name], wanted):
                raise BatchRefused(
                    table,
                    f"the source's {column.pg_type} needs {wanted.declared}; the destination "
                    f"column is {describe(stored[name])} and cannot hold it",
                    column=column.name,
                )

    def _stage(
        self,
        cur: SnowflakeCursor,
        table: TableName,
        columns: list[Column],
        key: tuple[str, ...],
        rows: list[tuple[str, dict[str, Any], int, int]],
        synced_at: str,
    ) -> None:
        """Fill the table's typed staging table with rows (op, values, lsn, group)."""
        types = [snowflake_type(c) for c in columns]
        path = f"{STAGE}/{uuid.uuid4().hex}/"
        with tempfile.TemporaryDirectory(prefix="rosetta-load-") as folder:
            file = os.path.join(folder, "batch.json.gz")
            with gzip.open(file, "wt", encoding="utf-8") as out:
                for op, values, lsn, group in rows:
                    line = _line(table, columns, types, key, values, synced_at)
                    line |= {"op": op, "lsn": lsn, "group": group}
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")
            cur.execute(f"PUT '{_file_url(file)}' @{path} AUTO_COMPRESS=FALSE")
        _fill_raw(cur, path)
        staging = quote(STAGING_PREFIX + target_table_name(table))
        declared = [
            f"{quote(snowflake_name(c.name))} {t.declared}"
            for c, t in zip(columns, types, strict=True)
        ]
        declared += [
            f"{quote(OP_COLUMN)} VARCHAR(1)",
            f"{quote(LSN_COLUMN)} NUMBER(20,0)",
            f"{quote(SYNCED_AT_COLUMN)} TIMESTAMP_TZ",
            f"{quote(GROUP_COLUMN)} INTEGER",
        ]
        cur.execute(f"CREATE OR REPLACE TEMPORARY TABLE {staging} ({', '.join(declared)})")
        casts = [t.cast(f'V:"c{i}"') for i, t in enumerate(types)]
        casts += ['V:"op"::VARCHAR', 'V:"lsn"::NUMBER(20,0)', 'V:"at"::TIMESTAMP_TZ']
        casts.append('V:"group"::INTEGER')
        cur.execute(f"INSERT INTO {staging} SELECT {', '.join(casts)} FROM {RAW_TABLE}")


def _item_cast(column: Column, position: int) -> str:
    """Return the SQL reading a column from a copied row's array: a JSON null there is NULL
    (an ARRAY would keep it as a JSON null)."""
    wanted = snowflake_type(column)
    item = f'V:"r"[{position}]'
    return wanted.cast(f"STRIP_NULL_VALUE({item})" if wanted.family == "ARRAY" else item)


def _fill_raw(cur: SnowflakeCursor, path: str | None) -> None:
    """Fill the session's raw VARIANT table from the JSON files PUT under `path` (empty when
    None), the files then removed from the stage."""
    cur.execute(f"CREATE OR REPLACE TEMPORARY TABLE {RAW_TABLE} (V VARIANT)")
    if path is not None:
        cur.execute(f"COPY INTO {RAW_TABLE} FROM @{path} FILE_FORMAT=(TYPE=JSON) PURGE=TRUE")


def _file_url(path: str) -> str:
    """Return a local file's URL as PUT reads it, quotes escaped."""
    return "file://" + path.replace("\\", "/").replace("'", "\\'")


def _refusal(exc: Exception) -> bool:
    """Tell whether Snowflake refused the batch's data (for good: a value it cannot cast or
    hold) rather than failed to take it now. A suspended warehouse, a revoked grant or a
    dropped schema is not a refusal: the batch loads once the operator has fixed it."""
    from snowflake.connector import errors

    if getattr(exc, "errno", None) in _SESSION_GONE:
        return False
    if str(getattr(exc, "sqlstate", None) or "")[:2] in DATA_SQLSTATE_CLASSES:
        return True
    return isinstance(exc, errors.IntegrityError | errors.DataError | errors.NotSupportedError)


def _words(exc: Exception) -> str:
    return str(getattr(exc, "msg", None) or exc).strip()


def _columns(changes: list[Change]) -> list[Column]:
    """Return the columns the changes carry, in order of appearance, the last definition kept."""
    found: dict[str, Column] = {}
    for change in changes:
        for column in change.columns:
            found[column.name] = column
    return list(found.values())


def _collapse(changes: list[Change]) -> dict[tuple[Any, ...], _Staged]:
    """Keep each key's last change; an unchanged TOASTed column takes an earlier change's value."""
    staged: dict[tuple[Any, ...], _Staged] = {}
    for change in changes:
        row = change.row or {}
        key = tuple(repr(row.get(name)) for name in change.key)
        before = staged.get(key)
        if change.op == "d":
            staged[key] = _Staged("d", dict(row), frozenset(), change.lsn)
            continue
        values = dict(row)
        unchanged = set(change.unchanged)
        if before is not None and before.op != "d":
            for name in change.unchanged:
                if name not in before.unchanged and name in before.values:
                    values[name] = before.values[name]
                    unchanged.discard(name)
        staged[key] = _Staged("u", values, frozenset(unchanged), change.lsn)
    return staged


def _groups(staged: dict[tuple[Any, ...], _Staged]) -> dict[frozenset[str], int]:
    """Number each set of still-unchanged columns; the empty set (and deletes) is group 0."""
    groups: dict[frozenset[str], int] = {frozenset(): 0}
    for row in staged.values():
        groups.setdefault(row.unchanged, len(groups))
    return groups


def _staged_rows(
    staged: dict[tuple[Any, ...], _Staged], groups: dict[frozenset[str], int]
) -> list[tuple[str, dict[str, Any], int, int]]:
    return [(row.op, row.values, row.lsn, groups[row.unchanged]) for row in staged.values()]


def _line(
    table: TableName,
    columns: list[Column],
    types: list[SnowflakeType],
    key: tuple[str, ...],
    values: dict[str, Any],
    synced_at: str,
) -> dict[str, Any]:
    """Return one staged row as a JSON object: a field per non-NULL column (c0, c1...)."""
    line: dict[str, Any] = {"at": synced_at}
    for i, (column, wanted) in enumerate(zip(columns, types, strict=True)):
        try:
            value = staged_value(wanted, values.get(column.name))
        except ValueRefused as exc:
            named = {name: values.get(name) for name in key} if key else None
            raise BatchRefused(table, str(exc), key=named, column=column.name) from None
        if value is not None:
            line[f"c{i}"] = value
    return line


def _merge_sql(
    target: str,
    staging: str,
    columns: list[Column],
    key: tuple[str, ...],
    unchanged: frozenset[str],
    group: int,
    dropped: list[str],
) -> str:
    """Return the MERGE of one group of staged rows: SET names only the columns they change,
    and the columns the source dropped, which an update sets to NULL as an insert leaves them."""
    keys = {snowflake_name(name) for name in key}
    names = [snowflake_name(c.name) for c in columns]
    kept = {snowflake_name(name) for name in unchanged}
    on = " AND ".join(f"t.{quote(name)} = s.{quote(name)}" for name in sorted(keys))
    changed = [name for name in names if name not in keys and name not in kept]
    changed += [LSN_COLUMN, SYNCED_AT_COLUMN]
    sets = ", ".join(
        [f"t.{quote(name)} = s.{quote(name)}" for name in changed]
        + [f"t.{quote(name)} = NULL" for name in dropped]
    )
    inserted = names + [LSN_COLUMN, SYNCED_AT_COLUMN]
    listed = ", ".join(quote(name) for name in inserted)
    values = ", ".join(f"s.{quote(name)}" for name in inserted)
    deletes = f"WHEN MATCHED AND s.{quote(OP_COLUMN)} = 'd' THEN DELETE " if group == 0 else ""
    return (
        f"MERGE INTO {target} t USING (SELECT * FROM {quote(staging)} "
        f"WHERE {quote(GROUP_COLUMN)} = {group}) s ON {on} "
        f"{deletes}WHEN MATCHED THEN UPDATE SET {sets} "
        f"WHEN NOT MATCHED AND s.{quote(OP_COLUMN)} <> 'd' THEN INSERT ({listed}) VALUES ({values})"
    )
