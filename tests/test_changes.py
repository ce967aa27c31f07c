"""Debezium's JSON events read into changes: the placeholder of an unchanged TOASTed value in
each of its forms, decoded values, and each schema read once."""

from __future__ import annotations

import base64
import json
from typing import Any

from rosetta_web.engine.changes import UNCHANGED, Reader, parse

SOURCE = {"schema": "public", "table": "docs", "lsn": 42, "ts_ms": 1000, "snapshot": "false"}


def event(columns: dict[str, dict[str, Any]], after: dict[str, Any], op: str = "u") -> str:
    """A Debezium JSON event (schema first, then payload) of table public.docs."""
    fields = [
        {**spec, "field": name, "optional": True, "parameters": spec.get("parameters", {})}
        for name, spec in columns.items()
    ]
    schema = {
        "type": "struct",
        "fields": [
            {"type": "struct", "fields": fields, "optional": True, "field": "before"},
            {"type": "struct", "fields": fields, "optional": True, "field": "after"},
            {"type": "struct", "fields": [], "field": "source"},
            {"type": "string", "field": "op"},
        ],
    }
    payload = {"before": None, "after": after, "source": SOURCE, "op": op}
    return json.dumps({"schema": schema, "payload": payload}, separators=(",", ":"))


KEY = json.dumps(
    {"schema": {"type": "struct", "fields": [{"type": "int32", "field": "id"}]}, "payload": {}},
    separators=(",", ":"),
)
TOASTABLE = {
    "id": {"type": "int32", "parameters": {"__debezium.source.column.type": "INT4"}},
    "body": {"type": "string", "parameters": {"__debezium.source.column.type": "TEXT"}},
    "doc": {
        "type": "string",
        "name": "io.debezium.data.Json",
        "parameters": {"__debezium.source.column.type": "JSONB"},
    },
    "blob": {"type": "bytes", "parameters": {"__debezium.source.column.type": "BYTEA"}},
    "tags": {
        "type": "array",
        "items": {"type": "string"},
        "parameters": {"__debezium.source.column.type": "_TEXT"},
    },
    "scores": {
        "type": "array",
        "items": {"type": "int32"},
        "parameters": {"__debezium.source.column.type": "_INT4"},
    },
}


def test_each_form_of_the_unchanged_placeholder_is_read_as_unchanged():
    """Debezium's placeholder for an unchanged TOASTed value takes the column's form: the
    string for text and json, its base64 for bytea, a one-element array for text[], the
    string's byte values for int[]. Each is told apart from a real value."""
    placeholder = {
        "id": 1,
        "body": UNCHANGED,
        "doc": UNCHANGED,
        "blob": base64.b64encode(UNCHANGED.encode()).decode(),
        "tags": [UNCHANGED],
        "scores": list(UNCHANGED.encode()),
    }
    change = parse(KEY, event(TOASTABLE, placeholder))
    assert change is not None and change.key == ("id",)
    assert change.unchanged == {"body", "doc", "blob", "tags", "scores"}
    assert change.row == {
        "id": 1,
        "body": None,
        "doc": None,
        "blob": None,
        "tags": None,
        "scores": None,
    }
    real = {
        "id": 2,
        "body": "text",
        "doc": '{"a": 1}',
        "blob": base64.b64encode(b"\x00\xff").decode(),
        "tags": ["a", UNCHANGED + "!"],
        "scores": [1, 2],
    }
    change = parse(KEY, event(TOASTABLE, real))
    assert change is not None and change.unchanged == frozenset()
    assert change.row == {
        "id": 2,
        "body": "text",
        "doc": '{"a": 1}',
        "blob": b"\x00\xff",
        "tags": ["a", UNCHANGED + "!"],
        "scores": [1, 2],
    }


def test_a_reader_gives_what_a_fresh_parse_gives_for_every_event():
    """The reader that keeps each schema gives the same changes as reading each event whole,
    for a sequence of events of two schemas, a tombstone and a truncate."""
    reader = Reader()
    wider = {**TOASTABLE, "extra": {"type": "int64", "parameters": {}}}
    events = [
        (KEY, event(TOASTABLE, {"id": 1, "body": "a"})),
        (KEY, event(wider, {"id": 2, "body": "b", "extra": 5})),
        (KEY, event(TOASTABLE, {"id": 3, "body": "c"}, op="c")),
        (KEY, None),
        (None, event({}, None, op="t")),  # type: ignore[arg-type]
    ]
    for key, value in events:
        assert reader.parse(key, value) == parse(key, value)
    assert reader.parse(KEY, events[1][1]).row["extra"] == 5  # type: ignore[union-attr]
    assert parse(None, events[4][1]).op == "t"  # type: ignore[union-attr]
