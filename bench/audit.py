"""Time reading a long audit log: a page by cursor, deep in the log, against the same page by
OFFSET, and one entity's history.

Run by hand from the repository root (it starts its own PostgreSQL cluster):

    .venv/bin/python bench/audit.py --records 300000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SECRET_KEY", "bench-secret-key")

from flask_migrate import upgrade  # noqa: E402
from sqlalchemy import insert, select, text  # noqa: E402

from rosetta_web import create_app  # noqa: E402
from rosetta_web.audit import services as audit  # noqa: E402
from rosetta_web.auth import services as auth  # noqa: E402
from rosetta_web.extensions import db  # noqa: E402
from rosetta_web.models import AuditRecord  # noqa: E402
from rosetta_web.timeutil import utcnow  # noqa: E402
from tests.pg import Cluster  # noqa: E402

ACTIONS = ("update", "start", "pause", "check", "sign_in")


def fill(count: int, targets: int) -> None:
    """Write `count` records, a second apart, spread over `targets` sources and 20 actors."""
    start = utcnow() - timedelta(seconds=count)
    batch = []
    for i in range(count):
        batch.append(
            {
                "at": start + timedelta(seconds=i),
                "actor": f"operator-{i % 20}",
                "ip": "10.0.0.1",
                "action": ACTIONS[i % len(ACTIONS)],
                "target_type": "source",
                "target_id": 1 + i % targets,
                "target_name": f"source-{i % targets}",
                "changes": {"pg_port": [5432, 5433]},
                "outcome": "done",
            }
        )
        if len(batch) == 10_000:
            db.session.execute(insert(AuditRecord), batch)
            batch = []
    if batch:
        db.session.execute(insert(AuditRecord), batch)
    db.session.commit()


def timed(call, repeat: int = 7) -> float:  # type: ignore[no-untyped-def]
    """The median of `repeat` calls, in milliseconds."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--targets", type=int, default=1000)
    args = parser.parse_args()

    cluster = Cluster("bench-audit").start()
    try:
        app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": cluster.create_database("bench_meta"),
                "LOG_LEVEL": "WARNING",
            }
        )
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
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
