"""Channels: what the pages and the API read and change about notification channels, their
delivery log and their test notifications. Delivery itself is the alert engine's
(rosetta_web/alerts/engine/delivery.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from ..alerts.engine.delivery import send_test
from ..alerts.services import source_names
from ..extensions import db
from ..forms import EntityForm, SelectChoice
from ..models import Channel, Delivery, Notification
from ..resources import Resource
from .forms import ChannelForm


def _source_choices(form: EntityForm) -> None:
    """List the sources by name in the channel form's select."""
    assert isinstance(form, ChannelForm)
    form.source_ids.choices = [SelectChoice(id_, name) for id_, name in source_names().items()]


CHANNELS = Resource(
    model=Channel,
    form_class=ChannelForm,
    label="channel",
    plural="channels",
    prepare_form=_source_choices,
)


def deliveries(channel: Channel, limit: int = 50) -> list[Delivery]:
    """Return a channel's delivery log, newest first."""
    return list(
        db.session.scalars(
            select(Delivery)
            .where(Delivery.channel_id == channel.id)
            .order_by(Delivery.attempted_at.desc(), Delivery.id.desc())
            .limit(limit)
        )
    )


def test_channel(channel: Channel) -> Delivery:
    """Send a test notification now; return how it went."""
    return send_test(channel)


def last_deliveries(channel_ids: list[int]) -> dict[int, Delivery]:
    """Return each channel's latest delivery attempt, by channel id (the channel list)."""
    if not channel_ids:
        return {}
    latest = (
        select(Delivery.channel_id, func.max(Delivery.id).label("id"))
        .where(Delivery.channel_id.in_(channel_ids))
        .group_by(Delivery.channel_id)
        .subquery()
    )
    rows = db.session.scalars(select(Delivery).join(latest, Delivery.id == latest.c.id))
    return {delivery.channel_id: delivery for delivery in rows}


def delivery_subjects(entries: list[Delivery]) -> dict[int, dict[str, Any]]:
    """Return the alert each delivery attempt told of (from its notification), by delivery id."""
    ids = {entry.notification_id for entry in entries}
    if not ids:
        return {}
    payloads: dict[int, dict[str, Any]] = {
        row.id: row.payload
        for row in db.session.execute(
            select(Notification.id, Notification.payload).where(Notification.id.in_(ids))
        )
    }
    return {
        entry.id: (payloads.get(entry.notification_id) or {}).get("alert") or {}
        for entry in entries
    }
