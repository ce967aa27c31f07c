"""Debezium's change events, read into plain Python: which table, what happened, the row.

The engine asks Debezium for JSON with schemas (`value.converter.schemas.enable=true`) and
the source's column types (`column.propagate.source.type=.*`), so every event says the
PostgreSQL type of each column as well as its value. Values are decoded here once, into
the Python types the loader writes to Snowflake:

| Debezium sends                                  | decoded as                         |
|-------------------------------------------------|------------------------------------|
| int16, int32, int64                             | int                                |
| float, double (NaN and ±Infinity as strings)    | float                              |
| numeric as a string (`decimal.handling.mode`)   | str, exactly as sent ("NAN" too)   |
| io.debezium.time.Date (days)                    | date; None when out of range       |
| io.debezium.time.Time / MicroTime / NanoTime    | time                               |
| io.debezium.time.Timestamp / MicroTimestamp / … | naive datetime; None out of range  |
| io.debezium.time.ZonedTimestamp (ISO string)    | aware datetime in UTC; None for ±infinity |
| bytes (base64)                                  | bytes                              |
| array                                           | list of decoded items              |
| every other string (text, uuid, enum, json, interval) | str                          |

Out of range means outside Snowflake's years 1 to 9999: PostgreSQL's `infinity` and
`-infinity` dates and timestamps reach Debezium 3.6 as unrelated numbers (different ones in
a snapshot and in the stream), so they are read as NULL, as the README says.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

# What Debezium sends in place of an unchanged TOASTed column (unavailable.value.placeholder).
UNCHANGED = "__rosetta_unchanged_toast__"
SOURCE_TYPE = "__debezium.source.column.type"
SOURCE_LENGTH = "__debezium.source.column.length"
SOURCE_SCALE = "__debezium.source.column.scale"

EPOCH = datetime(1970, 1, 1)
FIRST_DAY = date(1, 1, 1)
LAST_DAY = date(9999, 12, 31)
# Debezium sends a numeric NaN as "NAN", infinity as POSITIVE_INFINITY; psql writes them so.
NUMERIC_WORDS = {
    "NAN": "NaN",
    "INFINITY": "Infinity",
    "-INFINITY": "-Infinity",
    "POSITIVE_INFINITY": "Infinity",
    "NEGATIVE_INFINITY": "-Infinity",
}
# Debezium's kind of value (its event's field schema name, else its type) for a PostgreSQL
# type, as `column.propagate.source.type` names it; an enum's is ENUM, an array's "array".
ENUM = "io.debezium.data.Enum"
KINDS = {
    "INT2": "int16",
    "INT4": "int32",
    "INT8": "int64",
    "FLOAT4": "float",
    "FLOAT8": "double",
    "BOOL": "boolean",
    "BYTEA": "bytes",
    "DATE": "io.debezium.time.Date",
    "TIME": "io.debezium.time.MicroTime",
    "TIMESTAMP": "io.debezium.time.MicroTimestamp",
    "TIMESTAMPTZ": "io.debezium.time.ZonedTimestamp",
    "JSON": "io.debezium.data.Json",
    "JSONB": "io.debezium.data.Json",
    "UUID": "io.debezium.data.Uuid",
}


def kind_of(pg_type: str, enum: bool = False) -> str:
    """Return Debezium's kind of value for a source type (`enum`: a type of the enum kind)."""
    if enum:
        return ENUM
    return "array" if pg_type.startswith("_") else KINDS.get(pg_type, "string")


# Debezium's names for a change: create, update, delete, read (snapshot), truncate.
OPS = ("c", "u", "d", "r", "t")


@dataclass(frozen=True)
class TableName:
    """A source table, schema and name as PostgreSQL spells them."""

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Column:
    """A column of a source table, as one event's schema describes it."""

    name: str
    pg_type: str  # the source's type name, upper case: INT4, NUMERIC, _TEXT, TIMESTAMPTZ, MOOD
    kind: str  # Debezium's logical name (io.debezium.time.Date) or its base type (int64)
    optional: bool = True
    length: int | None = None  # precision of numeric(p,s), length of varchar(n)
    scale: int | None = None
    item_kind: str | None = None  # an array's item kind

    @property
    def is_array(self) -> bool:
        return self.kind == "array"


@dataclass(frozen=True)
class Change:
    """One change of one row (or a TRUNCATE of a table), in source order."""

    table: TableName
    op: str  # one of OPS
    key: tuple[str, ...]  # the key columns; empty for a table without one
    columns: tuple[Column, ...]  # of `row`; empty for a TRUNCATE
    row: dict[str, Any] | None  # after a create, update or read; before a delete
    lsn: int
    committed_ms: int  # when the source committed it (the snapshot's time for reads)
    unchanged: frozenset[str] = field(default_factory=frozenset)  # TOASTed and unchanged
    snapshot: str | None = None  # Debezium's source.snapshot: "true", "last", "incremental"…

    @property
    def key_values(self) -> tuple[Any, ...]:
        assert self.row is not None
        return tuple(self.row[name] for name in self.key)


def _column(spec: dict[str, Any]) -> Column:
    params = spec.get("parameters") or {}
    items = spec.get("items") or {}
    length = params.get(SOURCE_LENGTH)
    scale = params.get(SOURCE_SCALE)
    return Column(
        name=spec["field"],
        pg_type=str(params.get(SOURCE_TYPE, "")).upper(),
        kind=spec.get("name") or spec["type"],
        optional=bool(spec.get("optional", True)),
        length=int(length) if length not in (None, "") else None,
        scale=int(scale) if scale not in (None, "") else None,
        item_kind=(items.get("name") or items.get("type")) if items else None,
    )


def _in_range(day: date) -> bool:
    return FIRST_DAY <= day <= LAST_DAY


def _timestamp(amount: int, per_second: int) -> datetime | None:
    try:
        moment = EPOCH + timedelta(microseconds=amount * 1_000_000 // per_second)
    except OverflowError:
        return None
    return moment if _in_range(moment.date()) else None


def _time(amount: int, per_second: int) -> time:
    micros = amount * 1_000_000 // per_second
    return (datetime.min + timedelta(microseconds=micros)).time()


def decode(kind: str, value: Any, item_kind: str | None = None) -> Any:
    """Decode one value Debezium sent for a column of this kind."""
    if value is None:
        return None
    if kind == "array":
        return [decode(item_kind or "string", item) for item in value]
    if kind in ("float", "double"):
        return float(value)
    if kind == "bytes":
        return base64.b64decode(value)
    if kind == "io.debezium.time.Date":
        try:
            day = date(1970, 1, 1) + timedelta(days=int(value))
        except OverflowError:
            return None
        return day if _in_range(day) else None
    if kind == "io.debezium.time.Time":
        return _time(int(value), 1_000)
    if kind == "io.debezium.time.MicroTime":
        return _time(int(value), 1_000_000)
    if kind == "io.debezium.time.NanoTime":
        return _time(int(value), 1_000_000_000)
    if kind == "io.debezium.time.Timestamp":
        return _timestamp(int(value), 1_000)
    if kind == "io.debezium.time.MicroTimestamp":
        return _timestamp(int(value), 1_000_000)
    if kind == "io.debezium.time.NanoTimestamp":
        return _timestamp(int(value), 1_000_000_000)
    if kind == "io.debezium.time.ZonedTimestamp":
        if value in ("infinity", "-infinity"):
            return None
        moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        return moment if _in_range(moment.date()) else None
    return value


def _unchanged(column: Column, raw: Any) -> bool:
    """Tell whether Debezium sent its placeholder for an unchanged TOASTed value: the string
    for text and json, its base64 for bytea, a one-element array for text[], the string's
    bytes for an array of integers."""
    if raw is None:
        return False
    if column.kind == "bytes":
        return bool(raw == base64.b64encode(UNCHANGED.encode()).decode())
    if column.is_array:
        return bool(raw == [UNCHANGED] or raw == list(UNCHANGED.encode()))
    return bool(raw == UNCHANGED)


# Debezium's JSON converter writes {"schema":…,"payload":…}: the schema first, then the
# payload. A table's schema repeats in each of its events, so it is read once.
SCHEMA_START = '{"schema":'
PAYLOAD_START = ',"payload":'
SCHEMAS_KEPT = 512


class Reader:
    """Read Debezium's JSON events into Changes, each distinct schema parsed once."""

    def __init__(self) -> None:
        self._values: dict[str, dict[str, tuple[Column, ...]]] = {}
        self._keys: dict[str, tuple[str, ...]] = {}

    def parse(self, key: str | None, value: str | None) -> Change | None:
        """Read one event; None for what carries no change (a tombstone, a heartbeat)."""
        if value is None:
            return None
        schema_text, payload = _split(value)
        payload = json.loads(payload)
        op = payload.get("op")
        if op not in OPS:
            return None
        sides = self._values.get(schema_text)
        if sides is None:
            fields = json.loads(schema_text)["fields"]
            sides = {
                spec["field"]: tuple(_column(column) for column in spec["fields"])
                for spec in fields
                if spec["field"] in ("before", "after")
            }
            self._remember(self._values, schema_text, sides)
        key_names: tuple[str, ...] = ()
        if key is not None:
            key_schema, _ = _split(key)
            found = self._keys.get(key_schema)
            if found is None:
                found = tuple(spec["field"] for spec in json.loads(key_schema)["fields"])
                self._remember(self._keys, key_schema, found)
            key_names = found
        return _change(payload, op, sides, key_names)

    @staticmethod
    def _remember(cache: dict[str, Any], text: str, read: Any) -> None:
        if len(cache) >= SCHEMAS_KEPT:
            cache.clear()
        cache[text] = read


def _split(text: str) -> tuple[str, str]:
    """Cut a converter's JSON into its schema's text and its payload's."""
    cut = text.find(PAYLOAD_START)
    if not text.startswith(SCHEMA_START) or cut < 0 or not text.endswith("}"):
        raise ValueError(f"not a Debezium JSON event with its schema: {text[:80]!r}")
    return text[len(SCHEMA_START) : cut], text[cut + len(PAYLOAD_START) : -1]


def parse(key: str | None, value: str | None) -> Change | None:
    """Read one Debezium JSON event; None for what carries no change (a tombstone)."""
    return Reader().parse(key, value)


def _change(
    payload: dict[str, Any], op: str, sides: dict[str, tuple[Column, ...]], key: tuple[str, ...]
) -> Change:
    source = payload["source"]
    side = "before" if op == "d" else "after"
    columns: tuple[Column, ...] = ()
    row: dict[str, Any] | None = None
    unchanged: set[str] = set()
    raw_row = payload.get(side)
    if raw_row is not None:
        columns = sides[side]
        row = {}
        for column in columns:
            raw = raw_row.get(column.name)
            if raw is None:
                row[column.name] = None
            elif _unchanged(column, raw):
                unchanged.add(column.name)
                row[column.name] = None
            else:
                value = decode(column.kind, raw, column.item_kind)
                if column.pg_type == "NUMERIC" and isinstance(value, str):
                    value = NUMERIC_WORDS.get(value.upper(), value)  # as PostgreSQL spells them
                row[column.name] = value
    return Change(
        table=TableName(source["schema"], source["table"]),
        op=op,
        key=key,
        columns=columns,
        row=row,
        lsn=int(source.get("lsn") or 0),
        committed_ms=int(source.get("ts_ms") or 0),
        unchanged=frozenset(unchanged),
        snapshot=source.get("snapshot"),
    )
