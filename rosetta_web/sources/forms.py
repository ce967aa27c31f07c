"""The source form, shared by the browser and the JSON API."""

from __future__ import annotations

from typing import Any

from wtforms import IntegerField, PasswordField, RadioField, SelectMultipleField, StringField
from wtforms.validators import (
    DataRequired,
    Length,
    NumberRange,
    Optional,
    Regexp,
    ValidationError,
)

from ..alerts.engine.settings import load_settings
from ..alerts.forms import DictFormField, OverridesForm, warning_not_below
from ..forms import (
    MAX_INT,
    NO_SPACE,
    BaseForm,
    EntityForm,
    SelectChoice,
    blank_to_none,
    is_unicode,
    lowercase,
    name_rules,
    strip,
    whole_number,
)
from ..models import Source
from ..postgres.replication_objects import identifier_error


def identifier(form: Any, field: Any) -> None:
    """Accept what PostgreSQL accepts as a (quoted) identifier, refusing what it would shorten."""
    error = identifier_error(field.data or "")
    if field.data and error is not None:
        raise ValidationError(error)


class SourceForm(EntityForm):
    model = Source
    label = "source"
    secret_fields = ("pg_password",)
    required_secrets = ("pg_password",)

    name = StringField(
        "Name",
        filters=[lowercase],
        validators=name_rules(),
        description="Lowercase letters, digits, '-' and '_', e.g. production-postgres.",
    )
    pg_host = StringField(
        "Host",
        filters=[strip],
        validators=[DataRequired(), Length(max=255), Regexp(NO_SPACE, message="No spaces.")],
    )
    pg_port = IntegerField(
        "Port",
        default=5432,
        validators=[whole_number, NumberRange(1, 65535, "Enter a port from 1 to 65535.")],
    )
    pg_database = StringField(
        "Database", filters=[strip], validators=[DataRequired(), Length(max=63)]
    )
    pg_username = StringField(
        "Username",
        filters=[strip],
        validators=[DataRequired(), Length(max=63)],
        description="A role with REPLICATION, or rds_replication on RDS.",
    )
    pg_password = PasswordField(
        "Password",
        validators=[Length(max=1024)],
        description="Stored encrypted, never shown again.",
    )
    publication_name = StringField(
        "Publication",
        filters=[strip],
        validators=[DataRequired(), identifier],
        description=(
            "The PostgreSQL publication listing the tables to capture, as PostgreSQL spells "
            "it (any identifier, at most 63 bytes). Rosetta can create it from the source's page."
        ),
    )
    replication_id = IntegerField(
        "Replication ID",
        default=0,
        validators=[
            whole_number,
            NumberRange(0, MAX_INT, f"Enter a whole number from 0 to {MAX_INT}."),
        ],
        description=(
            "A number the CDC engine uses to tell this source's pipeline apart from its other "
            "pipelines. Keep 0 unless your CDC setup says otherwise."
        ),
    )
    slot_name = StringField(
        "Replication slot",
        filters=[strip, blank_to_none],
        validators=[
            Optional(),
            Length(max=63),
            Regexp(
                r"^[a-z0-9_]+$",
                message="Slot names use lowercase letters, digits and '_' only.",
            ),
        ],
        description="The pipeline's logical replication slot, if it has one yet.",
    )
    alert_overrides = DictFormField(
        OverridesForm,
        "Alert settings for this source",
        description="Blank: the global setting.",
    )

    def validate(self, extra_validators: Any = None) -> bool:
        """Run the checks, then hold the overrides' thresholds against the global ones."""
        valid = super().validate(extra_validators)
        return warning_not_below(self.alert_overrides.form, load_settings()) and valid


TABLE_NAME_MAX_LENGTH = 300  # the longest schema.table a publication is asked for


class PublicationForm(BaseForm):
    """Create the source's publication: for all tables, or the tables ticked."""

    scope = RadioField(
        "Tables",
        choices=[
            SelectChoice("all", "All tables (FOR ALL TABLES, also those created later)"),
            SelectChoice("some", "Only the tables ticked below"),
        ],
        default="all",
    )
    tables = SelectMultipleField("Tables to publish", choices=[], validate_choice=False)

    def validate_tables(self, field: SelectMultipleField) -> None:
        """Refuse a name PostgreSQL cannot store: a NUL, or a lone surrogate."""
        for name in field.data or []:
            if "\x00" in name or not is_unicode(name):
                raise ValidationError("A table name holds a character PostgreSQL cannot store.")

    def validate(self, extra_validators: Any = None) -> bool:
        valid = super().validate(extra_validators)
        if self.scope.data == "some" and not self.tables.data:
            self.tables.errors = [
                *self.tables.errors,
                "Tick at least one table, or choose all tables.",
            ]
            valid = False
        return valid


class DropForm(BaseForm):
    """Confirm a drop by typing the object's name."""

    confirm = StringField(
        "Type the name to confirm", validators=[DataRequired("Type the name to confirm.")]
    )
