"""Pipeline pages: list, create, edit, delete, and the status buttons."""

from __future__ import annotations

from flask import abort, flash, make_response, redirect, render_template, request, url_for
from sqlalchemy.orm import joinedload
from werkzeug.wrappers import Response
from wtforms import SelectChoice

from ..crud import Resource, register_crud_views
from ..extensions import db
from ..htmx import is_htmx
from ..models import PIPELINE_STATUSES, Destination, Pipeline, Source
from . import bp
from .forms import PipelineForm


def _fill_choices(form: PipelineForm) -> None:
    """List sources and destinations by name in the form's selects."""
    placeholder = [SelectChoice(0, "— choose —")]
    for field, model in ((form.source_id, Source), (form.destination_id, Destination)):
        rows = db.session.execute(db.select(model.id, model.name).order_by(model.name))
        field.choices = placeholder + [SelectChoice(row.id, row.name) for row in rows]


PIPELINES = Resource(
    model=Pipeline,
    form_class=PipelineForm,
    label="pipeline",
    plural="pipelines",
    list_options=(joinedload(Pipeline.source), joinedload(Pipeline.destination)),
    prepare_form=_fill_choices,
)

register_crud_views(bp, PIPELINES)


def set_status(pipeline: Pipeline, status: str) -> Pipeline:
    """Change the pipeline's desired status."""
    pipeline.status = status
    db.session.commit()
    return pipeline


@bp.route("/<int:entity_id>/status", methods=["POST"])
def change_status(entity_id: int) -> Response | str:
    """Start, pause or refresh a pipeline; htmx gets back only its row."""
    pipeline = PIPELINES.get(entity_id)
    status = request.form.get("status", "").upper()
    if status not in PIPELINE_STATUSES:
        abort(400, f"Status must be one of {', '.join(PIPELINE_STATUSES)}.")
    set_status(pipeline, status)
    if is_htmx():
        response = make_response(
            render_template("pipelines/_row.html", pipeline=pipeline, resource=PIPELINES)
        )
    else:
        flash(f"Pipeline '{pipeline.name}' set to {status}.", "success")
        response = redirect(url_for("pipelines.index"), 303)
    response.vary.add("HX-Request")
    return response
