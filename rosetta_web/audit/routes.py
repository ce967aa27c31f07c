"""The audit log's page, filtered and paged newest first, and its CSV export."""

from __future__ import annotations

from typing import Any

from flask import Response, request, stream_with_context, url_for

from ..htmx import is_htmx, render_page_or_fragment
from ..models import AUDIT_ACTIONS, AUDIT_TARGET_TYPES, AuditRecord
from ..timeutil import utcnow
from . import bp, services
from .export import csv_chunks

PER_PAGE = 50

# The page of each kind of target, where there is one.
TARGET_PAGES = {
    "source": "sources.detail",
    "destination": "destinations.detail",
    "pipeline": "pipelines.detail",
    "channel": "channels.detail",
}


@bp.get("/")
def index() -> Response:
    """The log, newest first, filtered by actor, action, target and time, a page at a time.
    htmx gets the records section alone."""
    query = services.read_query(request.args, utcnow())
    records: list[AuditRecord] = []
    cursor = None
    if not query.errors:
        found = services.page(query.filters, PER_PAGE, query.after_id)
        records, cursor = found.items, found.next_cursor
    response = render_page_or_fragment(
        "audit/index.html",
        "audit/_records.html",
        query=query,
        records=records,
        next_cursor=cursor,
        accounts=services.account_names(),
        actions=AUDIT_ACTIONS,
        target_types=AUDIT_TARGET_TYPES,
        target_pages=TARGET_PAGES,
    )
    if query.errors and not is_htmx():  # htmx swaps no 4xx: its fragment shows the errors
        response.status_code = 422
    if is_htmx():
        args: dict[str, Any] = dict(query.values)
        if query.after_id is not None:
            args["cursor"] = request.args.get("cursor")
        response.headers["HX-Push-Url"] = url_for("audit.index", **args)
    return response


@bp.get("/export.csv")
def export() -> Response:
    """Every record the filters select, newest first, as CSV (the columns of the API),
    streamed as the database gives it."""
    query = services.read_query(request.args, utcnow())
    if query.errors:
        problems = "; ".join(f"{name}: {message}" for name, message in query.errors.items())
        return Response(problems + "\n", status=422, mimetype="text/plain")
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return Response(
        stream_with_context(csv_chunks(query.filters)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="rosetta-audit-{stamp}.csv"'},
    )
