"""Pipelines: a source connected to a destination, with the status the operator wants."""

from flask import Blueprint

bp = Blueprint("pipelines", __name__)

from . import routes  # noqa: E402,F401
