"""The dashboard page, its list's further rows, and the fragments its htmx refresh gets."""

from __future__ import annotations

from typing import Any

from flask import Response, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from ..alerts.context import firing_banner
from ..htmx import is_htmx, render_page_or_fragment
from ..pipelines.services import alert_settings
from ..timeutil import utcnow
from . import bp
from .services import (
    MAX_ROWS,
    NAME_MAX_LENGTH,
    PAGE_ROWS,
    REFRESHED_ROWS,
    STATES,
    DashboardQuery,
    dashboard_summary,
    read_offset,
    read_query,
    slot_overview,
    source_counts,
    sources_worst_first,
)


@bp.get("/")
def index() -> Response:
    """Show the counts over every source and slot, the firing alerts, the slot soonest to fill
    up, and the worst sources the filters select, a page or more of them; htmx (the filters
    and the refresh) gets the list with the counts out of band."""
    query = read_query(request.args)
    rows = sources_worst_first(query.filter, limit=query.shown + 1)
    response = render_page_or_fragment(
        "dashboard/index.html",
        "dashboard/_poll.html",
        **_counts(query),
        rows=rows[: query.shown],
        offset=0,
        more=len(rows) > query.shown,
    )
    if query.errors and not is_htmx():  # htmx swaps no 4xx: its fragment shows the errors
        response.status_code = 422
    return response


@bp.get("/rows")
def more_rows() -> BaseResponse:
    """Return the next page of the list, to append; a plain GET (a link opened apart) goes to
    the page that lists them."""
    query = read_query(request.args)
    offset = read_offset(request.args)
    if offset is None or query.errors:
        problems = dict(query.errors)
        if offset is None:
            problems["offset"] = f"Give how many rows are shown, from 0 to {MAX_ROWS - 1:,}."
        text = "; ".join(f"{name}: {message}" for name, message in problems.items())
        return Response(text + "\n", status=422, mimetype="text/plain")
    limit = min(PAGE_ROWS, MAX_ROWS - offset)
    page_url = _list_url(query, offset + limit)
    if not is_htmx():
        return redirect(page_url, 303)
    rows = sources_worst_first(query.filter, limit=limit + 1, offset=offset)
    shown = offset + min(len(rows), limit)
    query.shown = shown
    statuses, matching = source_counts(query.filter)
    response = Response(
        render_template(
            "dashboard/_more.html",
            query=query,
            rows=rows[:limit],
            offset=offset,
            more=len(rows) > limit,
            statuses=statuses,
            matching=matching,
            refreshed_at=utcnow(),
            **_constants(),
        )
    )
    # The URL lists what is on screen: opened again, it shows the same rows.
    response.headers["HX-Replace-Url"] = _list_url(query, shown)
    response.vary.add("HX-Request")
    return response


@bp.get("/counts")
def counts() -> str:
    """Return the counts alone, out of band, for the refresh of a list too long to redraw."""
    query = read_query(request.args)
    return render_template("dashboard/_counts.html", **_counts(query))


def _counts(query: DashboardQuery) -> dict[str, Any]:
    """What the counts above the list show, and how many sources the filters select."""
    slots = slot_overview()
    statuses, matching = source_counts(query.filter)
    return {
        "query": query,
        "statuses": statuses,
        "matching": matching,
        "summary": dashboard_summary(slots, statuses),
        "worst_slot": slots.worst,
        "soonest": slots.soonest,
        "alert_counts": firing_banner(),  # the banner's, queried once
        "refreshed_at": utcnow(),
        "behind_seconds": alert_settings().pipeline_lag_warning_seconds,
        **_constants(),
    }


def _constants() -> dict[str, Any]:
    return {
        "states": STATES,
        "page_rows": PAGE_ROWS,
        "refreshed_rows": REFRESHED_ROWS,
        "max_rows": MAX_ROWS,
        "name_max_length": NAME_MAX_LENGTH,
        "list_url": _list_url,
    }


def _list_url(query: DashboardQuery, shown: int) -> str:
    """Return the dashboard's URL listing `shown` rows with the query's filters."""
    args: dict[str, Any] = dict(query.values)
    if shown != PAGE_ROWS:
        args["shown"] = shown
    return url_for("dashboard.index", **args)
