"""One sampling round: which sources are due, sampling them (postgres/), storing the results,
backoff.

Three entry points say which sources a round samples: `scheduled_round` (the due ones),
`sample_sources` (by hand: all, or one by name or id) and `sample_new_sources` (the ones never
attempted since they were saved). Each stores what it sampled, renders /metrics from what is
stored (monitor/prometheus.py keeps it for every process), and returns the `Round`; this
module only stores. What follows a round (the alert rules, their notifications, readiness
seen contradicted) is the caller's: `sources.services.after_round`.

Also the daily retention of the history it stores.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from flask import Flask, current_app
from sqlalchemy import CursorResult, Select, delete, insert, select
from sqlalchemy.orm import defer, undefer
from werkzeug.local import LocalProxy

from .. import sparkline
from ..alerts.engine import trends
from ..batching import Changes, batches, upsert
from ..extensions import db
from ..models import (
    MonitorRound,
    PipelineLag,
    PipelineMinute,
    SampleError,
    Server,
    SlotMetric,
    Source,
    SourceState,
    WalMetric,
)
from ..postgres.connection import Target
from ..postgres.sampling import Sample, ServerGroup, SlotSample, sample_servers
from ..timeutil import as_utc, utcnow
from . import prometheus, rollups
from .workers import kept_connections, lanes, resolver

log = logging.getLogger(__name__)


MAX_BACKOFF_SECONDS = 900
# Failed rounds after which the source is still tried at the very next round: a blip (a
# restart, a failover) must not hide the recovery behind a backoff.
RETRIED_AT_ONCE = 2
RETENTION_BATCH_ROWS = 5000


@dataclass(frozen=True)
class Round:
    """A round as stored: its samples (each with its source's status once stored) and when it
    started."""

    samples: list[Sample]
    started_at: datetime


# What is done with a round once stored (`sources.services.after_round`), by its caller or by
# the lane that stored it apart.
AfterRound = Callable[[Round], object]


def backoff_seconds(consecutive_failures: int, interval_s: int) -> int:
    """Return how long after a failed round to try again: the next round after the first two
    failures, then twice as long after each further one, at most 15 minutes (or one interval)."""
    if consecutive_failures <= RETRIED_AT_ONCE:
        return interval_s
    doubled: int = interval_s * 2 ** min(consecutive_failures - RETRIED_AT_ONCE, 20)
    return min(doubled, max(MAX_BACKOFF_SECONDS, interval_s))


def status_after(consecutive_failures: int) -> str:
    """Name a failing source's status: ERROR while retried every round, then BACKOFF."""
    return "ERROR" if consecutive_failures <= RETRIED_AT_ONCE else "BACKOFF"


def wal_rate(before: Any, moment: datetime, wal_position_bytes: int | None) -> float | None:
    """Return WAL written per second since the source's last sample, as its state's row
    `before` holds it (`last_sampled_at`, `wal_position_bytes`; None: no state yet). None: no
    earlier sample, or the position went back, as on a restored or replaced server."""
    if before is None or before.last_sampled_at is None or before.wal_position_bytes is None:
        return None
    last_position: int = before.wal_position_bytes
    if wal_position_bytes is None or wal_position_bytes < last_position:
        return None
    seconds = (moment - as_utc(before.last_sampled_at)).total_seconds()
    if seconds <= 0:
        return None
    return (wal_position_bytes - last_position) / seconds


def _servers(samples: list[Sample]) -> dict[int, Server]:
    """Find or register the server of each successful sample, by source id.

    A server is known by its system_identifier. One known so far only by its address (host
    and port, as the migration found it) is claimed by the first sample that reads it there.
    """
    good = [sample for sample in samples if sample.ok]
    identifiers = {sample.system_identifier for sample in good if sample.system_identifier}
    addresses = {sample.address for sample in good if sample.address}
    by_identifier: dict[str, Server] = {}
    by_address: dict[str, Server] = {}
    for server in _locked_servers(identifiers, addresses):
        # Checked again once locked: another storer may have claimed an address meanwhile.
        if server.system_identifier:
            if server.system_identifier in identifiers:
                by_identifier[server.system_identifier] = server
        elif server.address in addresses:
            by_address[server.address] = server
    found: dict[int, Server] = {}
    for sample in good:
        identifier = sample.system_identifier
        known = by_identifier.get(identifier) if identifier else None
        if known is not None:
            server = known
        else:
            claimed = by_address.pop(sample.address or "", None)
            server = claimed or Server(address=sample.address or sample.name)
            db.session.add(server)
            server.system_identifier = identifier
            if identifier:
                by_identifier[identifier] = server
            else:  # no identifier to go by (not expected of PostgreSQL 9.6+): one per address
                by_address[server.address] = server
        found[sample.source_id] = server
    return found


def _locked_servers(identifiers: set[str], addresses: set[str]) -> list[Server]:
    """Lock and return the servers known by one of `identifiers`, or by one of `addresses`
    with no identifier yet.

    Found a batch of values at a time, then locked a batch of ids at a time in id order: a
    round and a lane storing the same server take turns, and the second sees what the first
    stored (PostgreSQL; SQLite has one writer at a time anyway).
    """
    ids: set[int] = set()
    for named in batches(sorted(identifiers)):
        ids.update(db.session.scalars(select(Server.id).where(Server.system_identifier.in_(named))))
    for at in batches(sorted(addresses)):
        ids.update(
            db.session.scalars(
                select(Server.id).where(Server.system_identifier.is_(None), Server.address.in_(at))
            )
        )
    locked: list[Server] = []
    for batch in batches(sorted(ids)):
        locked += db.session.scalars(
            select(Server)
            .where(Server.id.in_(batch))
            .order_by(Server.id)
            .options(undefer(Server.slot_points))  # the round adds to them
            .with_for_update()
        )
    return locked


def _previous_slots(servers: Iterable[Server]) -> dict[tuple[int, str], SlotMetric]:
    """Return each server's slots as its last sample stored them, by (server id, slot name)."""
    # Asked by the time of that sample (one, mostly: the last round's), a batch of servers at
    # a time.
    by_time: dict[datetime, set[int]] = defaultdict(set)
    for server in servers:
        if server.last_sampled_at:
            by_time[server.last_sampled_at].add(server.id)
    found: dict[tuple[int, str], SlotMetric] = {}
    for recorded_at, ids in by_time.items():
        for batch in batches(sorted(ids)):
            for row in db.session.scalars(
                select(SlotMetric).where(
                    SlotMetric.recorded_at == recorded_at, SlotMetric.server_id.in_(batch)
                )
            ):
                found[row.server_id, row.slot_name] = row
    return found


def inactive_since(
    slot: SlotSample, previous: SlotMetric | None, moment: datetime
) -> datetime | None:
    """Say since when a slot has had no consumer: PostgreSQL 17's figure, else the history's."""
    if slot.active:
        return None
    if slot.inactive_since is not None:
        return slot.inactive_since
    if previous is not None and not previous.active and previous.inactive_since is not None:
        return as_utc(previous.inactive_since)  # SQLite hands it back naive
    return moment


def _store_slots(
    server: Server,
    slots: list[SlotSample],
    previous: dict[tuple[int, str], SlotMetric],
    wal_position: int | None,
    moment: datetime,
) -> None:
    """Store a server's slots as one sample saw them and add it to their trends; forget the
    trends of the slots gone since. A slot that starts a new series (dropped and created
    again, say) begins its trend, its time without a consumer and its chart line afresh; one
    a consumer visited unseen begins its growth and its time without a consumer afresh."""
    summaries, points = server.slot_trends or {}, server.slot_points or {}
    interval_s = current_app.config["WAL_MONITOR_INTERVAL_SECONDS"]
    updated: dict[str, dict[str, Any]] = {}
    for slot in slots:
        trend: dict[str, Any] | None = summaries.get(slot.slot_name)
        row = SlotMetric(**vars(slot), server_id=server.id, recorded_at=moment)
        before = previous.get((server.id, slot.slot_name))
        follows = trends.continuity(trend, row, wal_position)
        if follows == trends.NEW_SERIES:
            trend = before = None
        elif follows == trends.VISITED and trend is not None:
            # Same series, its growth and its time without a consumer afresh.
            trend = {key: trend[key] for key in ("series",) if key in trend}
            before = None
        else:
            trend = {**(trend or {}), "points": points.get(slot.slot_name, [])}
        row.inactive_since = inactive_since(slot, before, moment)
        updated[slot.slot_name] = trends.update(trend, moment, row, wal_position, interval_s)
        row.series_started_at = datetime.fromtimestamp(updated[slot.slot_name]["series"], UTC)
        db.session.add(row)
    server.slot_points = {name: trend.pop("points") for name, trend in updated.items()}
    server.slot_trends = updated


def _existing(samples: list[Sample]) -> list[Sample]:
    """Leave out the samples of sources deleted while they were sampled; the sources kept
    cannot be deleted until this transaction ends (FOR KEY SHARE; SQLite has one writer)."""
    existing: set[int] = set()
    for batch in batches(sorted({sample.source_id for sample in samples})):
        existing.update(
            db.session.scalars(
                select(Source.id)
                .where(Source.id.in_(batch))
                .with_for_update(read=True, key_share=True)
            )
        )
    return [sample for sample in samples if sample.source_id in existing]


def _store_samples(
    samples: list[Sample],
    servers: dict[int, Server],
    started_at: datetime,
    interval_s: int,
    manual: bool,
) -> None:
    """Store each sample's figures or failure and its source's state (backoff, sparkline,
    latest figures), a batch of sources at a time: each batch is written and let go before the
    next is read, so the states (a day of sparkline each) of thousands of sources are never
    all held at once."""
    by_source: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_source[sample.source_id].append(sample)
    for batch in batches(sorted(by_source)):
        _store_batch(
            [one for source_id in batch for one in by_source[source_id]],
            servers,
            started_at,
            interval_s,
            manual,
        )


# What storing a batch reads of each source's state: what the new one is worked out from.
_STATE_BEFORE = (
    SourceState.source_id,
    SourceState.consecutive_failures,
    SourceState.next_attempt_at,
    SourceState.last_sampled_at,
    SourceState.wal_position_bytes,
    SourceState.retained_history,
    SourceState.retained_sparkline.is_(None).label("undrawn"),
)


def _replaced(rows: list[dict[str, Any]]) -> Changes:
    """An upsert's changes that set a state's columns given in `rows` (all but its key)."""
    return lambda old, new: {name: new[name] for name in rows[0] if name != "source_id"}


def _store_batch(
    samples: list[Sample],
    servers: dict[int, Server],
    started_at: datetime,
    interval_s: int,
    manual: bool,
) -> None:
    """Store one batch of `_store_samples`: its figures and failures, then each source's
    state, in statements of bounded size (`batching.upsert`), as rows, not ORM objects."""
    connection = db.session.connection()
    before = {
        row.source_id: row
        for row in connection.execute(
            select(*_STATE_BEFORE).where(
                SourceState.source_id.in_({sample.source_id for sample in samples})
            )
        )
    }
    good = [sample for sample in samples if sample.ok]
    metric_ids: Sequence[int] = []
    if good:
        # The figures first, for their ids (each rate from the state's last sample).
        metric_ids = (
            connection.execute(
                insert(WalMetric).returning(WalMetric.id, sort_by_parameter_order=True),
                [
                    {
                        **sample.figures(),
                        "source_id": sample.source_id,
                        "recorded_at": started_at,
                        "wal_rate_bytes_per_second": wal_rate(
                            before.get(sample.source_id), started_at, sample.wal_position_bytes
                        ),
                    }
                    for sample in good
                ],
            )
            .scalars()
            .all()
        )
    # Each source's new state, from its last sample (it is sampled once a round).
    states: dict[int, dict[str, Any]] = {}
    for sample, metric_id in zip(good, metric_ids, strict=True):
        old = before.get(sample.source_id)
        state = {
            "source_id": sample.source_id,
            "status": "OK",
            "last_attempt_at": started_at,
            "last_duration_ms": sample.duration_ms,
            "latest_wal_metric_id": metric_id,
            "last_sampled_at": started_at,
            "last_error": None,
            "consecutive_failures": 0,
            "next_attempt_at": None,
            **sample.figures(),
            "server_version": sample.server_version,
            "in_recovery": sample.in_recovery,
            "server_id": servers[sample.source_id].id,
        }
        points = old.retained_history if old is not None else None
        history = sparkline.fold(points, started_at, sample.retained_bytes)
        # Within a bucket, a sample no larger than its maximum changes neither the points
        # nor the line: neither is drawn nor written again.
        if old is None or old.undrawn or history != points:
            state |= {"retained_history": history, "retained_sparkline": sparkline.draw(history)}
        states[sample.source_id] = state
        sample.status = "OK"
    errors: list[dict[str, Any]] = []
    for sample in samples:
        if sample.ok:
            continue
        old = before.get(sample.source_id)
        failures = (old.consecutive_failures or 0) if old is not None else 0
        next_attempt_at = old.next_attempt_at if old is not None else None
        if not manual:
            failures += 1
            next_attempt_at = started_at + timedelta(seconds=backoff_seconds(failures, interval_s))
        error = (sample.error or "unknown error")[:500]
        sample.status = status_after(failures or 1)
        states[sample.source_id] = {
            "source_id": sample.source_id,
            "status": sample.status,
            "last_attempt_at": started_at,
            "last_duration_ms": sample.duration_ms,
            "last_error": error,
            "consecutive_failures": failures,
            "next_attempt_at": next_attempt_at,
        }
        errors.append({"source_id": sample.source_id, "recorded_at": started_at, "error": error})
    if errors:
        connection.execute(insert(SampleError), errors)
    # One statement for each set of columns a state is written with: a good sample's with its
    # sparkline drawn again, or without, and a failure's.
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for state in states.values():
        by_columns[tuple(state)].append(state)
    for rows in by_columns.values():
        upsert(SourceState.__table__, rows, _replaced(rows))


def _store_server_slots(
    samples: list[Sample], servers: dict[int, Server], started_at: datetime
) -> None:
    """Store each server's slots and trends once a round, as its first good sample saw them:
    also when a source sampled apart and one sampled with the round are two databases of it."""
    previous = _previous_slots({server.id: server for server in servers.values()}.values())
    stored_servers: set[int] = set()
    for sample in samples:
        if not sample.ok:
            continue
        server = servers[sample.source_id]
        # A lane that ends after a later round keeps that round's newer slots.
        stored = server.last_sampled_at and as_utc(server.last_sampled_at) >= started_at
        if server.id not in stored_servers and not stored:
            stored_servers.add(server.id)
            server.last_sampled_at = started_at
            server.max_slot_wal_keep_size = sample.max_slot_wal_keep_size
            _store_slots(server, sample.slots, previous, sample.wal_position_bytes, started_at)


def _write_round_row(
    samples: list[Sample],
    started_at: datetime,
    skipped: int,
    sampling_s: float,
    sampler: str,
    manual: bool,
    clock: float,
) -> float:
    """Write the round's row and commit the round; return the seconds storing took since
    `clock`, the commit included (with many slot rows, most of it)."""
    round_row = MonitorRound(
        started_at=started_at,
        sampling_ms=int(sampling_s * 1000),
        sources=len(samples),
        failures=sum(1 for sample in samples if not sample.ok),
        skipped=skipped,
        sampler=sampler[:255],
        manual=manual,
    )
    round_row.storing_ms = int((time.monotonic() - clock) * 1000)
    round_row.duration_ms = int(sampling_s * 1000) + round_row.storing_ms
    db.session.add(round_row)
    db.session.commit()
    storing_s = time.monotonic() - clock
    round_row.storing_ms = int(storing_s * 1000)
    round_row.duration_ms = int((sampling_s + storing_s) * 1000)
    db.session.commit()
    return storing_s


def record_round(
    samples: list[Sample],
    started_at: datetime,
    interval_s: int,
    skipped: int,
    sampling_s: float,
    sampler: str,
    manual: bool = False,
) -> float:
    """Store one round in one transaction: samples, failures, each server's slots once, states;
    then render /metrics from them and keep it (`prometheus.keep`, its own transaction).

    A manual round (sampled by hand) never lengthens a backoff; a good sample ends one.
    Return the seconds storing took, the commit included; the round's row says it too.
    It only stores: what follows a round is the caller's (`sources.services.after_round`).
    """
    clock = time.monotonic()
    try:
        samples = _existing(samples)
        servers = _servers(samples)
        db.session.flush()  # gives new servers their ids
        _store_samples(samples, servers, started_at, interval_s, manual)
        _store_server_slots(samples, servers, started_at)
        db.session.flush()
        rollups.add_round(
            started_at, [sample.source_id for sample in samples], [s.id for s in servers.values()]
        )
        storing_s = _write_round_row(
            samples, started_at, skipped, sampling_s, sampler, manual, clock
        )
    except Exception:
        db.session.rollback()
        raise
    _keep_metrics()
    return storing_s


def _keep_metrics() -> None:
    """Render /metrics as the round just stored left the figures; a failure undoes no round
    (scrapes serve the last rendering, and the next round renders again)."""
    try:
        prometheus.keep()
    except Exception:
        db.session.rollback()
        log.exception("rendering /metrics after the round failed; the next round renders it")


def delete_expired(retention_days: int, now: datetime | None = None) -> int:
    """Delete samples older than the retention, a batch per transaction; return rows deleted."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    deleted = 0
    for model, column in (
        (SlotMetric, SlotMetric.recorded_at),
        (SampleError, SampleError.recorded_at),
        (WalMetric, WalMetric.recorded_at),
        (MonitorRound, MonitorRound.started_at),
        # The engine's per-minute progress is kept as long as the WAL history it is charted by.
        (PipelineMinute, PipelineMinute.minute),
        (PipelineLag, PipelineLag.minute),
    ):
        while True:
            batch = (
                select(model.id)
                .where(column < cutoff)
                .order_by(model.id)
                .limit(RETENTION_BATCH_ROWS)
            )
            # Short transactions: each batch commits, so no lock is held for long.
            result = db.session.execute(delete(model).where(model.id.in_(batch.scalar_subquery())))
            # Typed as a plain Result, but a DELETE's result is a CursorResult, which counts rows.
            assert isinstance(result, CursorResult)
            db.session.commit()
            deleted += result.rowcount
            if result.rowcount < RETENTION_BATCH_ROWS:
                break
    log.info("WAL retention: deleted %d rows older than %d days", deleted, retention_days)
    if deleted:
        # A server unsampled for the whole retention loses its last slots, and rounds only
        # by hand lose the last scheduled one: /metrics no longer shows them.
        prometheus.keep()
    return deleted


def _due(state: SourceState | None, now: datetime, interval_s: int) -> bool:
    """Tell whether a source should be sampled this round (not waiting out a backoff)."""
    if state is None or state.next_attempt_at is None:
        return True
    # Ticks drift by milliseconds; a source due within half an interval is due now.
    return as_utc(state.next_attempt_at) <= now + timedelta(seconds=interval_s / 2)


def _slow_first(state: SourceState | None) -> tuple[int, int]:
    if state is None or state.status != "OK":
        return (0, 0)
    return (1, -(state.last_duration_ms or 0))


def _suspect(state: SourceState | None, timeout_s: float) -> bool:
    """Tell whether a source failed or was slow last time: it may hang again."""
    if state is None or state.status == "PENDING":
        return False
    return state.status != "OK" or (state.last_duration_ms or 0) >= timeout_s * 500


def join_lanes(timeout_s: float, app: Flask | None = None) -> None:
    """Wait, at most `timeout_s`, for the lanes sampling apart to store what they sampled."""
    lanes(app).join(timeout_s)


def _sample_apart(
    app: Flask, targets: list[Target], started_at: datetime, then: AfterRound
) -> None:
    """Sample suspect sources in their own lane, store them when they are done, and hand
    what was stored to `then`."""
    config = app.config
    clock = time.monotonic()
    try:
        samples = sample_servers(
            _one_by_one(targets),
            config["WAL_MONITOR_TIMEOUT_SECONDS"],
            config["WAL_MONITOR_MAX_RETRIES"],
            max(1, config["WAL_MONITOR_CONCURRENCY"] // 4),
        )
        with app.app_context():
            record_round(
                samples,
                started_at,
                config["WAL_MONITOR_INTERVAL_SECONDS"],
                0,
                time.monotonic() - clock,
                sampler_identity(),
            )
            then(Round(samples, started_at))
    except Exception:
        log.exception("storing the sources sampled apart failed; the next round tries them")
    finally:
        sampling_lanes = lanes(app)
        with sampling_lanes.lock:
            sampling_lanes.in_flight.difference_update(target.source_id for target in targets)


def target_of(source: Source) -> Target:
    """Where and as whom to reach a source (ValueError when its password cannot be read)."""
    return Target(
        source.id,
        source.name,
        source.pg_host,
        source.pg_port,
        source.pg_database,
        source.pg_username,
        source.pg_password,
        publication=source.publication_name,
        resolver=resolver(),
    )


def sampler_identity() -> str:
    """Name this process in the round log: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _sources() -> Select[Source, SourceState]:
    """Select the sources with their states, if any, by name: without the states' sparklines,
    which the round does not read before it stores them (a day of points each)."""
    return (
        select(Source, SourceState)
        .outerjoin(SourceState)
        .options(defer(SourceState.retained_history), defer(SourceState.retained_sparkline))
        .order_by(Source.name)
    )


def _rows(stmt: Select[Source, SourceState]) -> list[tuple[Source, SourceState | None]]:
    """Read the sources a round considers: those that failed or were slow last time first, so
    a source that will hang waits out its timeout while the quick ones are sampled."""
    rows = [(source, state) for source, state in db.session.execute(stmt)]
    return sorted(rows, key=lambda row: _slow_first(row[1]))


def scheduled_round(now: datetime | None = None, apart: AfterRound | None = None) -> Round:
    """Sample every source that is due (not waiting out a backoff, not in a lane), store the
    results, log one line.

    With `apart` (the scheduler's rounds), sources that failed or were slow last time are
    sampled in a lane of their own that the round does not wait for: they store their samples
    when done, hand them to `apart` (what the caller does with the round returned), and are
    left out of the rounds that start meanwhile. However many hang, the others are sampled and
    stored on time.
    """
    now = now or utcnow()
    return _round(_rows(_sources()), now, by_hand=False, apart=apart)


def sample_sources(
    name: str | None = None, source_id: int | None = None, now: datetime | None = None
) -> Round:
    """Sample by hand every source, or the one named (by name or id), store, log one line.

    Every source named is sampled whatever its backoff, also while a lane waits on it, and a
    failure is recorded without lengthening the backoff.
    """
    now = now or utcnow()
    stmt = _sources()
    if name is not None:
        stmt = stmt.where(Source.name == name.lower())
    if source_id is not None:
        stmt = stmt.where(Source.id == source_id)
    return _round(_rows(stmt), now, by_hand=True)


def sample_new_sources(now: datetime | None = None) -> Round | None:
    """Sample, as by hand, the sources never attempted since they were saved (new, or with a
    new connection); store nothing and return None when there are none."""
    now = now or utcnow()
    stmt = _sources().where(SourceState.source_id.is_(None) | SourceState.last_attempt_at.is_(None))
    rows = _rows(stmt)
    if not rows:
        db.session.rollback()
        return None
    return _round(rows, now, by_hand=True)


def close_changed_connections() -> None:
    """Close at once the connections kept for sources deleted or given other settings since
    (the scheduler asks every few seconds: the edit may have been made in another process)."""
    kept = kept_connections()
    by_key = kept.source_ids()
    if not by_key:
        return
    found = {
        source.id: source
        for batch in batches(sorted(set(by_key.values())))
        for source in db.session.scalars(select(Source).where(Source.id.in_(batch)))
    }
    targets: dict[Hashable, Target | None] = {}
    for key, source_id in by_key.items():
        source = found.get(source_id)
        try:
            targets[key] = target_of(source) if source is not None else None
        except ValueError:  # its password cannot be read any more
            targets[key] = None
    db.session.rollback()
    kept.close_changed(targets)


def _one_by_one(targets: list[Target]) -> list[ServerGroup]:
    """Sample each source over its own connection, none kept."""
    return [ServerGroup(None, [target]) for target in targets]


def _by_server(chosen: list[tuple[Target, SourceState | None]]) -> list[ServerGroup]:
    """Group the sources whose server is known by it and by the address they reach it at, the
    one whose role sees the most first (it could list the WAL directory); a source whose server
    is not known, or whose last sample failed (it may be on another server now), is sampled on
    its own. The address counts: a standby (or a restored copy) has its primary's
    system_identifier, and must be read over a connection of its own."""
    shared: dict[tuple[int, str, int], list[tuple[Target, SourceState]]] = defaultdict(list)
    alone: list[Target] = []
    for target, state in chosen:
        if state is not None and state.status == "OK" and state.server_id is not None:
            shared[state.server_id, target.host, target.port].append((target, state))
        else:
            alone.append(target)
    groups = _one_by_one(alone)
    for key, members in shared.items():
        members.sort(key=lambda member: (member[1].size_bytes is None, member[0].source_id))
        groups.append(ServerGroup(key, [target for target, _ in members]))
    return groups


def _round(
    rows: list[tuple[Source, SourceState | None]],
    now: datetime,
    by_hand: bool,
    apart: AfterRound | None = None,
) -> Round:
    """Sample the sources of `rows` that are due (all of them by hand), store, log one line.

    A scheduled round samples each known server once for all its sources, over a connection
    kept between rounds (WAL_MONITOR_KEEP_CONNECTIONS); by hand, every source is sampled over
    its own new connection, so its own settings are what is tried.
    """
    config = current_app.config
    interval_s = config["WAL_MONITOR_INTERVAL_SECONDS"]
    clock = time.monotonic()
    timeout_s = config["WAL_MONITOR_TIMEOUT_SECONDS"]
    chosen: list[tuple[Target, SourceState | None]] = []
    suspects: list[Target] = []
    unreadable: list[Sample] = []
    skipped = 0
    sampling_lanes = lanes()
    with sampling_lanes.lock:
        in_flight = set(sampling_lanes.in_flight)
    for source, state in rows:
        # By hand, a source is sampled even while its lane still waits on it.
        if not by_hand and (source.id in in_flight or not _due(state, now, interval_s)):
            skipped += 1
            continue
        try:
            target = target_of(source)
        except ValueError as exc:
            unreadable.append(Sample(source.id, source.name, False, 0, 0, error=str(exc)))
            continue
        if apart and _suspect(state, timeout_s):
            suspects.append(target)
        else:
            chosen.append((target, state))
    groups = _one_by_one([target for target, _ in chosen]) if by_hand else _by_server(chosen)
    # Nothing is written while sources are sampled: the session holds no transaction open,
    # nor the rows read (storing reads each batch of states again).
    db.session.rollback()
    del rows, chosen
    if suspects and apart is not None:
        with sampling_lanes.lock:
            sampling_lanes.in_flight.update(target.source_id for target in suspects)
        app = cast("LocalProxy[Flask]", current_app)._get_current_object()
        lane = threading.Thread(
            target=_sample_apart,
            args=(app, suspects, now, apart),
            name="wal-sampler-apart",
            daemon=True,
        )
        sampling_lanes.add(lane)
        lane.start()
    kept = None if by_hand else kept_connections()
    if kept is not None:
        kept.keeping = config["WAL_MONITOR_KEEP_CONNECTIONS"]
    samples = unreadable + sample_servers(
        groups,
        timeout_s,
        config["WAL_MONITOR_MAX_RETRIES"],
        config["WAL_MONITOR_CONCURRENCY"],
        kept,
    )
    if kept is not None:
        kept.end_round()
    sampling_s = time.monotonic() - clock
    storing_s = record_round(
        samples, now, interval_s, skipped, sampling_s, sampler_identity(), manual=by_hand
    )
    failures = sum(1 for sample in samples if not sample.ok)
    log.info(
        "WAL round: %d sources sampled over %d connections, %d failed, %d skipped (backing off, or "
        "sampled apart), %.2f s (sampling %.2f s, storing %.2f s)",
        len(samples),
        len(groups),
        failures,
        skipped,
        sampling_s + storing_s,
        sampling_s,
        storing_s,
        extra={
            "sources": len(samples),
            "connections": len(groups),
            "failures": failures,
            "skipped": skipped,
            "duration_s": round(sampling_s + storing_s, 3),
            "sampling_s": round(sampling_s, 3),
            "storing_s": round(storing_s, 3),
        },
    )
    return Round(samples, now)
