"""Destinations: the Snowflake accounts pipelines load into."""

from flask import Blueprint

bp = Blueprint("destinations", __name__)

from . import routes  # noqa: E402,F401
