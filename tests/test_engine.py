"""The engine moves data: a real `flask rosetta engine` process runs Debezium against a real
PostgreSQL source and loads fakesnow's Snowflake; every figure is checked against psql."""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, date, datetime, time
from pathlib import Path
from time import sleep

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
    """One engine process (one JVM start) shared by the tests of this module, logging JSON."""
    engine = Engine(database_url, LOG_FORMAT="json")
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


def test_the_connector_config_seeds_the_engines_committed_offset(
    app, api, engine, engine_cluster, snowflake
):
    """Once the engine streams, the Kafka Connect answer holds its committed offset as the
    PATCH /connectors/<name>/offsets body (the connector's partition, an LSN within the
    source's WAL), and the source's password appears nowhere in it."""
    s = Setup(app, engine_cluster, snowflake, ITEMS[:1], snowflake.host_setting)
    s.sql("INSERT INTO items VALUES (1, 'one', 1)")
    s.set_status("START")
    s.wait_state("streaming")
    s.sql("INSERT INTO items VALUES (2, 'two', 2)")
    s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
    url = f"/api/v1/pipelines/{s.pipeline_id}/connector-config"

    def seeded() -> dict | None:
        body = api.get(url).get_json()
        return body if body["offsets"] is not None else None

    body = wait_for(seeded, timeout=30, interval=0.5)
    assert body, api.get(url).get_json()
    assert "trusted-anyway" not in api.get(url).get_data(as_text=True)
    assert body["offsets_missing"] is None
    ((entry,),) = [body["offsets"]["offsets"]]
    assert entry["partition"] == {"server": f"rosetta_{s.pipeline_id}"}
    ((current,),) = s.sql("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint")
    assert 0 < entry["offset"]["lsn"] <= current
    assert body["config"]["slot.name"] == s.slot
    assert body["config"]["snapshot.mode"] == "no_data"


class Writer(threading.Thread):
    """Write the source without pause until told to stop: inserts, updates and deletes of
    `items`, inserts into the keyless `history`, each commit its own."""

    def __init__(self, cluster: Cluster, database: str) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.database = database
        self.stop = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with closing(self.cluster.connect(self.database)) as conn, conn.cursor() as cur:
                next_id = 1_000_000
                while not self.stop.is_set():
                    cur.execute(
                        "INSERT INTO items VALUES (%s, 'written', 1); "
                        "INSERT INTO history VALUES (%s, 'written'); "
                        "UPDATE items SET note = 'updated ' || %s WHERE id = %s; "
                        "DELETE FROM items WHERE id = %s",
                        (next_id, next_id, next_id, next_id % 10_000, (next_id * 7) % 10_000),
                    )
                    next_id += 1
                    self.commits += 1
                    sleep(0.005)
        except BaseException as exc:  # said by the test
            self.error = exc


def test_the_first_copy_is_exact_while_the_source_is_written(
    app, engine, engine_cluster, snowflake
):
    """START while the source is written without pause: the first copy is taken in bulk and
    what was written before, during and after it arrives exactly once: the keyed table is
    equal, and the keyless table's history holds each source row once, none missing."""
    s = Setup(
        app,
        engine_cluster,
        snowflake,
        ITEMS
        + [
            "CREATE TABLE history (id bigint, note text)",
            "ALTER TABLE history REPLICA IDENTITY FULL",
            "INSERT INTO history SELECT g, 'before' FROM generate_series(1, 20000) g",
        ],
        snowflake.host_setting,
    )
    writer = Writer(engine_cluster, s.database)
    writer.start()
    try:
        assert wait_for(lambda: writer.commits > 20, timeout=10)
        s.set_status("START")
        s.wait_state("streaming")
        written = writer.commits
        assert wait_for(lambda: writer.commits > written + 50, timeout=30)
    finally:
        writer.stop.set()
        writer.join()
    assert writer.error is None, writer.error
    s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
    s.wait_equal(
        "SELECT id, note FROM history ORDER BY id",
        "SELECT ID, NOTE FROM HISTORY WHERE _ROSETTA_OP IN ('r', 'c') ORDER BY ID, NOTE",
    )
    assert "Initial copy of public.items: " in engine.output()  # in bulk, not by Debezium


def test_pause_during_the_first_copy_stops_it_and_leaves_nothing_behind(
    app, engine, engine_cluster, snowflake
):
    """PAUSE while the first copy waits on the source (a session holds a table's lock, and
    with it a transaction the copy's snapshot waits for): the copy is cancelled at once, its
    connections and temporary slot are gone, and the next START copies the table whole."""
    s = Setup(app, engine_cluster, snowflake, ITEMS, snowflake.host_setting)
    copying = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rosetta-engine-copy' "
        "AND datname = current_database() AND wait_event_type = 'Lock'"
    )
    left = (
        "SELECT (SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = 'rosetta-engine-copy'), "
        "(SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'rosetta_copy_%')"
    )
    with closing(engine_cluster.connect(s.database)) as locker, locker.cursor() as cur:
        cur.execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        s.set_status("START")
        assert wait_for(lambda: s.sql(copying) == [(1,)], timeout=60)
        assert s.run().state == "snapshotting"
        s.set_status("PAUSE")
        try:
            s.wait_state("paused", timeout=15)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{engine.output()[-5000:]}") from None
        assert wait_for(lambda: s.sql(left) == [(0, 0)], timeout=10), s.sql(left)
        cur.execute("ROLLBACK")
    s.set_status("START")
    s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)


def test_a_type_the_bulk_copy_cannot_write_is_left_to_debeziums_snapshot(
    app, engine, engine_cluster, snowflake
):
    """A table with a column type the bulk copy does not write (inet): Debezium's own
    snapshot copies the tables, and the engine's log says why."""
    s = Setup(
        app,
        engine_cluster,
        snowflake,
        [
            "CREATE TABLE hosts (id int PRIMARY KEY, address inet)",
            "INSERT INTO hosts SELECT g, '10.0.0.1'::inet + g FROM generate_series(1, 200) g",
        ],
        snowflake.host_setting,
    )
    s.set_status("START")
    s.wait_equal(
        "SELECT id, host(address) FROM hosts ORDER BY id",
        "SELECT ID, ADDRESS FROM HOSTS ORDER BY ID",
    )
    assert "Debezium's snapshot copies the tables: public.hosts column address is inet" in (
        engine.output()
    )


def test_pause_drains_and_start_brings_what_changed_meanwhile(
    app, engine, engine_cluster, snowflake
):
    """PAUSE stops the engine (the slot is left inactive, as psql shows) and keeps the slot;
    changes made while paused all arrive after START."""
    s = Setup(app, engine_cluster, snowflake, ITEMS[:1], snowflake.host_setting)
    s.sql("INSERT INTO items SELECT g, 'n', 1 FROM generate_series(1, 100) g")
    s.set_status("START")
    s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
    # Past the first copy, once an offset is committed: what follows is streamed.
    assert wait_for(s.offsets_committed, timeout=30)
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
    assert s.slot_confirmed()[0]  # streamed, not copied again: Debezium holds the slot


def test_destination_down_then_back_is_caught_up_with_nothing_lost(
    app, engine, engine_cluster, snowflake
):
    """The destination cut off for 60 s: the pipeline says it is retrying and why, the slot
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
        sleep(60)  # the outage lasts 60 s: a duration, not a wait for an event
        assert s.snowflake_rows("SELECT count(*) FROM ITEMS") == [(50,)]
        proxy.restore()
        s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION, timeout=60)
        s.wait_state("streaming")
    finally:
        proxy.close()
    destination_host(app, s.destination_id, snowflake.host_setting)


def test_a_connection_cut_as_the_stream_starts_is_replaced_within_seconds(
    app, engine, engine_cluster, snowflake
):
    """The source's connection is cut as Debezium asks it for the stream (START_REPLICATION),
    as a source restarting at that moment cuts it: the engine streams again on new
    connections within seconds, not after Debezium has retried on the dead one for minutes."""
    proxy = Proxy(engine_cluster.port, cut_at=b"START_REPLICATION")
    try:
        s = Setup(app, engine_cluster, snowflake, ITEMS[:1], snowflake.host_setting, proxy.port)
        s.sql("INSERT INTO items SELECT g, 'copied', g FROM generate_series(1, 50) g")
        s.set_status("START")
        s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION, timeout=90)  # the first copy
        assert wait_for(lambda: proxy.cuts == 1, timeout=60, interval=0.25)
        s.sql("INSERT INTO items SELECT g, 'streamed', g FROM generate_series(51, 150) g")
        s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION, timeout=45, engine=engine)
        s.wait_state("streaming", timeout=30)
    finally:
        proxy.close()


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


def test_debeziums_log_lines_come_out_as_rosettas_json_without_secrets(
    app, engine, engine_cluster, snowflake
):
    """The engine runs with LOG_FORMAT=json: every line it writes is one JSON object, and
    Debezium's lines are among them under their Java logger's name, its configuration cut to
    a mention. A source password that Debezium writes in clear (here it is also the role's
    name) is in none of them. When the source ends Debezium's replication connection, its
    error comes as one line with the Java stack trace."""
    from rosetta_web.extensions import db
    from rosetta_web.models import Source

    earlier = len(engine.output().splitlines())  # the shared engine's lines of other tests
    s = Setup(app, engine_cluster, snowflake, ITEMS[:1], snowflake.host_setting)
    secret = "s3cret_role_password_91"
    s.sql(
        f"CREATE ROLE {secret} LOGIN REPLICATION PASSWORD '{secret}'",
        # The heartbeat table, made ready by a superuser as its readiness check says.
        "CREATE TABLE rosetta_heartbeat (slot_name text PRIMARY KEY, beat_at timestamptz NOT NULL)",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {secret}",
        f"GRANT INSERT, UPDATE ON rosetta_heartbeat TO {secret}",
        "INSERT INTO items VALUES (1, 'one', 1)",
    )
    with app.app_context():
        source = db.session.get(Source, s.source_id)
        source.pg_username = source.pg_password = secret
        db.session.commit()
    s.set_status("START")
    s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
    assert wait_for(lambda: s.slot_confirmed()[0], timeout=30)  # Debezium reads the slot
    s.sql(
        f"SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
        f"WHERE slot_name = '{s.slot}'"
    )
    debezium = "rosetta_web.engine.java.io.debezium."

    def records() -> list[dict]:
        lines = engine.output().splitlines()
        for line in lines:
            try:
                json.loads(line)
            except ValueError:
                raise AssertionError(f"not a JSON line: {line!r}") from None
        return [json.loads(line) for line in lines]

    def failure() -> dict | None:
        return next(
            (
                r
                for r in records()[earlier:]
                # Another of Debezium's classes may log the ended stream first (the keepalive).
                if r["level"] == "ERROR"
                and r["logger"] == debezium + "pipeline.ErrorHandler"
                and "exc_info" in r
            ),
            None,
        )

    error = wait_for(failure, timeout=30, interval=0.25)
    assert error, engine.output()[-4000:]
    assert error["exc_info"].startswith("org.postgresql.util.PSQLException: "), error
    # The Java stack comes with it, line by line. Its frames depend on where the terminated
    # stream was read (readFromCopy, or the replication stream found closed).
    assert "\n\tat org.postgresql.core.v3." in error["exc_info"], error
    said = {(r["logger"], r["level"], r["message"]) for r in records()}
    task = debezium + "connector.postgresql.PostgresConnectorTask"
    assert any(
        logger == task and level == "INFO" and message.startswith("user '********' connected ")
        for logger, level, message in said
    ), sorted(said)
    assert (
        debezium + "connector.common.BaseSourceTask",
        "INFO",
        "Starting PostgresConnectorTask with (configuration)",
    ) in said
    output = engine.output()
    assert secret not in output
    # Streaming after a first copy in bulk: no warning at every message (log4j2.properties).
    assert "Context is null" not in output
    assert "password=" not in output.replace("password=********", "")


EVERY_TYPE = [
    "CREATE TYPE mood AS ENUM ('sad', 'happy', 'ünïcode')",
    """CREATE TABLE every_type (id int PRIMARY KEY, i2 smallint, i4 integer, i8 bigint,
       n numeric(12,4), nwide numeric(50,10), nfree numeric, r real, d double precision,
       b boolean, t text, vc varchar(20), ch char(4), u uuid, dt date, tm time, ts timestamp,
       tz timestamptz, iv interval, by bytea, j json, jb jsonb, ta text[], ia int[], m mood)""",
]
# Extremes, unicode, empties, NULLs, and the values Snowflake cannot hold as they are.
EVERY_TYPE_ROWS = """INSERT INTO every_type VALUES
 ({0}1, 32767, 2147483647, 9223372036854775807, 99999999.9999,
  1234567890123456789012345678901234567890.0123456789, 3.14159265358979323846264338327950288,
  1.5, 1.7976931348623157e308, true, 'héllo ✓ 日本', 'ab', 'xy',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '23:59:59.999999',
  '2024-02-29 12:34:56.123456', '2024-02-29 12:34:56.123456+05:30',
  '1 year 2 mons 3 days 04:05:06.5', '\\xdeadbeef00', '{{"a": [1, "x"], "u": "ü"}}',
  '{{"b": {{"c": null}}}}', '{{a,"b c",ü}}', '{{1,-2,3}}', 'ünïcode'),
 ({0}2, -32768, -2147483648, -9223372036854775808, -99999999.9999,
  -0.0000000001, 'NaN', -0.25, -1e-300, false, '', '', '', '00000000-0000-0000-0000-000000000000',
  '0001-01-01', '00:00:00', '1970-01-01 00:00:00', '1970-01-01 00:00:00+00', '-1 days',
  '\\x', '[]', '{{}}', '{{}}', '{{}}', 'sad'),
 ({0}3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 ({0}4, 0, 0, 0, 'NaN', NULL, 'Infinity', 'NaN', '-Infinity', NULL, NULL, NULL, NULL, NULL,
  'infinity', NULL, '-infinity', 'infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL)
"""
PG_EVERY_TYPE = """SELECT id, i2, i4, i8, n, nwide::text, nfree::text, r, d, b, t, vc, ch, u::text,
  dt::text, tm::text, ts::text, tz, iv::text, encode(by, 'hex'), j::text, jb::text, ta, ia,
  m::text FROM every_type ORDER BY id"""
SF_EVERY_TYPE = """SELECT ID, I2, I4, I8, N, NWIDE, NFREE, R, D, B, T, VC, CH, U, DT, TM, TS, TZ,
  IV, "BY", J, JB, TA, IA, M FROM EVERY_TYPE ORDER BY ID"""
ISO_INTERVAL = re.compile(
    r"P(?:(-?\d+)Y)?(?:(-?\d+)M)?(?:(-?\d+)W)?(?:(-?\d+)D)?"
    r"(?:T(?:(-?\d+)H)?(?:(-?\d+)M)?(?:(-?[\d.]+)S)?)?"
)


def _interval(text: str | None) -> tuple[float, ...] | None:
    """Read an ISO 8601 interval into its parts (years … seconds)."""
    if text is None:
        return None
    match = ISO_INTERVAL.fullmatch(text)
    assert match is not None, text
    return tuple(float(part or 0) for part in match.groups())


def _expected(pg: tuple) -> tuple:
    """What the type map promises at the destination for one row as psql reads it."""
    (id_, i2, i4, i8, n, nwide, nfree, r, d, b, t, vc, ch, u, dt, tm, ts, tz, iv) = pg[:19]
    by, j, jb, ta, ia, m = pg[19:]
    n = None if n is not None and not n.is_finite() else n  # NaN in NUMBER(12,4): NULL

    def when(text: str | None, kind: type) -> object:
        if text is None or text.endswith("infinity"):
            return None  # ±infinity: NULL
        if kind is date:
            return date.fromisoformat(text)
        if kind is time:
            return time.fromisoformat(text)
        return datetime.fromisoformat(text)

    return (
        id_, i2, i4, i8, n, nwide, nfree, r, d, b, t, vc, ch, u,
        when(dt, date), when(tm, time), when(ts, datetime),
        tz.astimezone(UTC) if tz is not None and tz.year < 9999 else None,
        iv, by, json.loads(j) if j is not None else None,
        json.loads(jb) if jb is not None else None, ta, ia, m,
    )  # fmt: skip


def _read(sf: tuple) -> tuple:
    """Read a destination row into the same shapes."""
    values = list(sf)
    tz = values[17]
    if tz is not None:
        values[17] = (tz if tz.tzinfo else tz.replace(tzinfo=UTC)).astimezone(UTC)
    values[19] = bytes(values[19]).hex() if values[19] is not None else None
    for i in (20, 21, 22, 23):
        values[i] = json.loads(values[i]) if values[i] is not None else None
    return tuple(values)


def test_every_mapped_type_arrives_as_psql_reads_it(app, engine, engine_cluster, snowflake):
    """One table with every mapped type, with extremes, unicode, empties, NULLs, NaN and
    ±infinity: copied and streamed rows at the destination hold what psql reads, by the
    README's type map (NaN in a NUMBER and ±infinity dates and times as NULL), and a copied
    row is exactly its streamed twin."""
    s = Setup(app, engine_cluster, snowflake, EVERY_TYPE, snowflake.host_setting)
    s.sql("SET intervalstyle = iso_8601", EVERY_TYPE_ROWS.format(""))
    s.set_status("START")
    s.wait_equal("SELECT count(*) FROM every_type", "SELECT count(*) FROM EVERY_TYPE")
    s.wait_state("streaming")
    s.sql(EVERY_TYPE_ROWS.format("10"))  # ids 101…104, streamed
    s.wait_equal("SELECT count(*) FROM every_type", "SELECT count(*) FROM EVERY_TYPE")
    with closing(engine_cluster.connect(s.database)) as conn, conn.cursor() as cur:
        cur.execute("SET intervalstyle = iso_8601")
        cur.execute(PG_EVERY_TYPE)
        source = cur.fetchall()
    destination = s.snowflake_rows(SF_EVERY_TYPE)
    assert len(source) == len(destination) == 8
    for pg, sf in zip(source, destination, strict=True):
        want, got = _expected(pg), _read(sf)
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            if i == 18:
                a, b = _interval(a), _interval(b)
            if i in (14, 15, 16, 17) and a is None:
                continue  # fakesnow reads a NULL timestamp back as 1970: checked below
            if isinstance(a, float) and math.isnan(a):
                assert isinstance(b, float) and math.isnan(b), f"row {pg[0]} column {i}: {b!r}"
                continue
            assert a == b, f"row {pg[0]} column {i}: psql {a!r}, Snowflake {b!r}"
    # The first copy (in bulk, by PostgreSQL) wrote each value exactly as the stream did.
    copied, streamed = destination[:4], destination[4:]
    for first, later in zip(copied, streamed, strict=True):
        assert [repr(v) for v in first[1:]] == [repr(v) for v in later[1:]], first[0]
    nulls = s.snowflake_rows(
        "SELECT ID, DT IS NULL, TM IS NULL, TS IS NULL, TZ IS NULL FROM EVERY_TYPE ORDER BY ID"
    )
    assert [row[1:] for row in nulls if row[0] % 100 in (3, 4)] == [
        (True, True, True, True),  # NULL
        (True, True, True, True),  # infinity, NULL time, -infinity, infinity
    ] * 2


def test_unchanged_toast_keeps_its_value_and_schema_changes_follow(
    app, engine, engine_cluster, snowflake
):
    """A TOASTed column left unchanged by an update keeps the stored value (also when the
    insert and the update land in one batch); an added column is added and filled; a dropped
    column stays, NULL in new rows; TRUNCATE empties the destination table."""
    s = Setup(
        app,
        engine_cluster,
        snowflake,
        [
            "CREATE TABLE docs (id int PRIMARY KEY, small int, body text)",
            "ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL",  # stored out of line
            "INSERT INTO docs SELECT g, 0, repeat(md5(g::text), 400) FROM generate_series(1, 5) g",
        ],
        snowflake.host_setting,
    )
    docs = "SELECT id, small, body FROM docs ORDER BY id"
    docs_destination = "SELECT ID, SMALL, BODY FROM DOCS ORDER BY ID"
    s.set_status("START")
    s.wait_equal(docs, docs_destination)
    s.wait_state("streaming")
    s.sql(
        "UPDATE docs SET small = 1 WHERE id <= 3",
        "INSERT INTO docs VALUES (6, 0, repeat('new', 3000))",
        "UPDATE docs SET small = 2 WHERE id = 6",
    )
    s.wait_equal(docs, docs_destination)
    s.sql(
        "ALTER TABLE docs ADD COLUMN extra int",
        "UPDATE docs SET extra = id * 10 WHERE id <= 2",
        "INSERT INTO docs VALUES (7, 7, 'seven', 70)",
    )
    s.wait_equal(
        "SELECT id, small, extra FROM docs ORDER BY id",
        "SELECT ID, SMALL, EXTRA FROM DOCS ORDER BY ID",
    )
    s.sql("ALTER TABLE docs DROP COLUMN small", "INSERT INTO docs VALUES (8, 'eight', 80)")
    s.wait_equal("SELECT id, extra FROM docs ORDER BY id", "SELECT ID, EXTRA FROM DOCS ORDER BY ID")
    assert s.snowflake_rows("SELECT SMALL FROM DOCS WHERE ID = 8") == [(None,)]
    assert s.snowflake_rows("SELECT SMALL FROM DOCS WHERE ID = 7") == [(7,)]
    s.sql("TRUNCATE docs", "INSERT INTO docs VALUES (9, 'after the truncate', 90)")
    s.wait_equal("SELECT id, body FROM docs ORDER BY id", "SELECT ID, BODY FROM DOCS ORDER BY ID")


def test_refresh_repairs_rows_changed_by_hand_at_the_destination(
    app, engine, engine_cluster, snowflake
):
    """REFRESH of a table whose destination rows were deleted, changed and added by hand:
    the table is equal to the source again, streaming went on meanwhile, and the status goes
    back to START by itself."""

    s = Setup(app, engine_cluster, snowflake, ITEMS[:1], snowflake.host_setting)
    s.sql("INSERT INTO items SELECT g, 'n ' || g, g FROM generate_series(1, 300) g")
    s.set_status("START")
    s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
    s.wait_state("streaming")
    s.snowflake_rows("DELETE FROM ITEMS WHERE ID <= 20")
    s.snowflake_rows("UPDATE ITEMS SET NOTE = 'wrong' WHERE ID BETWEEN 100 AND 110")
    s.snowflake_rows("INSERT INTO ITEMS (ID, NOTE, AMOUNT) VALUES (9001, 'only here', 1)")
    assert s.snowflake_rows("SELECT count(*) FROM ITEMS") == [(281,)]
    s.set_status("REFRESH")
    s.sql("UPDATE items SET note = 'during the refresh' WHERE id = 200")
    try:
        s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION, timeout=90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{engine.output()[-4000:]}") from None

    assert wait_for(lambda: s.status() == "START", timeout=60, interval=0.5), engine.output()[
        -4000:
    ]
    s.wait_state("streaming")


def test_refresh_of_every_table_leaves_a_keyless_tables_history_alone(
    app, engine, engine_cluster, snowflake
):
    """REFRESH of every table, beside items a table without a primary key (REPLICA IDENTITY
    FULL): items is repaired, the keyless table's append-only history keeps exactly the rows
    it had, the status goes back to START, and both tables go on streaming. No incremental
    snapshot of the keyless table is asked for: Debezium would skip it, warning so."""
    s = Setup(
        app,
        engine_cluster,
        snowflake,
        [ITEMS[0], "CREATE TABLE events (note text)", "ALTER TABLE events REPLICA IDENTITY FULL"],
        snowflake.host_setting,
    )
    s.sql(
        "INSERT INTO items SELECT g, 'n ' || g, g FROM generate_series(1, 100) g",
        "INSERT INTO events VALUES ('first'), ('second')",
    )
    history = "SELECT NOTE, _ROSETTA_OP FROM EVENTS ORDER BY NOTE"
    s.set_status("START")
    s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
    s.wait_equal("SELECT note, 'r' FROM events ORDER BY note", history)
    s.wait_state("streaming")
    s.snowflake_rows("DELETE FROM ITEMS WHERE ID <= 10")
    s.set_status("REFRESH")
    try:
        s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION, timeout=90)
        assert wait_for(lambda: s.status() == "START", timeout=60, interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{engine.output()[-4000:]}") from None
    assert s.snowflake_rows(history) == [("first", "r"), ("second", "r")]
    assert "Incremental snapshot for table 'public.events' skipped" not in engine.output()
    s.sql("INSERT INTO events VALUES ('third')", "INSERT INTO items VALUES (101, 'new', 1)")
    s.wait_equal(
        "SELECT * FROM (VALUES ('first', 'r'), ('second', 'r'), ('third', 'c')) v ORDER BY 1",
        history,
    )
    s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
    assert s.run().state == "streaming"


def _verified(api, pipeline_id: int, engine: Engine) -> dict:
    """Ask for a Verify through the API and wait for its result."""
    url = f"/api/v1/pipelines/{pipeline_id}/verify"
    asked = api.post(url)
    assert asked.status_code == 202, asked.get_json()
    done = wait_for(
        lambda: (body := api.get(url).get_json())["state"] != "running" and body,
        timeout=150,
        interval=0.5,
    )
    assert done, f"{api.get(url).get_json()}\n{engine.output()[-4000:]}"
    assert done["id"] == asked.get_json()["id"] and done["state"] == "done", done
    return done


def test_verify_names_a_row_changed_by_hand_and_refresh_of_its_table_makes_it_pass(
    app, api, runner, engine, engine_cluster, snowflake
):
    """A value changed by hand at the destination, while other rows change all along at the
    source: Verify, in the engine process, names that key and column alone (the changes in
    flight are not taken for differences), with the counts psql gives; REFRESH of that table,
    as the page offers it, then makes `flask rosetta verify` pass."""
    s = Setup(
        app,
        engine_cluster,
        snowflake,
        [ITEMS[0], "CREATE TABLE tags (id int PRIMARY KEY, name text)"],
        snowflake.host_setting,
    )
    s.sql(
        "INSERT INTO items SELECT g, 'n ' || g, g FROM generate_series(1, 300) g",
        "INSERT INTO tags SELECT g, 't' || g FROM generate_series(1, 20) g",
    )
    s.set_status("START")
    s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
    s.wait_state("streaming")
    s.snowflake_rows("UPDATE ITEMS SET NOTE = 'by hand' WHERE ID = 42")
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            s.sql(f"UPDATE items SET amount = amount + 1 WHERE id = {100 + i % 50}")
            i += 1
            stop.wait(0.05)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        result = _verified(api, s.pipeline_id, engine)
    finally:
        stop.set()
        writer.join()

    tables = {t["table"]: t for t in result["tables"]}
    assert result["ok"] is False
    items = tables["public.items"]
    assert items["differing"] == [
        {"key": {"id": 42}, "columns": ["note"], "problem": "values differ"}
    ], items
    assert items["source_rows"] == s.sql("SELECT count(*) FROM items")[0][0] == 300
    assert items["destination_rows"] == 300 and items["sampled"] == 300
    assert tables["public.tags"]["ok"] and tables["public.tags"]["sampled"] == 20

    refreshed = api.post(
        f"/api/v1/pipelines/{s.pipeline_id}/refresh", json={"tables": ["public.items"]}
    )
    assert refreshed.status_code == 200, refreshed.get_json()
    assert wait_for(lambda: s.status() == "START", timeout=90, interval=0.5), engine.output()[
        -4000:
    ]
    with app.app_context():
        from rosetta_web.extensions import db
        from rosetta_web.models import Pipeline

        name = db.session.get(Pipeline, s.pipeline_id).name
    answer = runner.invoke(args=["rosetta", "verify", name, "--wait", "150"])
    assert answer.exit_code == 0, answer.output + engine.output()[-3000:]
    assert "The destination is the same." in answer.output
    assert "public.items  300" in answer.output


def test_a_slot_created_again_behind_its_back_stops_the_pipeline_until_refresh(
    app, engine, engine_cluster, snowflake
):
    """The slot dropped and created again while the pipeline was paused (changes in between
    are gone from it): START fails saying so and offering REFRESH, rather than skip them;
    REFRESH copies every table again, removes what the source no longer has, and goes back
    to START."""
    s = Setup(app, engine_cluster, snowflake, ITEMS[:1], snowflake.host_setting)
    s.sql("INSERT INTO items SELECT g, 'n', g FROM generate_series(1, 100) g")
    s.set_status("START")
    s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
    # A pipeline that has streamed since its snapshot: Debezium 3.6 does not notice a slot
    # created again when its offset is still the snapshot's (see the closing note).
    s.sql("INSERT INTO items VALUES (101, 'streamed', 1)")
    s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
    s.set_status("PAUSE")
    s.wait_state("paused", timeout=30)
    s.sql(
        f"SELECT pg_drop_replication_slot('{s.slot}')",
        "DELETE FROM items WHERE id <= 10",
        "INSERT INTO items VALUES (500, 'while the slot was gone', 5)",
        f"SELECT pg_create_logical_replication_slot('{s.slot}', 'pgoutput')",
        "INSERT INTO items VALUES (501, 'after it came back', 5)",
    )
    s.set_status("START")
    run = s.wait_state("failed", timeout=60)
    assert run.reason is not None and "REFRESH copies every table again" in run.reason
    assert s.snowflake_rows("SELECT count(*) FROM ITEMS") == [(101,)]
    s.set_status("REFRESH")
    s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION, timeout=90)
    assert wait_for(lambda: s.status() == "START", timeout=60, interval=0.5), engine.output()[
        -4000:
    ]
    s.sql("INSERT INTO items VALUES (502, 'streamed again', 5)")
    s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)


def test_a_batch_that_can_never_load_fails_its_pipeline_alone(
    app, engine, engine_cluster, snowflake
):
    """A column's type changed at the source into one its Snowflake column cannot hold: that
    pipeline fails, naming the table and the column, and loads nothing more; another
    pipeline of the same engine goes on streaming."""
    broken = Setup(app, engine_cluster, snowflake, ITEMS[:1], snowflake.host_setting)
    healthy = Setup(app, engine_cluster, snowflake, ITEMS[:1], snowflake.host_setting)
    for s in (broken, healthy):
        s.sql("INSERT INTO items SELECT g, 'n', g FROM generate_series(1, 20) g")
        s.set_status("START")
    for s in (broken, healthy):
        s.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
    broken.sql(
        "ALTER TABLE items ALTER COLUMN amount TYPE text",
        "INSERT INTO items VALUES (21, 'text now', 'twenty-one')",
    )
    run = broken.wait_state("failed", timeout=60)
    assert run.reason is not None
    assert "public.items" in run.reason and "amount" in run.reason, run.reason
    healthy.sql("INSERT INTO items VALUES (21, 'still streaming', 21)")
    healthy.wait_equal(ALL_ITEMS, ALL_ITEMS_DESTINATION)
    assert healthy.run().state == "streaming"  # type: ignore[union-attr]
    assert broken.snowflake_rows("SELECT count(*) FROM ITEMS") == [(20,)]


def _lsn_text(lsn: int) -> str:
    """Write an LSN as PostgreSQL does: X/Y."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def test_progress_counts_what_was_done_and_the_lag_falls_to_zero(
    app, api, engine, engine_cluster, snowflake
):
    """After START and some inserts, updates and deletes, /progress shows per table what was
    done at the source (and the first copy's rows), lag_bytes as psql's pg_wal_lsn_diff gives
    it and lag_seconds 0 once the source is idle (the heartbeat says the engine caught up);
    /progress/history has the minute's rows, /metrics the series, /summary the state."""
    s = Setup(
        app,
        engine_cluster,
        snowflake,
        [
            "CREATE TABLE items (id bigint PRIMARY KEY, note text)",
            "INSERT INTO items SELECT g, 'first' FROM generate_series(1, 300) g",
        ],
        snowflake.host_setting,
    )
    s.set_status("START")
    s.wait_state("streaming")
    s.sql(
        "INSERT INTO items SELECT g, 'new' FROM generate_series(301, 350) g",
        "UPDATE items SET note = 'changed' WHERE id <= 20",
        "DELETE FROM items WHERE id BETWEEN 21 AND 30",
    )
    url = f"/api/v1/pipelines/{s.pipeline_id}/progress"

    def items() -> dict:
        tables = {row["table"]: row for row in api.get(url).get_json()["tables"]}
        return tables.get("public.items") or {}

    def counted() -> bool:
        found = items()
        return (found.get("inserted"), found.get("updated"), found.get("deleted")) == (50, 20, 10)

    assert wait_for(counted, timeout=60, interval=0.5), api.get(url).get_json()
    table = items()
    assert table["snapshot"] == "done" and table["snapshot_rows"] == 300
    assert table["last_change_at"] is not None

    def caught_up_as_psql_says() -> dict | bool:
        progress = api.get(url).get_json()
        if progress["lag_seconds"] != 0 or progress["lag_bytes"] is None:
            return False
        ((diff,),) = s.sql(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), "
            f"'{_lsn_text(progress['last_lsn'])}')::bigint"
        )
        # Equal once no WAL was written between the engine's read and psql's (the heartbeat
        # writes every 10 s: the wait ends in a quiet moment).
        return diff == progress["lag_bytes"] and progress

    progress = wait_for(caught_up_as_psql_says, timeout=60, interval=0.5)
    assert progress, api.get(url).get_json()
    assert progress["state"] == "streaming" and progress["owner"].endswith(engine.owner_suffix)
    assert 0 <= progress["lag_bytes"] < 1024 * 1024

    history = api.get(f"{url}/history?range=1h").get_json()
    assert history["bucket_seconds"] == 60 and history["times"]
    totals = [sum(history[op]) for op in ("inserted", "updated", "deleted")]
    assert totals == [50, 20, 10]
    # Each minute's highest lag: the one the changes above were loaded in is over 0.
    assert len(history["lag_seconds"]) == len(history["times"]) == len(history["lag_bytes"])
    assert history["lag_seconds"][-1] is not None and history["lag_bytes"][-1] is not None

    metrics = api.get("/metrics").get_data(as_text=True)
    with app.app_context():
        from rosetta_web.extensions import db
        from rosetta_web.models import Pipeline

        name = db.session.get(Pipeline, s.pipeline_id).name
    labels = f'pipeline="{name}",table="public.items"'
    assert f'rosetta_pipeline_rows_total{{op="inserted",{labels}}} 50.0' in metrics
    assert f'rosetta_pipeline_rows_total{{op="updated",{labels}}} 20.0' in metrics
    assert f'rosetta_pipeline_rows_total{{op="deleted",{labels}}} 10.0' in metrics
    assert f'rosetta_pipeline_state{{pipeline="{name}",state="streaming"}} 1.0' in metrics
    assert re.search(rf'rosetta_pipeline_lag_bytes{{pipeline="{name}"}} \d', metrics)
    assert re.search(rf'rosetta_pipeline_lag_seconds{{pipeline="{name}"}} ', metrics)
    summary = api.get("/api/v1/summary").get_json()
    assert summary["pipelines_by_state"]["streaming"] >= 1
    assert summary["worst_lag"] is not None
