"""The OpenAPI 3 description of the JSON API, its bodies derived from the forms' own rules."""

from __future__ import annotations

import re
from typing import Any

from flask import current_app
from wtforms import Field, PasswordField, SelectField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp

from .. import __version__
from ..forms import MAX_INT, WHITESPACE, EntityForm, field_names
from ..models import SlotMetric, SourceState, WalMetric
from ..shapes import ref, shape_of
from .bodies import json_type

JSON = "application/json"


# Text with no white space at either end and no NUL character: what a trimmed field keeps.
TRIMMED = rf"[^{WHITESPACE}\x00](?:[^\x00]*[^{WHITESPACE}\x00])?"


def _pattern(field: Field) -> str:
    """Return the regular expression of every text value the field stores as sent."""
    for validator in field.validators:
        if isinstance(validator, Regexp):
            return str(validator.regex.pattern).removeprefix("^").removesuffix("$")
    if isinstance(field, PasswordField):
        return r"[^\x00]*"  # kept as typed: only NUL, which PostgreSQL cannot store, is refused
    return TRIMMED


def form_schema(form_class: type[EntityForm], mode: str = "create") -> dict[str, Any]:
    """Describe what the API accepts for a form as a JSON Schema object, exactly.

    `mode` is create (POST), replace (PUT: a secret may be left out or blank to keep it) or
    patch (PATCH: every field optional). Text is taken as it is stored: no trimming or
    lowercasing (the browser's form does those for the operator, the API says so instead).
    """
    form = form_class(formdata=None, meta={"csrf": False})
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in form:
        optional = any(isinstance(v, Optional) for v in field.validators)
        must = any(isinstance(v, DataRequired) for v in field.validators)
        prop: dict[str, Any] = {"type": json_type(field)}
        if isinstance(field, SelectField) and field.coerce is not int:
            # types-WTForms 3.2 types choices as tuples; WTForms 3.3 holds SelectChoice objects.
            values = [str(choice.value) for choice in field.choices]  # type: ignore[union-attr]
            # Read in any case ("pause" is PAUSE); a pattern says so where an enum cannot.
            anycase = ("".join(f"[{c.lower()}{c.upper()}]" for c in value) for value in values)
            prop["pattern"] = f"^(?:{'|'.join(anycase)})$"
            prop["examples"] = values
        elif prop["type"] == "string":
            secret = field.name in form_class.secret_fields
            needed_secret = mode == "create" and field.name in form_class.required_secrets
            # Blank is taken by an optional field (it stores NULL) and by a secret (it keeps
            # the stored one), unless a new entity must have that secret.
            blank_ok = optional or (secret and not needed_secret)
            inner = _pattern(field)
            prop["pattern"] = f"^(?:{inner})?$" if blank_ok else f"^{inner}$"
            if blank_ok:
                prop["type"] = ["string", "null"]  # null is blank: NULL, or the secret kept
        if isinstance(field, PasswordField):
            prop.update(format="password", writeOnly=True)
        for validator in field.validators:
            if isinstance(validator, Length) and validator.max > 0:
                prop["maxLength"] = validator.max
            elif isinstance(validator, NumberRange):
                if validator.min is not None:
                    prop["minimum"] = validator.min
                if validator.max is not None:
                    prop["maximum"] = validator.max
        if must and prop["type"] == "integer":
            prop["minimum"] = max(prop.get("minimum", 1), 1)  # 0 counts as missing
        if field.default is not None:
            prop["default"] = field.default
        if field.description:
            prop["description"] = field.description
        properties[field.name] = prop
        creating_secret = mode == "create" and field.name in form_class.required_secrets
        if mode != "patch" and ((must and field.default is None) or creating_secret):
            required.append(field.name)
    # What a GET returns and no field takes may be sent back: it is ignored.
    for name in shape_of(form_class.model).names:
        properties.setdefault(name, {"readOnly": True, "description": "Ignored when sent."})
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(ref("Error"), description)


def _entity_operations(title: str, plural: str) -> dict[str, dict[str, Any]]:
    """Document the six endpoints every named entity has."""
    one = ref(title)
    not_found = {"404": _error(f"No {title.lower()} with that id")}
    invalid = {
        "400": _error("The body is not a JSON object"),
        "409": _error("The name is taken"),
        "415": _error("The body is not JSON"),
        "422": _error("Fields failed validation; details.fields lists each"),
    }

    def body(schema: str) -> dict[str, Any]:
        return {"requestBody": {"required": True, "content": {JSON: {"schema": ref(schema)}}}}

    return {
        f"api.list_{plural}": {
            "summary": f"List {plural} by name",
            "parameters": [
                {
                    "name": "q",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "Only names containing this text",
                }
            ],
            "responses": {"200": _json({"type": "array", "items": one}, f"The {plural}")},
        },
        f"api.create_{title.lower()}": {
            "summary": f"Create a {title.lower()}",
            **body(f"{title}Input"),
            "responses": {"201": _json(one, f"The new {title.lower()}"), **invalid},
        },
        f"api.get_{title.lower()}": {
            "summary": f"Read a {title.lower()}",
            "responses": {"200": _json(one, f"The {title.lower()}"), **not_found},
        },
        f"api.replace_{title.lower()}": {
            "summary": f"Replace a {title.lower()}"
            + ("" if plural == "pipelines" else " (a blank secret keeps the stored one)"),
            **body(f"{title}Replace"),
            "responses": {"200": _json(one, "Saved"), **not_found, **invalid},
        },
        f"api.update_{title.lower()}": {
            "summary": f"Change some fields of a {title.lower()}",
            **body(f"{title}Patch"),
            "responses": {"200": _json(one, "Saved"), **not_found, **invalid},
        },
        f"api.delete_{title.lower()}": {
            "summary": f"Delete a {title.lower()}"
            + ("" if plural == "pipelines" else " no pipeline uses"),
            "responses": {
                "204": {"description": "Deleted"},
                **not_found,
                "409": _error("Pipelines use it; details.pipelines names them"),
            },
        },
    }


def _operations() -> dict[str, dict[str, Any]]:
    """Document every API endpoint, by Flask endpoint name."""
    operations: dict[str, dict[str, Any]] = {}
    for title, plural in (
        ("Source", "sources"),
        ("Destination", "destinations"),
        ("Pipeline", "pipelines"),
    ):
        operations.update(_entity_operations(title, plural))
    operations["api.pipeline_action"] = {
        "summary": "Set a pipeline's desired status to START, PAUSE or REFRESH",
        "parameters": [
            {
                "name": "action",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": ["start", "pause", "refresh"]},
            },
        ],
        "responses": {
            "200": _json(ref("Pipeline"), "The pipeline"),
            "404": _error("No such pipeline"),
        },
    }
    operations["api.wal_metrics"] = {
        "summary": "List a source's newest WAL samples, newest first",
        "parameters": [
            {
                "name": "source_id",
                "in": "query",
                "required": True,
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
            },
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
            },
        ],
        "responses": {
            "200": _json({"type": "array", "items": ref("WalMetric")}, "The samples"),
            "404": _error("No such source"),
            "422": _error("A parameter is missing or out of range"),
        },
    }
    operations["api.source_slots"] = {
        "summary": "List a source's replication slots as its latest sample saw them",
        "responses": {
            "200": _json({"type": "array", "items": ref("Slot")}, "The slots, by name"),
            "404": _error("No such source"),
        },
    }
    operations["api.sample_source"] = {
        "summary": "Sample a source now (by hand: a failure never lengthens its backoff)",
        "responses": {
            "200": _json(ref("SampleResult"), "The sample, or why it failed, and the state"),
            "404": _error("No such source"),
        },
    }
    operations["api.summary"] = {
        "summary": "The dashboard's counts: sources and pipelines by status, slots once per "
        "server, and the worst slot",
        "responses": {"200": _json(ref("Summary"), "The counts")},
    }
    moment = "ISO-8601 UTC (2026-01-14T00:00:00Z) or relative to now (30m, 24h, 7d)"
    operations["api.wal_history"] = {
        "summary": "A source's WAL history over a range: its samples at their own times, or, "
        "with more than max_points of them, buckets of the last, min and max values; failed "
        "samples are points with null values and their error",
        "parameters": [
            {
                "name": "start",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": f"{moment}; default end minus 24h",
            },
            {
                "name": "end",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": f"{moment}; default now",
            },
            {
                "name": "max_points",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": 5000, "default": 1000},
            },
        ],
        "responses": {
            "200": _json(ref("WalHistory"), "The series"),
            "404": _error("No such source"),
            "422": _error("end before start, an unreadable time, or max_points out of range"),
        },
    }
    operations["metrics"] = {
        "summary": "The monitor's figures in Prometheus text format "
        "(no sign-in needed when METRICS_PUBLIC=true)",
        "responses": {
            "200": {
                "description": "Gauges per source, per slot and for the sampler",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    }
    operations["api.openapi"] = {
        "summary": "This document",
        "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document")},
    }
    operations["health"] = {
        "summary": "Health of the service and its metadata database (no sign-in needed)",
        "security": [],
        "responses": {
            "200": _json(ref("Health"), "The metadata database answers"),
            "503": _json(ref("Health"), "The metadata database does not answer"),
        },
    }
    return operations


def _schemas() -> dict[str, Any]:
    from ..destinations.forms import DestinationForm
    from ..pipelines.forms import PipelineForm
    from ..sources.forms import SourceForm

    schemas: dict[str, Any] = {}
    for form_class in (SourceForm, DestinationForm, PipelineForm):
        shape = shape_of(form_class.model)
        # What the API returns but no form field takes is set by Rosetta alone.
        read_only = frozenset(shape.names) - field_names(form_class)
        schemas[shape.name] = shape.schema(read_only)
        schemas[f"{shape.name}Input"] = form_schema(form_class, "create")
        schemas[f"{shape.name}Replace"] = form_schema(form_class, "replace")
        schemas[f"{shape.name}Patch"] = form_schema(form_class, "patch")
    integer = {"type": "integer"}
    moment = {"type": "string", "format": "date-time"}
    for model in (WalMetric, SlotMetric, SourceState):
        schemas[model.api_name] = shape_of(model).schema()
    figure = {"type": "array", "items": {"type": ["number", "null"]}}
    kinds: dict[str, Any] = {"last": figure, "min": figure, "max": figure}
    figures: dict[str, Any] = {
        "type": "object",
        "required": ["last", "min", "max"],
        "properties": kinds,
        "description": "One value per time: the last sample's (the line), and the bucket's "
        "min and max (a band); equal when the points are raw samples; null where it failed",
    }
    slot_series = {
        **figures,
        "required": ["database", "own", "last", "min", "max"],
        "properties": {
            **kinds,
            "database": {"type": ["string", "null"]},
            "own": {"type": "boolean", "description": "a slot of the source's own database"},
        },
        "additionalProperties": False,
    }
    schemas["WalHistory"] = {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "source_id",
            "start",
            "end",
            "bucket_seconds",
            "times",
            "errors",
            "series",
            "slots",
            "other_slots",
        ],
        "properties": {
            "source_id": integer,
            "start": moment,
            "end": moment,
            "bucket_seconds": {
                "type": "integer",
                "description": "0: every point is a sample at its own time; else the width of "
                "the buckets, whose edges are multiples of it since 1970",
            },
            "times": {
                "type": "array",
                "items": moment,
                "description": "each point's time: its sample's, or its bucket's last sample's",
            },
            "errors": {
                "type": "array",
                "items": {"type": ["string", "null"]},
                "description": "at each time, null, or why the sample failed",
            },
            "series": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "size_bytes": figures,
                    "retained_bytes": figures,
                    "wal_rate_bytes_per_second": figures,
                },
            },
            "slots": {
                "type": "object",
                "description": "the slots of the source's database and the 10 others of its "
                "server that retain the most",
                "additionalProperties": slot_series,
            },
            "other_slots": {
                "oneOf": [
                    {"type": "null"},
                    {
                        **figures,
                        "required": ["count", "last", "min", "max"],
                        "properties": {**kinds, "count": integer},
                    },
                ],
                "description": "the server's remaining slots, summed",
            },
        },
    }
    slot = ref("Slot")["$ref"]
    schemas["SlotSummary"] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "source_id": {"type": ["integer", "null"]},
            "server": {"type": "string", "description": "system_identifier, else host:port"},
            "slot_name": {"type": "string"},
            "database": {"type": ["string", "null"]},
            "retained_bytes": {"type": ["integer", "null"]},
            "active": {"type": "boolean"},
            "inactive_since": {"type": ["string", "null"], "format": "date-time"},
            "wal_status": {"type": ["string", "null"]},
        },
        "description": f"A slot, as in {slot}, with its server",
    }
    counts = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
    schemas["Summary"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["sources", "slots", "pipelines", "worst_slot"],
        "properties": {
            "sources": {**counts, "description": "by monitor status"},
            "slots": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"total": integer, "inactive": integer},
                "description": "each slot counted once per server",
            },
            "pipelines": {**counts, "description": "by desired status"},
            "worst_slot": {"oneOf": [{"type": "null"}, ref("SlotSummary")]},
        },
    }
    schemas["SampleResult"] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["ok", "error", "sample", "monitor"],
        "properties": {
            "ok": {"type": "boolean"},
            "error": {"type": ["string", "null"]},
            "sample": {"oneOf": [{"type": "null"}, ref("WalMetric")]},
            "monitor": {"oneOf": [{"type": "null"}, ref("MonitorState")]},
        },
    }
    schemas["Health"] = {
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["ok", "error"]},
            "version": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time"},
            "checks": {"type": "object"},
        },
    }
    schemas["Error"] = {
        "type": "object",
        "required": ["error", "message", "details", "timestamp"],
        "properties": {
            "error": {"type": "string", "examples": ["EntityNotFoundError"]},
            "message": {"type": "string"},
            "details": {"type": "object"},
            "timestamp": {"type": "string", "format": "date-time"},
        },
    }
    return schemas


def build_spec() -> dict[str, Any]:
    """Build the OpenAPI document from the app's routes; undocumented routes are left out."""
    operations = _operations()
    paths: dict[str, dict[str, Any]] = {}
    for rule in current_app.url_map.iter_rules():
        operation = operations.get(rule.endpoint)
        if operation is None:
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        documented = {param["name"] for param in operation.get("parameters", [])}
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}
            for name in sorted(rule.arguments - documented)
        ]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op = {
                "operationId": rule.endpoint.replace(".", "_") + "_" + method.lower(),
                **operation,
            }
            op["parameters"] = parameters + operation.get("parameters", [])
            if op.get("security") != []:
                op["responses"] = {
                    **operation["responses"],
                    "401": _error("Not signed in and no valid token"),
                }
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Rosetta API",
            "version": __version__,
            "description": "Manage CDC sources, destinations and pipelines. Send "
            "Authorization: Bearer <token> (create one on your account page or with "
            "flask tokens create). Every error answers the same JSON envelope.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
