"""One sampling round: which sources are due, probing them, storing the results, backoff.

Also the daily retention of the history it stores.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime, timedelta

from flask import current_app

from ..extensions import db
from ..models import (
    MonitorRound,
    SlotMetric,
    Source,
    SourceState,
    WalMetric,
)
from ..timeutil import as_utc, utcnow
from .probe import Sample, Target, sample_all

log = logging.getLogger(__name__)


MAX_BACKOFF_SECONDS = 3600
SPARKLINE_BUCKET_SECONDS = 1800
SPARKLINE_SPAN_SECONDS = 24 * 3600
RETENTION_BATCH_ROWS = 5000


def backoff_seconds(consecutive_failures: int, interval_s: int) -> int:
    """Return how long to wait before the next attempt: after n failed rounds, skip 2^n-1."""
    skipped_rounds = 2 ** min(consecutive_failures, 20) - 1
    return min((skipped_rounds + 1) * interval_s, max(MAX_BACKOFF_SECONDS, interval_s))


def sparkline_points(
    points: list[list[int]] | None, moment: datetime, retained_bytes: int | None
) -> list[list[int]]:
    """Fold one sample into the half-hourly maxima of the last 24 hours."""
    bucket = int(moment.timestamp()) // SPARKLINE_BUCKET_SECONDS * SPARKLINE_BUCKET_SECONDS
    kept = [list(p) for p in points or [] if bucket - SPARKLINE_SPAN_SECONDS < p[0] <= bucket]
    if retained_bytes is None:
        return kept
    if kept and kept[-1][0] == bucket:
        kept[-1][1] = max(kept[-1][1], retained_bytes)
    else:
        kept.append([bucket, retained_bytes])
    return kept


def wal_rate(state: SourceState, moment: datetime, wal_position_bytes: int | None) -> float | None:
    """Return WAL written per second since the state's last sample (None: no earlier sample,
    or the position went back, as on a restored or replaced server)."""
    if state.last_sampled_at is None or state.wal_position_bytes is None:
        return None
    if wal_position_bytes is None or wal_position_bytes < state.wal_position_bytes:
        return None
    seconds = (moment - as_utc(state.last_sampled_at)).total_seconds()
    if seconds <= 0:
        return None
    return (wal_position_bytes - state.wal_position_bytes) / seconds


def record_round(
    samples: list[Sample],
    started_at: datetime,
    interval_s: int,
    skipped: int,
    duration_s: float,
    sampler: str,
) -> None:
    """Store one round in a single transaction: metrics rows, slot rows, states, the round."""
    try:
        # A source deleted while it was sampled is left out, and the sources kept cannot be
        # deleted until this transaction ends (FOR KEY SHARE; SQLite has one writer anyway).
        existing = set(
            db.session.scalars(
                db.select(Source.id)
                .where(Source.id.in_([sample.source_id for sample in samples]))
                .with_for_update(read=True, key_share=True)
            )
        )
        samples = [sample for sample in samples if sample.source_id in existing]
        ids = [sample.source_id for sample in samples]
        states = {
            state.source_id: state
            for state in db.session.scalars(
                db.select(SourceState).where(SourceState.source_id.in_(ids))
            )
        }
        metrics: list[tuple[Sample, WalMetric]] = []
        for sample in samples:
            state = states.get(sample.source_id)
            if state is None:
                state = states[sample.source_id] = SourceState(
                    source_id=sample.source_id, consecutive_failures=0
                )
                db.session.add(state)
            state.last_attempt_at = started_at
            state.last_duration_ms = sample.duration_ms
            if sample.ok:
                metric = WalMetric(
                    wal_rate_bytes_per_second=wal_rate(
                        state, started_at, sample.wal_position_bytes
                    ),
                    source_id=sample.source_id,
                    recorded_at=started_at,
                    current_lsn=sample.current_lsn,
                    wal_position_bytes=sample.wal_position_bytes,
                    size_bytes=sample.size_bytes,
                    retained_bytes=sample.retained_bytes,
                    slot_count=len(sample.slots),
                    inactive_slot_count=sample.inactive_slot_count,
                )
                db.session.add(metric)
                metrics.append((sample, metric))
                state.status = "OK"
                state.last_sampled_at = started_at
                state.last_error = None
                state.consecutive_failures = 0
                state.next_attempt_at = None
                for name in (
                    "current_lsn",
                    "wal_position_bytes",
                    "size_bytes",
                    "server_version",
                    "in_recovery",
                    "retained_bytes",
                    "inactive_slot_count",
                ):
                    setattr(state, name, getattr(sample, name))
                state.slot_count = len(sample.slots)
                state.retained_history = sparkline_points(
                    state.retained_history, started_at, sample.retained_bytes
                )
            else:
                failures = (state.consecutive_failures or 0) + 1
                state.consecutive_failures = failures
                state.status = "ERROR" if failures == 1 else "BACKOFF"
                state.last_error = (sample.error or "unknown error")[:500]
                state.next_attempt_at = started_at + timedelta(
                    seconds=backoff_seconds(failures, interval_s)
                )
        db.session.flush()  # gives the metrics rows their ids
        for sample, metric in metrics:
            states[sample.source_id].latest_wal_metric_id = metric.id
            db.session.add_all(
                SlotMetric(
                    wal_metric_id=metric.id,
                    source_id=sample.source_id,
                    recorded_at=started_at,
                    **vars(slot),
                )
                for slot in sample.slots
            )
        db.session.add(
            MonitorRound(
                started_at=started_at,
                duration_ms=int(duration_s * 1000),
                sources=len(samples),
                failures=sum(1 for sample in samples if not sample.ok),
                skipped=skipped,
                sampler=sampler[:255],
            )
        )
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise


def delete_expired(retention_days: int, now: datetime | None = None) -> int:
    """Delete samples older than the retention, a batch per transaction; return rows deleted."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    deleted = 0
    for model, column in (
        (SlotMetric, SlotMetric.recorded_at),
        (WalMetric, WalMetric.recorded_at),
        (MonitorRound, MonitorRound.started_at),
    ):
        while True:
            batch = (
                db.select(model.id)
                .where(column < cutoff)
                .order_by(model.id)
                .limit(RETENTION_BATCH_ROWS)
            )
            # Short transactions: each batch commits, so no lock is held for long.
            result = db.session.execute(
                db.delete(model).where(model.id.in_(batch.scalar_subquery()))
            )
            db.session.commit()
            deleted += result.rowcount
            if result.rowcount < RETENTION_BATCH_ROWS:
                break
    log.info("WAL retention: deleted %d rows older than %d days", deleted, retention_days)
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


def sampler_identity() -> str:
    """Name this process in the round log: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_round(
    source_name: str | None = None, force: bool = False, now: datetime | None = None
) -> list[Sample]:
    """Sample every due source (or one, by name), store the results, log one line."""
    config = current_app.config
    interval_s = config["WAL_MONITOR_INTERVAL_SECONDS"]
    now = now or utcnow()
    clock = time.monotonic()
    stmt = db.select(Source, SourceState).outerjoin(SourceState).order_by(Source.name)
    if source_name is not None:
        stmt = stmt.where(Source.name == source_name.lower())
    # Sources that failed or were slow last time start first: a source that will hang then
    # waits out its timeout while the quick ones are sampled, instead of after them.
    rows = sorted(db.session.execute(stmt).all(), key=lambda row: _slow_first(row[1]))
    targets: list[Target] = []
    unreadable: list[Sample] = []
    skipped = 0
    for source, state in rows:
        if not force and not _due(state, now, interval_s):
            skipped += 1
            continue
        try:
            password = source.pg_password
        except ValueError as exc:
            unreadable.append(Sample(source.id, source.name, False, 0, 0, error=str(exc)))
            continue
        targets.append(
            Target(
                source.id,
                source.name,
                source.pg_host,
                source.pg_port,
                source.pg_database,
                source.pg_username,
                password,
            )
        )
    # Nothing is written while sources are sampled: the session holds no transaction open.
    db.session.rollback()
    samples = unreadable + sample_all(
        targets,
        config["WAL_MONITOR_TIMEOUT_SECONDS"],
        config["WAL_MONITOR_MAX_RETRIES"],
        config["WAL_MONITOR_CONCURRENCY"],
    )
    duration_s = time.monotonic() - clock
    record_round(samples, now, interval_s, skipped, duration_s, sampler_identity())
    failures = sum(1 for sample in samples if not sample.ok)
    log.info(
        "WAL round: %d sources sampled, %d failed, %d in backoff, %.2f s",
        len(samples),
        failures,
        skipped,
        duration_s,
        extra={
            "sources": len(samples),
            "failures": failures,
            "skipped": skipped,
            "duration_s": round(duration_s, 3),
        },
    )
    return samples
