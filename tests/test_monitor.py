"""The WAL monitor against real PostgreSQL: figures, failures, timeouts, backoff, retention."""

from __future__ import annotations

import time
import tracemalloc
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from rosetta_web.crypto import encrypt_secret
from rosetta_web.extensions import db as _db
from rosetta_web.models import (
    MonitorRound,
    SampleError,
    Server,
    SlotMetric,
    SlotRollup,
    Source,
    SourceState,
    WalMetric,
    WalRollup,
)
from rosetta_web.monitor.rounds import (
    Round,
    backoff_seconds,
    delete_expired,
    record_round,
    sample_sources,
    scheduled_round,
)
from rosetta_web.postgres.sampling import Sample, SlotSample
from rosetta_web.sources.services import after_round
from rosetta_web.timeutil import as_utc, utcnow

from .factories import PLAIN_PASSWORD, add_source
from .pg import free_port, retained, wait_for, write_wal


def _state(app, source_id: int) -> SourceState:
    with app.app_context():
        state = _db.session.get(SourceState, source_id)
        _db.session.expunge(state)
        return state


def test_sample_matches_what_postgres_reports(app, source_db):
    """retained_bytes and the WAL position agree with PostgreSQL's own figures."""
    source_id = add_source(app, "shop", source_db["port"])
    cluster = source_db["cluster"]
    with app.app_context():
        first = after_round(sample_sources())[0]
    assert first.ok, first.error
    written = write_wal(cluster, 4)
    assert written > 4 * 1024 * 1024
    before = retained(cluster, "rosetta_slot")
    with app.app_context():
        second = after_round(sample_sources())[0]
    after = retained(cluster, "rosetta_slot")
    assert second.ok, second.error
    assert before <= second.retained_bytes <= after
    assert second.wal_position_bytes - first.wal_position_bytes >= written
    assert second.size_bytes and second.size_bytes >= 16 * 1024 * 1024  # one WAL segment at least
    with app.app_context():
        rows = _db.session.scalars(db_select_metrics(source_id)).all()
        assert [row.retained_bytes for row in rows] == [second.retained_bytes, first.retained_bytes]
        assert rows[0].slot_count == 1 and rows[0].inactive_slot_count == 1
        assert rows[1].wal_rate_bytes_per_second is None  # no earlier sample
        assert rows[0].wal_rate_bytes_per_second > 0
        assert rows[0].current_lsn == second.current_lsn and "/" in rows[0].current_lsn
        state = _db.session.get(SourceState, source_id)
        slot = _db.session.scalar(
            _db.select(SlotMetric).where(
                SlotMetric.server_id == state.server_id,
                SlotMetric.recorded_at == rows[0].recorded_at,
            )
        )
        assert (slot.slot_name, slot.plugin, slot.slot_type, slot.database) == (
            "rosetta_slot",
            "pgoutput",
            "logical",
            "shop",
        )
        assert slot.active is False and slot.wal_status == "reserved"
        assert slot.retained_bytes == second.retained_bytes and slot.lag_bytes >= 0
    state = _state(app, source_id)
    assert state.status == "OK" and state.retained_bytes == second.retained_bytes
    assert state.server_version.startswith(("1", "9")) and state.in_recovery is False


def _system_identifier(source_db) -> str:
    with closing(source_db["cluster"].connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT system_identifier::text FROM pg_control_system()")
        return cur.fetchone()[0]


def db_select_metrics(source_id: int):
    return (
        _db.select(WalMetric)
        .where(WalMetric.source_id == source_id)
        .order_by(WalMetric.recorded_at.desc(), WalMetric.id.desc())
    )


def test_role_without_pg_monitor_gets_null_wal_size_and_ok(app, source_db):
    """Without pg_monitor the WAL directory size is NULL, and that is not an error."""
    source_id = add_source(app, "plain", source_db["port"], "plain_user", PLAIN_PASSWORD)
    with app.app_context():
        sample = after_round(sample_sources())[0]
    assert sample.ok, sample.error
    assert sample.size_bytes is None and sample.retained_bytes is not None
    state = _state(app, source_id)
    assert state.status == "OK" and state.size_bytes is None


def test_wrong_password_is_an_error_that_never_shows_the_password(app, source_db):
    """A wrong password records ERROR with the server's reason, without the password."""
    source_id = add_source(app, "badpass", source_db["port"], "plain_user", "Wr0ng-Secret!")
    with app.app_context():
        sample = after_round(sample_sources())[0]
    assert not sample.ok and sample.attempts == 1  # not retried: it would fail again
    state = _state(app, source_id)
    assert state.status == "ERROR" and "password authentication failed" in state.last_error
    assert "Wr0ng-Secret!" not in state.last_error


def test_closed_port_fails_quickly(app):
    """A port where nothing listens is an ERROR within a couple of seconds, not the timeout."""
    app.config["WAL_MONITOR_TIMEOUT_SECONDS"] = 20
    source_id = add_source(app, "closed", free_port())
    started = time.monotonic()
    with app.app_context():
        sample = after_round(sample_sources())[0]
    assert time.monotonic() - started < 10  # far from the 20 s timeout
    assert not sample.ok and sample.attempts == 4  # the first try and three retries
    assert "Connection refused" in _state(app, source_id).last_error


def test_hanging_source_times_out_without_delaying_the_others(app, source_db, hanging_server):
    """A socket that never answers is cut at the timeout; the other source is on time."""
    app.config["WAL_MONITOR_TIMEOUT_SECONDS"] = 3
    add_source(app, "hangs", hanging_server.port)
    add_source(app, "shop", source_db["port"])
    started = time.monotonic()
    with app.app_context():
        samples = {sample.name: sample for sample in after_round(sample_sources())}
    elapsed = time.monotonic() - started
    assert samples["shop"].ok and samples["shop"].duration_ms < 2500  # not held up 3 s
    assert not samples["hangs"].ok and "timed out after 3 s" in samples["hangs"].error
    assert 2.9 <= samples["hangs"].duration_ms / 1000 <= 3.5
    assert elapsed < 3 + 2.5  # one timeout, not one per source


def test_failing_source_backs_off_round_after_round(app, source_db):
    """A failing source is retried at the next round twice, then ever less often, at most every
    15 minutes; a good sample ends the backoff."""
    app.config["WAL_MONITOR_INTERVAL_SECONDS"] = 60
    app.config["WAL_MONITOR_MAX_RETRIES"] = 0
    dead_port = free_port()
    source_id = add_source(app, "flaky", dead_port)
    t0 = utcnow()

    def round_at(minutes: float) -> list:
        with app.app_context():
            return after_round(scheduled_round(now=t0 + timedelta(minutes=minutes)))

    assert len(round_at(0)) == 1
    state = _state(app, source_id)
    assert (state.status, state.consecutive_failures) == ("ERROR", 1)
    assert state.next_attempt_at == t0 + timedelta(minutes=1)  # the next round
    assert len(round_at(1)) == 1
    assert (_state(app, source_id).status, _state(app, source_id).consecutive_failures) == (
        "ERROR",
        2,
    )
    assert len(round_at(2)) == 1
    state = _state(app, source_id)
    assert (state.status, state.consecutive_failures) == ("BACKOFF", 3)
    assert state.next_attempt_at == t0 + timedelta(minutes=2 + 2)  # skips one round
    assert round_at(3) == []
    assert len(round_at(4)) == 1
    assert _state(app, source_id).next_attempt_at == t0 + timedelta(minutes=4 + 4)
    assert round_at(5) == [] and round_at(7) == []
    assert [backoff_seconds(n, 60) for n in (1, 2, 3, 4, 5, 6, 10)] == [
        60,
        60,
        120,
        240,
        480,
        900,
        900,  # capped at 15 minutes
    ]

    with app.app_context():
        from rosetta_web.models import Source

        _db.session.get(Source, source_id).pg_port = source_db["port"]
        _db.session.commit()
    assert round_at(8)[0].ok
    state = _state(app, source_id)
    assert (state.status, state.consecutive_failures, state.next_attempt_at) == ("OK", 0, None)
    with app.app_context():
        rounds = _db.session.scalars(_db.select(MonitorRound).order_by(MonitorRound.id)).all()
        assert [(r.sources, r.failures, r.skipped) for r in rounds] == [
            (1, 1, 0),
            (1, 1, 0),
            (1, 1, 0),
            (0, 0, 1),
            (1, 1, 0),
            (0, 0, 1),
            (0, 0, 1),
            (1, 0, 0),
        ]


def test_sampling_by_hand_never_lengthens_the_backoff(app, runner):
    """A dead source sampled by hand five times is still tried at the next round, and the
    page, the CLI and the API name its status alike."""
    app.config["WAL_MONITOR_MAX_RETRIES"] = 0
    source_id = add_source(app, "dead", free_port())
    for _ in range(4):
        with app.app_context():
            assert after_round(sample_sources())[0].status == "ERROR"
    result = runner.invoke(args=["rosetta", "sample", "--source", "dead"])
    assert result.output.splitlines()[1].split()[:2] == ["dead", "ERROR"]
    state = _state(app, source_id)
    assert (state.status, state.consecutive_failures, state.next_attempt_at) == ("ERROR", 0, None)
    with app.app_context():
        assert len(after_round(scheduled_round())) == 1  # due at once: the scheduled round tries it
        assert _db.session.scalar(_db.select(_db.func.count(SampleError.id))) == 6
    assert _state(app, source_id).consecutive_failures == 1


def test_retention_deletes_old_rows_in_batches(app, source_db, monkeypatch):
    """Rows older than the retention go, a few per transaction; recent ones stay."""
    add_source(app, "shop", source_db["port"])
    with app.app_context():
        for days in (40, 35, 31, 0):
            after_round(sample_sources(now=utcnow() - timedelta(days=days)))
    monkeypatch.setattr("rosetta_web.monitor.rounds.RETENTION_BATCH_ROWS", 2)
    with app.app_context():
        deleted = delete_expired(30)
        assert deleted == 3 + 3 + 3  # wal_metrics, slot_metrics, monitor_rounds
        assert _db.session.scalar(_db.select(_db.func.count(WalMetric.id))) == 1
        assert _db.session.scalar(_db.select(_db.func.count(SlotMetric.id))) == 1
        assert _db.session.scalar(_db.select(_db.func.count(MonitorRound.id))) == 1
        state = _db.session.get(SourceState, 1)
        assert state.latest_wal_metric_id is not None


def test_deleting_a_source_deletes_its_history(app, api, source_db):
    """Deleting a source removes its samples and state; its server's slot history goes with
    the last source on that server, not before."""
    source_id = add_source(app, "shop", source_db["port"])
    other_id = add_source(app, "shop-too", source_db["port"])
    with app.app_context():
        after_round(sample_sources())
    assert api.delete(f"/api/v1/sources/{source_id}").status_code == 204

    def count(model):
        with app.app_context():
            return _db.session.scalar(_db.select(_db.func.count()).select_from(model))

    assert (count(WalMetric), count(SourceState), count(Server)) == (1, 1, 1)
    assert count(SlotMetric) == 1  # the other source still shows the server's slot
    assert (count(WalRollup), count(SlotRollup)) == (2, 2)  # its hour and day; the slot's
    assert api.delete(f"/api/v1/sources/{other_id}").status_code == 204
    for model in (WalMetric, SlotMetric, SourceState, Server, SampleError, WalRollup, SlotRollup):
        assert count(model) == 0, model


def test_cli_sample_prints_a_table(app, runner, source_db):
    """`flask rosetta sample` runs a round now and prints each source's figures."""
    add_source(app, "shop", source_db["port"])
    add_source(app, "closed", free_port())
    result = runner.invoke(args=["rosetta", "sample"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "SOURCE",
        "STATUS",
        "WAL_DIR_BYTES",
        "RETAINED_BYTES",
        "SLOTS",
        "DURATION",
        "ERROR",
    ]
    shop = next(line for line in lines if line.startswith("shop"))
    assert shop.split()[1] == "OK" and shop.split()[4] == "1"
    closed = next(line for line in lines if line.startswith("closed"))
    assert "ERROR" in closed and "Connection refused" in closed
    assert lines[-2:] == [
        "2 sampled, 1 failed",
        "alerts firing: 0 critical, 0 warning; 0 notifications sent",
    ]
    one = runner.invoke(args=["rosetta", "sample", "--source", "shop"])
    assert "1 sampled, 0 failed" in one.output
    unknown = runner.invoke(args=["rosetta", "sample", "--source", "nope"])
    assert unknown.exit_code != 0 and "no source named 'nope'" in unknown.output


@pytest.mark.parametrize("public", [False, True])
def test_prometheus_metrics(app, api, source_db, public):
    """/metrics exposes per-source and per-slot gauges; it needs a token unless public."""
    app.config["METRICS_PUBLIC"] = public
    add_source(app, "shop", source_db["port"])
    add_source(app, "closed", free_port())
    with app.app_context():
        after_round(scheduled_round())  # a scheduled round: the sampler's gauges describe those
    anonymous = app.test_client().get("/metrics")
    if not public:
        assert (
            anonymous.status_code == 401 and anonymous.get_json()["error"] == "AuthenticationError"
        )
        response = api.get("/metrics")
    else:
        response = anonymous
    text = response.get_data(as_text=True)
    assert response.status_code == 200 and response.mimetype == "text/plain"
    gauges = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert gauges[("rosetta_source_up", (("source", "shop"),))] == 1
    assert gauges[("rosetta_source_up", (("source", "closed"),))] == 0
    assert ("rosetta_wal_directory_bytes", (("source", "shop"),)) in gauges
    slot = (
        ("database", "shop"),
        ("server", _system_identifier(source_db)),
        ("slot", "rosetta_slot"),
    )
    assert gauges[("rosetta_slot_active", slot)] == 0
    assert gauges[("rosetta_slot_retained_bytes", slot)] > 0
    assert gauges[("rosetta_slot_wal_status", (*slot, ("status", "reserved")))] == 1
    assert gauges[("rosetta_slot_wal_status", (*slot, ("status", "lost")))] == 0
    assert gauges[("rosetta_sampler_round_failures", ())] == 1
    assert ("rosetta_sampler_round_duration_seconds", ()) in gauges
    assert response.headers["Content-Type"].count("charset") == 1


def test_api_exposes_samples_slots_and_state(app, api, source_db):
    """metrics/wal lists samples newest first; slots and the source carry the latest state."""
    source_id = add_source(app, "shop", source_db["port"])
    with app.app_context():
        after_round(sample_sources(now=utcnow() - timedelta(minutes=5)))
        after_round(sample_sources())
    rows = api.get(f"/api/v1/metrics/wal?source_id={source_id}&limit=1").get_json()
    assert len(rows) == 1
    assert {"id", "source_id", "size_bytes", "recorded_at", "wal_position_bytes"} <= set(rows[0])
    both = api.get(f"/api/v1/metrics/wal?source_id={source_id}").get_json()
    assert [r["recorded_at"] for r in both] == sorted(
        (r["recorded_at"] for r in both), reverse=True
    )
    slots = api.get(f"/api/v1/sources/{source_id}/slots").get_json()
    assert [s["slot_name"] for s in slots] == ["rosetta_slot"] and slots[0]["active"] is False
    monitor = api.get(f"/api/v1/sources/{source_id}").get_json()["monitor"]
    assert monitor["status"] == "OK" and monitor["retained_bytes"] == both[0]["retained_bytes"]
    assert api.get("/api/v1/sources/99/slots").status_code == 404


def test_pages_show_status_sizes_and_slots(app, browser, source_db):
    """The list shows status, sizes in human units and sample age; the source page its slots."""
    source_id = add_source(app, "shop", source_db["port"])
    add_source(app, "closed", free_port())
    with app.app_context():
        after_round(scheduled_round())
    listing = browser.get("/sources/").get_data(as_text=True)
    assert '<span class="badge monitor-ok"' in listing
    assert '<span class="badge monitor-error" title="cannot connect to 127.0.0.1:' in listing
    assert "Connection refused" in listing
    assert " MB</td>" in listing and "1 inactive" in listing and " s ago</td>" in listing
    page = browser.get(f"/sources/{source_id}").get_data(as_text=True)
    assert "rosetta_slot" in page and "pgoutput" in page and "reserved" in page
    assert "PostgreSQL 1" in page
    closed = browser.get("/sources/2").get_data(as_text=True)
    assert "The last attempt failed" in closed and "Next attempt in" in closed


def test_host_names_are_looked_up_within_the_budget(app, source_db):
    """A host name is resolved by the monitor (localhost works); an unknown one is an ERROR."""
    ok_id = add_source(app, "by-name", source_db["port"])
    bad_id = add_source(app, "no-such-host", source_db["port"])
    with app.app_context():
        from rosetta_web.models import Source

        _db.session.get(Source, ok_id).pg_host = "localhost"
        _db.session.get(Source, bad_id).pg_host = "no-such-host.invalid"
        _db.session.commit()
        samples = {s.name: s for s in after_round(sample_sources())}
    assert samples["by-name"].ok, samples["by-name"].error
    assert not samples["no-such-host"].ok
    assert "cannot look up no-such-host.invalid" in samples["no-such-host"].error


def test_fixing_a_source_clears_its_backoff(app, api, source_db):
    """After an edit of its connection, a failing source is tried at the next round."""
    app.config["WAL_MONITOR_MAX_RETRIES"] = 0
    source_id = add_source(app, "fixme", free_port())
    with app.app_context():
        after_round(scheduled_round())
    assert _state(app, source_id).next_attempt_at is not None
    assert api.patch(f"/api/v1/sources/{source_id}", json={"slot_name": "other"}).status_code == 200
    assert _state(app, source_id).status == "ERROR"  # not a connection change: backoff stays
    assert (
        api.patch(f"/api/v1/sources/{source_id}", json={"pg_port": source_db["port"]}).status_code
        == 200
    )
    state = _state(app, source_id)
    assert (state.status, state.consecutive_failures, state.next_attempt_at) == ("PENDING", 0, None)
    with app.app_context():
        assert after_round(scheduled_round())[0].ok


def test_a_source_deleted_mid_round_costs_only_its_own_sample(app, api, source_db, hanging_server):
    """Deleting a source while a round samples it leaves the round and the others intact."""
    import threading

    app.config["WAL_MONITOR_TIMEOUT_SECONDS"] = 2
    doomed = add_source(app, "doomed", hanging_server.port)
    kept = add_source(app, "shop", source_db["port"])
    done: list = []

    def sample():
        with app.app_context():
            done.append(after_round(sample_sources()))

    worker = threading.Thread(target=sample)
    worker.start()
    assert wait_for(lambda: hanging_server.held, timeout=10)  # the round is under way
    assert api.delete(f"/api/v1/sources/{doomed}").status_code == 204
    worker.join(timeout=10)
    assert done, "the round did not finish"
    with app.app_context():
        rounds = _db.session.scalars(_db.select(MonitorRound)).all()
        assert len(rounds) == 1 and rounds[0].sources == 1
        assert _db.session.scalar(db_select_metrics(kept)) is not None


# A round of many sources, stored without any statement growing with their number.

SERVERS = 20


def _many_sources(count: int) -> list[int]:
    """Store `count` sources (spread over SERVERS servers' databases); return their ids."""
    password = encrypt_secret("x")
    rows = [
        {
            "name": f"src-{index:05d}",
            "pg_host": f"pg-{index % SERVERS}",
            "pg_port": 5432,
            "pg_database": f"db{index % 3}",
            "pg_username": "u",
            "pg_password_encrypted": password,
            "publication_name": "p",
        }
        for index in range(count)
    ]
    for start in range(0, count, 1000):
        _db.session.execute(_db.insert(Source), rows[start : start + 1000])
    _db.session.commit()
    return list(_db.session.scalars(_db.select(Source.id).order_by(Source.id)))


def _fails(index: int) -> bool:
    """Tell whether source number `index` fails: one in eleven, on every server."""
    return index % 11 == 10


def _sampled(index: int, source_id: int, round_number: int) -> Sample:
    """Build what the sampler returns for source number `index`: some fail; the others
    share their server's three slots, one per database."""
    server = index % SERVERS
    if _fails(index):
        return Sample(source_id, f"src-{index:05d}", False, 5, 1, error="connection refused")
    position = (round_number * 1000 + server) * 1024 * 1024
    slots = [
        SlotSample(
            f"slot_{database}",
            "pgoutput",
            "logical",
            f"db{database}",
            database != 2,
            1024 * (server + database + round_number),
            512,
            "reserved",
            None,
        )
        for database in range(3)
    ]
    return Sample(
        source_id,
        f"src-{index:05d}",
        True,
        5,
        1,
        current_lsn=f"0/{position:X}",
        wal_position_bytes=position,
        size_bytes=16 * 1024 * 1024,
        server_version="16.4",
        in_recovery=False,
        system_identifier=str(7_000_000_000_000_000_000 + server),
        max_slot_wal_keep_size="-1",
        slots=slots,
        database=f"db{index % 3}",
        address=f"pg-{server}:5432",
    )


def _store_many(app, count: int) -> tuple[int, int]:
    """Store two rounds of `count` sources, each followed by what follows a round (alerts,
    readiness); check what is stored; return the longest statement and the most parameters
    any one statement had."""
    longest, most = 0, 0

    def record(conn, cursor, statement, parameters, context, executemany):
        nonlocal longest, most
        # executemany runs one statement per set of parameters: count one set.
        one = parameters[0] if executemany and isinstance(parameters, list) else parameters
        longest = max(longest, len(statement))
        most = max(most, len(one or ()))

    with app.app_context():
        ids = _many_sources(count)
        engine = _db.engine
        event.listen(engine, "before_cursor_execute", record)
        try:
            for round_number in (1, 2):
                started_at = utcnow().replace(microsecond=0) + timedelta(minutes=round_number)
                samples = [
                    _sampled(index, source_id, round_number) for index, source_id in enumerate(ids)
                ]
                record_round(samples, started_at, 60, 0, 1.0, "test")
                after_round(Round(samples, started_at))
        finally:
            event.remove(engine, "before_cursor_execute", record)
        failing = sum(1 for index in range(count) if _fails(index))
        count_of = lambda model: _db.session.scalar(_db.select(_db.func.count()).select_from(model))  # noqa: E731
        assert count_of(WalMetric) == 2 * (count - failing)
        assert count_of(SampleError) == 2 * failing
        assert count_of(Server) == SERVERS
        assert count_of(SlotMetric) == 2 * 3 * SERVERS  # each server's slots once a round
        assert count_of(SourceState) == count
        rounds = _db.session.scalars(_db.select(MonitorRound)).all()
        assert [(row.sources, row.failures) for row in rounds] == [(count, failing)] * 2
        first = _db.session.get(SourceState, ids[0])
        assert first.status == "OK" and first.wal_position_bytes == 2000 * 1024 * 1024
        assert first.latest_wal_metric_id is not None
        assert first.server.system_identifier == str(7_000_000_000_000_000_000)
        assert _db.session.get(WalMetric, first.latest_wal_metric_id).recorded_at is not None
        failed = _db.session.get(SourceState, ids[10])
        assert failed.status == "ERROR" and failed.consecutive_failures == 2
        assert failed.last_error == "connection refused"
        server = _db.session.get(Server, first.server_id)
        assert set(server.slot_trends) == {"slot_0", "slot_1", "slot_2"}
    return longest, most


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_a_round_of_10000_sources_is_stored_in_bounded_statements(request, database):
    """A round of 10,000 sources on 20 servers is stored, states, samples, failures and slots,
    and neither the longest statement nor its parameters grow from 1,000 sources to 10,000."""
    fixture = "app" if database == "postgresql" else "sqlite_app"
    app = request.getfixturevalue(fixture)
    small = _store_many(app, 1100)
    with app.app_context():
        for model in (MonitorRound, SlotMetric, SampleError, SourceState, WalMetric, Source):
            _db.session.execute(_db.delete(model))
        _db.session.execute(_db.delete(Server))
        _db.session.commit()
    large = _store_many(app, 10_000)
    assert large[0] <= small[0] and large[1] <= small[1], (small, large)
    assert large[1] <= 32_766  # SQLite's limit of bound parameters


def _storing_peak(app, count: int) -> int:
    """Store a round of `count` sources whose states each hold a day of sparkline (143
    ten-minute points) after a first round; return the most memory (bytes) Python held at
    once while the second round was stored."""
    with app.app_context():
        for model in (MonitorRound, SlotMetric, SampleError, SourceState, WalMetric, Source):
            _db.session.execute(_db.delete(model))
        _db.session.execute(_db.delete(Server))
        _db.session.commit()
        ids = _many_sources(count)
        started_at = utcnow().replace(microsecond=0)
        record_round(
            [_sampled(i, source_id, 1) for i, source_id in enumerate(ids)],
            started_at,
            60,
            0,
            1.0,
            "test",
        )
        stored_at = started_at + timedelta(minutes=1)
        bucket = int(stored_at.timestamp()) // 600 * 600  # the day before the second round's
        day = [[bucket - 600 * k, 10**9 + k] for k in range(143, 0, -1)]
        _db.session.execute(_db.update(SourceState).values(retained_history=day))
        _db.session.commit()
        samples = [_sampled(i, source_id, 2) for i, source_id in enumerate(ids)]
        _db.session.expunge_all()
        tracemalloc.start()
        try:
            record_round(samples, stored_at, 60, 0, 1.0, "test")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        state = _db.session.get(SourceState, ids[0])
        assert state.retained_history[:-1] == day and len(state.retained_history) == 144
        return peak


def test_storing_a_round_holds_a_batch_of_states_at_a_time_not_every_one(app):
    """A round's states, each with a day of sparkline, are stored a batch of 1,000 at a time:
    storing 3,000 sources holds little more memory at once than storing 1,000 does (all at
    once, it would hold three times as much)."""
    small = _storing_peak(app, 1000)
    large = _storing_peak(app, 3000)
    assert large < 1.5 * small, (small, large)


def test_a_smaller_sample_in_the_same_ten_minutes_keeps_the_sparkline_and_updates_the_state(app):
    """The dashboard's sparkline keeps each 10 minutes' most WAL retained: a smaller sample in
    the same 10 minutes leaves its line as it was while the source's figures move on; a larger
    one raises the line's peak."""
    with app.app_context():
        (source_id,) = _many_sources(1)
        bucket = int(utcnow().timestamp()) // 600 * 600 - 600
        start = datetime.fromtimestamp(bucket + 60, UTC)
        stored = {}
        for minute, round_number in enumerate((5, 3, 8)):
            sample = _sampled(0, source_id, round_number)
            record_round([sample], start + timedelta(minutes=minute), 60, 0, 0.1, "test")
            _db.session.expunge_all()
            state = _db.session.get(SourceState, source_id)
            stored[round_number] = (
                sample.retained_bytes,
                state.retained_bytes,
                state.retained_history,
                state.retained_sparkline,
                as_utc(state.last_sampled_at),
                state.status,
            )
    first, smaller, larger = stored[5], stored[3], stored[8]
    assert first[0] > smaller[0] and larger[0] > first[0]
    assert first[2] == [[bucket, first[0]]] and first[3].split(" ")[:2] == [
        str(bucket),
        str(first[0]),
    ]
    # The smaller sample: the source's figures are its own, the line is the first's.
    assert smaller[1] == smaller[0] and smaller[4] == start + timedelta(minutes=1)
    assert smaller[2:4] == first[2:4] and smaller[5] == "OK"
    # The larger one: the same point, raised, and the line drawn again with its peak.
    assert larger[1] == larger[0] and larger[2] == [[bucket, larger[0]]]
    assert larger[3].split(" ")[:2] == [str(bucket), str(larger[0])]
