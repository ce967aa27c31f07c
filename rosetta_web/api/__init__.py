"""The JSON API under /api/v1, for scripts and health checks."""

from flask import Blueprint

bp = Blueprint("api", __name__)

from . import routes  # noqa: E402,F401
