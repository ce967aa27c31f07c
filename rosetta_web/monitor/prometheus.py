"""GET /metrics: the monitor's latest figures in Prometheus text format, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from flask import Response, request
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from ..extensions import db
from ..models import (
    ENGINE_STATES,
    SEVERITIES,
    Alert,
    MonitorRound,
    Pipeline,
    PipelineTable,
    Server,
    SlotMetric,
    Source,
    SourceState,
)
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
        yield from self._pipelines()

    def _pipelines(self) -> Iterator[Metric]:
        # One series per pipeline, labelled by its name as a source's are by its name; the
        # lag only while a live engine owns it (an old figure would read as current).
        from ..pipelines.services import engine_state, live_engines

        lag_seconds = GaugeMetricFamily(
            "rosetta_pipeline_lag_seconds",
            "Now minus the source commit time of the last change loaded; 0 when caught up",
            labels=["pipeline"],
        )
        lag_bytes = GaugeMetricFamily(
            "rosetta_pipeline_lag_bytes",
            "The source's WAL position minus the last LSN loaded (pg_wal_lsn_diff)",
            labels=["pipeline"],
        )
        rows = CounterMetricFamily(
            "rosetta_pipeline_rows",
            "Rows loaded since the first copy, as MERGE counted them",
            labels=["pipeline", "table", "op"],
        )
        state = GaugeMetricFamily(
            "rosetta_pipeline_state",
            "1 for what the pipeline's engine is doing",
            labels=["pipeline", "state"],
        )
        engines = live_engines()
        pipelines = db.session.scalars(
            select(Pipeline).options(joinedload(Pipeline.run)).order_by(Pipeline.name)
        ).all()
        for pipeline in pipelines:
            engine = engine_state(pipeline, engines)
            for name in ENGINE_STATES:
                state.add_metric([pipeline.name, name], 1 if engine.state == name else 0)
            run = pipeline.run
            if engine.owner is None or run is None:
                continue
            if run.lag_seconds is not None:
                lag_seconds.add_metric([pipeline.name], run.lag_seconds)
            if run.lag_bytes is not None:
                lag_bytes.add_metric([pipeline.name], run.lag_bytes)
        names = {pipeline.id: pipeline.name for pipeline in pipelines}
        for table in db.session.scalars(select(PipelineTable)):
            for op in ("inserted", "updated", "deleted"):
                key = [names[table.pipeline_id], table.table_name, op]
                rows.add_metric(key, getattr(table, op))
        yield from (lag_seconds, lag_bytes, rows, state)

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


def metrics() -> Response:
    """Serve the monitor's figures for Prometheus."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector())
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(registry), content_type=content_type)
