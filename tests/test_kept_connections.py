"""Scheduled rounds sample each server once, over one connection kept open between rounds:
what PostgreSQL's pg_stat_activity shows of it, what the sources sharing a server are given,
and what happens when the connection or a source's settings change."""

from __future__ import annotations

import time
from datetime import datetime

from rosetta_web.crypto import encrypt_secret
from rosetta_web.extensions import db as _db
from rosetta_web.models import MonitorRound, Source, SourceState
from rosetta_web.monitor.rounds import close_changed_connections, sample_sources, scheduled_round
from rosetta_web.monitor.workers import kept_connections
from rosetta_web.postgres.sampling_queries import WAL_DIRECTORY_BYTES
from rosetta_web.sources.services import after_round

from .factories import PLAIN_PASSWORD, add_source
from .pg import psql, retained


def _monitor_backends(cluster, since: datetime) -> list[tuple[int, str, str]]:
    """The monitor's connections opened since `since`: pid, role and database."""
    return psql(
        cluster,
        "SELECT pid, usename::text, datname::text FROM pg_stat_activity"
        " WHERE application_name = 'rosetta-monitor' AND backend_start >= %s ORDER BY pid",
        since,
    )


def _started(cluster) -> datetime:
    return psql(cluster, "SELECT now()")[0][0]


def _scheduled(app) -> dict:
    with app.app_context():
        return {sample.name: sample for sample in after_round(scheduled_round())}


def test_a_server_is_sampled_once_over_one_kept_connection(app, api, source_db):
    """Three sources on one server: one connection, opened as the role that may size the WAL
    directory, reused round after round; every source gets its server's figures, its own
    database's slots; the connection is closed at once when that source is edited."""
    cluster = source_db["cluster"]
    since = _started(cluster)
    plain = add_source(app, "a-plain", source_db["port"], "plain_user", PLAIN_PASSWORD)
    shop = add_source(app, "b-shop", source_db["port"])
    add_source(app, "c-shop", source_db["port"])
    with app.app_context():
        assert all(sample.ok for sample in after_round(sample_sources()))  # finds the server
    assert _monitor_backends(cluster, since) == []  # by hand: closed after each sample

    first = _scheduled(app)
    (backend,) = _monitor_backends(cluster, since)
    assert backend[1:] == ("rosetta_monitor", "shop")  # pg_monitor: it sizes pg_wal
    assert (
        psql(
            cluster,
            "SELECT state, current_setting('default_transaction_read_only') FROM pg_stat_activity"
            " WHERE pid = %s",
            backend[0],
        )[0][0]
        == "idle"
    )
    assert {name: sample.ok for name, sample in first.items()} == dict.fromkeys(first, True)
    (wal_directory,) = psql(cluster, "SELECT sum(size)::bigint FROM pg_ls_waldir()")[0]
    # The plain role may not list pg_wal: it is given the size its server's sample read.
    assert first["a-plain"].size_bytes == first["b-shop"].size_bytes == wal_directory
    assert first["a-plain"].slots == first["c-shop"].slots
    assert first["a-plain"].slot_count == 1
    assert first["a-plain"].retained_bytes <= retained(cluster, "rosetta_slot")

    second = _scheduled(app)
    assert _monitor_backends(cluster, since) == [backend]  # the same backend, kept
    assert second["a-plain"].wal_position_bytes >= first["a-plain"].wal_position_bytes
    with app.app_context():
        row = _db.session.scalar(_db.select(MonitorRound).order_by(MonitorRound.id.desc()))
        assert (row.sources, row.failures) == (3, 0)
        states = _db.session.scalars(_db.select(SourceState)).all()
        assert len({state.server_id for state in states}) == 1
        assert {state.status for state in states} == {"OK"}

    # Edited (another name for the same host): closed at once, not at the next round.
    edited = api.patch(f"/api/v1/sources/{shop}", json={"pg_host": "localhost"})
    assert edited.status_code == 200, edited.text
    with app.app_context():
        close_changed_connections()
    assert _monitor_backends(cluster, since) == []
    third = _scheduled(app)  # b-shop is sampled on its own (a new connection), a-plain and
    # c-shop over one kept anew as rosetta_monitor
    assert {name: sample.ok for name, sample in third.items()} == dict.fromkeys(third, True)
    assert [row[1] for row in _monitor_backends(cluster, since)] == ["rosetta_monitor"]
    with app.app_context():
        assert _db.session.get(SourceState, plain).size_bytes == wal_directory
    # b-shop reaches the server at another address: a group of its own (a standby has its
    # primary's system_identifier, so the address tells them apart), a connection of its own.
    assert all(sample.ok for sample in _scheduled(app).values())
    assert sorted(row[1] for row in _monitor_backends(cluster, since)) == [
        "rosetta_monitor",
        "rosetta_monitor",
    ]


def test_a_dropped_connection_is_opened_again_within_the_round(app, api, source_db):
    """A kept connection the server has closed (pg_terminate_backend) costs nothing: the next
    round opens another in the same attempt. Deleting the source closes it at once."""
    cluster = source_db["cluster"]
    since = _started(cluster)
    shop = add_source(app, "shop", source_db["port"])
    with app.app_context():
        after_round(sample_sources())
    _scheduled(app)
    (backend,) = _monitor_backends(cluster, since)
    psql(cluster, "SELECT pg_terminate_backend(%s)", backend[0])
    sample = _scheduled(app)["shop"]
    assert sample.ok and sample.attempts == 1, sample.error
    (again,) = _monitor_backends(cluster, since)
    assert again[0] != backend[0]
    assert api.delete(f"/api/v1/sources/{shop}").status_code == 204
    with app.app_context():
        close_changed_connections()
    assert _monitor_backends(cluster, since) == []


def test_connections_unused_for_three_rounds_are_closed_and_none_kept_when_off(app, source_db):
    """A server no round samples for three rounds loses its connection; with
    WAL_MONITOR_KEEP_CONNECTIONS=false a round leaves none open."""
    cluster = source_db["cluster"]
    since = _started(cluster)
    add_source(app, "shop", source_db["port"])
    with app.app_context():
        after_round(sample_sources())
    _scheduled(app)
    assert len(_monitor_backends(cluster, since)) == 1
    kept = kept_connections(app)
    for _ in range(3):  # rounds that do not sample it (this server's sources deleted, say)
        assert len(_monitor_backends(cluster, since)) == 1
        kept.end_round()
    assert _monitor_backends(cluster, since) == []

    app.config["WAL_MONITOR_KEEP_CONNECTIONS"] = False
    assert _scheduled(app)["shop"].ok
    assert _monitor_backends(cluster, since) == []


def test_a_hanging_server_costs_its_sources_one_timeout(app, source_db, hanging_server):
    """Two sources of a server that stops answering: both fail with its timeout, in one
    timeout, not one each."""
    app.config.update(WAL_MONITOR_TIMEOUT_SECONDS=2, WAL_MONITOR_CONCURRENCY=1)
    ids = [add_source(app, name, source_db["port"]) for name in ("one", "two")]
    with app.app_context():
        after_round(sample_sources())
        # The server moves (its address given by another hand): the state still says OK.
        for source in _db.session.scalars(_db.select(Source).where(Source.id.in_(ids))):
            source.pg_port = hanging_server.port
        _db.session.commit()
    started = time.monotonic()
    samples = _scheduled(app)
    assert time.monotonic() - started < 2 + 1.5
    assert [sample.ok for sample in samples.values()] == [False, False]
    assert all("timed out after 2 s" in sample.error for sample in samples.values())


def test_a_source_that_cannot_sign_in_leaves_the_server_to_the_next(app, source_db):
    """The source whose role sees the most cannot sign in any more: it fails with its own
    message, and its server is sampled over the next source's connection."""
    add_source(app, "plain", source_db["port"], "plain_user", PLAIN_PASSWORD)
    shop = add_source(app, "shop", source_db["port"])
    with app.app_context():
        after_round(sample_sources())
        _db.session.get(Source, shop).pg_password_encrypted = encrypt_secret("Wr0ng-Secret!")
        _db.session.commit()
    samples = _scheduled(app)
    assert not samples["shop"].ok and "cannot sign in as rosetta_monitor" in samples["shop"].error
    assert samples["plain"].ok and samples["plain"].size_bytes is None  # its own, plain view


def _last_query(cluster, since: datetime) -> str:
    """The statement the monitor's one kept connection ran last."""
    ((pid, _, _),) = _monitor_backends(cluster, since)
    return psql(cluster, "SELECT query FROM pg_stat_activity WHERE pid = %s", pid)[0][0]


def test_a_role_that_may_size_the_wal_directory_is_read_in_one_statement(app, source_db):
    """Once a sample found its role may list pg_wal, the kept connection reads everything in
    one statement, the size included; its grant revoked, the next round still samples it,
    without the size; granted again, the size is back."""
    cluster = source_db["cluster"]
    since = _started(cluster)
    add_source(app, "shop", source_db["port"])
    with app.app_context():
        assert all(sample.ok for sample in after_round(sample_sources()))  # finds the server
    _scheduled(app)  # learns what the role may read
    sample = _scheduled(app)["shop"]
    (wal_directory,) = psql(cluster, "SELECT sum(size)::bigint FROM pg_ls_waldir()")[0]
    assert sample.ok and sample.size_bytes == wal_directory
    # The sample was its last statement: no second one sized the WAL directory.
    assert _last_query(cluster, since).lstrip().startswith("WITH pos AS")

    psql(cluster, "REVOKE pg_monitor FROM rosetta_monitor")
    try:
        sample = _scheduled(app)["shop"]
        assert sample.ok and sample.size_bytes is None, sample.error
    finally:
        psql(cluster, "GRANT pg_monitor TO rosetta_monitor")
    sample = _scheduled(app)["shop"]  # as a role that may not: the sample, then the size
    assert sample.ok and sample.size_bytes is not None
    assert _last_query(cluster, since) == WAL_DIRECTORY_BYTES
    assert _scheduled(app)["shop"].size_bytes is not None
    assert _last_query(cluster, since).lstrip().startswith("WITH pos AS")
