"""Sign-in, first-run set-up, and the operator's account page with API tokens."""

from flask import Blueprint

bp = Blueprint("auth", __name__)

from . import routes  # noqa: E402,F401
