"""Sources: their registry entry, what the pages and the API read about them, sampling one
by hand, and what follows every round of samples (`after_round`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import joinedload

from ..alerting import delivery, evaluation
from ..errors import NotFound
from ..extensions import db
from ..models import MonitorRound, Server, SlotMetric, Source, SourceState, WalMetric
from ..monitor.probe import Sample
from ..monitor.rounds import Round, sample_sources
from ..resources import Resource
from ..shapes import Declared
from ..timeutil import as_utc
from .forms import SourceForm

log = logging.getLogger(__name__)

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
        source.state.last_attempt_at = None  # sampled again soon, as a new source is
        # Another server may be further along: no WAL rate across the change.
        source.state.wal_position_bytes = None


def _forget_a_server_left_alone(source: Source) -> None:
    """Delete the source's server, with its slot history, when no other source is on it."""
    server_id = source.state.server_id if source.state is not None else None
    if server_id is None:
        return
    others = select(func.count()).where(
        SourceState.server_id == server_id, SourceState.source_id != source.id
    )
    if not db.session.scalar(others):
        db.session.execute(delete(Server).where(Server.id == server_id))


def _check_after_save(source: Source) -> None:
    """Check a source as it is created or edited; a failing check never undoes the save."""
    from .replication import check_now  # it samples through this module after a drop

    check_now(source)


SOURCES = Resource(
    model=Source,
    form_class=SourceForm,
    label="source",
    plural="sources",
    list_options=(joinedload(Source.state),),
    before_commit=_monitor_from_scratch,
    before_delete=_forget_a_server_left_alone,
    after_save=_check_after_save,
)


def server_slots(source: Source) -> tuple[list[SlotMetric], list[SlotMetric]]:
    """Return the slots of the source's server as last sampled: its database's, then the rest.

    Every database of a server sees the same slots, and all of them fill the same disk; the
    others come most WAL retained first.
    """
    server = source.state.server if source.state is not None else None
    if server is None or server.last_sampled_at is None:
        return [], []
    rows = db.session.scalars(
        select(SlotMetric)
        .where(SlotMetric.server_id == server.id, SlotMetric.recorded_at == server.last_sampled_at)
        .order_by(SlotMetric.retained_bytes.desc().nulls_last(), SlotMetric.slot_name)
    )
    own: list[SlotMetric] = []
    others: list[SlotMetric] = []
    for row in rows:
        (own if row.database == source.pg_database else others).append(row)
    return own, others


def latest_slots(source: Source) -> list[SlotMetric]:
    """Return every slot of the source's server as last sampled, its own database's first."""
    own, others = server_slots(source)
    return own + others


def next_round_at(interval_s: int) -> datetime | None:
    """Return when the monitor's next round is due, from when its last round started."""
    last = db.session.scalar(
        select(func.max(MonitorRound.started_at)).where(MonitorRound.manual.is_(False))
    )
    if last is None:
        return None
    return as_utc(last) + timedelta(seconds=interval_s)


@dataclass(frozen=True)
class SampleResult(Declared):
    """A sample taken by hand: whether it worked, why not, the sample and the monitor's state."""

    api_name = "SampleResult"

    ok: bool
    error: str | None
    sample: WalMetric | None
    monitor: SourceState | None


def sample_now(source: Source) -> SampleResult:
    """Sample the source by hand now; return the sample, or why it failed, and its state."""
    samples = after_round(sample_sources(source_id=source.id))
    if not samples:  # deleted meanwhile
        raise NotFound(SOURCES.title, source.id)
    sample = samples[0]
    state = db.session.get(SourceState, source.id)
    metric = None
    if sample.ok and state is not None and state.latest_wal_metric_id is not None:
        metric = db.session.get(WalMetric, state.latest_wal_metric_id)
    return SampleResult(ok=sample.ok, error=sample.error, sample=metric, monitor=state)


def after_round(done: Round) -> list[Sample]:
    """Act on a stored round, whoever sampled it: evaluate the alert rules, deliver what they
    queued, check again the sources whose readiness it contradicts; return its samples.

    Neither failing undoes the round, nor stops the other.
    """
    try:
        # At the time it runs: a late lane must not go back in time.
        if evaluation.evaluate():
            delivery.kick()
    except Exception:
        log.exception("evaluating the alert rules failed; the next round evaluates them again")
    # A slot or publication seen gone (or back) makes a stored readiness wrong: check those
    # sources again now. Imported here: sources.replication imports this module.
    try:
        from .replication import follow_round

        follow_round(done.samples, done.started_at)
    except Exception:
        log.exception("checking sources whose slot or publication changed failed")
    return done.samples
