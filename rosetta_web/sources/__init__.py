"""Sources: the PostgreSQL databases whose changes Rosetta captures."""

from flask import Blueprint

bp = Blueprint("sources", __name__)

from . import routes  # noqa: E402,F401
