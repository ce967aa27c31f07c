"""The OpenAPI 3 description of the JSON API, its bodies derived from the forms' own rules."""

from __future__ import annotations

import re
from typing import Any

from flask import current_app
from flask_wtf import FlaskForm
from wtforms import Field, FormField, PasswordField, SelectField, SelectMultipleField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp

from ..alerts.forms import MAX_BYTES, SizeField
from ..alerts.services import ALERT_ARGS, DELIVERIES_LIMIT
from ..audit.services import CURSOR, FILTER_ARGS, LIMIT, AuditPage
from ..auth.roles import SAFE_METHODS
from ..forms import WHITESPACE, EntityForm, field_names
from ..models import (
    ALERT_SETTING_KEYS,
    Alert,
    AlertSettings,
    AuditRecord,
    Delivery,
    Silence,
    SlotMetric,
    SourceState,
    WalMetric,
)
from ..monitor import history
from ..monitor.history import WalHistory
from ..shapes import Shaped, TextArg, ref, shape_of
from ..sources.forms import TABLE_NAME_MAX_LENGTH
from ..sources.services import SampleResult, SlotDropped
from ..version import __version__
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


def _field_schema(field: Field, form_class: type[FlaskForm], mode: str) -> dict[str, Any]:
    """Describe what the API accepts for one field of a form (see form_schema)."""
    optional = any(isinstance(v, Optional) for v in field.validators)
    must = any(isinstance(v, DataRequired) for v in field.validators)
    prop: dict[str, Any] = {"type": json_type(field)}
    if isinstance(field, FormField):
        # A sub-form, by its fields' names; a key left out or null is cleared, and a PATCH
        # changes only the keys it sends.
        sub_fields = {sub.short_name: _field_schema(sub, type(field.form), mode) for sub in field}
        prop = {
            "type": ["object", "null"],
            "properties": sub_fields,
            "additionalProperties": False,
        }
    elif isinstance(field, SelectMultipleField):
        prop = {"type": ["array", "null"], "items": {"type": "integer"}}  # null: empty
    elif isinstance(field, SelectField) and field.coerce is not int:
        # types-WTForms 3.2 types choices as tuples; WTForms 3.3 holds SelectChoice objects.
        values = [str(choice.value) for choice in field.choices]  # type: ignore[union-attr]
        if field.coerce is str:  # taken as written: exactly one of the choices
            prop["enum"] = values
            if "" in values:  # a blank choice: null says the same
                prop.update(type=["string", "null"], enum=[*values, None])
        else:
            # Read in any case ("pause" is PAUSE); a pattern says so where an enum cannot.
            anycase = ("".join(f"[{c.lower()}{c.upper()}]" for c in value) for value in values)
            prop["pattern"] = f"^(?:{'|'.join(anycase)})$"
            prop["examples"] = values
    elif prop["type"] == "string":
        secret = field.name in getattr(form_class, "secret_fields", ())
        needed_secret = mode == "create" and field.name in getattr(
            form_class, "required_secrets", ()
        )
        # Blank is taken by a field that need not be filled (an optional one stores NULL) and
        # by a secret (it keeps the stored one), unless a new entity must have that secret.
        blank_ok = (optional or secret or not must) and not needed_secret
        inner = _pattern(field)
        prop["pattern"] = f"^(?:{inner})?$" if blank_ok else f"^{inner}$"
        if blank_ok:
            prop["type"] = ["string", "null"]  # null is blank: NULL, or the secret kept
    elif isinstance(field, SizeField):
        # The browser also reads "5 GB"; a script sends bytes. Null: the setting is off.
        prop.update(type=["integer", "null"], minimum=1, maximum=MAX_BYTES)
    elif optional:
        prop["type"] = ["integer", "null"]
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
    if isinstance(field, FormField):
        prop["description"] = (
            "Any of these keys; one left out or null takes the global setting, and a PATCH "
            "changes only the keys it sends (null clears them all)."
        )
    return prop


def form_schema(form_class: type[FlaskForm], mode: str = "create") -> dict[str, Any]:
    """Describe what the API accepts for a form as a JSON Schema object, exactly.

    `mode` is create (POST), replace (PUT: a secret may be left out or blank to keep it) or
    patch (PATCH: every field optional). Text is taken as it is stored: no trimming or
    lowercasing (the browser's form does those for the operator, the API says so instead).
    """
    form = form_class(formdata=None, meta={"csrf": False})
    properties: dict[str, Any] = {}
    required: list[str] = []
    required_secrets = getattr(form_class, "required_secrets", ())
    for field in form:
        properties[field.name] = _field_schema(field, form_class, mode)
        must = any(isinstance(v, DataRequired) for v in field.validators)
        creating_secret = mode == "create" and field.name in required_secrets
        if mode != "patch" and ((must and field.default is None) or creating_secret):
            required.append(field.name)
    # What a GET returns and no field takes may be sent back: it is ignored.
    model = getattr(form_class, "model", None)
    for name in shape_of(model).names if model is not None else ():
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


# What replacing and deleting each named entity keeps or refuses.
_REPLACE_NOTES = {
    "sources": " (a blank secret keeps the stored one; alert_overrides left out are cleared)",
    "destinations": " (a blank secret keeps the stored one)",
    "pipelines": "",
    "channels": " (a blank or masked url, or a blank secret, keeps the stored one)",
}


def _entity_operations(title: str, plural: str) -> dict[str, dict[str, Any]]:
    """Document the six endpoints every named entity has."""
    one = ref(title)
    not_found = {"404": _error(f"No {title.lower()} with that id")}
    if plural in ("sources", "destinations"):
        deleted = {
            "summary": f"Delete a {title.lower()} no pipeline uses",
            "responses": {
                "204": {"description": "Deleted"},
                **not_found,
                "409": _error("Pipelines use it; details.pipelines names them"),
            },
        }
    else:
        deleted = {
            "summary": f"Delete a {title.lower()}"
            + (" and its delivery log" if plural == "channels" else ""),
            "responses": {"204": {"description": "Deleted"}, **not_found},
        }
    conflict = "DuplicateNameError: the name is taken"
    if plural == "pipelines":
        conflict += (
            "; or SourceBusyError: another pipeline on the same source is START or REFRESH; or "
            "SourceNotReadyError or DestinationNotReadyError: START and REFRESH wait for the "
            "source and the destination to pass their readiness checks (details.failing lists "
            "the failing ones)"
        )
    invalid = {
        "400": _error("The body is not a JSON object"),
        "409": _error(conflict),
        "415": _error("The body is not JSON"),
        "422": _error("Fields failed validation; details.fields lists each"),
    }

    def body(schema: str) -> dict[str, Any]:
        return {"requestBody": {"required": True, "content": {JSON: {"schema": ref(schema)}}}}

    return {
        f"api.list_{plural}": {
            "summary": f"List {plural} by name",
            "parameters": [TextArg("q", description="Only names containing this text").parameter()],
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
            "summary": f"Replace a {title.lower()}" + _REPLACE_NOTES[plural],
            **body(f"{title}Replace"),
            "responses": {"200": _json(one, "Saved"), **not_found, **invalid},
        },
        f"api.update_{title.lower()}": {
            "summary": f"Change some fields of a {title.lower()}",
            **body(f"{title}Patch"),
            "responses": {"200": _json(one, "Saved"), **not_found, **invalid},
        },
        f"api.delete_{title.lower()}": deleted,
    }


def _operations() -> dict[str, dict[str, Any]]:
    """Document every API endpoint, by Flask endpoint name."""
    operations: dict[str, dict[str, Any]] = {}
    for title, plural in (
        ("Source", "sources"),
        ("Destination", "destinations"),
        ("Pipeline", "pipelines"),
        ("Channel", "channels"),
    ):
        operations.update(_entity_operations(title, plural))
    run_refusals = (
        "SourceBusyError: another pipeline on the same source is START or REFRESH (they would "
        "share its replication slot; details.pipeline names it); SourceNotReadyError or "
        "DestinationNotReadyError: start and refresh wait for the source and the destination "
        "to pass their readiness checks (details.failing lists the failing check ids); a result "
        "older than one monitor interval is checked again first"
    )
    operations["api.pipeline_action"] = {
        "summary": "Set a pipeline's desired status to START or PAUSE",
        "parameters": [
            {
                "name": "action",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": ["start", "pause"]},
            },
        ],
        "responses": {
            "200": _json(ref("Pipeline"), "The pipeline"),
            "404": _error("No such pipeline"),
            "409": _error(run_refusals + ". pause is always allowed"),
        },
    }
    operations["api.refresh_pipeline"] = {
        "summary": "Set a pipeline's desired status to REFRESH: the engine snapshots the tables "
        "listed again (each one of the source's publication, with a primary key), or without "
        "a body all of them that have a primary key. A table without one is loaded as an "
        "append-only history, which REFRESH cannot repair: a REFRESH of all leaves it out "
        "(refresh_skipped lists it), and naming it is refused",
        "requestBody": {
            "required": False,
            "content": {JSON: {"schema": ref("RefreshInput")}},
        },
        "responses": {
            "200": _json(
                ref("Pipeline"),
                "The pipeline, its refresh_tables set (null: all), and refresh_skipped the "
                "tables without a primary key a REFRESH of all leaves out",
            ),
            "400": _error("The body is not a JSON object"),
            "404": _error("No such pipeline"),
            "409": _error(
                run_refusals + "; or PublicationUnreadableError: the source could not be asked "
                "which tables its publication lists and which have a primary key; or "
                "NothingToRefreshError: no table was listed and no table of the publication "
                "has a primary key (details.keyless lists them)"
            ),
            "415": _error("The body is not JSON"),
            "422": _error(
                "tables is not a list of names, names tables the publication does not list "
                "(details.unknown lists them), or names tables without a primary key "
                "(details.keyless lists them)"
            ),
        },
    }
    operations["api.verify_pipeline"] = {
        "summary": "Ask an engine process to verify the pipeline: for each table, the row "
        "counts at both ends and a value-by-value comparison of a random sample of keys "
        "(every key of a table under 10,000 rows), a differing key read again once the "
        "pipeline has loaded past the position it was read at. A Verify already under way "
        "is returned as it is",
        "requestBody": {
            "required": False,
            "content": {JSON: {"schema": ref("VerifyInput")}},
        },
        "responses": {
            "202": _json(ref("Verification"), "Asked for: the result at GET …/verify"),
            "400": _error("The body is not a JSON object"),
            "404": _error("No such pipeline"),
            "409": _error("NoEngineError: no engine process runs, and Verify runs in one"),
            "415": _error("The body is not JSON"),
            "422": _error("sample_keys is not a whole number from 1 to 100,000"),
        },
    }
    operations["api.pipeline_verification"] = {
        "summary": "The pipeline's last Verify: running, done (ok says whether every table is "
        "the same at both ends) or failed (message says why)",
        "responses": {
            "200": _json(ref("Verification"), "The Verify"),
            "404": _error("No such pipeline, or it has not been verified yet"),
        },
    }
    operations["api.pipeline_connector_config"] = {
        "summary": "The pipeline as Kafka Connect connectors: the Debezium source connector "
        "(POST /connectors) continuing where the engine stopped (snapshot.mode=no_data, a "
        "signal table), the committed offset to seed it with (PATCH /connectors/<name>/"
        "offsets, the connector stopped), and the Snowflake sink connector beside it, which "
        "Rosetta does not validate. Secrets are config-provider references, never values. "
        "Reads the publication's tables from the source",
        "responses": {
            "200": _json(ref("ConnectorConfig"), "The connectors and the offsets"),
            "404": _error("No such pipeline"),
            "409": _error(
                "NotExportableError: the source names no slot, or its publication no table; "
                "or PublicationUnreadableError: the source could not be asked which tables "
                "its publication lists"
            ),
        },
    }
    operations.update(_readiness_operations())
    operations["api.wal_metrics"] = {
        "summary": "List a source's newest WAL samples, newest first",
        "parameters": [history.SOURCE_ID.parameter(), history.SAMPLES_LIMIT.parameter()],
        "responses": {
            "200": _json({"type": "array", "items": ref("WalMetric")}, "The samples"),
            "404": _error("No such source"),
            "422": _error("A parameter is missing or out of range"),
        },
    }
    operations["api.source_slots"] = {
        "summary": "List a source's replication slots as its latest sample saw them, each with "
        "its forecast: growth per hour and when it reaches the critical threshold or is lost",
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
    operations["api.wal_history"] = {
        "summary": "A source's WAL history over a range: its samples at their own times, or, "
        "with more than max_points of them, buckets of the last, min and max values; failed "
        "samples are points with null values and their error",
        "parameters": [arg.parameter() for arg in (history.START, history.END, history.MAX_POINTS)],
        "responses": {
            "200": _json(ref("WalHistory"), "The series"),
            "404": _error("No such source"),
            "422": _error("end before start, an unreadable time, or max_points out of range"),
        },
    }
    from ..pipelines import progress

    operations["api.pipeline_progress"] = {
        "summary": "A pipeline's progress as the engine that owns it records it (every 10 s at "
        "least): state, owner, lag in bytes and seconds, rows per table, the last errors",
        "responses": {
            "200": _json(ref("Progress"), "The progress"),
            "404": _error("No such pipeline"),
        },
    }
    operations["api.pipeline_progress_history"] = {
        "summary": "A pipeline's rows loaded per minute (by operation, all tables) and its "
        "highest lag, over a range: one bucket a minute, or wider ones (whole minutes) so "
        "that there are no more than max_points",
        "parameters": [
            arg.parameter()
            for arg in (progress.RANGE, history.START, history.END, history.MAX_POINTS)
        ],
        "responses": {
            "200": _json(ref("ProgressHistory"), "The series"),
            "404": _error("No such pipeline"),
            "422": _error("end before start, an unreadable time, or a range not offered"),
        },
    }
    operations.update(_alert_operations())
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
    operations["api.audit_log"] = _audit_operation()
    operations["health"] = {
        "summary": "Health of the service and its metadata database (no sign-in needed)",
        "security": [],
        "responses": {
            "200": _json(ref("Health"), "The metadata database answers"),
            "503": _json(ref("Health"), "The metadata database does not answer"),
        },
    }
    return operations


def _readiness_operations() -> dict[str, dict[str, Any]]:
    """Document the readiness checks and the replication objects' endpoints."""
    unreachable = _error(
        "SourceUnreachableError: the source cannot be reached or signed in to within "
        "WAL_MONITOR_TIMEOUT_SECONDS; the message says why"
    )
    refused = _error(
        "SourceRefusedError: the source's server refused the statement (details.sqlstate)"
    )
    confirm = TextArg(
        "confirm", description="The object's name again: nothing is dropped without it"
    ).parameter()

    def checked_again(name: str, description: str) -> dict[str, Any]:
        """The answer of a create or drop: the object's name, and the source checked again."""
        readiness = {"oneOf": [{"type": "null"}, ref("Readiness")]}
        schema = {
            "type": "object",
            "required": [name, "readiness"],
            "properties": {name: {"type": "string"}, "readiness": readiness},
        }
        return _json(schema, f"{description}; the source checked again")

    not_json = {
        "400": _error("The body is not a JSON object"),
        "415": _error("The body is not JSON"),
    }
    return {
        "api.check_source_now": {
            "summary": "Run a source's readiness checks now, store and return the result (an "
            "unreachable source is a failed connection check, not an error)",
            "responses": {
                "200": _json(ref("Readiness"), "The checks"),
                "404": _error("No such source"),
            },
        },
        "api.check_destination": {
            "summary": "Run a destination's readiness checks now (its key, and a key-pair login "
            "to Snowflake), store and return the result",
            "responses": {
                "200": _json(ref("Readiness"), "The checks"),
                "404": _error("No such destination"),
            },
        },
        "api.source_tables": {
            "summary": "List the tables of the source's database a publication can name",
            "responses": {
                "200": _json(
                    {"type": "array", "items": {"type": "string"}}, "schema.table, by name"
                ),
                "404": _error("No such source"),
                "502": unreachable,
                "409": refused,
            },
        },
        "api.create_publication": {
            "summary": "Create the source's publication (its publication_name) on the source, "
            "for all tables or the tables listed",
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": ref("PublicationInput")}},
            },
            "responses": {
                "201": checked_again("publication", "Created"),
                "404": _error("No such source"),
                "409": refused,
                "422": _error("No such table (named in details.fields.tables), or a bad body"),
                "502": unreachable,
                **not_json,
            },
        },
        "api.drop_publication": {
            "summary": "Drop the source's publication; confirm must repeat its name",
            "parameters": [confirm],
            "responses": {
                "200": checked_again("dropped", "Dropped"),
                "404": _error("No such source, or it has no such publication"),
                "409": refused,
                "422": _error("confirm is missing or not the publication's name"),
                "502": unreachable,
            },
        },
        "api.create_slot": {
            "summary": "Create the source's logical slot (pgoutput): its slot_name, the one sent "
            "(which becomes its slot_name), or rosetta_<source name>",
            "requestBody": {
                "required": False,
                "content": {JSON: {"schema": ref("SlotInput")}},
            },
            "responses": {
                "201": checked_again("slot_name", "Created"),
                "404": _error("No such source"),
                "409": refused,
                "422": _error("Not a name PostgreSQL allows for a slot"),
                "502": unreachable,
                **not_json,
            },
        },
        "api.drop_slot": {
            "summary": "Drop any inactive slot of the source's server; confirm must repeat its "
            "name. The source is sampled at once after",
            "parameters": [
                {
                    "name": "slot_name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                },
                confirm,
            ],
            "responses": {
                "200": _json(ref("SlotDropped"), "Dropped"),
                "404": _error("No such source, or no such slot on its server"),
                "409": _error(
                    "SlotActiveError: a consumer is connected (details.pid, "
                    "details.application_name); or SourceRefusedError"
                ),
                "422": _error("confirm is missing or not the slot's name, or a bad slot name"),
                "502": unreachable,
            },
        },
    }


def _readiness_schemas() -> dict[str, Any]:
    from ..readiness import STATUSES

    text = {"type": "string"}
    return {
        "Check": {
            "type": "object",
            "required": ["id", "status", "title", "observed", "fix"],
            "additionalProperties": False,
            "properties": {
                "id": {**text, "description": "Stable: e.g. wal_level, slot, login"},
                "status": {"type": "string", "enum": list(STATUSES)},
                "title": text,
                "observed": {**text, "description": "What the check saw"},
                "fix": {
                    "type": ["string", "null"],
                    "description": "When it does not pass: the SQL or setting to apply",
                },
            },
        },
        "Readiness": {
            "type": "object",
            "required": ["ready", "checked_at", "checks"],
            "additionalProperties": False,
            "properties": {
                "ready": {"type": "boolean", "description": "No check failed"},
                "checked_at": {"type": "string", "format": "date-time"},
                "checks": {"type": "array", "items": ref("Check")},
            },
        },
        "PublicationInput": {
            "type": "object",
            "additionalProperties": False,
            "description": '{"all_tables": true}, or {"tables": ["public.orders"]}',
            "properties": {
                "all_tables": {"type": "boolean"},
                "tables": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": TABLE_NAME_MAX_LENGTH,
                    },
                },
            },
        },
        "VerifyInput": {
            "type": "object",
            "additionalProperties": False,
            "description": '{"sample_keys": 1000}; {} or no body: 1,000 keys per table',
            "properties": {
                "sample_keys": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 100_000,
                    "description": "Keys compared per table (every key of a table under "
                    "10,000 rows)",
                },
            },
        },
        "RefreshInput": {
            "type": "object",
            "additionalProperties": False,
            "description": '{"tables": ["public.orders"]}; {} or no body: every table with a '
            "primary key",
            "properties": {
                "tables": {
                    "type": ["array", "null"],
                    "minItems": 1,
                    "items": {"type": "string", "minLength": 1},
                    "description": "Tables of the source's publication, as schema.table, "
                    "each with a primary key",
                },
            },
        },
        "SlotInput": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"slot_name": {"type": "string", "pattern": "^[a-z0-9_]{1,63}$"}},
        },
    }


def _audit_operation() -> dict[str, Any]:
    """Document the audit log's listing."""
    return {
        "summary": "List audit records, newest first, a page at a time: pass next_cursor as "
        "cursor for the next page",
        "parameters": [arg.parameter() for arg in (*FILTER_ARGS, LIMIT, CURSOR)],
        "responses": {
            "200": _json(shape_of(AuditPage).schema(), "One page of the log"),
            "422": _error("A parameter is unreadable or out of range; details.fields names it"),
        },
    }


def _alert_operations() -> dict[str, dict[str, Any]]:
    """Document the alerts, silences, channel actions and the rule settings."""
    invalid = {
        "400": _error("The body is not a JSON object"),
        "415": _error("The body is not JSON"),
        "422": _error("Fields failed validation; details.fields lists each"),
    }

    def body(schema: str) -> dict[str, Any]:
        return {"requestBody": {"required": True, "content": {JSON: {"schema": ref(schema)}}}}

    alerts = {"type": "array", "items": ref("Alert")}
    no_alert = {"404": _error("No alert with that id")}
    no_channel = {"404": _error("No channel with that id")}
    return {
        "api.list_alerts": {
            "summary": "List alerts, a page at a time: with state=firing the firing ones worst "
            "first (critical, then the oldest), else the newest first",
            "parameters": [arg.parameter() for arg in ALERT_ARGS],
            "responses": {
                "200": {
                    **_json(alerts, "One page of the alerts"),
                    "headers": {
                        "X-Total-Count": {
                            "description": "How many alerts match, on every page",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9]+$"},
                        }
                    },
                },
                "422": _error(
                    "A parameter is unknown, unreadable or out of range; details.fields names it"
                ),
            },
        },
        "api.get_alert_by_id": {
            "summary": "Read an alert",
            "responses": {"200": _json(ref("Alert"), "The alert"), **no_alert},
        },
        "api.acknowledge_alert": {
            "summary": "Acknowledge a firing alert: no repeats until it resolves (who and when "
            "are kept)",
            "responses": {
                "200": _json(ref("Alert"), "The alert, acknowledged"),
                **no_alert,
                "409": _error("The alert has resolved: only a firing one can be acknowledged"),
            },
        },
        "api.list_silences": {
            "summary": "List the silences in force, ending soonest first",
            "responses": {"200": _json({"type": "array", "items": ref("Silence")}, "Silences")},
        },
        "api.create_silence_now": {
            "summary": "Silence a source's notifications, or one rule's, until a time (the "
            "alerts still show, marked silenced)",
            **body("SilenceInput"),
            "responses": {
                "201": {
                    **_json(ref("Silence"), "The new silence"),
                    "links": {
                        "EndSilence": {
                            "operationId": "api_delete_silence_delete",
                            "parameters": {"silence_id": "$response.body#/id"},
                        }
                    },
                },
                **invalid,
            },
        },
        "api.delete_silence": {
            "summary": "End a silence now",
            "responses": {
                "204": {"description": "Ended"},
                "404": _error("No silence with that id"),
            },
        },
        "api.test_channel_now": {
            "summary": "Send a test notification to a channel now (waits for it: up to 5 s for "
            "a webhook)",
            "responses": {
                "200": _json(ref("Delivery"), "How it went: ok, the status code or the error"),
                **no_channel,
            },
        },
        "api.channel_deliveries": {
            "summary": "A channel's delivery log, newest first",
            "parameters": [DELIVERIES_LIMIT.parameter()],
            "responses": {
                "200": _json({"type": "array", "items": ref("Delivery")}, "The attempts"),
                **no_channel,
                "422": _error("limit is out of range"),
            },
        },
        "api.get_alert_settings": {
            "summary": "Read the global alert rule settings (null: the rule is off)",
            "responses": {"200": _json(ref("AlertSettings"), "The settings")},
        },
        "api.replace_alert_settings": {
            "summary": "Replace the global alert rule settings: every key, whole numbers of at "
            "least 1, null turning its rule off; the warning threshold below the critical one",
            **body("AlertSettingsInput"),
            "responses": {"200": _json(ref("AlertSettings"), "Saved"), **invalid},
        },
    }


def _response_schema(model: type[Shaped]) -> dict[str, Any]:
    """A model's shape as a schema, where a nullable column with an enum lists null too."""
    schema = shape_of(model).schema()
    for prop in schema["properties"].values():
        if "enum" in prop and "null" in prop.get("type", ()) and None not in prop["enum"]:
            prop["enum"] = [*prop["enum"], None]
    return schema


def _alert_schemas() -> dict[str, Any]:
    from ..alerts.forms import AlertSettingsForm, SilenceForm

    schemas = {
        model.api_name: _response_schema(model)
        for model in (Alert, Silence, Delivery, AlertSettings, AuditRecord)
    }
    schemas["AlertSettingsInput"] = {
        **form_schema(AlertSettingsForm, "replace"),
        "required": list(ALERT_SETTING_KEYS),
    }
    schemas["SilenceInput"] = form_schema(SilenceForm, "create")
    schemas["AlertOverrides"] = {
        "type": "object",
        "additionalProperties": False,
        "required": list(ALERT_SETTING_KEYS),
        "properties": {key: {"type": ["integer", "null"]} for key in ALERT_SETTING_KEYS},
        "description": "The alert settings this source sets for itself; null takes the global "
        "setting",
    }
    return schemas


def _schemas() -> dict[str, Any]:
    from ..channels.forms import ChannelForm
    from ..destinations.forms import DestinationForm
    from ..pipelines.forms import PipelineForm
    from ..sources.forms import SourceForm

    schemas: dict[str, Any] = {**_alert_schemas(), **_readiness_schemas()}
    form_class: type[EntityForm]
    for form_class in (SourceForm, DestinationForm, PipelineForm, ChannelForm):
        shape = shape_of(form_class.model)
        # What the API returns but no form field takes is set by Rosetta alone.
        read_only = frozenset(shape.names) - field_names(form_class)
        schemas[shape.name] = shape.schema(read_only)
        schemas[f"{shape.name}Input"] = form_schema(form_class, "create")
        schemas[f"{shape.name}Replace"] = form_schema(form_class, "replace")
        schemas[f"{shape.name}Patch"] = form_schema(form_class, "patch")
    from ..engines import EngineState
    from ..pipelines.progress import Progress, ProgressHistory
    from ..pipelines.services import ConnectorConfig
    from ..pipelines.verify import Verification

    shown_shapes = (WalMetric, SlotMetric, SourceState, SampleResult, SlotDropped, WalHistory)
    answers = (EngineState, ConnectorConfig, Progress, ProgressHistory, Verification)
    for shown in (*shown_shapes, *answers):
        schemas[shown.api_name] = shape_of(shown).schema()
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
        "required": [
            "sources",
            "slots",
            "pipelines",
            "worst_slot",
            "pipelines_by_state",
            "pipelines_behind",
            "worst_lag",
        ],
        "properties": {
            "sources": {**counts, "description": "by monitor status"},
            "slots": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"total": {"type": "integer"}, "inactive": {"type": "integer"}},
                "description": "each slot counted once per server",
            },
            "pipelines": {**counts, "description": "by desired status"},
            "worst_slot": {"oneOf": [{"type": "null"}, ref("SlotSummary")]},
            "pipelines_by_state": {
                **counts,
                "description": "by what their engines are doing (stopped: no engine owns it)",
            },
            "pipelines_behind": {
                "type": "integer",
                "minimum": 0,
                "description": "pipelines a live engine owns that are behind by more than "
                "their pipeline_lag alert's warning threshold",
            },
            "worst_lag": {
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["pipeline_id", "pipeline", "lag_seconds", "lag_bytes"],
                        "properties": {
                            "pipeline_id": {"type": "integer"},
                            "pipeline": {"type": "string"},
                            "lag_seconds": {"type": "number"},
                            "lag_bytes": {"type": ["integer", "null"]},
                        },
                    },
                ],
                "description": "the pipeline furthest behind in seconds of those a live "
                "engine owns; null when none",
            },
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
                if method not in SAFE_METHODS:
                    op["responses"]["403"] = _error(
                        "PermissionDeniedError: the token's user has too small a role (viewer, "
                        "operator, admin), or the token is read-only"
                    )
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
