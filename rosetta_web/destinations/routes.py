"""Destination pages: list, create, edit, delete, and each destination's page and checks."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from ..crud import register_crud_views
from ..forms import confirmed_or_flash, form_view
from ..htmx import go_to, is_htmx
from ..models import Destination
from ..readiness import summary
from ..readiness.destination import parse_host, sql_identifier
from . import bp
from .services import DESTINATIONS, check_destination_now, stored_fingerprint

register_crud_views(bp, DESTINATIONS)


def _endpoint(destination: Destination) -> str | None:
    """Say where the connector logs in, or None when the Host setting is malformed."""
    try:
        return str(parse_host(destination.snowflake_host, destination.snowflake_account))
    except ValueError:
        return None


def _context(destination: Destination) -> dict[str, object]:
    """What the readiness section shows: the stored result, read back, and the fingerprint."""
    stored = destination.readiness
    return {
        "destination": destination,
        "readiness": stored,
        "fingerprint": stored_fingerprint(destination.readiness),
        "desc_user": f"DESC USER {sql_identifier(destination.snowflake_user)}",
    }


@bp.get("/<id:entity_id>")
def detail(entity_id: int) -> str:
    """Show a destination: its readiness checks, where it logs in, the pipelines it feeds."""
    destination = DESTINATIONS.get(entity_id)
    return render_template(
        "destinations/detail.html",
        resource=DESTINATIONS,
        endpoint=_endpoint(destination),
        pipelines=DESTINATIONS.blocking_pipelines(destination),
        **_context(destination),
    )


@bp.post("/<id:entity_id>/check")
@form_view
def check(entity_id: int) -> Response | str:
    """Check the destination now; htmx gets back the readiness section, a browser its page."""
    destination = DESTINATIONS.get(entity_id)
    if not confirmed_or_flash("press Check again"):
        return go_to(url_for("destinations.detail", entity_id=entity_id))
    result = check_destination_now(destination, audited=True)
    if is_htmx():
        return render_template("destinations/_readiness.html", **_context(destination))
    flash(f"Checked '{destination.name}'. {summary(result.to_dict())}", "success")
    return redirect(url_for("destinations.detail", entity_id=entity_id, _anchor="readiness"), 303)
