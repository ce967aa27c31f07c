"""The type map: which Snowflake type holds each PostgreSQL column, and each value as staged.

A value travels to Snowflake as one field of a JSON line (NDJSON), then is cast from the
VARIANT it was loaded into to its column's type. So every value is written here in the form
that cast reads exactly: numerics as their text (never through a float), binary as hex,
dates and times as ISO 8601, JSON as its text (parsed by PARSE_JSON). A value Snowflake has
no place for (a numeric NaN or ±Infinity in a NUMBER column) is left out: it loads as NULL.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from .changes import ENUM, Column

MAX_NUMBER_DIGITS = 38
# Snowflake's largest VARCHAR (bytes of UTF-8) and BINARY values.
MAX_VARCHAR_BYTES = 16_777_216
MAX_BINARY_BYTES = 8_388_608
UUID_LENGTH = 36
_NOT_A_NUMBER = {"NAN", "INFINITY", "+INFINITY", "-INFINITY"}

INTEGER_TYPES = {"INT2": "SMALLINT", "INT4": "INTEGER", "INT8": "BIGINT"}
TEXT_TYPES = {"TEXT", "VARCHAR", "BPCHAR", "INTERVAL"}
SIMPLE_TYPES = {
    "FLOAT4": "FLOAT",
    "FLOAT8": "FLOAT",
    "BOOL": "BOOLEAN",
    "DATE": "DATE",
    "TIME": "TIME",
    "TIMESTAMP": "TIMESTAMP_NTZ",
    "TIMESTAMPTZ": "TIMESTAMP_TZ",
    "BYTEA": "BINARY",
    "JSON": "VARIANT",
    "JSONB": "VARIANT",
}
# When the source type is none of the above, Debezium's kind of value decides.
_BY_KIND = {
    "int16": "SMALLINT",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "float": "FLOAT",
    "double": "FLOAT",
    "boolean": "BOOLEAN",
    "bytes": "BINARY",
    "array": "ARRAY",
}
# The family INFORMATION_SCHEMA.COLUMNS.DATA_TYPE names for each declared type.
_FAMILY = {"SMALLINT": "NUMBER", "INTEGER": "NUMBER", "BIGINT": "NUMBER", "VARCHAR": "TEXT"}


class ValueRefused(ValueError):
    """A value its Snowflake column cannot hold."""


@dataclass(frozen=True)
class SnowflakeType:
    """A column's Snowflake type: as declared, and as INFORMATION_SCHEMA describes it."""

    declared: str  # NUMBER(10,2), VARCHAR(36), TIMESTAMP_TZ...
    family: str  # INFORMATION_SCHEMA's DATA_TYPE: NUMBER, TEXT, FLOAT, VARIANT...
    precision: int | None = None
    scale: int | None = None
    length: int | None = None  # of a VARCHAR(n)

    def cast(self, value: str) -> str:
        """Return the SQL reading this type from `value`, a VARIANT: V:"c0", V[0]."""
        if self.family == "BINARY":
            return f"TO_BINARY({value}::VARCHAR, 'HEX')"
        if self.family == "VARIANT":
            return f"PARSE_JSON({value}::VARCHAR)"
        if self.family == "NUMBER":
            return f"{value}::NUMBER({self.precision},{self.scale})"
        return f"{value}::{self.declared}"


@dataclass(frozen=True)
class StoredColumn:
    """A destination column as INFORMATION_SCHEMA.COLUMNS describes it."""

    name: str
    family: str
    precision: int | None = None
    scale: int | None = None
    length: int | None = None


def snowflake_type(column: Column) -> SnowflakeType:
    """Return the Snowflake type that holds this source column."""
    pg_type = column.pg_type
    declared = INTEGER_TYPES.get(pg_type)
    if declared is None and column.kind == ENUM:
        declared = "VARCHAR"
    if pg_type == "NUMERIC":
        precision, scale = column.length or 0, column.scale or 0
        if 0 < precision <= MAX_NUMBER_DIGITS and 0 <= scale <= precision:
            return SnowflakeType(f"NUMBER({precision},{scale})", "NUMBER", precision, scale)
        return SnowflakeType("VARCHAR", "TEXT")  # wider than 38 digits, or unconstrained
    if pg_type == "UUID":
        return SnowflakeType(f"VARCHAR({UUID_LENGTH})", "TEXT", length=UUID_LENGTH)
    if declared is None and pg_type in TEXT_TYPES:
        declared = "VARCHAR"
    if declared is None and (pg_type.startswith("_") or column.is_array):
        declared = "ARRAY"
    if declared is None:
        declared = SIMPLE_TYPES.get(pg_type) or _BY_KIND.get(column.kind, "VARCHAR")
    family = _FAMILY.get(declared, declared)
    if family == "NUMBER":
        return SnowflakeType(declared, family, MAX_NUMBER_DIGITS, 0)
    return SnowflakeType(declared, family)


def holds(stored: StoredColumn, wanted: SnowflakeType) -> bool:
    """Tell whether a destination column can hold every value of the wanted type."""
    if stored.family == "NUMBER" and wanted.family == "NUMBER":
        return stored.scale == wanted.scale and (stored.precision or 0) >= (wanted.precision or 0)
    if stored.family == "TEXT" and wanted.family == "TEXT":
        room = stored.length or MAX_VARCHAR_BYTES
        return room >= (wanted.length or MAX_VARCHAR_BYTES)
    if stored.family == "VARIANT" and wanted.family == "ARRAY":
        return True  # INFORMATION_SCHEMA of some servers calls an ARRAY a VARIANT
    return stored.family == wanted.family


def describe(stored: StoredColumn) -> str:
    """Say a destination column's type as it would be declared."""
    if stored.family == "NUMBER":
        return f"NUMBER({stored.precision},{stored.scale})"
    if stored.family == "TEXT" and stored.length and stored.length < MAX_VARCHAR_BYTES:
        return f"VARCHAR({stored.length})"
    return "VARCHAR" if stored.family == "TEXT" else stored.family


def staged_value(wanted: SnowflakeType, value: Any) -> Any:
    """Return a value as the staged JSON carries it; None leaves it out (NULL).

    Raise ValueRefused for a value its column cannot hold.
    """
    if value is None:
        return None
    family = wanted.family
    if family == "NUMBER":
        return _number(wanted, value)
    if family == "FLOAT":
        return _float(float(value))
    if family == "BOOLEAN":
        return bool(value)
    if family == "BINARY":
        if len(value) > MAX_BINARY_BYTES:
            raise ValueRefused(f"{len(value)} bytes, more than BINARY holds ({MAX_BINARY_BYTES})")
        return bytes(value).hex().upper()
    if family == "VARIANT":
        return value if isinstance(value, str) else json.dumps(value)
    if family == "ARRAY":
        return [_item(item) for item in value]
    if family == "TIMESTAMP_TZ":
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value
    if isinstance(value, date | time | datetime):
        return value.isoformat()
    if family == "TEXT":
        text = value if isinstance(value, str) else str(value)
        return _text(wanted, text)
    return value


def _number(wanted: SnowflakeType, value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        exact = Decimal(value)
    elif isinstance(value, str) and value.strip().upper() in _NOT_A_NUMBER:
        return None
    else:
        try:
            exact = Decimal(str(value))
        except InvalidOperation:
            raise ValueRefused(f"{value!r} is not a number") from None
        if not exact.is_finite():
            return None
    precision, scale = wanted.precision or MAX_NUMBER_DIGITS, wanted.scale or 0
    whole_digits = max(exact.adjusted() + 1, 0) if exact else 0
    if whole_digits > precision - scale:
        raise ValueRefused(f"{value} does not fit NUMBER({precision},{scale})")
    return str(value) if not isinstance(value, int) else value


def _float(value: float) -> Any:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _text(wanted: SnowflakeType, text: str) -> str:
    if wanted.length is not None and len(text) > wanted.length:
        raise ValueRefused(f"{len(text)} characters, more than VARCHAR({wanted.length}) holds")
    size = len(text.encode())
    if size > MAX_VARCHAR_BYTES:
        raise ValueRefused(f"{size} bytes, more than VARCHAR holds ({MAX_VARCHAR_BYTES})")
    return text


def _item(item: Any) -> Any:
    """Return an array's item as JSON holds it."""
    if isinstance(item, list):
        return [_item(inner) for inner in item]
    if isinstance(item, float):
        return _float(item)
    if isinstance(item, bytes):
        return item.hex().upper()
    if isinstance(item, date | time | datetime):
        return item.isoformat()
    return item
