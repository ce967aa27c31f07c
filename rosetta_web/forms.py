"""Pieces every blueprint's forms share: field rules and the base forms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import flash
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import Field, StringField

# types-WTForms 3.2 predates WTForms 3.3's SelectChoice: imported once here for every form.
from wtforms import SelectChoice as SelectChoice  # type: ignore[attr-defined]
from wtforms.fields.core import UnboundField
from wtforms.validators import DataRequired, Length, Regexp, StopValidation, ValidationError

from .extensions import db

F = TypeVar("F", bound=Callable[..., Any])


def form_view(view: F) -> F:
    """Mark a view whose FlaskForm checks the CSRF token itself.

    Such a view answers a stale token with the form, the operator's input and a message,
    instead of the bare error that the global check gives.
    """
    # Through __dict__, since mypy lets no attribute be added to a Callable.
    view.__dict__["csrf_checked_by_form"] = True
    return view


def lowercase(value: Any) -> Any:
    """Strip and lowercase a text value, leaving anything else as it is."""
    return value.strip().lower() if isinstance(value, str) else value


def strip(value: Any) -> Any:
    """Strip surrounding white space from a text value."""
    return value.strip() if isinstance(value, str) else value


def blank_to_none(value: Any) -> Any:
    """Store an empty optional text field as NULL."""
    return None if value == "" else value


def whole_number(form: FlaskForm, field: Field) -> None:
    """Stop a number field's checks at one clear message when it holds no whole number."""
    if field.process_errors or field.data is None:
        field.errors = []
        raise StopValidation("Enter a whole number.")


def filled(field: StringField) -> str:
    """Return the text of a required field, once its form has validated."""
    if field.data is None:
        raise ValueError(f"{field.name} is empty: validate the form before reading it")
    return field.data


def name_rules() -> list[Any]:
    """Return the checks every entity name passes: required, 1-255 of [a-z0-9_-]."""
    return [
        DataRequired(),
        Length(max=255),
        Regexp(r"^[a-z0-9_-]+$", message="Use lowercase letters, digits, '-' and '_' only."),
    ]


def is_unicode(text: str) -> bool:
    """Tell whether text can be encoded as UTF-8 (JSON can carry lone surrogates; it cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def field_names(form_class: type[FlaskForm]) -> set[str]:
    """Return the names of the fields a form class declares."""
    return {name for name in dir(form_class) if isinstance(getattr(form_class, name), UnboundField)}


# What str.strip() removes, spelled out for a regular expression's character class: the
# OpenAPI document's clients read patterns in ECMA's dialect, whose \s is another set.
WHITESPACE = "".join(f"\\u{ord(c):04x}" for c in map(chr, range(0x10000)) if c.isspace())
# Text with no white space at all, and no NUL (which PostgreSQL cannot store).
NO_SPACE = rf"^[^{WHITESPACE}\x00]+$"

# The largest id or whole number a 4-byte INTEGER column holds.
MAX_INT = 2**31 - 1


class BaseForm(FlaskForm):
    """Every Rosetta form: text with a NUL byte is refused, since PostgreSQL cannot store it."""

    def validate(self, extra_validators: Any = None) -> bool:
        """Run the field checks, then refuse text fields holding a NUL character."""
        valid = super().validate(extra_validators)
        for field in self:
            if isinstance(field.data, str) and "\x00" in field.data:
                field.errors = [*field.errors, "Must not contain NUL characters."]
                valid = False
        return valid

    def errors_by_field(self) -> dict[str, list[str]]:
        """Return every failing field's messages; a sub-form's as `field.subfield`."""
        errors: dict[str, list[str]] = {}
        for name, messages in self.errors.items():
            if isinstance(messages, dict):
                for sub, sub_messages in messages.items():
                    errors[f"{name}.{sub}"] = list(sub_messages)
            else:
                errors[name] = list(messages)
        return errors


class ConfirmForm(BaseForm):
    """An empty form: a button whose POST carries only the CSRF token."""


def confirmed_or_flash(again: str) -> bool:
    """Tell whether the POST's CSRF token holds; if not, say that the form expired and what to
    do `again` ("press Check again"), as every button does."""
    if ConfirmForm().validate_on_submit():
        return True
    flash(f"The form expired before you sent it; {again}.", "error")
    return False


class EntityForm(BaseForm):
    """A form for a named entity, usable from the browser and, with a JSON body, the API.

    Subclasses set `model` and `label`; `secret_fields` are write-only and may stay blank
    on edit to keep the stored value, `required_secrets` must be given on create.
    """

    model: Any = None
    label = "entity"
    secret_fields: tuple[str, ...] = ()
    required_secrets: tuple[str, ...] = ()

    editing_id: int | None = None
    duplicate_name = False

    def validate_name(self, field: Field) -> None:
        """Refuse a name another entity of the same kind already has."""
        stmt = select(self.model.id).where(self.model.name == field.data)
        if self.editing_id is not None:
            stmt = stmt.where(self.model.id != self.editing_id)
        if db.session.scalar(stmt) is not None:
            self.duplicate_name = True
            raise ValidationError(f"A {self.label} named '{field.data}' already exists.")

    def validate(self, extra_validators: Any = None) -> bool:
        """Run the field checks, then require the secrets a new entity must have."""
        valid = super().validate(extra_validators)
        if self.editing_id is None:  # an edit may leave a secret blank to keep it
            for name in self.required_secrets:
                if not self[name].data:
                    self[name].errors = [*self[name].errors, "This field is required."]
                    valid = False
        return valid
