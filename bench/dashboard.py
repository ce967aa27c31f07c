"""Weigh and time the dashboard at 1,000 and 10,000 sources, and 20 clients on 4 gunicorn workers.

Each fleet is stored in bulk (tests/factories.py add_fleet): every source a database of its own
with a slot of its own, 200 to a server, some failing, some never sampled, some slots without a
consumer, a 24-hour sparkline each. In the same run, the page as it was before (every source
listed) is timed beside it. Run by hand from the repository root (it starts its own PostgreSQL
cluster, and gunicorn):

    .venv/bin/python bench/dashboard.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SECRET_KEY", "bench-secret-key")

import requests  # noqa: E402
from flask import Flask  # noqa: E402
from flask_migrate import upgrade  # noqa: E402

from bench.history import load_average, median_ms  # noqa: E402
from rosetta_web import create_app  # noqa: E402
from rosetta_web.extensions import db  # noqa: E402
from tests.clients import QueryCounter, sign_in  # noqa: E402
from tests.factories import PASSWORD, add_fleet, create_operator  # noqa: E402
from tests.pg import Cluster, free_port, wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SOURCES_A_SERVER = 200
HX = {"HX-Request": "true"}


def fleet_app(cluster: Cluster, count: int) -> tuple[Flask, str]:
    """A metadata database holding `count` sources and an operator; return its app and URL."""
    url = cluster.create_database(f"dashboard_{count}")
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "LOG_LEVEL": "WARNING"})
    with app.app_context():
        upgrade()
        started = time.perf_counter()
        add_fleet(count, max(1, count // SOURCES_A_SERVER))
        stored_s = time.perf_counter() - started
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    create_operator(app)
    print(
        f"{count:,} sources ({max(1, count // SOURCES_A_SERVER)} servers, a database and a slot "
        f"each: {count:,} slots), stored in {stored_s:.1f} s; load average {load_average()}"
    )
    return app, url


def weigh(app: Flask, runs: int, targets: str, before: bool) -> None:
    """Print the size and median time of the dashboard's page, its filters, "more" and
    refresh, signed in as a browser is (one process, the Flask test client)."""
    client = app.test_client()
    assert sign_in(client, password=PASSWORD).status_code == 303
    client.get("/")  # the first request reads what later ones find cached
    with app.app_context():
        engine = db.engine
    with QueryCounter(engine) as counted:
        client.get("/")
    pages = [
        ("/", "/", {}, targets),
        ("one source by name", "/?q=SRC-00424", {}, ""),
        ("failing only", "/?state=failing", {}, ""),
        ('"more" (the second page)', "/rows?offset=50", HX, ""),
        ("its refresh, two pages shown", "/?shown=100", HX, ""),
    ]
    if before:
        pages.append(("every source listed, as / was before", "/?shown=1000", {}, ""))
    for label, path, headers, target in pages:

        def get(path: str = path, headers: dict[str, str] = headers) -> object:
            response = client.get(path, headers=headers)
            assert response.status_code == 200, (path, response.status_code)
            return response

        took_ms, response = median_ms(get, runs)
        size = len(response.get_data())  # type: ignore[attr-defined]
        print(f"  {label}: {size / 1024:,.0f} kB, median {took_ms:.1f} ms{target}")
    print(f"  statements for /: {len(counted.statements)} (the same at any number of sources)")


def crowd(
    url: str, clients: int, workers: int, seconds: float, pages: list[tuple[str, str]]
) -> None:
    """Serve with gunicorn (gunicorn.conf.py, `workers` workers) and let `clients` signed-in
    browsers ask for each of `pages` in turn as fast as they are answered; print the
    throughput and percentiles of each."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "WAL_MONITOR_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "gunicorn", "wsgi:app", "--workers", str(workers)]
    server = subprocess.Popen(
        [*command, "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def serving() -> bool:
            try:
                return requests.get(f"{base}/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        assert wait_for(serving, timeout=60), "gunicorn did not serve"
        browser = requests.Session()
        page = browser.get(f"{base}/login", timeout=10).text
        token = page.split('name="csrf-token" content="')[1].split('"')[0]
        signed_in = browser.post(
            f"{base}/login",
            data={"username": "alice", "password": PASSWORD, "csrf_token": token},
            allow_redirects=False,
            timeout=10,
        )
        assert signed_in.status_code == 303, signed_in.status_code
        cookies = browser.cookies.get_dict()
        for label, path in pages:
            _crowd_one(f"{base}{path}", label, cookies, clients, workers, seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _crowd_one(
    url: str, label: str, cookies: dict[str, str], clients: int, workers: int, seconds: float
) -> None:
    """Let the clients ask for `url` for `seconds` after a warm-up; print what they got."""
    latencies: list[float] = []
    failures: list[int] = []
    stop = threading.Event()
    measuring = threading.Event()

    def client() -> None:
        session = requests.Session()
        session.cookies.update(cookies)
        while not stop.is_set():
            started = time.perf_counter()
            response = session.get(url, timeout=60)
            took = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                failures.append(response.status_code)
            elif measuring.is_set():
                latencies.append(took)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(3)  # every worker warm
    measuring.set()
    started = time.perf_counter()
    time.sleep(seconds)
    measuring.clear()
    elapsed = time.perf_counter() - started
    stop.set()
    for thread in threads:
        thread.join()
    ordered = sorted(latencies)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    print(
        f"  {label}: {clients} clients, {workers} gunicorn workers, {seconds:.0f} s: "
        f"{len(latencies):,} answers, {len(latencies) / elapsed:.0f} a second; "
        f"p50 {statistics.median(ordered):.0f} ms, p95 {p95:.0f} ms; not 200: {len(failures)}; "
        f"load average {load_average()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    print(f"load average at the start: {load_average()}")
    cluster = Cluster("bench-dashboard").start()
    try:
        app, url = fleet_app(cluster, 1000)
        weigh(app, args.runs, " (target <= 150 kB, <= 40 ms)", before=True)
        with app.app_context():
            db.engine.dispose()
        crowd(
            url,
            args.clients,
            args.workers,
            args.seconds,
            [
                ("/ (target p95 <= 300 ms)", "/"),
                ("every source listed, as / was before", "/?shown=1000"),
            ],
        )
        app, _ = fleet_app(cluster, 10_000)
        weigh(app, args.runs, " (target <= 150 kB, <= 60 ms)", before=False)
        print(f"load average at the end: {load_average()}")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
