"""What the dashboard shows: every source worst first, and the counts above them."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlalchemy import Row, case, func, select

from ..alerts.display import ForecastWords, forecast_words
from ..alerts.engine import trends
from ..alerts.engine.rules import Settings
from ..alerts.services import current_settings
from ..extensions import db
from ..models import (
    MONITOR_STATUSES,
    Server,
    SlotMetric,
    Source,
    SourceState,
)
from ..pipelines import progress
from ..timeutil import isoformat, utcnow

FAILING = ("ERROR", "BACKOFF")


def sources_worst_first() -> list[Row[Any]]:
    """Return every source's name and latest state: failing first, then most WAL retained.

    Plain rows of the columns shown, not ORM objects: a thousand sources load in milliseconds.
    """
    stmt = (
        select(
            Source.id,
            Source.name,
            func.coalesce(SourceState.status, "PENDING").label("status"),
            SourceState.last_error,
            SourceState.next_attempt_at,
            SourceState.size_bytes,
            SourceState.retained_bytes,
            SourceState.slot_count,
            SourceState.inactive_slot_count,
            SourceState.last_sampled_at,
            SourceState.retained_sparkline,
            # The readiness flag alone: the whole result is for the source's page.
            Source.readiness["ready"].as_boolean().label("ready"),
        )
        .outerjoin(SourceState)
        .order_by(
            case((SourceState.status.in_(FAILING), 0), else_=1),
            SourceState.retained_bytes.desc().nulls_last(),
            Source.name,
        )
    )
    return list(db.session.execute(stmt))


def every_slot_worst_first() -> list[Row[Any]]:
    """Return every slot of every server once, as its server's last sample saw it: worst first.

    Worst: lost, then unreserved (about to be lost), then the most WAL retained. Each row
    names a source that is a database of the server (the slot's own database's if any).
    """
    slot = SlotMetric
    rank = case((slot.wal_status == "lost", 0), (slot.wal_status == "unreserved", 1), else_=2)
    stmt = (
        select(
            Server.id.label("server_id"),
            Server.address,
            Server.system_identifier,
            Server.max_slot_wal_keep_size,
            slot.slot_name,
            slot.database,
            slot.active,
            slot.inactive_since,
            slot.retained_bytes,
            slot.wal_status,
            slot.safe_wal_size,
            slot.recorded_at,
        )
        .join(slot, (slot.server_id == Server.id) & (slot.recorded_at == Server.last_sampled_at))
        .order_by(rank, slot.retained_bytes.desc().nulls_last(), slot.slot_name)
    )
    rows = list(db.session.execute(stmt))
    if not rows:
        return []
    sources: dict[tuple[int | None, str | None], int] = {}
    overrides: dict[int, dict[str, int | None] | None] = {}
    for server_id, database, source_id, source_overrides in db.session.execute(
        select(SourceState.server_id, Source.pg_database, Source.id, Source.alert_overrides)
        .join(Source)
        .where(SourceState.server_id.is_not(None))
        .order_by(Source.id.desc())
    ):
        sources[(server_id, database)] = source_id
        sources[(server_id, None)] = source_id
        overrides[source_id] = source_overrides
    return [_with_source(row, sources, overrides) for row in rows]


def _with_source(
    row: Any,
    sources: dict[tuple[int | None, str | None], int],
    overrides: dict[int, dict[str, int | None] | None],
) -> Any:
    source_id = sources.get((row.server_id, row.database)) or sources.get((row.server_id, None))
    return SimpleNamespace(
        **row._asdict(),
        source_id=source_id,
        server=row.system_identifier or row.address,
        # The source's own alert settings, for the forecast against its critical threshold.
        alert_overrides=overrides.get(source_id) if source_id is not None else None,
    )


def slot_dict(slot: Any) -> dict[str, Any]:
    """Return a slot of the dashboard as the API's summary shows it."""
    return {
        "source_id": slot.source_id,
        "server": slot.server,
        "slot_name": slot.slot_name,
        "database": slot.database,
        "retained_bytes": slot.retained_bytes,
        "active": slot.active,
        "inactive_since": isoformat(slot.inactive_since),
        "wal_status": slot.wal_status,
    }


def dashboard_summary(slots: list[Any] | None = None) -> dict[str, Any]:
    """Count sources and pipelines by status (and by engine state, and those behind) and slots
    once per server; name the worst slot and the pipeline furthest behind."""
    slots = every_slot_worst_first() if slots is None else slots
    statuses = dict.fromkeys(MONITOR_STATUSES, 0)
    stmt = (
        select(func.coalesce(SourceState.status, "PENDING"), func.count(Source.id))
        .outerjoin(SourceState)
        .group_by(func.coalesce(SourceState.status, "PENDING"))
    )
    statuses.update({status: count for status, count in db.session.execute(stmt)})
    pipelines = progress.pipeline_summary()
    return {
        "sources": statuses,
        "slots": {"total": len(slots), "inactive": sum(1 for slot in slots if not slot.active)},
        "pipelines": pipelines.by_status,
        "worst_slot": slot_dict(slots[0]) if slots else None,
        "pipelines_by_state": pipelines.by_state,
        "pipelines_behind": pipelines.behind,
        "worst_lag": pipelines.worst_lag,
    }


def soonest_forecast(slots: list[Any]) -> tuple[Any, ForecastWords] | None:
    """Return the slot soonest to be lost or to reach its critical threshold, and that in
    words; None when no slot is heading there. Two queries (the servers' trends and the
    global settings), whatever the number of slots."""
    if not slots:
        return None
    server_ids = {slot.server_id for slot in slots}
    trends_by_server = {
        row.id: row.slot_trends
        for row in db.session.execute(
            select(Server.id, Server.slot_trends).where(Server.id.in_(server_ids))
        )
    }
    settings = current_settings()
    now = utcnow()
    soonest: tuple[Any, ForecastWords] | None = None
    for slot in slots:
        critical = Settings.merged(settings, slot.alert_overrides).retained_critical_bytes
        trend = (trends_by_server.get(slot.server_id) or {}).get(slot.slot_name)
        forecast = trends.forecast(trend, critical)
        words = forecast_words(slot.slot_name, forecast, critical, now)
        if words is None or words.when is None:
            continue
        if soonest is None or words.when < (soonest[1].when or words.when):
            soonest = (slot, words)
    return soonest
