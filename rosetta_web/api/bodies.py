"""Reading a JSON request body and feeding it to the form that validates the browser's input."""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.datastructures import MultiDict
from wtforms import Field, IntegerField, PasswordField, SelectField

from ..errors import ApiError
from ..forms import EntityForm, field_names
from ..shapes import shape_of


def json_body() -> dict[str, Any]:
    """Return the request's JSON object, or raise the envelope's 400/415 error."""
    if not request.is_json:
        raise ApiError(
            415,
            "Send the body as JSON with Content-Type: application/json",
            {"content_type": request.content_type or ""},
        )
    payload = request.get_json(silent=True)
    if payload is None:
        raise ApiError(400, "The request body is not valid JSON")
    if not isinstance(payload, dict):
        raise ApiError(400, "The request body must be a JSON object")
    return payload


def _is_unicode(text: str) -> bool:
    """Tell whether text can be encoded as UTF-8 (JSON can carry lone surrogates; it cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_type(field: Field) -> str:
    """Name the JSON type a form field takes in the API: integer, or string."""
    if isinstance(field, IntegerField) or (isinstance(field, SelectField) and field.coerce is int):
        return "integer"
    return "string"


def altered_by_filters(form: EntityForm, payload: dict[str, Any]) -> dict[str, list[str]]:
    """Find the text values the form's filters would change: the API stores what it is sent.

    The browser form trims and lowercases for the operator; a script gets told instead, so
    what the OpenAPI document accepts is exactly what is stored.
    """
    errors: dict[str, list[str]] = {}
    for key, raw in payload.items():
        if not isinstance(raw, str) or key not in form or isinstance(form[key], PasswordField):
            continue
        kept = form[key].data
        if raw != raw.strip():
            errors[key] = ["Remove the white space at its start and end."]
        elif isinstance(form[key], SelectField) and isinstance(kept, str):
            continue  # a choice is read in any case: "pause" is PAUSE
        elif raw and isinstance(kept, str) and kept != raw:
            errors[key] = [f"Send it as it is stored: {kept!r}."]
    return errors


def formdata_from_json(
    form_class: type[EntityForm], payload: dict[str, Any], base: dict[str, Any] | None = None
) -> tuple[MultiDict[str, str], dict[str, list[str]]]:
    """Turn a JSON object into form data for `form_class`, and the fields no field accepts
    (unknown, or of the wrong JSON type), which are left out of the form data.

    `base` holds the current values for a partial update (PATCH): the payload overrides them.
    A null clears a field, as a blank form field does: optional fields become NULL, required
    ones fail validation, secrets keep their stored value.
    """
    form = form_class(formdata=None, meta={"csrf": False})
    # Fields a client may send back from a GET response are ignored, not rejected.
    read_only = set(shape_of(form_class.model).names) - field_names(form_class)
    errors: dict[str, list[str]] = {}
    data: dict[str, str] = {}
    for key, value in payload.items():
        if key in read_only:
            continue
        if key not in form:
            errors[key] = ["Unknown field."]
        elif value is None:
            continue
        elif json_type(form[key]) == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                errors[key] = ["Must be a whole number."]
        elif not isinstance(value, str):
            errors[key] = ["Must be a string."]
        elif not _is_unicode(value):
            # JSON may escape half of a UTF-16 pair ("\ud800"): no database can store it.
            errors[key] = ["Must be valid Unicode text (it holds a lone surrogate)."]
    for key, value in {**(base or {}), **payload}.items():
        if key not in read_only and key in form and key not in errors:
            data[key] = "" if value is None else str(value)
    return MultiDict(data), errors
