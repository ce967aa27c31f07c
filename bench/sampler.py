"""Time one WAL monitor round over many sources, some hanging, against the naive sequential way.

Run by hand from the repository root (it starts its own PostgreSQL clusters):

    .venv/bin/python bench/sampler.py --sources 500 --hanging 25 --timeout 5
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from contextlib import closing
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SECRET_KEY", "bench-secret-key")

from flask_migrate import upgrade  # noqa: E402

from rosetta_web import create_app  # noqa: E402
from rosetta_web.extensions import db  # noqa: E402
from rosetta_web.monitor.rounds import sample_sources  # noqa: E402
from rosetta_web.sources.services import after_round  # noqa: E402
from tests.factories import new_source  # noqa: E402
from tests.pg import Cluster, HangingServer  # noqa: E402

PASSWORD = "bench-Monitor-1"
# The naive way: one position query per source, one source after another, nothing else.
NAIVE_SQL = "SELECT pg_current_wal_lsn(), pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"


def prepare_cluster(cluster: Cluster, databases: int) -> None:
    """Create the monitor role, a few databases and slots, as a real server would have."""
    with closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE ROLE monitor LOGIN PASSWORD '{PASSWORD}'")
        cur.execute("GRANT pg_monitor TO monitor")
        for i in range(databases):
            cur.execute(f'CREATE DATABASE "app_{i}"')
    for i in range(databases):
        with closing(cluster.connect(f"app_{i}")) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT pg_create_logical_replication_slot('slot_{i}', 'pgoutput')")


def naive_round(targets: list[tuple[str, int, str]], timeout: int) -> float:
    """Connect, query and close, one source after another, no retries; return seconds."""
    started = time.perf_counter()
    for host, port, database in targets:
        try:
            conn = psycopg2.connect(
                host=host,
                port=port,
                dbname=database,
                user="monitor",
                password=PASSWORD,
                connect_timeout=timeout,
                options=f"-c statement_timeout={timeout * 1000}",
            )
        except psycopg2.Error:
            continue
        with closing(conn), conn.cursor() as cur:
            cur.execute(NAIVE_SQL)
            cur.fetchone()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=500)
    parser.add_argument("--hanging", type=int, default=25)
    parser.add_argument("--timeout", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--databases", type=int, default=5, help="databases (and slots) per cluster"
    )
    args = parser.parse_args()

    clusters = [Cluster("bench-a").start(), Cluster("bench-b").start()]
    hanging = HangingServer()
    try:
        for cluster in clusters:
            prepare_cluster(cluster, args.databases)
        meta_url = clusters[0].create_database("bench_meta")
        app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": meta_url,
                "WAL_MONITOR_TIMEOUT_SECONDS": args.timeout,
                "WAL_MONITOR_CONCURRENCY": args.concurrency,
                "LOG_LEVEL": "WARNING",
            }
        )
        targets: list[tuple[str, int, str]] = []
        # Spread the hanging sources among the others, as in a real fleet.
        spread = max(1, args.sources // max(1, args.hanging))
        hanging_ids = set(range(0, args.sources, spread)[: args.hanging])
        with app.app_context():
            upgrade()
            for i in range(args.sources):
                if i in hanging_ids:
                    port, database = hanging.port, "app_0"
                else:
                    cluster = clusters[i % len(clusters)]
                    port, database = cluster.port, f"app_{i % args.databases}"
                targets.append(("127.0.0.1", port, database))
                db.session.add(
                    new_source(
                        f"source-{i:04d}",
                        pg_host="127.0.0.1",
                        pg_port=port,
                        pg_database=database,
                        pg_username="monitor",
                        pg_password=PASSWORD,
                    )
                )
            db.session.commit()
            hanging_count = len(hanging_ids)
            reachable = args.sources - hanging_count

            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            started = time.perf_counter()
            samples = after_round(sample_sources())
            first_s = time.perf_counter() - started
            # The next round knows which sources failed and starts them first.
            started = time.perf_counter()
            samples = after_round(sample_sources())
            round_s = time.perf_counter() - started
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        ok = [s for s in samples if s.ok]
        failed = [s for s in samples if not s.ok]
        print(
            f"sources: {args.sources} ({hanging_count} hanging, {reachable} reachable on "
            f"{len(clusters)} clusters), timeout {args.timeout} s, concurrency {args.concurrency}"
        )
        print(f"first round (no history): {first_s:.2f} s wall")
        print(
            f"round: {round_s:.2f} s wall (target <= {args.timeout + 5} s); "
            f"{len(ok)} OK, {len(failed)} ERROR"
        )
        print(
            f"median per reachable source: {statistics.median(s.duration_ms for s in ok):.0f} ms "
            f"(p95 {sorted(s.duration_ms for s in ok)[int(len(ok) * 0.95) - 1]} ms)"
        )
        print(
            f"peak memory (process max RSS): {peak_mb:.0f} MB, {rss_before:.0f} MB before the "
            "round (target <= 150 MB)"
        )
        print("naive round (sequential connect, query, close; no retries) ...", flush=True)
        naive_s = naive_round(targets, args.timeout)
        print(f"naive round: {naive_s:.2f} s wall")
        print(
            f"speed-up: {naive_s / round_s:.1f}x (target >= 20x); "
            f"first round {naive_s / first_s:.1f}x"
        )
    finally:
        hanging.close()
        for cluster in clusters:
            cluster.stop()


if __name__ == "__main__":
    main()
