"""The dashboard page and the table fragment its htmx poll refreshes."""

from __future__ import annotations

from werkzeug.wrappers import Response

from ..alerts.context import firing_banner
from ..htmx import render_page_or_fragment
from ..pipelines.services import alert_settings
from ..timeutil import utcnow
from . import bp
from .services import (
    dashboard_summary,
    every_slot_worst_first,
    soonest_forecast,
    sources_worst_first,
)


@bp.get("/")
def index() -> Response:
    """Show every source's health, worst first, the firing alerts and the soonest slot to
    fill up; htmx polls get the table and the counts."""
    slots = every_slot_worst_first()
    return render_page_or_fragment(
        "dashboard/index.html",
        "dashboard/_poll.html",
        rows=sources_worst_first(),
        slots=slots,
        summary=dashboard_summary(slots),
        alert_counts=firing_banner(),  # the banner's, queried once
        soonest=soonest_forecast(slots),
        refreshed_at=utcnow(),
        behind_seconds=alert_settings().pipeline_lag_warning_seconds,
    )
