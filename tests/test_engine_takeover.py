"""Engine processes share the pipelines: one owner at a time, a takeover after kill -9 with
nothing lost or applied twice, and a clean stop on SIGTERM."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from .engine import Engine, Setup
from .pg import Cluster, wait_for

pytestmark = pytest.mark.slow

ITEMS = ["CREATE TABLE items (id bigint PRIMARY KEY, note text, amount numeric(12,2))"]
ALL_ITEMS = "SELECT id, note, amount FROM items ORDER BY id"
ALL_ITEMS_DESTINATION = "SELECT ID, NOTE, AMOUNT FROM ITEMS ORDER BY ID"


@pytest.fixture(scope="module")
def takeover_cluster() -> Iterator[Cluster]:
    """A source cluster of this module's own."""
    cluster = Cluster("rosetta-takeover").start()
    yield cluster
    cluster.stop()


def test_kill_9_of_the_owner_and_the_other_process_takes_over(
    app, takeover_cluster, snowflake, database_url
):
    """Two engine processes: the pipeline is owned by one. kill -9 of that one while the
    source keeps writing: the other takes the pipeline over within 30 s, and the destination
    equals the source with no row twice."""
    s = Setup(app, takeover_cluster, snowflake, ITEMS, snowflake.host_setting)
    s.sql("INSERT INTO items SELECT g, 'n ' || g, g FROM generate_series(1, 2000) g")
    engines = [Engine(database_url), Engine(database_url)]
    writing = threading.Event()
    writing.set()
    written = [2000]  # the last id inserted

    def write() -> None:
        while writing.is_set():
            n = written[0] + 1
            s.sql(
                f"INSERT INTO items VALUES ({n}, 'streamed', {n})",
                f"UPDATE items SET note = 'touched {n}' WHERE id = {n % 2000 + 1}",
                f"DELETE FROM items WHERE id = {n - 1500}" if n % 7 == 0 else "SELECT 1",
            )
            written[0] = n
            time.sleep(0.02)  # a steady trickle of transactions, not a wait

    writer = threading.Thread(target=write, daemon=True)
    try:
        s.set_status("START")
        run = s.wait_state("streaming", "snapshotting", timeout=90)
        owner = next(e for e in engines if run.owner and run.owner.endswith(e.owner_suffix))
        survivor = next(e for e in engines if e is not owner)
        writer.start()
        # Crash mid-stream: once several streamed batches are in, while more keep coming.
        assert wait_for(lambda: s.destination_max_id() > 2050, timeout=60, interval=0.25)
        owner.kill()
        killed_at = time.monotonic()
        assert wait_for(lambda: s.owned_by(survivor, "streaming"), timeout=30, interval=0.25), (
            survivor.output()[-3000:]
        )
        took_s = time.monotonic() - killed_at
        # The survivor loads what was written after the takeover, then the writer stops.
        since_takeover = written[0]
        assert wait_for(lambda: s.destination_max_id() > since_takeover, timeout=60, interval=0.25)
        writing.clear()
        writer.join()
        s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION, timeout=90)
        ((rows, keys),) = s.snowflake_rows("SELECT count(*), count(DISTINCT ID) FROM ITEMS")
        assert rows == keys
        print(f"taken over in {took_s:.1f} s")
    finally:
        writing.clear()
        s.set_status("PAUSE")
        s.wait_state("paused", "stopped", timeout=60)
        for engine in engines:
            if engine.process.poll() is None:
                assert engine.stop() == 0, engine.output()[-3000:]


def test_a_change_wakes_the_engine_and_sigterm_stops_it(
    app, takeover_cluster, snowflake, database_url
):
    """An engine looking only every 60 s starts a pipeline within seconds of START (the
    change's NOTIFY wakes it). SIGTERM: the process exits 0 within seconds, and its pipeline
    reads `stopped`."""
    s = Setup(app, takeover_cluster, snowflake, ITEMS, snowflake.host_setting)
    s.sql("INSERT INTO items VALUES (1, 'a', 1)")
    own = Engine(database_url, ENGINE_POLL_SECONDS="60")

    def looked() -> bool:  # its first look is done: it now waits 60 s, or a change
        return "and at once when a pipeline changes" in own.output()

    try:
        assert wait_for(looked, timeout=90, interval=0.25), own.output()[-3000:]
        s.set_status("START")
        s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION, timeout=20)
    finally:
        started = time.monotonic()
        assert own.stop(timeout=40) == 0, own.output()[-3000:]
        stopped_s = time.monotonic() - started
    run = s.run()
    assert run is not None and run.state == "stopped", run and run.state
    assert stopped_s < 30


def test_source_restart_and_metadata_outage_lose_nothing(app, takeover_cluster, snowflake):
    """The source stopped mid-stream until the pipeline says it lost it and retries, then
    started again; then the metadata database stopped for 20 s (the engine stops its engines
    at once: it can no longer prove it owns them): after each, the pipeline resumes by itself,
    streaming, and the destination equals the source."""
    from flask_migrate import upgrade

    from rosetta_web import create_app
    from rosetta_web.extensions import db

    from .apps import make_app

    meta = Cluster("rosetta-meta").start()
    try:
        url = meta.create_database("rosetta_meta")
        with create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True}).app_context():
            upgrade()
        own_app = make_app(url)
        s = Setup(own_app, takeover_cluster, snowflake, ITEMS, snowflake.host_setting)
        s.sql("INSERT INTO items SELECT g, 'n', g FROM generate_series(1, 100) g")
        engine = Engine(url)
        try:
            s.set_status("START")
            s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION, timeout=90, engine=engine)
            s.wait_state("streaming")
            takeover_cluster.halt()
            # Down until the pipeline says it lost the source and retries.
            down = s.wait_state("retrying", timeout=60)
            assert down.reason and "lost its connection to the source" in down.reason
            takeover_cluster.resume()
            s.sql("INSERT INTO items SELECT g, 'restarted', g FROM generate_series(101, 200) g")
            s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION, timeout=90, engine=engine)
            s.wait_state("streaming", timeout=30)

            meta.halt()
            s.sql("INSERT INTO items SELECT g, 'metadata down', g FROM generate_series(201, 300) g")
            time.sleep(20)  # the metadata database's outage
            meta.resume()
            s.sql("UPDATE items SET note = 'metadata back' WHERE id <= 50")
            s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION, timeout=90, engine=engine)
            ((rows, keys),) = s.snowflake_rows("SELECT count(*), count(DISTINCT ID) FROM ITEMS")
            assert rows == keys == 300
            output = engine.output()
            assert "lost the metadata database; stopping every engine now" in output
        finally:
            assert engine.stop() == 0, engine.output()[-3000:]
            with own_app.app_context():
                db.engine.dispose()
    finally:
        meta.stop()


def test_on_sqlite_one_engine_runs_the_pipelines_and_another_waits_to_take_over(
    app, takeover_cluster, snowflake, tmp_path
):
    """On the embedded SQLite database one engine process runs every pipeline, its offsets in
    a file beside the database; a second process waits, and takes over after kill -9 of the
    first, resuming from those offsets with no row twice."""
    from flask_migrate import upgrade

    from rosetta_web import create_app

    from .apps import make_app

    url = f"sqlite:///{tmp_path / 'rosetta.db'}"
    with create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True}).app_context():
        upgrade()
    own_app = make_app(url)
    s = Setup(own_app, takeover_cluster, snowflake, ITEMS, snowflake.host_setting)
    s.sql("INSERT INTO items SELECT g, 'n', g FROM generate_series(1, 200) g")
    first = Engine(url)
    second = None
    try:
        s.set_status("START")
        s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION, timeout=90)
        run = s.wait_state("streaming")
        assert run.owner is not None and run.owner.endswith(first.owner_suffix)
        offsets = tmp_path / "offsets" / f"pipeline-{s.pipeline_id}.dat"
        # Beside the database, once the first batch after the copy commits one.
        assert wait_for(lambda: offsets.exists() and offsets.stat().st_size > 0, timeout=30)
        second = Engine(url)
        s.sql("INSERT INTO items SELECT g, 'later', g FROM generate_series(201, 300) g")
        s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
        assert s.owned_by(first)
        first.kill()
        s.sql("UPDATE items SET note = 'after the crash' WHERE id <= 20")

        assert wait_for(lambda: s.owned_by(second), timeout=30, interval=0.25), second.output()[
            -3000:
        ]
        s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
        ((rows, keys),) = s.snowflake_rows("SELECT count(*), count(DISTINCT ID) FROM ITEMS")
        assert rows == keys == 300
    finally:
        for engine in (first, second):
            if engine is not None and engine.process.poll() is None:
                assert engine.stop() == 0, engine.output()[-3000:]
