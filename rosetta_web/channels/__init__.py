"""Channels: where alert notifications go (webhooks, Apprise URLs), their list, form and
delivery log, at /alerts/channels beside the alerts they carry."""

from flask import Blueprint

bp = Blueprint("channels", __name__)

from . import routes  # noqa: E402,F401
