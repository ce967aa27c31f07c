"""Sources: their registry entry and what the pages and the API read about them."""

from __future__ import annotations

from datetime import datetime, timedelta

from ..extensions import db
from ..models import MonitorRound, SlotMetric, Source, SourceState
from ..resources import Resource
from ..timeutil import as_utc
from .forms import SourceForm

CONNECTION_FIELDS = {"pg_host", "pg_port", "pg_database", "pg_username", "pg_password"}


def _monitor_from_scratch(source: Source, changed: set[str]) -> None:
    """Give a new source its PENDING state; after a connection change, forget its backoff."""
    if source.state is None:
        source.state = SourceState(status="PENDING", consecutive_failures=0)
    elif changed & CONNECTION_FIELDS:
        # The operator fixed something: try it at the next round, not after the backoff.
        source.state.status = "PENDING"
        source.state.consecutive_failures = 0
        source.state.next_attempt_at = None
        source.state.last_error = None
        # Another server may be further along: no WAL rate across the change.
        source.state.wal_position_bytes = None


SOURCES = Resource(
    model=Source,
    form_class=SourceForm,
    label="source",
    plural="sources",
    list_options=(db.joinedload(Source.state),),
    before_commit=_monitor_from_scratch,
)


def latest_slots(source: Source) -> list[SlotMetric]:
    """Return the source's replication slots as its latest successful sample saw them."""
    if source.state is None or source.state.latest_wal_metric_id is None:
        return []
    stmt = (
        db.select(SlotMetric)
        .where(SlotMetric.wal_metric_id == source.state.latest_wal_metric_id)
        .order_by(SlotMetric.slot_name)
    )
    return list(db.session.scalars(stmt))


def next_round_at(interval_s: int) -> datetime | None:
    """Return when the monitor's next round is due, from when its last round started."""
    last = db.session.scalar(db.select(db.func.max(MonitorRound.started_at)))
    if last is None:
        return None
    return as_utc(last) + timedelta(seconds=interval_s)
