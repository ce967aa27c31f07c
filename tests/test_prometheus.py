"""GET /metrics: the monitor's series rendered once per stored round, kept in the metadata
database and served as kept; the alerts and pipelines read at scrape time."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from rosetta_web.extensions import db
from rosetta_web.models import MetricsExposition, Pipeline, PipelineRun, PipelineTable
from rosetta_web.monitor import prometheus
from rosetta_web.monitor.rounds import sample_sources, scheduled_round
from rosetta_web.monitor.scheduler import MonitorScheduler
from rosetta_web.sources.services import after_round
from rosetta_web.timeutil import utcnow

from .factories import (
    ENGINE_OWNER,
    add_alert,
    add_engine_process,
    add_source,
    new_destination,
)
from .pg import free_port

# What Prometheus 2 and 3 send (3 names every metric in UTF-8 unless told), what a plain
# client sends, and rarer asks: each must read the same whether kept or rendered now.
ACCEPT = (
    "",
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;"
    "escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "application/openmetrics-text",
    "text/plain;version=1.0.0;escaping=underscores",
    "text/plain;version=1.0.0;escaping=dots",  # rewrites names: rendered on demand
    "application/openmetrics-text;version=2.0.0",
)
MONITOR_TABLES = ("sources", "source_states", "servers", "slot_metrics", "monitor_rounds")


def _gauges(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def _kept(app: Flask) -> MetricsExposition | None:
    with app.app_context():
        row = db.session.get(MetricsExposition, prometheus.KEPT_ID)
        if row is not None:
            db.session.expunge(row)
        return row


def _fleet(app: Flask, port: int) -> tuple[int, int]:
    """A source that answers, one that does not (tried once), and a pipeline from the one
    that does whose live engine has loaded rows; return the two sources' ids."""
    app.config["WAL_MONITOR_MAX_RETRIES"] = 0
    shop = add_source(app, "shop", port)
    closed = add_source(app, "closed", free_port())
    add_engine_process(app)
    now = utcnow()
    with app.app_context():
        pipeline = Pipeline(
            name="orders-to-sf", source_id=shop, destination=new_destination(), status="START"
        )
        db.session.add(pipeline)
        db.session.flush()
        db.session.add_all(
            [
                PipelineRun(
                    pipeline_id=pipeline.id,
                    state="streaming",
                    owner=ENGINE_OWNER,
                    since=now,
                    updated_at=now,
                    lag_bytes=4096,
                    lag_seconds=1.5,
                ),
                PipelineTable(
                    pipeline_id=pipeline.id, table_name="public.orders", inserted=7, updated=2
                ),
            ]
        )
        db.session.commit()
    return shop, closed


def test_each_stored_round_renders_what_scrapes_then_serve(app, api, source_db, count_queries):
    """Before any round a scrape renders its own; a scheduled round and one by hand each
    keep a new rendering, which scrapes serve as kept, in one primary-key lookup, with the
    alerts and pipelines read at the scrape."""
    shop, _ = _fleet(app, source_db["port"])
    before = api.get("/metrics").get_data(as_text=True)
    assert _kept(app) is None
    assert _gauges(before)[("rosetta_source_up", (("source", "shop"),))] == 0

    start = utcnow()
    with app.app_context():
        after_round(scheduled_round(now=start))
    first = _kept(app)
    assert first is not None and first.rendered_at is not None
    add_alert(app, shop, severity="critical")  # fired after the rendering: read at the scrape
    served = api.get("/metrics").get_data(as_text=True)
    assert served.startswith(first.text_plain)
    gauges = _gauges(served)
    assert gauges[("rosetta_source_up", (("source", "shop"),))] == 1
    assert gauges[("rosetta_alerts_firing", (("severity", "critical"),))] == 1
    assert gauges[("rosetta_pipeline_lag_bytes", (("pipeline", "orders-to-sf"),))] == 4096

    # Served as kept: what the row says is what a scrape reads, whatever the tables say. A
    # process keeps the rendering it read, and reads the text again only under a new id.
    with app.app_context():
        row = db.session.get(MetricsExposition, prometheus.KEPT_ID)
        row.text_plain = first.text_plain.replace('source="shop"', 'source="kept-shop"')
        db.session.commit()
    assert api.get("/metrics").get_data(as_text=True) == served
    with app.app_context():
        db.session.get(MetricsExposition, prometheus.KEPT_ID).rendering = "another"
        db.session.commit()
    tampered = api.get("/metrics").get_data(as_text=True)
    assert 'rosetta_source_up{source="kept-shop"} 1.0' in tampered

    with count_queries() as counter:
        api.get("/metrics")
    read = " ".join(counter.statements)
    assert not [table for table in MONITOR_TABLES if re.search(rf"\b{table}\b", read)]
    [lookup] = [s for s in counter.statements if "metrics_exposition" in s]
    assert re.search(r"FROM metrics_exposition\s+WHERE metrics_exposition\.id = ", lookup)

    # The next round, scheduled or by hand, renders again from what it stored.
    with app.app_context():
        after_round(scheduled_round(now=start + timedelta(minutes=5)))
    second = _kept(app)
    assert second.rendered_at > first.rendered_at and 'source="kept-shop"' not in second.text_plain
    last_round = ("rosetta_sampler_last_round_timestamp_seconds", ())
    assert _gauges(second.text_plain)[last_round] == _gauges(first.text_plain)[last_round] + 300
    with app.app_context():
        sample_sources(name="shop", now=start + timedelta(minutes=6))
    third = _kept(app)
    shop_sampled = ("rosetta_source_last_sample_timestamp_seconds", (("source", "shop"),))
    assert _gauges(third.text_plain)[shop_sampled] == _gauges(second.text_plain)[shop_sampled] + 60
    assert api.get("/metrics").get_data(as_text=True).startswith(third.text_plain)


def test_kept_and_rendered_now_read_the_same_in_every_format(app, api, source_db):
    """For each Accept header Prometheus or a client sends, the scrape served from the kept
    rendering is byte for byte the one rendered at the scrape, with the same content type."""
    shop, _ = _fleet(app, source_db["port"])
    with app.app_context():
        after_round(scheduled_round())
    add_alert(app, shop, severity="critical")
    served: dict[str, Any] = {}
    for accept in ACCEPT:
        response = api.get("/metrics", headers={"Accept": accept})
        served[accept] = (response.headers["Content-Type"], response.get_data())
    assert served[ACCEPT[1]][1].endswith(b"# EOF\n") and served[ACCEPT[1]][1].count(b"# EOF") == 1
    assert b'rosetta_source_up{source="shop"} 1.0' in served[""][1]
    with app.app_context():
        prometheus.forget()
        db.session.commit()
    assert _kept(app).text_plain is None
    for accept in ACCEPT:
        response = api.get("/metrics", headers={"Accept": accept})
        assert (response.headers["Content-Type"], response.get_data()) == served[accept], accept


def test_a_source_renamed_or_deleted_shows_at_once_and_is_kept_again(app, api, source_db):
    """Saving or deleting a source drops the kept rendering in its own transaction: scrapes
    render their own and show it at once, until the leader's next look (every 5 s) keeps a
    new one."""
    shop, closed = _fleet(app, source_db["port"])
    with app.app_context():
        after_round(scheduled_round())
    assert api.patch(f"/api/v1/sources/{shop}", json={"name": "shop-eu"}).status_code == 200
    assert _kept(app).text_plain is None
    gauges = _gauges(api.get("/metrics").get_data(as_text=True))
    assert ("rosetta_source_up", (("source", "shop-eu"),)) in gauges
    assert ("rosetta_source_up", (("source", "shop"),)) not in gauges

    monitor = MonitorScheduler(app)
    try:
        monitor.sample_new()  # no new source: it renders what is missing
        assert 'rosetta_source_up{source="shop-eu"} 1.0' in _kept(app).text_plain
        assert api.delete(f"/api/v1/sources/{closed}").status_code == 204
        assert 'source="closed"' not in api.get("/metrics").get_data(as_text=True)
        monitor.sample_new()
        kept = _kept(app).text_plain
        assert 'source="closed"' not in kept and 'rosetta_source_up{source="shop-eu"} 1.0' in kept
    finally:
        monitor.stop()


def test_sqlite_keeps_and_drops_the_rendering_too(sqlite_app, source_db):
    """On SQLite a round keeps its rendering in the same one row, scrapes serve it, and
    dropping it makes a scrape render the same text itself."""
    sqlite_app.config.update(METRICS_PUBLIC=True, WAL_MONITOR_MAX_RETRIES=0)
    add_source(sqlite_app, "shop", source_db["port"])
    client = sqlite_app.test_client()
    with sqlite_app.app_context():
        scheduled_round()
        scheduled_round(now=utcnow() + timedelta(minutes=5))  # the row is there: updated
        kept = db.session.get(MetricsExposition, prometheus.KEPT_ID).text_plain
    served = client.get("/metrics").get_data(as_text=True)
    assert served.startswith(kept) and 'rosetta_source_up{source="shop"} 1.0' in kept
    with sqlite_app.app_context():
        prometheus.forget()
        db.session.commit()
        assert not prometheus.is_kept()
    assert client.get("/metrics").get_data(as_text=True) == served
