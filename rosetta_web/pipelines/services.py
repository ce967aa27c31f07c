"""Pipelines: their registry entry and the desired status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import joinedload
from sqlalchemy.sql import ColumnElement

from ..alerts.engine.trends import LatestSlot
from ..audit import services as audit
from ..extensions import db
from ..formatting import duration_words
from ..forms import EntityForm, SelectChoice
from ..models import Destination, Pipeline, Server, SlotMetric, Source, SourceState
from ..resources import Resource
from ..sources.services import require_ready
from ..timeutil import as_utc, utcnow
from .forms import PipelineForm


def _fill_choices(form: EntityForm) -> None:
    """List sources and destinations by name in the form's selects."""
    assert isinstance(form, PipelineForm)
    placeholder = [SelectChoice(0, "— choose —")]
    for field, model in ((form.source_id, Source), (form.destination_id, Destination)):
        rows = db.session.execute(select(model.id, model.name).order_by(model.name))
        field.choices = placeholder + [SelectChoice(row.id, row.name) for row in rows]


def _ready_to_run(pipeline: Pipeline, changed: set[str]) -> None:
    """A save that makes a pipeline START or REFRESH waits for its source's readiness too."""
    if changed & {"status", "source_id"} and pipeline.status in RUNNING:
        with db.session.no_autoflush:  # nothing of the save is written before the verdict
            source = db.session.get(Source, pipeline.source_id)
            if source is not None:
                require_ready(source)


PIPELINES = Resource(
    model=Pipeline,
    form_class=PipelineForm,
    label="pipeline",
    plural="pipelines",
    list_options=(
        joinedload(Pipeline.source).joinedload(Source.state).joinedload(SourceState.server),
        joinedload(Pipeline.destination),
    ),
    prepare_form=_fill_choices,
    before_commit=_ready_to_run,
)

# The statuses that ask a consumer to read the source's slot.
RUNNING = ("START", "REFRESH")


def set_status(pipeline: Pipeline, status: str) -> Pipeline:
    """Change the pipeline's desired status; START and REFRESH only while its source passes
    its readiness checks (SourceNotReady), PAUSE always."""
    with audit.change(status.lower(), pipeline) as change:
        if status in RUNNING:
            require_ready(pipeline.source)
        pipeline.status = status
        change.record()
        db.session.commit()
    return pipeline


@dataclass(frozen=True)
class SlotActivity:
    """What a pipeline's slot is doing, as the monitor last saw it."""

    slot_name: str | None
    sampled_at: datetime | None  # the server's latest sample; None before the first
    slot: LatestSlot | None  # None: no such slot in that sample
    connected_since: datetime | None = None  # the first sample of the current connection

    @property
    def since(self) -> datetime | None:
        """Since when the consumer has been connected, or absent."""
        if self.slot is None:
            return None
        return self.connected_since if self.slot.active else self.slot.inactive_since


def _latest(pipeline: Pipeline) -> tuple[str | None, Server | None, LatestSlot | None]:
    source = pipeline.source
    server = source.state.server if source.state is not None else None
    name = source.slot_name
    if name is None or server is None or server.last_sampled_at is None:
        return name, server, None
    trend = (server.slot_trends or {}).get(name)
    return name, server, LatestSlot.of(name, trend) if trend is not None else None


def slot_activity(pipeline: Pipeline) -> SlotActivity:
    """Read the pipeline's slot from its server's latest sample, and since when its consumer
    has been connected from the history (the earliest retained sample at most)."""
    name, server, slot = _latest(pipeline)
    if server is None or name is None:
        return SlotActivity(name, None, None)
    connected_since = None
    if slot is not None and slot.active:
        same_slot: tuple[ColumnElement[bool], ...] = (
            SlotMetric.server_id == server.id,
            SlotMetric.slot_name == name,
        )
        if slot.series_started_at is not None:  # not before the slot was created again
            same_slot += (SlotMetric.recorded_at >= slot.series_started_at,)
        last_idle = (
            select(func.max(SlotMetric.recorded_at))
            .where(*same_slot, SlotMetric.active.is_(False))
            .scalar_subquery()
        )
        stmt = select(func.min(SlotMetric.recorded_at)).where(*same_slot, SlotMetric.active)
        stmt = stmt.where(or_(last_idle.is_(None), SlotMetric.recorded_at > last_idle))
        found = db.session.scalar(stmt)
        connected_since = as_utc(found) if found is not None else None
    return SlotActivity(name, server.last_sampled_at, slot, connected_since)


def disagreement(pipeline: Pipeline, now: datetime) -> str | None:
    """Say when the wanted status and the slot disagree: START or REFRESH wanted with no
    consumer, or PAUSE wanted with one still connected; None when they agree or nothing is
    known yet."""
    name, server, slot = _latest(pipeline)
    if server is None or server.last_sampled_at is None:
        return None
    wanted = pipeline.status
    if name is None:
        return f"{wanted} requested, the source names no slot" if wanted != "PAUSE" else None
    if slot is None:
        return f"{wanted} requested, slot {name} does not exist" if wanted != "PAUSE" else None
    if wanted == "PAUSE":
        return "PAUSE requested, a consumer is still connected" if slot.active else None
    if slot.active:
        return None
    since = slot.inactive_since
    if since is None:
        return f"{wanted} requested, no consumer"
    idle = duration_words((now - as_utc(since)).total_seconds())
    return f"{wanted} requested, no consumer for {idle}"


def slot_disagreement(pipeline: Pipeline) -> str | None:
    """Say, for the pipelines list, when a pipeline's wanted status and its slot disagree."""
    return disagreement(pipeline, utcnow())
