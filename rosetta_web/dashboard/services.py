"""What the dashboard shows: every source worst first, and the counts above them."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import Row, case, func

from ..extensions import db
from ..models import MONITOR_STATUSES, PIPELINE_STATUSES, Pipeline, Source, SourceState

FAILING = ("ERROR", "BACKOFF")


def sources_worst_first() -> list[Row[Any]]:
    """Return every source's name and latest state: failing first, then most WAL retained.

    Plain rows of the columns shown, not ORM objects: a thousand sources load in milliseconds.
    """
    stmt = (
        db.select(
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
            SourceState.retained_history,
        )
        .outerjoin(SourceState)
        .order_by(
            case((SourceState.status.in_(FAILING), 0), else_=1),
            SourceState.retained_bytes.desc().nulls_last(),
            Source.name,
        )
    )
    return list(db.session.execute(stmt))


def summary(rows: list[Row[Any]]) -> dict[str, Any]:
    """Count sources by monitor status and inactive slots, from rows already read."""
    statuses = Counter(row.status for row in rows)
    pipelines = dict.fromkeys(PIPELINE_STATUSES, 0)
    stmt = db.select(Pipeline.status, db.func.count(Pipeline.id)).group_by(Pipeline.status)
    pipelines.update({status: count for status, count in db.session.execute(stmt)})
    return {
        "sources": {status: statuses.get(status, 0) for status in MONITOR_STATUSES},
        "inactive_slots": sum(row.inactive_slot_count or 0 for row in rows),
        "pipelines": pipelines,
    }
