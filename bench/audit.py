"""Time reading a long audit log: a page by cursor, deep in the log, against the same page by
OFFSET, and one entity's history; then its CSV export of every record, served by gunicorn,
against psql's \\copy of the same rows, with the worker's memory while it streams.

Run by hand from the repository root (it starts its own PostgreSQL cluster and gunicorn):

    .venv/bin/python bench/audit.py --records 1000000
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SECRET_KEY", "bench-secret-key")

from flask_migrate import upgrade  # noqa: E402
from sqlalchemy import select, text  # noqa: E402

from bench.metrics import serve as gunicorn  # noqa: E402
from rosetta_web import create_app  # noqa: E402
from rosetta_web.audit import services as audit  # noqa: E402
from rosetta_web.audit.export import written  # noqa: E402
from rosetta_web.auth import services as auth  # noqa: E402
from rosetta_web.extensions import db  # noqa: E402
from rosetta_web.models import AuditRecord  # noqa: E402
from tests.pg import Cluster, client_options  # noqa: E402

MB = 1024 * 1024

# `count` records a second apart (with microseconds, as utcnow() gives them), over `targets`
# sources and 20 actors; a fifth are updates whose changes are three fields, as Rosetta stores
# them (json.dumps, keys in order), a tenth refused with a message a CSV must quote.
FILL = """
INSERT INTO audit_log (at, actor, ip, action, target_type, target_id, target_name, changes,
                       outcome, message)
SELECT now() - make_interval(secs => :count - i + random()),
       'operator-' || i % 20, '10.0.0.1',
       (ARRAY['update', 'start', 'pause', 'check', 'sign_in'])[1 + i % 5],
       'source', 1 + i % :targets, 'source-' || i % :targets,
       CASE WHEN i % 5 = 0
            THEN ('{"alert_overrides.forecast_hours": [null, 12], "name": ["source-'
                  || i % :targets || '", "src-' || i % :targets || '"], "pg_port": [5432, '
                  || 5433 + i % 7 || ']}')::json
            ELSE '{}'::json END,
       CASE WHEN i % 10 = 3 THEN 'refused' ELSE 'done' END,
       CASE WHEN i % 10 = 3 THEN 'A source named "source-' || i % :targets
                                  || '" exists, choose another name' END
FROM generate_series(1, :count) AS i
"""


def fill(count: int, targets: int) -> None:
    """Write `count` records in one statement."""
    db.session.execute(text(FILL), {"count": count, "targets": targets})
    db.session.commit()


def timed(call, repeat: int = 7) -> float:  # type: ignore[no-untyped-def]
    """The median of `repeat` calls, in milliseconds."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def rss_mb(pid: int) -> float:
    """The process's resident memory now, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def serve(url: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start gunicorn with one worker on the metadata database; return it, its worker's pid
    and its port."""
    server, port = gunicorn(url, 1)
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    return server, int(children[0]), port


def download(port: int, token: str) -> tuple[int, int]:
    """GET every record as CSV, read as it streams; return the bytes and the lines."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/audit/export.csv",
        headers={"Authorization": f"Bearer {token}"},
    )
    size = lines = 0
    with urllib.request.urlopen(request, timeout=300) as response:
        assert response.status == 200, response.status
        while chunk := response.read(256 * 1024):
            size += len(chunk)
            lines += chunk.count(b"\n")
    return size, lines


def export(app, cluster: Cluster, url: str, token: str, args) -> None:  # type: ignore[no-untyped-def]
    """Time the CSV export of every record through gunicorn against psql's \\copy of the same
    rows, and watch the worker's memory while it streams."""
    database = url.rsplit("/", 1)[1]
    print(f"load average before the export: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    copies = []
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "audit.csv"
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run(
                ["psql", *client_options(cluster, database), "-X", "-q", "-c"]
                + [
                    "\\copy (SELECT * FROM audit_log ORDER BY id DESC) "
                    f"TO '{target}' WITH (FORMAT csv, HEADER)"
                ],
                check=True,
                capture_output=True,
            )
            copies.append(time.perf_counter() - started)
        copied_mb = target.stat().st_size / MB
    server, worker, port = serve(url)
    try:
        started_mb = rss_mb(worker)
        download(port, token)  # the worker's first export: imports and connections
        before = rss_mb(worker)
        peak = before
        streaming = True

        def watch() -> None:
            nonlocal peak
            while streaming:
                peak = max(peak, rss_mb(worker))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            size, lines = download(port, token)
            runs.append(time.perf_counter() - started)
        streaming = False
        watcher.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
    seconds, floor = statistics.median(runs), statistics.median(copies)
    print(
        f"CSV export of {args.records:,} records (GET /audit/export.csv, gunicorn, 1 worker): "
        f"median {seconds:.2f} s of 3 (min {min(runs):.2f}, max {max(runs):.2f}), "
        f"{size / MB:.0f} MB, {lines - 1:,} records (target <= 4 s)"
    )
    print(
        f"psql \\copy of the same rows (SELECT * ... ORDER BY id DESC, to a file): "
        f"median {floor:.2f} s of 3, {copied_mb:.0f} MB"
    )
    print(f"ratio export / psql \\copy: {seconds / floor:.1f}x")
    print(
        f"worker RSS: {started_mb:.0f} MB started, {before:.0f} MB after a first export, peak "
        f"{peak:.0f} MB while streaming 3 more (+{peak - before:.0f} MB)"
    )
    if not args.skip_python:
        with app.app_context():
            started = time.perf_counter()
            size_python = sum(len(chunk) for chunk in written(audit.AuditFilter()))
            python_s = time.perf_counter() - started
        print(
            f"the same records written by Python (SQLite's path, and the export before "
            f"COPY), in this process: {python_s:.1f} s, {size_python / MB:.0f} MB; "
            f"{python_s / seconds:.0f}x the export"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument(
        "--skip-python", action="store_true", help="leave out the export written by Python"
    )
    args = parser.parse_args()

    cluster = Cluster("bench-audit").start()
    try:
        app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": cluster.create_database("bench_meta"),
                "LOG_LEVEL": "WARNING",
            }
        )
        url = app.config["SQLALCHEMY_DATABASE_URI"]
        with app.app_context():
            upgrade()
            started = time.perf_counter()
            fill(args.records, args.targets)
            print(f"records: {args.records}, written in {time.perf_counter() - started:.1f} s")
            db.session.execute(text("ANALYZE audit_log"))
            db.session.commit()
            _, raw = auth.create_token(auth.create_user("bench", "bench-Pass-1!", "viewer"), "b")
            newest = db.session.scalar(select(AuditRecord.id).order_by(AuditRecord.id.desc()))
        client = app.test_client()
        headers = {"Authorization": f"Bearer {raw}"}
        depth = args.records * 2 // 3

        def get(query: str) -> None:
            response = client.get(f"/api/v1/audit?{query}", headers=headers)
            assert response.status_code == 200, response.get_json()

        cursor = audit.encode_cursor(newest - depth)
        first = timed(lambda: get("limit=100"))
        deep = timed(lambda: get(f"limit=100&cursor={cursor}"))
        history = timed(lambda: get(f"limit=100&target_type=source&target_id={args.targets // 2}"))
        actor = timed(lambda: get("limit=100&actor=operator-7"))
        action = timed(lambda: get("limit=100&action=check"))
        with app.app_context():
            offset_sql = text("SELECT * FROM audit_log ORDER BY id DESC LIMIT 100 OFFSET :n")
            by_offset = timed(lambda: db.session.execute(offset_sql, {"n": depth}).all())
            by_cursor_sql = text(
                "SELECT * FROM audit_log WHERE id < :id ORDER BY id DESC LIMIT 100"
            )
            by_cursor = timed(
                lambda: db.session.execute(by_cursor_sql, {"id": newest - depth}).all()
            )
        print("GET /api/v1/audit, 100 records (median of 7):")
        print(f"  newest page: {first:.1f} ms")
        print(f"  page {depth:,} records deep, by cursor: {deep:.1f} ms")
        print(f"  one source's history: {history:.1f} ms; one actor's: {actor:.1f} ms")
        print(f"  every check: {action:.1f} ms")
        print(
            f"the same deep page in SQL: by cursor {by_cursor:.2f} ms, by OFFSET {by_offset:.2f} ms"
        )
        print(f"OFFSET / cursor: {by_offset / by_cursor:.0f}x")
        export(app, cluster, url, raw, args)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
