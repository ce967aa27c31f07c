"""The type map on its own: which Snowflake type holds a column, and which values it refuses."""

from __future__ import annotations

import pytest

from rosetta_web.engine.changes import Column, TableName
from rosetta_web.engine.loader import snowflake_name, target_table_name
from rosetta_web.engine.typemap import (
    MAX_BINARY_BYTES,
    MAX_VARCHAR_BYTES,
    SnowflakeType,
    StoredColumn,
    ValueRefused,
    holds,
    snowflake_type,
    staged_value,
)


@pytest.mark.parametrize(
    ("pg_type", "length", "scale", "kind", "declared"),
    [
        ("INT2", None, None, "int16", "SMALLINT"),
        ("INT4", None, None, "int32", "INTEGER"),
        ("INT8", None, None, "int64", "BIGINT"),
        ("NUMERIC", 10, 2, "string", "NUMBER(10,2)"),
        ("NUMERIC", 38, 0, "string", "NUMBER(38,0)"),
        ("NUMERIC", 39, 2, "string", "VARCHAR"),
        ("NUMERIC", 0, 0, "string", "VARCHAR"),
        ("FLOAT4", None, None, "float", "FLOAT"),
        ("FLOAT8", None, None, "double", "FLOAT"),
        ("BOOL", None, None, "boolean", "BOOLEAN"),
        ("TEXT", None, None, "string", "VARCHAR"),
        ("VARCHAR", 20, None, "string", "VARCHAR"),
        ("BPCHAR", 3, None, "string", "VARCHAR"),
        ("UUID", None, None, "io.debezium.data.Uuid", "VARCHAR(36)"),
        ("DATE", None, None, "io.debezium.time.Date", "DATE"),
        ("TIME", None, None, "io.debezium.time.MicroTime", "TIME"),
        ("TIMESTAMP", None, None, "io.debezium.time.MicroTimestamp", "TIMESTAMP_NTZ"),
        ("TIMESTAMPTZ", None, None, "io.debezium.time.ZonedTimestamp", "TIMESTAMP_TZ"),
        ("INTERVAL", None, None, "string", "VARCHAR"),
        ("BYTEA", None, None, "bytes", "BINARY"),
        ("JSON", None, None, "io.debezium.data.Json", "VARIANT"),
        ("JSONB", None, None, "io.debezium.data.Json", "VARIANT"),
        ("_TEXT", None, None, "array", "ARRAY"),
        ("_INT4", None, None, "array", "ARRAY"),
        ("MOOD", None, None, "io.debezium.data.Enum", "VARCHAR"),
        ("INET", None, None, "string", "VARCHAR"),
    ],
)
def test_each_postgresql_type_maps_as_the_readme_says(pg_type, length, scale, kind, declared):
    """Every row of the README's type map: the PostgreSQL type declares this Snowflake type."""
    assert snowflake_type(Column("c", pg_type, kind, True, length, scale)).declared == declared


def test_a_numeric_too_large_for_its_precision_is_refused_and_nan_is_null():
    """NUMBER(5,2) takes 999.99 exactly, refuses 1000.00, and holds NaN and ±Infinity as NULL."""
    number = SnowflakeType("NUMBER(5,2)", "NUMBER", 5, 2)
    assert staged_value(number, "999.99") == "999.99"
    with pytest.raises(ValueRefused, match=r"NUMBER\(5,2\)"):
        staged_value(number, "1000.00")
    assert [staged_value(number, v) for v in ("NAN", "Infinity", "-Infinity")] == [None] * 3


def test_values_beyond_snowflakes_largest_varchar_and_binary_are_refused():
    """A text over 16 MB and bytes over 8 MB are refused rather than sent."""
    with pytest.raises(ValueRefused, match="VARCHAR"):
        staged_value(SnowflakeType("VARCHAR", "TEXT"), "x" * (MAX_VARCHAR_BYTES + 1))
    with pytest.raises(ValueRefused, match="BINARY"):
        staged_value(SnowflakeType("BINARY", "BINARY"), b"\0" * (MAX_BINARY_BYTES + 1))


def test_a_column_holds_only_types_that_fit_it():
    """A wider or rescaled NUMBER, or another family, does not fit; a narrower NUMBER and a
    shorter text do."""
    stored = StoredColumn("C", "NUMBER", 10, 2)
    assert holds(stored, SnowflakeType("NUMBER(8,2)", "NUMBER", 8, 2))
    assert not holds(stored, SnowflakeType("NUMBER(12,2)", "NUMBER", 12, 2))
    assert not holds(stored, SnowflakeType("NUMBER(10,3)", "NUMBER", 10, 3))
    assert not holds(stored, SnowflakeType("VARCHAR", "TEXT"))
    uuid = SnowflakeType("VARCHAR(36)", "TEXT", length=36)
    assert holds(StoredColumn("T", "TEXT", length=MAX_VARCHAR_BYTES), uuid)
    assert not holds(StoredColumn("U", "TEXT", length=36), SnowflakeType("VARCHAR", "TEXT"))


def test_names_fold_only_where_postgresql_folded_them():
    """Folded names are upper case; others keep their spelling; other schemas prefix theirs."""
    assert [snowflake_name(n) for n in ("order_id", "Mixed", "two words", "select")] == [
        "ORDER_ID",
        "Mixed",
        "two words",
        "SELECT",
    ]
    assert target_table_name(TableName("public", "items")) == "ITEMS"
    assert target_table_name(TableName("sales", "items")) == "SALES__ITEMS"
