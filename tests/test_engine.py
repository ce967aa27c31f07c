"""The engine moves data: a real `flask rosetta engine` process runs Debezium against a real
PostgreSQL source and loads fakesnow's Snowflake; every figure is checked against psql."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .engine import Engine, Proxy, Setup, destination_host
from .pg import Cluster, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine_cluster() -> Iterator[Cluster]:
    """A source cluster of the engine tests' own (wal_level=logical)."""
    cluster = Cluster("rosetta-engine").start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def engine_process(database_url: str) -> Iterator[Engine]:
    """One engine process (one JVM start) shared by the tests of this module."""
    engine = Engine(database_url)
    yield engine
    assert engine.stop() == 0, engine.output()[-3000:]


@pytest.fixture
def engine(app, engine_process: Engine) -> Iterator[Engine]:
    """The shared engine; each test's pipelines are paused (and seen paused) before the next
    test empties the metadata database."""
    yield engine_process
    from rosetta_web.extensions import db
    from rosetta_web.models import Pipeline, PipelineRun

    with app.app_context():
        db.session.execute(db.update(Pipeline).values(status="PAUSE"))
        db.session.commit()

        def let_go() -> bool:
            db.session.rollback()
            states = db.session.scalars(db.select(PipelineRun.state)).all()
            return all(state in ("paused", "stopped", "failed") for state in states)

        assert wait_for(let_go, timeout=60, interval=0.25), engine_process.output()[-3000:]
    assert engine_process.process.poll() is None, engine_process.output()[-3000:]


ITEMS = [
    "CREATE TABLE items (id bigint PRIMARY KEY, note text, amount numeric(12,2))",
    "INSERT INTO items SELECT g, 'note ' || g, g * 1.25 FROM generate_series(1, 10000) g",
]
ALL_ITEMS = "SELECT id, note, amount FROM items ORDER BY id"
ALL_ITEMS_DESTINATION = "SELECT ID, NOTE, AMOUNT FROM ITEMS ORDER BY ID"


def test_start_snapshots_then_streams_and_the_copy_is_equal(app, engine, engine_cluster, snowflake):
    """START: 10,000 rows snapshot, then 2,000 inserts, updates and deletes streamed; the
    destination equals the source row for row, and the slot's confirmed position (as psql
    reads it) passes the last change, so the source frees its WAL."""
    s = Setup(app, engine_cluster, snowflake, ITEMS, snowflake.host_setting)
    s.set_status("START")
    s.wait_equal("SELECT count(*) FROM items", "SELECT count(*) FROM ITEMS", timeout=120)
    s.wait_state("streaming")
    s.sql(
        "UPDATE items SET note = note || ' changed', amount = amount + 0.01 WHERE id % 10 = 0",
        "DELETE FROM items WHERE id % 20 = 1",
        "INSERT INTO items SELECT g, 'new ' || g, g FROM generate_series(10001, 10500) g",
    )
    (before_last,) = s.sql("SELECT pg_current_wal_lsn()::text")
    s.sql("UPDATE items SET note = 'last' WHERE id = 2")
    s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION, timeout=90)
    (count,) = s.snowflake_rows("SELECT count(*), count(DISTINCT ID) FROM ITEMS")
    assert count[0] == count[1] == 10000 - 500 + 500

    def confirmed_past_last() -> bool:
        ((passed,),) = s.sql(
            "SELECT confirmed_flush_lsn > %s::pg_lsn FROM pg_replication_slots "
            f"WHERE slot_name = '{s.slot}'".replace("%s", f"'{before_last[0]}'")
        )
        return bool(passed)

    assert wait_for(confirmed_past_last, timeout=30, interval=0.5)
    run = s.wait_state("streaming")
    assert run.owner is not None and run.owner.endswith(engine.owner_suffix)
    assert run.last_lsn is not None and run.last_lsn > 0


def test_pause_drains_and_start_brings_what_changed_meanwhile(
    app, engine, engine_cluster, snowflake
):
    """PAUSE stops the engine (the slot is left inactive, as psql shows) and keeps the slot;
    changes made while paused all arrive after START."""
    s = Setup(app, engine_cluster, snowflake, ITEMS[:1], snowflake.host_setting)
    s.sql("INSERT INTO items SELECT g, 'n', 1 FROM generate_series(1, 100) g")
    s.set_status("START")
    s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
    s.set_status("PAUSE")
    s.wait_state("paused", timeout=30)
    assert wait_for(lambda: not s.slot_confirmed()[0], timeout=30)
    s.sql(
        "INSERT INTO items SELECT g, 'while paused', 2 FROM generate_series(101, 300) g",
        "DELETE FROM items WHERE id <= 10",
        "UPDATE items SET note = 'edited while paused' WHERE id = 50",
    )
    assert s.snowflake_rows("SELECT count(*) FROM ITEMS") == [(100,)]
    s.set_status("START")
    s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
    assert s.slot_confirmed()[0]


def test_destination_down_then_back_is_caught_up_with_nothing_lost(
    app, engine, engine_cluster, snowflake
):
    """The destination cut off for 20 s: the pipeline says it is retrying and why, the slot
    keeps what is not loaded, and once the destination is back every change arrives."""
    proxy = Proxy(snowflake.port)
    try:
        s = Setup(app, engine_cluster, snowflake, ITEMS[:1], f"http://127.0.0.1:{proxy.port}")
        s.sql("INSERT INTO items SELECT g, 'n', 1 FROM generate_series(1, 50) g")
        s.set_status("START")
        s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
        proxy.down()
        s.sql("INSERT INTO items SELECT g, 'during the outage', 3 FROM generate_series(51, 250) g")
        run = s.wait_state("retrying", timeout=60)
        assert run.next_try_at is not None and run.reason
        s.sql("UPDATE items SET note = 'also during' WHERE id <= 5")
        wait_for(lambda: False, timeout=20, interval=1)  # the outage lasts 20 s
        assert s.snowflake_rows("SELECT count(*) FROM ITEMS") == [(50,)]
        proxy.restore()
        s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION, timeout=60)
        s.wait_state("streaming")
    finally:
        proxy.close()
    destination_host(app, s.destination_id, snowflake.host_setting)


def test_secrets_stay_out_of_the_engine_log_command_line_and_files(
    app, engine, engine_cluster, snowflake, database_url
):
    """A source whose password is wrong fails to start: the pipeline says why, and neither
    that reason, the engine's log, its command line nor any file under instance/ holds the
    password."""
    from rosetta_web.extensions import db
    from rosetta_web.models import PipelineError, Source

    s = Setup(app, engine_cluster, snowflake, ITEMS[:1], snowflake.host_setting)
    secret = "S3cret-engine-password-77"
    with app.app_context():
        source = db.session.get(Source, s.source_id)
        source.pg_username = "engine_role"
        source.pg_password = secret
        db.session.commit()
    s.sql(f"CREATE ROLE engine_role LOGIN REPLICATION PASSWORD 'not-{secret}'")
    s.set_status("START")
    run = s.wait_state("retrying", timeout=60)
    with app.app_context():
        messages = db.session.scalars(db.select(PipelineError.message)).all()
    assert messages and run.reason
    for text in [run.reason, *messages, engine.output()]:
        assert secret not in text
    cmdline = Path(f"/proc/{engine.process.pid}/cmdline").read_bytes().decode(errors="replace")
    assert secret not in cmdline
    instance = Path(app.instance_path)
    for path in instance.rglob("*") if instance.exists() else []:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert "password=" not in engine.output().replace("password=********", "")
