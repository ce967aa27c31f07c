"""Sign-in, first-run set-up, one's account page with API tokens, and the admin's accounts."""

from flask import Blueprint

bp = Blueprint("auth", __name__)

from . import accounts, routes  # noqa: E402,F401
