"""The silence forms the pages show: on each firing alert (its own source, its rule or every
rule), and the alerts page's own (any source). Shared by the alerts and source pages."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..forms import SelectChoice
from ..models import ALERT_RULES, Alert
from ..timeutil import utcnow
from .display import rule_label
from .forms import SilenceForm
from .services import silence_choices

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
    silence_choices(form)
    form.rule.choices = [SelectChoice("", "Every rule")] + [
        SelectChoice(rule, rule_label(rule)) for rule in ALERT_RULES
    ]
    return form
