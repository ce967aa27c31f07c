"""Time the engine: a snapshot against this machine's floor, Verify of what it copied, streaming
lag, the pipeline pages with 200 pipelines' 30 days of progress, and the peak memory of one
engine process running five pipelines.

Run by hand from the repository root (it starts its own PostgreSQL cluster, fakesnow and
`flask rosetta engine` processes); the defaults are the issue's figures, smaller ones make a
quick run:

    .venv/bin/python bench/engine.py
    .venv/bin/python bench/engine.py --rows 100000 --stream-seconds 20 --memory-rows 20000
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SECRET_KEY", "bench-secret-key")

from flask import Flask  # noqa: E402
from flask_migrate import upgrade  # noqa: E402

from rosetta_web import create_app  # noqa: E402
from rosetta_web.extensions import db  # noqa: E402
from rosetta_web.models import EngineProcess, Pipeline, PipelineVerification  # noqa: E402
from tests.apps import make_app  # noqa: E402
from tests.engine import ENGINE_SETTINGS, Engine, Setup  # noqa: E402
from tests.pg import Cluster, client_options, wait_for  # noqa: E402
from tests.snowflake import FakeSnowflake, fake_snowflake  # noqa: E402

NARROW = "CREATE TABLE items (id bigint PRIMARY KEY, v int, note text)"
FILL_NARROW = "INSERT INTO items SELECT g, g % 1000, 'n' || g FROM generate_series(1, {}) g"
EVENTS = (
    "CREATE TABLE events (id bigint PRIMARY KEY, v int, "
    "created timestamptz NOT NULL DEFAULT clock_timestamp())"
)
FILL_EVENTS = "INSERT INTO events (id, v) SELECT g, 0 FROM generate_series(1, {}) g"
GIB = 1024**3


def destination_count(setup: Setup, table: str) -> int:
    """Count the destination table's rows; 0 while it does not exist."""
    try:
        return int(setup.snowflake_rows(f"SELECT count(*) FROM {table}")[0][0])
    except Exception:  # the first batch has not created it yet
        return 0


def wait_engine_up(app: Flask, engine: Engine, timeout: float = 120) -> None:
    """Wait until the engine process has started its JVM and written its heartbeat."""

    def up() -> bool:
        if engine.process.poll() is not None:
            raise RuntimeError(f"the engine exited:\n{engine.output()[-3000:]}")
        with app.app_context():
            ids = db.session.scalars(db.select(EngineProcess.id)).all()
            db.session.remove()
        return any(i.endswith(engine.owner_suffix) for i in ids)

    if not wait_for(up, timeout=timeout, interval=0.25):
        raise RuntimeError(f"the engine did not start:\n{engine.output()[-3000:]}")


def peak_rss_bytes(pid: int) -> int:
    """Read a process's peak resident set (VmHWM) from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc status")


def pause_all(app: Flask) -> None:
    """Set every pipeline to PAUSE, so a later engine process takes none of them."""
    with app.app_context():
        db.session.execute(db.update(Pipeline).values(status="PAUSE"))
        db.session.commit()


# ---- 1b. Verify --------------------------------------------------------------------------------


def source_reads(setup: Setup) -> tuple[int, int, int, int]:
    """The source table's reads so far, as pg_stat_user_tables counts them: sequential scans,
    rows they read, index scans, rows fetched through the index."""
    (row,) = setup.sql(
        "SELECT seq_scan, seq_tup_read, coalesce(idx_scan, 0), coalesce(idx_tup_fetch, 0) "
        "FROM pg_stat_user_tables WHERE relname = 'items'"
    )
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def verify(app: Flask, setup: Setup, sample_keys: int) -> tuple[float, dict, tuple[int, ...]]:
    """Verify the streaming pipeline by the engine process, as the button asks for it; return
    the seconds it took, its result and what it read of the source table."""
    from rosetta_web.pipelines import verify as verifying

    before = source_reads(setup)
    with app.app_context():
        pipeline = db.session.get(Pipeline, setup.pipeline_id)
        assert pipeline is not None
        verification, _ = verifying.request_verify(pipeline, sample_keys)
        verification_id = verification.id
        db.session.remove()
    started = time.monotonic()

    def result() -> dict | None:
        with app.app_context():
            one = db.session.get(PipelineVerification, verification_id)
            shown = verifying.shown(one).to_dict() if one is not None else None
            db.session.remove()
        return shown if shown is not None and shown["state"] != "running" else None

    found = wait_for(result, timeout=1800, interval=0.5)
    elapsed = time.monotonic() - started
    if not found:
        raise RuntimeError(f"Verify gave no result after {elapsed:.0f} s")
    time.sleep(1.5)  # the verifier's sessions have ended: their counts are in the statistics
    after = source_reads(setup)
    return elapsed, found, tuple(b - a for a, b in zip(before, after, strict=True))


# ---- 4. The pipeline pages ---------------------------------------------------------------

# One row a minute per pipeline, for `days` days up to now: one table changed each minute,
# and the highest lag written in it.
FILL_MINUTES = """
INSERT INTO pipeline_minutes (pipeline_id, minute, table_name, inserted, updated, deleted)
SELECT p.id, date_trunc('minute', now()) - n * interval '1 minute',
       'public.table_' || (n % 5), 100 + n % 50, n % 20, n % 3
FROM pipelines p CROSS JOIN generate_series(0, :minutes - 1) AS n
WHERE p.id BETWEEN :first AND :last
"""
FILL_LAGS = """
INSERT INTO pipeline_lags (pipeline_id, minute, lag_seconds, lag_bytes)
SELECT p.id, date_trunc('minute', now()) - n * interval '1 minute',
       (n % 90)::float, (n % 90) * 65536
FROM pipelines p CROSS JOIN generate_series(0, :minutes - 1) AS n
WHERE p.id BETWEEN :first AND :last
"""


def median_ms(call, runs: int) -> float:  # type: ignore[no-untyped-def]
    """Run `call` `runs` times; return the median in milliseconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def pages(cluster: Cluster, count: int, days: int, runs: int) -> None:
    """Time the pipeline's page, its live part, /progress and its history, the list and the
    dashboard with `count` pipelines and `days` days of per-minute progress each."""
    from rosetta_web.auth import services
    from rosetta_web.models import PipelineRun, PipelineTable
    from rosetta_web.timeutil import utcnow
    from tests.factories import new_destination, new_source

    url = cluster.create_database("bench_pages")
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "LOG_LEVEL": "WARNING"})
    minutes = days * 24 * 60
    with app.app_context():
        upgrade()
        now = utcnow()
        db.session.add(EngineProcess(id="bench-host:1", started_at=now, seen_at=now))
        for i in range(count):
            pipeline = Pipeline(
                name=f"pipeline-{i:03d}",
                source=new_source(f"source-{i:03d}"),
                destination=new_destination(f"destination-{i:03d}"),
                status="START",
            )
            db.session.add(pipeline)
            db.session.flush()
            db.session.add(
                PipelineRun(
                    pipeline_id=pipeline.id,
                    state="streaming",
                    owner="bench-host:1",
                    since=now,
                    updated_at=now,
                    last_lsn=10**9,
                    lag_seconds=float(i % 400),
                    lag_bytes=i * 65536,
                )
            )
            db.session.add_all(
                PipelineTable(
                    pipeline_id=pipeline.id,
                    table_name=f"public.table_{t}",
                    snapshot="done",
                    snapshot_rows=10**6,
                    inserted=10**6,
                    updated=10**5,
                    deleted=10**3,
                    last_change_at=now,
                )
                for t in range(5)
            )
        db.session.commit()
        started = time.perf_counter()
        for first in range(1, count + 1, 20):
            batch = {"minutes": minutes, "first": first, "last": first + 19}
            db.session.execute(db.text(FILL_MINUTES), batch)
            db.session.execute(db.text(FILL_LAGS), batch)
            db.session.commit()
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE pipeline_minutes")
            conn.exec_driver_sql("VACUUM ANALYZE pipeline_lags")
        total = db.session.scalar(db.select(db.func.count()).select_from(PipelineRun))
        load_s = time.perf_counter() - started
        _, token = services.create_token(services.create_user("bench", "bench-password"), "b")
    print(
        f"4. pipeline pages: {total} pipelines, {days} days of one-minute progress each "
        f"({2 * count * minutes:,} rows), loaded in {load_s:.0f} s",
        flush=True,
    )
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    pipeline_id = count // 2
    history = f"/api/v1/pipelines/{pipeline_id}/progress/history?max_points=1000&range="
    calls = {
        "pipeline page": f"/pipelines/{pipeline_id}",
        "its live part (polled every 5 s)": f"/pipelines/{pipeline_id}/engine",
        "/progress": f"/api/v1/pipelines/{pipeline_id}/progress",
        "chart, 30 days": history + "30d",
        "chart, 24 hours": history + "24h",
        f"pipelines list ({count})": "/pipelines/",
        "dashboard": "/",
    }
    for label, path in calls.items():

        def call(path: str = path) -> None:
            response = client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.status_code)

        print(f"   {label}: median {median_ms(call, runs):.1f} ms (target <= 150 ms)", flush=True)


# ---- 1. Snapshot against the floor -----------------------------------------------------------


def snapshot(
    app: Flask, cluster: Cluster, snowflake: FakeSnowflake, rows: int
) -> tuple[float, Setup]:
    """START a pipeline on `rows` narrow rows; return the seconds until all are in Snowflake."""
    setup = Setup(
        app, cluster, snowflake, [NARROW, FILL_NARROW.format(rows)], snowflake.host_setting
    )
    setup.sql("VACUUM ANALYZE items")
    started = time.monotonic()
    setup.set_status("START")
    done = wait_for(
        lambda: destination_count(setup, "ITEMS") >= rows,
        timeout=max(600, rows / 500),
        interval=0.2,
    )
    elapsed = time.monotonic() - started
    if not done:
        raise RuntimeError(f"snapshot incomplete after {elapsed:.0f} s")
    return elapsed, setup


def floor(cluster: Cluster, snowflake: FakeSnowflake, setup: Setup, rows: int) -> dict[str, float]:
    """psql \\copy to CSV, gzip, PUT and COPY INTO a fresh fakesnow table; return each step's
    seconds."""
    folder = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    csv_path = folder / "items.csv"
    conn = snowflake.connect(network_timeout=60)
    try:
        with closing(conn.cursor()) as cur:
            cur.execute(f"USE SCHEMA ANALYTICS.{setup.schema}")
            cur.execute("CREATE TABLE FLOOR_ITEMS (ID NUMBER(19,0), V NUMBER(10,0), NOTE VARCHAR)")
            cur.execute("CREATE STAGE IF NOT EXISTS FLOOR_STAGE")
            steps: dict[str, float] = {}
            started = time.monotonic()
            subprocess.run(
                ["psql", *client_options(cluster, setup.database), "-X", "-q", "-c"]
                + [f"\\copy items TO '{csv_path}' CSV"],
                check=True,
                capture_output=True,
            )
            steps["psql \\copy"] = time.monotonic() - started
            mark = time.monotonic()
            with csv_path.open("rb") as src, gzip.open(f"{csv_path}.gz", "wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
            steps["gzip"] = time.monotonic() - mark
            mark = time.monotonic()
            cur.execute(f"PUT 'file://{csv_path}.gz' @FLOOR_STAGE/items/ AUTO_COMPRESS=FALSE")
            steps["PUT"] = time.monotonic() - mark
            mark = time.monotonic()
            cur.execute(
                "COPY INTO FLOOR_ITEMS FROM @FLOOR_STAGE/items/ "
                "FILE_FORMAT=(TYPE=CSV FIELD_OPTIONALLY_ENCLOSED_BY='\"')"
            )
            steps["COPY INTO"] = time.monotonic() - mark
            steps["total"] = time.monotonic() - started
            cur.execute("SELECT count(*) FROM FLOOR_ITEMS")
            loaded = int(cur.fetchone()[0])
    finally:
        conn.close()
        shutil.rmtree(folder, ignore_errors=True)
    if loaded != rows:
        raise RuntimeError(f"the floor loaded {loaded} rows, not {rows}")
    return steps


# ---- 2. Streaming lag ------------------------------------------------------------------------


class Writer(threading.Thread):
    """Commit `per_commit` changes every `interval_s` (inserts of increasing ids, a share of
    updates), recording each commit's last id and its time right after COMMIT."""

    def __init__(
        self, cluster: Cluster, database: str, first_id: int, rate: int, seconds: float
    ) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.database = database
        self.next_id = first_id
        self.interval_s = 0.05
        self.per_commit = max(1, round(rate * self.interval_s))
        self.seconds = seconds
        self.commits: list[tuple[int, int, float]] = []  # (first id, last id, committed at)
        self.changes = 0
        self.elapsed_s = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._write()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _write(self) -> None:
        updates = self.per_commit // 10
        inserts = self.per_commit - updates
        with closing(self.cluster.connect(self.database)) as conn, conn.cursor() as cur:
            conn.autocommit = False
            started = time.monotonic()
            tick = 0
            while time.monotonic() - started < self.seconds:
                first, last = self.next_id, self.next_id + inserts - 1
                cur.execute(
                    "INSERT INTO events (id, v) SELECT g, 1 FROM generate_series(%s, %s) g",
                    (first, last),
                )
                if updates and first > updates:
                    cur.execute(
                        "UPDATE events SET v = v + 1 WHERE id IN "
                        "(SELECT (random() * %s)::bigint + 1 FROM generate_series(1, %s))",
                        (first - 2, updates),
                    )
                    self.changes += cur.rowcount
                conn.commit()
                self.commits.append((first, last, time.monotonic()))
                self.changes += inserts
                self.next_id = last + 1
                tick += 1
                pause = started + tick * self.interval_s - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            self.elapsed_s = time.monotonic() - started


class Poller(threading.Thread):
    """Read the destination's max(ID) every `interval_s`, recording when each value is seen."""

    def __init__(self, snowflake: FakeSnowflake, schema: str, interval_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.snowflake = snowflake
        self.schema = schema
        self.interval_s = interval_s
        self.seen: list[tuple[float, int]] = []  # (when, max id)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = self.snowflake.connect(network_timeout=60)
            with closing(conn), closing(conn.cursor()) as cur:
                cur.execute(f"USE SCHEMA ANALYTICS.{self.schema}")
                while not self.stop.is_set():
                    cur.execute("SELECT max(ID) FROM EVENTS")
                    self.seen.append((time.monotonic(), int(cur.fetchone()[0] or 0)))
                    self.stop.wait(self.interval_s)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    @property
    def latest(self) -> int:
        return self.seen[-1][1] if self.seen else 0


def lags(commits: list[tuple[int, int, float]], seen: list[tuple[float, int]]) -> list[float]:
    """Return each inserted row's lag: first seen at the destination minus its commit time."""
    result: list[float] = []
    position = 0
    for first, last, committed_at in commits:
        while position < len(seen) and (
            seen[position][1] < last or seen[position][0] < committed_at
        ):
            position += 1
        if position == len(seen):
            break
        result += [seen[position][0] - committed_at] * (last - first + 1)
    return result


def percentile(values: list[float], share: float) -> float:
    """Return the nearest-rank percentile of `values`."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered)) - 1))]


def streaming(
    app: Flask, cluster: Cluster, snowflake: FakeSnowflake, rate: int, seconds: float
) -> tuple[Writer, list[float], int]:
    """Snapshot a small table, then write `rate` changes/s for `seconds`; return the writer,
    every inserted row's lag and how many rows were never seen."""
    initial = 1000
    setup = Setup(
        app, cluster, snowflake, [EVENTS, FILL_EVENTS.format(initial)], snowflake.host_setting
    )
    setup.set_status("START")
    if not wait_for(lambda: destination_count(setup, "EVENTS") >= initial, timeout=180):
        raise RuntimeError("the streaming table's snapshot did not arrive")
    setup.wait_state("streaming", timeout=120)
    poller = Poller(snowflake, setup.schema)
    writer = Writer(cluster, setup.database, initial + 1, rate, seconds)
    poller.start()
    writer.start()
    writer.join()
    if writer.error is not None:
        poller.stop.set()
        raise writer.error
    last_id = writer.next_id - 1
    wait_for(lambda: poller.latest >= last_id or poller.error, timeout=300, interval=0.25)
    poller.stop.set()
    poller.join()
    if poller.error is not None:
        raise poller.error
    found = lags(writer.commits, poller.seen)
    return writer, found, (last_id - initial) - len(found)


# ---- 3. Memory of five pipelines -------------------------------------------------------------


class OutOfMemory(Exception):
    """The engine's JVM ran out of heap: its pipelines fail and retry for ever."""


def healthy(engine: Engine) -> bool:
    """Raise OutOfMemory as soon as the engine's log says its JVM heap ran out."""
    failures = engine.output().count("java.lang.OutOfMemoryError")
    if failures:
        raise OutOfMemory(f"{failures} java.lang.OutOfMemoryError in the engine's log")
    return True


def five_pipelines(
    app: Flask,
    cluster: Cluster,
    snowflake: FakeSnowflake,
    engine: Engine,
    rows: int,
    stream_seconds: float,
    rate: int,
) -> int:
    """Run five pipelines in the (fresh) engine process, each snapshotting `rows` rows then
    streaming `rate` changes/s for `stream_seconds`; return how many changes were streamed."""
    setups = [
        Setup(
            app,
            cluster,
            snowflake,
            [NARROW, FILL_NARROW.format(rows), EVENTS],
            snowflake.host_setting,
        )
        for _ in range(5)
    ]
    wait_engine_up(app, engine)
    for setup in setups:
        setup.set_status("START")
    for setup in setups:
        if not wait_for(
            lambda s=setup: healthy(engine) and destination_count(s, "ITEMS") >= rows,
            timeout=max(300, rows * 5 / 1000),
            interval=1,
        ):
            raise RuntimeError(f"pipeline {setup.pipeline_id}: snapshot incomplete")
        setup.wait_state("streaming", timeout=120)
    writers = [Writer(cluster, setup.database, 1, rate, stream_seconds) for setup in setups]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
        if writer.error is not None:
            raise writer.error
    for setup, writer in zip(setups, writers, strict=True):
        if not wait_for(
            lambda s=setup, n=writer.next_id - 1: destination_count(s, "EVENTS") >= n,
            timeout=300,
            interval=1,
        ):
            raise RuntimeError(f"pipeline {setup.pipeline_id}: streaming incomplete")
    if engine.process.poll() is not None:
        raise RuntimeError(f"the engine exited:\n{engine.output()[-3000:]}")
    return sum(writer.changes for writer in writers)


# ---- The run ---------------------------------------------------------------------------------


def verdict(peak_bytes: int) -> str:
    """Say whether a peak RSS meets the 1 GB target."""
    return "met" if peak_bytes <= GIB else "MISSED"


def metadata_app(cluster: Cluster) -> tuple[str, Flask]:
    """Create the metadata database, build it with the migrations; return its URL and an app."""
    url = cluster.create_database("bench_meta")
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "LOG_LEVEL": "WARNING"})
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return url, make_app(url, LOG_LEVEL="WARNING")


def stop_engine(engine: Engine) -> None:
    """SIGTERM the engine (if it still runs); say so when it had to be killed."""
    try:
        engine.stop()
    except AssertionError as exc:
        print(f"warning: {str(exc)[:300]}", file=sys.stderr)


def run(
    args: argparse.Namespace,
    settings: dict[str, str],
    cluster: Cluster,
    snowflake: FakeSnowflake,
    engines: list[Engine],
) -> None:
    """Take the three measurements, each engine process started put in `engines`."""
    skip = set(args.skip or ())
    snowflake.execute("CREATE DATABASE IF NOT EXISTS ANALYTICS")
    database_url, app = metadata_app(cluster)
    engine = Engine(database_url, **settings)
    engines.append(engine)
    wait_engine_up(app, engine)

    if "snapshot" not in skip:
        print(f"1. snapshot of {args.rows:,} narrow rows ...", flush=True)
        engine_s, setup = snapshot(app, cluster, snowflake, args.rows)
        engine_rate = args.rows / engine_s
        print(f"   engine: {engine_s:.1f} s, {engine_rate:,.0f} rows/s", flush=True)
        for line in engine.output().splitlines():
            if "Initial copy of" in line:
                print("   engine says: " + line.split("Initial copy of", 1)[1].strip(), flush=True)
        pause_all(app)
        setup.wait_state("paused", "stopped", timeout=120)
        steps = floor(cluster, snowflake, setup, args.rows)
        floor_rate = args.rows / steps["total"]
        print(
            f"   floor (psql \\copy, gzip, PUT, COPY INTO): {steps['total']:.1f} s, "
            f"{floor_rate:,.0f} rows/s ("
            + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items() if k != "total")
            + ")"
        )
        print(f"   ratio engine/floor: {engine_rate / floor_rate:.2f} (target >= 0.5)")
        if "verify" not in skip:
            setup.set_status("START")
            setup.wait_state("streaming", timeout=300)
            print(f"1b. Verify of the {args.rows:,} rows, the pipeline streaming ...", flush=True)
            verify_s, found, reads = verify(app, setup, args.sample_keys)
            (table,) = found["tables"]
            print(
                f"   {verify_s:.1f} s: {found['state']}, ok={found['ok']}; "
                f"{table['source_rows']:,} rows at the source, {table['destination_rows']:,} at "
                f"the destination, {table['sampled']:,} keys compared, "
                f"{table['differing_keys']} differing"
            )
            print(
                f"   source table read: {reads[0]} sequential scans reading {reads[1]:,} rows "
                f"({reads[1] / args.rows:.2f} x the table: the count and the sampled pages), "
                f"{reads[2]:,} index probes fetching {reads[3]:,} rows",
                flush=True,
            )
            pause_all(app)
        print(
            f"   engine process peak RSS so far: "
            f"{peak_rss_bytes(engine.process.pid) / 1024**2:,.0f} MB",
            flush=True,
        )

    if "streaming" not in skip:
        print(
            f"2. streaming {args.rate:,} changes/s for {args.stream_seconds:.0f} s ...",
            flush=True,
        )
        writer, found, missing = streaming(app, cluster, snowflake, args.rate, args.stream_seconds)
        print(
            f"   achieved: {writer.changes:,} changes in {writer.elapsed_s:.1f} s = "
            f"{writer.changes / writer.elapsed_s:,.0f} changes/s "
            f"({len(writer.commits):,} commits of {writer.per_commit}, 10% updates)"
        )
        print(
            f"   lag, commit to queryable (polled every 0.25 s), {len(found):,} rows: "
            f"p50 {percentile(found, 0.5):.1f} s, p95 {percentile(found, 0.95):.1f} s, "
            f"max {max(found):.1f} s (target p95 <= 10 s); mean "
            f"{statistics.fmean(found):.1f} s; never seen: {missing}",
            flush=True,
        )
        pause_all(app)

    stop_engine(engine)
    if "pages" not in skip:
        pages(cluster, args.pages_pipelines, args.pages_days, args.runs)
    if "memory" not in skip:
        print(
            f"3. one engine process, 5 pipelines: {args.memory_rows:,} rows snapshot "
            f"each, then {args.memory_rate:,} changes/s each for "
            f"{args.memory_seconds:.0f} s ...",
            flush=True,
        )
        engine = Engine(database_url, **settings)
        engines.append(engine)
        started = time.monotonic()
        try:
            streamed = five_pipelines(
                app,
                cluster,
                snowflake,
                engine,
                args.memory_rows,
                args.memory_seconds,
                args.memory_rate,
            )
            outcome = f"done in {time.monotonic() - started:.0f} s ({streamed:,} changes streamed)"
        except OutOfMemory as exc:
            outcome = f"FAILED after {time.monotonic() - started:.0f} s: {exc}"
        peak = peak_rss_bytes(engine.process.pid)
        print(
            f"   {outcome}; peak RSS (VmHWM): {peak / 1024**2:,.0f} MB "
            f"(target <= 1 GB: {verdict(peak) if outcome.startswith('done') else 'no figure'}); "
            f"ENGINE_HEAP_MB={args.heap_mb}, ENGINE_BATCH_ROWS={args.batch_rows}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to snapshot")
    parser.add_argument("--rate", type=int, default=2000, help="changes/s while streaming")
    parser.add_argument("--stream-seconds", type=float, default=60)
    parser.add_argument("--memory-rows", type=int, default=100_000, help="rows per pipeline")
    parser.add_argument("--memory-rate", type=int, default=400, help="changes/s per pipeline")
    parser.add_argument("--memory-seconds", type=float, default=30)
    parser.add_argument("--batch-seconds", type=int, default=2, help="ENGINE_BATCH_SECONDS")
    parser.add_argument("--batch-rows", type=int, default=10000, help="ENGINE_BATCH_ROWS")
    parser.add_argument("--heap-mb", type=int, default=512, help="ENGINE_HEAP_MB")
    parser.add_argument("--sample-keys", type=int, default=1000, help="Verify's keys per table")
    parser.add_argument("--pages-pipelines", type=int, default=200)
    parser.add_argument("--pages-days", type=int, default=30, help="of per-minute progress")
    parser.add_argument("--runs", type=int, default=15, help="requests timed per page")
    parser.add_argument(
        "--skip", choices=("snapshot", "streaming", "memory", "verify", "pages"), action="append"
    )
    args = parser.parse_args()
    settings = {
        "ENGINE_BATCH_SECONDS": str(args.batch_seconds),
        "ENGINE_BATCH_ROWS": str(args.batch_rows),
        "ENGINE_HEAP_MB": str(args.heap_mb),
        "ENGINE_QUERY_TIMEOUT_SECONDS": "120",
    }
    used = {**ENGINE_SETTINGS, **settings}
    print("engine settings: " + ", ".join(f"{k}={v}" for k, v in used.items()), flush=True)
    print("load average at the start: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))

    cluster = Cluster("bench-engine").start()
    try:
        with fake_snowflake() as snowflake:
            engines: list[Engine] = []
            try:
                run(args, settings, cluster, snowflake, engines)
            finally:
                for engine in engines:
                    stop_engine(engine)
    finally:
        cluster.stop()
        print("load average at the end: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
