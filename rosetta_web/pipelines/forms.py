"""The pipeline form, shared by the browser and the JSON API."""

from __future__ import annotations

from typing import Any

from wtforms import Field, SelectField, StringField
from wtforms.validators import DataRequired, ValidationError

from ..extensions import db
from ..forms import MAX_INT, EntityForm, SelectChoice, lowercase, name_rules
from ..models import PIPELINE_STATUSES, Destination, Pipeline, Source


def upper(value: Any) -> Any:
    """Read a status case-insensitively."""
    return value.strip().upper() if isinstance(value, str) else value


def _exists(model: Any, label: str) -> Any:
    def check(form: EntityForm, field: Field) -> None:
        if field.data is None:
            return
        if not 0 < field.data <= MAX_INT or db.session.get(model, field.data) is None:
            raise ValidationError(f"No {label} with id {field.data}.")

    return check


class PipelineForm(EntityForm):
    model = Pipeline
    label = "pipeline"

    name = StringField(
        "Name",
        filters=[lowercase],
        validators=name_rules(),
        description="Lowercase letters, digits, '-' and '_', e.g. production-to-snowflake.",
    )
    # Choices are filled for the browser only; the API checks the id exists instead.
    source_id = SelectField(
        "Source",
        coerce=int,
        validate_choice=False,
        validators=[DataRequired("Choose a source."), _exists(Source, "source")],
    )
    destination_id = SelectField(
        "Destination",
        coerce=int,
        validate_choice=False,
        validators=[DataRequired("Choose a destination."), _exists(Destination, "destination")],
    )
    status = SelectField(
        "Status",
        coerce=upper,
        choices=[SelectChoice(status) for status in PIPELINE_STATUSES],
        default="PAUSE",
        description="START runs it, PAUSE holds it, REFRESH re-snapshots the tables.",
    )
