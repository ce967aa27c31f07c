"""The JSON API: sources, destinations, pipelines and WAL metrics, under /api/v1."""

from __future__ import annotations

import re
from typing import Any

from flask import jsonify, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from ..crud import entity_form
from ..dashboard.services import dashboard_summary
from ..destinations.services import DESTINATIONS
from ..errors import ApiError
from ..extensions import db
from ..forms import MAX_INT, EntityForm
from ..models import WalMetric
from ..monitor import history
from ..pipelines.services import PIPELINES, set_status
from ..resources import DuplicateName, Resource
from ..sources.services import SOURCES, latest_slots, sample_now
from . import bp
from .bodies import altered_by_filters, formdata_from_json, json_body
from .openapi import build_spec


def _validated_form(resource: Resource, entity: Any = None, partial: bool = False) -> EntityForm:
    """Validate the JSON body with the browser form's rules; 409 for a taken name, else 422."""
    base = resource.form_data(entity) if partial else None
    payload = json_body()
    formdata, refused = formdata_from_json(resource.form_class, payload, base)
    form = entity_form(resource, entity, formdata=formdata, meta={"csrf": False})
    valid = form.validate()
    # The form's own message first; a value it would have trimmed or lowercased is refused too.
    errors = {**altered_by_filters(form, payload), **form.errors_by_field(), **refused}
    if valid and not errors:
        return form
    if form.duplicate_name and list(errors) == ["name"]:
        raise DuplicateName(resource.label, form["name"].data)
    raise ApiError(
        422,
        f"{len(errors)} field{'s' if len(errors) != 1 else ''} failed validation",
        {"fields": errors},
    )


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


for _resource in (SOURCES, DESTINATIONS, PIPELINES):
    _register(_resource)


@bp.post("/pipelines/<id:entity_id>/<any(start, pause, refresh):action>")
def pipeline_action(entity_id: int, action: str) -> Response:
    """Set a pipeline's desired status to START, PAUSE or REFRESH."""
    return jsonify(set_status(PIPELINES.get(entity_id), action.upper()).to_dict())


def _int_arg(name: str, default: int | None, minimum: int, maximum: int | None = None) -> int:
    """Read a whole-number query parameter, or raise 422 naming it.

    Absent, it takes its default; present, it must be a number as the OpenAPI document says
    (ASCII digits, nothing around them): blank or "5_0" is refused, not read as absent or 50.
    """
    raw = request.args.get(name)
    if raw is None:
        if default is None:
            raise ApiError(
                422, f"{name} is required", {"fields": {name: ["This field is required."]}}
            )
        return default
    value = int(raw) if re.fullmatch(r"-?[0-9]{1,19}", raw) else None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"of {minimum} or more"
        raise ApiError(
            422,
            f"{name} must be a whole number {bounds}",
            {"fields": {name: [f"Enter a whole number {bounds}."]}},
        )
    return value


@bp.get("/metrics/wal")
def wal_metrics() -> Response:
    """List a source's newest WAL samples, newest first."""
    source = SOURCES.get(_int_arg("source_id", None, 1, MAX_INT))
    stmt = (
        select(WalMetric)
        .where(WalMetric.source_id == source.id)
        .order_by(WalMetric.recorded_at.desc(), WalMetric.id.desc())
        .limit(_int_arg("limit", 100, 1, 1000))
    )
    return jsonify([metric.to_dict() for metric in db.session.scalars(stmt)])


@bp.get("/sources/<id:entity_id>/wal-history")
def wal_history(entity_id: int) -> Response:
    """Return a source's WAL series over a time range: its samples, or at most max_points."""
    source = SOURCES.get(entity_id)
    max_points = _int_arg("max_points", history.DEFAULT_MAX_POINTS, 1, history.MAX_POINTS_LIMIT)
    try:
        win = history.window(request.args.get("start"), request.args.get("end"))
    except history.HistoryParameterError as exc:
        raise ApiError(422, str(exc), {"fields": {exc.field: [str(exc)]}}) from None
    return jsonify(history.history(source, win, max_points))


@bp.post("/sources/<id:entity_id>/sample")
def sample_source(entity_id: int) -> Response:
    """Sample a source now and return the sample, or why it failed."""
    return jsonify(sample_now(SOURCES.get(entity_id)))


@bp.get("/summary")
def summary() -> Response:
    """Return the dashboard's counts: sources and pipelines by status, slots once per server."""
    return jsonify(dashboard_summary())


@bp.get("/sources/<id:entity_id>/slots")
def source_slots(entity_id: int) -> Response:
    """List the source's replication slots as its latest successful sample saw them."""
    return jsonify([slot.to_dict() for slot in latest_slots(SOURCES.get(entity_id))])


@bp.get("/openapi.json")
def openapi() -> Response:
    """Serve the OpenAPI 3 description of this API."""
    return jsonify(build_spec())


def docs() -> str:
    """Present the OpenAPI description as a readable page."""
    return render_template("api/docs.html", spec=build_spec())


# The readable page lives at /docs, outside the API's prefix.
bp.record_once(lambda state: state.app.add_url_rule("/docs", "docs", docs))
