"""How the pages say alerts and forecasts in words: no queries here, only formatting."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape

from ..formatting import duration_words, pg_size_pretty
from ..timeutil import as_utc, utcnow
from .engine.trends import Forecast

# What each rule is called on the pages.
RULE_LABELS = {
    "retained_wal": "Retained WAL",
    "slot_inactive": "Slot without consumer",
    "slot_wal_status": "Slot WAL status",
    "consumer_stalled": "Consumer stalled",
    "source_unreachable": "Source unreachable",
    "exhaustion_forecast": "Disk forecast",
    "pipeline_failed": "Pipeline failed",
    "pipeline_lag": "Pipeline behind",
}

SIZE_STEPS = (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("kB", 1024))


def size_input(value: int | None) -> str:
    """Write a byte count as an operator types it back: '5 GB' when exact, else bytes."""
    if value is None:
        return ""
    for unit, size in SIZE_STEPS:
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return str(value)


def rule_label(rule: str | None) -> str:
    """Name a rule as the pages do; None is every rule."""
    if rule is None:
        return "every rule"
    return RULE_LABELS.get(rule, rule)


def pipeline_rules_words(settings: Any) -> str:
    """Say when a source's pipelines alert, from its settings in effect."""
    minutes = settings.pipeline_failed_minutes
    failed = (
        f"critical when failed or retrying for {_minutes(minutes)}"
        if minutes is not None
        else "the failed pipeline rule is off"
    )
    warning = settings.pipeline_lag_warning_seconds
    critical = settings.pipeline_lag_critical_seconds
    if warning is None and critical is None:
        behind = "the pipeline lag rule is off"
    else:
        shown = [
            f"{severity} at {duration_words(threshold) if threshold is not None else 'off'}"
            for severity, threshold in (("warning", warning), ("critical", critical))
        ]
        behind = f"behind their source, {' and '.join(shown)}"
    return f"Its pipelines: {failed}; {behind}."


TICKED = re.compile(r"`([^`]+)`")


def ticks_to_code(text: str | None) -> Markup:
    """Show an alert's message as HTML: its `names` (written for chat and e-mail) as code."""
    return Markup(TICKED.sub(r"<code>\1</code>", str(escape(text or ""))))


def _minutes(value: float) -> str:
    return duration_words(value * 60)


def measure(alert: Any) -> str:
    """Say an alert's value against its threshold, in the threshold's unit."""
    value, threshold, severity = alert.value, alert.threshold, alert.severity
    if value is None or alert.rule == "slot_wal_status":  # its message says which status
        return ""
    if alert.rule == "retained_wal":
        limit = f" ({severity} at {pg_size_pretty(int(threshold))})" if threshold else ""
        return f"{pg_size_pretty(int(value))} retained{limit}"
    if alert.rule in ("slot_inactive", "consumer_stalled"):
        what = "no consumer for" if alert.rule == "slot_inactive" else "nothing confirmed for"
        limit = f" ({severity} at {_minutes(threshold)})" if threshold else ""
        return f"{what} {_minutes(value)}{limit}"
    if alert.rule == "source_unreachable":
        rounds = int(value)
        limit = f" ({severity} at {int(threshold)})" if threshold else ""
        return f"{rounds} failed round{'s' if rounds != 1 else ''} in a row{limit}"
    if alert.rule == "exhaustion_forecast":
        limit = f" (warns within {int(threshold)} h)" if threshold else ""
        return f"about {duration_words(value * 3600)} left{limit}"
    if alert.rule == "pipeline_failed":  # a threshold only for retrying: failed fires at once
        if threshold is None:
            return f"failed for {_minutes(value)}"
        return f"retrying for {_minutes(value)} ({severity} at {_minutes(threshold)})"
    if alert.rule == "pipeline_lag":
        limit = f" ({severity} at {duration_words(threshold)})" if threshold else ""
        return f"{duration_words(value)} behind{limit}"
    return f"{value:g}" + (f" (threshold {threshold:g})" if threshold is not None else "")


@dataclass(frozen=True)
class ForecastWords:
    """A slot's forecast in words: 'slot <code>orders</code>' then `rest`."""

    slot_name: str
    rest: str
    urgent: bool  # lost or critical within the hour
    when: datetime | None


def _within(when: datetime, now: datetime) -> str:
    seconds = (as_utc(when) - now).total_seconds()
    return "in under a minute" if seconds < 60 else f"in about {duration_words(seconds)}"


def forecast_words(
    slot_name: str,
    forecast: Forecast | None,
    critical_bytes: int | None,
    now: datetime | None = None,
) -> ForecastWords | None:
    """Say where a growing slot is heading; None when it is not growing (or nobody knows)."""
    if forecast is None or not forecast.growth_bytes_per_hour:
        return None
    growth = forecast.growth_bytes_per_hour
    if growth <= 0:
        return None
    now = now or utcnow()
    rate = f"{pg_size_pretty(int(growth))}/h"
    soonest = forecast.soonest()
    goal = f"the critical {pg_size_pretty(critical_bytes)}" if critical_bytes else "critical"
    if soonest is None and forecast.beyond is not None:
        far = "is not lost" if forecast.beyond == "lost" else f"does not reach {goal}"
        return ForecastWords(slot_name, f"grows {rate}: {far} within a year", False, None)
    if soonest is None:
        return ForecastWords(slot_name, f"grows {rate}", False, None)
    what, when = soonest
    urgent = (as_utc(when) - now).total_seconds() < 3600
    if what == "lost":
        return ForecastWords(slot_name, f"is lost {_within(when, now)} at {rate}", urgent, when)
    return ForecastWords(slot_name, f"reaches {goal} {_within(when, now)} at {rate}", urgent, when)
