"""A source, the one service for it: its registry entry, what the pages and the API read about
it, sampling it by hand and what follows every round of samples (`after_round`), its
readiness checks stored (and gating pipelines), and its publication and slots created and
dropped with its own credentials through postgres/."""

from __future__ import annotations

import logging
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

from flask import current_app
from sqlalchemy import Select, bindparam, case, delete, func, select, true
from sqlalchemy.orm import defer, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from ..alerts.engine import delivery, evaluation
from ..alerts.engine.rules import Settings
from ..alerts.engine.settings import default_settings
from ..audit import services as audit
from ..batching import batches
from ..errors import NotFound
from ..extensions import built_once, db
from ..formatting import duration_words, pg_size_pretty
from ..models import (
    AlertSettings,
    MonitorRound,
    Pipeline,
    Server,
    SlotMetric,
    Source,
    SourceState,
    WalMetric,
)
from ..monitor import prometheus
from ..monitor.rounds import Round, sample_sources, target_of
from ..postgres import replication_objects as obj
from ..postgres.checks import (
    ORDER,
    TITLES,
    SourceTarget,
    check_source,
    check_sources,
    slot_missing,
)
from ..postgres.sampling import Sample
from ..readiness import FAIL, PASS, Check, NotReady, Readiness, fresh, skipped
from ..resources import Resource, store_readiness
from ..shapes import Declared, Described
from ..timeutil import as_utc, utcnow
from .forms import SourceForm

log = logging.getLogger(__name__)

_Query = TypeVar("_Query", bound=Select[*tuple[Any, ...]])
CONNECTION_FIELDS = {"pg_host", "pg_port", "pg_database", "pg_username", "pg_password"}
# A source whose readiness is older than this is checked again in the background.
RECHECK_AFTER = timedelta(hours=24)


def _monitor_from_scratch(source: Source, changed: set[str]) -> None:
    """Give a new source its PENDING state; after a connection change, forget its backoff.
    Either, or a new name, makes the kept /metrics stale until rendered again."""
    if source.state is None or changed & {"name", *CONNECTION_FIELDS}:
        prometheus.forget()
    if source.state is None:
        source.state = SourceState(status="PENDING", consecutive_failures=0)
    elif changed & CONNECTION_FIELDS:
        # The operator fixed something: try it at the next round, not after the backoff.
        source.state.status = "PENDING"
        source.state.consecutive_failures = 0
        source.state.next_attempt_at = None
        source.state.last_error = None
        source.state.last_attempt_at = None  # sampled again soon, as a new source is
        # Another server may be further along: no WAL rate across the change.
        source.state.wal_position_bytes = None


def _forget_a_server_left_alone(source: Source) -> None:
    """Delete the source's server, with its slot history, when no other source is on it; the
    kept /metrics, which shows the source, is stale."""
    prometheus.forget()
    server_id = source.state.server_id if source.state is not None else None
    if server_id is None:
        return
    others = select(func.count()).where(
        SourceState.server_id == server_id, SourceState.source_id != source.id
    )
    if not db.session.scalar(others):
        db.session.execute(delete(Server).where(Server.id == server_id))


def _check_after_save(source: Source) -> None:
    """Check a source as it is created or edited; a failing check never undoes the save."""
    check_now(source)


SOURCES = Resource(
    model=Source,
    form_class=SourceForm,
    label="source",
    plural="sources",
    list_options=(joinedload(Source.state),),
    before_commit=_monitor_from_scratch,
    before_delete=_forget_a_server_left_alone,
    after_save=_check_after_save,
)


# Worst first: a slot that lost the WAL it needs (its consumer must resync) or is about to,
# then the most WAL retained (what fills the disk), then by name. A lost slot retains nothing
# any more: ordered by retained WAL alone it would sink to the bottom of 500.
WORST_FIRST = (
    case((SlotMetric.wal_status == "lost", 0), (SlotMetric.wal_status == "unreserved", 1), else_=2),
    SlotMetric.retained_bytes.desc().nulls_last(),
    SlotMetric.slot_name,
)
# The rows each table of the source's page draws unless all are asked for: the worst ten, as
# many as its chart draws lines for (history.TOP_SLOTS). 500 rows weigh 390 kB (on a phone,
# 500 cards), and no operator reads them to find what fills the disk; the filter by name finds
# any other.
SLOTS_SHOWN = 10


def server_of(source: Source) -> Server | None:
    """Return the source's server, without its slot trends: one JSON document of every slot,
    read only where drawn (`alerts.services.growing_forecasts`)."""
    state = source.state
    if state is None or state.server_id is None:
        return None
    server = db.session.scalar(
        select(Server).where(Server.id == state.server_id).options(defer(Server.slot_trends))
    )
    set_committed_value(state, "server", server)  # so that `state.server` reads this one
    return server


def chart_server(source: Source) -> Server | None:
    """Return the source's server as its chart reads it (`server_of`'s, in one query): neither
    the source's state, with its day of sparkline, nor the server's slot trends are loaded."""
    return db.session.scalar(built_once(_chart_server_select), {"source_id": source.id})


def _chart_server_select() -> Select[Server]:
    return (
        select(Server)
        .join(SourceState, SourceState.server_id == Server.id)
        .where(SourceState.source_id == bindparam("source_id"))
        .options(defer(Server.slot_trends))
    )


def own_and_other_slots(source: Source) -> tuple[list[SlotMetric], list[SlotMetric]]:
    """Return the slots of the source's server as last sampled: its database's, then the rest.

    Every database of a server sees the same slots, and all of them fill the same disk; both
    come worst first.
    """
    server = source.state.server if source.state is not None else None
    if server is None or server.last_sampled_at is None:
        return [], []
    rows = db.session.scalars(
        select(SlotMetric)
        .where(SlotMetric.server_id == server.id, SlotMetric.recorded_at == server.last_sampled_at)
        .order_by(*WORST_FIRST)
    )
    own: list[SlotMetric] = []
    others: list[SlotMetric] = []
    for row in rows:
        (own if row.database == source.pg_database else others).append(row)
    return own, others


def latest_slots(source: Source) -> list[SlotMetric]:
    """Return every slot of the source's server as last sampled, its own database's first."""
    own, others = own_and_other_slots(source)
    return own + others


@dataclass(frozen=True)
class SlotTable:
    """One table of slots on a source's page: the rows it draws, worst first, and how many
    slots it has in all and match the filter."""

    rows: list[SlotMetric]
    total: int
    matching: int

    @property
    def hidden(self) -> int:
        """Count the slots that match but are not drawn."""
        return self.matching - len(self.rows)


@dataclass(frozen=True)
class ServerSlots:
    """The slots of a source's server that its page draws, from the latest sample alone: its
    database's, then the others, each table the worst first."""

    own: SlotTable
    others: SlotTable
    name: str  # the filter: part of a slot's name, or empty
    everything: bool  # every matching slot drawn, not the worst SLOTS_SHOWN

    @property
    def total(self) -> int:
        """Count the server's slots."""
        return self.own.total + self.others.total


def server_slots(
    source: Source, server: Server | None, name: str = "", everything: bool = False
) -> ServerSlots:
    """Read the slots the source's page draws: the worst SLOTS_SHOWN of each table (or every
    one), among those whose name holds `name`, and how many there are; three queries at most,
    whatever the number of slots."""
    name = name.strip().lower()  # slot names are lower case letters, digits and underscores
    empty = SlotTable([], 0, 0)
    if server is None or server.last_sampled_at is None:
        return ServerSlots(empty, empty, name, everything)
    latest = (SlotMetric.server_id == server.id, SlotMetric.recorded_at == server.last_sampled_at)
    own = case((SlotMetric.database == source.pg_database, True), else_=False)
    matches = SlotMetric.slot_name.contains(name, autoescape=True) if name else true()
    counts = {
        bool(is_own): (total, int(matching or 0))
        for is_own, total, matching in db.session.execute(
            select(own, func.count(), func.sum(case((matches, 1), else_=0)))
            .where(*latest)
            .group_by(own)
        )
    }

    def table(of_database: bool) -> SlotTable:
        total, matching = counts.get(of_database, (0, 0))
        if not matching:
            return SlotTable([], total, 0)
        database = SlotMetric.database
        where = (
            database == source.pg_database
            if of_database
            else database.is_distinct_from(source.pg_database)
        )
        stmt = select(SlotMetric).where(*latest, where, matches)
        stmt = stmt.order_by(*WORST_FIRST).limit(None if everything else SLOTS_SHOWN)
        return SlotTable(list(db.session.scalars(stmt)), total, matching)

    return ServerSlots(table(True), table(False), name, everything)


def next_round_at(interval_s: int) -> datetime | None:
    """Return when the monitor's next round is due, from when its last round started."""
    last = db.session.scalar(
        select(func.max(MonitorRound.started_at)).where(MonitorRound.manual.is_(False))
    )
    if last is None:
        return None
    return as_utc(last) + timedelta(seconds=interval_s)


@dataclass(frozen=True)
class SampleResult(Declared):
    """A sample taken by hand: whether it worked, why not, the sample and the monitor's state."""

    api_name = "SampleResult"

    ok: bool
    error: str | None
    sample: WalMetric | None
    monitor: SourceState | None


def sample_now(source: Source) -> SampleResult:
    """Sample the source by hand now; return the sample, or why it failed, and its state."""
    samples = after_round(sample_sources(source_id=source.id))
    if not samples:  # deleted meanwhile
        raise NotFound(SOURCES.title, source.id)
    sample = samples[0]
    state = db.session.get(SourceState, source.id)
    metric = None
    if sample.ok and state is not None and state.latest_wal_metric_id is not None:
        metric = db.session.get(WalMetric, state.latest_wal_metric_id)
    return SampleResult(ok=sample.ok, error=sample.error, sample=metric, monitor=state)


def after_round(done: Round) -> list[Sample]:
    """Act on a stored round, whoever sampled it: evaluate the alert rules, deliver what they
    queued, check again the sources whose readiness it contradicts; return its samples.

    Neither failing undoes the round, nor stops the other.
    """
    try:
        # At the time it runs: a late lane must not go back in time.
        if evaluation.evaluate():
            delivery.kick()
    except Exception:
        log.exception("evaluating the alert rules failed; the next round evaluates them again")
    # A slot or publication seen gone (or back) makes a stored readiness wrong: check those
    # sources again now.
    try:
        follow_round(done.samples, done.started_at)
    except Exception:
        log.exception("checking sources whose slot or publication changed failed")
    return done.samples


# Readiness


class SourceNotReady(NotReady):
    """A pipeline cannot start or refresh while its source fails a readiness check."""

    error = "SourceNotReadyError"

    def __init__(self, source: Source, readiness: Readiness) -> None:
        super().__init__("Source", source, "for CDC", readiness)


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
    return _check_many(list(db.session.scalars(stmt)), audited=True)


def _check_many(sources: list[Source], audited: bool) -> list[tuple[Source, Readiness]]:
    """Check the sources concurrently (WAL_MONITOR_CONCURRENCY at a time); store each result."""
    specs = [_spec(source) for source in sources]
    db.session.rollback()  # no transaction held open while the sources answer
    to_run = [spec for spec in specs if isinstance(spec, SourceTarget)]
    ran = iter(check_sources(to_run, _timeout(), current_app.config["WAL_MONITOR_CONCURRENCY"]))
    results = [spec if isinstance(spec, Readiness) else next(ran) for spec in specs]
    for source, result in zip(sources, results, strict=True):
        _store(source, result, audited)
    return list(zip(sources, results, strict=True))


def recheck_stale(now: datetime | None = None) -> list[tuple[Source, Readiness]]:
    """Check again every source whose stored readiness is older than RECHECK_AFTER (or that
    was never checked); the scheduler's leader runs this in the background."""
    cutoff = (now or utcnow()) - RECHECK_AFTER
    stale = [
        source
        for source in db.session.scalars(select(Source).order_by(Source.name))
        if source.readiness is None
        or as_utc(Readiness.from_dict(source.readiness).checked_at) < cutoff
    ]
    if not stale:
        db.session.rollback()
        return []
    checked = _check_many(stale, audited=False)
    log.info(
        "readiness: checked again %d source(s) unchecked for %s; %d not ready",
        len(checked),
        duration_words(RECHECK_AFTER.total_seconds()),
        sum(1 for _, result in checked if not result.ready),
    )
    return checked


def _said_there(check: dict[str, Any] | None, missing: bool) -> bool | None:
    """What a stored check said of its object: there (True), missing (False), or nothing
    (not checked, or failed on the way, e.g. a timeout)."""
    if check is None or check["status"] not in (PASS, FAIL):
        return None
    if check["status"] == PASS:
        return True
    return False if missing else None


def _contradicted(source: Source, sample: Sample) -> list[str]:
    """Say what a sample saw that the source's stored readiness denies: its slot or its
    publication gone (or there again), its slot lost (or a new one in its place)."""
    stored = source.readiness or {}
    checks = {check["id"]: check for check in stored.get("checks", [])}
    seen = []
    slot = next((slot for slot in sample.slots if slot.slot_name == source.slot_name), None)
    slot_check = checks.get("slot")
    said = _said_there(slot_check, slot_missing(stored))
    if said is None and slot_check is not None and slot_check["status"] == FAIL:
        # Failed while there (of the wrong kind, or in another database): "Slot x is …".
        said = str(slot_check["observed"]).startswith("Slot ") or None
    if said is not None and said != (slot is not None):
        seen.append(f"slot {source.slot_name} {'gone' if said else 'there'}")
    status_check = checks.get("slot_wal_status")
    usable = slot_check is not None and slot_check["status"] == PASS
    if slot is not None and usable and status_check is not None:
        lost = slot.wal_status == "lost"
        if lost != (status_check["status"] == FAIL):
            seen.append(f"slot {source.slot_name} {'lost' if lost else 'no longer lost'}")
    publication = checks.get("publication")
    missing = publication is not None and str(publication["observed"]).startswith("No publication ")
    said = _said_there(publication, missing)
    if said is not None and sample.publication_exists not in (None, said):
        seen.append(f"publication {source.publication_name} {'gone' if said else 'there'}")
    return seen


def follow_round(samples: list[Sample], started_at: datetime) -> list[tuple[Source, Readiness]]:
    """Check again at once each source whose stored readiness the round contradicts (its slot
    or publication gone, or there again), so its badge and its buttons follow the server."""
    sampled = {sample.source_id: sample for sample in samples if sample.ok}
    if not sampled:
        return []
    stale = []
    sources = [
        source
        for batch in batches(sorted(sampled))
        for source in db.session.scalars(select(Source).where(Source.id.in_(batch)))
    ]
    for source in sources:
        stored = source.readiness
        # A check that ran after the round started may have seen more than the round did.
        if not stored or as_utc(Readiness.from_dict(stored).checked_at) >= as_utc(started_at):
            continue
        seen = _contradicted(source, sampled[source.id])
        if seen:
            log.info(
                "readiness of %s is stale (%s); checking it again", source.name, ", ".join(seen)
            )
            stale.append(source)
    if not stale:
        return []
    return _check_many(stale, audited=False)


def fresh_readiness(source: Source) -> Readiness:
    """Return the source's result, checked again first when it failed or is older than one
    monitor interval."""
    interval = timedelta(seconds=current_app.config["WAL_MONITOR_INTERVAL_SECONDS"])
    return fresh(source.readiness, lambda: check_now(source), interval)


def require_ready(source: Source) -> None:
    """Raise SourceNotReady when the source (checked again if stale or failing) fails a
    check."""
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


def published_tables(source: Source) -> list[obj.PublishedTable]:
    """List the tables the source's publication names, each saying whether it has a primary
    key, read from the source."""
    with _session(source) as s:
        return obj.published_tables(s, source.publication_name)


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


def _on_server_of(stmt: _Query, source: Source) -> _Query:
    """Keep the sources on the source's server (slots belong to the server); the source
    alone while its server is not known yet."""
    server_id = source.state.server_id if source.state is not None else None
    if server_id is None:
        return stmt.where(Source.id == source.id)
    return stmt.join(SourceState, SourceState.source_id == Source.id).where(
        SourceState.server_id == server_id
    )


def pipelines_using(source: Source, slot_name: str) -> list[Pipeline]:
    """The pipelines whose source (on this source's server) names the slot."""
    stmt = select(Pipeline).join(Source).where(Source.slot_name == slot_name)
    return list(db.session.scalars(_on_server_of(stmt, source).order_by(Pipeline.name)))


def pipelines_by_slot(source: Source) -> dict[str, list[str]]:
    """Map each slot of the source's server that a pipeline uses to those pipelines' names."""
    stmt = select(Source.slot_name, Pipeline.name).join(Pipeline.source)
    stmt = _on_server_of(stmt.where(Source.slot_name.is_not(None)), source)
    used: dict[str, list[str]] = {}
    for slot_name, pipeline in db.session.execute(stmt.order_by(Pipeline.name)):
        used.setdefault(str(slot_name), []).append(pipeline)
    return used


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
class SlotDropped(Declared):
    """A slot dropped: its name, the WAL it retained and freed, and the source sampled just
    after."""

    api_name = "SlotDropped"

    dropped: str
    freed_bytes: Annotated[
        int | None,
        Described(
            "What of that no other slot of the server needed: the WAL the drop lets "
            "PostgreSQL remove or recycle at its next checkpoint"
        ),
    ]
    retained_bytes: Annotated[
        int | None,
        Described(
            "The WAL the slot retained when it was dropped (bytes, as "
            "pg_wal_lsn_diff(current, restart_lsn))"
        ),
    ]
    sample: SampleResult


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
    # Checked before the sample: the round then finds the stored result already true.
    check_now(source)
    sample = sample_now(source)
    return SlotDropped(
        dropped=slot_name,
        freed_bytes=dropped.frees_bytes,
        retained_bytes=dropped.retained_bytes,
        sample=sample,
    )
