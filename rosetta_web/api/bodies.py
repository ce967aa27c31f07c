"""Reading a JSON request body and feeding it to the form that validates the browser's input."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_wtf import FlaskForm
from werkzeug.datastructures import MultiDict
from wtforms import (
    Field,
    FormField,
    IntegerField,
    PasswordField,
    SelectField,
    SelectMultipleField,
)

from ..alerts.forms import MAX_BYTES, SizeField
from ..errors import ApiError
from ..forms import field_names, is_unicode
from ..shapes import shape_of
from ..sources.forms import TABLE_NAME_MAX_LENGTH


def json_body() -> dict[str, Any]:
    """Return the request's JSON object, or raise the envelope's 400/415 error."""
    if not request.is_json:
        raise ApiError(
            415,
            "Send the body as JSON with Content-Type: application/json",
            {"content_type": request.content_type or ""},
        )
    try:
        payload = request.get_json(silent=True)
    except RecursionError:
        # Python's parser recurses once per level and gives up at the recursion limit (about
        # 1,000 levels) with RecursionError, which Flask's silent=True does not catch.
        raise ApiError(400, "The request body is nested too deeply to read") from None
    if payload is None:
        raise ApiError(400, "The request body is not valid JSON")
    if not isinstance(payload, dict):
        raise ApiError(400, "The request body must be a JSON object")
    return payload


def json_type(field: Field) -> str:
    """Name the JSON type a form field takes in the API: integer, array (of integers), object
    (a sub-form, by its fields' names), or string."""
    if isinstance(field, FormField):
        return "object"
    if isinstance(field, SelectMultipleField):
        return "array"
    if isinstance(field, IntegerField | SizeField):
        return "integer"  # a size, too: the browser may type "5 GB", a script sends bytes
    if isinstance(field, SelectField) and field.coerce is int:
        return "integer"
    return "string"


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_errors(field: Field, value: Any) -> list[str] | None:
    """Say why a JSON value does not fit a (non-object) field, or None when it does."""
    kind = json_type(field)
    if value is None:
        return None
    if kind == "integer":
        if not _is_whole(value):
            return ["Must be a whole number."]
        if isinstance(field, SizeField) and not 1 <= value <= MAX_BYTES:
            return [f"Enter a whole number of bytes from 1 to {MAX_BYTES}."]
    elif kind == "array":
        if not isinstance(value, list) or not all(map(_is_whole, value)):
            return ["Must be a list of whole numbers."]
    elif not isinstance(value, str):
        return ["Must be a string."]
    elif not is_unicode(value):
        # JSON may escape half of a UTF-16 pair ("\ud800"): no database can store it.
        return ["Must be valid Unicode text (it holds a lone surrogate)."]
    return None


def altered_by_filters(form: FlaskForm, payload: dict[str, Any]) -> dict[str, list[str]]:
    """Find the text values the form's filters would change: the API stores what it is sent.

    The browser form trims and lowercases for the operator; a script gets told instead, so
    what the OpenAPI document accepts is exactly what is stored. A secret is only checked for
    white space: its value is never repeated back.
    """
    secret = set(getattr(form, "secret_fields", ()))
    errors: dict[str, list[str]] = {}
    for key, raw in payload.items():
        if not isinstance(raw, str) or key not in form or isinstance(form[key], PasswordField):
            continue
        kept = form[key].data
        if raw != raw.strip():
            errors[key] = ["Remove the white space at its start and end."]
        elif key in secret:
            continue  # the form may blank it on purpose (the masked URL sent back: keep it)
        elif isinstance(form[key], SelectField) and isinstance(kept, str):
            continue  # a choice is read in any case: "pause" is PAUSE
        elif raw and isinstance(kept, str) and kept != raw:
            errors[key] = [f"Send it as it is stored: {kept!r}."]
    return errors


def _read_only(form_class: type[FlaskForm]) -> set[str]:
    """Name what a GET response holds that no field takes: sent back, it is ignored."""
    model = getattr(form_class, "model", None)
    if model is None:
        return set()
    return set(shape_of(model).names) - field_names(form_class)


def formdata_from_json(
    form_class: type[FlaskForm], payload: dict[str, Any], base: dict[str, Any] | None = None
) -> tuple[MultiDict[str, str], dict[str, list[str]]]:
    """Turn a JSON object into form data for `form_class`, and the fields no field accepts
    (unknown, or of the wrong JSON type), which are left out of the form data.

    `base` holds the current values for a partial update (PATCH): the payload overrides them,
    and an object (a sub-form) key by key. A null clears a field, as a blank form field does:
    optional fields become NULL, required ones fail validation, secrets keep their stored
    value, a list becomes empty and an object has every key cleared. A sub-form's fields are
    named `field.key` in the errors, as the form names them.
    """
    form = form_class(formdata=None, meta={"csrf": False})
    read_only = _read_only(form_class)
    errors: dict[str, list[str]] = {}
    for key, value in payload.items():
        if key in read_only:
            continue
        if key not in form:
            errors[key] = ["Unknown field."]
            continue
        field = form[key]
        if not isinstance(field, FormField):
            problem = _type_errors(field, value)
            if problem:
                errors[key] = problem
        elif value is not None and not isinstance(value, dict):
            errors[key] = ["Must be an object."]
        else:
            for sub, sub_value in (value or {}).items():
                if sub not in field.form:
                    errors[f"{key}.{sub}"] = ["Unknown field."]
                    continue
                problem = _type_errors(field.form[sub], sub_value)
                if problem:
                    errors[f"{key}.{sub}"] = problem
    merged = {**(base or {}), **payload}
    data: MultiDict[str, str] = MultiDict()
    for key, value in merged.items():
        if key in read_only or key not in form or key in errors:
            continue
        field = form[key]
        kind = json_type(field)
        if isinstance(field, FormField):
            if value is None:  # null: every key cleared (the global setting), not left out
                inner: dict[str, Any] = dict.fromkeys(field.form._fields)
            elif key in payload and base:  # PATCH: the keys sent change, the others stay
                inner = {**(base.get(key) or {}), **value}
            else:
                inner = dict(value)
            for sub, sub_value in inner.items():
                if sub in field.form and f"{key}.{sub}" not in errors:
                    data[field.form[sub].name] = "" if sub_value is None else str(sub_value)
        elif kind == "array":
            data.setlist(key, [str(item) for item in value or []])
        else:
            data[key] = "" if value is None else str(value)
    return data, errors


def publication_formdata(
    payload: dict[str, Any],
) -> tuple[MultiDict[str, str], dict[str, list[str]]]:
    """Turn {"all_tables": true} or {"tables": ["public.orders"]} into PublicationForm's data
    (scope all, or some with its tables), or name the first field that is not as documented."""
    unknown = sorted(set(payload) - {"all_tables", "tables"})
    if unknown:
        return MultiDict(), {name: ["Unknown field."] for name in unknown}
    all_tables, tables = payload.get("all_tables"), payload.get("tables")
    listed = "Send a non-empty list of table names (schema.table)."
    # null is no boolean and no list: leave a field out rather than send it empty.
    if "all_tables" in payload and not isinstance(all_tables, bool):
        return MultiDict(), {"all_tables": ["Send true or false."]}
    if "tables" in payload and tables is None:
        return MultiDict(), {"tables": [listed]}
    if all_tables and tables is not None:
        return MultiDict(), {"tables": ["Send all_tables: true or a list of tables, not both."]}
    if all_tables:
        return MultiDict({"scope": "all"}), {}
    if tables is None:
        return MultiDict(), {"tables": ['Send "all_tables": true or "tables": ["public.orders"].']}
    if (
        not isinstance(tables, list)
        or not tables
        or not all(isinstance(t, str) and 0 < len(t) <= TABLE_NAME_MAX_LENGTH for t in tables)
    ):
        return MultiDict(), {"tables": [listed]}
    data: MultiDict[str, str] = MultiDict({"scope": "some"})
    data.setlist("tables", tables)
    return data, {}
