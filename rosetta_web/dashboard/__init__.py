"""The dashboard: is any source in trouble now, and is WAL growing toward trouble."""

from flask import Blueprint

bp = Blueprint("dashboard", __name__)

from . import routes  # noqa: E402,F401
