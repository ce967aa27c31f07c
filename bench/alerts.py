"""Count the queries and time the alert rules' evaluation after a round of 1,000 sources.

Each source is a database on a server of its own with 3 logical slots, an hour of slot history
(a sample a minute) and the trends the monitor keeps from it; some slots retain too much WAL,
have no consumer, have a stalled consumer, grow towards the critical threshold or are about to
be lost, and one source keeps failing. The same shape at 10 sources must take as many queries.
Nothing is delivered: evaluate() only queues the notifications in the outbox. Run by hand from
the repository root (it starts its own PostgreSQL cluster):

    .venv/bin/python bench/alerts.py
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SECRET_KEY", "bench-secret-key")

from flask import Flask  # noqa: E402
from flask_migrate import upgrade  # noqa: E402
from sqlalchemy import event, func, insert, select  # noqa: E402

from rosetta_web import create_app  # noqa: E402
from rosetta_web.alerts.engine import trends  # noqa: E402
from rosetta_web.alerts.engine.evaluation import evaluate  # noqa: E402
from rosetta_web.extensions import db  # noqa: E402
from rosetta_web.models import (  # noqa: E402
    Alert,
    Channel,
    Notification,
    Server,
    Silence,
    SlotMetric,
    SourceState,
)
from rosetta_web.timeutil import utcnow  # noqa: E402
from tests.factories import new_source  # noqa: E402
from tests.pg import Cluster  # noqa: E402

GIB = 1024**3
MIB = 1024**2
SLOTS = 3  # per server
HISTORY = 60  # one-minute samples before the latest one
WAL_PER_MINUTE = 20 * MIB  # each server writes this much WAL a minute
FAILING = 5  # the source whose rounds keep failing
SILENCED = 3  # the source under a silence (its slot 7 has no consumer)


def kind(k: int) -> str:
    """What slot number `k` (0-based, over every server) does; each kind shows up in 10 sources
    and in the same share of 1,000: 5 % above the warning threshold, 2 % without a consumer,
    1 % growing towards the critical threshold, 1 % with a stalled consumer, 0.2 % unreserved."""
    if k % 20 == 0:
        return "warning"
    if k % 50 == 7:
        return "inactive"
    if k % 100 == 13:
        return "growing"
    if k % 100 == 29:
        return "stalled"
    if k % 500 == 11:
        return "unreserved"
    return "normal"


def slot_history(server_id: int, j: int, now: datetime) -> tuple[list[dict[str, Any]], dict]:
    """Return one slot's rows, oldest first (the last one at `now`), and the trend the monitor
    builds from them, sample by sample."""
    k = (server_id - 1) * SLOTS + j
    what = kind(k)
    name = f"slot_{j}"
    rows: list[dict[str, Any]] = []
    trend: dict[str, Any] | None = None
    flush_then = 10**11  # a stalled consumer's confirmed position
    for age in range(HISTORY, -1, -1):
        at = now - timedelta(minutes=age)
        minute = HISTORY - age
        wal = 10**11 + server_id * GIB + minute * WAL_PER_MINUTE
        active, wal_status, safe, inactive_since = True, "reserved", None, None
        lag = (minute % 3) * 100_000  # a consumer keeping up: its position moves
        if what == "warning":
            retained = 6 * GIB + ((minute * 31 + k) % 7) * MIB
        elif what == "inactive":
            active, inactive_since = False, now - timedelta(hours=2)
            lag = 2 * GIB + minute * WAL_PER_MINUTE
            retained = GIB + minute * WAL_PER_MINUTE
        elif what == "growing":
            retained = 2 * GIB + minute * (2 * GIB // 60)
        elif what == "stalled":
            lag = wal - flush_then
            retained = 500 * MIB + minute * WAL_PER_MINUTE
        elif what == "unreserved":
            wal_status, safe = "unreserved", 200 * MIB
            retained = 8 * GIB + minute * (GIB // 60)
        else:
            retained = 100 * MIB + (k * 7919 % 400) * MIB + ((minute * 31 + k) % 7) * MIB
        row = {
            "server_id": server_id,
            "recorded_at": at,
            "slot_name": name,
            "plugin": "pgoutput",
            "slot_type": "logical",
            "database": "d",  # new_source's database: the slot's owner
            "active": active,
            "inactive_since": inactive_since,
            "retained_bytes": retained,
            "lag_bytes": lag,
            "wal_status": wal_status,
            "safe_wal_size": safe,
        }
        rows.append(row)
        trend = trends.update(trend, at, SimpleNamespace(**row), wal)
    assert trend is not None
    return rows, trend


def fleet(sources: int, now: datetime) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Return each server's row (its slot trends built over the hour) and its slot rows."""
    servers = []
    for server_id in range(1, sources + 1):
        history = [slot_history(server_id, j, now) for j in range(SLOTS)]
        server = {
            "id": server_id,
            "system_identifier": str(7_000_000_000_000_000_000 + server_id),
            "address": f"db-{server_id}:5432",
            "max_slot_wal_keep_size": "-1",
            "last_sampled_at": now,
            # As the monitor stores them: the points apart from the rest of each trend.
            "slot_points": {rows[0]["slot_name"]: trend.pop("points") for rows, trend in history},
            "slot_trends": {rows[0]["slot_name"]: trend for rows, trend in history},
            "created_at": now - timedelta(days=30),
        }
        servers.append((server, [row for rows, _ in history for row in rows]))
    return servers


def load(servers: list[tuple[dict[str, Any], list[dict[str, Any]]]], now: datetime) -> int:
    """Store the sources, their servers, states and slot rows, two channels and a silence, as
    they stand after a round at `now`; return how many slot rows."""
    count = len(servers)
    db.session.add_all(
        new_source(
            f"source-{i:04d}",
            # A few sources override a setting (each alert's repeat interval is merged).
            alert_overrides={"repeat_minutes": 15} if i % 100 == 2 else None,
        )
        for i in range(1, count + 1)
    )
    db.session.commit()
    db.session.execute(insert(Server), [server for server, _ in servers])
    db.session.execute(
        insert(SourceState),
        [
            {
                "source_id": server["id"],
                "server_id": server["id"],
                "status": "ERROR" if server["id"] == FAILING else "OK",
                "consecutive_failures": 5 if server["id"] == FAILING else 0,
                "last_error": "connection refused" if server["id"] == FAILING else None,
                "last_attempt_at": now,
                "last_sampled_at": now - timedelta(minutes=5) if server["id"] == FAILING else now,
                "slot_count": SLOTS,
                "inactive_slot_count": sum(
                    not row["active"] for row in slots if row["recorded_at"] == now
                ),
            }
            for server, slots in servers
        ],
    )
    rows = [row for _, slots in servers for row in slots]
    for first in range(0, len(rows), 20_000):
        db.session.execute(insert(SlotMetric), rows[first : first + 20_000])
    db.session.add(
        Silence(
            source_id=SILENCED,
            ends_at=now + timedelta(hours=2),
            comment="maintenance",
            created_by="bench",
        )
    )
    for name, severity in (("ops", "warning"), ("pager", "critical")):
        channel = Channel(name=name, type="webhook", min_severity=severity, source_ids=[])
        channel.url = "http://127.0.0.1:9/hook"  # never called: nothing is delivered here
        channel.secret = "x" * 20
        db.session.add(channel)
    db.session.commit()
    return len(rows)


class Statements:
    """Record the statements sent to the database while `counting`: each cursor execution,
    how many statements the server runs for it (an executemany: one per parameter set), and
    how long it took."""

    def __init__(self, engine: Any) -> None:
        self.seen: list[list[Any]] = []
        self.on = False
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def] # noqa: ANN001, PLR0913
        if self.on:
            rows = len(parameters) if executemany else 1
            self.seen.append([statement, rows, time.perf_counter()])

    def _after(self, *_: Any) -> None:
        if self.on and self.seen:
            self.seen[-1][2] = time.perf_counter() - self.seen[-1][2]

    @contextmanager
    def counting(self) -> Iterator[list[list[Any]]]:
        self.seen = []
        self.on = True
        try:
            yield self.seen
        finally:
            self.on = False


def shape(seen: list[list[Any]]) -> list[str]:
    """Name each statement by its verb and table, to compare two evaluations."""
    names = []
    for statement, *_ in seen:
        words = statement.split()
        verb = words[0].upper()
        table = next(
            (
                words[i + 1]
                for i, word in enumerate(words[:-1])
                if word.upper() in ("FROM", "INTO", "UPDATE")
            ),
            "",
        )
        names.append(f"{verb} {table}")
    return names


def run(app: Flask, counter: Statements, now: datetime) -> dict[str, Any]:
    """Evaluate once at `now`; return the time, the statements and the notifications queued."""
    with app.app_context(), counter.counting() as seen:
        started, cpu = time.perf_counter(), time.process_time()
        queued = evaluate(now)
        took_ms = (time.perf_counter() - started) * 1000
        cpu_ms = (time.process_time() - cpu) * 1000
    return {
        "ms": took_ms,
        "cpu_ms": cpu_ms,
        "queued": queued,
        "executes": len(seen),
        "server_statements": sum(rows for _, rows, _ in seen),
        "sql_ms": sum(took for *_, took in seen) * 1000,
        "shape": shape(seen),
        "seen": list(seen),
    }


def prepare(app: Flask, servers: list, now: datetime) -> float:
    """Build the schema with the migrations and store the fleet; return the seconds taken."""
    with app.app_context():
        upgrade()
        started = time.perf_counter()
        load(servers, now)
        if db.engine.dialect.name == "postgresql":
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        db.session.remove()
        return time.perf_counter() - started


def bench(app: Flask, now: datetime, runs: int) -> dict[str, Any]:
    """Evaluate once (it fires the alerts), then `runs` times a minute apart as rounds would."""
    with app.app_context():
        counter = Statements(db.engine)
    first = run(app, counter, now)
    steady = [run(app, counter, now + timedelta(minutes=i)) for i in range(1, runs + 1)]
    with app.app_context():
        firing = Counter(
            db.session.scalars(select(Alert.rule).where(Alert.state == "firing")).all()
        )
        outbox = db.session.scalar(select(func.count(Notification.id)))
        delivered = db.session.scalar(
            select(func.count(Notification.id)).where(Notification.delivered_at.is_not(None))
        )
        db.session.remove()
        db.engine.dispose()
    return {
        "first": first,
        "steady": steady,
        "firing": firing,
        "outbox": outbox,
        "delivered": delivered,
    }


def counts(result: dict[str, Any]) -> tuple[int, int]:
    """Return the most cursor executions and server statements of a steady evaluation."""
    return (
        max(r["executes"] for r in result["steady"]),
        max(r["server_statements"] for r in result["steady"]),
    )


def report(
    label: str, small: dict[str, Any], large: dict[str, Any], few: int, sources: int
) -> None:
    """Print the query counts at `few` and `sources` sources, the times, the alerts, the outbox."""
    s_exec, s_server = counts(small)
    l_exec, l_server = counts(large)
    constant = s_exec == l_exec and small["steady"][0]["shape"] == large["steady"][0]["shape"]
    print(
        f"{label}: queries per evaluation (steady state): {s_exec} at {few} sources, {l_exec} at "
        f"{sources:,} sources -> {'constant' if constant else 'NOT constant'} (target: constant)"
    )
    if (s_server, l_server) != (s_exec, l_exec):
        print(
            f"  statements run (an executemany runs one per row): {s_server} at "
            f"{few} sources, {l_server:,} at {sources:,}"
        )
    if not constant:
        grew = Counter(large["steady"][0]["shape"])
        grew.subtract(Counter(small["steady"][0]["shape"]))
        for name, more in grew.most_common():
            if more:
                print(f"    {more:+d} x {name}")
    print(
        f"  first evaluation (fires the alerts): {small['first']['executes']} queries at {few} "
        f"sources, {large['first']['executes']} at {sources:,}"
    )
    times = [r["ms"] for r in large["steady"]]
    first = large["first"]
    print(f"  load average while measuring: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(
        f"  evaluation at {sources:,} sources: median {statistics.median(times):.1f} ms, min "
        f"{min(times):.1f}, max {max(times):.1f} over {len(times)} runs a minute apart "
        f"(target median <= 200 ms); first run {first['ms']:.1f} ms (fires the alerts, queues "
        f"{first['queued']} notifications)"
    )
    cpu = statistics.median(r["cpu_ms"] for r in large["steady"])
    print(f"  CPU time of this process (the app's side, not the database's): median {cpu:.1f} ms")
    middle = sorted(large["steady"], key=lambda r: r["ms"])[len(times) // 2]
    slowest = max(middle["seen"], key=lambda seen: seen[2])
    print(
        f"  the median run waited {middle['sql_ms']:.1f} ms of {middle['ms']:.1f} on executing its "
        f"{middle['executes']} statements, the slowest {slowest[2] * 1000:.1f} ms "
        f"({shape([slowest])[0]}); the rest fetching rows and in Python"
    )
    firing = large["firing"]
    rules = ", ".join(f"{rule} {n}" for rule, n in sorted(firing.items()))
    print(
        f"  alerts firing: {sum(firing.values())} ({rules}); notifications queued: "
        f"{large['outbox']} in the outbox ({sum(r['queued'] for r in large['steady'])} of them "
        f"by the steady runs), {large['delivered']} delivered"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--small", type=int, default=10, help="sources of the same shape")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--sqlite", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--show-queries", action="store_true")
    args = parser.parse_args()

    now = utcnow().replace(second=0, microsecond=0)
    started = time.perf_counter()
    servers = fleet(args.sources, now)
    build_s = time.perf_counter() - started
    slot_rows = sum(len(rows) for _, rows in servers)
    print(
        f"fleet: {args.sources:,} sources, each on a server of its own with {SLOTS} slots; "
        f"{slot_rows:,} slot rows ({HISTORY + 1} one-minute samples a slot), trends built by "
        f"trends.update() in {build_s:.1f} s"
    )
    print(f"load average: {' '.join(f'{n:.2f}' for n in os.getloadavg())} on {os.cpu_count()} CPUs")
    kinds = Counter(kind(k) for k in range(args.sources * SLOTS))
    print("  slots: " + ", ".join(f"{what} {n}" for what, n in kinds.most_common()))

    cluster = Cluster("bench-alerts").start()
    folder = tempfile.TemporaryDirectory(prefix="bench-alerts-")
    try:
        apps: dict[tuple[str, int], Flask] = {}
        for count in (args.small, args.sources):
            apps["PostgreSQL", count] = app_on(cluster.create_database(f"bench_alerts_{count}"))
            if args.sqlite:
                apps["SQLite", count] = app_on(f"sqlite:///{Path(folder.name) / f'{count}.db'}")
        for (engine, count), app in apps.items():
            took_s = prepare(app, servers[:count], now)
            if count == args.sources:
                print(f"{engine}: stored by the models and bulk inserts in {took_s:.0f} s")
        # Only what the app holds stays in memory while evaluating, as in a real process.
        del servers
        gc.collect()
        with apps["PostgreSQL", args.sources].app_context():
            version = db.session.scalar(db.text("SHOW server_version"))
            db.session.remove()
        for engine in ("PostgreSQL", "SQLite") if args.sqlite else ("PostgreSQL",):
            small = bench(apps[engine, args.small], now, args.runs)
            large = bench(apps[engine, args.sources], now, args.runs)
            label = f"PostgreSQL {version.split()[0]}" if engine == "PostgreSQL" else engine
            report(label, small, large, args.small, args.sources)
            if args.show_queries:
                for statement, rows, took in large["steady"][0]["seen"]:
                    print(f"    {took * 1000:6.1f} ms [{rows}] {' '.join(statement.split())[:150]}")
    finally:
        cluster.stop()
        folder.cleanup()


def app_on(url: str) -> Flask:
    """Create the app on the database at `url`, its monitor off (nothing samples, nothing is
    delivered)."""
    return create_app(
        {"SQLALCHEMY_DATABASE_URI": url, "LOG_LEVEL": "WARNING", "WAL_MONITOR_ENABLED": False}
    )


if __name__ == "__main__":
    main()
