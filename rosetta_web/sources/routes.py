"""Source pages: list, create, edit, delete."""

from __future__ import annotations

from flask import render_template

from ..crud import Resource, register_crud_views
from ..extensions import db
from ..models import SlotMetric, Source
from . import bp
from .forms import SourceForm

SOURCES = Resource(
    model=Source,
    form_class=SourceForm,
    label="source",
    plural="sources",
    list_options=(db.joinedload(Source.state),),
)

register_crud_views(bp, SOURCES)


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


@bp.get("/<int:entity_id>")
def detail(entity_id: int) -> str:
    """Show a source: its connection, the monitor's latest state and its slots."""
    source = SOURCES.get(entity_id)
    return render_template(
        "sources/detail.html",
        source=source,
        state=source.state,
        slots=latest_slots(source),
        resource=SOURCES,
    )
