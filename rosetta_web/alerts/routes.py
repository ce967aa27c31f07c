"""The alert pages: the firing alerts and their history, silences, and the rule settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from math import ceil
from typing import Any

from flask import flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from ..forms import form_view
from ..htmx import is_htmx, render_page_or_fragment
from ..models import Alert
from ..timeutil import as_utc
from . import bp
from .display import rule_label
from .engine.settings import DEFAULTS
from .forms import AlertSettingsForm, SilenceForm, page_silence_form, row_silence_form
from .services import (
    END,
    PAGE,
    PER_PAGE,
    RULE,
    SOURCE_ID,
    START,
    STATE,
    AlertFilter,
    AlertResolved,
    acknowledge,
    active_silences,
    create_silence,
    current_settings,
    end_silence,
    firing_worst_first,
    get_alert,
    get_silence,
    history,
    save_settings,
    source_names,
)


@dataclass
class HistoryQuery:
    """The history's filters as the operator set them, what they mean, and what is wrong."""

    filters: AlertFilter
    page: int
    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)


def _moment(raw: str) -> datetime:
    return as_utc(datetime.fromisoformat(raw))


def read_history_query(args: MultiDict[str, str]) -> HistoryQuery:
    """Read the history's filters from the query string; a bad one is reported, not applied."""
    values = {
        arg.name: args.get(arg.name, "").strip()
        for arg in (STATE, SOURCE_ID, RULE, START, END)
        if args.get(arg.name, "").strip()
    }
    errors: dict[str, str] = {}
    state = values.get(STATE.name, STATE.default or "all")
    if state not in STATE.choices:
        errors["state"] = "Choose firing, resolved or all."
        state = STATE.default or "all"
    source_id = None
    if "source_id" in values:
        raw = values["source_id"]
        if raw.isdigit() and SOURCE_ID.within(int(raw)):
            source_id = int(raw)
        else:
            errors["source_id"] = "Choose a source from the list."
    rule = values.get("rule")
    if rule is not None and rule not in RULE.choices:
        errors["rule"] = "Choose a rule from the list."
        rule = None
    moments: dict[str, datetime | None] = {"start": None, "end": None}
    for name in moments:
        if name in values:
            try:
                moments[name] = _moment(values[name])
            except (ValueError, OverflowError):  # past year 9999 in UTC overflows
                errors[name] = "Enter a date and time such as 2026-12-01T08:00 (UTC)."
    start, end = moments["start"], moments["end"]
    if start is not None and end is not None and end <= start:
        errors["end"] = "The end must be after the start."
        end = None
    page_raw = args.get(PAGE.name, "")
    page = int(page_raw) if page_raw.isdigit() and PAGE.within(int(page_raw)) else 1
    filters = AlertFilter(state=state, source_id=source_id, rule=rule, start=start, end=end)
    return HistoryQuery(filters, page, values, errors)


def render_index(
    silence_form: SilenceForm | None = None,
    row_forms: dict[int, SilenceForm] | None = None,
) -> Response:
    """Render /alerts: firing worst first, the silences in force, and the history."""
    query = read_history_query(request.args)
    alerts, total = history(query.filters, query.page, PER_PAGE)
    firing = firing_worst_first()
    forms = {alert.id: row_silence_form(alert) for alert in firing}
    forms.update(row_forms or {})
    response = render_page_or_fragment(
        "alerts/index.html",
        "alerts/_history.html",
        firing=firing,
        silence_forms=forms,
        silences=active_silences(),
        silence_form=silence_form or page_silence_form(),
        names=source_names(),
        query=query,
        alerts=alerts,
        total=total,
        pages=max(1, ceil(total / PER_PAGE)),
        per_page=PER_PAGE,
    )
    if is_htmx():
        # The history's address without the blank filters a form sends.
        args: dict[str, Any] = dict(query.values)
        if query.page > 1:
            args["page"] = query.page
        response.headers["HX-Push-Url"] = url_for("alerts.index", **args)
    return response


@bp.get("/")
def index() -> Response:
    """The firing alerts, worst first; the silences in force; the history, filtered and paged.
    The history's filters and pages ask htmx for the history alone."""
    return render_index()


def _row(alert: Alert, form: SilenceForm | None = None, note: str | None = None) -> Response:
    """Answer htmx with the alert's row, and the banner and silences that may have changed."""
    response = make_response(
        render_template(
            "alerts/_row_swap.html",
            alert=alert,
            silence_form=form or row_silence_form(alert),
            note=note,
            silences=active_silences(),
            names=source_names(),
        )
    )
    response.vary.add("HX-Request")
    return response


@bp.post("/<id:alert_id>/ack")
def ack(alert_id: int) -> Response:
    """Acknowledge a firing alert: its repeats stop until it resolves. htmx gets its row."""
    alert = get_alert(alert_id)
    note = None
    try:
        acknowledge(alert, current_user.username)
    except AlertResolved:
        note = "It resolved before it was acknowledged: nothing to acknowledge."
    if is_htmx():
        return _row(alert, note=note)
    if note:
        flash(note, "error")
    else:
        flash(f"Alert acknowledged: {alert.message}", "success")
    return redirect(url_for("alerts.index"), 303)


@bp.post("/<id:alert_id>/silence")
@form_view
def silence_alert(alert_id: int) -> Response:
    """Silence a firing alert's source (its rule, or every rule) until a time, from its row."""
    alert = get_alert(alert_id)
    form = row_silence_form(alert, submitted=True)
    if alert.source_id is None:
        form.source_id.errors = ["Its source was deleted: there is nothing to silence."]
    elif form.validate_on_submit():
        silence = create_silence(form, current_user.username)
        alert = get_alert(alert_id)  # now marked silenced
        if is_htmx():
            return _row(alert)
        flash(
            f"Silenced {alert.source_name} ({rule_label(silence.rule)}) until "
            f"{as_utc(silence.ends_at):%Y-%m-%d %H:%M} UTC.",
            "success",
        )
        return redirect(url_for("alerts.index"), 303)
    if is_htmx():
        return _row(alert, form)
    return render_index(row_forms={alert.id: form})


@bp.post("/silences")
@form_view
def create_silence_view() -> Response:
    """Silence a source (or one rule on it) until a time, from the page's form."""
    form = page_silence_form(submitted=True)
    if form.validate_on_submit():
        silence = create_silence(form, current_user.username)
        name = source_names().get(silence.source_id, str(silence.source_id))
        flash(
            f"Silenced {name} ({rule_label(silence.rule)}) until "
            f"{as_utc(silence.ends_at):%Y-%m-%d %H:%M} UTC.",
            "success",
        )
        return redirect(url_for("alerts.index") + "#silences", 303)
    return render_index(silence_form=form)


@bp.post("/silences/<id:silence_id>/end")
def end_silence_view(silence_id: int) -> Response:
    """End a silence now: its alerts notify again from the next evaluation."""
    silence = get_silence(silence_id)
    name = source_names().get(silence.source_id, str(silence.source_id))
    end_silence(silence)
    flash(f"Silence of {name} ended.", "success")
    return redirect(url_for("alerts.index") + "#silences", 303)


@bp.route("/settings", methods=["GET", "POST"])
@form_view
def settings() -> Response | str:
    """The global rule settings; a blank setting turns its rule off."""
    form = AlertSettingsForm(obj=current_settings())
    if form.validate_on_submit():
        save_settings(form)
        flash("Alert settings saved.", "success")
        return redirect(url_for("alerts.settings"), 303)
    return render_template("alerts/settings.html", form=form, defaults=DEFAULTS)
