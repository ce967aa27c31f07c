"""The channel form, shared by the browser and the JSON API."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from wtforms import Field, PasswordField, SelectField, SelectMultipleField, StringField
from wtforms.validators import Length, ValidationError

from ..alerts.engine.targets import url_refusal
from ..channel_urls import MASKS, apprise_plugin
from ..extensions import db
from ..forms import MAX_INT, EntityForm, SelectChoice, lowercase, name_rules, strip
from ..models import SEVERITIES, Channel, Source


def _url_rules(form: ChannelForm, field: Field) -> None:
    """A webhook takes an http(s) URL; anything else must be a URL Apprise reads; neither
    may name a host a channel may not send to."""
    if not field.data:
        return
    if any(mask in field.data for mask in MASKS):
        raise ValidationError(
            "This is a masked URL, as Rosetta shows one: enter the full URL (or leave the field "
            "blank on edit to keep the stored one)."
        )
    if form.type.data == "webhook":
        try:
            parts = urlsplit(field.data)
            scheme, hostname = parts.scheme, parts.hostname
        except ValueError:  # a malformed [IPv6] host
            scheme, hostname = "", None
        if scheme not in {"http", "https"} or not hostname:
            raise ValidationError("A webhook URL starts with http:// or https:// and names a host.")
    elif apprise_plugin(field.data) is None:
        raise ValidationError(
            "Apprise cannot read this URL. Use a service URL from the Apprise wiki, e.g. "
            "slack://TokenA/TokenB/TokenC or mailtos://user:password@smtp.example.com?to=ops@example.com."
        )
    allow_private = bool(current_app.config.get("ALERT_PRIVATE_TARGETS", True))
    refused = url_refusal(form.type.data, field.data, allow_private)
    if refused is not None:
        host, reason = refused
        raise ValidationError(f"Rosetta does not send to {host}: {reason}.")


class ChannelForm(EntityForm):
    model = Channel
    label = "channel"
    # Write-only: never shown again; left blank on edit, the stored one is kept.
    secret_fields = ("url", "secret")
    required_secrets = ("url",)

    name = StringField(
        "Name",
        filters=[lowercase],
        validators=name_rules(),
        description="Lowercase letters, digits, '-' and '_', e.g. ops-slack.",
    )
    type = SelectField(
        "Type",
        choices=[
            SelectChoice("webhook", "Webhook (signed JSON POST)"),
            SelectChoice("apprise", "Apprise URL (Slack, Teams, e-mail, PagerDuty, ...)"),
        ],
        default="webhook",
    )
    url = StringField(
        "URL",
        filters=[strip],
        validators=[Length(max=2000), _url_rules],
        description="Stored encrypted and shown masked. Leave blank on edit to keep it.",
    )
    secret = PasswordField(
        "Signing secret",
        validators=[Length(max=200)],
        description=(
            "Webhooks only: the receiver checks X-Rosetta-Signature with it. At least 16 "
            "characters. Stored encrypted, never shown again."
        ),
    )
    min_severity = SelectField(
        "Minimum severity",
        choices=[SelectChoice(severity) for severity in SEVERITIES],
        default="warning",
    )
    source_ids = SelectMultipleField(
        "Only these sources",
        coerce=int,
        validate_choice=False,
        default=[],
        description="None chosen: every source.",
    )

    def validate(self, extra_validators: Any = None) -> bool:
        stored = db.session.get(Channel, self.editing_id) if self.editing_id else None
        if stored is not None and self.url.data == stored.masked_url:
            self.url.data = ""  # the masked form sent back: keep the stored URL
        valid = super().validate(extra_validators)
        if stored is not None and not self.url.data and self.type.data != stored.type:
            self.url.errors = [*self.url.errors, "Enter the URL again when changing the type."]
            valid = False
        if self.type.data == "webhook":
            secret = self.secret.data or ""
            kept = stored is not None and stored.secret_encrypted and not secret
            if not kept and len(secret) < 16:
                self.secret.errors = [
                    *self.secret.errors,
                    "A webhook needs a signing secret of at least 16 characters.",
                ]
                valid = False
        # A source deleted since the channel was saved stays listed (it matches nothing, and
        # dropping it could turn "these sources" into "every source"); a new id must exist.
        known = set(stored.source_ids or []) if stored is not None else set()
        for source_id in set(self.source_ids.data or []) - known:
            if not 0 < source_id <= MAX_INT or db.session.get(Source, source_id) is None:
                self.source_ids.errors = [
                    *self.source_ids.errors,
                    f"No source with id {source_id}.",
                ]
                valid = False
                break
        return valid
