"""Source pages: list, create, edit, delete, and each source's monitor page."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app, render_template, request

from ..crud import register_crud_views
from ..timeutil import utcnow
from . import bp
from .services import SOURCES, latest_slots, next_round_at

register_crud_views(bp, SOURCES)


@bp.get("/<id:entity_id>")
def detail(entity_id: int) -> str:
    """Show a source: the monitor's latest state, its WAL charts, its slots, its connection."""
    source = SOURCES.get(entity_id)
    interval_s = current_app.config["WAL_MONITOR_INTERVAL_SECONDS"]
    return render_template(
        "sources/detail.html",
        source=source,
        state=source.state,
        slots=latest_slots(source),
        resource=SOURCES,
        next_round_at=next_round_at(interval_s),
        now=utcnow(),
        interval=timedelta(seconds=interval_s),
        current_range="custom" if request.args.get("start") else request.args.get("range", "24h"),
    )
