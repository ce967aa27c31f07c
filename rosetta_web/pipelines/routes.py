"""Pipeline pages: list, create, edit, delete, the status buttons and the engine's state."""

from __future__ import annotations

from flask import abort, flash, make_response, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..crud import register_crud_views
from ..destinations.services import DestinationNotReady
from ..engines import engine_state
from ..errors import DomainError
from ..htmx import is_htmx
from ..models import PIPELINE_STATUSES, Pipeline
from ..sources.services import SourceNotReady
from ..timeutil import utcnow
from . import bp
from . import verify as verifying
from .progress import copy_progress, pipeline_progress
from .services import (
    PIPELINES,
    KeylessTables,
    NothingToRefresh,
    PublicationUnreadable,
    SourceBusy,
    UnknownTables,
    current_lag,
    disagreement,
    lag_warning_seconds,
    set_status,
    skipped_words,
    slot_activity,
)

register_crud_views(bp, PIPELINES)


def _refusal_link(exc: DomainError, pipeline: Pipeline) -> str | None:
    """Where the operator fixes what refused the status: the checks or the other pipeline."""
    if isinstance(exc, SourceNotReady):
        return url_for("sources.detail", entity_id=pipeline.source_id, _anchor="readiness")
    if isinstance(exc, DestinationNotReady):
        return url_for(
            "destinations.detail", entity_id=pipeline.destination_id, _anchor="readiness"
        )
    if isinstance(exc, SourceBusy):
        return url_for("pipelines.detail", entity_id=exc.details["pipeline_id"])
    return None


@bp.route("/<id:entity_id>/status", methods=["POST"])
def change_status(entity_id: int) -> Response | str:
    """Start, pause or refresh a pipeline; htmx gets back only its row, a plain post goes
    back to the list, or to the pipeline's page when it came from there."""
    pipeline = PIPELINES.get(entity_id)
    status = request.form.get("status", "").upper()
    if status not in PIPELINE_STATUSES:
        abort(400, f"Status must be one of {', '.join(PIPELINE_STATUSES)}.")
    refusal = refusal_url = None
    # A REFRESH of the tables Verify found different names them; else of every table.
    tables = request.form.getlist("tables") if status == "REFRESH" else []
    try:
        set_status(pipeline, status, tables or None)
    except (
        SourceNotReady,
        DestinationNotReady,
        SourceBusy,
        NothingToRefresh,
        PublicationUnreadable,
        UnknownTables,
        KeylessTables,
    ) as exc:
        refusal, refusal_url = str(exc), _refusal_link(exc, pipeline)
    if is_htmx():
        response: Response = make_response(
            render_template(
                "pipelines/_row.html",
                pipeline=pipeline,
                resource=PIPELINES,
                refusal=refusal,
                refusal_url=refusal_url,
            )
        )
    else:
        if refusal:
            flash(f"Pipeline '{pipeline.name}' stays {pipeline.status}: {refusal}", "error")
        else:
            skipped = (
                f" {skipped_words(pipeline.refresh_skipped)}" if pipeline.refresh_skipped else ""
            )
            flash(f"Pipeline '{pipeline.name}' set to {status}.{skipped}", "success")
        back = (
            url_for("pipelines.detail", entity_id=pipeline.id)
            if request.form.get("back") == "detail"
            else url_for("pipelines.index")
        )
        response = redirect(back, 303)
    response.vary.add("HX-Request")
    return response


def _live(pipeline: Pipeline) -> dict[str, object]:
    """What the live part of its page shows: the engine's state, lag and last errors, each
    table's rows, the copy's progress, the slot and whether it agrees with the wanted status,
    and when it was read."""
    now = utcnow()
    engine = engine_state(pipeline)
    progress = pipeline_progress(pipeline)
    activity = slot_activity(pipeline)
    return {
        "pipeline": pipeline,
        "engine": engine,
        "progress": progress,
        "lag": current_lag(pipeline, engine),
        "copy": copy_progress(pipeline, progress),
        "errors": progress.errors,
        "activity": activity,
        "disagreement": disagreement(pipeline, now, engine, activity.sampled_at),
        "now": now,
    }


@bp.get("/<id:entity_id>")
def detail(entity_id: int) -> str:
    """Show a pipeline: what it wants, what its engine does and moved, its chart of rows and
    lag over the range in the URL, and what its slot is doing."""
    pipeline = PIPELINES.get(entity_id)
    return render_template(
        "pipelines/detail.html",
        resource=PIPELINES,
        current_range="custom" if request.args.get("start") else request.args.get("range", "24h"),
        behind_seconds=lag_warning_seconds(pipeline.source),
        **{**_live(pipeline), **_verification(pipeline)},
    )


@bp.get("/<id:entity_id>/engine")
def engine(entity_id: int) -> str:
    """Return the live part of the pipeline's page alone, for its page's poll."""
    pipeline = PIPELINES.get(entity_id)
    return render_template("pipelines/_live.html", **_live(pipeline))


def _verification(pipeline: Pipeline, refusal: str | None = None) -> dict[str, object]:
    """What the Verify part of its page shows: the last Verify, or why one was refused."""
    verification = verifying.latest(pipeline)
    return {
        "pipeline": pipeline,
        "verification": verifying.shown(verification) if verification else None,
        "verify_refusal": refusal,
    }


@bp.post("/<id:entity_id>/verify")
def verify(entity_id: int) -> Response | str:
    """Ask an engine process to verify the pipeline; htmx gets back the Verify part of the
    page, a plain post goes back to the page."""
    pipeline = PIPELINES.get(entity_id)
    refusal = None
    try:
        verifying.request_verify(pipeline)
    except verifying.NoEngine as exc:
        refusal = str(exc)
    if is_htmx():
        return render_template("pipelines/_verify.html", **_verification(pipeline, refusal))
    if refusal:
        flash(refusal, "error")
    return redirect(url_for("pipelines.detail", entity_id=pipeline.id, _anchor="verify"), 303)


@bp.get("/<id:entity_id>/verification")
def verification(entity_id: int) -> str:
    """Return the Verify part of the pipeline's page alone, for its poll while one runs."""
    return render_template("pipelines/_verify.html", **_verification(PIPELINES.get(entity_id)))
