"""Alerts: the firing list and history, silences and the rule settings; the engine that
raises and delivers them is alerts/engine/ (the channels they go to are rosetta_web/channels/)."""

from flask import Blueprint

bp = Blueprint("alerts", __name__)

from . import routes  # noqa: E402,F401
