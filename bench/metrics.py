"""Time GET /metrics at 1,000 sources: served from the rendering kept after each round, and
rendered at the scrape as before (the baseline), one client at a time and 20 at once.

Each source is a database on a server of its own with logical slots, as a round stored them,
plus a few pipelines with their tables and some firing alerts (read at each scrape). gunicorn
serves with 4 workers, as the README's production set-up does, and the clients sign with a
token, as Prometheus would. Run by hand from the repository root (it starts its own
PostgreSQL cluster and gunicorn):

    .venv/bin/python bench/metrics.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SECRET_KEY", "bench-secret-key")

from flask_migrate import upgrade  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from rosetta_web import create_app  # noqa: E402
from rosetta_web.auth import services as auth  # noqa: E402
from rosetta_web.extensions import db  # noqa: E402
from rosetta_web.models import (  # noqa: E402
    MonitorRound,
    Pipeline,
    PipelineTable,
    Server,
    SlotMetric,
    SourceState,
)
from rosetta_web.monitor import prometheus  # noqa: E402
from rosetta_web.timeutil import utcnow  # noqa: E402
from tests.factories import new_alert, new_destination, new_source  # noqa: E402
from tests.pg import Cluster, free_port, wait_for  # noqa: E402

GIB = 1024**3


def load(sources: int, slots: int) -> None:
    """Store `sources` sources, each on a server of its own with `slots` slots, as a round at
    now left them, with its round row; 5 pipelines of 3 tables and 10 firing alerts."""
    now = utcnow()
    db.session.add_all(new_source(f"source-{i:04d}") for i in range(1, sources + 1))
    db.session.commit()
    db.session.execute(
        insert(Server),
        [
            {
                "id": i,
                "system_identifier": str(7_000_000_000_000_000_000 + i),
                "address": f"db-{i}:5432",
                "max_slot_wal_keep_size": "100GB",
                "last_sampled_at": now,
            }
            for i in range(1, sources + 1)
        ],
    )
    db.session.execute(
        insert(SourceState),
        [
            {
                "source_id": i,
                "server_id": i,
                "status": "OK",
                "consecutive_failures": 0,
                "last_attempt_at": now,
                "last_sampled_at": now,
                "wal_position_bytes": 10**11 + i * GIB,
                "size_bytes": 2 * GIB + i,
                "slot_count": slots,
                "inactive_slot_count": 0,
            }
            for i in range(1, sources + 1)
        ],
    )
    db.session.execute(
        insert(SlotMetric),
        [
            {
                "server_id": i,
                "recorded_at": now,
                "slot_name": f"rosetta_slot_{j}",
                "plugin": "pgoutput",
                "slot_type": "logical",
                "database": "d",
                "active": j % 7 != 3,
                "retained_bytes": 100 * 1024**2 + i * 4096 + j,
                "lag_bytes": i * 1024 + j,
                "wal_status": "reserved",
                "safe_wal_size": 90 * GIB + i,
            }
            for i in range(1, sources + 1)
            for j in range(slots)
        ],
    )
    db.session.add(
        MonitorRound(
            started_at=now,
            duration_ms=2400,
            sampling_ms=2000,
            storing_ms=400,
            sources=sources,
            failures=0,
            skipped=0,
            sampler="bench:1",
            manual=False,
        )
    )
    for p in range(5):
        pipeline = Pipeline(
            name=f"pipeline-{p}",
            source_id=p + 1,
            destination=new_destination(f"destination-{p}"),
            status="START",
        )
        db.session.add(pipeline)
        db.session.flush()
        for t in range(3):
            db.session.add(
                PipelineTable(pipeline_id=pipeline.id, table_name=f"public.t{t}", inserted=t)
            )
    db.session.add_all(new_alert(i, key=f"bench:{i}") for i in range(1, 11))
    db.session.commit()


def percentile(values: list[float], share: float) -> float:
    """Return the nearest-rank percentile of `values`."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered)) - 1))]


def scrape(port: int, token: str) -> tuple[float, int]:
    """GET /metrics as Prometheus 2 asks for it; return the milliseconds and the bytes."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        },
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
    return (time.perf_counter() - started) * 1000, len(body)


def clients(port: int, token: str, count: int, each: int) -> tuple[list[float], float]:
    """Run `count` clients, each scraping `each` times back to back; return every scrape's
    milliseconds and the wall seconds."""
    times: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(each):
            ms, _ = scrape(port, token)
            with lock:
                times.append(ms)

    threads = [threading.Thread(target=client) for _ in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return times, time.perf_counter() - started


def serve(url: str, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    """Start gunicorn on the metadata database, the monitor off; return it and its port."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "WAL_MONITOR_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "wsgi:app",
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return True
        except OSError:
            return False

    if not wait_for(up, timeout=60, interval=0.2):
        server.kill()
        raise RuntimeError("gunicorn did not start")
    return server, port


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used, user and system."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu(pid: int) -> float:
    """The CPU time used by a process's children (gunicorn's workers, PostgreSQL's backends)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return sum(cpu_seconds(int(child)) for child in path.read_text().split())


def measure(
    label: str, port: int, token: str, pids: dict[str, int], args: argparse.Namespace
) -> None:
    """Print one client's median and p95, then `args.clients` clients' p95, throughput and the
    CPU time a scrape costs gunicorn's workers and PostgreSQL."""
    for _ in range(3 * args.workers):
        scrape(port, token)  # each worker's first: imports, connections, the kept text
    single = [scrape(port, token) for _ in range(args.scrapes)]
    times = [ms for ms, _ in single]
    size = single[-1][1]
    print(
        f"{label}: {size / 1024:,.0f} kB; 1 client: median {statistics.median(times):.1f} ms, "
        f"p95 {percentile(times, 0.95):.1f} ms over {len(times)} scrapes"
    )
    before = {name: children_cpu(pid) for name, pid in pids.items()}
    many, wall = clients(port, token, args.clients, args.each)
    cpu = {
        name: (children_cpu(pid) - before[name]) / len(many) * 1000 for name, pid in pids.items()
    }
    print(
        f"  {args.clients} clients at once, {args.each} scrapes each: p95 "
        f"{percentile(many, 0.95):.0f} ms, median {statistics.median(many):.0f} ms, "
        f"{len(many) / wall:.0f} scrapes/s (load average {os.getloadavg()[0]:.2f}); CPU a "
        + ", ".join(f"{name} {ms:.1f} ms" for name, ms in cpu.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=2, help="slots per server")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--each", type=int, default=10, help="scrapes per client")
    parser.add_argument("--scrapes", type=int, default=50, help="scrapes by one client")
    args = parser.parse_args()

    print(f"load average at the start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    cluster = Cluster("bench-metrics").start()
    try:
        url = cluster.create_database("bench_meta")
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "LOG_LEVEL": "WARNING"})
        with app.app_context():
            upgrade()
            load(args.sources, args.slots)
            _, token = auth.create_token(auth.create_user("bench", "bench-Pass-1!", "viewer"), "b")
            renders = []
            for _ in range(5):
                started = time.perf_counter()
                prometheus.keep()
                renders.append((time.perf_counter() - started) * 1000)
        print(
            f"fleet: {args.sources:,} sources, each on a server of its own with {args.slots} "
            f"slots; 5 pipelines, 10 firing alerts"
        )
        print(
            f"rendering kept after each round (prometheus.keep, both formats, stored): median "
            f"{statistics.median(renders):.0f} ms of 5"
        )
        server, port = serve(url, args.workers)
        postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
        pids = {"scrape: gunicorn": server.pid, "PostgreSQL": postmaster}
        try:
            measure(f"/metrics kept ({args.workers} workers)", port, token, pids, args)
            with app.app_context():
                prometheus.forget()
                db.session.commit()
            measure(
                "/metrics rendered at the scrape, as before (baseline)", port, token, pids, args
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
