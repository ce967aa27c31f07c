"""The dashboard page and the table fragment its htmx poll refreshes."""

from __future__ import annotations

from werkzeug.wrappers import Response

from ..htmx import render_page_or_fragment
from ..timeutil import utcnow
from . import bp
from .services import sources_worst_first, summary


@bp.get("/")
def index() -> Response:
    """Show every source's health, worst first; htmx polls get the table and the counts."""
    rows = sources_worst_first()
    return render_page_or_fragment(
        "dashboard/index.html",
        "dashboard/_poll.html",
        rows=rows,
        summary=summary(rows),
        refreshed_at=utcnow(),
    )
