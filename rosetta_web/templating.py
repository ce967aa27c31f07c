"""Every global and filter the templates may use, registered in one place.

The helpers themselves live beside what they show (formatting.py, sparkline.py, each area's
context or display module); this module only names them for Jinja. Like the factory, it wires
areas together, so it may import any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.signals import before_render_template

from . import formatting, sparkline
from .alerts import context as alerts_context
from .alerts import display as alerts_display
from .audit import display as audit_display
from .channels.services import last_deliveries
from .engines import engine_state
from .pipelines.services import current_lag, skipped_words, slot_disagreement
from .security import can
from .timeutil import isoformat

FILTERS: dict[str, Callable[..., Any]] = {
    "bytes": formatting.pg_size_pretty,
    "exact_bytes": formatting.exact_bytes,
    "ago": formatting.relative_time,
    "utc": formatting.utc,
    "from_iso": formatting.from_iso,
    "duration": formatting.duration_words,
    "lag": formatting.lag_words,
    "thousands": formatting.thousands,
    "lsn": formatting.lsn_text,
    "sparkline": sparkline.render,
    "rule_label": alerts_display.rule_label,
    "alert_measure": alerts_display.measure,
    "size_input": alerts_display.size_input,
    "ticks_to_code": alerts_display.ticks_to_code,
    "iso": isoformat,
    "audit_value": audit_display.shown,
}

GLOBALS: dict[str, Callable[..., Any]] = {
    "can": can,
    "history_url": audit_display.history_url,
    "slot_disagreement": slot_disagreement,
    "engine_state": engine_state,
    "current_lag": current_lag,
    "skipped_words": skipped_words,
    "last_deliveries": last_deliveries,
}


def register_templating(app: Flask) -> None:
    """Give every template the filters, the globals and the alerts' lazy helpers, and keep
    the alert banner off the error pages."""
    for name, function in FILTERS.items():
        app.add_template_filter(function, name)
    for name, function in GLOBALS.items():
        app.add_template_global(function, name)
    app.context_processor(alerts_context.template_helpers)
    before_render_template.connect(alerts_context.no_banner_on_error_pages, app)
