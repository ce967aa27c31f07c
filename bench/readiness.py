"""Time `flask rosetta check` over many sources, some hanging: concurrent against one by one.

Run by hand from the repository root (it starts its own PostgreSQL cluster):

    .venv/bin/python bench/readiness.py --sources 200 --hanging 10 --timeout 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SECRET_KEY", "bench-secret-key")

from flask_migrate import upgrade  # noqa: E402

from rosetta_web import create_app  # noqa: E402
from rosetta_web.extensions import db  # noqa: E402
from rosetta_web.sources.services import check_all  # noqa: E402
from tests.factories import new_source  # noqa: E402
from tests.pg import Cluster, HangingServer  # noqa: E402

PASSWORD = "bench-Cdc-1"


def prepare(cluster: Cluster, databases: int) -> None:
    """A replication role, and databases each with a published table and a slot."""
    with closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE ROLE cdc LOGIN REPLICATION PASSWORD '{PASSWORD}'")
        cur.execute("GRANT pg_monitor TO cdc")
        for i in range(databases):
            cur.execute(f'CREATE DATABASE "app_{i}"')
    for i in range(databases):
        with closing(cluster.connect(f"app_{i}")) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE orders (id bigint PRIMARY KEY)")
            cur.execute("CREATE PUBLICATION cdc_pub FOR ALL TABLES")
            cur.execute(f"SELECT pg_create_logical_replication_slot('slot_{i}', 'pgoutput')")


def timed_check(app, concurrency: int) -> tuple[float, list]:  # type: ignore[no-untyped-def]
    app.config["WAL_MONITOR_CONCURRENCY"] = concurrency
    with app.app_context():
        started = time.perf_counter()
        results = [readiness for _, readiness in check_all()]
        return time.perf_counter() - started, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=200)
    parser.add_argument("--hanging", type=int, default=10)
    parser.add_argument("--timeout", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--databases", type=int, default=10)
    args = parser.parse_args()

    cluster = Cluster("bench-readiness").start()
    hanging = HangingServer()
    try:
        prepare(cluster, args.databases)
        app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": cluster.create_database("bench_meta"),
                "WAL_MONITOR_TIMEOUT_SECONDS": args.timeout,
                "LOG_LEVEL": "WARNING",
            }
        )
        spread = max(1, args.sources // max(1, args.hanging))
        hanging_ids = set(range(0, args.sources, spread)[: args.hanging])
        with app.app_context():
            upgrade()
            for i in range(args.sources):
                port = hanging.port if i in hanging_ids else cluster.port
                db.session.add(
                    new_source(
                        f"source-{i:04d}",
                        pg_host="127.0.0.1",
                        pg_port=port,
                        pg_database=f"app_{i % args.databases}",
                        pg_username="cdc",
                        pg_password=PASSWORD,
                        publication_name="cdc_pub",
                        slot_name=f"slot_{i % args.databases}",
                    )
                )
            db.session.commit()

        concurrent_s, results = timed_check(app, args.concurrency)
        ready = sum(1 for result in results if result.ready)
        print(
            f"sources: {args.sources} ({len(hanging_ids)} hanging), timeout {args.timeout} s, "
            f"13 checks each"
        )
        print(
            f"check all, concurrency {args.concurrency}: {concurrent_s:.2f} s wall; "
            f"{ready} ready, {len(results) - ready} not ready"
        )
        print(f"per source: {concurrent_s / args.sources * 1000:.1f} ms of wall time")
        repeat = [timed_check(app, args.concurrency)[0] for _ in range(2)]
        print(
            f"again: {', '.join(f'{s:.2f} s' for s in repeat)} (median of 3: "
            f"{statistics.median([concurrent_s, *repeat]):.2f} s)"
        )
        print("check all, one at a time ...", flush=True)
        sequential_s, _ = timed_check(app, 1)
        print(f"check all, concurrency 1: {sequential_s:.2f} s wall")
        print(f"speed-up: {sequential_s / statistics.median([concurrent_s, *repeat]):.1f}x")
    finally:
        hanging.close()
        cluster.stop()


if __name__ == "__main__":
    main()
