"""The Snowflake loader, against fakesnow's server: batches of hand-built changes in, tables out.

Each test loads tables of its own (a unique name), so they share the session's server. What
fakesnow cannot show (see README, Loading Snowflake) is not asserted here: a NULL timestamp
reads back as 1970-01-01 and a TIMESTAMP_TZ loses its offset, so those are read as text or
left out; VARCHAR(n) lengths are not enforced, so the too-large value is a NUMBER(p,s) one.
"""

from __future__ import annotations

import uuid
from contextlib import closing
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest

from rosetta_web.engine.changes import TableName
from rosetta_web.engine.loader import (
    BatchRefused,
    DestinationUnavailable,
    Loader,
    open_destination,
    staging_table_name,
    target_table_name,
)
from rosetta_web.readiness.destination import SnowflakeTarget

from .factories import new_change
from .pg import free_port
from .snowflake import new_user, write_key

pytestmark = pytest.mark.slow

DATABASE = "ANALYTICS"
SCHEMA = "RAW_DATA"
ITEM = {"id": "INT4", "name": "TEXT", "body": "TEXT"}


@pytest.fixture(scope="module")
def conn(snowflake: Any) -> Any:
    """A session logged in as the tests' administrator, as FakeSnowflake.execute logs in."""
    connection = snowflake.connect(network_timeout=30)
    yield connection
    connection.close()


@pytest.fixture
def loader(conn: Any) -> Loader:
    return Loader(conn, DATABASE, SCHEMA)


@pytest.fixture
def table() -> str:
    """A source table name no other test uses."""
    return f"public.t_{uuid.uuid4().hex[:8]}"


def rows(conn: Any, table: str, columns: str = "*", order: str = "1") -> list[tuple[Any, ...]]:
    """Read the destination table of a source table."""
    name = target_table_name(TableName(*table.split(".")))
    with closing(conn.cursor()) as cur:
        cur.execute(f'SELECT {columns} FROM {DATABASE}.{SCHEMA}."{name}" ORDER BY {order}')
        return list(cur.fetchall())


def item(table: str, op: str, id_: int, name: str | None, lsn: int, **kw: Any) -> Any:
    """A change of a row of the (id, name, body) table; body defaults to name's value."""
    row = {"id": id_, "name": name, "body": kw.pop("body", name)}
    if op == "d":
        row = {"id": id_, "name": None, "body": None}
    return new_change(table, op, row, ITEM, lsn=lsn, **kw)


# ---- The type map ----------------------------------------------------------------------------

ALL_TYPES: dict[str, Any] = {
    "id": "INT4",
    "small": "INT2",
    "big": "INT8",
    "price": ("NUMERIC", 38, 10),
    "wide": ("NUMERIC", 50, 2),
    "free": ("NUMERIC", 0, 0),
    "ratio": "FLOAT8",
    "ok": "BOOL",
    "note": "TEXT",
    "code": "BPCHAR",
    "uid": "UUID",
    "born": "DATE",
    "at_time": "TIME",
    "at": "TIMESTAMP",
    "at_tz": "TIMESTAMPTZ",
    "span": "INTERVAL",
    "blob": "BYTEA",
    "doc": "JSONB",
    "tags": "_TEXT",
    "mood": "MOOD",
}


def test_every_mapped_type_reads_back_as_written(loader, conn, table):
    """One table with every mapped type: extremes, NaN, unicode, empty strings and NULLs
    read back as the source held them; numerics exactly, wide ones as their text."""
    first = {
        "id": 1,
        "small": -32768,
        "big": 9223372036854775807,
        "price": "1234567890123456789012345678.0123456789",
        "wide": "123456789012345678901234567890123456789012345678.25",
        "free": "NAN",
        "ratio": float("nan"),
        "ok": True,
        "note": "héllo, \"wörld\"\n💡 'quoted'",
        "code": "",
        "uid": "0b6c1f0e-7d1c-4c53-9b8e-2f2b1f0f4a11",
        "born": date(1, 1, 1),
        "at_time": time(23, 59, 59, 999999),
        "at": datetime(9999, 12, 31, 23, 59, 59, 999999),
        "at_tz": datetime(2024, 2, 29, 12, 30, tzinfo=UTC),
        "span": "P1Y2M3DT4H5M6.5S",
        "blob": b"\x00\xde\xad\xbe\xef\xff",
        "doc": '{"a": [1, 2.5, null], "é": "ü"}',
        "tags": ["x", "ÿ", ""],
        "mood": "happy",
    }
    second = {name: None for name in ALL_TYPES} | {
        "id": 2,
        "price": "NAN",
        "ratio": float("-inf"),
        "small": 32767,
        "big": -9223372036854775808,
    }
    batch = [
        new_change(table, "r", first, ALL_TYPES, lsn=1),
        new_change(table, "c", second, ALL_TYPES, lsn=2),
    ]
    loader.load(batch)

    got = rows(
        conn,
        table,
        '"ID", "SMALL", "BIG", "PRICE"::VARCHAR, "WIDE", "FREE", "RATIO", "OK", "NOTE", "CODE", '
        '"UID", "BORN", "AT_TIME", "AT", "AT_TZ"::VARCHAR, "SPAN", "BLOB", '
        '"DOC":"a"[1]::FLOAT, "DOC":"é"::VARCHAR, "TAGS", "MOOD"',
    )
    assert got[0][:6] == (
        1,
        -32768,
        9223372036854775807,
        "1234567890123456789012345678.0123456789",
        "123456789012345678901234567890123456789012345678.25",
        "NAN",
    )
    assert got[0][6] != got[0][6]  # NaN
    assert got[0][7:14] == (
        True,
        "héllo, \"wörld\"\n💡 'quoted'",
        "",
        "0b6c1f0e-7d1c-4c53-9b8e-2f2b1f0f4a11",
        date(1, 1, 1),
        time(23, 59, 59, 999999),
        datetime(9999, 12, 31, 23, 59, 59, 999999),
    )
    assert got[0][14].startswith("2024-02-29 12:30:00")
    assert got[0][15:17] == ("P1Y2M3DT4H5M6.5S", b"\x00\xde\xad\xbe\xef\xff")
    assert got[0][17:19] == (2.5, "ü")
    assert [x.strip('"\n ') for x in got[0][19].strip("[]").split(",")] == ["x", "ÿ", ""]
    assert got[0][20] == "happy"
    # Row 2: NULLs stay NULL (timestamps left out: fakesnow reads NULL ones as 1970), numeric
    # NaN in a NUMBER column is NULL, the other extremes survive.
    assert got[1][:6] == (2, 32767, -9223372036854775808, None, None, None)
    assert got[1][6] == float("-inf")
    assert got[1][7:13] == (None, None, None, None, None, None)
    assert got[1][15:] == (None, None, None, None, None, None)

    with closing(conn.cursor()) as cur:
        cur.execute(
            f"SELECT column_name, data_type, numeric_precision, numeric_scale FROM "
            f"{DATABASE}.INFORMATION_SCHEMA.COLUMNS WHERE table_schema = %s AND table_name = %s",
            (SCHEMA, target_table_name(TableName(*table.split(".")))),
        )
        types = {row[0]: row[1:] for row in cur.fetchall()}
    assert types["PRICE"] == ("NUMBER", 38, 10)
    assert types["WIDE"][0] == types["FREE"][0] == types["MOOD"][0] == "TEXT"
    assert types["AT_TZ"][0] == "TIMESTAMP_TZ" and types["AT"][0] == "TIMESTAMP_NTZ"
    assert types["BLOB"][0] == "BINARY" and types["DOC"][0] == "VARIANT"
    assert {"_ROSETTA_LSN", "_ROSETTA_SYNCED_AT"} <= set(types)


# ---- Keys, replays, deletes ------------------------------------------------------------------


def test_last_change_per_key_wins_and_staging_holds_one_row_per_key(loader, conn, table):
    """Three changes of one key in a batch load as the last; the staging table MERGE reads
    holds one row for the key (Snowflake refuses a MERGE with two, fakesnow does not)."""
    report = loader.load(
        [
            item(table, "c", 1, "first", 1),
            item(table, "u", 1, "second", 2),
            item(table, "c", 2, "other", 3),
            item(table, "u", 1, "third", 4),
        ]
    )
    assert rows(conn, table, "ID, NAME, _ROSETTA_LSN") == [(1, "third", 4), (2, "other", 3)]
    with closing(conn.cursor()) as cur:
        cur.execute(
            f'SELECT "ID", COUNT(*) FROM "{staging_table_name(TableName(*table.split(".")))}" '
            'GROUP BY "ID" ORDER BY 1'
        )
        assert cur.fetchall() == [(1, 1), (2, 1)]
    counts = report.tables[target_table_name(TableName(*table.split(".")))]
    assert (counts.inserted, counts.updated, counts.deleted) == (2, 0, 0)


def test_the_same_batch_twice_leaves_the_same_table(loader, conn, table):
    """Replaying a batch (as after a crash) changes nothing: MERGE by key is idempotent."""
    batch = [
        item(table, "c", 1, "a", 1),
        item(table, "c", 2, "b", 2),
        item(table, "u", 2, "b2", 3),
        item(table, "d", 1, None, 4),
        item(table, "c", 3, "c", 5),
    ]
    loader.load(batch)
    once = rows(conn, table, "ID, NAME, BODY, _ROSETTA_LSN")
    report = loader.load(batch)
    assert (
        rows(conn, table, "ID, NAME, BODY, _ROSETTA_LSN")
        == once
        == [
            (2, "b2", "b2", 3),
            (3, "c", "c", 5),
        ]
    )
    counts = report.tables[target_table_name(TableName(*table.split(".")))]
    assert (counts.inserted, counts.updated) == (0, 2)


def test_a_delete_with_only_its_key_deletes_the_row(loader, conn, table):
    """A delete's before image (the key alone, under REPLICA IDENTITY DEFAULT) deletes the
    stored row, in a later batch, and MERGE's count says so."""
    loader.load([item(table, "c", 1, "a", 1), item(table, "c", 2, "b", 2)])
    report = loader.load([item(table, "d", 1, None, 3)])
    assert rows(conn, table, "ID, NAME") == [(2, "b")]
    assert report.tables[target_table_name(TableName(*table.split(".")))].deleted == 1


# ---- TOAST -----------------------------------------------------------------------------------


def test_an_unchanged_toasted_column_keeps_the_stored_value(loader, conn, table):
    """An update whose body is unchanged (TOASTed, not sent) keeps the stored body and takes
    the new name; another row's update in the same batch changes both."""
    loader.load([item(table, "c", 1, "a", 1, body="big text"), item(table, "c", 2, "b", 2)])
    loader.load(
        [
            item(table, "u", 1, "a2", 3, body=None, unchanged=frozenset({"body"})),
            item(table, "u", 2, "b2", 4, body="new body"),
        ]
    )
    assert rows(conn, table, "ID, NAME, BODY") == [(1, "a2", "big text"), (2, "b2", "new body")]


def test_insert_then_update_in_one_batch_keeps_the_inserted_toasted_value(loader, conn, table):
    """An insert and an update of one key in one batch: the update's unchanged column keeps
    the insert's value, as if the two had loaded one after the other."""
    loader.load(
        [
            item(table, "c", 1, "a", 1, body="inserted body"),
            item(table, "u", 1, "a2", 2, body=None, unchanged=frozenset({"body"})),
        ]
    )
    assert rows(conn, table, "ID, NAME, BODY") == [(1, "a2", "inserted body")]


# ---- The source's schema changes -------------------------------------------------------------


def test_a_column_added_at_the_source_is_added_before_its_rows_load(loader, conn, table):
    """A change with a column the target lacks adds it; earlier rows read NULL there."""
    loader.load([item(table, "c", 1, "a", 1)])
    wider = ITEM | {"price": ("NUMERIC", 10, 2)}
    row = {"id": 2, "name": "b", "body": "b", "price": "3.45"}
    loader.load([new_change(table, "c", row, wider, lsn=2)])
    assert rows(conn, table, "ID, PRICE") == [(1, None), (2, Decimal("3.45"))]


def test_a_dropped_column_stays_and_reads_null_for_new_rows(loader, conn, table):
    """A column the source dropped stays in the target; rows loaded after carry NULL in it."""
    loader.load([item(table, "c", 1, "a", 1), item(table, "c", 2, "b", 2)])
    narrower = {"id": "INT4", "name": "TEXT"}
    loader.load(
        [
            new_change(table, "u", {"id": 1, "name": "a2"}, narrower, lsn=3),
            new_change(table, "c", {"id": 3, "name": "c"}, narrower, lsn=4),
        ]
    )
    assert rows(conn, table, "ID, NAME, BODY") == [(1, "a2", None), (2, "b", "b"), (3, "c", None)]


def test_a_type_change_the_target_cannot_hold_refuses_the_batch(loader, conn, table):
    """A column turned from integer to text at the source: the batch is refused, naming the
    table and the column, and the target is left as it was."""
    loader.load([item(table, "c", 1, "a", 1)])
    retyped = ITEM | {"id": "INT4", "name": "INT8"}
    change = new_change(table, "u", {"id": 1, "name": 5, "body": "x"}, retyped, lsn=2)
    with pytest.raises(BatchRefused) as refused:
        loader.load([change])
    assert refused.value.table == TableName(*table.split("."))
    assert refused.value.column == "name"
    assert "BIGINT" in refused.value.reason and "VARCHAR" in refused.value.reason
    assert rows(conn, table, "ID, NAME") == [(1, "a")]


def test_a_truncate_in_the_middle_of_a_batch(loader, conn, table):
    """Changes before a TRUNCATE are moot, rows stored before it go, changes after it load."""
    loader.load([item(table, "c", 1, "old", 1)])
    truncate = new_change(table, "t", None, {}, key=(), lsn=4)
    report = loader.load(
        [item(table, "c", 2, "moot", 2), truncate, item(table, "c", 3, "after", 5)]
    )
    assert rows(conn, table, "ID, NAME") == [(3, "after")]
    assert report.tables[target_table_name(TableName(*table.split(".")))].truncated


# ---- Keyless tables and names ----------------------------------------------------------------


def test_a_keyless_table_is_appended_to_with_the_operation(loader, conn, table):
    """A table without a key gets every change as a row, in order, with _ROSETTA_OP."""
    columns = {"note": "TEXT", "qty": "INT4"}
    batch = [
        new_change(table, "r", {"note": "a", "qty": 1}, columns, key=(), lsn=1),
        new_change(table, "u", {"note": "a", "qty": 2}, columns, key=(), lsn=2),
        new_change(table, "d", {"note": "a", "qty": 2}, columns, key=(), lsn=3),
    ]
    report = loader.load(batch)
    assert rows(conn, table, "NOTE, QTY, _ROSETTA_OP, _ROSETTA_LSN", order="4") == [
        ("a", 1, "r", 1),
        ("a", 2, "u", 2),
        ("a", 2, "d", 3),
    ]
    assert report.tables[target_table_name(TableName(*table.split(".")))].inserted == 3


def test_names_fold_as_snowflake_folds_them_and_other_schemas_prefix_theirs(loader, conn):
    """public.items loads ITEMS; sales.items SALES__ITEMS; an unquoted-style column is upper
    case, a mixed-case or spaced one keeps its spelling (quoted in Snowflake)."""
    suffix = uuid.uuid4().hex[:6]
    columns = {"id": "INT4", "Mixed Case": "TEXT", "select": "TEXT"}
    row = {"id": 1, "Mixed Case": "m", "select": "s"}
    loader.load(
        [
            new_change(f"public.items_{suffix}", "c", row, columns),
            new_change(f"sales.items_{suffix}", "c", row | {"id": 2}, columns),
        ]
    )
    with closing(conn.cursor()) as cur:
        cur.execute(f'SELECT "ID", "Mixed Case", "SELECT" FROM {DATABASE}.{SCHEMA}.ITEMS_{suffix}')
        assert cur.fetchall() == [(1, "m", "s")]
        cur.execute(f"SELECT ID FROM {DATABASE}.{SCHEMA}.SALES__ITEMS_{suffix}")
        assert cur.fetchall() == [(2,)]


# ---- Refusals and outages --------------------------------------------------------------------


def test_a_value_too_large_for_its_column_refuses_the_batch_naming_the_key(loader, conn, table):
    """A numeric too large for its NUMBER(3,1) column refuses the batch with the table, the
    key and the reason; nothing of it loads. (fakesnow does not enforce VARCHAR(n) lengths.)"""
    columns = {"id": "INT4", "amount": ("NUMERIC", 3, 1)}
    loader.load([new_change(table, "c", {"id": 1, "amount": "12.5"}, columns)])
    too_large = new_change(table, "c", {"id": 7, "amount": "12345.0"}, columns, lsn=2)
    with pytest.raises(BatchRefused) as refused:
        loader.load([too_large])
    assert refused.value.key == {"id": 7}
    assert refused.value.column == "amount"
    assert "NUMBER(3,1)" in refused.value.reason
    assert rows(conn, table, "ID, AMOUNT") == [(1, Decimal("12.5"))]


def test_a_value_snowflake_refuses_refuses_the_batch(loader, conn, table):
    """A date column's value that is no date: Snowflake's cast refuses it, and the loader says
    so as a refused batch of that table, leaving the target as it was. (Invalid JSON would do
    on Snowflake; fakesnow answers it with HTTP 500.)"""
    columns = {"id": "INT4", "born": "DATE"}
    loader.load([new_change(table, "c", {"id": 1, "born": date(2020, 1, 2)}, columns)])
    with pytest.raises(BatchRefused) as refused:
        loader.load([new_change(table, "c", {"id": 2, "born": "not a date"}, columns, lsn=2)])
    assert refused.value.table == TableName(*table.split("."))
    assert refused.value.reason
    assert rows(conn, table, '"ID"') == [(1,)]


def test_a_schema_missing_at_the_destination_is_retried_not_refused(conn, table):
    """The destination's schema dropped (as a revoked grant or a suspended warehouse, the
    operator's to fix): the batch is unavailable, not refused, and loads once it is back."""
    schema = f"GONE_{uuid.uuid4().hex[:8].upper()}"
    loader = Loader(conn, DATABASE, schema)
    with pytest.raises(DestinationUnavailable) as unavailable:
        loader.load([item(table, "c", 1, "a", 1)])
    assert schema in str(unavailable.value)
    with closing(conn.cursor()) as cur:
        cur.execute(f"CREATE SCHEMA {DATABASE}.{schema}")
    loader.load([item(table, "c", 1, "a", 1)])
    target = target_table_name(TableName(*table.split(".")))
    with closing(conn.cursor()) as cur:
        cur.execute(f"SELECT ID, NAME FROM {DATABASE}.{schema}.{target}")
        assert cur.fetchall() == [(1, "a")]


def test_an_unreachable_destination_is_unavailable_not_refused(tmp_path):
    """A closed port: the login fails as DestinationUnavailable, which the engine retries."""
    write_key(tmp_path / "rsa_key.p8")
    target = SnowflakeTarget(
        account="xy12345",
        user="ETL",
        database=DATABASE,
        schema=SCHEMA,
        private_key_path=str(tmp_path / "rsa_key.p8"),
        host=f"http://127.0.0.1:{free_port()}",
    )
    with pytest.raises(DestinationUnavailable) as down:
        open_destination(target, timeout_s=5, query_timeout_s=10)
    assert "refused" in str(down.value).lower() or "connect" in str(down.value).lower()


def test_a_key_pair_login_opens_a_session_the_loader_loads_through(snowflake, tmp_path, table):
    """The destination's own settings and key log in (the readiness checks' login) and a
    batch loads through that session."""
    key = write_key(tmp_path / "rsa_key.p8")
    target = SnowflakeTarget(
        account="xy12345",
        user=new_user(snowflake, key),
        database=DATABASE,
        schema=SCHEMA,
        private_key_path=str(tmp_path / "rsa_key.p8"),
        host=snowflake.host_setting,
    )
    with closing(open_destination(target, timeout_s=10, query_timeout_s=30)) as session:
        Loader(session, DATABASE, SCHEMA).load([item(table, "c", 1, "a", 1)])
        assert rows(session, table, "ID, NAME") == [(1, "a")]
