"""The JSON API: sources, destinations, pipelines, WAL metrics and alerts, under /api/v1."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import jsonify, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from werkzeug.wrappers import Response

from ..alerts.forms import AlertSettingsForm, SilenceForm
from ..alerts.services import (
    DELIVERIES_LIMIT,
    PAGE,
    PAGE_SIZE,
    RULE,
    SOURCE_ID,
    STATE,
    AlertFilter,
    acknowledge,
    active_silences,
    alert_page,
    alert_spans,
    attach_forecasts,
    create_silence,
    current_settings,
    effective_settings,
    end_silence,
    get_alert,
    get_silence,
    save_settings,
)
from ..audit import services as audit
from ..channels.services import CHANNELS, deliveries, test_channel
from ..crud import entity_form
from ..dashboard.services import dashboard_summary
from ..destinations import services as destinations
from ..destinations.services import DESTINATIONS
from ..errors import ApiError, NotFound
from ..extensions import db
from ..forms import MAX_INT, BaseForm, EntityForm
from ..models import ALERT_SETTING_KEYS, WalMetric
from ..monitor import history
from ..monitor.history import AlertSpan, Thresholds, WalHistory
from ..pipelines import progress
from ..pipelines import verify as verifying
from ..pipelines.services import PIPELINES, connector_config, refresh, set_status
from ..resources import Resource
from ..shapes import ArgError, ChoiceArg, IntArg
from ..sources import services as sources
from ..sources.forms import PublicationForm
from ..sources.services import SOURCES, chart_server, latest_slots, sample_now
from ..timeutil import ParameterError, parse_moment, utcnow
from . import bp
from .bodies import altered_by_filters, formdata_from_json, json_body, publication_formdata
from .openapi import build_spec


def _invalid(errors: dict[str, list[str]]) -> ApiError:
    """The 422 that names each failing field with its messages."""
    return ApiError(
        422,
        f"{len(errors)} field{'s' if len(errors) != 1 else ''} failed validation",
        {"fields": errors},
    )


def _checked(form: BaseForm, payload: dict[str, Any], refused: dict[str, list[str]]) -> None:
    """Validate a form filled from a JSON body, or raise the 422 naming every failing field."""
    valid = form.validate()
    # The form's own message first; a value it would have trimmed or lowercased is refused too.
    errors = {**altered_by_filters(form, payload), **form.errors_by_field(), **refused}
    if not valid or errors:
        raise _invalid(errors or {"": ["The body failed validation."]})


def _validated_form(resource: Resource, entity: Any = None, partial: bool = False) -> EntityForm:
    """Validate the JSON body with the browser form's rules; 409 for a taken name, else 422."""
    base = resource.form_data(entity) if partial else None
    payload = json_body()
    formdata, refused = formdata_from_json(resource.form_class, payload, base)
    # A secret sent back as a GET shows it (a channel's masked URL) keeps the stored one.
    shown = entity.to_dict() if entity is not None else {}
    for name in resource.form_class.secret_fields:
        if name in shown and payload.get(name) == shown[name] and name not in refused:
            formdata[name] = ""
    form = entity_form(resource, entity, formdata=formdata, meta={"csrf": False})
    try:
        _checked(form, payload, refused)
    except ApiError as exc:
        if form.duplicate_name and list(exc.details["fields"]) == ["name"]:
            raise resource.refuse_duplicate(form, entity) from None
        raise
    return form


def _register(resource: Resource) -> None:
    """Add list, create, read, replace, update and delete endpoints for one resource."""
    plural = resource.plural

    def list_entities() -> Response:
        return jsonify([entity.to_dict() for entity in resource.search(request.args.get("q", ""))])

    def create_entity() -> tuple[Response, int, dict[str, str]]:
        entity = resource.save(_validated_form(resource))
        location = url_for(f"api.get_{resource.label}", entity_id=entity.id)
        return jsonify(entity.to_dict()), 201, {"Location": location}

    def get_entity(entity_id: int) -> Response:
        return jsonify(resource.get(entity_id).to_dict())

    def replace_entity(entity_id: int) -> Response:
        entity = resource.get(entity_id)
        return jsonify(resource.save(_validated_form(resource, entity), entity).to_dict())

    def update_entity(entity_id: int) -> Response:
        entity = resource.get(entity_id)
        form = _validated_form(resource, entity, partial=True)
        return jsonify(resource.save(form, entity).to_dict())

    def delete_entity(entity_id: int) -> tuple[str, int]:
        resource.delete(resource.get(entity_id))
        return "", 204

    one = f"/{plural}/<id:entity_id>"
    bp.add_url_rule(f"/{plural}", f"list_{plural}", list_entities, methods=["GET"])
    bp.add_url_rule(f"/{plural}", f"create_{resource.label}", create_entity, methods=["POST"])
    bp.add_url_rule(one, f"get_{resource.label}", get_entity, methods=["GET"])
    bp.add_url_rule(one, f"replace_{resource.label}", replace_entity, methods=["PUT"])
    bp.add_url_rule(one, f"update_{resource.label}", update_entity, methods=["PATCH"])
    bp.add_url_rule(one, f"delete_{resource.label}", delete_entity, methods=["DELETE"])


for _resource in (SOURCES, DESTINATIONS, PIPELINES, CHANNELS):
    _register(_resource)


@bp.post("/pipelines/<id:entity_id>/<any(start, pause):action>")
def pipeline_action(entity_id: int, action: str) -> Response:
    """Set a pipeline's desired status to START or PAUSE."""
    return jsonify(set_status(PIPELINES.get(entity_id), action.upper()).to_dict())


@bp.post("/pipelines/<id:entity_id>/refresh")
def refresh_pipeline(entity_id: int) -> Response:
    """Set a pipeline's desired status to REFRESH: of the tables listed, or of all."""
    pipeline = PIPELINES.get(entity_id)
    payload = _optional_body()
    _refuse_unknown(payload, ("tables",))
    tables = payload.get("tables")
    if tables is not None and (
        not isinstance(tables, list)
        or not tables
        or not all(isinstance(name, str) and name for name in tables)
    ):
        raise _invalid(
            {"tables": ['Send a non-empty list of table names ("schema.table"), or leave it out.']}
        )
    return jsonify(refresh(pipeline, tables).to_dict())


@bp.post("/pipelines/<id:entity_id>/verify")
def verify_pipeline(entity_id: int) -> tuple[Response, int]:
    """Ask an engine process to compare the pipeline's destination with its source: 202, and
    the result at GET …/verify (a Verify under way is returned as it is)."""
    pipeline = PIPELINES.get(entity_id)
    payload = _optional_body()
    _refuse_unknown(payload, ("sample_keys",))
    sample_keys = payload.get("sample_keys", verifying.SAMPLE_KEYS)
    if (
        not isinstance(sample_keys, int)
        or isinstance(sample_keys, bool)
        or not 1 <= sample_keys <= verifying.MAX_SAMPLE_KEYS
    ):
        raise _invalid(
            {"sample_keys": [f"Send a whole number from 1 to {verifying.MAX_SAMPLE_KEYS:,}."]}
        )
    verification, _new = verifying.request_verify(pipeline, sample_keys)
    response = jsonify(verifying.shown(verification).to_dict())
    response.headers["Location"] = url_for("api.pipeline_verification", entity_id=pipeline.id)
    return response, 202


@bp.get("/pipelines/<id:entity_id>/verify")
def pipeline_verification(entity_id: int) -> Response:
    """Return the pipeline's last Verify: under way, done or failed."""
    pipeline = PIPELINES.get(entity_id)
    verification = verifying.latest(pipeline)
    if verification is None:
        raise ApiError(404, f"Pipeline '{pipeline.name}' has not been verified yet.")
    return jsonify(verifying.shown(verification).to_dict())


@bp.get("/pipelines/<id:entity_id>/connector-config")
def pipeline_connector_config(entity_id: int) -> Response:
    """Return the pipeline as Kafka Connect connectors: the Debezium source (secrets only as
    references), the offsets to seed it with, and the Snowflake sink beside it."""
    return jsonify(connector_config(PIPELINES.get(entity_id)).to_dict())


def _arg_error(exc: ArgError) -> ApiError:
    """The 422 that names a query-string argument and says what to send."""
    return ApiError(422, str(exc), {"fields": {exc.field: [exc.detail]}})


def _number(arg: IntArg) -> int:
    """Read a whole-number query argument that always has a value, or raise 422 naming it."""
    try:
        return arg.number(request.args)
    except ArgError as exc:
        raise _arg_error(exc) from None


def _optional(arg: IntArg | ChoiceArg) -> Any:
    """Read a query argument, None when absent with no default, or raise 422 naming it."""
    try:
        return arg.read(request.args)
    except ArgError as exc:
        raise _arg_error(exc) from None


@bp.get("/metrics/wal")
def wal_metrics() -> Response:
    """List a source's newest WAL samples, newest first."""
    source = SOURCES.get(_number(history.SOURCE_ID))
    stmt = (
        select(WalMetric)
        .where(WalMetric.source_id == source.id)
        .order_by(WalMetric.recorded_at.desc(), WalMetric.id.desc())
        .limit(_number(history.SAMPLES_LIMIT))
    )
    return jsonify([metric.to_dict() for metric in db.session.scalars(stmt)])


@bp.get("/sources/<id:entity_id>/wal-history")
def wal_history(entity_id: int) -> Response:
    """Return a source's WAL series over a time range: its samples, or at most max_points."""
    source = SOURCES.get(entity_id)
    max_points = _number(history.MAX_POINTS)
    try:
        win = history.window(
            request.args.get(history.START.name), request.args.get(history.END.name)
        )
    except ParameterError as exc:
        raise ApiError(422, str(exc), {"fields": {exc.field: [str(exc)]}}) from None
    settings = effective_settings(source)
    answer = WalHistory(
        **history.history(source, chart_server(source), win, max_points),
        thresholds=Thresholds(
            warning_bytes=settings.retained_warning_bytes,
            critical_bytes=settings.retained_critical_bytes,
        ),
        alert_spans=[AlertSpan(**span) for span in alert_spans(source, win.start, win.end)],
    )
    return jsonify(answer.to_dict())


@bp.get("/pipelines/<id:entity_id>/progress")
def pipeline_progress(entity_id: int) -> Response:
    """Return a pipeline's progress as its engine records it: state, lag, tables, errors."""
    return jsonify(progress.pipeline_progress(PIPELINES.get(entity_id)).to_dict())


@bp.get("/pipelines/<id:entity_id>/progress/history")
def pipeline_progress_history(entity_id: int) -> Response:
    """Return a pipeline's rows per minute (by operation) and its lag over a range."""
    pipeline = PIPELINES.get(entity_id)
    range_name = _optional(progress.RANGE)
    max_points = _number(history.MAX_POINTS)
    now = utcnow()
    end = _moment_arg(history.END.name, now) or now
    start = _moment_arg(history.START.name, now)
    try:
        win = progress.progress_window(range_name, start, end)
    except ParameterError as exc:
        raise ApiError(422, str(exc), {"fields": {exc.field: [str(exc)]}}) from None
    return jsonify(progress.progress_history(pipeline, win, max_points).to_dict())


@bp.post("/sources/<id:entity_id>/sample")
def sample_source(entity_id: int) -> Response:
    """Sample a source now and return the sample, or why it failed."""
    return jsonify(sample_now(SOURCES.get(entity_id)).to_dict())


@bp.post("/sources/<id:entity_id>/check")
def check_source_now(entity_id: int) -> Response:
    """Run the source's readiness checks now; store and return the result."""
    return jsonify(sources.check_now(SOURCES.get(entity_id), audited=True).to_dict())


@bp.post("/destinations/<id:entity_id>/check")
def check_destination(entity_id: int) -> Response:
    """Run the destination's readiness checks now; store and return the result."""
    destination = DESTINATIONS.get(entity_id)
    return jsonify(destinations.check_destination_now(destination, audited=True).to_dict())


@bp.get("/sources/<id:entity_id>/tables")
def source_tables(entity_id: int) -> Response:
    """List the tables of the source's database a publication can name (schema.table)."""
    return jsonify(sources.tables(SOURCES.get(entity_id)))


def _optional_body() -> dict[str, Any]:
    """The JSON body, or an empty one when none was sent."""
    return json_body() if request.get_data() else {}


def _refuse_unknown(payload: dict[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(set(payload) - set(known))
    if unknown:
        raise _invalid({name: ["Unknown field."] for name in unknown})


@bp.post("/sources/<id:entity_id>/publication")
def create_publication(entity_id: int) -> tuple[Response, int]:
    """Create the source's publication for all tables or the tables listed, on the source."""
    source = SOURCES.get(entity_id)
    payload = json_body()
    formdata, refused = publication_formdata(payload)
    if refused:  # one answer at a time, as each says what to send instead
        raise _invalid(refused)
    form = PublicationForm(formdata=formdata, meta={"csrf": False})
    _checked(form, payload, {})
    tables = None if form.scope.data == "all" else list(form.tables.data or [])
    sources.create_publication(source, tables)
    return jsonify({"publication": source.publication_name, "readiness": source.readiness}), 201


@bp.delete("/sources/<id:entity_id>/publication")
def drop_publication(entity_id: int) -> Response:
    """Drop the source's publication; `confirm` must repeat its name."""
    source = SOURCES.get(entity_id)
    sources.drop_publication(source, request.args.get("confirm"))
    return jsonify({"dropped": source.publication_name, "readiness": source.readiness})


@bp.post("/sources/<id:entity_id>/slot")
def create_slot(entity_id: int) -> tuple[Response, int]:
    """Create the source's logical slot (pgoutput): its slot_name, the one sent (which becomes
    its slot_name), or rosetta_<source name>."""
    source = SOURCES.get(entity_id)
    payload = _optional_body()
    _refuse_unknown(payload, ("slot_name",))
    name = payload.get("slot_name")
    if "slot_name" in payload and not isinstance(name, str):
        # null would make the default slot: leave slot_name out for that, as the schema says.
        raise _invalid({"slot_name": ["Send the slot's name as a string, or leave it out."]})
    created = sources.create_slot(source, name)
    return jsonify({"slot_name": created, "readiness": source.readiness}), 201


@bp.delete("/sources/<id:entity_id>/slots/<slot_name>")
def drop_slot(entity_id: int, slot_name: str) -> Response:
    """Drop an inactive slot of the source's server; `confirm` must repeat its name."""
    source = SOURCES.get(entity_id)
    return jsonify(sources.drop_slot(source, slot_name, request.args.get("confirm")).to_dict())


@bp.get("/summary")
def summary() -> Response:
    """Return the dashboard's counts: sources and pipelines by status, slots once per server."""
    return jsonify(dashboard_summary())


@bp.get("/sources/<id:entity_id>/slots")
def source_slots(entity_id: int) -> Response:
    """List the source's replication slots as its latest successful sample saw them, with
    each one's forecast."""
    source = SOURCES.get(entity_id)
    slots = attach_forecasts(source, latest_slots(source))
    return jsonify([slot.to_dict() for slot in slots])


# Alerts: the alerts themselves, silences, the rule settings (channels are registered above)


def _moment_arg(name: str, now: datetime) -> datetime | None:
    """Read an optional time parameter as wal-history does: ISO-8601 or relative (24h)."""
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        return parse_moment(name, raw, now)
    except ParameterError as exc:
        raise ApiError(422, str(exc), {"fields": {name: [str(exc)]}}) from None


@bp.get("/alerts")
def list_alerts() -> Response:
    """List alerts, one page at a time: the firing ones worst first (critical, then the
    oldest) with state=firing, else the newest first; X-Total-Count says how many match."""
    now = utcnow()
    filters = AlertFilter(
        state=_optional(STATE) or "all",
        source_id=_optional(SOURCE_ID),
        rule=_optional(RULE),
        start=_moment_arg("start", now),
        end=_moment_arg("end", now),
    )
    if filters.start and filters.end and filters.end < filters.start:
        message = "end must not be before start."
        raise ApiError(422, message, {"fields": {"end": [message]}})
    page = _number(PAGE)
    per_page = _number(PAGE_SIZE)
    alerts, total = alert_page(filters, page, per_page)
    response = jsonify([alert.to_dict() for alert in alerts])
    response.headers["X-Total-Count"] = str(total)
    return response


@bp.get("/alerts/<id:alert_id>")
def get_alert_by_id(alert_id: int) -> Response:
    """Read one alert."""
    return jsonify(get_alert(alert_id).to_dict())


@bp.post("/alerts/<id:alert_id>/ack")
def acknowledge_alert(alert_id: int) -> Response:
    """Acknowledge a firing alert: its repeats stop until it resolves (409 once resolved)."""
    return jsonify(acknowledge(get_alert(alert_id), current_user.username).to_dict())


@bp.get("/silences")
def list_silences() -> Response:
    """List the silences in force, ending soonest first."""
    return jsonify([silence.to_dict() for silence in active_silences()])


@bp.post("/silences")
def create_silence_now() -> tuple[Response, int]:
    """Silence a source, or one rule on it, until a time in the future."""
    payload = json_body()
    formdata, refused = formdata_from_json(SilenceForm, payload)
    form = SilenceForm(formdata=formdata, meta={"csrf": False})
    _checked(form, payload, refused)
    source_id = form.source_id.data
    if 0 < source_id <= MAX_INT:  # past it, no INTEGER column holds it: no such source
        try:
            return jsonify(create_silence(form, current_user.username).to_dict()), 201
        except NotFound:
            pass
    raise _invalid({"source_id": [f"No source with id {source_id}."]})


@bp.delete("/silences/<id:silence_id>")
def delete_silence(silence_id: int) -> tuple[str, int]:
    """End a silence now: notifications resume at the next evaluation."""
    end_silence(get_silence(silence_id))
    return "", 204


@bp.post("/channels/<id:entity_id>/test")
def test_channel_now(entity_id: int) -> Response:
    """Send a test notification to a channel now; return its delivery log entry."""
    return jsonify(test_channel(CHANNELS.get(entity_id)).to_dict())


@bp.get("/channels/<id:entity_id>/deliveries")
def channel_deliveries(entity_id: int) -> Response:
    """List a channel's delivery log, newest first."""
    channel = CHANNELS.get(entity_id)
    limit = _number(DELIVERIES_LIMIT)
    return jsonify([entry.to_dict() for entry in deliveries(channel, limit)])


@bp.get("/alert-settings")
def get_alert_settings() -> Response:
    """Read the global alert rule settings (null: the rule is off)."""
    return jsonify(current_settings().to_dict())


@bp.put("/alert-settings")
def replace_alert_settings() -> Response:
    """Replace the global alert rule settings: every key, null turning its rule off."""
    payload = json_body()
    formdata, refused = formdata_from_json(AlertSettingsForm, payload)
    missing = {
        key: ["This field is required (null turns the rule off)."]
        for key in ALERT_SETTING_KEYS
        if key not in payload
    }
    form = AlertSettingsForm(formdata=formdata, meta={"csrf": False})
    _checked(form, payload, {**missing, **refused})
    return jsonify(save_settings(form).to_dict())


@bp.get("/audit")
def audit_log() -> Response:
    """List audit records newest first, filtered, a page at a time: next_cursor, when set,
    asks for the page after."""
    query = audit.read_query(request.args, utcnow())
    if query.errors:
        raise _invalid({name: [message] for name, message in query.errors.items()})
    limit = _number(audit.LIMIT)
    return jsonify(audit.page(query.filters, limit, query.after_id).to_dict())


@bp.get("/openapi.json")
def openapi() -> Response:
    """Serve the OpenAPI 3 description of this API."""
    return jsonify(build_spec())


def docs() -> str:
    """Present the OpenAPI description as a readable page."""
    return render_template("api/docs.html", spec=build_spec())


# The readable page lives at /docs, outside the API's prefix.
bp.record_once(lambda state: state.app.add_url_rule("/docs", "docs", docs))
