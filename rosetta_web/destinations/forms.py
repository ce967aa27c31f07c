"""The destination form, shared by the browser and the JSON API."""

from __future__ import annotations

from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length, Optional, Regexp

from ..forms import EntityForm, blank_to_none, lowercase, name_rules, strip
from ..models import Destination
from ..readiness.destination import HOST_PATTERN

REQUIRED = [DataRequired(), Length(max=255)]
OPTIONAL = [Optional(), Length(max=255)]


class DestinationForm(EntityForm):
    model = Destination
    label = "destination"
    secret_fields = ("snowflake_private_key_passphrase",)

    name = StringField(
        "Name",
        filters=[lowercase],
        validators=name_rules(),
        description="Lowercase letters, digits, '-' and '_', e.g. snowflake-production.",
    )
    snowflake_account = StringField(
        "Account",
        filters=[strip],
        validators=[
            *REQUIRED,
            Regexp(
                r"^[A-Za-z0-9._-]+$", message="Use the account identifier, e.g. xy12345.us-east-1."
            ),
        ],
        description="Account identifier, e.g. xy12345.us-east-1 or myorg-myaccount.",
    )
    snowflake_user = StringField("User", filters=[strip], validators=REQUIRED)
    snowflake_database = StringField("Database", filters=[strip], validators=REQUIRED)
    snowflake_schema = StringField("Schema", filters=[strip], validators=REQUIRED)
    snowflake_role = StringField("Role", filters=[strip, blank_to_none], validators=OPTIONAL)
    snowflake_warehouse = StringField(
        "Warehouse", filters=[strip, blank_to_none], validators=OPTIONAL
    )
    snowflake_private_key_path = StringField(
        "Private key path",
        filters=[strip],
        validators=[DataRequired(), Length(max=1024)],
        description="Path of the PKCS#8 key file (.p8) for key-pair authentication.",
    )
    snowflake_private_key_passphrase = PasswordField(
        "Private key passphrase",
        validators=[Length(max=1024)],
        description="Stored encrypted, never shown again.",
    )
    snowflake_host = StringField(
        "Host",
        filters=[strip, blank_to_none],
        validators=[
            *OPTIONAL,
            Regexp(
                HOST_PATTERN,
                message="Enter a host (xy12345.snowflakecomputing.com), host:port, or a URL "
                "such as https://host:443 (http:// only for a local or proxy endpoint).",
            ),
        ],
        description="Where to log in: a host (xy12345.privatelink.snowflakecomputing.com), "
        "host:port, or https://host[:port] (http://host:port for a proxy). Blank: the account's "
        "own host, <account>.snowflakecomputing.com on port 443.",
    )
