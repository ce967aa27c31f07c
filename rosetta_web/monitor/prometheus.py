"""GET /metrics: the monitor's latest figures in Prometheus text format, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from flask import Response, request
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from ..extensions import db
from ..models import SEVERITIES, Alert, MonitorRound, Server, SlotMetric, Source, SourceState
from ..timeutil import as_utc

WAL_STATUSES = ("reserved", "extended", "unreserved", "lost")


class MonitorCollector:
    """Build every gauge from the monitor's tables: three queries whatever the source count."""

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
        rows = db.session.execute(select(Source.name, SourceState).outerjoin(SourceState)).all()
        for name, state in rows:
            up.add_metric([name], 1 if state is not None and state.status == "OK" else 0)
            if state is None:
                continue
            if state.wal_position_bytes is not None:
                position.add_metric([name], state.wal_position_bytes)
            if state.size_bytes is not None:
                directory.add_metric([name], state.size_bytes)
            if state.last_sampled_at is not None:
                last_sample.add_metric([name], _epoch(state.last_sampled_at))
        yield from (up, position, directory, last_sample)
        yield from self._slots()
        yield from self._sampler()
        yield from self._alerts()

    def _alerts(self) -> Iterator[Metric]:
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
            select(Server, SlotMetric).join(
                SlotMetric,
                (SlotMetric.server_id == Server.id)
                & (SlotMetric.recorded_at == Server.last_sampled_at),
            )
        )
        for server, slot in rows:
            key = [server.label, slot.database or "", slot.slot_name]
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


def _epoch(moment: datetime) -> float:
    return as_utc(moment).timestamp()


def metrics(*others: Collector) -> Response:
    """Serve the monitor's figures for Prometheus, and those of the `others` collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector())
    for collector in others:
        registry.register(collector)
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(registry), content_type=content_type)
