"""Reading a JSON request body and feeding it to the form that validates the browser's input."""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.datastructures import MultiDict

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


def formdata_from_json(
    form_class: type[EntityForm], payload: dict[str, Any], base: dict[str, Any] | None = None
) -> MultiDict[str, str]:
    """Turn a JSON object into form data for `form_class`, refusing what no field accepts.

    `base` holds the current values for a partial update (PATCH): the payload overrides them.
    A null clears a field, as a blank form field does: optional fields become NULL, required
    ones fail validation, secrets keep their stored value.
    """
    fields = field_names(form_class)
    # Fields a client may send back from a GET response are ignored, not rejected.
    read_only = set(shape_of(form_class.model).names) - fields
    errors: dict[str, list[str]] = {}
    data: dict[str, str] = {}
    for key, value in {**(base or {}), **payload}.items():
        if key in read_only:
            continue
        if key not in fields:
            errors[key] = ["Unknown field."]
        elif value is None:
            data[key] = ""
        elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
            errors[key] = ["Must be a string or a number."]
        else:
            data[key] = str(value)
    if errors:
        raise ApiError(422, "The request has invalid fields", {"fields": errors})
    return MultiDict(data)
