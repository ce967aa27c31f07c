"""Evaluate every alert rule after a round: fire, escalate, repeat, resolve, and queue the
notifications in the outbox in the same transaction.

Evaluations in several processes (the scheduler's leader, a worker serving Sample now, the
CLI) take turns on the settings row, and the partial unique index on firing keys backs that
up: each transition is recorded, and notified, once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.attributes import flag_modified

from ...batching import batches
from ...engines import engine_state, live_engines
from ...extensions import db
from ...models import (
    SEVERITIES,
    Alert,
    AlertSettings,
    Channel,
    Notification,
    Pipeline,
    Server,
    Silence,
    Source,
    SourceState,
)
from ...timeutil import as_utc, utcnow
from . import rules, trends
from .settings import load_settings

log = logging.getLogger(__name__)

# What an evaluation writes on every firing alert.
WRITTEN = (
    "severity",
    "value",
    "threshold",
    "message",
    "source_id",
    "source_name",
    "evaluated_at",
    "clear_since",
)


def wal_status(alert: Alert) -> str | None:
    """The wal_status a slot_wal_status alert is about (its value: 1 unreserved, 2 lost)."""
    if alert.rule != "slot_wal_status":
        return None
    return "lost" if (alert.value or 0) >= 2 else "unreserved"


def rank(severity: str | None) -> int:
    """Order severities: none < warning < critical."""
    return -1 if severity is None else SEVERITIES.index(severity)


def silences_by_source(now: datetime) -> dict[int, list[Silence]]:
    """Return the silences in force now, by source."""
    found: dict[int, list[Silence]] = defaultdict(list)
    for silence in db.session.scalars(select(Silence).where(Silence.ends_at > now)):
        found[silence.source_id].append(silence)
    return found


def silenced_until(
    alert: Alert, silences: dict[int, list[Silence]], now: datetime
) -> datetime | None:
    """Return when the last silence covering the alert ends, or None when none covers it."""
    ends = [
        as_utc(silence.ends_at)
        for silence in silences.get(alert.source_id or 0, ())
        if (silence.rule is None or silence.rule == alert.rule) and as_utc(silence.ends_at) > now
    ]
    return max(ends) if ends else None


def attach_silences(alerts: Iterable[Alert], now: datetime | None = None) -> None:
    """Set each alert's `silenced_until`, as pages and the API show it."""
    now = now or utcnow()
    silences = silences_by_source(now)
    for alert in alerts:
        alert.silenced_until = silenced_until(alert, silences, now)


def source_url(source_id: int | None) -> str:
    """Link to a source's page from outside Rosetta (PUBLIC_URL)."""
    base = current_app.config["PUBLIC_URL"].rstrip("/")
    return f"{base}/sources/{source_id}" if source_id else f"{base}/alerts"


def notify(alert: Alert, event: str, channels: list[Channel], only: set[int] | None = None) -> int:
    """Queue one notification of the alert per channel that wants it; return how many."""
    payload = {"event": event, "alert": alert.to_dict(), "url": source_url(alert.source_id)}
    queued = 0
    for channel in channels:
        if only is not None:
            if channel.id not in only:
                continue
        elif not channel.wants(alert.severity, alert.source_id):
            continue
        db.session.add(
            Notification(
                channel_id=channel.id,
                alert_id=alert.id,
                event=event,
                payload=payload,
                next_attempt_at=alert.evaluated_at,
            )
        )
        queued += 1
    return queued


def _owners(sources: Sequence[Any]) -> dict[int, list[Any]]:
    """Group the sources by server, lowest id first."""
    by_server: dict[int, list[Any]] = defaultdict(list)
    for row in sorted(sources, key=lambda row: row.id):
        if row.server_id is not None:
            by_server[row.server_id].append(row)
    return by_server


def _owner(candidates: list[Any], database: str | None) -> Any:
    """The source an alert about a slot belongs to: the one on the slot's database, if any."""
    for row in candidates:
        if row.pg_database == database:
            return row
    return candidates[0]


@dataclass
class Findings:
    """What should fire now; each source's settings (the global ones with its overrides);
    the servers not sampled lately, whose slot alerts stay as they are; and what the rules
    saw, to say what resolved an alert: every slot of a fresh server (by server and slot
    name), each server's address and last sample, each source's failures, and every
    pipeline (by id) with its source's settings."""

    found: list[rules.Finding]
    merged: dict[int, rules.Settings]
    stale_servers: set[int]
    slots: dict[tuple[int, str], tuple[rules.SlotFacts, rules.Settings]]
    servers: dict[int, tuple[str, datetime]]
    failures: dict[int, int]
    pipelines: dict[int, tuple[rules.PipelineFacts, rules.Settings]]


def _pipelines(
    now: datetime,
) -> tuple[list[rules.PipelineFacts], dict[tuple[int, str], str]]:
    """Read every pipeline with its run and source in one query (and the live engines in
    another): what its engine is doing, and, for each (server, slot), the pipeline that
    reads that slot and what it is doing."""
    engines = live_engines(now)
    rows = db.session.execute(
        select(Pipeline, Source.name, Source.slot_name, SourceState.server_id)
        .join(Source, Source.id == Pipeline.source_id)
        .outerjoin(SourceState, SourceState.source_id == Source.id)
        .options(joinedload(Pipeline.run))
        .order_by(Pipeline.status != "PAUSE", Pipeline.name)  # a running reader wins
    )
    found: list[rules.PipelineFacts] = []
    readers: dict[tuple[int, str], str] = {}
    for pipeline, source_name, slot_name, server_id in rows:
        run = pipeline.run
        engine = engine_state(pipeline, engines)
        # Its figures count while a live engine owns it (engine_state gives that owner).
        measured = run if engine.owner is not None else None
        found.append(
            rules.PipelineFacts(
                pipeline_id=pipeline.id,
                name=pipeline.name,
                wanted=pipeline.status,
                state=engine.state,
                reason=engine.reason,
                since=engine.since,
                owned=measured is not None,
                lag_seconds=measured.lag_seconds if measured is not None else None,
                lag_bytes=measured.lag_bytes if measured is not None else None,
                source_id=pipeline.source_id,
                source_name=source_name,
            )
        )
        if slot_name is None or server_id is None:
            continue
        if pipeline.status == "PAUSE":
            paused = run is not None and run.state == "paused"
            since = run.since if run is not None and paused else pipeline.updated_at
            text = f"pipeline `{pipeline.name}` is paused since {as_utc(since):%Y-%m-%d %H:%M} UTC"
        else:
            text = f"pipeline `{pipeline.name}` ({pipeline.status}) should be reading it"
        readers[server_id, slot_name] = text
    return found, readers


def findings(settings: AlertSettings, firing: dict[str, str], now: datetime) -> Findings:
    """Say what should be firing now, from every source's state and every server's slots."""
    sources = db.session.execute(
        select(
            Source.id,
            Source.name,
            Source.pg_database,
            Source.alert_overrides,
            SourceState.server_id,
            SourceState.consecutive_failures,
            SourceState.last_error,
        ).outerjoin(SourceState)
    ).all()
    merged = {row.id: rules.Settings.merged(settings, row.alert_overrides) for row in sources}
    found: list[rules.Finding] = []
    for row in sources:
        found += rules.source_findings(
            row.id, row.name, row.consecutive_failures or 0, row.last_error, merged[row.id]
        )
    by_server = _owners(sources)
    # Each server's latest slots, as its trends keep them: one small row per server, no pass
    # over the slot history.
    # A server not sampled for two rounds (its sources fail: source_unreachable says so)
    # keeps its slot alerts as they are: its figures are old, and the rules that count time
    # (no consumer for, stalled for, lost in) would count on from them.
    config = current_app.config
    fresh = timedelta(
        seconds=2 * config["WAL_MONITOR_INTERVAL_SECONDS"] + config["WAL_MONITOR_TIMEOUT_SECONDS"]
    )
    pipelines, readers = _pipelines(now)
    stale: set[int] = set()
    seen: dict[tuple[int, str], tuple[rules.SlotFacts, rules.Settings]] = {}
    servers: dict[int, tuple[str, datetime]] = {}
    for server in db.session.execute(
        select(Server.id, Server.address, Server.last_sampled_at, Server.slot_trends).where(
            Server.id.in_(select(SourceState.server_id)), Server.last_sampled_at.is_not(None)
        )
    ):
        if server.id not in by_server:
            continue
        sampled_at = as_utc(server.last_sampled_at)
        servers[server.id] = (server.address, sampled_at)
        if now - sampled_at > fresh:
            stale.add(server.id)
            continue
        for name, trend in (server.slot_trends or {}).items():
            slot = trends.LatestSlot.of(name, trend)
            if slot is None:
                continue
            owner = _owner(by_server[server.id], slot.database)
            own = merged[owner.id]
            facts = rules.SlotFacts(
                slot=slot,
                inactive_since=slot.inactive_since,
                wal_status=slot.wal_status,
                trend=trend,
                forecast=trends.forecast(trend, own.retained_critical_bytes),
                server_id=server.id,
                server_name=server.address,
                source_id=owner.id,
                source_name=owner.name,
                reader=readers.get((server.id, name)),
            )
            seen[server.id, name] = (facts, own)
            found += rules.slot_findings(facts, own, firing, now)
    # A pipeline's alerts belong to its source, whose overrides apply.
    by_pipeline: dict[int, tuple[rules.PipelineFacts, rules.Settings]] = {}
    for pipeline in pipelines:
        own = merged.get(pipeline.source_id) or rules.Settings.merged(settings, None)
        by_pipeline[pipeline.pipeline_id] = (pipeline, own)
        found += rules.pipeline_findings(pipeline, own, firing, now)
    failures = {row.id: row.consecutive_failures or 0 for row in sources}
    return Findings(found, merged, stale, seen, servers, failures, by_pipeline)


def resolution(alert: Alert, result: Findings, now: datetime) -> str:
    """Say what resolved an alert, in its own words, from what this evaluation saw."""
    pipeline_id = rules.pipeline_of(alert.key)
    if pipeline_id is not None:
        pipeline, its = result.pipelines.get(pipeline_id, (None, None))
        if pipeline is None:  # deleted: its last message still names it
            name = rules.pipeline_named(alert.message, pipeline_id)
        else:
            name = pipeline.name
        return rules.resolved_pipeline_message(alert.rule, name, pipeline, its)
    if alert.slot_name is None:
        source = alert.source_id
        return rules.resolved_source_message(
            alert.source_name,
            result.failures.get(source) if source is not None else None,
            alert.value,
            result.merged.get(source) if source is not None else None,
        )
    server = result.servers.get(alert.server_id or 0)
    if server is None:
        return f"slot `{alert.slot_name}`: no source on its server is left to watch it"
    named = f"slot `{alert.slot_name}` on {server[0]}"
    facts, own = result.slots.get((alert.server_id or 0, alert.slot_name), (None, None))
    series = facts.trend.get("series") if facts is not None else None
    created_again = series is not None and series > as_utc(alert.started_at).timestamp()
    return rules.resolved_slot_message(alert.rule, named, facts, own, now, created_again)


def held_clear(alert: Alert, result: Findings) -> bool:
    """Tell whether an alert that no longer fires stays firing: until a second sample of its
    server, two minutes after the first, finds it clear too. The first clear sample's time
    is noted on the alert."""
    if alert.rule not in rules.HELD_OVER_TWO_SAMPLES or alert.server_id is None:
        return False
    facts, own = result.slots.get((alert.server_id, alert.slot_name or ""), (None, None))
    if facts is None or own is None or own.forecast_hours is None:
        return False  # the slot is gone, or the rule is off: nothing to wait for
    sampled_at = result.servers[alert.server_id][1]
    if alert.clear_since is None:
        alert.clear_since = sampled_at
        return True
    return sampled_at - as_utc(alert.clear_since) < rules.HELD_CLEAR


def evaluate(now: datetime | None = None) -> int:
    """Evaluate every rule, record the transitions and queue their notifications in one
    transaction; return how many notifications were queued."""
    now = now or utcnow()
    db.session.rollback()  # a fresh transaction, whose first statement takes the lock
    try:
        settings = load_settings(lock=True, now=now)
        firing = {
            alert.key: alert
            for alert in db.session.scalars(select(Alert).where(Alert.state == "firing"))
        }
        result = findings(settings, {key: alert.severity for key, alert in firing.items()}, now)
        found, merged = result.found, result.merged
        channels = list(db.session.scalars(select(Channel).order_by(Channel.id)))
        silences = silences_by_source(now)
        queued = 0
        current: dict[str, Alert] = {}
        for finding in found:
            if finding.key in current:
                continue  # one finding per key (a slot seen twice in one sample cannot be)
            alert = firing.pop(finding.key, None)
            if alert is None:
                alert = Alert(
                    key=finding.key,
                    rule=finding.rule,
                    state="firing",
                    started_at=now,
                    severity=finding.severity,
                    server_id=finding.server_id,
                    slot_name=finding.slot_name,
                )
                db.session.add(alert)
            alert.severity = finding.severity
            alert.value = finding.value
            alert.threshold = finding.threshold
            alert.message = finding.message[:1000]
            alert.source_id = finding.source_id
            alert.source_name = finding.source_name
            alert.evaluated_at = now
            alert.clear_since = None
            # The same columns on every firing alert, changed or not: the flush then writes
            # them all in one statement, not one per run of alerts with the same changes.
            for name in WRITTEN:
                flag_modified(alert, name)
            current[finding.key] = alert
        db.session.flush()  # new alerts get their ids
        for alert in current.values():
            until = silenced_until(alert, silences, now)
            alert.silenced_until = until
            if until is not None:
                continue  # held back; told when the silence ends, if it still fires
            own = merged.get(alert.source_id or 0)
            repeat = (own or rules.Settings.merged(settings, None)).repeat_minutes
            event: str
            if rank(alert.severity) > rank(alert.notified_severity) or (
                alert.rule == "slot_wal_status" and alert.notified_wal_status != wal_status(alert)
            ):
                event = "firing"  # new, escalated (unreserved to lost), or fired while silenced
            elif (
                repeat is not None
                and alert.acknowledged_at is None
                and alert.notified_at is not None
                and now - as_utc(alert.notified_at) >= timedelta(minutes=repeat)
            ):
                event = "repeat"
            else:
                continue
            alert.notified_at = now
            alert.notified_severity = alert.severity
            alert.notified_wal_status = wal_status(alert)
            # The same columns on every alert told: one statement for all of them.
            for name in ("notified_severity", "notified_wal_status"):
                flag_modified(alert, name)
            queued += notify(alert, event, channels)
        # What no longer fires resolves (but a stale server's slot alerts are held as they
        # are); whoever heard it fire hears it resolve.
        gone = []
        for alert in firing.values():
            if alert.server_id in result.stale_servers or held_clear(alert, result):
                continue
            gone.append(alert)
        told: dict[int, set[int]] = {alert.id: set() for alert in gone}
        for batch in batches(sorted(told)):
            rows = db.session.execute(
                select(Notification.alert_id, Notification.channel_id)
                .where(Notification.alert_id.in_(batch))
                .distinct()
            )
            for alert_id, channel_id in rows:
                if alert_id is not None:
                    told[alert_id].add(channel_id)
        for alert in gone:
            alert.state = "resolved"
            alert.resolved_at = now
            alert.evaluated_at = now
            alert.clear_since = None
            alert.resolved_message = resolution(alert, result, now)[:1000]
            alert.silenced_until = silenced_until(alert, silences, now)
            if told[alert.id]:
                queued += notify(alert, "resolved", channels, only=told[alert.id])
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    if current or gone:
        log.debug(
            "alerts: %d firing, %d resolved, %d notifications queued",
            len(current),
            len(gone),
            queued,
        )
    return queued
