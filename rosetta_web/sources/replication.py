"""A source's readiness and its replication objects: the checks, stored, and the publication
and slots created and dropped with the source's own credentials."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select

from ..alerting.rules import Settings
from ..alerting.settings import default_settings
from ..audit import services as audit
from ..extensions import db
from ..formatting import pg_size_pretty
from ..models import AlertSettings, Pipeline, Source, SourceState
from ..monitor.rounds import target_of
from ..readiness import FAIL, Check, Readiness, skipped
from ..readiness import objects as obj
from ..readiness.source import ORDER, TITLES, SourceTarget, check_source, check_sources
from ..resources import DomainError, store_readiness
from ..timeutil import as_utc, utcnow
from .services import SOURCES, sample_now


class SourceNotReady(DomainError):
    """A pipeline cannot start or refresh while its source fails a readiness check."""

    error = "SourceNotReadyError"

    def __init__(self, source: Source, readiness: Readiness) -> None:
        failing = readiness.failing
        super().__init__(
            f"Source '{source.name}' is not ready for CDC: {', '.join(failing)} failed. "
            "Its page says how to fix each."
        )
        self.details = {"source_id": source.id, "failing": failing}


class ConfirmationMismatch(obj.Invalid):
    """The name typed to confirm a drop is missing or is not the object's name."""

    def __init__(self, name: str) -> None:
        super().__init__("confirm", f"Type the name, {name}, to confirm; nothing was dropped.")


def _timeout() -> float:
    return float(current_app.config["WAL_MONITOR_TIMEOUT_SECONDS"])


def _spec(source: Source) -> SourceTarget | Readiness:
    """What to check; for a password that cannot be decrypted, the failed result already."""
    try:
        target = target_of(source)
    except ValueError as exc:
        failed = Check("connection", FAIL, TITLES["connection"], f"Password: {exc}.")
        return Readiness(
            [
                failed,
                *skipped(
                    [(i, TITLES[i]) for i in ORDER[1:]], "Not checked: Rosetta cannot connect."
                ),
            ]
        )
    critical = _critical_bytes(source)
    return SourceTarget(
        target, source.publication_name, source.slot_name, 2 * critical if critical else None
    )


def _critical_bytes(source: Source) -> int | None:
    """The source's critical threshold, read without writing: a pipeline's save may be waiting
    on this check with its changes pending (the settings row is made on its first write)."""
    stored = db.session.get(AlertSettings, 1)
    settings = Settings.merged(stored or default_settings(), source.alert_overrides)
    return settings.retained_critical_bytes


def readiness_of(source: Source) -> Readiness | None:
    """Return the source's latest stored result, or None before its first check."""
    return Readiness.from_dict(source.readiness) if source.readiness else None


def check_now(source: Source, audited: bool = False) -> Readiness:
    """Check the source now, store the result and return it; `audited`: an operator asked
    for it, and the audit log records the check with its result."""
    spec = _spec(source)
    if isinstance(spec, Readiness):
        return _store(source, spec, audited)
    session = db.session
    if not (session.new or session.dirty or session.deleted):
        session.commit()  # no transaction held open while the source answers
    return _store(source, check_source(spec, _timeout()), audited)


def _store(source: Source, result: Readiness, audited: bool) -> Readiness:
    store_readiness(source, result.to_dict(), audited)
    return result


def check_all(name: str | None = None) -> list[tuple[Source, Readiness]]:
    """Check every source (or the one named), concurrently as the sampler samples them."""
    stmt = select(Source).order_by(Source.name)
    if name is not None:
        stmt = stmt.where(Source.name == name.strip().lower())  # as the form stores names
    sources = list(db.session.scalars(stmt))
    specs = [_spec(source) for source in sources]
    db.session.rollback()  # no transaction held open while the sources answer
    to_run = [spec for spec in specs if isinstance(spec, SourceTarget)]
    ran = iter(check_sources(to_run, _timeout(), current_app.config["WAL_MONITOR_CONCURRENCY"]))
    results = [spec if isinstance(spec, Readiness) else next(ran) for spec in specs]
    for source, result in zip(sources, results, strict=True):
        _store(source, result, audited=True)
    return list(zip(sources, results, strict=True))


def fresh_readiness(source: Source) -> Readiness:
    """Return the source's result, checked again first when older than one monitor interval."""
    stored = readiness_of(source)
    interval = timedelta(seconds=current_app.config["WAL_MONITOR_INTERVAL_SECONDS"])
    if stored is None or utcnow() - as_utc(stored.checked_at) > interval:
        return check_now(source)
    return stored


def require_ready(source: Source) -> None:
    """Raise SourceNotReady when the source (checked again if stale) fails a check."""
    readiness = fresh_readiness(source)
    if not readiness.ready:
        raise SourceNotReady(source, readiness)


# Replication objects


def _session(source: Source) -> AbstractContextManager[obj.Session]:
    try:
        target = target_of(source)
    except ValueError as exc:
        raise obj.SourceUnreachable(str(exc)) from None
    return obj.session(target, _timeout())


def tables(source: Source) -> list[str]:
    """List the tables a publication of the source's database can name (schema.table)."""
    with _session(source) as s:
        return [obj.qualified(schema, table) for schema, table in obj.list_tables(s)]


def create_publication(source: Source, tables: list[str] | None) -> None:
    """Create the source's publication for all tables (None) or the named ones, then check
    the source again."""
    name = source.publication_name
    with audit.change("create_publication", source) as change:
        error = obj.identifier_error(name)
        if error is not None:
            raise obj.Invalid("publication_name", error)
        if tables is not None and not tables:
            raise obj.Invalid("tables", "Choose at least one table, or all tables.")
        with _session(source) as s:
            if obj.publication_exists(s, name):
                raise obj.SourceRefused(f'publication "{name}" already exists', "42710")
            obj.create_publication(s, name, tables)
        change.record(publication=[None, name], tables=[None, tables or "all tables"])
        db.session.commit()
    check_now(source)


def drop_publication(source: Source, confirm: str | None) -> None:
    """Drop the source's publication once its name is typed, then check the source again."""
    name = source.publication_name
    with audit.change("drop_publication", source) as change:
        if confirm != name:
            raise ConfirmationMismatch(name)
        with _session(source) as s:
            obj.drop_publication(s, name)
        change.record(publication=[name, None])
        db.session.commit()
    check_now(source)


def default_slot_name(source: Source) -> str:
    """Name a new slot after its source: rosetta_ and the name in what slots allow."""
    return ("rosetta_" + re.sub(r"[^a-z0-9_]", "_", source.name.lower()))[:63]


def create_slot(source: Source, name: str | None = None) -> str:
    """Create the source's logical slot (pgoutput); a name given becomes the source's slot.

    Returns the slot's name. The source's record changes only once the server made the slot.
    """
    name = name or source.slot_name or default_slot_name(source)
    with audit.change("create_slot", source) as change:
        _valid_slot(name)
        with _session(source) as s:
            obj.create_slot(s, name)
        source.slot_name = name
        change.record(slot=[None, name])
        db.session.commit()
    check_now(source)
    return name


@dataclass(frozen=True)
class SlotPreview:
    """What the drop confirmation shows: the slot now, and who relies on it."""

    info: obj.SlotInfo
    pipelines: list[Pipeline]


def pipelines_using(source: Source, slot_name: str) -> list[Pipeline]:
    """The pipelines whose source (on this source's server) names the slot."""
    server_id = source.state.server_id if source.state is not None else None
    stmt = select(Pipeline).join(Source).where(Source.slot_name == slot_name)
    if server_id is not None:
        stmt = stmt.join(SourceState, SourceState.source_id == Source.id).where(
            SourceState.server_id == server_id
        )
    else:
        stmt = stmt.where(Source.id == source.id)
    return list(db.session.scalars(stmt.order_by(Pipeline.name)))


def _valid_slot(name: str) -> None:
    error = obj.slot_name_error(name)
    if error is not None:
        raise obj.Invalid("slot_name", error)


def preview_slot_drop(source: Source, slot_name: str) -> SlotPreview:
    """Read the slot from the server now, for the confirmation."""
    _valid_slot(slot_name)
    with _session(source) as s:
        info = obj.slot_info(s, slot_name)
    return SlotPreview(info, pipelines_using(source, slot_name))


def _freed_words(dropped: obj.SlotInfo) -> str | None:
    """Say what a drop freed, as the slot's page says it."""
    if dropped.retained_bytes is None:
        return None
    return (
        f"Freed {pg_size_pretty(dropped.frees_bytes)} of WAL; "
        f"the slot retained {pg_size_pretty(dropped.retained_bytes)}."
    )


@dataclass(frozen=True)
class SlotDropped:
    """A slot dropped: the WAL it retained and freed, and the source sampled just after."""

    slot_name: str
    retained_bytes: int | None
    freed_bytes: int | None
    sample: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dropped": self.slot_name,
            "freed_bytes": self.freed_bytes,
            "retained_bytes": self.retained_bytes,
            "sample": self.sample,
        }


def drop_slot(source: Source, slot_name: str, confirm: str | None) -> SlotDropped:
    """Drop a slot of the source's server once its name is typed; sample at once after."""
    with audit.change("drop_slot", source) as change:
        _valid_slot(slot_name)
        if confirm != slot_name:
            raise ConfirmationMismatch(slot_name)
        with _session(source) as s:
            dropped = obj.drop_slot(s, slot_name)
        change.record(
            message=_freed_words(dropped),
            slot=[slot_name, None],
            retained_bytes=[dropped.retained_bytes, None],
            freed_bytes=[None, dropped.frees_bytes],
        )
        db.session.commit()
    sample = sample_now(source)
    check_now(SOURCES.get(source.id))
    return SlotDropped(slot_name, dropped.retained_bytes, dropped.frees_bytes, sample)
