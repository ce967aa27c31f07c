"""The alert rules: what fires, at which severity, with which message. No Flask, no ORM.

Each rule looks at one slot of a server, one source or one pipeline, and says what should be
firing now. The rules that measure a size or a time hold a firing alert until the value is
10 % back on the safe side (hysteresis), so a value hovering at the line does not flap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from ...formatting import duration_words, pg_size_pretty
from .trends import Forecast, SlotLike

HYSTERESIS = 0.9
# Rules whose alert, once firing, resolves only when a second sample of its server, at least
# HELD_CLEAR after the first clear one, finds it clear too: a forecast moves with every
# sample, and one clear sample, or a few seconds of them, are not a trend.
HELD_OVER_TWO_SAMPLES = frozenset({"exhaustion_forecast"})
HELD_CLEAR = timedelta(minutes=2)


@dataclass(frozen=True)
class Settings:
    """One source's rule settings: the global ones with its overrides applied; None is off."""

    retained_warning_bytes: int | None
    retained_critical_bytes: int | None
    slot_inactive_minutes: int | None
    consumer_stalled_minutes: int | None
    unreachable_rounds: int | None
    forecast_hours: int | None
    pipeline_failed_minutes: int | None
    pipeline_lag_warning_seconds: int | None
    pipeline_lag_critical_seconds: int | None
    repeat_minutes: int | None

    @classmethod
    def merged(cls, global_settings: Any, overrides: Mapping[str, Any] | None) -> Settings:
        """Take each setting from the overrides where they set it, else from the global."""
        overrides = overrides or {}
        values = {}
        for field in fields(cls):
            value = overrides.get(field.name)
            values[field.name] = (
                value if value is not None else getattr(global_settings, field.name)
            )
        return cls(**values)


@dataclass(frozen=True)
class Finding:
    """A rule that should be firing now."""

    rule: str
    key: str
    severity: str
    value: float | None
    threshold: float | None
    message: str
    source_id: int
    source_name: str
    server_id: int | None = None
    slot_name: str | None = None


def slot_key(rule: str, server_id: int, slot_name: str) -> str:
    """Key a slot's alert: one per server and slot, whichever of its databases saw it."""
    return f"{rule}:server:{server_id}:slot:{slot_name}"


def source_key(rule: str, source_id: int) -> str:
    """Key a source's alert."""
    return f"{rule}:source:{source_id}"


def pipeline_key(rule: str, pipeline_id: int) -> str:
    """Key a pipeline's alert: one per pipeline, however many share its source."""
    return f"{rule}:pipeline:{pipeline_id}"


def _reached(value: float, threshold: int | None, held: bool) -> bool:
    """Tell whether a value is at its threshold, or (for an alert already firing) within 10 %."""
    if threshold is None:
        return False
    return value >= (threshold * HYSTERESIS if held else threshold)


def _graded(
    value: float, critical: int | None, warning: int | None, was: str | None
) -> tuple[str, int] | None:
    """Say which severity a size or a time reaches, and at which threshold: critical holds
    only a critical alert (`was`), warning any firing one; None when neither is reached."""
    for severity, threshold in (("critical", critical), ("warning", warning)):
        keeps = was == "critical" if severity == "critical" else was is not None
        if threshold is not None and _reached(value, threshold, keeps):
            return severity, threshold
    return None


@dataclass(frozen=True)
class SlotFacts:
    """One slot as the latest sample of its server saw it, and where it belongs."""

    slot: SlotLike
    inactive_since: datetime | None
    wal_status: str | None
    trend: Mapping[str, Any]
    forecast: Forecast
    server_id: int
    server_name: str
    source_id: int
    source_name: str
    # The pipeline that reads the slot, as a message tells it: "pipeline `x` is paused since
    # …" or "pipeline `x` (START) should be reading it"; None when no pipeline does.
    reader: str | None = None


def slot_findings(
    facts: SlotFacts, settings: Settings, firing: Mapping[str, str], now: datetime
) -> list[Finding]:
    """Say which slot rules fire for one slot; `firing` maps a firing key to its severity."""
    slot = facts.slot
    found: list[Finding] = []

    def add(
        rule: str, severity: str, value: float | None, threshold: float | None, text: str
    ) -> None:
        found.append(
            Finding(
                rule,
                slot_key(rule, facts.server_id, slot.slot_name),
                severity,
                value,
                threshold,
                text,
                facts.source_id,
                facts.source_name,
                facts.server_id,
                slot.slot_name,
            )
        )

    def named() -> str:
        return f"slot `{slot.slot_name}` on {facts.server_name}"

    def held(rule: str) -> str | None:
        return firing.get(slot_key(rule, facts.server_id, slot.slot_name))

    retained = slot.retained_bytes
    if retained is not None:
        graded = _graded(
            retained,
            settings.retained_critical_bytes,
            settings.retained_warning_bytes,
            held("retained_wal"),
        )
        if graded is not None:
            severity, threshold = graded
            add(
                "retained_wal",
                severity,
                retained,
                threshold,
                f"{named()} retains {pg_size_pretty(retained)} of WAL "
                f"({severity} at {pg_size_pretty(threshold)})",
            )

    minutes = settings.slot_inactive_minutes
    if minutes is not None and not slot.active and facts.inactive_since is not None:
        idle = (now - facts.inactive_since).total_seconds()
        if idle >= minutes * 60:
            add(
                "slot_inactive",
                "warning",
                round(idle / 60, 1),
                minutes,
                f"{named()} has had no consumer for {duration_words(idle)} "
                f"(warning at {minutes} min); it keeps every byte of WAL written meanwhile"
                + (f"; {facts.reader}" if facts.reader else ""),
            )

    # The value says which: 1 unreserved, 2 lost (going from one to the other is told).
    if facts.wal_status == "lost":
        add(
            "slot_wal_status",
            "critical",
            2,
            None,
            f"{named()} is lost: PostgreSQL removed WAL it still needed; its pipeline needs "
            "REFRESH",
        )
    elif facts.wal_status == "unreserved":
        add(
            "slot_wal_status",
            "critical",
            1,
            None,
            f"{named()} is unreserved: it retains more than max_slot_wal_keep_size and is lost "
            "at the next checkpoint unless its consumer catches up",
        )

    minutes = settings.consumer_stalled_minutes
    flush_since, wal, wal_then = (
        facts.trend.get(k) for k in ("flush_since", "wal", "wal_at_flush")
    )
    if minutes is not None and slot.active and flush_since is not None:
        stalled = now.timestamp() - flush_since
        if stalled >= minutes * 60 and wal is not None and wal_then is not None and wal > wal_then:
            add(
                "consumer_stalled",
                "warning",
                round(stalled / 60, 1),
                minutes,
                f"{named()} has a consumer connected that has confirmed nothing for "
                f"{duration_words(stalled)} while {pg_size_pretty(wal - wal_then)} of WAL was "
                f"written (warning at {minutes} min)"
                + (f"; {facts.reader}" if facts.reader else ""),
            )

    hours = settings.forecast_hours
    soonest = facts.forecast.soonest()
    growth = facts.forecast.growth_bytes_per_hour
    if hours is not None and soonest is not None and growth is not None:
        what, when = soonest
        left = (when - now).total_seconds() / 3600
        limit = hours / HYSTERESIS if held("exhaustion_forecast") else hours
        if left <= limit:
            goal = _goal(settings, what)
            add(
                "exhaustion_forecast",
                "critical" if left < 1 else "warning",
                round(left, 2),
                hours,
                f"{named()} {goal} in about {duration_words(left * 3600)} at "
                f"{pg_size_pretty(int(growth))}/h",
            )
    return found


def source_findings(
    source_id: int,
    source_name: str,
    consecutive_failures: int,
    last_error: str | None,
    settings: Settings,
) -> list[Finding]:
    """Say which source rules fire for one source."""
    rounds = settings.unreachable_rounds
    if rounds is None or consecutive_failures < rounds:
        return []
    return [
        Finding(
            "source_unreachable",
            source_key("source_unreachable", source_id),
            "critical",
            consecutive_failures,
            rounds,
            f"source `{source_name}` failed {consecutive_failures} rounds in a row "
            f"(critical at {rounds}): {last_error or 'unknown error'}",
            source_id,
            source_name,
        )
    ]


@dataclass(frozen=True)
class PipelineFacts:
    """One pipeline as the rules see it: what is wanted of it, what its engine says it is
    doing (engine_state's words), and its source."""

    pipeline_id: int
    name: str
    wanted: str  # START, PAUSE or REFRESH
    state: str
    reason: str | None
    since: datetime | None  # of the state, as its engine wrote it
    owned: bool  # a live engine owns it: its lag is measured
    lag_seconds: float | None
    lag_bytes: int | None
    source_id: int
    source_name: str


def pipeline_findings(
    facts: PipelineFacts, settings: Settings, firing: Mapping[str, str], now: datetime
) -> list[Finding]:
    """Say which pipeline rules fire for one pipeline; `firing` maps a firing key to its
    severity."""
    found: list[Finding] = []
    named = f"pipeline `{facts.name}`"

    def add(
        rule: str, severity: str, value: float | None, threshold: float | None, text: str
    ) -> None:
        key = pipeline_key(rule, facts.pipeline_id)
        found.append(
            Finding(rule, key, severity, value, threshold, text, facts.source_id, facts.source_name)
        )

    minutes = settings.pipeline_failed_minutes
    if minutes is not None and facts.wanted != "PAUSE" and facts.state in ("failed", "retrying"):
        lasted = (now - facts.since).total_seconds() if facts.since is not None else 0.0
        why = facts.reason or "its engine gave no reason"
        # Once firing, it holds while the pipeline goes from failed to retrying and back
        # (each change starts the state's time afresh): it resolves when the pipeline runs.
        held = pipeline_key("pipeline_failed", facts.pipeline_id) in firing
        if facts.state == "failed":
            add(
                "pipeline_failed",
                "critical",
                round(lasted / 60, 1),
                None,
                f"{named} failed {duration_words(lasted)} ago: {why}",
            )
        elif held or lasted >= minutes * 60:
            add(
                "pipeline_failed",
                "critical",
                round(lasted / 60, 1),
                minutes,
                f"{named} has been retrying for {duration_words(lasted)} (critical at "
                f"{minutes} min): {why}",
            )

    lag = facts.lag_seconds
    if facts.owned and lag is not None:
        graded = _graded(
            lag,
            settings.pipeline_lag_critical_seconds,
            settings.pipeline_lag_warning_seconds,
            firing.get(pipeline_key("pipeline_lag", facts.pipeline_id)),
        )
        if graded is not None:
            severity, threshold = graded
            behind = duration_words(lag)
            if facts.lag_bytes is not None:
                behind += f" and {pg_size_pretty(facts.lag_bytes)} of WAL"
            add(
                "pipeline_lag",
                severity,
                round(lag, 1),
                threshold,
                f"{named} is {behind} behind its source ({severity} at "
                f"{duration_words(threshold)})",
            )
    return found


NAMED_PIPELINE = re.compile(r"pipeline `([^`]+)`")


def pipeline_named(message: str | None, pipeline_id: int | None) -> str:
    """Name a pipeline as an alert's message does (a deleted pipeline's alert knows no more)."""
    match = NAMED_PIPELINE.search(message or "")
    return match.group(1) if match else f"#{pipeline_id}"


def pipeline_of(key: str) -> int | None:
    """Return the pipeline an alert's key is about, or None for a slot's or source's key."""
    _, kind, number = (key.split(":", 2) + ["", ""])[:3]
    return int(number) if kind == "pipeline" and number.isdigit() else None


def resolved_pipeline_message(
    rule: str,
    name: str,
    facts: PipelineFacts | None,
    settings: Settings | None,
) -> str:
    """Say what resolved a pipeline's alert, from what its engine says now (None: the
    pipeline was deleted)."""
    named = f"pipeline `{name}`"
    if facts is None or settings is None:
        return f"{named} was deleted"
    state = f"{named} is {facts.state}"
    if facts.state == "stopped" and facts.reason:
        state += f": {facts.reason}"
    if rule == "pipeline_failed":
        if facts.wanted == "PAUSE":
            return f"{named}: PAUSE requested, and it is {facts.state}"
        if settings.pipeline_failed_minutes is None:
            return f"{named}: the failed pipeline rule is off"
        return state
    if rule == "pipeline_lag":
        lag = facts.lag_seconds
        if not facts.owned:
            return f"{state}; no engine reads it, so its lag is not measured"
        if lag is None:
            return f"{state}; its lag is not known yet"
        warning = settings.pipeline_lag_warning_seconds
        threshold = warning or settings.pipeline_lag_critical_seconds
        if threshold is None:
            return f"{named}: the pipeline lag rule is off"
        severity = "warning" if warning else "critical"
        return (
            f"{named} is {duration_words(lag)} behind its source now ({severity} at "
            f"{duration_words(threshold)})"
        )
    return f"{named}: {rule} no longer fires"


def _goal(settings: Settings, what: str) -> str:
    if what == "lost":
        return "is lost"
    return f"reaches the critical {pg_size_pretty(settings.retained_critical_bytes)}"


def resolved_slot_message(
    rule: str,
    named: str,
    facts: SlotFacts | None,
    settings: Settings | None,
    now: datetime,
    created_again: bool = False,
) -> str:
    """Say what resolved a slot's alert, from the slot as the latest sample saw it (None: the
    slot is gone from its server), in its own words rather than the firing's; a slot dropped
    and created again since the alert fired is a new slot, and the words say so."""
    if facts is None or settings is None:
        return f"{named} is gone: it was dropped"
    slot = facts.slot
    if created_again:
        new = {
            "retained_wal": f"the new one retains {pg_size_pretty(slot.retained_bytes)}",
            "slot_inactive": "the new one "
            + ("has a consumer" if slot.active else "counts its time without one afresh"),
            "slot_wal_status": f"the new one is {facts.wal_status or 'reserved'}",
            "consumer_stalled": "its consumer's progress is counted afresh",
            "exhaustion_forecast": "its growth is measured afresh",
        }.get(rule, f"{rule} no longer fires")
        return f"{named} was dropped and created again: {new}"
    if rule == "retained_wal":
        threshold = settings.retained_warning_bytes or settings.retained_critical_bytes
        if threshold is None:
            return f"{named}: the retained WAL rule is off"
        severity = "warning" if settings.retained_warning_bytes else "critical"
        return (
            f"{named} now retains {pg_size_pretty(slot.retained_bytes)} "
            f"({severity} at {pg_size_pretty(threshold)})"
        )
    if rule == "slot_inactive":
        if slot.active:
            return f"{named} has a consumer again"
        if settings.slot_inactive_minutes is None:
            return f"{named}: the rule for slots without a consumer is off"
        return (
            f"{named} moved on with no consumer seen: one came between two samples (or the "
            "slot was created again), and its time without one counts afresh"
        )
    if rule == "slot_wal_status":
        return f"{named} is {facts.wal_status or 'no longer unreserved or lost'} again"
    if rule == "consumer_stalled":
        if not slot.active:
            return f"{named} has no consumer now: the rule for slots without one watches it"
        if settings.consumer_stalled_minutes is None:
            return f"{named}: the stalled consumer rule is off"
        return (
            f"{named} has a consumer confirming again "
            f"({pg_size_pretty(slot.lag_bytes)} behind the server)"
        )
    if rule == "exhaustion_forecast":
        hours = settings.forecast_hours
        if hours is None:
            return f"{named}: the forecast rule is off"
        growth = facts.forecast.growth_bytes_per_hour
        soonest = facts.forecast.soonest()
        if growth is None:
            heading = "no steady growth"
        elif soonest is None:
            heading = f"grows {pg_size_pretty(int(growth))}/h, not there within a year"
        else:
            what, when = soonest
            left = (when - now).total_seconds()
            heading = (
                f"{_goal(settings, what)} in about {duration_words(left)} at "
                f"{pg_size_pretty(int(growth))}/h"
            )
        return f"forecast: {named} no longer within {hours} h (now {heading})"
    return f"{named}: {rule} no longer fires"


def resolved_source_message(
    source_name: str,
    consecutive_failures: int | None,
    failed_rounds: float | None,
    settings: Settings | None,
) -> str:
    """Say what resolved a source's alert (None settings: the source was deleted)."""
    if settings is None:
        return f"source `{source_name}` was deleted"
    if not consecutive_failures:
        rounds = int(failed_rounds or 0)
        return (
            f"source `{source_name}` answers again after failing {rounds} "
            f"round{'s' if rounds != 1 else ''}"
        )
    if settings.unreachable_rounds is None:
        return f"source `{source_name}`: the unreachable rule is off"
    return (
        f"source `{source_name}` has failed {consecutive_failures} rounds, under the "
        f"{settings.unreachable_rounds} that fire"
    )
