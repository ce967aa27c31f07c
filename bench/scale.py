"""10,000 sources on 20 servers: rounds, the dashboard and /metrics, and the baseline loops, in
one run.

Run by hand from the repository root (it starts its own PostgreSQL clusters, one per server and
one for Rosetta's metadata):

    .venv/bin/python bench/scale.py [--servers 20] [--databases 5] [--sources 10000] [--runs 3]

Every server has `--databases` databases, each with a logical slot and a publication; the
sources are spread over those databases, many source rows sharing each database, as an
installation with thousands of sources has them. What it prints, in order:

1. Per-server and per-source costs, first, while the machine is as quiet as it will be: one
   source on each server; sequential, the same SQL as Rosetta's kept connections run (one
   statement: SAMPLE_WITH_WAL_DIRECTORY): the kept-open loop (one connection per server opened
   beforehand: the floor), Rosetta's sampler on kept connections, and the naive
   connect-per-source loop.
2. 500 sources on 10 databases (two servers): Rosetta's scheduled round against the naive loop
   (connect, sample, close, one source after another) over the same sources.
3. The 10,000-source installation: the first round (each source on its own, finding its
   server); then, each source's sparkline given a day of points (as after 24 hours of rounds),
   scheduled rounds with kept connections and with WAL_MONITOR_KEEP_CONNECTIONS off, storing
   included, and the process's peak RSS.
4. The dashboard (`/`) and `/metrics` at 10,000 sources: bytes and median time, one client.

The load average is printed at each step: the figures are only comparable within one run.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SECRET_KEY", "bench-secret-key")

from flask import Flask  # noqa: E402

from bench.engine import median_ms  # noqa: E402
from bench.sampler import (  # noqa: E402
    PASSWORD,
    PUBLICATION,
    installation,
    load,
    prepare_cluster,
    sampling_sql,
)
from rosetta_web.auth import services as auth  # noqa: E402
from rosetta_web.extensions import db  # noqa: E402
from rosetta_web.models import MonitorRound, Source, SourceState  # noqa: E402
from rosetta_web.monitor.rounds import scheduled_round, target_of  # noqa: E402
from rosetta_web.monitor.workers import kept_connections  # noqa: E402
from rosetta_web.postgres.sampling import KeptConnections, ServerGroup, sample_servers  # noqa: E402
from rosetta_web.sources.services import after_round  # noqa: E402
from tests.pg import Cluster  # noqa: E402


def peak_mb() -> float:
    """The process's peak RSS since the last `forget_peak`, in MB (Linux's VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def forget_peak() -> None:
    """Start counting the peak RSS again from what the process holds now (Linux 4.0+)."""
    Path("/proc/self/clear_refs").write_text("5")


def a_day_of_sparklines(app: Flask, moment: datetime) -> None:
    """Give every source's sparkline a day of ten-minute points before `moment`, as 24 hours
    of rounds leave it: the steady state a round stores."""
    bucket = int(moment.timestamp()) // 600 * 600
    day = [[bucket - 600 * k, 10**9 + k] for k in range(143, 0, -1)]
    with app.app_context():
        db.session.execute(db.update(SourceState).values(retained_history=day))
        db.session.commit()


def spread(places: list[tuple[int, str]], count: int) -> list[tuple[int, str]]:
    """`count` places for sources, going round `places`: many sources on each database."""
    return [places[i % len(places)] for i in range(count)]


def a_round(app: Flask) -> tuple[float, MonitorRound]:
    """Run one scheduled round and what follows it; return its seconds and its stored row."""
    with app.app_context():
        started = time.perf_counter()
        samples = after_round(scheduled_round())
        seconds = time.perf_counter() - started
        failed = [sample for sample in samples if not sample.ok]
        assert not failed, failed[0].error
        row = db.session.scalar(db.select(MonitorRound).order_by(MonitorRound.id.desc()))
        db.session.expunge(row)
        return seconds, row


def median_round(app: Flask, runs: int) -> tuple[float, MonitorRound]:
    """The median of `runs` scheduled rounds, and the row of the median one."""
    rounds = sorted((a_round(app) for _ in range(runs)), key=lambda found: found[0])
    return rounds[len(rounds) // 2]


def naive_loop(targets: list[tuple[int, str]]) -> float:
    """Connect, run the sampling SQL, close: one source after another; return seconds."""
    started = time.perf_counter()
    for port, database in targets:
        conn = psycopg2.connect(
            host="127.0.0.1", port=port, dbname=database, user="monitor", password=PASSWORD
        )
        with closing(conn), conn.cursor() as cur:
            sampling_sql(cur, PUBLICATION)
    return time.perf_counter() - started


def kept_open_loop(clusters: list[Cluster], repeats: int) -> float:
    """The floor: one connection per server opened beforehand, the sampling SQL run on each,
    one server after another; return seconds per server."""
    conns = [
        psycopg2.connect(
            host="127.0.0.1", port=cluster.port, dbname="app_0", user="monitor", password=PASSWORD
        )
        for cluster in clusters
    ]
    for conn in conns:
        conn.autocommit = True
    try:
        started = time.perf_counter()
        for _ in range(repeats):
            for conn in conns:
                with conn.cursor() as cur:
                    sampling_sql(cur, PUBLICATION)
        return (time.perf_counter() - started) / (repeats * len(conns))
    finally:
        for conn in conns:
            conn.close()


def rosetta_kept(app: Flask, repeats: int) -> float:
    """Rosetta's sampler, one server at a time over kept connections; seconds per server."""
    with app.app_context():
        rows = db.session.execute(
            db.select(Source, SourceState).join(SourceState).order_by(Source.id)
        ).all()
        one_each: dict[int, Any] = {}
        for source, state in rows:
            one_each.setdefault(state.server_id, target_of(source))
        groups = [ServerGroup(key, [target]) for key, target in one_each.items()]
        db.session.rollback()
    kept = KeptConnections()
    try:
        sample_servers(groups, 30, 0, 1, kept)  # opens them
        started = time.perf_counter()
        for _ in range(repeats):
            samples = sample_servers(groups, 30, 0, 1, kept)
            assert all(sample.ok for sample in samples)
        return (time.perf_counter() - started) / (repeats * len(groups))
    finally:
        kept.close()


def page_figures(app: Flask, runs: int) -> None:
    """`/` and `/metrics`: bytes and median time for one client, with a token."""
    with app.app_context():
        _, token = auth.create_token(auth.create_user("bench", "bench-password-1"), "bench")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    for path in ("/", "/metrics"):
        sizes: list[int] = []

        def call(path: str = path, sizes: list[int] = sizes) -> None:
            response = client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.status_code)
            sizes.append(len(response.data))

        took = median_ms(call, runs)
        print(f"   {path}: median {took:.1f} ms, {sizes[-1]:,} bytes ({load()})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=20)
    parser.add_argument("--databases", type=int, default=5, help="databases per server")
    parser.add_argument("--sources", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3, help="rounds (and page loads) per figure")
    parser.add_argument(
        "--naive-sources", type=int, default=1000, help="sources the naive loop runs over (step 4)"
    )
    args = parser.parse_args()

    print(f"starting {args.servers} servers and a metadata server ({load()})", flush=True)
    started = time.perf_counter()
    meta = Cluster("bench-meta").start()
    clusters: list[Cluster] = []
    try:
        for i in range(args.servers):
            clusters.append(Cluster(f"bench-{i}").start())
            prepare_cluster(clusters[-1], args.databases)
        print(f"   ready in {time.perf_counter() - started:.0f} s", flush=True)
        places = [(cluster.port, f"app_{d}") for d in range(args.databases) for cluster in clusters]

        # 1. Per-server and per-source costs, first: nothing the benchmark does has loaded the
        # machine yet.
        servers = installation(meta, "bench_servers", [(c.port, "app_0") for c in clusters])
        a_round(servers)  # each source alone: finds its server
        floor = kept_open_loop(clusters, 50)
        ours = rosetta_kept(servers, 50)
        naive_targets = spread(places, args.naive_sources)
        naive = naive_loop(naive_targets) / len(naive_targets)
        print(
            f"1. per server, sequential, {args.servers} servers x 50: kept-open loop (floor) "
            f"{floor * 1000:.2f} ms; Rosetta's sampler on kept connections {ours * 1000:.2f} ms "
            f"({ours / floor:.1f}x the floor); naive connect-per-source loop "
            f"{naive * 1000:.2f} ms per source over {len(naive_targets):,} sources "
            f"({naive / ours:.1f}x Rosetta's per-server cost) ({load()})",
            flush=True,
        )
        with servers.app_context():
            kept_connections(servers).close()

        # 2. 500 sources on 10 databases.
        small_places = [(cluster.port, f"app_{d}") for cluster in clusters[:2] for d in range(5)]
        small = installation(meta, "bench_500", spread(small_places, 500))
        a_round(small)  # each source alone: finds its server
        round_s, row = median_round(small, args.runs)
        naive_s = naive_loop(spread(small_places, 500))
        print(
            f"2. 500 sources on 10 databases (2 servers): round {round_s:.3f} s "
            f"(sampling {row.sampling_ms} ms, storing {row.storing_ms} ms), median of "
            f"{args.runs}; naive loop {naive_s:.2f} s; {naive_s / round_s:.1f}x the naive loop "
            f"({load()})",
            flush=True,
        )

        # 3. The whole installation.
        app = installation(meta, "bench_scale", spread(places, args.sources))
        # As gunicorn's workers and `flask rosetta scheduler` do once the app is loaded.
        gc.freeze()
        first_s, first = a_round(app)
        print(
            f"3. {args.sources:,} sources on {args.servers} servers x {args.databases} "
            f"databases: first round {first_s:.1f} s (every source on its own connection, "
            f"sampling {first.sampling_ms / 1000:.1f} s, storing {first.storing_ms / 1000:.1f} s)"
            f" ({load()})",
            flush=True,
        )
        print(f"   peak RSS of this process so far: {peak_mb():.0f} MB", flush=True)
        a_day_of_sparklines(app, first.started_at)
        forget_peak()
        round_s, row = median_round(app, args.runs)
        print(
            f"   round, connections kept: {round_s:.2f} s, median of {args.runs} (sampling "
            f"{row.sampling_ms / 1000:.2f} s, storing {row.storing_ms / 1000:.2f} s, the alert "
            f"rules and what follows a round included in the total) ({load()})",
            flush=True,
        )
        app.config["WAL_MONITOR_KEEP_CONNECTIONS"] = False
        off_s, off = median_round(app, args.runs)
        app.config["WAL_MONITOR_KEEP_CONNECTIONS"] = True
        print(
            f"   round, WAL_MONITOR_KEEP_CONNECTIONS=false: {off_s:.2f} s (sampling "
            f"{off.sampling_ms / 1000:.2f} s) ({load()})",
            flush=True,
        )
        print(
            f"   peak RSS of this process during these rounds: {peak_mb():.0f} MB",
            flush=True,
        )

        # 4. Pages.
        print(f"4. pages at {args.sources:,} sources, one client:", flush=True)
        page_figures(app, args.runs)

        with app.app_context():
            kept_connections(app).close()
        with small.app_context():
            kept_connections(small).close()
    finally:
        for cluster in clusters:
            cluster.stop()
        meta.stop()


if __name__ == "__main__":
    main()
