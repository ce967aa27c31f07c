"""GET /metrics: the monitor's latest figures in Prometheus text format.

The monitor's series (sources, slots, the last round) change when a round is stored, and at
1,000 sources they are 1.5 MB: they are rendered once, after each stored round (`keep`), and
kept in the metadata database (`MetricsExposition`, one row) for every process to serve as
they are, by one primary-key lookup; a process keeps in memory the rendering it last read,
and the lookup sends the text only when a new one replaced it. The alerts firing and the
pipelines' series change between rounds (an engine writes its progress every few seconds, and
a pipeline's lag is shown only while its engine is seen alive, which time alone can end):
they are a few rows, read at scrape time and added after the kept text.

Until a rendering is kept (before the first, or once a source's change made it stale:
`forget`), a scrape renders everything itself, as it reads once kept.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from typing import Any

from flask import Response, request
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.utils import parse_version
from sqlalchemy import case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from ..extensions import db
from ..models import (
    SEVERITIES,
    Alert,
    MetricsExposition,
    MonitorRound,
    Server,
    SlotMetric,
    Source,
    SourceState,
)
from ..timeutil import as_utc, utcnow

WAL_STATUSES = ("reserved", "extended", "unreserved", "lost")
KEPT_ID = 1  # the one row's
OPENMETRICS_END = b"# EOF\n"
# Every metric and label name Rosetta exposes is in Prometheus's legacy character set, which
# these escapings leave as it is: what they encode is the kept text. The others (dots,
# values) rewrite names; a scrape that asks for one is rendered on demand.
ESCAPINGS_KEPT = (openmetrics.UNDERSCORES, openmetrics.ALLOWUTF8)
PLAIN_NAMES = openmetrics.ALLOWUTF8


class MonitorCollector:
    """Build the sources', the slots' and the last round's gauges from the monitor's tables:
    three queries whatever the source count. What a stored round changes: the kept part."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "rosetta_source_up", "1 when the last sample of the source succeeded", labels=["source"]
        )
        position = GaugeMetricFamily(
            "rosetta_wal_position_bytes", "Current WAL position, bytes since 0/0", labels=["source"]
        )
        directory = GaugeMetricFamily(
            "rosetta_wal_directory_bytes",
            "Size of pg_wal (needs pg_monitor on the source)",
            labels=["source"],
        )
        last_sample = GaugeMetricFamily(
            "rosetta_source_last_sample_timestamp_seconds",
            "When the source was last sampled successfully",
            labels=["source"],
        )
        # Columns, not objects: a round renders this for every source.
        rows = db.session.execute(
            select(
                Source.name,
                SourceState.status,
                SourceState.wal_position_bytes,
                SourceState.size_bytes,
                SourceState.last_sampled_at,
            ).outerjoin(SourceState)
        ).all()
        for state in rows:
            name = state.name
            up.add_metric([name], 1 if state.status == "OK" else 0)
            if state.wal_position_bytes is not None:
                position.add_metric([name], state.wal_position_bytes)
            if state.size_bytes is not None:
                directory.add_metric([name], state.size_bytes)
            if state.last_sampled_at is not None:
                last_sample.add_metric([name], _epoch(state.last_sampled_at))
        yield from (up, position, directory, last_sample)
        yield from self._slots()
        yield from self._sampler()

    def _slots(self) -> Iterator[Metric]:
        # A slot belongs to its server, not to the sources that are databases of it: one
        # series per slot, so a sum() in Grafana counts each once.
        labels = ["server", "database", "slot"]
        retained = GaugeMetricFamily(
            "rosetta_slot_retained_bytes", "WAL the slot keeps on the source", labels=labels
        )
        lag = GaugeMetricFamily(
            "rosetta_slot_lag_bytes", "WAL not yet confirmed by the consumer", labels=labels
        )
        active = GaugeMetricFamily(
            "rosetta_slot_active", "1 when a consumer is connected", labels=labels
        )
        safe = GaugeMetricFamily(
            "rosetta_slot_safe_wal_size_bytes",
            "WAL that can still be written before the slot is lost (max_slot_wal_keep_size)",
            labels=labels,
        )
        # Enum style: one series per wal_status, 1 for the current one. "lost" means the
        # consumer must resync; "unreserved" means it is about to be lost.
        status = GaugeMetricFamily(
            "rosetta_slot_wal_status",
            "1 for the slot's wal_status (PostgreSQL 13+)",
            labels=[*labels, "status"],
        )
        rows = db.session.execute(
            select(
                Server.system_identifier,
                Server.address,
                SlotMetric.database,
                SlotMetric.slot_name,
                SlotMetric.active,
                SlotMetric.retained_bytes,
                SlotMetric.lag_bytes,
                SlotMetric.safe_wal_size,
                SlotMetric.wal_status,
            ).join(
                SlotMetric,
                (SlotMetric.server_id == Server.id)
                & (SlotMetric.recorded_at == Server.last_sampled_at),
            )
        )
        for slot in rows:
            server = slot.system_identifier or slot.address  # as Server.label names it
            key = [server, slot.database or "", slot.slot_name]
            active.add_metric(key, 1 if slot.active else 0)
            if slot.retained_bytes is not None:
                retained.add_metric(key, slot.retained_bytes)
            if slot.lag_bytes is not None:
                lag.add_metric(key, slot.lag_bytes)
            if slot.safe_wal_size is not None:
                safe.add_metric(key, slot.safe_wal_size)
            if slot.wal_status is not None:
                for name in WAL_STATUSES:
                    status.add_metric([*key, name], 1 if slot.wal_status == name else 0)
        yield from (retained, lag, active, safe, status)

    def _sampler(self) -> Iterator[Metric]:
        last = db.session.scalar(
            select(MonitorRound)
            .where(MonitorRound.manual.is_(False))
            .order_by(MonitorRound.id.desc())
            .limit(1)
        )
        duration = GaugeMetricFamily(
            "rosetta_sampler_round_duration_seconds",
            "Wall time of the last sampling round: sampling and storing",
        )
        sampling = GaugeMetricFamily(
            "rosetta_sampler_round_sampling_seconds", "Of which sampling the sources"
        )
        storing = GaugeMetricFamily(
            "rosetta_sampler_round_storing_seconds", "Of which storing the results"
        )
        failures = GaugeMetricFamily(
            "rosetta_sampler_round_failures", "Sources that failed in the last round"
        )
        started = GaugeMetricFamily(
            "rosetta_sampler_last_round_timestamp_seconds", "When the last round started"
        )
        if last is not None:
            duration.add_metric([], last.duration_ms / 1000)
            if last.sampling_ms is not None and last.storing_ms is not None:
                sampling.add_metric([], last.sampling_ms / 1000)
                storing.add_metric([], last.storing_ms / 1000)
            failures.add_metric([], last.failures)
            started.add_metric([], _epoch(last.started_at))
        yield from (duration, sampling, storing, failures, started)


class AlertCollector:
    """Count the alerts firing, by severity: one query on the firing alerts' index. Alerts
    fire and resolve after the round is kept (its evaluation follows it), so they are read at
    scrape time."""

    def collect(self) -> Iterator[Metric]:
        """Build rosetta_alerts_firing{severity}."""
        firing = GaugeMetricFamily(
            "rosetta_alerts_firing",
            "Alerts firing now, silenced ones included",
            labels=["severity"],
        )
        counts = dict(
            db.session.execute(
                select(Alert.severity, func.count(Alert.id))
                .where(Alert.state == "firing")
                .group_by(Alert.severity)
            ).all()
        )
        for severity in SEVERITIES:
            firing.add_metric([severity], counts.get(severity, 0))
        yield firing


def _epoch(moment: datetime) -> float:
    return as_utc(moment).timestamp()


class _Collected:
    """Metric families collected once, to encode in both formats without reading twice."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _registry(*collectors: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


def _upsert(**values: Any) -> Insert:
    """Write the one row, whether it exists or not, and hold it until the transaction ends:
    renderings take turns, and each reads what was committed before it."""
    insert = (
        postgresql.insert if db.session.get_bind().dialect.name == "postgresql" else sqlite.insert
    )
    return (
        insert(MetricsExposition)
        .values(id=KEPT_ID, **values)
        .on_conflict_do_update(index_elements=["id"], set_=values)
    )


def keep() -> None:
    """Render the monitor's series in both formats and keep them for every process's
    scrapes; commit."""
    now = utcnow()
    # The row first: a rendering that waits for another (or for a source's change) reads
    # what that one committed, so an older rendering never overwrites a newer one.
    db.session.execute(_upsert(rendered_at=now))
    families = _Collected(list(MonitorCollector().collect()))
    # Without its "# EOF": a scrape's own part, which ends the exposition, follows it. Each
    # format's quicker escaping: they write the same bytes (ESCAPINGS_KEPT).
    open_metrics: bytes = openmetrics.generate_latest(  # type: ignore[no-untyped-call]
        families, escaping=PLAIN_NAMES
    )
    db.session.execute(
        _upsert(
            text_plain=generate_latest(families).decode(),
            openmetrics=open_metrics.removesuffix(OPENMETRICS_END).decode(),
            rendered_at=now,
            rendering=uuid.uuid4().hex,
        )
    )
    db.session.commit()


def forget() -> None:
    """Drop the kept series in the caller's transaction, when a change outside a round made
    them wrong (a source saved or deleted): scrapes render their own until kept again."""
    db.session.execute(_upsert(text_plain=None, openmetrics=None, rendered_at=None, rendering=None))


def is_kept() -> bool:
    """Tell whether the monitor's series are kept."""
    stmt = select(MetricsExposition.rendered_at).where(MetricsExposition.id == KEPT_ID)
    return db.session.scalar(stmt) is not None


def _kept_text(encoder: Callable[..., bytes]) -> Any:
    """Return the column holding what `encoder` makes of the monitor's series, or None when
    no kept text is in its format."""
    function = getattr(encoder, "func", encoder)  # choose_encoder's partial, or the function
    options = getattr(encoder, "keywords", {})
    if options.get("escaping", openmetrics.UNDERSCORES) not in ESCAPINGS_KEPT:
        return None
    if function is generate_latest:
        return MetricsExposition.text_plain
    version = parse_version(options.get("version", "1.0.0"))
    if function is openmetrics.generate_latest and version < (2, 0, 0):
        return MetricsExposition.openmetrics
    return None


def _plainly(encoder: Callable[..., bytes]) -> Callable[[Collector], bytes]:
    """The same encoder, escaping names as UTF-8, which leaves legacy names as they are: for
    the kept formats it writes the same bytes, and OpenMetrics's underscores escaping would
    check every character of every name."""
    function = getattr(encoder, "func", encoder)
    return partial(function, **{**getattr(encoder, "keywords", {}), "escaping": PLAIN_NAMES})


# This process's copy of the last rendering it served, by format: (its id, its bytes).
_held: dict[str, tuple[str, bytes]] = {}


def _kept_bytes(column: Any) -> bytes | None:
    """Return the kept rendering in `column`'s format, or None when none is kept: one lookup
    by primary key, which sends the text only when it is not the one this process holds."""
    held_id, held = _held.get(column.key, ("", b""))
    row = db.session.execute(
        select(
            MetricsExposition.rendering,
            case((MetricsExposition.rendering == held_id, None), else_=column),
        ).where(MetricsExposition.id == KEPT_ID)
    ).one_or_none()
    if row is None or row[0] is None:
        return None
    if row[0] == held_id:
        return held
    if row[1] is None:
        return None
    kept: bytes = row[1].encode()
    _held[column.key] = (row[0], kept)
    return kept


def metrics(*others: Collector) -> Response:
    """Serve the monitor's figures for Prometheus as kept, the alerts firing and those of the
    `others` collectors read now; render everything now while none are kept."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    column = _kept_text(encoder)
    kept = _kept_bytes(column) if column is not None else None
    if kept is None:
        body = encoder(_registry(MonitorCollector(), AlertCollector(), *others))
    else:
        body = kept + _plainly(encoder)(_registry(AlertCollector(), *others))
    return Response(body, content_type=content_type)
