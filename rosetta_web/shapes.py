"""Response shapes declared once: a model's `to_dict` and its OpenAPI schema both come from here.

A model lists the fields the API shows in `api_fields`: column names, whose JSON type,
nullability and description come from the column itself, or `Computed` fields for what no
column holds. `to_dict` dumps exactly those, and the OpenAPI document describes exactly those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import inspect

from .timeutil import isoformat

JSON_TYPES: dict[type, str] = {bool: "boolean", int: "integer", float: "number", str: "string"}


@dataclass(frozen=True)
class Computed:
    """A field the API shows that no column holds: its schema, and how to read it."""

    name: str
    schema: dict[str, Any]
    read: Callable[[Any], Any]


@dataclass(frozen=True)
class Shape:
    """The fields of one response object, in order, with a JSON schema for each."""

    name: str
    fields: tuple[tuple[str, dict[str, Any], Callable[[Any], Any]], ...]

    @property
    def names(self) -> list[str]:
        """Return the field names, in the order the API shows them."""
        return [name for name, _, _ in self.fields]

    def dump(self, obj: Any) -> dict[str, Any]:
        """Return `obj` as the API shows it."""
        return {name: read(obj) for name, _, read in self.fields}

    def schema(self, read_only: frozenset[str] = frozenset()) -> dict[str, Any]:
        """Describe the shape as a JSON Schema object; `read_only` fields are marked so."""
        properties = {
            name: {**schema, "readOnly": True} if name in read_only else schema
            for name, schema, _ in self.fields
        }
        return {
            "type": "object",
            "properties": properties,
            "required": self.names,
            "additionalProperties": False,
        }


def column_schema(column: Any) -> dict[str, Any]:
    """Describe a column's values as JSON Schema: its type, null when nullable, its doc."""
    schema: dict[str, Any]
    if "schema" in column.info:  # a JSON column says what it holds
        schema = dict(column.info["schema"])
        if column.nullable:
            schema = {"anyOf": [schema, {"type": "null"}]}
        if column.doc:
            schema["description"] = column.doc
        return schema
    python_type = column.type.python_type
    if python_type is datetime:
        schema = {"type": "string", "format": "date-time"}
    else:
        schema = {"type": JSON_TYPES[python_type]}
    if "enum" in column.info:
        schema["enum"] = list(column.info["enum"])
    if column.nullable and not column.primary_key:
        schema["type"] = [schema["type"], "null"]
    if column.doc:
        schema["description"] = column.doc
    return schema


def _reader(name: str, is_time: bool) -> Callable[[Any], Any]:
    if is_time:
        return lambda obj: isoformat(getattr(obj, name))
    return lambda obj: getattr(obj, name)


# A dict rather than functools.cache: mypy wrongly refuses a type[...] variable as Hashable.
_SHAPES: dict[type[Shaped], Shape] = {}


def shape_of(model: type[Shaped]) -> Shape:
    """Return the shape a model declares in `api_fields`, building it once per model."""
    shape = _SHAPES.get(model)
    if shape is None:
        shape = _SHAPES[model] = _build_shape(model)
    return shape


def _build_shape(model: type[Shaped]) -> Shape:
    columns = inspect(model).columns
    fields = []
    for item in model.api_fields:
        if isinstance(item, Computed):
            fields.append((item.name, item.schema, item.read))
            continue
        column = columns[item]
        schema = column_schema(column)
        is_time = "schema" not in column.info and column.type.python_type is datetime
        fields.append((item, schema, _reader(item, is_time)))
    return Shape(model.api_name, tuple(fields))


class Shaped:
    """A model the API shows: `api_fields` lists what, `api_name` names its schema."""

    api_name: ClassVar[str]
    api_fields: ClassVar[tuple[str | Computed, ...]]

    def to_dict(self) -> dict[str, Any]:
        """Return the object as the API shows it."""
        return shape_of(type(self)).dump(self)


def ref(name: str) -> dict[str, str]:
    """Point to a schema of the OpenAPI document's components."""
    return {"$ref": f"#/components/schemas/{name}"}
