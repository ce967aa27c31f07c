"""Pipelines: their registry entry and the desired status."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import joinedload

from ..extensions import db
from ..forms import EntityForm, SelectChoice
from ..models import Destination, Pipeline, Source
from ..resources import Resource
from .forms import PipelineForm


def _fill_choices(form: EntityForm) -> None:
    """List sources and destinations by name in the form's selects."""
    assert isinstance(form, PipelineForm)
    placeholder = [SelectChoice(0, "— choose —")]
    for field, model in ((form.source_id, Source), (form.destination_id, Destination)):
        rows = db.session.execute(select(model.id, model.name).order_by(model.name))
        field.choices = placeholder + [SelectChoice(row.id, row.name) for row in rows]


PIPELINES = Resource(
    model=Pipeline,
    form_class=PipelineForm,
    label="pipeline",
    plural="pipelines",
    list_options=(joinedload(Pipeline.source), joinedload(Pipeline.destination)),
    prepare_form=_fill_choices,
)


def set_status(pipeline: Pipeline, status: str) -> Pipeline:
    """Change the pipeline's desired status."""
    pipeline.status = status
    db.session.commit()
    return pipeline
