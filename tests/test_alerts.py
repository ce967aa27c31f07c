"""Alerts against real servers: a real cluster's slots, a real HTTP receiver for webhooks, a
real SMTP server for mail, pg_recvlogical as the consumer, time moved by time-machine."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, timedelta
from typing import Any

import pytest
import time_machine
from aiosmtpd.controller import Controller
from flask import Flask
from pytest_httpserver import HTTPServer
from sqlalchemy.orm import undefer

from rosetta_web.alerts.engine import delivery
from rosetta_web.alerts.engine.evaluation import evaluate
from rosetta_web.alerts.engine.settings import load_settings
from rosetta_web.extensions import db as _db
from rosetta_web.formatting import pg_size_pretty
from rosetta_web.models import ALERT_SETTING_KEYS, Alert, Channel, Delivery, Notification
from rosetta_web.monitor.rounds import sample_sources, scheduled_round
from rosetta_web.sources.services import after_round
from rosetta_web.timeutil import utcnow

from .apps import make_app
from .constants import GIB, MB
from .factories import (
    ENGINE_OWNER,
    add_source,
    new_channel,
    new_destination,
    new_server,
    new_state,
)
from .pg import (
    INSERT_ROWS,
    Cluster,
    emit_wal,
    free_port,
    lose_slot,
    recvlogical,
    retained,
    wait_for,
    write_wal,
)
from .pg import keep_size as pg_keep_size
from .processes import start as start_python
from .processes import stop as stop_python

SECRET = "a-signing-secret-of-some-length"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A cluster of these tests' own: their slots must not meet the other tests' slots."""
    cluster = Cluster("rosetta-alerts").start()
    cluster.create_database("shop")
    with closing(cluster.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, note text)")
        cur.execute("CREATE PUBLICATION pub FOR TABLE orders")
    yield cluster
    cluster.stop()


def _sql(cluster: Cluster, query: str, *args: Any) -> Any:
    with closing(cluster.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchone() if cur.description else None


@pytest.fixture
def slot(cluster: Cluster) -> Iterator[str]:
    """A fresh logical slot `orders` with no consumer, dropped afterwards."""
    _sql(cluster, "SELECT pg_create_logical_replication_slot('orders', 'pgoutput')")
    yield "orders"
    _sql(
        cluster,
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
        "WHERE slot_name = 'orders' AND active_pid IS NOT NULL",
    )
    wait_for(lambda: not _sql(cluster, "SELECT active FROM pg_replication_slots")[0], timeout=5)
    _sql(cluster, "SELECT pg_drop_replication_slot('orders')")


def settings(app: Flask, **values: int | None) -> None:
    """Turn every rule off but those given."""
    with app.app_context():
        row = load_settings()
        for key in ALERT_SETTING_KEYS:
            setattr(row, key, values.get(key))
        _db.session.commit()


def channel(app: Flask, url: str, name: str = "hook", **fields: Any) -> int:
    """Store a webhook channel to `url`, signed with SECRET unless told; return its id."""
    with app.app_context():
        row = new_channel(name, url=url, secret=fields.pop("secret", SECRET), **fields)
        _db.session.add(row)
        _db.session.commit()
        return row.id


def sample(app: Flask, manual: bool = True) -> None:
    """Run a round in this process, as the scheduler (manual=False) or Sample now does."""
    with app.app_context():
        after_round(sample_sources() if manual else scheduled_round())


def received(server: HTTPServer) -> list[dict[str, Any]]:
    """The webhooks the receiver got, each checked against its signature."""
    bodies = []
    for request, _ in server.log:
        header = request.headers["X-Rosetta-Signature"]
        parts = dict(part.split("=", 1) for part in header.split(","))
        raw = request.get_data()
        expected = hmac.new(SECRET.encode(), parts["t"].encode() + b"." + raw, hashlib.sha256)
        assert hmac.compare_digest(parts["v1"], expected.hexdigest()), "bad signature"
        assert abs(int(parts["t"]) - time.time()) < 3600 * 24
        bodies.append(json.loads(raw))
    return bodies


@pytest.fixture
def receiver(httpserver: HTTPServer) -> HTTPServer:
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    return httpserver


def _alerts(app: Flask) -> list[Alert]:
    with app.app_context():
        rows = list(_db.session.scalars(_db.select(Alert).order_by(Alert.id)))
        _db.session.expunge_all()
        return rows


@pytest.mark.slow
def test_inactive_slot_over_threshold_fires_once_and_resolves_when_consumed(
    app, cluster, slot, receiver
):
    """WAL written into an inactive slot: one signed `firing`; a consumer: one `resolved`."""
    add_source(app, "shop", cluster.port, user="postgres", password="unused")
    settings(app, retained_warning_bytes=1 * MB, retained_critical_bytes=1024 * MB)
    channel(app, receiver.url_for("/hook"))

    write_wal(cluster, 2)
    before = retained(cluster)
    sample(app)
    after = retained(cluster)
    assert wait_for(lambda: len(receiver.log) == 1, timeout=10), "no webhook"
    sample(app)  # still over: nothing new (no repeat set)
    with app.app_context():
        delivery.deliver_due()  # waits for whatever this process still sends
    [fired] = received(receiver)
    assert fired["event"] == "firing"
    alert = fired["alert"]
    assert (alert["rule"], alert["severity"], alert["slot_name"]) == (
        "retained_wal",
        "warning",
        "orders",
    )
    assert alert["source_name"] == "shop" and alert["state"] == "firing"
    # The figure is PostgreSQL's at that moment: between psql's before and after.
    assert before <= alert["value"] <= after
    assert alert["threshold"] == 1 * MB
    assert fired["url"].endswith(f"/sources/{alert['source_id']}")

    consumer = recvlogical(cluster, slot)
    try:
        # The consumer confirms; a checkpoint logs the running transactions that let the
        # slot's restart_lsn move up to what it confirmed.
        def caught_up() -> bool:
            _sql(cluster, "CHECKPOINT")
            return retained(cluster) < 0.9 * MB

        assert wait_for(caught_up, timeout=30, interval=0.5), "the slot never caught up"
        sample(app)
        assert wait_for(lambda: len(receiver.log) == 2, timeout=10), "no resolved webhook"
    finally:
        consumer.terminate()
        consumer.wait(5)
    bodies = received(receiver)
    assert [body["event"] for body in bodies] == ["firing", "resolved"]
    assert bodies[1]["alert"]["id"] == alert["id"]
    assert bodies[1]["alert"]["resolved_at"] is not None
    assert [a.state for a in _alerts(app)] == ["resolved"]


@pytest.mark.slow
def test_consumer_connected_but_stalled_fires(app, cluster, slot, receiver):
    """pg_recvlogical stopped with SIGSTOP while WAL is written: consumer_stalled fires."""
    add_source(app, "shop", cluster.port, user="postgres", password="unused")
    settings(app, consumer_stalled_minutes=1)
    channel(app, receiver.url_for("/hook"))
    consumer = recvlogical(cluster, slot)
    try:
        with time_machine.travel(utcnow(), tick=True) as traveller:
            sample(app)
            traveller.shift(timedelta(seconds=30))
            sample(app)  # a consumer that confirms is not stalled
            assert not _alerts(app)
            os.kill(consumer.pid, signal.SIGSTOP)
            sample(app)
            write_wal(cluster, 1)
            traveller.shift(timedelta(minutes=2))
            sample(app)
            [alert] = _alerts(app)
            assert (alert.rule, alert.state, alert.slot_name) == (
                "consumer_stalled",
                "firing",
                "orders",
            )
            assert alert.value >= 2
            assert wait_for(lambda: len(receiver.log) == 1, timeout=10)
            assert _sql(
                cluster, "SELECT active FROM pg_replication_slots WHERE slot_name = 'orders'"
            )[0], "the consumer is still connected"

            os.kill(consumer.pid, signal.SIGCONT)  # it reads, confirms, and catches up
            start = _sql(
                cluster,
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'orders'",
            )[0]
            assert wait_for(
                lambda: _sql(
                    cluster,
                    "SELECT confirmed_flush_lsn > %s FROM pg_replication_slots "
                    "WHERE slot_name = 'orders'",
                    start,
                )[0],
                timeout=15,
            )
            traveller.shift(timedelta(seconds=30))
            sample(app)
        assert [a.state for a in _alerts(app)] == ["resolved"]
        assert wait_for(lambda: len(receiver.log) == 2, timeout=10)
        assert [body["event"] for body in received(receiver)] == ["firing", "resolved"]
    finally:
        os.kill(consumer.pid, signal.SIGCONT)
        consumer.terminate()
        consumer.wait(5)


@pytest.mark.slow
def test_lost_slot_is_critical(app, cluster, receiver):
    """max_slot_wal_keep_size small, WAL written past it, a checkpoint: the slot is lost."""
    add_source(app, "shop", cluster.port, user="postgres", password="unused")
    settings(app)  # every setting off: slot_wal_status has none, it is always on
    channel(app, receiver.url_for("/hook"))
    _sql(cluster, "SELECT pg_create_logical_replication_slot('doomed', 'pgoutput')")
    try:
        with pg_keep_size(cluster, "1MB"):
            lost = lose_slot(cluster, "doomed", timeout=60, statement=INSERT_ROWS)
            assert lost, "the slot was never lost"
            sample(app)
        [alert] = _alerts(app)
        assert (alert.rule, alert.severity, alert.slot_name) == (
            "slot_wal_status",
            "critical",
            "doomed",
        )
        assert "is lost" in alert.message and "REFRESH" in alert.message
        assert wait_for(lambda: len(receiver.log) == 1, timeout=10)
    finally:
        _sql(cluster, "SELECT pg_drop_replication_slot('doomed')")


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope)
        return "250 OK"


def _unreachable_source(app: Flask, name: str = "gone") -> int:
    """A source on a port nothing listens on: each round fails at once."""
    return add_source(app, name, free_port(), user="postgres", password="unused")


@pytest.mark.slow
def test_email_through_apprise_reaches_a_real_smtp_server(app):
    """An unreachable source, an Apprise mailto:// channel: the mail arrives."""
    inbox = _Inbox()
    port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        _unreachable_source(app)
        settings(app, unreachable_rounds=1)
        channel(
            app,
            f"mailto://127.0.0.1:{port}?from=rosetta@example.com&to=oncall@example.com",
            name="mail",
            type="apprise",
            secret=None,
        )
        sample(app, manual=False)
        assert wait_for(lambda: inbox.messages, timeout=20), "no mail arrived"
    finally:
        smtp.stop()
    [mail] = inbox.messages
    assert mail.rcpt_tos == ["oncall@example.com"]
    text = mail.content.decode()
    assert "source_unreachable" in text and "gone" in text
    assert "critical" in text.lower()


@pytest.mark.slow
def test_a_webhook_that_never_answers_delays_neither_the_round_nor_other_channels(
    app, receiver, hanging_server
):
    """One channel hangs: the round ends at once and the other channel is delivered."""
    _unreachable_source(app)
    settings(app, unreachable_rounds=1)
    channel(app, f"http://127.0.0.1:{hanging_server.port}/hook", name="hangs")
    channel(app, receiver.url_for("/hook"), name="works")
    clock = time.monotonic()
    sample(app, manual=False)
    round_s = time.monotonic() - clock
    assert wait_for(lambda: len(receiver.log) == 1, timeout=4), "the good channel waited"
    delivered_s = time.monotonic() - clock
    assert round_s < delivery.WEBHOOK_TIMEOUT_SECONDS / 2
    assert delivered_s < delivery.WEBHOOK_TIMEOUT_SECONDS
    with app.app_context():
        hangs = _db.session.scalar(_db.select(Channel.id).where(Channel.name == "hangs"))

        def logged() -> Delivery | None:
            _db.session.rollback()
            return _db.session.scalar(_db.select(Delivery).where(Delivery.channel_id == hangs))

        entry = wait_for(logged, timeout=10)
        assert entry is not None and not entry.ok
        assert entry.duration_ms >= delivery.WEBHOOK_TIMEOUT_SECONDS * 1000 - 100
        assert "no answer" in entry.error
        pending = _db.session.scalar(
            _db.select(Notification).where(Notification.channel_id == hangs)
        )
        assert pending.delivered_at is None and pending.failed_at is None
        assert pending.attempts == 1  # tried again later


def test_failed_deliveries_retry_with_backoff_then_give_up(app, receiver):
    """A receiver that refuses: tried 5 times, 30 s, 2, 10 and 30 min apart, then given up."""
    _unreachable_source(app)
    settings(app, unreachable_rounds=1)
    channel(app, f"http://127.0.0.1:{free_port()}/hook", name="refuses")
    with time_machine.travel(utcnow(), tick=False) as traveller:
        sample(app, manual=False)
        with app.app_context():
            wait_for(lambda: delivery_log(app), timeout=10)
            waits = []
            for _ in range(4):
                _db.session.rollback()
                note = _db.session.scalar(_db.select(Notification))
                waits.append(round((note.next_attempt_at - utcnow()).total_seconds()))
                assert not delivery.kick(), "retried before its time"
                traveller.shift(timedelta(seconds=waits[-1]))
                for future in delivery.kick():
                    future.result()
            _db.session.rollback()
            note = _db.session.scalar(_db.select(Notification))
    assert waits == [30, 120, 600, 1800]
    assert note.attempts == delivery.MAX_ATTEMPTS and note.failed_at is not None
    assert [entry.error.startswith("cannot connect") for entry in delivery_log(app)] == [True] * 5


def delivery_log(app: Flask) -> list[Delivery]:
    with app.app_context():
        rows = list(_db.session.scalars(_db.select(Delivery).order_by(Delivery.id)))
        _db.session.expunge_all()
        return rows


def test_a_notification_claimed_by_a_process_that_died_is_delivered_after_its_lease(app, receiver):
    """A process that claimed a notification and died: another delivers it, once."""
    _unreachable_source(app)
    settings(app, unreachable_rounds=1)
    channel(app, receiver.url_for("/hook"))
    with time_machine.travel(utcnow(), tick=True) as traveller:
        with app.app_context():
            run_round_without_delivery(app)
            claimed = delivery.claim_due(utcnow())  # ... and the process dies here
            assert len(claimed) == 1
            assert not delivery.kick(), "claimed twice"
            traveller.shift(timedelta(seconds=delivery.LEASE_SECONDS + 1))
            [future] = delivery.kick()
            future.result()
    assert len(receiver.log) == 1
    assert received(receiver)[0]["event"] == "firing"


def run_round_without_delivery(app: Flask) -> None:
    """Store a round and evaluate it, leaving its notifications in the outbox."""
    kick = delivery.kick
    delivery.kick = lambda now=None: []  # type: ignore[assignment]
    try:
        after_round(scheduled_round())
    finally:
        delivery.kick = kick  # type: ignore[assignment]


def test_repeat_acknowledge_and_silence(app, receiver):
    """Repeats every repeat_minutes until acknowledged; a silence holds notifications back
    and, once it ends, the alert still firing is told."""
    from rosetta_web.alerts.services import acknowledge
    from rosetta_web.models import Silence

    source_id = _unreachable_source(app)
    settings(app, unreachable_rounds=1, repeat_minutes=60)
    channel(app, receiver.url_for("/hook"))

    def events() -> list[str]:
        with app.app_context():
            return list(
                _db.session.scalars(_db.select(Notification.event).order_by(Notification.id))
            )

    with time_machine.travel(utcnow(), tick=False) as traveller, app.app_context():
        after_round(scheduled_round())
        traveller.shift(timedelta(minutes=30))
        evaluate()
        assert events() == ["firing"]
        traveller.shift(timedelta(minutes=31))
        evaluate()
        assert events() == ["firing", "repeat"]
        alert = _db.session.scalar(_db.select(Alert))
        acknowledge(alert, "alice")
        traveller.shift(timedelta(minutes=120))
        evaluate()
        assert events() == ["firing", "repeat"]  # acknowledged: no more repeats

        # A second source, silenced before it fails: nothing until the silence ends.
        other = _unreachable_source(app, "gone-too")
        _db.session.add(
            Silence(
                source_id=other,
                rule=None,
                ends_at=utcnow() + timedelta(hours=2),
                created_by="alice",
            )
        )
        _db.session.commit()
        after_round(scheduled_round())
        silenced = _db.session.scalar(_db.select(Alert).where(Alert.source_id == other))
        assert silenced.state == "firing"
        assert events() == ["firing", "repeat"]
        traveller.shift(timedelta(hours=2, minutes=1))
        evaluate()
        assert events() == ["firing", "repeat", "firing"]
        assert source_id != other


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_each_transition_is_recorded_and_queued_once(request, backend, receiver):
    """Evaluated again and again, an alert fires once and resolves once, on both databases."""
    app = request.getfixturevalue("app" if backend == "postgresql" else "sqlite_app")
    source_id = _unreachable_source(app)
    channel(app, receiver.url_for("/hook"))
    settings(app, unreachable_rounds=1)
    with app.app_context():
        after_round(scheduled_round())  # fails once: fires
        evaluate()
        evaluate()  # again: nothing new
        from rosetta_web.models import SourceState

        state = _db.session.get(SourceState, source_id)
        state.consecutive_failures = 0
        _db.session.commit()
        evaluate()  # resolves
        evaluate()
        rows = list(_db.session.scalars(_db.select(Notification.event).order_by(Notification.id)))
        alerts = list(_db.session.scalars(_db.select(Alert)))
    assert rows == ["firing", "resolved"]
    assert [(a.state, a.rule) for a in alerts] == [("resolved", "source_unreachable")]


def _scheduled_rounds(app: Flask) -> int:
    from rosetta_web.models import MonitorRound

    with app.app_context():
        query = _db.select(_db.func.count(MonitorRound.id)).where(MonitorRound.manual.is_(False))
        return int(_db.session.scalar(query) or 0)


def _pending(app: Flask) -> int:
    with app.app_context():
        query = _db.select(_db.func.count(Notification.id)).where(
            Notification.delivered_at.is_(None), Notification.failed_at.is_(None)
        )
        return int(_db.session.scalar(query) or 0)


@pytest.mark.slow
def test_two_gunicorn_workers_notify_each_transition_exactly_once(
    app, database_url, receiver, cluster
):
    """Two workers share the schedule while scripts press Sample now on both: one `firing`,
    one `resolved`."""
    import threading
    import urllib.request

    from rosetta_web.auth import services
    from rosetta_web.models import Source

    from .factories import PASSWORD

    source_id = _unreachable_source(app)
    settings(app, unreachable_rounds=2)
    channel(app, receiver.url_for("/hook"))
    with app.app_context():
        token = services.create_token(services.create_user("alice", PASSWORD), "script")[1]
    port = free_port()
    server = start_python(
        ["gunicorn", "wsgi:app", "--workers", "2", "--bind", f"127.0.0.1:{port}"], database_url
    )
    stop = threading.Event()

    def press_sample_now() -> None:
        while not stop.is_set():
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/v1/sources/{source_id}/sample",
                method="POST",
                headers={"Authorization": f"Bearer {token}"},
            )
            try:
                urllib.request.urlopen(request, timeout=10).read()
            except OSError:
                stop.wait(0.2)  # not up yet

    pressers = [threading.Thread(target=press_sample_now) for _ in range(4)]
    try:
        for presser in pressers:
            presser.start()
        assert wait_for(lambda: len(receiver.log) >= 1, timeout=30), "never fired"
        # The operator points the source at a server that answers: it resolves.
        with app.app_context():
            source = _db.session.get(Source, source_id)
            source.pg_port = cluster.port
            source.state.consecutive_failures = 0
            source.state.next_attempt_at = None
            _db.session.commit()
        assert wait_for(lambda: len(receiver.log) >= 2, timeout=30), "never resolved"
        # Two more scheduled rounds, more presses, and nothing left to send: nothing more.
        resolved_after = _scheduled_rounds(app)
        assert wait_for(
            lambda: _scheduled_rounds(app) >= resolved_after + 2 and not _pending(app),
            timeout=30,
        )
    finally:
        stop.set()
        for presser in pressers:
            presser.join(15)
        stop_python(server, timeout=40, must_stop=True)
    assert [body["event"] for body in received(receiver)] == ["firing", "resolved"]
    with app.app_context():
        assert _db.session.scalar(_db.select(_db.func.count(Alert.id))) == 1


@pytest.mark.slow
def test_forecast_from_wal_written_at_a_steady_rate(app, cluster, slot, receiver):
    """2 MB every 5 minutes into an inactive slot: the ETA to the critical threshold is within
    20 % of the true one (from psql's figures), and the forecast rule warns in words."""
    from rosetta_web.alerts.services import attach_forecasts
    from rosetta_web.models import Source

    add_source(app, "shop", cluster.port, user="postgres", password="unused")
    critical = 200 * MB
    settings(app, retained_critical_bytes=critical, forecast_hours=24)
    channel(app, receiver.url_for("/hook"))
    step = timedelta(minutes=5)
    with time_machine.travel(utcnow(), tick=False) as traveller:
        first = retained(cluster)
        sample(app)
        for _ in range(8):
            write_wal(cluster, 2)
            traveller.shift(step)
            sample(app)
        last = retained(cluster)
        true_rate = (last - first) / (8 * step.total_seconds() / 3600)  # bytes per hour
        true_eta_h = (critical - last) / true_rate
        with app.app_context():
            source = _db.session.scalar(_db.select(Source))
            from rosetta_web.sources.services import latest_slots

            [row] = attach_forecasts(source, latest_slots(source))
            forecast = row.forecast
            eta_h = (forecast.eta_critical - utcnow()).total_seconds() / 3600
            growth = forecast.growth_bytes_per_hour
    assert abs(growth - true_rate) <= 0.2 * true_rate
    assert abs(eta_h - true_eta_h) <= 0.2 * true_eta_h
    [alert] = _alerts(app)
    assert (alert.rule, alert.severity) == ("exhaustion_forecast", "warning")
    assert "reaches the critical 200 MB in about" in alert.message
    assert alert.value == pytest.approx(eta_h, abs=0.01)


@pytest.mark.slow
def test_warning_then_critical_is_one_alert_notified_twice(app, cluster, slot, receiver):
    """A slot crossing warning then critical: one alert, two `firing` notifications."""
    add_source(app, "shop", cluster.port, user="postgres", password="unused")
    settings(app, retained_warning_bytes=1 * MB, retained_critical_bytes=4 * MB)
    channel(app, receiver.url_for("/hook"))
    write_wal(cluster, 1.5)
    sample(app)
    write_wal(cluster, 4)
    sample(app)
    assert wait_for(lambda: len(receiver.log) == 2, timeout=10)
    first, second = received(receiver)
    assert (first["event"], first["alert"]["severity"]) == ("firing", "warning")
    assert (second["event"], second["alert"]["severity"]) == ("firing", "critical")
    assert first["alert"]["id"] == second["alert"]["id"]


def test_cli_sample_evaluates_and_delivers_before_it_exits(app, receiver):
    """`flask rosetta sample`: when it returns, the webhook has been delivered."""
    _unreachable_source(app)
    settings(app, unreachable_rounds=2)
    sample(app, manual=False)  # one scheduled round failed; sampling by hand adds none
    settings(app, unreachable_rounds=1)
    channel(app, receiver.url_for("/hook"))
    result = app.test_cli_runner().invoke(args=["rosetta", "sample"])
    assert result.exit_code == 0, result.output
    assert "alerts firing: 1 critical, 0 warning; 1 notification sent" in result.output
    assert len(receiver.log) == 1  # no waiting: it was sent before the command returned
    assert received(receiver)[0]["alert"]["rule"] == "source_unreachable"


def test_metrics_count_firing_alerts_by_severity(app, api):
    """`/metrics` gains rosetta_alerts_firing{severity}."""
    from prometheus_client.parser import text_string_to_metric_families

    _unreachable_source(app)
    settings(app, unreachable_rounds=1)
    sample(app, manual=False)
    text = api.get("/metrics").get_data(as_text=True)
    [family] = [
        f for f in text_string_to_metric_families(text) if f.name == "rosetta_alerts_firing"
    ]
    assert {s.labels["severity"]: s.value for s in family.samples} == {
        "critical": 1.0,
        "warning": 0.0,
    }


def _server_with_slot(app: Flask, **figures: Any) -> tuple[int, int]:
    """A source on a server whose latest sample (now) saw one slot `orders` with `figures`."""
    from types import SimpleNamespace

    from rosetta_web.alerts.engine import trends
    from rosetta_web.models import SourceState

    source_id = add_source(app, "shop", free_port())
    with app.app_context():
        now = utcnow()
        slot = {
            "slot_name": "orders",
            "database": "shop",
            "active": False,
            "inactive_since": None,
            "retained_bytes": 0,
            "lag_bytes": 0,
            "wal_status": "reserved",
            "safe_wal_size": None,
            **figures,
        }
        server = new_server("db:5432", "42", last_sampled_at=now)
        server.slot_trends = {"orders": trends.update(None, now, SimpleNamespace(**slot), 0)}
        _db.session.add(server)
        _db.session.flush()
        state = _db.session.get(SourceState, source_id) or new_state(source_id)
        _db.session.add(state)
        state.server_id = server.id
        state.status = "OK"
        _db.session.commit()
        return source_id, server.id


def _resample(app: Flask, server_id: int, **figures: Any) -> None:
    """As a new sample of the server would: its slot's latest figures change, now."""
    from rosetta_web.models import Server

    with app.app_context():
        server = _db.session.get(Server, server_id)
        trend = dict(server.slot_trends["orders"])
        trend["slot"] = {**trend["slot"], **figures}
        server.slot_trends = {"orders": trend}
        server.last_sampled_at = utcnow()
        _db.session.commit()


def _events(app: Flask) -> list[tuple[str, str]]:
    with app.app_context():
        return [
            (row.event, row.payload["alert"]["message"])
            for row in _db.session.scalars(_db.select(Notification).order_by(Notification.id))
        ]


def test_unreserved_then_lost_is_told_twice(app, receiver):
    """Both critical, one alert: the slot going from unreserved to lost is one more `firing`."""
    settings(app)
    channel(app, receiver.url_for("/hook"))
    _, server_id = _server_with_slot(app, wal_status="unreserved")
    with app.app_context():
        evaluate()
        _resample(app, server_id, wal_status="lost")
        evaluate()
        evaluate()
    events = _events(app)
    assert [event for event, _ in events] == ["firing", "firing"]
    assert "is unreserved" in events[0][1] and "is lost" in events[1][1]
    assert len(_alerts(app)) == 1


def test_a_server_not_sampled_lately_keeps_its_slot_alerts_as_they_are(app):
    """Its figures are old: nothing resolves or fires on them until it is sampled again."""
    settings(app, retained_warning_bytes=MB, retained_critical_bytes=100 * MB)
    _, server_id = _server_with_slot(app, retained_bytes=2 * MB)
    interval = app.config["WAL_MONITOR_INTERVAL_SECONDS"]
    with time_machine.travel(utcnow(), tick=False) as traveller, app.app_context():
        evaluate()
        [alert] = _alerts(app)
        assert alert.state == "firing"
        # The slot's consumer caught up, but the server has not been sampled since.
        from rosetta_web.models import Server

        server = _db.session.get(Server, server_id)
        trend = dict(server.slot_trends["orders"])
        trend["slot"] = {**trend["slot"], "retained_bytes": 0}
        server.slot_trends = {"orders": trend}
        _db.session.commit()
        traveller.shift(timedelta(seconds=3 * interval))
        evaluate()
        assert [a.state for a in _alerts(app)] == ["firing"]
        _resample(app, server_id, retained_bytes=0)
        evaluate()
        assert [a.state for a in _alerts(app)] == ["resolved"]


def test_a_resolved_is_never_delivered_before_its_firing(app, httpserver):
    """The `firing` failed and waits for its retry when the alert resolves: the `resolved`
    waits behind it, and the receiver gets them in order."""
    httpserver.expect_request("/hook", method="POST").respond_with_data("down", status=503)
    _unreachable_source(app)
    settings(app, unreachable_rounds=1)
    channel(app, httpserver.url_for("/hook"))
    with time_machine.travel(utcnow(), tick=False) as traveller, app.app_context():
        run_round_without_delivery(app)
        for future in delivery.kick():
            future.result()  # 503: tried again in 30 s
        from rosetta_web.models import SourceState

        _db.session.scalar(_db.select(SourceState)).consecutive_failures = 0
        _db.session.commit()
        evaluate()  # resolves: `resolved` is queued, due now
        assert not delivery.kick(), "the resolved overtook the firing"
        httpserver.clear_all_handlers()
        httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
        traveller.shift(timedelta(seconds=31))
        for _ in range(2):
            for future in delivery.kick():
                future.result()
    events = [json.loads(request.get_data())["event"] for request, _ in httpserver.log]
    assert events == ["firing", "firing", "resolved"]  # the 503, the retry, then resolved


@pytest.fixture
def keep_size(cluster: Cluster) -> Iterator[int]:
    """max_slot_wal_keep_size = 320 MB on the cluster: a slot past it is lost."""
    with pg_keep_size(cluster, "320MB"):
        yield 320 * MB


@pytest.mark.slow
def test_forecast_sees_a_slot_that_starts_growing_after_an_idle_spell(
    app, cluster, slot, keep_size, receiver
):
    """The shape an operator met: a slot flat for 14 minutes, then ~700 MiB/h, sampled every
    minute. The forecast alert fires before psql's safe_wal_size reaches zero, and the time
    it gives is within 25 % of when psql's safe_wal_size really does."""
    add_source(app, "shop", cluster.port, user="postgres", password="unused")
    settings(app, forecast_hours=6)
    channel(app, receiver.url_for("/hook"))
    app.config["WAL_MONITOR_INTERVAL_SECONDS"] = 60
    minute = timedelta(minutes=1)
    predictions: list[tuple[Any, Any]] = []  # (sampled at, predicted lost at)
    with time_machine.travel(utcnow(), tick=False) as traveller:
        for _ in range(15):  # idle: the server writes next to nothing
            sample(app)
            traveller.shift(minute)
        lost_at = None
        for _ in range(40):
            emit_wal(cluster, 700 / 60)
            sample(app)
            safe = _sql(
                cluster, "SELECT safe_wal_size FROM pg_replication_slots WHERE slot_name = %s", slot
            )[0]
            if safe is None or safe <= 0:
                lost_at = utcnow()
                break
            for alert in _alerts(app):
                if alert.rule == "exhaustion_forecast" and alert.state == "firing":
                    assert "is lost in about" in alert.message
                    predictions.append((utcnow(), utcnow() + timedelta(hours=alert.value)))
            traveller.shift(minute)
    assert lost_at is not None, "the slot never ran out of room"
    assert predictions, "no forecast alert fired before safe_wal_size reached zero"
    first_at, first_eta = predictions[0]
    assert first_at <= lost_at - 10 * minute  # warned with time to act
    left_true = (lost_at - first_at).total_seconds()
    assert abs((first_eta - lost_at).total_seconds()) <= 0.25 * left_true
    for at, eta in predictions:
        assert abs((eta - lost_at).total_seconds()) <= 0.25 * (lost_at - at).total_seconds() + 60


def _latest_slot_row(app: Flask) -> Any:
    from rosetta_web.models import SlotMetric

    with app.app_context():
        row = _db.session.scalars(
            _db.select(SlotMetric)
            .where(SlotMetric.slot_name == "orders")
            .order_by(SlotMetric.recorded_at.desc())
        ).first()
        _db.session.expunge_all()
        return row


@pytest.mark.slow
@pytest.mark.parametrize("seen_gone", [False, True], ids=["between-samples", "sampled-gone"])
def test_a_slot_created_again_under_its_name_starts_a_new_series(
    app, api, cluster, slot, seen_gone
):
    """Dropped and created again. Seen gone by a sample in between: a new series, its chart
    line apart from the old one, its alert resolved as dropped. Between two samples (its
    restart_lsn moved with no consumer seen): its time without a consumer and its growth
    start over on the same line, its alert resolved by the figure it has now."""
    from rosetta_web.models import Server

    source_id = add_source(app, "shop", cluster.port, user="postgres", password="unused")
    settings(app, retained_warning_bytes=6 * MB, retained_critical_bytes=600 * MB)
    step = timedelta(minutes=5)
    with time_machine.travel(utcnow(), tick=False) as traveller:
        first = utcnow()
        for _ in range(6):  # an inactive slot growing 2 MB every 5 minutes
            emit_wal(cluster, 2)
            sample(app)
            traveller.shift(step)
        before = _latest_slot_row(app)
        assert before.inactive_since == first
        with app.app_context():
            trend = _db.session.scalar(_db.select(Server)).slot_trends["orders"]
            assert trend["growth"] is not None and trend["series"] == first.timestamp()
        _sql(cluster, "SELECT pg_drop_replication_slot('orders')")
        if seen_gone:
            sample(app)
            traveller.shift(step)
        emit_wal(cluster, 2)
        _sql(cluster, "SELECT pg_create_logical_replication_slot('orders', 'pgoutput')")
        again = utcnow()
        sample(app)
        row = _latest_slot_row(app)
        assert row.recorded_at == again
        assert row.inactive_since == again  # not `first`: no consumer since it was created
        assert row.series_started_at == (again if seen_gone else first)
        assert row.retained_bytes == retained(cluster)
        with app.app_context():
            server = _db.session.scalar(_db.select(Server).options(undefer(Server.slot_points)))
            trend, points = server.slot_trends["orders"], server.slot_points["orders"]
        assert trend["growth"] is None and points == [[again.timestamp(), row.retained_bytes]]
        traveller.shift(timedelta(seconds=1))  # the range ends before now
        history = api.get(
            f"/api/v1/sources/{source_id}/wal-history", query_string={"start": "2h"}
        ).get_json()
    [alert] = _alerts(app)
    assert (alert.rule, alert.state) == ("retained_wal", "resolved")
    named = f"slot `orders` on 127.0.0.1:{cluster.port}"
    line = history["slots"]["orders"]
    if seen_gone:  # resolved by the sample that saw it gone
        assert alert.resolved_message == f"{named} is gone: it was dropped"
        assert line["series_starts"] == [again.isoformat().replace("+00:00", "Z")]
        # The old line's last point stands before the new one's first, not joined to it.
        at = history["times"].index(line["series_starts"][0])
        assert line["last"][at] == row.retained_bytes and line["last"][at - 1] is None
    else:
        assert alert.resolved_message == (
            f"{named} now retains {pg_size_pretty(row.retained_bytes)} (warning at 6144 kB)"
        )
        assert line["series_starts"] == []


def _regrow(app: Flask, server_id: int, growth: float | None, **figures: Any) -> None:
    """As a new sample of the server would: its slot's fit and figures change, now."""
    from rosetta_web.models import Server

    with app.app_context():
        server = _db.session.get(Server, server_id)
        trend = dict(server.slot_trends["orders"])
        trend.update(growth=growth, at=utcnow().timestamp())
        trend["slot"] = {**trend["slot"], **figures}
        server.slot_trends = {"orders": trend}
        server.last_sampled_at = utcnow()
        _db.session.commit()


def test_a_forecast_resolves_only_when_two_samples_find_it_clear(app, receiver):
    """A forecast moves with every sample: once firing, it holds through one clear sample
    (and any evaluation of it), resolves at a clear sample two minutes after the first one,
    and its `resolved` says why in its own words, as the alert history does."""
    settings(app, forecast_hours=6)
    channel(app, receiver.url_for("/hook"))
    _, server_id = _server_with_slot(app, safe_wal_size=1024 * MB)
    with time_machine.travel(utcnow(), tick=False) as traveller, app.app_context():
        _regrow(app, server_id, 300 * MB)  # lost in about 3 h 24 min
        evaluate()
        assert [(a.rule, a.state) for a in _alerts(app)] == [("exhaustion_forecast", "firing")]
        traveller.shift(timedelta(seconds=5))
        _regrow(app, server_id, None)  # one clear sample...
        evaluate()
        evaluate()
        assert [a.state for a in _alerts(app)] == ["firing"]
        traveller.shift(timedelta(seconds=5))
        _regrow(app, server_id, 300 * MB)  # ...and it grows again: the count starts over
        evaluate()
        traveller.shift(timedelta(seconds=5))
        _regrow(app, server_id, None)
        evaluate()
        assert [a.state for a in _alerts(app)] == ["firing"]
        traveller.shift(timedelta(seconds=5))
        _regrow(app, server_id, 1000.0)  # 1 kB/h: lost in about 120 years
        evaluate()
        assert [a.state for a in _alerts(app)] == ["firing"]  # two samples, 5 s apart
        traveller.shift(timedelta(minutes=2))
        _regrow(app, server_id, 1000.0)
        evaluate()
        [alert] = _alerts(app)
        for _ in range(2):  # the resolved waits behind its firing
            delivery.deliver_due()
    assert alert.state == "resolved"
    assert alert.resolved_message == (
        "forecast: slot `orders` on db:5432 no longer within 6 h (now grows 1000 bytes/h, "
        "not there within a year)"
    )
    assert [event for event, _ in _events(app)] == ["firing", "resolved"]
    assert len(receiver.log) == 2
    told = received(receiver)[1]
    assert told["event"] == "resolved"
    assert told["alert"]["resolved_message"] == alert.resolved_message
    assert told["alert"]["message"] != alert.resolved_message


def test_a_resolved_says_what_resolved_it(app, browser):
    """Each rule resolves in its own words: the slot's figure now against its threshold, a
    consumer back, a slot dropped, a source answering again; the history shows them."""
    settings(
        app,
        retained_warning_bytes=32 * MB,
        retained_critical_bytes=64 * MB,
        slot_inactive_minutes=10,
        unreachable_rounds=2,
    )
    gone = _unreachable_source(app)
    with app.app_context():
        from rosetta_web.models import SourceState

        _db.session.add(new_state(gone, consecutive_failures=5, status="ERROR"))
        _db.session.commit()
    _, server_id = _server_with_slot(app, retained_bytes=40 * MB)
    with time_machine.travel(utcnow(), tick=False) as traveller, app.app_context():
        _resample(app, server_id, inactive_since=(utcnow() - timedelta(minutes=30)).timestamp())
        evaluate()
        assert sorted(a.rule for a in _alerts(app)) == [
            "retained_wal",
            "slot_inactive",
            "source_unreachable",
        ]
        traveller.shift(timedelta(minutes=1))
        _resample(app, server_id, retained_bytes=12 * MB, active=True, inactive_since=None)
        _db.session.get(SourceState, gone).consecutive_failures = 0
        _db.session.commit()
        evaluate()
    said = {a.rule: a.resolved_message for a in _alerts(app)}
    assert said == {
        "retained_wal": "slot `orders` on db:5432 now retains 12 MB (warning at 32 MB)",
        "slot_inactive": "slot `orders` on db:5432 has a consumer again",
        "source_unreachable": "source `gone` answers again after failing 5 rounds",
    }
    html = browser.get("/alerts/").get_data(as_text=True)
    assert (
        "<strong>Resolved:</strong> slot <code>orders</code> on db:5432 now retains 12 MB" in html
    )
    # A slot that is dropped resolves as dropped.
    settings(app, retained_warning_bytes=MB)
    with app.app_context():
        _resample(app, server_id, retained_bytes=2 * MB)
        evaluate()
        from rosetta_web.models import Server

        server = _db.session.get(Server, server_id)
        server.slot_trends = {}
        _db.session.commit()
        evaluate()
    dropped = _alerts(app)[-1]
    assert (dropped.rule, dropped.state) == ("retained_wal", "resolved")
    assert dropped.resolved_message == "slot `orders` on db:5432 is gone: it was dropped"


# At least once, with an id to drop repeats by


def _delivery_ids(app: Flask) -> list[str]:
    with app.app_context():
        return list(_db.session.scalars(_db.select(Notification.delivery_id).order_by("id")))


def test_every_try_of_a_notification_carries_the_same_delivery_id(app, httpserver):
    """A `firing` refused once, then delivered: both tries carry the notification's
    delivery_id in the signed body and in X-Rosetta-Delivery, so a receiver can tell a repeat;
    the delivery log shows both."""
    httpserver.expect_oneshot_request("/hook", method="POST").respond_with_data("no", status=503)
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    _unreachable_source(app)
    settings(app, unreachable_rounds=1)
    channel(app, httpserver.url_for("/hook"))
    with time_machine.travel(utcnow(), tick=False) as traveller, app.app_context():
        run_round_without_delivery(app)
        for future in delivery.kick():
            assert future.result() is False  # 503: tried again in 30 s
        traveller.shift(timedelta(seconds=31))
        for future in delivery.kick():
            assert future.result() is True
    [delivery_id] = _delivery_ids(app)
    bodies = received(httpserver)
    assert [body["delivery_id"] for body in bodies] == [delivery_id, delivery_id]
    headers = [request.headers[delivery.DELIVERY_HEADER] for request, _ in httpserver.log]
    assert headers == [delivery_id, delivery_id]
    assert bodies[0] == bodies[1] and bodies[0]["event"] == "firing"
    assert [(entry.ok, entry.status_code) for entry in delivery_log(app)] == [
        (False, 503),
        (True, 200),
    ]


@pytest.mark.slow
def test_a_process_killed_mid_send_leaves_a_repeat_with_the_same_delivery_id(
    app, database_url, httpserver
):
    """`flask rosetta sample` is killed (-9) while the receiver holds its `firing`: after the
    lease another process sends it again, with the same delivery_id, so a receiver that drops
    repeats by it acts once; the log records the send that was recorded."""
    from werkzeug.wrappers import Response

    sender: dict[str, subprocess.Popen[str]] = {}

    def kill_the_sender_first(request: Any) -> Response:
        if len(httpserver.log) == 0 and "process" in sender:
            sender["process"].kill()  # SIGKILL: it never hears the answer
            sender["process"].wait(timeout=10)
        return Response("ok")

    httpserver.expect_request("/hook", method="POST").respond_with_handler(kill_the_sender_first)
    _unreachable_source(app)
    settings(app, unreachable_rounds=1)
    channel(app, httpserver.url_for("/hook"))
    with app.app_context():
        run_round_without_delivery(app)
    sender["process"] = start_python(["flask", "rosetta", "sample"], database_url)
    try:
        sender["process"].communicate(timeout=60)
    finally:
        sender["process"].kill()
    assert sender["process"].returncode == -signal.SIGKILL
    assert wait_for(lambda: len(httpserver.log) == 1, timeout=10)
    assert delivery_log(app) == []  # it died before it could record the send
    later = utcnow() + timedelta(seconds=delivery.LEASE_SECONDS + 1)
    with time_machine.travel(later, tick=True), app.app_context():
        [future] = delivery.kick()
        assert future.result() is True
    [delivery_id] = _delivery_ids(app)
    bodies = received(httpserver)
    assert [body["delivery_id"] for body in bodies] == [delivery_id, delivery_id]
    assert [request.headers["X-Rosetta-Delivery"] for request, _ in httpserver.log] == [
        delivery_id,
        delivery_id,
    ]
    seen: set[str] = set()  # the README's receiver: act only on an id it has not seen
    acted = []
    for body in bodies:
        if body["delivery_id"] not in seen:
            seen.add(body["delivery_id"])
            acted.append(body["event"])
    assert acted == ["firing"]
    [entry] = delivery_log(app)
    assert entry.ok and entry.status_code == 200


@pytest.fixture
def metadata_cluster() -> Iterator[Cluster]:
    """A metadata database of its own, that a test may stop and start again."""
    cluster = Cluster("rosetta-delivery-outage").start()
    yield cluster
    cluster.stop()


def test_a_send_the_metadata_database_could_not_store_is_stored_when_it_is_back(
    metadata_cluster, httpserver, caplog
):
    """The metadata database stops while the receiver takes a `firing`: what the send did is
    held in memory, nothing is claimed or sent while the database is away, even past the
    lease; once it is back the send is stored (delivered, in the log) and never repeated."""
    from flask_migrate import upgrade
    from sqlalchemy.exc import OperationalError
    from werkzeug.wrappers import Response

    from rosetta_web import create_app

    def stop_the_database_then_answer(request: Any) -> Response:
        metadata_cluster.halt()
        return Response("ok")

    httpserver.expect_request("/hook", method="POST").respond_with_handler(
        stop_the_database_then_answer
    )
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": metadata_cluster.create_database("meta"), "TESTING": True}
    )
    with app.app_context():
        upgrade()
    _unreachable_source(app)
    settings(app, unreachable_rounds=1)
    channel(app, httpserver.url_for("/hook"))
    caplog.set_level(logging.INFO, logger="rosetta_web.alerts.engine.delivery")
    try:
        with time_machine.travel(utcnow(), tick=True) as traveller, app.app_context():
            run_round_without_delivery(app)
            [future] = delivery.kick()
            assert future.result() is True  # delivered: the database went away after
            [attempt] = delivery.held()
            assert attempt.outcome.ok and attempt.outcome.status_code == 200
            traveller.shift(timedelta(seconds=delivery.LEASE_SECONDS + 1))
            with pytest.raises(OperationalError):
                delivery.kick()  # still away: nothing claimed, nothing sent
            metadata_cluster.resume()
            assert delivery.kick() == []  # stored first; then nothing is due
            assert delivery.held() == []
            traveller.shift(timedelta(seconds=delivery.LEASE_SECONDS + 1))
            assert delivery.kick() == []
            note = _db.session.scalar(_db.select(Notification))
            assert note.delivered_at is not None and note.attempts == 1
            assert note.claim_token is None
        assert len(httpserver.log) == 1
        [entry] = delivery_log(app)
        assert entry.ok and entry.status_code == 200 and entry.notification_id == note.id
    finally:
        with app.app_context():
            _db.engine.dispose()
    said = [r.getMessage() for r in caplog.records if r.name == delivery.__name__]
    assert len([m for m in said if "held in memory" in m]) == 1, said
    assert len([m for m in said if "stored what 1 send(s) did" in m]) == 1, said


# Where a channel may send, checked as it sends


def test_with_private_targets_off_a_name_that_resolves_to_this_machine_is_refused(
    database_url,
):
    """ALERT_PRIVATE_TARGETS=false and a webhook at this machine's host name (not an address,
    so saving it cannot tell): the send looks the name up and refuses the loopback or private
    address it resolves to; the delivery log says so and the receiver gets nothing. The same
    channel with the setting on is delivered, so it was the address that was refused."""
    from pytest_httpserver import HTTPServer as Receiver

    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if name == "localhost" or any(ipaddress.ip_address(a).is_global for a in addresses):
        pytest.skip(f"{name!r} resolves to {addresses}: not a loopback or private address")
    strict = make_app(database_url, ALERT_PRIVATE_TARGETS=False)
    receiver = Receiver(host="0.0.0.0", port=0)
    receiver.expect_request("/hook", method="POST").respond_with_data("ok")
    receiver.start()
    try:
        _unreachable_source(strict)
        settings(strict, unreachable_rounds=1)
        channel_id = channel(strict, f"http://{name}:{receiver.port}/hook")
        with strict.app_context():
            run_round_without_delivery(strict)
            [future] = delivery.kick()
            assert future.result() is False
        assert len(receiver.log) == 0
        [entry] = delivery_log(strict)
        assert not entry.ok and entry.status_code is None
        assert entry.error.startswith(f"refused to send to {name}: it resolves to ")
        assert entry.error.endswith("refused while ALERT_PRIVATE_TARGETS=false")
        strict.config["ALERT_PRIVATE_TARGETS"] = True
        with strict.app_context():
            assert delivery.send_test(_db.session.get(Channel, channel_id)).ok
        assert len(receiver.log) == 1
    finally:
        receiver.stop()
        with strict.app_context():
            _db.engine.dispose()


def test_a_slot_alert_names_the_paused_pipeline_that_reads_the_slot(app):
    """A slot without a consumer because its pipeline is paused: the alert names the pipeline
    and says since when it is paused (as the engine recorded it)."""
    from datetime import datetime

    from rosetta_web.models import Pipeline, PipelineRun, Source

    settings(app, slot_inactive_minutes=10)
    source_id, server_id = _server_with_slot(app)
    paused_at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    with app.app_context():
        _db.session.get(Source, source_id).slot_name = "orders"
        destination = new_destination("warehouse")
        _db.session.add(destination)
        _db.session.flush()
        pipeline = Pipeline(
            name="nightly", source_id=source_id, destination_id=destination.id, status="PAUSE"
        )
        _db.session.add(pipeline)
        _db.session.flush()
        _db.session.add(
            PipelineRun(
                pipeline_id=pipeline.id, state="paused", since=paused_at, updated_at=paused_at
            )
        )
        _db.session.commit()
        _resample(app, server_id, inactive_since=(utcnow() - timedelta(minutes=30)).timestamp())
        evaluate()
    [alert] = _alerts(app)
    assert alert.rule == "slot_inactive"
    assert alert.message.endswith("; pipeline `nightly` is paused since 2026-12-01 09:30 UTC")


# Pipelines: what their engine says they are doing


def _pipeline(app: Flask, name: str, source_id: int, status: str = "START") -> int:
    """Store a pipeline from the source to a destination of its own; return its id."""
    from rosetta_web.models import Pipeline

    with app.app_context():
        pipeline = Pipeline(
            name=name,
            source_id=source_id,
            destination=new_destination(f"{name}-dst"),
            status=status,
        )
        _db.session.add(pipeline)
        _db.session.commit()
        return pipeline.id


def _engine_says(app: Flask, pipeline_id: int, state: str, **fields: Any) -> None:
    """Write, now, what the engine that owns the pipeline writes every few seconds: its
    heartbeat, and the pipeline's run (the state's `since` kept while the state holds)."""
    from rosetta_web.models import EngineProcess, PipelineRun

    now = utcnow()
    with app.app_context():
        engine = _db.session.get(EngineProcess, ENGINE_OWNER)
        if engine is None:
            _db.session.add(EngineProcess(id=ENGINE_OWNER, started_at=now, seen_at=now))
        else:
            engine.seen_at = now
        run = _db.session.get(PipelineRun, pipeline_id)
        if run is None:
            run = PipelineRun(pipeline_id=pipeline_id, state=state, since=now)
            _db.session.add(run)
        elif run.state != state:
            run.since = now
        run.state, run.owner, run.updated_at = state, ENGINE_OWNER, now
        for name, value in fields.items():
            setattr(run, name, value)
        _db.session.commit()


REFUSED = "Snowflake refused the batch: Insufficient privileges on table ORDERS"


def test_a_failed_pipeline_is_critical_at_once_and_resolves_when_it_streams_again(app, receiver):
    """The engine says failed: the scheduled round's evaluation fires pipeline_failed, keyed by
    the pipeline and on its source; the webhook names the pipeline, its state, for how long
    and why; streaming again resolves it, and the receiver hears that too."""
    source_id = add_source(app, "shop", free_port())
    pipeline_id = _pipeline(app, "orders-to-sf", source_id)
    settings(app, pipeline_failed_minutes=15)
    channel(app, receiver.url_for("/hook"))
    with time_machine.travel(utcnow(), tick=False) as traveller:
        _engine_says(app, pipeline_id, "streaming", lag_seconds=0.0, lag_bytes=0)
        sample(app, manual=False)
        assert _alerts(app) == []
        _engine_says(app, pipeline_id, "failed", reason=REFUSED)
        traveller.shift(timedelta(minutes=3))
        _engine_says(app, pipeline_id, "failed", reason=REFUSED)
        sample(app, manual=False)  # the next round: it fires within this one evaluation
        [alert] = _alerts(app)
        assert (alert.rule, alert.severity, alert.state) == (
            "pipeline_failed",
            "critical",
            "firing",
        )
        assert alert.key == f"pipeline_failed:pipeline:{pipeline_id}"
        assert (alert.source_id, alert.source_name, alert.slot_name) == (source_id, "shop", None)
        assert alert.message == f"pipeline `orders-to-sf` failed 3 min ago: {REFUSED}"
        with app.app_context():
            delivery.deliver_due()
        traveller.shift(timedelta(minutes=1))
        _engine_says(app, pipeline_id, "streaming", reason=None)
        sample(app, manual=False)
        with app.app_context():
            delivery.deliver_due()
    [alert] = _alerts(app)
    assert alert.state == "resolved"
    assert alert.resolved_message == "pipeline `orders-to-sf` is streaming"
    fired, resolved = received(receiver)
    assert (fired["event"], resolved["event"]) == ("firing", "resolved")
    assert fired["alert"]["rule"] == "pipeline_failed"
    assert "pipeline `orders-to-sf` failed 3 min ago" in fired["alert"]["message"]
    assert fired["url"].endswith(f"/sources/{source_id}")
    assert resolved["alert"]["resolved_message"] == "pipeline `orders-to-sf` is streaming"


def test_retrying_is_critical_only_after_pipeline_failed_minutes(app):
    """A pipeline retrying for 14 minutes fires nothing; at 16 it is critical, the message
    saying for how long and why."""
    pipeline_id = _pipeline(app, "orders-to-sf", add_source(app, "shop", free_port()))
    settings(app, pipeline_failed_minutes=15)
    why = "Snowflake: 503 Service Unavailable"
    with time_machine.travel(utcnow(), tick=False) as traveller, app.app_context():
        _engine_says(app, pipeline_id, "retrying", reason=why)
        traveller.shift(timedelta(minutes=14))
        _engine_says(app, pipeline_id, "retrying", reason=why)
        evaluate()
        assert _alerts(app) == []
        traveller.shift(timedelta(minutes=2))
        _engine_says(app, pipeline_id, "retrying", reason=why)
        evaluate()
    [alert] = _alerts(app)
    assert (alert.rule, alert.severity, alert.value, alert.threshold) == (
        "pipeline_failed",
        "critical",
        16.0,
        15.0,
    )
    assert alert.message == (
        f"pipeline `orders-to-sf` has been retrying for 16 min (critical at 15 min): {why}"
    )


def test_pipeline_lag_warns_escalates_and_resolves_with_hysteresis(app, receiver):
    """Lag over the warning, then the critical threshold: one alert told twice; back under
    critical but within 10 % it stays critical, then warning; under the warning but within
    10 % it holds, and below that it resolves, saying the lag now."""
    pipeline_id = _pipeline(app, "orders-to-sf", add_source(app, "shop", free_port()))
    settings(app, pipeline_lag_warning_seconds=300, pipeline_lag_critical_seconds=1800)
    channel(app, receiver.url_for("/hook"))
    seen = []
    with time_machine.travel(utcnow(), tick=False) as traveller, app.app_context():
        for lag_s in (120, 320, 1900, 1700, 1500, 280, 200):
            traveller.shift(timedelta(minutes=1))
            _engine_says(app, pipeline_id, "streaming", lag_seconds=lag_s, lag_bytes=64 * MB)
            evaluate()
            [alert] = _alerts(app) or [None]
            seen.append(None if alert is None else (alert.state, alert.severity))
    assert seen == [
        None,
        ("firing", "warning"),
        ("firing", "critical"),
        ("firing", "critical"),
        ("firing", "warning"),
        ("firing", "warning"),
        ("resolved", "warning"),
    ]
    [alert] = _alerts(app)
    assert alert.key == f"pipeline_lag:pipeline:{pipeline_id}"
    assert alert.resolved_message == (
        "pipeline `orders-to-sf` is 3 min behind its source now (warning at 5 min)"
    )
    assert _events(app) == [
        (
            "firing",
            "pipeline `orders-to-sf` is 5 min and 64 MB of WAL behind its source (warning at "
            "5 min)",
        ),
        (
            "firing",
            "pipeline `orders-to-sf` is 31 min and 64 MB of WAL behind its source (critical at "
            "30 min)",
        ),
        (
            "resolved",
            "pipeline `orders-to-sf` is 4 min and 64 MB of WAL behind its source (warning at "
            "5 min)",
        ),
    ]


def test_a_source_override_sets_its_pipelines_thresholds(app):
    """Two sources' pipelines equally behind and retrying: the one whose source raises the lag
    warning stays quiet, and the one whose source lowers the retrying minutes fires first."""
    from rosetta_web.models import Source

    shop = _pipeline(app, "shop-to-sf", add_source(app, "shop", free_port()))
    crm_source = add_source(app, "crm", free_port())
    crm = _pipeline(app, "crm-to-sf", crm_source)
    settings(
        app,
        pipeline_failed_minutes=15,
        pipeline_lag_warning_seconds=300,
        pipeline_lag_critical_seconds=1800,
    )
    with app.app_context():
        _db.session.get(Source, crm_source).alert_overrides = {
            "pipeline_lag_warning_seconds": 900,
            "pipeline_failed_minutes": 5,
        }
        _db.session.commit()
    with time_machine.travel(utcnow(), tick=False) as traveller, app.app_context():
        for pipeline_id in (shop, crm):
            _engine_says(app, pipeline_id, "streaming", lag_seconds=600)
        evaluate()
        assert [(a.rule, a.source_name) for a in _alerts(app)] == [("pipeline_lag", "shop")]
        for pipeline_id in (shop, crm):
            _engine_says(app, pipeline_id, "retrying", reason="Snowflake: timeout", lag_seconds=0)
        traveller.shift(timedelta(minutes=6))
        for pipeline_id in (shop, crm):
            _engine_says(app, pipeline_id, "retrying", reason="Snowflake: timeout", lag_seconds=0)
        evaluate()
    firing = [(a.rule, a.source_name) for a in _alerts(app) if a.state == "firing"]
    assert firing == [("pipeline_failed", "crm")]
    [failed] = [a for a in _alerts(app) if a.rule == "pipeline_failed"]
    assert "(critical at 5 min)" in failed.message


def test_each_pipeline_alerts_apart_a_paused_one_not_and_a_deleted_ones_resolves(app):
    """Two failed pipelines of one source raise two alerts; a failed one that is paused
    (PAUSE wanted) raises none; deleting a pipeline resolves its alert, saying so."""
    from rosetta_web.models import Pipeline

    source_id = add_source(app, "shop", free_port())
    orders = _pipeline(app, "orders-to-sf", source_id)
    items = _pipeline(app, "items-to-sf", source_id)
    archive = _pipeline(app, "archive-to-sf", source_id, status="PAUSE")
    settings(app, pipeline_failed_minutes=15)
    with app.app_context():
        for pipeline_id in (orders, items, archive):
            _engine_says(app, pipeline_id, "failed", reason=REFUSED)
        evaluate()
        assert {a.key for a in _alerts(app)} == {
            f"pipeline_failed:pipeline:{orders}",
            f"pipeline_failed:pipeline:{items}",
        }
        _db.session.delete(_db.session.get(Pipeline, items))
        _db.session.commit()
        evaluate()
    by_key = {a.key: a for a in _alerts(app)}
    assert by_key[f"pipeline_failed:pipeline:{orders}"].state == "firing"
    gone = by_key[f"pipeline_failed:pipeline:{items}"]
    assert (gone.state, gone.resolved_message) == ("resolved", "pipeline `items-to-sf` was deleted")


def test_a_pipeline_counts_only_while_its_engine_is_alive(app):
    """An engine that stops beating: its pipeline's last words (behind, failed) no longer
    count, and the alerts they raised resolve, saying the pipeline is stopped and why."""
    source_id = add_source(app, "shop", free_port())
    behind = _pipeline(app, "orders-to-sf", source_id)
    failed = _pipeline(app, "items-to-sf", source_id)
    settings(
        app,
        pipeline_failed_minutes=15,
        pipeline_lag_warning_seconds=300,
        pipeline_lag_critical_seconds=1800,
    )
    with time_machine.travel(utcnow(), tick=False) as traveller, app.app_context():
        _engine_says(app, behind, "streaming", lag_seconds=2000, lag_bytes=GIB)
        _engine_says(app, failed, "failed", reason=REFUSED, lag_seconds=2000)
        evaluate()
        assert sorted((a.rule, a.severity) for a in _alerts(app)) == [
            ("pipeline_failed", "critical"),
            ("pipeline_lag", "critical"),
            ("pipeline_lag", "critical"),
        ]
        traveller.shift(timedelta(minutes=5))  # not a word from the engine since
        evaluate()
    said = {(a.rule, a.key.rsplit(":", 1)[1]): a for a in _alerts(app)}
    assert all(a.state == "resolved" for a in said.values())
    assert said["pipeline_lag", str(behind)].resolved_message.startswith(
        "pipeline `orders-to-sf` is stopped: No engine process is running"
    )
    assert said["pipeline_lag", str(behind)].resolved_message.endswith(
        "; no engine reads it, so its lag is not measured"
    )
    assert said["pipeline_failed", str(failed)].resolved_message.startswith(
        "pipeline `items-to-sf` is stopped: No engine process is running"
    )


def test_pipeline_rules_read_every_pipeline_in_a_constant_number_of_queries(app, count_queries):
    """An evaluation with 20 pipelines runs as many statements as with one: one query reads
    every pipeline with its run and source, one the live engines."""
    source_id = add_source(app, "shop", free_port())
    settings(app, pipeline_failed_minutes=15, pipeline_lag_warning_seconds=300)
    _engine_says(app, _pipeline(app, "p-00", source_id), "streaming", lag_seconds=1.0)

    def statements() -> int:
        with app.app_context():
            evaluate()  # the first evaluation of a new state fires; the second is steady
            with count_queries() as counted:
                evaluate()
        return len(counted.statements)

    one = statements()
    for index in range(1, 20):
        _engine_says(app, _pipeline(app, f"p-{index:02d}", source_id), "streaming", lag_seconds=1.0)
    assert statements() == one


@pytest.mark.slow
def test_a_slot_without_consumer_names_the_pipeline_that_should_read_it(app, cluster, slot):
    """A real slot nobody reads: slot_inactive says nothing of pipelines while none uses the
    slot; once a START pipeline's source names it, the message names that pipeline."""
    source_id = add_source(
        app, "shop", cluster.port, user="postgres", password="unused", slot_name="orders"
    )
    settings(app, slot_inactive_minutes=10)
    with time_machine.travel(utcnow(), tick=False) as traveller:
        sample(app)
        traveller.shift(timedelta(minutes=11))
        sample(app)
        [alert] = _alerts(app)
        assert (alert.rule, alert.slot_name) == ("slot_inactive", "orders")
        assert "pipeline" not in alert.message
        _pipeline(app, "orders-to-sf", source_id)
        traveller.shift(timedelta(minutes=1))
        sample(app)
    [alert] = _alerts(app)
    assert alert.state == "firing"
    assert alert.message.endswith("; pipeline `orders-to-sf` (START) should be reading it")
