"""Pipeline pages: list, create, edit, delete, and the status buttons."""

from __future__ import annotations

from flask import abort, flash, make_response, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..crud import register_crud_views
from ..htmx import is_htmx
from ..models import PIPELINE_STATUSES
from ..sources.services import SourceNotReady
from ..timeutil import utcnow
from . import bp
from .services import PIPELINES, disagreement, set_status, slot_activity

register_crud_views(bp, PIPELINES)


@bp.route("/<id:entity_id>/status", methods=["POST"])
def change_status(entity_id: int) -> Response | str:
    """Start, pause or refresh a pipeline; htmx gets back only its row."""
    pipeline = PIPELINES.get(entity_id)
    status = request.form.get("status", "").upper()
    if status not in PIPELINE_STATUSES:
        abort(400, f"Status must be one of {', '.join(PIPELINE_STATUSES)}.")
    refusal = None
    try:
        set_status(pipeline, status)
    except SourceNotReady as exc:
        refusal = str(exc)
    if is_htmx():
        response: Response = make_response(
            render_template(
                "pipelines/_row.html", pipeline=pipeline, resource=PIPELINES, refusal=refusal
            )
        )
    else:
        if refusal:
            flash(f"Pipeline '{pipeline.name}' stays {pipeline.status}: {refusal}", "error")
        else:
            flash(f"Pipeline '{pipeline.name}' set to {status}.", "success")
        response = redirect(url_for("pipelines.index"), 303)
    response.vary.add("HX-Request")
    return response


@bp.get("/<id:entity_id>")
def detail(entity_id: int) -> str:
    """Show a pipeline: what it wants, and what its slot is actually doing."""
    pipeline = PIPELINES.get(entity_id)
    now = utcnow()
    return render_template(
        "pipelines/detail.html",
        pipeline=pipeline,
        resource=PIPELINES,
        activity=slot_activity(pipeline),
        disagreement=disagreement(pipeline, now),
        now=now,
    )
