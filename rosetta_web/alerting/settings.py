"""The alert rule settings: their defaults, the one global row, and the form that edits them
(the settings page, PUT /api/v1/alert-settings, and a source's overrides)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from flask import current_app
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from wtforms import Field, Form, FormField, IntegerField
from wtforms.utils import unset_value
from wtforms.validators import NumberRange, Optional, ValidationError
from wtforms.widgets import TextInput

from ..extensions import db
from ..forms import BaseForm
from ..models import AlertSettings

GIB = 1024**3
DEFAULTS: dict[str, int | None] = {
    "retained_warning_bytes": 5 * GIB,
    "retained_critical_bytes": 10 * GIB,
    "slot_inactive_minutes": 30,
    "consumer_stalled_minutes": 30,
    "unreachable_rounds": 3,
    "forecast_hours": 6,
    "repeat_minutes": 60,
}


def default_settings() -> AlertSettings:
    """Return the settings a new installation starts with (ALERT_REPEAT_MINUTES sets one)."""
    values = {**DEFAULTS, "repeat_minutes": current_app.config["ALERT_REPEAT_MINUTES"]}
    return AlertSettings(id=1, **values)


def load_settings(lock: bool = False, now: datetime | None = None) -> AlertSettings:
    """Return the global settings row, creating it with the defaults the first time.

    With `lock`, write it first: the transaction then holds the row (PostgreSQL) or the
    database (SQLite) until it commits, and other evaluations wait their turn.
    """
    if lock:
        taken = update(AlertSettings).where(AlertSettings.id == 1).values(evaluated_at=now)
        if not getattr(db.session.execute(taken), "rowcount", 1):
            _insert_defaults()
            db.session.execute(taken)
    settings = db.session.get(AlertSettings, 1)
    if settings is None:
        _insert_defaults()
        settings = db.session.get(AlertSettings, 1)
        assert settings is not None
    return settings


def _insert_defaults() -> None:
    """Insert the settings row, unless another process just did (then theirs stands)."""
    try:
        with db.session.begin_nested():
            db.session.add(default_settings())
    except IntegrityError:
        pass


# pg_size_bytes's units (1024-based, as pg_size_pretty prints them).
SIZE_UNITS = {"": 1, "b": 1, "bytes": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
MAX_BYTES = 2**63 - 1
MAX_MINUTES = 60 * 24 * 365


def parse_size(text: str) -> int:
    """Read a size as PostgreSQL's pg_size_bytes does: '5 GB', '512MB', '1073741824'."""
    match = SIZE.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in SIZE_UNITS:
        raise ValueError("Enter a size such as 5 GB, 500 MB or a number of bytes.")
    return int(Decimal(match.group(1)) * SIZE_UNITS[unit])  # exact, however large


class SizeField(Field):
    """A byte count, typed as a number of bytes or with a unit ('5 GB'); blank is None."""

    widget = TextInput()
    data: int | None

    def process_formdata(self, valuelist: list[Any]) -> None:
        self.data = None
        if valuelist and str(valuelist[0]).strip():
            self.data = parse_size(str(valuelist[0]))  # a ValueError is the field's message

    def _value(self) -> str:
        if self.raw_data:
            return str(self.raw_data[0])
        return "" if self.data is None else str(self.data)


def _positive(label: str, maximum: int) -> list[Any]:
    message = f"Enter a whole number of {label} from 1 to {maximum}, or leave it blank."
    return [Optional(), NumberRange(1, maximum, message)]


def _size_range(form: Any, field: Field) -> None:
    if field.data is not None and not 1 <= field.data <= MAX_BYTES:
        raise ValidationError("Enter a size of at least 1 byte.")


class RuleSettingsForm(BaseForm):
    """The seven rule settings. Blank turns a global rule off; in a source's overrides, blank
    takes the global setting."""

    retained_warning_bytes = SizeField(
        "Retained WAL: warning at",
        validators=[_size_range],
        description="A slot retaining this much WAL warns: 5 GB, 500 MB, or bytes.",
    )
    retained_critical_bytes = SizeField(
        "Retained WAL: critical at",
        validators=[_size_range],
        description="A slot retaining this much WAL is critical.",
    )
    slot_inactive_minutes = IntegerField(
        "Slot without a consumer for (minutes)",
        validators=_positive("minutes", MAX_MINUTES),
        description="A slot nobody consumes keeps every byte of WAL written meanwhile.",
    )
    consumer_stalled_minutes = IntegerField(
        "Consumer stalled for (minutes)",
        validators=_positive("minutes", MAX_MINUTES),
        description="Connected, but confirming nothing while WAL is written.",
    )
    unreachable_rounds = IntegerField(
        "Source unreachable for (rounds)",
        validators=_positive("rounds", 1000),
        description="Failed sampling rounds in a row.",
    )
    forecast_hours = IntegerField(
        "Forecast: warn when critical or lost within (hours)",
        validators=_positive("hours", 24 * 30),
        description="From the slot's growth over the last hour; critical under 1 hour.",
    )
    repeat_minutes = IntegerField(
        "Repeat notifications every (minutes)",
        validators=_positive("minutes", MAX_MINUTES),
        description="While an alert fires unacknowledged.",
    )

    def check_thresholds(self, warning: int | None, critical: int | None) -> bool:
        """Refuse a warning at or above its critical threshold, beside the warning field."""
        if warning is not None and critical is not None and warning >= critical:
            self.retained_warning_bytes.errors = [
                *self.retained_warning_bytes.errors,
                "The warning threshold must be below the critical one.",
            ]
            return False
        return True


class AlertSettingsForm(RuleSettingsForm):
    """The global settings page and PUT /api/v1/alert-settings."""

    def validate(self, extra_validators: Any = None) -> bool:
        valid = super().validate(extra_validators)
        return (
            self.check_thresholds(
                self.retained_warning_bytes.data, self.retained_critical_bytes.data
            )
            and valid
        )


class DictFormField(FormField):  # type: ignore[type-arg]
    """A sub-form whose stored value is a dict (a JSON column): filled from its keys."""

    def process(self, formdata: Any, data: Any = unset_value, extra_filters: Any = None) -> None:
        if isinstance(data, dict):
            data = SimpleNamespace(**data)
        elif data is None:
            data = SimpleNamespace()
        super().process(formdata, data, extra_filters)


class OverridesForm(Form):
    """A source's alert overrides, as a sub-form of the source form (no CSRF of its own)."""

    retained_warning_bytes = RuleSettingsForm.retained_warning_bytes
    retained_critical_bytes = RuleSettingsForm.retained_critical_bytes
    slot_inactive_minutes = RuleSettingsForm.slot_inactive_minutes
    consumer_stalled_minutes = RuleSettingsForm.consumer_stalled_minutes
    unreachable_rounds = RuleSettingsForm.unreachable_rounds
    forecast_hours = RuleSettingsForm.forecast_hours
    repeat_minutes = RuleSettingsForm.repeat_minutes
