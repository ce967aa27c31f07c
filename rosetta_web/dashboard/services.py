"""What the dashboard shows: the counts over every source and slot, and the sources worst first,
a page at a time, filtered by state and name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, case, func, select

from ..alerts.display import ForecastWords, forecast_words
from ..alerts.engine import trends
from ..alerts.engine.rules import Settings
from ..batching import batches
from ..extensions import db
from ..models import (
    MONITOR_STATUSES,
    WORST_WAL_STATUSES,
    Server,
    Source,
    SourceState,
)
from ..pipelines import progress
from ..pipelines.services import alert_settings
from ..timeutil import isoformat, utcnow

FAILING = ("ERROR", "BACKOFF")
# Sources a page, as the first page lists them and each "more" adds them.
PAGE_ROWS = 50
# The refresh redraws the rows on screen up to this many (two pages); past it, only the
# counts: a long list redrawn every 30 s would weigh several times the page itself.
REFRESHED_ROWS = 100
# No page lists more than this many sources: the filters find the rest.
MAX_ROWS = 1000
NAME_MAX_LENGTH = 255  # no source's name is longer
# The state filter's values, as the URL carries them, and what each lists.
STATES = {
    "failing": "Failing (ERROR or BACKOFF)",
    "error": "ERROR",
    "backoff": "BACKOFF",
    "pending": "PENDING (not sampled yet)",
    "ok": "OK",
    "inactive": "With an inactive slot",
}

_status = func.coalesce(SourceState.status, "PENDING")
_failing_first = case((SourceState.status.in_(FAILING), 0), else_=1)


@dataclass(frozen=True)
class SourceFilter:
    """Which sources the list shows: by state (a key of STATES), and by a piece of the name."""

    state: str | None = None
    name: str | None = None

    def condition(self) -> ColumnElement[bool] | None:
        """Return the SQL condition a listed source meets; None when every source is listed."""
        conditions: list[ColumnElement[bool]] = []
        if self.state == "failing":
            conditions.append(SourceState.status.in_(FAILING))
        elif self.state == "inactive":
            conditions.append(SourceState.inactive_slot_count > 0)
        elif self.state is not None:
            conditions.append(_status == self.state.upper())
        if self.name:
            conditions.append(func.lower(Source.name).contains(self.name.lower(), autoescape=True))
        return and_(*conditions) if conditions else None


@dataclass
class DashboardQuery:
    """The list's filters and length as the URL gave them, what they mean, and what is wrong."""

    filter: SourceFilter
    values: dict[str, str]  # the filters as typed, non-blank: for the form and every URL
    errors: dict[str, str] = field(default_factory=dict)
    shown: int = PAGE_ROWS  # rows listed from the first


def read_query(args: Mapping[str, str]) -> DashboardQuery:
    """Read the filters and the number of rows shown from a query string; name each bad one.

    A bad filter is left out (the list shows every source for it), so the page still answers.
    """
    values = {
        name: args.get(name, "").strip() for name in ("state", "q") if args.get(name, "").strip()
    }
    errors: dict[str, str] = {}
    state = values.get("state", "").lower() or None
    if state is not None:
        values["state"] = state
        if state not in STATES:
            errors["state"] = f"Choose one of {', '.join(STATES)}."
            state = None
    name = values.get("q")
    if name is not None and (len(name) > NAME_MAX_LENGTH or "\x00" in name):
        errors["q"] = f"A source name is at most {NAME_MAX_LENGTH} characters, none of them NUL."
        name = None
    shown = PAGE_ROWS
    raw = args.get("shown", "").strip()
    if raw:
        if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_ROWS:
            shown = int(raw)
        else:
            errors["shown"] = (
                f"A page lists from 1 to {MAX_ROWS:,} sources: it showed the first {PAGE_ROWS}."
            )
    return DashboardQuery(SourceFilter(state, name), values, errors, shown)


def read_offset(args: Mapping[str, str]) -> int | None:
    """Return how many rows are shown already, where the next start; None when not a count a
    page can show."""
    raw = args.get("offset", "").strip()
    if raw.isascii() and raw.isdigit() and int(raw) < MAX_ROWS:
        return int(raw)
    return None


def sources_worst_first(
    source_filter: SourceFilter = SourceFilter(), limit: int = PAGE_ROWS, offset: int = 0
) -> list[Row[Any]]:
    """Return `limit` sources the filter selects from `offset`: failing first, then most WAL
    retained, then by name; each with its latest state.

    The order is found over the narrow keys alone, then only the page's rows are read whole
    (their sparklines make the rows wide): a page deep in 10,000 sources sorts in memory.
    """
    keys = select(
        Source.id,
        _failing_first.label("failing_first"),
        SourceState.retained_bytes,
        Source.name,
    ).outerjoin(SourceState)
    condition = source_filter.condition()
    if condition is not None:
        keys = keys.where(condition)
    page = (
        keys.order_by(_failing_first, SourceState.retained_bytes.desc().nulls_last(), Source.name)
        .limit(limit)
        .offset(offset)
        .subquery()
    )
    stmt = (
        select(
            Source.id,
            Source.name,
            _status.label("status"),
            SourceState.last_error,
            SourceState.next_attempt_at,
            SourceState.size_bytes,
            SourceState.retained_bytes,
            SourceState.slot_count,
            SourceState.inactive_slot_count,
            SourceState.last_sampled_at,
            SourceState.retained_sparkline,
            # The readiness flag alone: the whole result is for the source's page.
            Source.readiness["ready"].as_boolean().label("ready"),
        )
        .select_from(page)
        .join(Source, Source.id == page.c.id)
        .outerjoin(SourceState, SourceState.source_id == page.c.id)
        .order_by(page.c.failing_first, page.c.retained_bytes.desc().nulls_last(), page.c.name)
    )
    return list(db.session.execute(stmt))


def source_counts(source_filter: SourceFilter = SourceFilter()) -> tuple[dict[str, int], int]:
    """Count every source by monitor status, and those the filter selects: one pass."""
    statuses = dict.fromkeys(MONITOR_STATUSES, 0)
    condition = source_filter.condition()
    selected = func.count(Source.id) if condition is None else func.count(case((condition, 1)))
    stmt = select(_status, func.count(Source.id), selected).outerjoin(SourceState).group_by(_status)
    matching = 0
    for status, count, count_selected in db.session.execute(stmt):
        statuses[status] = count
        matching += count_selected
    return statuses, matching


@dataclass
class Slots:
    """The slots of every server, each counted once as its server's last sample saw it: how
    many, how many without a consumer, the worst one, and the one soonest to fill up."""

    total: int = 0
    inactive: int = 0
    worst: Any = None
    soonest: tuple[Any, ForecastWords] | None = None


def slot_overview(forecast: bool = True) -> Slots:
    """Count the slots and find the worst (lost, then unreserved, then the most WAL retained)
    from each server's summary of its slots, in one statement; with `forecast`, find the slot
    soonest lost or critical among the few whose retained WAL grows. Each slot shown names a
    source of its server (its own database's if any). A few statements over one row per
    server, however many sources and slots."""
    worst_slot = Server.worst_slot
    status = worst_slot["wal_status"].as_string()
    stmt = (
        select(
            Server.id.label("server_id"),
            Server.address,
            Server.system_identifier,
            worst_slot,
            func.sum(Server.slot_count).over().label("total"),
            func.sum(Server.inactive_slot_count).over().label("inactive"),
        )
        # A server without slots has no worst one (SQLite would sort its NULLs first).
        .where(Server.slot_count > 0)
        .order_by(
            case(
                (status == WORST_WAL_STATUSES[0], 0), (status == WORST_WAL_STATUSES[1], 1), else_=2
            ),
            worst_slot["retained_bytes"].as_float().desc().nulls_last(),
            worst_slot["slot_name"].as_string(),
        )
        .limit(1)
    )
    found = db.session.execute(stmt).first()
    if found is None or found.worst_slot is None:
        return Slots()
    figures = found.worst_slot
    since = figures.get("inactive_since")
    worst = SimpleNamespace(
        server_id=found.server_id,
        address=found.address,
        system_identifier=found.system_identifier,
        slot_name=figures["slot_name"],
        database=figures.get("database"),
        active=figures.get("active"),
        inactive_since=datetime.fromtimestamp(since, UTC) if since is not None else None,
        retained_bytes=figures.get("retained_bytes"),
        wal_status=figures.get("wal_status"),
    )
    growing = _growing_slots() if forecast else []
    wanted = [(worst.server_id, worst.database)] + [(s.server_id, s.database) for s in growing]
    owners = _owners(wanted)
    overview = Slots(int(found.total or 0), int(found.inactive or 0), _named(worst, owners))
    if growing:
        overview.soonest = _soonest([_named(one, owners) for one in growing])
    return overview


def _growing_slots() -> list[Any]:
    """Return the slots whose retained WAL grows, with their trends: few, whatever the fleet."""
    found = []
    for server in db.session.execute(
        select(
            Server.id, Server.address, Server.system_identifier, Server.growing_slot_trends
        ).where(Server.growing_slot_trends.is_not(None))
    ):
        for name, trend in (server.growing_slot_trends or {}).items():
            figures = trend.get("slot") or {}
            found.append(
                SimpleNamespace(
                    server_id=server.id,
                    address=server.address,
                    system_identifier=server.system_identifier,
                    slot_name=name,
                    database=figures.get("database"),
                    trend=trend,
                )
            )
    return found


def _owners(
    slots: list[tuple[int, str | None]],
) -> dict[tuple[int, str | None], tuple[int, dict[str, Any] | None]]:
    """Return the source each (server, database) of `slots` belongs to, with its alert
    overrides: the first source on that database (keyed by it), else the server's first
    (keyed by database None). One statement, a second only for slots of a database no source
    is on; each reads those servers' sources alone."""
    owners: dict[tuple[int, str | None], tuple[int, dict[str, Any] | None]] = {}
    owned = (SourceState.server_id, Source.pg_database, Source.id, Source.alert_overrides)
    for pairs in batches(sorted({pair for pair in slots if pair[1] is not None})):
        first = (
            select(func.min(Source.id))
            .join(SourceState)
            .where(
                SourceState.server_id.in_({server_id for server_id, _ in pairs}),
                Source.pg_database.in_({database for _, database in pairs}),
            )
            .group_by(SourceState.server_id, Source.pg_database)
        )
        for row in db.session.execute(select(*owned).join(SourceState).where(Source.id.in_(first))):
            owners[(row.server_id, row.pg_database)] = (row.id, row.alert_overrides)
    others = sorted(
        {server_id for server_id, database in slots if (server_id, database) not in owners}
    )
    for server_ids in batches(others):
        first = (
            select(func.min(SourceState.source_id))
            .where(SourceState.server_id.in_(server_ids))
            .group_by(SourceState.server_id)
        )
        for row in db.session.execute(select(*owned).join(SourceState).where(Source.id.in_(first))):
            owners[(row.server_id, None)] = (row.id, row.alert_overrides)
    return owners


def _named(slot: Any, owners: Mapping[tuple[int, str | None], tuple[int, Any]]) -> Any:
    """Return the slot with its server's name and the source it belongs to, if any."""
    owner = owners.get((slot.server_id, slot.database)) or owners.get((slot.server_id, None))
    return SimpleNamespace(
        **vars(slot),
        source_id=owner[0] if owner else None,
        server=slot.system_identifier or slot.address,
        # The source's own alert settings, for the forecast against its critical threshold.
        alert_overrides=owner[1] if owner else None,
    )


def _soonest(slots: list[Any]) -> tuple[Any, ForecastWords] | None:
    """Return the slot soonest to be lost or to reach its critical threshold, and that in
    words; None when no slot is heading there."""
    settings = alert_settings()  # read once a request, as the pipelines card reads it
    now = utcnow()
    soonest: tuple[Any, ForecastWords] | None = None
    for slot in slots:
        critical = Settings.merged(settings, slot.alert_overrides).retained_critical_bytes
        words = forecast_words(slot.slot_name, trends.forecast(slot.trend, critical), critical, now)
        if words is None or words.when is None:
            continue
        if soonest is None or words.when < (soonest[1].when or words.when):
            soonest = (slot, words)
    return soonest


def slot_dict(slot: Any) -> dict[str, Any]:
    """Return a slot of the dashboard as the API's summary shows it."""
    return {
        "source_id": slot.source_id,
        "server": slot.server,
        "slot_name": slot.slot_name,
        "database": slot.database,
        "retained_bytes": slot.retained_bytes,
        "active": slot.active,
        "inactive_since": isoformat(slot.inactive_since),
        "wal_status": slot.wal_status,
    }


def dashboard_summary(
    slots: Slots | None = None, statuses: dict[str, int] | None = None
) -> dict[str, Any]:
    """Count sources and pipelines by status (and by engine state, and those behind) and slots
    once per server; name the worst slot and the pipeline furthest behind."""
    slots = slot_overview(forecast=False) if slots is None else slots
    statuses = source_counts()[0] if statuses is None else statuses
    pipelines = progress.pipeline_summary()
    return {
        "sources": statuses,
        "slots": {"total": slots.total, "inactive": slots.inactive},
        "pipelines": pipelines.by_status,
        "worst_slot": slot_dict(slots.worst) if slots.worst else None,
        "pipelines_by_state": pipelines.by_state,
        "pipelines_behind": pipelines.behind,
        "worst_lag": pipelines.worst_lag,
    }
