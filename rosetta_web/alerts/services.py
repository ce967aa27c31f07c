"""Alerts: what the pages and the API read and change about alerts, silences and the rule
settings. The engine that raises them is rosetta_web/alerts/engine/."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Float, bindparam, case, cast, func, select, true

from ..audit import services as audit
from ..errors import DomainError, NotFound
from ..extensions import built_once, db
from ..forms import MAX_INT
from ..models import (
    ALERT_RULES,
    ALERT_SETTING_KEYS,
    ALERT_STATES,
    Alert,
    AlertSettings,
    Server,
    Silence,
    SlotMetric,
    Source,
)
from ..shapes import ChoiceArg, IntArg, TextArg
from ..timeutil import MOMENT_WORDS, as_utc, isoformat, utcnow
from .engine import trends
from .engine.evaluation import attach_silences
from .engine.rules import Settings
from .engine.settings import load_settings

if TYPE_CHECKING:  # the forms list sources through this module; only their types are read here
    from .forms import AlertSettingsForm, SilenceForm

PER_PAGE = 50
# The alerts' filters and paging, as the API reads them and the history page too. Pages go
# up to far past any history, which keeps the OFFSET a number every database takes.
STATE = ChoiceArg("state", choices=(*ALERT_STATES, "all"), default="all")
SOURCE_ID = IntArg("source_id", minimum=1, maximum=MAX_INT)
RULE = ChoiceArg("rule", choices=ALERT_RULES)
START = TextArg(
    "start", description=f"{MOMENT_WORDS}: alerts still firing or resolved at or after it"
)
END = TextArg("end", description=f"{MOMENT_WORDS}: alerts started at or before it")
PAGE = IntArg("page", minimum=1, maximum=1_000_000, default=1)
PAGE_SIZE = IntArg("per_page", minimum=1, maximum=500, default=PER_PAGE)
ALERT_ARGS = (STATE, SOURCE_ID, RULE, START, END, PAGE, PAGE_SIZE)
DELIVERIES_LIMIT = IntArg("limit", minimum=1, maximum=1000, default=50)


# Settings


def current_settings() -> AlertSettings:
    """Return the global rule settings (created with the defaults on first read)."""
    settings = db.session.get(AlertSettings, 1)
    if settings is None:
        # Stored at once, so that every later read finds them; a read alone commits nothing,
        # which would expire every row the page has read so far.
        settings = load_settings()
        db.session.commit()
    return settings


def save_settings(form: AlertSettingsForm) -> AlertSettings:
    """Store a validated settings form."""
    settings = load_settings()
    with audit.change("update", settings) as change:
        for key in ALERT_SETTING_KEYS:
            setattr(settings, key, form[key].data)
        change.record()
        db.session.commit()
    return settings


def effective_settings(source: Source) -> Settings:
    """Return a source's rule settings: the global ones with its overrides applied."""
    return Settings.merged(current_settings(), source.alert_overrides)


# Alerts

SEVERITY_ORDER = case((Alert.severity == "critical", 0), else_=1)


def get_alert(alert_id: int) -> Alert:
    """Return an alert or raise NotFound."""
    alert = db.session.get(Alert, alert_id) if 0 < alert_id < 2**63 else None
    if alert is None:
        raise NotFound("Alert", alert_id)
    attach_silences([alert])
    return alert


def firing_worst_first(source_id: int | None = None) -> list[Alert]:
    """Return the firing alerts: critical first, then the oldest first."""
    stmt = select(Alert).where(Alert.state == "firing")
    if source_id is not None:
        stmt = stmt.where(Alert.source_id == source_id)
    alerts = list(db.session.scalars(stmt.order_by(SEVERITY_ORDER, Alert.started_at, Alert.id)))
    attach_silences(alerts)
    return alerts


@dataclass(frozen=True)
class AlertFilter:
    """What the history shows: by state (firing, resolved, all), source, rule, time range."""

    state: str = "all"
    source_id: int | None = None
    rule: str | None = None
    start: datetime | None = None
    end: datetime | None = None


def history(
    filters: AlertFilter, page: int = 1, per_page: int = PER_PAGE
) -> tuple[list[Alert], int]:
    """Return one page of alerts, newest first, and how many match in all."""
    stmt = select(Alert)
    if filters.state != "all":
        stmt = stmt.where(Alert.state == filters.state)
    if filters.source_id is not None:
        stmt = stmt.where(Alert.source_id == filters.source_id)
    if filters.rule is not None:
        stmt = stmt.where(Alert.rule == filters.rule)
    if filters.start is not None:  # it overlaps the range: still firing or resolved after start
        stmt = stmt.where((Alert.resolved_at.is_(None)) | (Alert.resolved_at >= filters.start))
    if filters.end is not None:
        stmt = stmt.where(Alert.started_at <= filters.end)
    total = db.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    alerts = list(
        db.session.scalars(
            stmt.order_by(Alert.started_at.desc(), Alert.id.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        )
    )
    attach_silences(alerts)
    return alerts, total


def acknowledge(alert: Alert, username: str) -> Alert:
    """Stop an alert's repeats until it resolves; say who and when."""
    with audit.change("ack", target=_alert_target(alert)) as change:
        if alert.state != "firing":
            raise AlertResolved(alert)
        if alert.acknowledged_at is None:
            alert.acknowledged_by = username
            alert.acknowledged_at = utcnow()
            change.record(message=alert.message)
            db.session.commit()
    attach_silences([alert])
    return alert


def _alert_target(alert: Alert) -> audit.Target:
    where = f"{alert.source_name}/{alert.slot_name}" if alert.slot_name else alert.source_name
    return audit.Target("alert", alert.id, f"{alert.rule} on {where}")


class AlertResolved(DomainError):
    """Only a firing alert can be acknowledged."""

    def __init__(self, alert: Alert) -> None:
        super().__init__(f"Alert {alert.id} has resolved; only a firing alert can be acknowledged")
        self.details = {"state": alert.state}


# Silences


def active_silences() -> list[Silence]:
    """Return the silences in force now, ending soonest first."""
    return list(
        db.session.scalars(
            select(Silence).where(Silence.ends_at > utcnow()).order_by(Silence.ends_at, Silence.id)
        )
    )


def create_silence(form: SilenceForm, username: str) -> Silence:
    """Store a validated silence form."""
    source_id = form.source_id.data
    source = db.session.get(Source, source_id)
    if source is None:
        raise NotFound("Source", source_id)
    assert form.ends_at_value is not None
    silence = Silence(
        source_id=source_id,
        rule=form.rule.data or None,
        ends_at=form.ends_at_value,
        comment=form.comment.data or None,
        created_by=username,
    )
    with audit.change("silence", target=audit.target_of(source)) as change:
        db.session.add(silence)
        db.session.flush()
        change.record(
            silence_id=[None, silence.id],
            rule=[None, silence.rule or "every rule"],
            ends_at=[None, isoformat(silence.ends_at)],
            comment=[None, silence.comment],
        )
        db.session.commit()
    return silence


def get_silence(silence_id: int) -> Silence:
    silence = db.session.get(Silence, silence_id) if 0 < silence_id < 2**31 else None
    if silence is None:
        raise NotFound("Silence", silence_id)
    return silence


def end_silence(silence: Silence) -> None:
    """Delete a silence: notifications resume at the next evaluation. The log records it as
    a silence of the source whose end moved to now."""
    source = db.session.get(Source, silence.source_id)
    target = audit.target_of(source) if source else audit.Target("source", silence.source_id)
    with audit.change("silence", target=target) as change:
        change.record(
            message=f"Silence {silence.id} ({silence.rule or 'every rule'}) ended early.",
            silence_id=[silence.id, None],
            ends_at=[isoformat(silence.ends_at), isoformat(utcnow())],
        )
        db.session.delete(silence)
        db.session.commit()


# What a source's page and the API show of the forecast


def attach_forecasts(source: Source, slots: list[SlotMetric]) -> list[SlotMetric]:
    """Set each slot's forecast, against the source's critical threshold; return the slots."""
    server = source.state.server if source.state is not None else None
    if server is None:
        return slots
    critical = effective_settings(source).retained_critical_bytes
    for slot in slots:
        trend = (server.slot_trends or {}).get(slot.slot_name)
        slot.forecast = trends.forecast(trend, critical)
    return slots


def growing_forecasts(
    server_id: int, critical_bytes: int | None
) -> list[tuple[str, trends.Forecast]]:
    """Forecast the slots of a server that grow, against a critical threshold.

    Only their trends are read: the server keeps one per slot in a JSON document, and a page
    of a server with 500 slots draws the few that grow, not all 500.
    """
    trend = func.json_each(Server.slot_trends).table_valued("key", "value").alias("trend")
    if db.session.get_bind().dialect.name == "sqlite":
        growth: Any = func.json_extract(trend.c.value, "$.growth")
    else:
        growth = cast(trend.c.value.op("->>")("growth"), Float)
    rows = db.session.execute(
        select(trend.c.key, trend.c.value)
        .select_from(Server)
        .join(trend, true())
        .where(Server.id == server_id, growth > 0)
    )
    forecasts = []
    for name, value in rows:
        # PostgreSQL's driver hands back the JSON decoded; SQLite, its text.
        figures = value if isinstance(value, dict) else json.loads(value)
        forecasts.append((name, trends.forecast(figures, critical_bytes)))
    return forecasts


def _spans_select() -> Any:
    return (
        select(Alert.rule, Alert.severity, Alert.slot_name, Alert.started_at, Alert.resolved_at)
        .where(
            Alert.source_id == bindparam("source_id"),
            Alert.started_at <= bindparam("end"),
            (Alert.resolved_at.is_(None)) | (Alert.resolved_at >= bindparam("start")),
        )
        .order_by(Alert.started_at)
    )


def alert_spans(source: Source, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Return the periods the source's alerts fired within a range, for its chart."""
    rows = db.session.connection().execute(
        built_once(_spans_select), {"source_id": source.id, "start": start, "end": end}
    )
    return [
        {
            "rule": rule,
            "severity": severity,
            "slot_name": slot_name,
            "start": max(as_utc(started_at), start),
            "end": min(as_utc(resolved_at), end) if resolved_at else end,
        }
        for rule, severity, slot_name, started_at, resolved_at in rows
    ]


# API helpers


def alert_page(filters: AlertFilter, page: int, per_page: int) -> tuple[list[Alert], int]:
    """Return one page of alerts as the API lists them, and how many match in all: the
    history's order (newest first), except the firing alerts alone, which come worst first
    (critical, then the oldest) as /alerts shows them."""
    if filters.state != "firing":
        return history(filters, page, per_page)
    alerts = [
        alert
        for alert in firing_worst_first(filters.source_id)
        if (filters.rule is None or alert.rule == filters.rule)
        and (filters.end is None or as_utc(alert.started_at) <= filters.end)
    ]  # a firing alert overlaps any start: it has not ended
    return alerts[(page - 1) * per_page : page * per_page], len(alerts)


# Page helpers


def banner_counts(now: datetime | None = None) -> dict[str, int]:
    """Count the firing alerts no silence covers, by severity, in one query (every page's
    banner, and `flask rosetta sample`)."""
    now = now or utcnow()
    silenced = (
        select(Silence.id)
        .where(
            Silence.source_id == Alert.source_id,
            Silence.ends_at > now,
            (Silence.rule.is_(None)) | (Silence.rule == Alert.rule),
        )
        .exists()
    )
    counts = {"critical": 0, "warning": 0}
    rows = db.session.execute(
        select(Alert.severity, func.count())
        .where(Alert.state == "firing", ~silenced)
        .group_by(Alert.severity)
    )
    counts.update({severity: count for severity, count in rows})
    return counts


def source_names() -> dict[int, str]:
    """Return every source's name by id, by name (the pages' filters and silences)."""
    rows = db.session.execute(select(Source.id, Source.name).order_by(Source.name))
    return {row.id: row.name for row in rows}
