"""The audit log: who changed what, when, from where, and how it ended."""

from flask import Blueprint

bp = Blueprint("audit", __name__)

from . import routes  # noqa: E402,F401
