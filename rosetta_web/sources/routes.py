"""Source pages: list, create, edit, delete, and each source's monitor page."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import current_app, flash, make_response, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from ..alerts.display import ForecastWords, forecast_words, pipeline_rules_words
from ..alerts.engine.rules import Settings
from ..alerts.forms import row_silence_form
from ..alerts.services import (
    AlertFilter,
    effective_settings,
    firing_worst_first,
    growing_forecasts,
    history,
)
from ..crud import register_crud_views
from ..errors import DomainError
from ..formatting import pg_size_pretty
from ..forms import ConfirmForm, SelectChoice, confirmed_or_flash, form_view
from ..htmx import go_to, is_htmx
from ..models import Server, Source
from ..postgres.checks import slot_missing
from ..postgres.replication_objects import Invalid, SourceUnreachable
from ..readiness import summary
from ..timeutil import utcnow
from . import bp, services
from .forms import DropForm, PublicationForm
from .services import SOURCES, next_round_at, sample_now

register_crud_views(bp, SOURCES)

# The resolved alerts a source's page lists; the rest are on /alerts, filtered by source.
RECENT_ALERTS = 10
# The growing slots its page names, soonest lost or critical first; the others are counted.
FORECASTS_SHOWN = 10


def _slots_context(source: Source, server: Server | None) -> dict[str, Any]:
    """What the slot tables draw: the worst slots, or every one, of those the filter names."""
    return {
        "server": server,
        "slots": services.server_slots(
            source, server, request.args.get("slot", ""), request.args.get("slots") == "all"
        ),
        "slots_shown": services.SLOTS_SHOWN,
        "pipelines_by_slot": services.pipelines_by_slot(source),
    }


def _forecasts(server: Server | None, settings: Settings, now: datetime) -> list[ForecastWords]:
    """Say where the server's growing slots are heading, soonest lost or critical first."""
    if server is None:
        return []
    forecasts = []
    for name, forecast in growing_forecasts(server.id, settings.retained_critical_bytes):
        words = forecast_words(name, forecast, settings.retained_critical_bytes, now)
        if words is not None:
            forecasts.append(words)
    forecasts.sort(key=lambda words: (words.when is None, words.when or now, words.slot_name))
    return forecasts


@bp.get("/<id:entity_id>")
def detail(entity_id: int) -> Response:
    """Show a source: the monitor's latest state, its alerts and the forecast of its slots,
    its WAL charts, its slots, its connection. The slot filter's htmx request gets the slot
    tables alone."""
    source = SOURCES.get(entity_id)
    server = services.server_of(source)
    if is_htmx():
        response = make_response(
            render_template("sources/_slots.html", source=source, **_slots_context(source, server))
        )
        response.vary.add("HX-Request")
        return response
    interval_s = current_app.config["WAL_MONITOR_INTERVAL_SECONDS"]
    settings = effective_settings(source)
    now = utcnow()
    forecasts = _forecasts(server, settings, now)
    firing = firing_worst_first(source.id)
    resolved, resolved_total = history(
        AlertFilter(state="resolved", source_id=source.id), 1, RECENT_ALERTS
    )
    response = make_response(
        render_template(
            "sources/detail.html",
            state=source.state,
            sample_form=ConfirmForm(),
            resource=SOURCES,
            next_round_at=next_round_at(interval_s),
            now=now,
            interval=timedelta(seconds=interval_s),
            alert_settings=settings,
            overrides={k: v for k, v in (source.alert_overrides or {}).items() if v is not None},
            pipeline_rules=pipeline_rules_words(settings) if source.pipelines else None,
            forecasts=forecasts[:FORECASTS_SHOWN],
            forecasts_hidden=len(forecasts[FORECASTS_SHOWN:]),
            firing=firing,
            silence_forms={alert.id: row_silence_form(alert) for alert in firing},
            resolved=resolved,
            resolved_total=resolved_total,
            current_range=(
                "custom" if request.args.get("start") else request.args.get("range", "24h")
            ),
            **_slots_context(source, server),
            **_readiness_context(source),
        )
    )
    response.vary.add("HX-Request")
    return response


@bp.post("/<id:entity_id>/sample")
@form_view
def sample(entity_id: int) -> Response:
    """Sample the source now, then show its page with the outcome."""
    source = SOURCES.get(entity_id)
    if confirmed_or_flash("press Sample now again"):
        result = sample_now(source)
        if result.ok:
            flash(f"Sampled '{source.name}' just now.", "success")
        else:
            flash(f"Sampling '{source.name}' failed: {result.error}", "error")
    return redirect(url_for("sources.detail", entity_id=entity_id), 303)


# Readiness, and the replication objects made and dropped from Rosetta


def _readiness_panel(source: Source) -> str:
    return render_template("sources/_readiness.html", **_readiness_context(source))


def _readiness_context(source: Source) -> dict[str, Any]:
    """What the readiness section shows beside the stored result: which objects may be made."""
    return {
        "source": source,
        "readiness": source.readiness,
        "slot_missing": slot_missing(source.readiness),
        "default_slot_name": services.default_slot_name(source),
    }


@bp.post("/<id:entity_id>/check")
@form_view
def check(entity_id: int) -> Response | str:
    """Check the source now; htmx gets back the readiness section, a browser its page."""
    source = SOURCES.get(entity_id)
    if not confirmed_or_flash("press Check again"):
        return go_to(url_for("sources.detail", entity_id=entity_id))
    result = services.check_now(source, audited=True)
    if is_htmx():
        return _readiness_panel(source)
    flash(f"Checked '{source.name}'. {summary(result.to_dict())}", "success")
    return redirect(url_for("sources.detail", entity_id=entity_id, _anchor="readiness"), 303)


def _back(source: Source) -> Response:
    return redirect(url_for("sources.detail", entity_id=source.id, _anchor="readiness"), 303)


@bp.route("/<id:entity_id>/publication/new", methods=["GET", "POST"])
@form_view
def new_publication(entity_id: int) -> Response | tuple[str, int]:
    """Create the source's publication: for all tables, or the tables ticked."""
    source = SOURCES.get(entity_id)
    form = PublicationForm()
    status = 200
    problem = None
    try:
        form.tables.choices = [SelectChoice(name, name) for name in services.tables(source)]
    except DomainError as exc:
        problem, status = str(exc), exc.status
    if problem is None and form.validate_on_submit():
        chosen = None if form.scope.data == "all" else list(form.tables.data or [])
        try:
            services.create_publication(source, chosen)
        except Invalid as exc:
            form.tables.errors = [str(exc)]
            status = exc.status
        except DomainError as exc:
            problem, status = str(exc), exc.status
        else:
            flash(
                f"Created publication {source.publication_name}. {summary(source.readiness)}",
                "success",
            )
            return _back(source)
    page = render_template(
        "sources/publication_new.html", source=source, form=form, problem=problem
    )
    return page, status


@bp.route("/<id:entity_id>/publication/drop", methods=["GET", "POST"])
@form_view
def drop_publication(entity_id: int) -> Response | tuple[str, int]:
    """Drop the source's publication once its name is typed."""
    source = SOURCES.get(entity_id)
    form = DropForm()
    status, problem = 200, None
    if form.validate_on_submit():
        try:
            services.drop_publication(source, form.confirm.data)
        except services.ConfirmationMismatch as exc:
            form.confirm.errors = [str(exc)]
            status = exc.status
        except DomainError as exc:
            problem, status = str(exc), exc.status
        else:
            flash(f"Dropped publication {source.publication_name}.", "success")
            return _back(source)
    page = render_template(
        "sources/drop_publication.html",
        source=source,
        form=form,
        problem=problem,
        pipelines=[p.name for p in source.pipelines],
    )
    return page, status


@bp.post("/<id:entity_id>/slot")
@form_view
def create_slot(entity_id: int) -> Response:
    """Create the source's logical slot (pgoutput) on its server."""
    source = SOURCES.get(entity_id)
    if not confirmed_or_flash("press Create slot again"):
        return _back(source)
    try:
        name = services.create_slot(source)
    except DomainError as exc:
        flash(f"Creating the slot failed: {exc}", "error")
    else:
        flash(f"Created slot {name}. {summary(source.readiness)}", "success")
    return _back(source)


@bp.route("/<id:entity_id>/slots/<slot_name>/drop", methods=["GET", "POST"])
@form_view
def drop_slot(entity_id: int, slot_name: str) -> Response | tuple[str, int]:
    """Show a slot as the server has it now, and drop it once its name is typed."""
    source = SOURCES.get(entity_id)
    form = DropForm()
    status, problem, preview = 200, None, None
    if form.validate_on_submit():
        try:
            dropped = services.drop_slot(source, slot_name, form.confirm.data)
        except services.ConfirmationMismatch as exc:
            form.confirm.errors = [str(exc)]
            status = exc.status
        except DomainError as exc:
            problem, status = str(exc), exc.status
        else:
            flash(dropped_words(dropped, source), "success")
            return redirect(url_for("sources.detail", entity_id=source.id), 303)
    if status != SourceUnreachable.status:  # out of reach: not a second wait for nothing
        try:
            preview = services.preview_slot_drop(source, slot_name)
        except DomainError as exc:
            if problem is None:
                problem, status = str(exc), exc.status
    page = render_template(
        "sources/drop_slot.html",
        source=source,
        slot_name=slot_name,
        form=form,
        problem=problem,
        preview=preview,
    )
    return page, status


def dropped_words(dropped: services.SlotDropped, source: Source) -> str:
    """Say what a drop freed, and what the sample taken just after saw."""
    words = f"Dropped slot {dropped.dropped}"
    if dropped.retained_bytes is not None and dropped.freed_bytes is not None:
        words += f": it retained {pg_size_pretty(dropped.retained_bytes)} of WAL"
        if dropped.freed_bytes:
            words += (
                f", and {pg_size_pretty(dropped.freed_bytes)} of it no other slot needs: "
                "PostgreSQL removes or recycles that at its next checkpoint"
            )
        else:
            words += ", all of it still needed by an older slot of the server, so none is freed"
    sample = dropped.sample.sample
    if sample:
        retained = sample.retained_bytes
        words += ". Sampled just after: " + (
            f"the slots of {source.pg_database} retain at most {pg_size_pretty(retained)}"
            if retained is not None
            else f"no slot of {source.pg_database} retains WAL"
        )
        if sample.size_bytes is not None:
            words += f", the WAL directory holds {pg_size_pretty(sample.size_bytes)}"
    elif dropped.sample.error:
        words += f". Sampling just after failed: {dropped.sample.error}"
    return words + "."
