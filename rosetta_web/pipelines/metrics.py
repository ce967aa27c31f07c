"""The pipelines' series of GET /metrics: lag, state and rows, as their engines record them."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from ..engines import engine_state, live_engines
from ..extensions import db
from ..models import ENGINE_STATES, Pipeline, PipelineTable


class PipelineCollector:
    """Build each pipeline's lag, state and rows from what its engine wrote."""

    def collect(self) -> Iterator[Metric]:
        """Build the pipelines' series: three queries whatever their count."""
        # One series per pipeline, labelled by its name as a source's are by its name; the
        # lag only while a live engine owns it (an old figure would read as current).
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
