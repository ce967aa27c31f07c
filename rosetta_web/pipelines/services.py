"""Pipelines: their registry entry and the desired status."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated, Any

from flask import g
from sqlalchemy import func, or_, select
from sqlalchemy.orm import joinedload
from sqlalchemy.sql import ColumnElement

from ..alerts.engine.rules import Settings as AlertRuleSettings
from ..alerts.engine.settings import default_settings
from ..alerts.engine.trends import LatestSlot
from ..audit import services as audit
from ..destinations import services as destinations
from ..engine import connect
from ..engine.properties import pipeline_spec
from ..engine.state import forget_offsets, stored_offsets
from ..engines import EngineState, engine_state
from ..errors import DomainError
from ..extensions import db
from ..formatting import duration_words
from ..forms import EntityForm, SelectChoice
from ..models import (
    AlertSettings,
    Destination,
    Pipeline,
    PipelineError,
    Server,
    SlotMetric,
    Source,
    SourceState,
)
from ..monitor.rounds import target_of
from ..postgres import replication_objects as obj
from ..readiness.destination import parse_host
from ..resources import Resource
from ..shapes import Declared, Described
from ..sources import services as sources
from ..timeutil import as_utc, utcnow
from .forms import PipelineForm


def _fill_choices(form: EntityForm) -> None:
    """List sources and destinations by name in the form's selects."""
    assert isinstance(form, PipelineForm)
    placeholder = [SelectChoice(0, "— choose —")]
    for field, model in ((form.source_id, Source), (form.destination_id, Destination)):
        rows = db.session.execute(select(model.id, model.name).order_by(model.name))
        field.choices = placeholder + [SelectChoice(row.id, row.name) for row in rows]


class SourceBusy(DomainError):
    """Another pipeline already runs on the source: two would share its replication slot."""

    error = "SourceBusyError"

    def __init__(self, other: Pipeline, source: Source) -> None:
        slot = f" ({source.slot_name})" if source.slot_name else ""
        super().__init__(
            f"Pipeline '{other.name}' already runs on source '{source.name}' ({other.status}): "
            f"the two would share its replication slot{slot}. Pause '{other.name}' first."
        )
        self.details = {"source_id": source.id, "pipeline_id": other.id, "pipeline": other.name}


def require_runnable(pipeline: Pipeline) -> None:
    """Raise why the pipeline may not START or REFRESH: another pipeline runs on its source
    (SourceBusy), its source fails a readiness check (SourceNotReady), or its destination
    does (DestinationNotReady); the cheap rule first, then the ones that ask the servers."""
    source = db.session.get(Source, pipeline.source_id)
    destination = db.session.get(Destination, pipeline.destination_id)
    if source is None or destination is None:
        return  # the form's own checks name the missing one
    stmt = select(Pipeline).where(Pipeline.source_id == source.id, Pipeline.status.in_(RUNNING))
    if pipeline.id is not None:
        stmt = stmt.where(Pipeline.id != pipeline.id)
    other = db.session.scalars(stmt.order_by(Pipeline.name).limit(1)).first()
    if other is not None:
        raise SourceBusy(other, source)
    sources.require_ready(source)
    destinations.require_ready(destination)


def _ready_to_run(pipeline: Pipeline, changed: set[str]) -> None:
    """A save that makes a pipeline START or REFRESH waits for the same verdict as a status
    button (require_runnable); a status set by a save refreshes all tables (those with a
    primary key, as the status button's REFRESH does)."""
    if "status" in changed:
        pipeline.refresh_tables = pipeline.refresh_skipped = None
    if changed & {"status", "source_id", "destination_id"} and pipeline.status in RUNNING:
        with db.session.no_autoflush:  # nothing of the save is written before the verdict
            require_runnable(pipeline)
            source = db.session.get(Source, pipeline.source_id)
            if "status" in changed and pipeline.status == "REFRESH" and source is not None:
                _, pipeline.refresh_skipped = _to_refresh(source, None)


PIPELINES = Resource(
    model=Pipeline,
    form_class=PipelineForm,
    label="pipeline",
    plural="pipelines",
    list_options=(
        joinedload(Pipeline.source).joinedload(Source.state).joinedload(SourceState.server),
        joinedload(Pipeline.destination),
        joinedload(Pipeline.run),
    ),
    order_listed=lambda pipelines: worst_first(pipelines),  # the page's; the API's by name
    prepare_form=_fill_choices,
    before_commit=_ready_to_run,
    # A pipeline made again later gets a new id: it starts with a snapshot, not these.
    before_delete=lambda pipeline: forget_offsets(pipeline.id),
)

# The statuses that ask a consumer to read the source's slot.
RUNNING = ("START", "REFRESH")


def set_status(pipeline: Pipeline, status: str, tables: list[str] | None = None) -> Pipeline:
    """Change the pipeline's desired status; START and REFRESH only when require_runnable
    lets them, PAUSE always. `tables`: REFRESH only these, each a table of the source's
    publication ("schema.table") with a primary key; None: all of those with one (the
    others are stored as `refresh_skipped`)."""
    with audit.change(status.lower(), pipeline) as change:
        if status in RUNNING:
            require_runnable(pipeline)
        skipped = None
        if status == "REFRESH":
            tables, skipped = _to_refresh(pipeline.source, tables)
        pipeline.status = status
        pipeline.refresh_tables = tables if status == "REFRESH" else None
        pipeline.refresh_skipped = skipped
        change.record()
        db.session.commit()
    return pipeline


def refresh(pipeline: Pipeline, tables: list[str] | None = None) -> Pipeline:
    """Ask for a REFRESH of the tables named (each one of the publication's, with a primary
    key), or of all those with a primary key."""
    return set_status(pipeline, "REFRESH", tables)


# Why REFRESH leaves a table without a primary key alone, as the pages and the API say it.
KEYLESS_WHY = (
    "no primary key, so its destination is an append-only history (a row per change), "
    "which REFRESH cannot repair"
)


def skipped_words(skipped: list[str]) -> str:
    """Say which tables a REFRESH of all leaves out, and why."""
    return f"Skipped {', '.join(skipped)}: {KEYLESS_WHY}."


class UnknownTables(DomainError):
    """A REFRESH named tables its source's publication does not list."""

    status = 422
    error = "ValidationError"

    def __init__(self, unknown: list[str], publication: str) -> None:
        message = f"Not tables of publication {publication}: {', '.join(unknown)}."
        super().__init__(message)
        self.details = {"fields": {"tables": [message]}, "unknown": unknown}


class KeylessTables(DomainError):
    """A REFRESH named tables without a primary key: each is loaded as an append-only
    history, which a REFRESH cannot repair."""

    status = 422
    error = "ValidationError"

    def __init__(self, keyless: list[str]) -> None:
        message = (
            f"REFRESH cannot take {', '.join(keyless)}: {KEYLESS_WHY}. Name tables with a "
            "primary key, or leave tables out to refresh every table that has one."
        )
        super().__init__(message)
        self.details = {"fields": {"tables": [message]}, "keyless": keyless}


class NothingToRefresh(DomainError):
    """Every table of the publication lacks a primary key: a REFRESH would re-read none."""

    error = "NothingToRefreshError"

    def __init__(self, keyless: list[str], publication: str) -> None:
        super().__init__(
            f"No table of publication {publication} has a primary key: REFRESH has nothing "
            f"to re-read. {', '.join(keyless)} {'has' if len(keyless) == 1 else 'have'} no "
            "primary key, so each is loaded as an append-only history (a row per change), "
            "which REFRESH cannot repair."
        )
        self.details = {"keyless": keyless}


class PublicationUnreadable(DomainError):
    """The source could not be asked which tables its publication lists."""

    error = "PublicationUnreadableError"


def _published(source: Source, then: str) -> list[obj.PublishedTable]:
    """Ask the source which tables its publication lists, and which have a primary key (the
    catalog, as the replica_identity check reads it); PublicationUnreadable says `then` when
    it does not answer."""
    session = db.session
    if not (session.new or session.dirty or session.deleted):
        session.commit()  # no transaction held open while the source answers
    try:
        return sources.published_tables(source)
    except (obj.SourceUnreachable, obj.SourceRefused) as exc:
        raise PublicationUnreadable(
            f"The tables of publication {source.publication_name} could not be read from "
            f"source '{source.name}': {exc}. {then}"
        ) from None


def _to_refresh(
    source: Source, tables: list[str] | None
) -> tuple[list[str] | None, list[str] | None]:
    """Return what a REFRESH re-reads (the tables named, once each; None: all those with a
    primary key) and what it leaves out (the publication's tables without one, when none are
    named), after asking the source which tables its publication lists and which have a
    primary key (the catalog, as the replica_identity check reads it)."""
    published = _published(
        source,
        "REFRESH reads which of them have a primary key first: try again once the source answers.",
    )
    keyless = [table.name for table in published if not table.has_primary_key]
    if tables is None:
        heartbeat = obj.qualified(obj.HEARTBEAT_SCHEMA, obj.HEARTBEAT_TABLE)
        if keyless and all(t.name == heartbeat or t.name in keyless for t in published):
            raise NothingToRefresh(keyless, source.publication_name)
        return None, keyless or None
    wanted = list(dict.fromkeys(tables))
    listed = {table.name for table in published}
    unknown = [name for name in wanted if name not in listed]
    if unknown:
        raise UnknownTables(unknown, source.publication_name)
    named_keyless = [name for name in wanted if name in keyless]
    if named_keyless:
        raise KeylessTables(named_keyless)
    return wanted, None


# What the engine is doing, as the operator sees it: rosetta_web/engines.py

ERRORS_SHOWN = 50


# The engine states of a pipeline in trouble, listed first (worst first).
TROUBLE_STATES = ("failed", "retrying")


def alert_settings() -> AlertSettings:
    """Return the global alert settings (the defaults, unsaved, before they are first stored),
    read once per app context (a request)."""
    if "rosetta_alert_settings" not in g:
        g.rosetta_alert_settings = db.session.get(AlertSettings, 1) or default_settings()
    settings: AlertSettings = g.rosetta_alert_settings
    return settings


def lag_warning_seconds(source: Source) -> int | None:
    """Return the lag over which a pipeline of `source` is behind: its pipeline_lag alert's
    warning threshold (the global setting, or the source's override); None when that is off."""
    merged = AlertRuleSettings.merged(alert_settings(), source.alert_overrides)
    return merged.pipeline_lag_warning_seconds


@dataclass(frozen=True)
class Lag:
    """How far behind the source a pipeline's engine is, as it last wrote it."""

    seconds: float | None  # None: not known yet (no change or heartbeat loaded)
    bytes: int | None
    warning_seconds: int | None  # its pipeline_lag warning threshold; None: off

    @property
    def behind(self) -> bool:
        """Tell whether the lag is over the pipeline_lag alert's warning threshold."""
        return (
            self.seconds is not None
            and self.warning_seconds is not None
            and self.seconds > self.warning_seconds
        )


def current_lag(pipeline: Pipeline, engine: EngineState | None = None) -> Lag | None:
    """Return the pipeline's lag while a live engine owns it (`engine`: what engine_state
    said of it), None otherwise: an old figure would read as current."""
    engine = engine or engine_state(pipeline)
    run = pipeline.run
    if engine.owner is None or run is None:
        return None
    return Lag(run.lag_seconds, run.lag_bytes, lag_warning_seconds(pipeline.source))


def worst_first(pipelines: list[Pipeline]) -> list[Pipeline]:
    """Order pipelines worst first: failed, then retrying, then the furthest behind in
    seconds (those with no lag known last), then by name."""

    def key(pipeline: Pipeline) -> tuple[int, float, str]:
        engine = engine_state(pipeline)
        lag = current_lag(pipeline, engine)
        trouble = TROUBLE_STATES.index(engine.state) if engine.state in TROUBLE_STATES else 2
        seconds = lag.seconds if lag is not None and lag.seconds is not None else -1.0
        return trouble, -seconds, pipeline.name

    return sorted(pipelines, key=key)


def _engine_shown(pipeline: Pipeline) -> dict[str, object]:
    """Return the pipeline's engine state as its API shape shows it."""
    return engine_state(pipeline).to_dict()


Pipeline.engine_of = _engine_shown


@dataclass(frozen=True)
class EngineError:
    """One failure or retry its engine recorded."""

    at: datetime
    message: str


def engine_errors(pipeline: Pipeline, limit: int = ERRORS_SHOWN) -> list[EngineError]:
    """Return the pipeline's last errors, newest first."""
    stmt = (
        select(PipelineError.at, PipelineError.message)
        .where(PipelineError.pipeline_id == pipeline.id)
        .order_by(PipelineError.at.desc(), PipelineError.id.desc())
        .limit(limit)
    )
    return [EngineError(as_utc(row.at), row.message) for row in db.session.execute(stmt)]


@dataclass(frozen=True)
class SlotActivity:
    """What a pipeline's slot is doing, as the monitor last saw it."""

    slot_name: str | None
    sampled_at: datetime | None  # the server's latest sample; None before the first
    slot: LatestSlot | None  # None: no such slot in that sample
    connected_since: datetime | None = None  # the first sample of the current connection

    @property
    def since(self) -> datetime | None:
        """Since when the consumer has been connected, or absent."""
        if self.slot is None:
            return None
        return self.connected_since if self.slot.active else self.slot.inactive_since


def _latest(pipeline: Pipeline) -> tuple[str | None, Server | None, LatestSlot | None]:
    source = pipeline.source
    server = source.state.server if source.state is not None else None
    name = source.slot_name
    if name is None or server is None or server.last_sampled_at is None:
        return name, server, None
    trend = (server.slot_trends or {}).get(name)
    return name, server, LatestSlot.of(name, trend) if trend is not None else None


def slot_activity(pipeline: Pipeline) -> SlotActivity:
    """Read the pipeline's slot from its server's latest sample, and since when its consumer
    has been connected from the history (the earliest retained sample at most)."""
    name, server, slot = _latest(pipeline)
    if server is None or name is None:
        return SlotActivity(name, None, None)
    connected_since = None
    if slot is not None and slot.active:
        same_slot: tuple[ColumnElement[bool], ...] = (
            SlotMetric.server_id == server.id,
            SlotMetric.slot_name == name,
        )
        if slot.series_started_at is not None:  # not before the slot was created again
            same_slot += (SlotMetric.recorded_at >= slot.series_started_at,)
        last_idle = (
            select(func.max(SlotMetric.recorded_at))
            .where(*same_slot, SlotMetric.active.is_(False))
            .scalar_subquery()
        )
        stmt = select(func.min(SlotMetric.recorded_at)).where(*same_slot, SlotMetric.active)
        stmt = stmt.where(or_(last_idle.is_(None), SlotMetric.recorded_at > last_idle))
        found = db.session.scalar(stmt)
        connected_since = as_utc(found) if found is not None else None
    return SlotActivity(name, server.last_sampled_at, slot, connected_since)


def disagreement(
    pipeline: Pipeline,
    now: datetime,
    engine: EngineState | None = None,
    sampled_at: datetime | None = None,
) -> str | None:
    """Say when the wanted status and the slot disagree: START or REFRESH wanted with no
    consumer, or PAUSE wanted with one still connected; None when they agree, nothing is
    known yet, or the `engine` said after the slot's sample (`sampled_at`) that it complied."""
    if engine is not None and _engine_complied(pipeline.status, engine, sampled_at):
        return None
    name, server, slot = _latest(pipeline)
    if server is None or server.last_sampled_at is None:
        return None
    wanted = pipeline.status
    if name is None:
        return f"{wanted} requested, the source names no slot" if wanted != "PAUSE" else None
    if slot is None:
        return f"{wanted} requested, slot {name} does not exist" if wanted != "PAUSE" else None
    if wanted == "PAUSE":
        return "PAUSE requested, a consumer is still connected" if slot.active else None
    if slot.active:
        return None
    since = slot.inactive_since
    if since is None:
        return f"{wanted} requested, no consumer"
    idle = duration_words((now - as_utc(since)).total_seconds())
    return f"{wanted} requested, no consumer for {idle}"


def _engine_complied(wanted: str, engine: EngineState, sampled_at: datetime | None) -> bool:
    """Tell whether the engine said, after the slot's last sample, that it does what is
    wanted: reads the slot for START or REFRESH, or has stopped for PAUSE."""
    if sampled_at is None or engine.updated_at is None or engine.updated_at <= sampled_at:
        return False
    if wanted == "PAUSE":
        return engine.state in ("paused", "stopped")
    return engine.state in ("snapshotting", "streaming", "refreshing")


def slot_disagreement(pipeline: Pipeline) -> str | None:
    """Say, for the pipelines list, when a pipeline's wanted status and its slot disagree."""
    return disagreement(pipeline, utcnow())


# The pipeline as a Kafka Connect connector, for a fleet that outgrows one machine

_CONNECTOR_SCHEMA = {
    "type": "object",
    "required": ["name", "config"],
    "properties": {
        "name": {"type": "string"},
        "config": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_OFFSETS_SCHEMA = {
    "type": ["object", "null"],
    "required": ["offsets"],
    "properties": {
        "offsets": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["partition", "offset"],
                "properties": {"partition": {"type": "object"}, "offset": {"type": "object"}},
            },
        }
    },
}


class NotExportable(DomainError):
    """The pipeline cannot run as a connector yet: its source names no slot, or its
    publication no table."""

    error = "NotExportableError"


@dataclass(frozen=True)
class ConnectorConfig(Declared):
    """The pipeline's Debezium source connector as Kafka Connect takes it, the offsets to seed
    it with, and the Snowflake sink connector beside it; secrets only as references."""

    api_name = "ConnectorConfig"

    name: Annotated[str, Described("The source connector's name, as in POST /connectors")]
    config: Annotated[
        dict[str, str],
        Described(
            "The source connector's configuration: the engine's Debezium properties with "
            "Kafka Connect's offset storage, snapshot.mode=no_data, a signal table, and the "
            "password as a config-provider reference",
            {"type": "object", "additionalProperties": {"type": "string"}},
        ),
    ]
    offsets: Annotated[
        dict[str, Any] | None,
        Described(
            "The body of PATCH /connectors/<name>/offsets: the engine's committed offset; null "
            "when there is none to give (offsets_missing says why)",
            _OFFSETS_SCHEMA,
        ),
    ]
    offsets_missing: Annotated[str | None, Described("Why offsets is null")]
    secrets_file: Annotated[
        str, Described("The properties file the references read (FileConfigProvider)")
    ]
    secret_keys: Annotated[list[str], Described("The keys that file must hold")]
    sink: Annotated[
        dict[str, Any],
        Described(
            "The Snowflake Kafka connector's sink configuration for the same topics and "
            "tables; not validated by Rosetta",
            _CONNECTOR_SCHEMA,
        ),
    ]
    sink_validated: Annotated[bool, Described("Always false: Rosetta does not check the sink")]
    notes: Annotated[list[str], Described("What to do before moving the pipeline")]


def _sink_target(destination: Destination) -> connect.SinkTarget:
    """Say where the sink loads, from the destination's settings (no secret read)."""
    try:
        endpoint = parse_host(destination.snowflake_host, destination.snowflake_account)
    except ValueError:  # a malformed Host setting: the account's own host
        endpoint = parse_host(None, destination.snowflake_account)
    return connect.SinkTarget(
        destination_id=destination.id,
        url=f"{endpoint.host}:{endpoint.port}",
        user=destination.snowflake_user,
        database=destination.snowflake_database,
        schema=destination.snowflake_schema,
        role=destination.snowflake_role,
        has_passphrase=bool(destination.snowflake_private_key_passphrase_encrypted),
    )


def connector_config(pipeline: Pipeline) -> ConnectorConfig:
    """Return the pipeline as Kafka Connect connectors, after asking its source which tables
    its publication lists (the engine's table list); raise NotExportable or
    PublicationUnreadable when that cannot be said."""
    source = pipeline.source
    if not source.slot_name:
        raise NotExportable(
            f"Source '{source.name}' names no replication slot: the connector would have none "
            "to continue from. Set its slot first."
        )
    published = _published(source, "The connector lists them: try again once the source answers.")
    heartbeat = (obj.HEARTBEAT_SCHEMA, obj.HEARTBEAT_TABLE)
    # The password never enters the configuration: the connector reads it from the file.
    try:
        target = replace(target_of(source), password="")
    except ValueError as exc:  # its stored password cannot be read (another SECRET_KEY)
        raise NotExportable(str(exc)) from None
    spec = pipeline_spec(
        pipeline.id,
        pipeline.name,
        target,
        source.publication_name,
        source.slot_name,
        published,
        heartbeat=any((t.schema, t.table) == heartbeat for t in published),
    )
    if not spec.tables:
        raise NotExportable(f"Publication {source.publication_name} publishes no table.")
    source_connector = connect.source_connector(spec)
    rows = stored_offsets(pipeline.id)
    entries = connect.offsets_to_seed(rows) if rows else []
    offsets_missing = None
    if rows is None:
        offsets_missing = (
            "On SQLite the engine's offsets are a file of Java-serialized bytes, which Rosetta "
            "does not read. Seed none: with snapshot.mode=no_data Debezium starts from the "
            "slot's confirmed position, which follows the engine's last committed offset."
        )
    elif not entries:
        offsets_missing = (
            "The engine has committed no offset for this pipeline: it has not copied its "
            "tables yet (never started, or its offsets were dropped). With snapshot.mode="
            "no_data the connector would skip that first copy: START the pipeline in Rosetta "
            "until it streams, or set snapshot.mode to initial."
        )
    sink = connect.sink_connector(spec, _sink_target(pipeline.destination))
    keys = [connect.password_key(pipeline.id)]
    keys += [
        value.split(":")[-1].rstrip("}")
        for value in sink["config"].values()
        if value.startswith("${file:")
    ]
    notes = [
        "PAUSE the pipeline in Rosetta, and wait for its state to say paused, before the "
        "connector starts: two consumers must never read the slot.",
        f"Create the signal table and add it to the publication: {connect.SIGNAL_DDL}; "
        f"ALTER PUBLICATION {source.publication_name} ADD TABLE "
        f"{connect.SIGNAL_SCHEMA}.{connect.SIGNAL_TABLE} (not for FOR ALL TABLES).",
        connect.SINK_NOT_VALIDATED,
    ]
    return ConnectorConfig(
        name=source_connector["name"],
        config=source_connector["config"],
        offsets={"offsets": entries} if entries else None,
        offsets_missing=offsets_missing,
        secrets_file=connect.SECRETS_FILE,
        secret_keys=keys,
        sink=sink,
        sink_validated=False,
        notes=notes,
    )
