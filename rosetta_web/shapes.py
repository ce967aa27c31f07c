"""Shapes declared once: `to_dict`, the readers of query strings and the OpenAPI document all
come from here.

A model lists the fields the API shows in `api_fields`: column names, whose JSON type,
nullability and description come from the column itself, or `Computed` fields for what no
column holds. An answer that is no model is a `Declared` dataclass: its fields' annotations
give their JSON types, and `Described` adds a description or a schema no annotation can say.
`to_dict` dumps exactly those fields, and the OpenAPI document describes exactly those.

A query-string argument is an `IntArg`, `ChoiceArg` or `TextArg`: the API reads it with it,
a page takes its bounds or choices from it, and the document lists it as a parameter.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin, get_type_hints

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
_SHAPES: dict[type[Shaped | Declared], Shape] = {}


def shape_of(model: type[Shaped | Declared]) -> Shape:
    """Return the shape a model declares in `api_fields`, or a `Declared` class in its fields,
    building it once per class."""
    shape = _SHAPES.get(model)
    if shape is None:
        if issubclass(model, Declared):
            shape = _declared_shape(model)
        else:
            shape = _build_shape(model)
        _SHAPES[model] = shape
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


# Answers that are no model


@dataclass(frozen=True)
class Described:
    """What a `Declared` field's annotation cannot say: its description, or its whole schema."""

    description: str = ""
    schema: dict[str, Any] | None = None


MOMENT_SCHEMA = {"type": "string", "format": "date-time"}
# A time the answer already holds as ISO-8601 text.
Moment = Annotated[str, Described(schema=MOMENT_SCHEMA)]


class Declared:
    """An answer no table holds, declared as a dataclass: `api_name` names its schema among the
    document's components (without one, the schema is written where it is used)."""

    api_name: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """Return the answer as the API shows it."""
        return shape_of(type(self)).dump(self)


def _is_shown(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Shaped | Declared)


def type_schema(kind: Any) -> dict[str, Any]:
    """Describe the values of a Python type as JSON Schema (see `Declared`)."""
    if get_origin(kind) is Annotated:
        inner, *extras = get_args(kind)
        about = next((extra for extra in extras if isinstance(extra, Described)), Described())
        schema = dict(about.schema) if about.schema is not None else type_schema(inner)
        return {**schema, "description": about.description} if about.description else schema
    if get_origin(kind) in (Union, types.UnionType):
        (inner,) = [arg for arg in get_args(kind) if arg is not type(None)]
        schema = type_schema(inner)
        if "$ref" in schema:
            return {"oneOf": [{"type": "null"}, schema]}
        return {**schema, "type": [schema["type"], "null"]}
    if get_origin(kind) is list:
        return {"type": "array", "items": type_schema(get_args(kind)[0])}
    if kind is datetime:
        return dict(MOMENT_SCHEMA)
    if _is_shown(kind):
        if hasattr(kind, "api_name"):
            return ref(kind.api_name)
        return shape_of(kind).schema()
    return {"type": JSON_TYPES[kind]}


def _dumped(value: Any) -> Any:
    """Return a field's value as JSON shows it."""
    if isinstance(value, Shaped | Declared):
        return value.to_dict()
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, list):
        return [_dumped(item) for item in value]
    return value


def _as_is(kind: Any) -> bool:
    """Tell whether a field's values are JSON as they stand: no times and no answers in them,
    however long a list (`_dumped` leaves a dict as it is)."""
    origin = get_origin(kind)
    if origin is Annotated:
        return _as_is(get_args(kind)[0])
    if origin is dict:
        return True
    if origin in (Union, types.UnionType, list):
        return all(_as_is(arg) for arg in get_args(kind))
    return kind in JSON_TYPES or kind is type(None)


def _declared_shape(declared: type[Declared]) -> Shape:
    hints = get_type_hints(declared, include_extras=True)
    fields = tuple(
        (
            field.name,
            type_schema(hints[field.name]),
            (
                attrgetter(field.name)
                if _as_is(hints[field.name])
                else lambda obj, name=field.name: _dumped(getattr(obj, name))
            ),
        )
        for field in dataclasses.fields(declared)  # type: ignore[arg-type]
    )
    return Shape(getattr(declared, "api_name", declared.__name__), fields)


# Query-string arguments


class ArgError(ValueError):
    """A query-string argument is missing or wrong: `field` names it, `detail` says what to send."""

    def __init__(self, field: str, message: str, detail: str) -> None:
        super().__init__(message)
        self.field = field
        self.detail = detail


@dataclass(frozen=True)
class QueryArg:
    """A query-string argument: its name, whether it must be sent, and what it means."""

    name: str
    description: str = dataclasses.field(default="", kw_only=True)
    required: bool = dataclasses.field(default=False, kw_only=True)

    def schema(self) -> dict[str, Any]:
        """Describe the values the argument takes as JSON Schema."""
        return {"type": "string"}

    def parameter(self) -> dict[str, Any]:
        """Describe the argument as an OpenAPI parameter."""
        param = {"name": self.name, "in": "query", "required": self.required}
        param["schema"] = self.schema()
        return {**param, "description": self.description} if self.description else param


@dataclass(frozen=True)
class TextArg(QueryArg):
    """Text, at most `max_length` characters when it has a bound."""

    max_length: int | None = None

    def schema(self) -> dict[str, Any]:
        """Describe the values the argument takes as JSON Schema."""
        schema: dict[str, Any] = {"type": "string"}
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        return schema


@dataclass(frozen=True)
class ChoiceArg(QueryArg):
    """One of `choices`, exactly as written."""

    choices: tuple[str, ...] = ()
    default: str | None = None

    def schema(self) -> dict[str, Any]:
        """Describe the values the argument takes as JSON Schema."""
        schema: dict[str, Any] = {"type": "string", "enum": list(self.choices)}
        return schema if self.default is None else {**schema, "default": self.default}

    def read(self, args: Mapping[str, str]) -> str | None:
        """Return the argument, its default when absent, or raise ArgError naming it."""
        raw = args.get(self.name)
        if raw is None:
            return self.default
        if raw not in self.choices:
            listed = ", ".join(self.choices)
            raise ArgError(
                self.name, f"{self.name} must be one of {listed}", f"Choose one of {listed}."
            )
        return raw


@dataclass(frozen=True)
class IntArg(QueryArg):
    """A whole number from `minimum` to `maximum`."""

    minimum: int = 0
    maximum: int | None = None
    default: int | None = None

    def schema(self) -> dict[str, Any]:
        """Describe the values the argument takes as JSON Schema."""
        schema: dict[str, Any] = {"type": "integer", "minimum": self.minimum}
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema if self.default is None else {**schema, "default": self.default}

    def within(self, value: int) -> bool:
        """Tell whether a number is within the argument's bounds."""
        return value >= self.minimum and (self.maximum is None or value <= self.maximum)

    def read(self, args: Mapping[str, str]) -> int | None:
        """Return the argument, its default when absent, or raise ArgError naming it.

        Present, it must be a number as the OpenAPI document says (ASCII digits, nothing
        around them): blank or "5_0" is refused, not read as absent or 50.
        """
        raw = args.get(self.name)
        if raw is None:
            if self.required:
                raise ArgError(self.name, f"{self.name} is required", "This field is required.")
            return self.default
        value = int(raw) if re.fullmatch(r"-?[0-9]{1,19}", raw) else None
        if value is None or not self.within(value):
            if self.maximum is not None:
                bounds = f"from {self.minimum} to {self.maximum}"
            else:
                bounds = f"of {self.minimum} or more"
            raise ArgError(
                self.name,
                f"{self.name} must be a whole number {bounds}",
                f"Enter a whole number {bounds}.",
            )
        return value

    def number(self, args: Mapping[str, str]) -> int:
        """Read an argument that always has a value: one required, or one with a default."""
        value = self.read(args)
        if value is None:
            raise ArgError(self.name, f"{self.name} is required", "This field is required.")
        return value
