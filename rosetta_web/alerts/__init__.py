"""Alerts: the firing list and history, silences, channels and the rule settings."""

from flask import Blueprint

bp = Blueprint("alerts", __name__)
# The notification channels: their list, form and delivery log, at /alerts/channels.
channels_bp = Blueprint("channels", __name__)

from . import channels, routes  # noqa: E402,F401
from .context import register  # noqa: E402

bp.record_once(lambda state: register(state.app))
