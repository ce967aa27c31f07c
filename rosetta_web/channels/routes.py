"""The channel pages (at /alerts/channels): list, create, edit, delete, each channel's delivery
log, and "Send a test notification" with its outcome shown in place."""

from __future__ import annotations

from flask import make_response, render_template, request
from werkzeug.wrappers import Response

from ..alerts.services import source_names
from ..crud import register_crud_views
from ..htmx import is_htmx
from ..models import Channel, Delivery
from . import bp
from .services import CHANNELS, deliveries, delivery_subjects, test_channel

register_crud_views(bp, CHANNELS)


def _detail_page(channel: Channel, outcome: Delivery | None = None) -> str:
    log = deliveries(channel)
    return render_template(
        "channels/detail.html",
        channel=channel,
        deliveries=log,
        subjects=delivery_subjects(log),
        names=source_names(),
        resource=CHANNELS,
        outcome=outcome,
    )


@bp.get("/<id:entity_id>")
def detail(entity_id: int) -> str:
    """Show a channel: where it sends (masked), what it receives, and its delivery log."""
    return _detail_page(CHANNELS.get(entity_id))


@bp.post("/<id:entity_id>/test")
def test(entity_id: int) -> Response | str:
    """Send a test notification now; htmx gets the outcome (and the fresh log) in place."""
    channel = CHANNELS.get(entity_id)
    delivery = test_channel(channel)
    if not is_htmx():
        return _detail_page(channel, delivery)
    # The detail page also has the log to refresh; the list has none.
    fresh = deliveries(channel) if request.form.get("with_log") else None
    response = make_response(
        render_template(
            "channels/_test_outcome.html",
            channel=channel,
            delivery=delivery,
            log=fresh,
            subjects=delivery_subjects(fresh) if fresh else {},
        )
    )
    response.vary.add("HX-Request")
    return response
