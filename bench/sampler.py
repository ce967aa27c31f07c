"""Time WAL monitor rounds over many sources, some hanging, beside the naive loop and the
kept-open loop, in one run.

Run by hand from the repository root (it starts its own PostgreSQL clusters):

    .venv/bin/python bench/sampler.py --sources 500 --hanging 25 --timeout 5

What it prints, in order, each step with the load average:

1. Rounds by hand (`sample_sources`, as `flask rosetta sample` runs them: every source over a
   new connection of its own), over every source, the hanging ones included; then over the
   reachable sources only (an installation of their own).
2. Scheduled rounds (`scheduled_round(apart=...)`, as the scheduler runs them): each server
   sampled once over a connection kept open between rounds, its sources sharing the figures;
   the sources that failed last time sampled in a lane apart that the round does not wait for.
3. The naive loop (connect, the same SQL as Rosetta, close; one source after another, the same
   timeout, no retries) over every source, the hanging ones included, then over the reachable
   ones only.
4. The kept-open loop: one connection per server opened beforehand, the same SQL run for each
   reachable source, one after another.
5. The ratios, each saying what it is against.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SECRET_KEY", "bench-secret-key")

from flask import Flask  # noqa: E402
from flask_migrate import upgrade  # noqa: E402

from rosetta_web import create_app  # noqa: E402
from rosetta_web.extensions import db  # noqa: E402
from rosetta_web.models import MonitorRound  # noqa: E402
from rosetta_web.monitor.rounds import (  # noqa: E402
    Round,
    join_lanes,
    sample_sources,
    scheduled_round,
)
from rosetta_web.monitor.workers import kept_connections  # noqa: E402
from rosetta_web.postgres import sampling_queries  # noqa: E402
from rosetta_web.postgres.sampling import Sample  # noqa: E402
from rosetta_web.sources.services import after_round  # noqa: E402
from tests.factories import new_source  # noqa: E402
from tests.pg import Cluster, HangingServer  # noqa: E402

PASSWORD = "bench-Monitor-1"
PUBLICATION = "pub"

# Where a source is: port, database.
Place = tuple[int, str]


def load() -> str:
    """The load average, as the step's conditions."""
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (5 min {five:.2f}) on {os.cpu_count()} CPUs"


def peak_mb() -> float:
    """The process's peak RSS so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare_cluster(cluster: Cluster, databases: int) -> None:
    """Create the monitor role, databases each with a slot and a publication, as a real server
    would have."""
    with closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE ROLE monitor LOGIN PASSWORD '{PASSWORD}'")
        cur.execute("GRANT pg_monitor TO monitor")
        for i in range(databases):
            cur.execute(f'CREATE DATABASE "app_{i}"')
    for i in range(databases):
        with closing(cluster.connect(f"app_{i}")) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE PUBLICATION {PUBLICATION}")
            cur.execute(f"SELECT pg_create_logical_replication_slot('slot_{i}', 'pgoutput')")


def installation(
    meta: Cluster, name: str, places: list[Place], config: dict[str, Any] | None = None
) -> Flask:
    """An app (`config` over its settings) on a new metadata database with a source at each of
    `places`."""
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": meta.create_database(name),
            "LOG_LEVEL": "WARNING",
            **(config or {}),
        }
    )
    with app.app_context():
        upgrade()
        for i, (port, database) in enumerate(places):
            db.session.add(
                new_source(
                    f"source-{i:05d}",
                    pg_host="127.0.0.1",
                    pg_port=port,
                    pg_database=database,
                    pg_username="monitor",
                    pg_password=PASSWORD,
                    publication_name=PUBLICATION,
                    slot_name=f"slot_{database.removeprefix('app_')}",
                )
            )
        db.session.commit()
    return app


def timed(run: Callable[[], Round]) -> tuple[float, list[Sample], MonitorRound]:
    """Run a round and what follows it (the alert rules); return its seconds, its samples and
    its stored row."""
    started = time.perf_counter()
    done = run()
    samples = after_round(done)
    seconds = time.perf_counter() - started
    # A lane apart stores its row under its round's start too, later.
    row = db.session.scalars(
        db.select(MonitorRound)
        .where(MonitorRound.started_at == done.started_at)
        .order_by(MonitorRound.id)
    ).first()
    assert row is not None
    db.session.expunge(row)
    return seconds, samples, row


def split(row: MonitorRound) -> str:
    """What a round's stored row says it spent on sampling and on storing."""
    return f"sampling {row.sampling_ms} ms, storing {row.storing_ms} ms"


def median_of(runs: int, run: Callable[[], Round]) -> tuple[float, list[Sample], MonitorRound]:
    """The median of `runs` rounds, with its samples and row."""
    found = sorted((timed(run) for _ in range(runs)), key=lambda one: one[0])
    return found[len(found) // 2]


def sampling_sql(cur: Any, publication: str) -> None:
    """Run what Rosetta runs over a kept connection on a source that names a publication and
    whose role a sample found may list the WAL directory: one statement."""
    cur.execute(sampling_queries.SAMPLE_WITH_WAL_DIRECTORY, {"publication": publication})
    cur.fetchone()


def naive_loop(places: list[Place], timeout: int) -> tuple[float, int]:
    """Connect, run the sampling SQL, close: one source after another, no retries; return
    seconds and the sources that failed."""
    failed = 0
    started = time.perf_counter()
    for port, database in places:
        try:
            conn = psycopg2.connect(
                host="127.0.0.1",
                port=port,
                dbname=database,
                user="monitor",
                password=PASSWORD,
                connect_timeout=timeout,
                options=f"-c statement_timeout={timeout * 1000}",
            )
        except psycopg2.Error:
            failed += 1
            continue
        with closing(conn), conn.cursor() as cur:
            sampling_sql(cur, PUBLICATION)
    return time.perf_counter() - started, failed


def kept_open_loop(places: list[Place], runs: int) -> float:
    """The floor: one connection per server opened beforehand, the sampling SQL run for each
    source, one after another; return the median seconds of `runs` passes."""
    conns = {
        port: psycopg2.connect(
            host="127.0.0.1", port=port, dbname="app_0", user="monitor", password=PASSWORD
        )
        for port in sorted({port for port, _ in places})
    }
    for conn in conns.values():
        conn.autocommit = True
    try:
        passes = []
        for _ in range(runs):
            started = time.perf_counter()
            for port, _ in places:
                with conns[port].cursor() as cur:
                    sampling_sql(cur, PUBLICATION)
            passes.append(time.perf_counter() - started)
        return statistics.median(passes)
    finally:
        for conn in conns.values():
            conn.close()


def ratio(subject: str, subject_s: float, baseline: str, baseline_s: float, why: str) -> None:
    """Print how much faster or slower `subject` is than `baseline`, both figures beside."""
    if subject_s <= baseline_s:
        verdict = f"{baseline_s / subject_s:.1f}x faster"
    else:
        verdict = f"{subject_s / baseline_s:.1f}x slower"
    print(
        f"     {subject} {subject_s:.3f} s against the {baseline} {baseline_s:.3f} s: "
        f"{verdict} ({why})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=500)
    parser.add_argument("--hanging", type=int, default=25)
    parser.add_argument("--timeout", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--databases", type=int, default=5, help="databases (and slots) per cluster"
    )
    parser.add_argument("--runs", type=int, default=3, help="rounds (and loops) per median")
    args = parser.parse_args()

    clusters = [Cluster("bench-a").start(), Cluster("bench-b").start()]
    hanging = HangingServer()
    try:
        for cluster in clusters:
            prepare_cluster(cluster, args.databases)
        # Spread the hanging sources among the others, as in a real fleet.
        spread = max(1, args.sources // max(1, args.hanging))
        hanging_ids = set(range(0, args.sources, spread)[: args.hanging])
        places: list[Place] = []
        for i in range(args.sources):
            if i in hanging_ids:
                places.append((hanging.port, "app_0"))
            else:
                cluster = clusters[i % len(clusters)]
                places.append((cluster.port, f"app_{i % args.databases}"))
        reachable = [place for i, place in enumerate(places) if i not in hanging_ids]
        config = {
            "WAL_MONITOR_TIMEOUT_SECONDS": args.timeout,
            "WAL_MONITOR_CONCURRENCY": args.concurrency,
        }
        everything = installation(clusters[0], "bench_meta", places, config)
        answering = installation(clusters[0], "bench_reachable", reachable, config)
        print(
            f"sources: {args.sources} ({len(hanging_ids)} hanging, {len(reachable)} reachable on "
            f"{len(clusters) * args.databases} databases of {len(clusters)} clusters), timeout "
            f"{args.timeout} s, concurrency {args.concurrency}; every source is sampled with "
            "SAMPLE_WITH_WAL_DIRECTORY (the publication's existence and pg_wal's size included) "
            "in the baseline loops",
            flush=True,
        )

        # 1. By hand.
        print("1. by hand (sample_sources: every source over a new connection of its own)")
        with everything.app_context():
            rss_before = peak_mb()
            first_s, _, first = timed(sample_sources)
            # The next round knows which sources failed and starts them first.
            hand_all_s, samples, row = timed(sample_sources)
        ok = [sample for sample in samples if sample.ok]
        durations = sorted(sample.duration_ms for sample in ok)
        print(
            f"   all {args.sources}: first round (no history) {first_s:.2f} s ({split(first)}); "
            f"round {hand_all_s:.2f} s ({split(row)}; target <= {args.timeout + 5} s); "
            f"{len(ok)} OK, {len(samples) - len(ok)} ERROR ({load()})",
            flush=True,
        )
        print(
            f"   median per reachable source: {statistics.median(durations):.0f} ms "
            f"(p95 {durations[int(len(durations) * 0.95) - 1]} ms); peak memory (process max "
            f"RSS) {peak_mb():.0f} MB, {rss_before:.0f} MB before the rounds (target <= 150 MB)",
            flush=True,
        )
        with answering.app_context():
            answering_first_s, _, _ = timed(sample_sources)
            hand_s, samples, row = median_of(args.runs, sample_sources)
        assert all(sample.ok for sample in samples)
        print(
            f"   the {len(reachable)} reachable only (an installation of their own): first round "
            f"{answering_first_s:.2f} s; round {hand_s:.2f} s ({split(row)}), median of "
            f"{args.runs} ({load()})",
            flush=True,
        )

        # 2. Scheduled, as the scheduler runs them.
        lane: list[tuple[float, list[Sample]]] = []

        def apart(done: Round) -> list[Sample]:
            samples = after_round(done)
            lane.append((time.perf_counter(), samples))
            return samples

        def a_scheduled_round() -> Round:
            return scheduled_round(apart=apart)

        print(
            "2. scheduled (scheduled_round(apart=...): each server once over a kept connection, "
            "the sources that failed last time in a lane apart)"
        )
        with everything.app_context():
            lane_started = time.perf_counter()
            first_s, samples, first = timed(a_scheduled_round)
            sched_s, _, row = median_of(args.runs, a_scheduled_round)
            join_lanes(args.timeout * (args.hanging + 1), everything)
            kept_connections(everything).close()
        assert all(sample.ok for sample in samples)
        print(
            f"   first round (opens the kept connections) {first_s:.3f} s ({split(first)}); "
            f"round {sched_s:.3f} s ({split(row)}), median of {args.runs}; {row.sources} "
            f"sampled over {len(clusters)} connections, {row.skipped} left out while their lane "
            f"runs ({load()})",
            flush=True,
        )
        if lane:
            stored_at, lane_samples = lane[0]
            print(
                f"   the lane apart: {len(lane_samples)} sources, "
                f"{sum(1 for sample in lane_samples if not sample.ok)} ERROR, stored "
                f"{stored_at - lane_started:.1f} s after the first round started "
                f"({max(1, args.concurrency // 4)} at a time); no round waited for it",
                flush=True,
            )

        # 3. The naive loop.
        print(
            "3. naive loop (connect, the same SQL, close; one source after another, "
            f"timeout {args.timeout} s, no retries)",
            flush=True,
        )
        naive_all_s, naive_failed = naive_loop(places, args.timeout)
        print(
            f"   all {args.sources}, the hanging ones included: {naive_all_s:.2f} s, "
            f"{naive_failed} timed out ({load()})",
            flush=True,
        )
        naive_s = statistics.median(
            naive_loop(reachable, args.timeout)[0] for _ in range(args.runs)
        )
        print(
            f"   the {len(reachable)} reachable only: {naive_s:.2f} s, median of {args.runs} "
            f"({load()})",
            flush=True,
        )

        # 4. The kept-open loop.
        kept_s = kept_open_loop(reachable, args.runs)
        print(
            f"4. kept-open loop (a connection per server opened beforehand, the same SQL for each "
            f"of the {len(reachable)} reachable sources, one after another): {kept_s:.3f} s, "
            f"median of {args.runs} ({load()})",
            flush=True,
        )

        # 5. Ratios.
        print("5. ratios, each against a baseline run above")
        print(f"   with the {len(hanging_ids)} hanging sources (all {args.sources}):")
        ratio(
            "by-hand round",
            hand_all_s,
            "naive loop",
            naive_all_s,
            f"the naive loop waits out {len(hanging_ids)} timeouts one after another, the round "
            "one, side by side",
        )
        ratio(
            "scheduled round",
            sched_s,
            "naive loop",
            naive_all_s,
            "the scheduled round waits for none: the hanging sources are in their lane",
        )
        print(f"   on the {len(reachable)} sources that answer:")
        ratio(
            "by-hand round",
            hand_s,
            "naive loop",
            naive_s,
            "both open a new connection per source",
        )
        ratio(
            "scheduled round",
            sched_s,
            "naive loop",
            naive_s,
            f"the scheduled round samples {len(clusters)} servers, not {len(reachable)} sources",
        )
        ratio(
            "by-hand round",
            hand_s,
            "kept-open loop",
            kept_s,
            "the kept-open loop is the floor; the round also stores and runs the alert rules",
        )
        ratio(
            "scheduled round",
            sched_s,
            "kept-open loop",
            kept_s,
            f"the round samples {len(clusters)} servers, the loop runs the SQL for each source; "
            "the round also stores and runs the alert rules",
        )
    finally:
        hanging.close()
        for cluster in clusters:
            cluster.stop()


if __name__ == "__main__":
    main()
