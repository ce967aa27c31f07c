"""Time the WAL history endpoint on 10 million samples against bucketed raw SQL; the dashboard.

The samples are loaded in SQL, then rolled up by the hour and the day as migration 0018 does
on upgrade (`rollups.backfill`); once the loading's writes have settled, a 30-day and an
all-history chart (read from the roll-ups) are timed in turn with one plain SQL statement
bucketing the same raw rows into as many points (a request, then the SQL, again and again),
and a round's upkeep of the roll-ups is timed. Then weigh a server with 500 slots
behind 123 sources: a source's page (median of several, its size, its queries, and the SQL its
slot tables need alone), with every slot drawn, its 24-hour history, /metrics and the
dashboard; with --before REV, the same requests served by the code of REV (git archive) on the
same database, in a process of its own. Run by hand from the repository root (it starts its
own PostgreSQL cluster; loading the samples takes a few minutes, --big-server-only leaves
them out):

    .venv/bin/python bench/history.py
    .venv/bin/python bench/history.py --big-server-only --before 744cdc2
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SECRET_KEY", "bench-secret-key")

from flask_migrate import upgrade  # noqa: E402

from rosetta_web import create_app  # noqa: E402
from rosetta_web.auth import services  # noqa: E402
from rosetta_web.extensions import db  # noqa: E402
from rosetta_web.models import Server, SlotMetric, Source, SourceState, WalMetric  # noqa: E402
from rosetta_web.monitor import rollups  # noqa: E402
from rosetta_web.sparkline import draw  # noqa: E402
from rosetta_web.timeutil import utcnow  # noqa: E402
from tests.clients import QueryCounter  # noqa: E402
from tests.factories import add_many_slots, new_source  # noqa: E402
from tests.pg import Cluster  # noqa: E402

# One sample a minute per source, ending now; the values wander like a busy server's would.
FILL = """
INSERT INTO wal_metrics (source_id, recorded_at, current_lsn, wal_position_bytes, size_bytes,
                         retained_bytes, slot_count, inactive_slot_count,
                         wal_rate_bytes_per_second)
SELECT s.id,
       date_trunc('minute', now()) - n * interval '1 minute',
       '0/0',
       (:samples - n)::bigint * 2000000 + s.id,
       1000000000 + (n % 1440) * 100000,
       50000000 + ((n::bigint * 7919 + s.id) % 10007) * 1000,
       1, 0,
       2000000 / 60.0
FROM sources s CROSS JOIN generate_series(0, :samples - 1) AS n
WHERE s.id BETWEEN :first AND :last
"""


# Each source on a server of its own (server id = source id), whose last sample is now.
SERVERS = """
INSERT INTO servers (id, system_identifier, address, last_sampled_at, created_at)
SELECT s.id, (7000000000000000000 + s.id)::text, 'db-' || s.id,
       date_trunc('minute', now()), now()
FROM sources s
"""

# Each sample's slots, as the monitor stores them: a row per slot of the server, the same time
# as the sample.
FILL_SLOTS = """
INSERT INTO slot_metrics (server_id, recorded_at, slot_name, plugin, slot_type,
                          database, active, retained_bytes, lag_bytes)
SELECT m.source_id, m.recorded_at, 'slot_' || k, 'pgoutput', 'logical', 'app', true,
       m.retained_bytes - k * 1000000, 0
FROM wal_metrics m CROSS JOIN generate_series(1, :slots) AS k
WHERE m.source_id BETWEEN :first AND :last
"""

# One server with many slots behind many sources (each a database of it: db_<id % sources>),
# sampled every 5 minutes for a day: its slots stored once a sample, not once per source
# (tests/factories.py's add_many_slots).
BIG_SERVER = """
INSERT INTO servers (id, system_identifier, address, last_sampled_at, created_at)
VALUES (:server, '7999999999999999999', 'big-db', :last, now());
UPDATE source_states SET server_id = :server WHERE source_id > :server - :sources - 1
                                               AND source_id < :server;
UPDATE sources SET pg_database = 'db_' || (id % :sources) WHERE id > :server - :sources - 1
                                                            AND id < :server;
INSERT INTO wal_metrics (source_id, recorded_at, current_lsn, wal_position_bytes, size_bytes,
                         retained_bytes, slot_count, inactive_slot_count,
                         wal_rate_bytes_per_second)
SELECT s.source_id, :last - n * interval '5 minutes', '0/0',
       (288 - n)::bigint * 10000000, 5000000000, 900000000, 4, 1, 30000
FROM source_states s CROSS JOIN generate_series(0, 287) AS n
WHERE s.server_id = :server;
"""

# The SQL the source page's slot tables and forecasts need, said to PostgreSQL directly: the
# floor under the page's own time for them.
PAGE_SQL = (
    """SELECT database IS NOT DISTINCT FROM %(db)s, count(*) FROM slot_metrics
       WHERE server_id = %(server)s AND recorded_at = %(last)s GROUP BY 1""",
    *(
        f"""SELECT * FROM slot_metrics
            WHERE server_id = %(server)s AND recorded_at = %(last)s AND {where}
            ORDER BY CASE wal_status WHEN 'lost' THEN 0 WHEN 'unreserved' THEN 1 ELSE 2 END,
                     retained_bytes DESC NULLS LAST, slot_name LIMIT 10"""
        for where in ("database = %(db)s", "database IS DISTINCT FROM %(db)s")
    ),
    """SELECT t.key, t.value FROM servers, json_each(servers.slot_trends) AS t
       WHERE servers.id = %(server)s AND (t.value ->> 'growth')::float8 > 0""",
)

# An earlier commit's code serving requests (--before): argv is its directory, the database
# URL and the token; for each path read from stdin it prints the milliseconds and the bytes.
BEFORE = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
os.environ.setdefault("SECRET_KEY", "bench-secret-key")
from rosetta_web import create_app
app = create_app({"SQLALCHEMY_DATABASE_URI": sys.argv[2], "LOG_LEVEL": "WARNING"})
client, headers = app.test_client(), {"Authorization": "Bearer " + sys.argv[3]}
for line in sys.stdin:
    started = time.perf_counter()
    response = client.get(line.strip(), headers=headers)
    took_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.status_code
    print(took_ms, len(response.get_data()), flush=True)
"""


def median_ms(call, runs: int) -> tuple[float, object]:
    """Run `call` `runs` times; return the median in milliseconds and the last result."""
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


# The baseline: one plain statement bucketing the raw rows of the range into `width`-second
# buckets (each bucket's last sample, its time, and every figure's min and max: what the chart
# draws), the source's WAL figures and its server's slots, one line each.
RAW_BUCKETED = """
SELECT floor(date_part('epoch', recorded_at) / %(width)s) AS bucket, max(recorded_at),
       (array_agg(size_bytes ORDER BY recorded_at DESC))[1], min(size_bytes), max(size_bytes),
       (array_agg(retained_bytes ORDER BY recorded_at DESC))[1], min(retained_bytes),
       max(retained_bytes),
       (array_agg(wal_rate_bytes_per_second ORDER BY recorded_at DESC))[1],
       min(wal_rate_bytes_per_second), max(wal_rate_bytes_per_second)
FROM wal_metrics WHERE source_id = %(source)s AND recorded_at >= %(start)s AND recorded_at < %(end)s
GROUP BY 1 ORDER BY 1;
SELECT slot_name, floor(date_part('epoch', recorded_at) / %(width)s) AS bucket, max(recorded_at),
       (array_agg(retained_bytes ORDER BY recorded_at DESC))[1], min(retained_bytes),
       max(retained_bytes)
FROM slot_metrics WHERE server_id = %(source)s AND recorded_at >= %(start)s
                    AND recorded_at < %(end)s
GROUP BY 1, 2 ORDER BY 1, 2
"""


def raw_bucketed(url: str, source_id: int, start: datetime, end: datetime, points: int):  # type: ignore[no-untyped-def]
    """Return a call that runs the baseline over [start, end) in at most `points` buckets
    through psycopg2 (no ORM, no Flask), on a connection of its own, and the rows it read."""
    connection = psycopg2.connect(
        make_url(url).set(drivername="postgresql").render_as_string(False)
    )
    connection.autocommit = True
    cursor = connection.cursor()
    cursor.execute("SET jit = off")  # as Rosetta's connections
    width = max(math.ceil((end - start).total_seconds() / points), 1)
    arguments = {"width": width, "source": source_id, "start": start, "end": end}

    def run() -> int:
        found = 0
        for statement in RAW_BUCKETED.split(";"):
            cursor.execute(statement, arguments)
            found += len(cursor.fetchall())
        return found

    return run, connection


def vacuumed(engine, tables: tuple[str, ...]) -> float:  # type: ignore[no-untyped-def]
    """VACUUM ANALYZE the tables until their pages are all-visible, as autovacuum leaves a
    table whose rows are old (an older snapshot still open, an autovacuum worker's say, keeps
    a VACUUM from marking the rows just built: then the charts' index-only scans read the
    table too); return the share of their pages that are, after 10 tries."""
    share = 0.0
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for _ in range(10):
            for table in tables:
                conn.exec_driver_sql(f"VACUUM ANALYZE {table}")
            pages, visible = conn.exec_driver_sql(
                "SELECT sum(relpages), sum(relallvisible) FROM pg_class WHERE relname = ANY(%s)",
                (list(tables),),
            ).one()
            share = visible / pages if pages else 1.0
            if share >= 0.99:
                break
            time.sleep(3)
    return share


def settle(engine, below: float = 1.0, most_s: float = 180) -> float:  # type: ignore[no-untyped-def]
    """Write out what loading left in memory (CHECKPOINT), then wait, at most `most_s`, for
    the 1-minute load average to fall below `below`: right after 30 million rows are loaded,
    the server's writers and the kernel are still at work, and the timings would measure
    them. Return the seconds waited."""
    started = time.monotonic()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("CHECKPOINT")
    while os.getloadavg()[0] >= below and time.monotonic() - started < most_s:
        time.sleep(5)
    return time.monotonic() - started


def load_average() -> str:
    """The 1, 5 and 15-minute load averages and the CPUs they share."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=100)
    parser.add_argument("--samples", type=int, default=100_000, help="one-minute samples each")
    parser.add_argument("--dashboard-sources", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=2, help="slot rows per sample")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--big-server-slots", type=int, default=500)
    parser.add_argument("--big-server-sources", type=int, default=123)
    parser.add_argument(
        "--big-server-only", action="store_true", help="leave out the 10 million samples"
    )
    parser.add_argument(
        "--before", metavar="REV", help="time the big server's requests with REV's code too"
    )
    args = parser.parse_args()
    print_load("at start")

    cluster = Cluster("bench-history").start()
    try:
        url = cluster.create_database("bench_history")
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "LOG_LEVEL": "WARNING"})
        with app.app_context():
            upgrade()
            db.session.add_all(new_source(f"source-{i:04d}") for i in range(args.dashboard_sources))
            db.session.commit()
            db.session.execute(db.text(SERVERS))
            db.session.commit()
            started = time.perf_counter()
            for first in range(1, 0 if args.big_server_only else args.sources + 1, 10):
                batch = {"first": first, "last": min(first + 9, args.sources)}
                db.session.execute(db.text(FILL), {"samples": args.samples, **batch})
                if args.slots:
                    db.session.execute(db.text(FILL_SLOTS), {"slots": args.slots, **batch})
                db.session.commit()
            total = db.session.scalar(db.select(db.func.count(WalMetric.id)))
            slot_rows = db.session.scalar(db.select(db.func.count(SlotMetric.id)))
            load_s = time.perf_counter() - started
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE wal_metrics")
                conn.exec_driver_sql("VACUUM ANALYZE slot_metrics")
            _, token = services.create_token(services.create_user("bench", "bench-password"), "b")
            _seed_dashboard(args.dashboard_sources)

        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        if args.big_server_only:
            big_server(app, client, headers, args, url, token)
            return
        print(
            f"wal_metrics: {total:,} rows ({args.sources} sources x {args.samples:,} one-minute "
            f"samples), slot_metrics: {slot_rows:,} rows ({args.slots} slots a sample), "
            f"loaded in {load_s:.0f} s"
        )
        with app.app_context():
            started = time.perf_counter()
            with db.engine.begin() as connection:
                built = rollups.backfill(connection)
            rollup_s = time.perf_counter() - started
            visible = vacuumed(db.engine, ("wal_rollups", "slot_rollups"))
        print(
            f"roll-ups built from them as migration 0018 does: {built.source_rows:,} source rows, "
            f"{built.slot_rows:,} slot rows (hourly and daily) in {rollup_s:.0f} s; "
            f"{visible:.0%} of their pages all-visible, as autovacuum leaves them"
        )
        source_id = args.sources // 2
        with app.app_context():
            oldest = db.session.scalar(
                db.select(db.func.min(WalMetric.recorded_at)).where(
                    WalMetric.source_id == source_id
                )
            )
        # As gunicorn's workers do once the app is loaded (gunicorn.conf.py).
        gc.freeze()
        with app.app_context():
            waited = settle(db.engine)
        print(
            f"load average before timing: {load_average()}, after a CHECKPOINT and {waited:.0f} s "
            "waiting for the loading's writes to settle"
        )
        for label, start in (("30 days", "30d"), ("all history", oldest.isoformat())):

            def endpoint(start: str = start) -> dict:
                response = client.get(
                    f"/api/v1/sources/{source_id}/wal-history",
                    query_string={"start": start, "max_points": 1000},
                    headers=headers,
                )
                assert response.status_code == 200, response.get_data(as_text=True)
                return response.get_json()

            body = endpoint()
            begins = datetime.fromisoformat(body["start"])
            ends = datetime.fromisoformat(body["end"])
            baseline, connection = raw_bucketed(url, source_id, begins, ends, 1000)
            try:
                # In turn, one of each, so that both meet the machine alike.
                fast, slow = [], []
                for _ in range(args.runs):
                    fast.append(median_ms(endpoint, 1)[0])
                    sql_run_ms, sql_rows = median_ms(baseline, 1)
                    slow.append(sql_run_ms)
            finally:
                connection.close()
            fast_ms, sql_ms = statistics.median(fast), statistics.median(slow)
            print(
                f"history, {label}: Rosetta median {fast_ms:.1f} ms for {len(body['times'])} "
                f"points ({body['bucket_seconds'] // 3600} h buckets from the roll-ups, "
                f"{len(body['slots'])} slot lines; the endpoint, JSON included); bucketed raw SQL "
                f"on the same rows: median {sql_ms:.1f} ms for {sql_rows:,} rows "
                f"(1,000 buckets of {math.ceil((ends - begins).total_seconds() / 1000)} s); "
                f"{sql_ms / fast_ms:.1f}x the SQL's speed; load average {load_average()}"
            )
        upkeep(app, args.dashboard_sources)

        def dashboard():  # noqa: ANN202
            response = client.get("/", headers=headers)
            assert response.status_code == 200
            return response

        dash_ms, page = median_ms(dashboard, args.runs)
        rows = page.get_data(as_text=True).count('data-label="Source"><a href="/sources/')
        print(
            f"dashboard, {args.dashboard_sources:,} sources ({rows:,} listed on its first page): "
            f"median {dash_ms:.1f} ms (target <= 150 ms)"
        )
        if args.big_server_slots:
            big_server(app, client, headers, args, url, token)
    finally:
        print_load("at the end")
        cluster.stop()


def upkeep(app, sources: int) -> None:  # type: ignore[no-untyped-def]
    """Time what a round adds to storing: its sources' and slots' roll-ups kept up (each
    source on a server of its own with two slots)."""
    times = []
    with app.app_context():
        for step in range(1, 6):
            moment = utcnow().replace(microsecond=0) + timedelta(seconds=step)
            db.session.execute(
                db.text(
                    "INSERT INTO wal_metrics (source_id, recorded_at, current_lsn, "
                    "wal_position_bytes, size_bytes, retained_bytes, slot_count, "
                    "inactive_slot_count) SELECT id, :at, '0/0', 0, 1, 1, 2, 0 FROM sources "
                    "WHERE id <= :sources"
                ),
                {"at": moment, "sources": sources},
            )
            db.session.execute(
                db.text(
                    "INSERT INTO slot_metrics (server_id, recorded_at, slot_name, slot_type, "
                    "active, retained_bytes) SELECT s.id, :at, 'slot_' || k, 'logical', true, 1 "
                    "FROM servers s CROSS JOIN generate_series(1, 2) AS k WHERE s.id <= :sources"
                ),
                {"at": moment, "sources": sources},
            )
            ids = list(range(1, sources + 1))
            started = time.perf_counter()
            rollups.add_round(moment, ids, ids)
            db.session.flush()
            times.append((time.perf_counter() - started) * 1000)
            db.session.rollback()
    print(
        f"roll-up upkeep in a round of {sources} sources and {2 * sources} slots: median "
        f"{statistics.median(times):.1f} ms (read back, then hourly and daily upserts)"
    )


def print_load(when: str) -> None:
    """Print the load average: other work on the machine slows every figure."""
    print(f"load average {when}: {load_average()}")


def big_server(app, client, headers: dict[str, str], args, url: str, token: str) -> None:  # type: ignore[no-untyped-def]
    """Weigh what one server with many slots behind many sources costs to show."""
    server = args.dashboard_sources + 1
    source_id = server - 1
    last = utcnow().replace(second=0, microsecond=0)
    with app.app_context():
        params = {"server": server, "sources": args.big_server_sources, "last": last}
        for statement in BIG_SERVER.split(";"):
            if statement.strip():
                db.session.execute(db.text(statement), params)
        samples = 288
        add_many_slots(
            server,
            args.big_server_slots,
            last,
            samples=samples,
            databases=args.big_server_sources,
        )
        # Each slot's trend, as the alert rules keep it on the server: the page's forecasts
        # read the growing ones (every seventh).
        latest = db.session.execute(
            db.select(SlotMetric.slot_name, SlotMetric.retained_bytes, SlotMetric.database).where(
                SlotMetric.server_id == server, SlotMetric.recorded_at == last
            )
        )
        trends = {
            name: {
                "fitted": None,
                "growing_since": None,
                "growth": 50 * 2**20 * (k + 1) if k % 7 == 0 else None,
                "window": 3600,
                "at": last.timestamp(),
                "series": last.timestamp() - samples * 300,
                "wal": 10**12,
                "flush": 10**12 - 10**6,
                "flush_since": last.timestamp(),
                "wal_at_flush": 10**12,
                "slot": {
                    "database": database,
                    "active": k % 5 != 0,
                    "inactive_since": None,
                    "retained_bytes": retained,
                    "lag_bytes": retained,
                    "wal_status": "reserved",
                    "safe_wal_size": None,
                },
            }
            for k, (name, retained, database) in enumerate(sorted(latest))
        }
        db.session.execute(db.update(Server).where(Server.id == server).values(slot_trends=trends))
        db.session.commit()
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
        wal_rows = db.session.scalar(
            db.select(db.func.count(WalMetric.id)).where(
                WalMetric.source_id.in_(
                    db.select(SourceState.source_id).where(SourceState.server_id == server)
                )
            )
        )
        slot_rows = db.session.scalar(
            db.select(db.func.count(SlotMetric.id)).where(SlotMetric.server_id == server)
        )
        database = db.session.get(Source, source_id).pg_database
    print(
        f"one server, {args.big_server_slots} slots behind {args.big_server_sources} sources, "
        f"a sample every 5 min for 24 h: {wal_rows:,} sample rows, {slot_rows:,} slot rows "
        f"({args.big_server_slots} a sample, once per server); source {source_id} is on "
        f"database {database}"
    )
    page = f"/sources/{source_id}"
    paths = {
        "source page": page,
        "source page, every slot (?slots=all)": f"{page}?slots=all",
        "24 h history (its chart's fetch)": f"/api/v1/sources/{source_id}/wal-history?start=24h",
        "/metrics": "/metrics",
        "dashboard": "/",
    }
    for label, path in paths.items():

        def get(path: str = path) -> object:
            response = client.get(path, headers=headers)
            assert response.status_code == 200, response.get_data(as_text=True)[:300]
            return response

        took_ms, response = median_ms(get, args.runs)
        body = response.get_data()  # type: ignore[attr-defined]
        extra = ""
        if path == page:
            with app.app_context():
                with QueryCounter(db.engine) as queries:
                    get()
            extra = f", {len(queries.statements)} queries"
        elif "wal-history" in path:
            data = json.loads(body)
            count = (data["other_slots"] or {}).get("count", 0)
            extra = f", {len(data['slots'])} slot lines + 1 for the other {count}"
        print(f"  {label}: {len(body) / 1024:,.0f} kB, median {took_ms:.1f} ms{extra}")
    with app.app_context():
        connection = db.engine.raw_connection()
        cursor = connection.cursor()
        values = {"server": server, "last": last, "db": database}

        def page_sql() -> None:
            for statement in PAGE_SQL:
                cursor.execute(statement, values)
                cursor.fetchall()

        sql_ms, _ = median_ms(page_sql, args.runs)
        connection.rollback()  # back to the pool with no transaction open
        connection.close()
    print(f"  the SQL of its slot tables and forecasts alone (psycopg2): median {sql_ms:.1f} ms")
    if args.before:
        # Only the source's own requests: /metrics and the dashboard are others' work.
        wanted = {
            label: path for label, path in paths.items() if path.startswith(("/sources", "/api"))
        }
        print(
            f"  before ({args.before}, the same database), each request interleaved with this "
            f"code's, {args.runs} runs each:"
        )
        for label, (then, now) in before(
            args.before, url, token, args.runs, wanted, client, headers
        ).items():
            (then_ms, then_size), (now_ms, now_size) = then, now
            print(
                f"    {label}: {then_size / 1024:,.0f} kB, median {then_ms:.1f} ms; "
                f"now {now_size / 1024:,.0f} kB, median {now_ms:.1f} ms "
                f"({then_ms / now_ms:.1f}x)"
            )


def before(  # type: ignore[no-untyped-def]
    rev: str, url: str, token: str, runs: int, paths: dict[str, str], client, headers
) -> dict[str, tuple[tuple[float, int], tuple[float, int]]]:
    """Time each request with the code of `rev` (git archive; on the same database, in a
    process of its own) and with this code, one after the other, so that whatever else the
    machine does weighs on both alike; return, by label, (median ms, bytes) then and now."""
    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "archive", rev], cwd=root, capture_output=True, check=True)
    times: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label in paths}
    sizes: dict[str, list[int]] = {label: [0, 0] for label in paths}
    with tempfile.TemporaryDirectory(prefix="bench-before-") as checkout:
        subprocess.run(["tar", "-x", "-C", checkout], input=archive.stdout, check=True)
        with subprocess.Popen(
            [sys.executable, "-c", BEFORE, checkout, url, token],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as served:
            assert served.stdin is not None and served.stdout is not None
            for _ in range(runs):
                for label, path in paths.items():
                    served.stdin.write(path + "\n")
                    served.stdin.flush()
                    took_ms, size = served.stdout.readline().split()
                    times[label][0].append(float(took_ms))
                    sizes[label][0] = int(size)
                    started = time.perf_counter()
                    response = client.get(path, headers=headers)
                    times[label][1].append((time.perf_counter() - started) * 1000)
                    sizes[label][1] = len(response.get_data())
            served.stdin.close()
    return {
        label: (
            (statistics.median(times[label][0]), sizes[label][0]),
            (statistics.median(times[label][1]), sizes[label][1]),
        )
        for label in paths
    }


def _seed_dashboard(count: int) -> None:
    """Give every source a latest state on its own server, with a full 24-hour sparkline."""
    now = int(utcnow().timestamp()) // 600 * 600
    for source_id in range(1, count + 1):
        db.session.add(
            SourceState(
                source_id=source_id,
                status="ERROR" if source_id % 97 == 0 else "OK",
                consecutive_failures=0,
                last_sampled_at=utcnow(),
                size_bytes=source_id * 10**6,
                retained_bytes=source_id * 10**5,
                slot_count=2,
                inactive_slot_count=int(source_id % 3 == 0),
                last_error="connection refused" if source_id % 97 == 0 else None,
                retained_sparkline=draw(
                    [[now - 600 * k, source_id * 1000 + k] for k in range(143, -1, -1)]
                ),
                server_id=source_id,
            )
        )
    db.session.commit()


if __name__ == "__main__":
    main()
