"""Source pages: list, create, edit, delete, and each source's monitor page."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..alerts.display import forecast_words
from ..alerts.page_forms import row_silence_form
from ..alerts.services import (
    AlertFilter,
    attach_forecasts,
    effective_settings,
    firing_worst_first,
    history,
)
from ..crud import register_crud_views
from ..forms import ConfirmForm, form_view
from ..timeutil import utcnow
from . import bp
from .services import SOURCES, next_round_at, sample_now, server_slots

register_crud_views(bp, SOURCES)

# The resolved alerts a source's page lists; the rest are on /alerts, filtered by source.
RECENT_ALERTS = 10


@bp.get("/<id:entity_id>")
def detail(entity_id: int) -> str:
    """Show a source: the monitor's latest state, its alerts and the forecast of its slots,
    its WAL charts, its slots, its connection."""
    source = SOURCES.get(entity_id)
    interval_s = current_app.config["WAL_MONITOR_INTERVAL_SECONDS"]
    own_slots, other_slots = server_slots(source)
    attach_forecasts(source, own_slots + other_slots)
    settings = effective_settings(source)
    now = utcnow()
    forecasts = []  # the growing slots, soonest lost or critical first
    for slot in own_slots + other_slots:
        words = forecast_words(slot.slot_name, slot.forecast, settings.retained_critical_bytes, now)
        if words is not None:
            forecasts.append(words)
    forecasts.sort(key=lambda words: (words.when is None, words.when or now))
    firing = firing_worst_first(source.id)
    resolved, resolved_total = history(
        AlertFilter(state="resolved", source_id=source.id), 1, RECENT_ALERTS
    )
    return render_template(
        "sources/detail.html",
        source=source,
        state=source.state,
        server=source.state.server if source.state else None,
        slots=own_slots,
        other_slots=other_slots,
        sample_form=ConfirmForm(),
        resource=SOURCES,
        next_round_at=next_round_at(interval_s),
        now=now,
        interval=timedelta(seconds=interval_s),
        alert_settings=settings,
        overrides={k: v for k, v in (source.alert_overrides or {}).items() if v is not None},
        forecasts=forecasts,
        firing=firing,
        silence_forms={alert.id: row_silence_form(alert) for alert in firing},
        resolved=resolved,
        resolved_total=resolved_total,
        current_range="custom" if request.args.get("start") else request.args.get("range", "24h"),
    )


@bp.post("/<id:entity_id>/sample")
@form_view
def sample(entity_id: int) -> Response:
    """Sample the source now, then show its page with the outcome."""
    source = SOURCES.get(entity_id)
    if not ConfirmForm().validate_on_submit():
        flash("The form expired before you sent it; press Sample now again.", "error")
    else:
        result = sample_now(source)
        if result["ok"]:
            flash(f"Sampled '{source.name}' just now.", "success")
        else:
            flash(f"Sampling '{source.name}' failed: {result['error']}", "error")
    return redirect(url_for("sources.detail", entity_id=entity_id), 303)
