"""The alert forms, shared by the browser and the JSON API: the rule settings (the settings
page, PUT /api/v1/alert-settings, and a source's overrides) and the silences, with the silence
forms the pages show (on each firing alert, and the alerts page's own)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from wtforms import Field, Form, FormField, IntegerField, SelectField, StringField
from wtforms.utils import unset_value
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError
from wtforms.widgets import TextInput

from ..formatting import pg_size_pretty
from ..forms import BaseForm, SelectChoice, strip
from ..models import ALERT_RULES, Alert
from ..timeutil import as_utc, utcnow
from .display import rule_label
from .services import source_names

# pg_size_bytes's units (1024-based, as pg_size_pretty prints them).
SIZE_UNITS = {"": 1, "b": 1, "bytes": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")
MAX_BYTES = 2**63 - 1
MAX_MINUTES = 60 * 24 * 365
MAX_SECONDS = 60 * MAX_MINUTES


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


# Each warning threshold and its critical one: the warning must be below.
THRESHOLD_PAIRS = (
    ("retained_warning_bytes", "retained_critical_bytes"),
    ("pipeline_lag_warning_seconds", "pipeline_lag_critical_seconds"),
)
WARNING_BELOW = "The warning threshold must be below the critical one."


class RuleSettingsForm(BaseForm):
    """The ten rule settings. Blank turns a global rule off; in a source's overrides, blank
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
    pipeline_failed_minutes = IntegerField(
        "Pipeline failed, or retrying for (minutes)",
        validators=_positive("minutes", MAX_MINUTES),
        description="A pipeline whose engine failed is critical at once; one retrying, after "
        "this long. Not for a paused pipeline.",
    )
    pipeline_lag_warning_seconds = IntegerField(
        "Pipeline behind: warning at (seconds)",
        validators=_positive("seconds", MAX_SECONDS),
        description="How far behind its source a pipeline's last loaded change is: 300 is "
        "5 minutes.",
    )
    pipeline_lag_critical_seconds = IntegerField(
        "Pipeline behind: critical at (seconds)",
        validators=_positive("seconds", MAX_SECONDS),
        description="1800 is 30 minutes.",
    )
    repeat_minutes = IntegerField(
        "Repeat notifications every (minutes)",
        validators=_positive("minutes", MAX_MINUTES),
        description="While an alert fires unacknowledged.",
    )


def warning_not_below(form: Form, global_settings: Any = None) -> bool:
    """Refuse each warning at or above its critical threshold, beside the warning field. With
    `global_settings` (a source's overrides), a blank threshold is the global one, and the
    message says whose critical threshold it is."""
    valid = True
    for warning_name, critical_name in THRESHOLD_PAIRS:
        warning_field, critical_field = form[warning_name], form[critical_name]
        warning, critical = warning_field.data, critical_field.data
        if global_settings is not None:
            warning = warning if warning is not None else getattr(global_settings, warning_name)
            critical = critical if critical is not None else getattr(global_settings, critical_name)
        if warning is None or critical is None or warning < critical:
            continue
        message = WARNING_BELOW
        if global_settings is not None:
            whose = "this source" if critical_field.data is not None else "the global"
            shown = pg_size_pretty(critical) if warning_name.endswith("_bytes") else critical
            unit = "" if warning_name.endswith("_bytes") else " seconds"
            message = f"{WARNING_BELOW[:-1]} ({whose}: {shown}{unit})."
        warning_field.errors = [*warning_field.errors, message]
        valid = False
    return valid


class AlertSettingsForm(RuleSettingsForm):
    """The global settings page and PUT /api/v1/alert-settings."""

    def validate(self, extra_validators: Any = None) -> bool:
        valid = super().validate(extra_validators)
        return warning_not_below(self) and valid


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
    pipeline_failed_minutes = RuleSettingsForm.pipeline_failed_minutes
    pipeline_lag_warning_seconds = RuleSettingsForm.pipeline_lag_warning_seconds
    pipeline_lag_critical_seconds = RuleSettingsForm.pipeline_lag_critical_seconds
    repeat_minutes = RuleSettingsForm.repeat_minutes


class SilenceForm(BaseForm):
    """Hold back a source's notifications (or one rule's) until a time."""

    source_id = SelectField(
        "Source", coerce=int, validate_choice=False, validators=[DataRequired("Choose a source.")]
    )
    rule = SelectField(
        "Rule",
        choices=[SelectChoice("", "Every rule"), *(SelectChoice(rule) for rule in ALERT_RULES)],
        default="",
    )
    ends_at = StringField(
        "Until",
        filters=[strip],
        validators=[DataRequired("Say until when.")],
        description="A date and time in UTC, e.g. 2026-12-01T08:00, or ISO 8601 with an offset.",
    )
    comment = StringField("Comment", filters=[strip], validators=[Length(max=500)])

    ends_at_value: datetime | None = None

    def validate_ends_at(self, field: Field) -> None:
        """Read the end as ISO 8601 (UTC when no offset is given); it must be in the future."""
        try:
            moment = as_utc(datetime.fromisoformat(field.data))
        except (TypeError, ValueError, OverflowError):  # past year 9999 in UTC overflows
            raise ValidationError("Enter a date and time such as 2026-12-01T08:00.") from None
        if moment <= utcnow():
            raise ValidationError("The silence must end in the future.")
        self.ends_at_value = moment


# How long a silence lasts unless the operator says otherwise.
DEFAULT_SILENCE = timedelta(hours=1)
# As the silence's "Until" field shows a time (read back as UTC).
MINUTE_FORMAT = "%Y-%m-%dT%H:%M"


def _default_until() -> str:
    return (utcnow() + DEFAULT_SILENCE).strftime(MINUTE_FORMAT)


def row_silence_form(alert: Alert, submitted: bool = False) -> SilenceForm:
    """Build the silence form on a firing alert: its rule (or every rule) of its source, for
    an hour unless the operator says otherwise. `submitted` reads the request's form."""
    kwargs: dict[str, Any] = {} if submitted else {"formdata": None}
    form = SilenceForm(
        prefix=f"alert-{alert.id}", data={"rule": alert.rule, "ends_at": _default_until()}, **kwargs
    )
    form.rule.choices = [
        SelectChoice(alert.rule, f"{rule_label(alert.rule)} only"),
        SelectChoice("", "Every rule of this source"),
    ]
    form.source_id.data = alert.source_id  # from the alert, never from the request
    return form


def page_silence_form(submitted: bool = False) -> SilenceForm:
    """Build the alerts page's own silence form: any source, one rule or every rule."""
    kwargs: dict[str, Any] = {} if submitted else {"formdata": None}
    form = SilenceForm(data={"ends_at": _default_until()}, **kwargs)
    form.source_id.choices = [SelectChoice(0, "— choose —")] + [
        SelectChoice(id_, name) for id_, name in source_names().items()
    ]
    form.rule.choices = [SelectChoice("", "Every rule")] + [
        SelectChoice(rule, rule_label(rule)) for rule in ALERT_RULES
    ]
    return form
