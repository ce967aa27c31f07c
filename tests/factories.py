"""Builders of test data, shared by the tests and the benchmarks: operators, sources, samples,
servers, destinations, alerts, channels and their deliveries, and Debezium changes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import count
from typing import Any

from flask import Flask

from rosetta_web.auth import services
from rosetta_web.batching import batches
from rosetta_web.crypto import encrypt_secret
from rosetta_web.engine.changes import Change, Column, TableName, kind_of
from rosetta_web.extensions import db
from rosetta_web.models import (
    Alert,
    Channel,
    Delivery,
    Destination,
    EngineProcess,
    Notification,
    Pipeline,
    PipelineVerification,
    Server,
    SlotMetric,
    Source,
    SourceState,
    WalMetric,
    slot_summary,
)
from rosetta_web.sparkline import draw
from rosetta_web.timeutil import utcnow

from .constants import GIB, MIB

PASSWORD = "correct-horse-battery"
MONITOR_PASSWORD = "Monitor-Pass-9!"
PLAIN_PASSWORD = "Plain-Pass-7!"
# A webhook URL carrying a token in its path, and its signing secret: neither may ever be shown.
HOOK_TOKEN = "T0K3Nzz9c1a8b7"
HOOK_URL = f"https://hooks.example.com/services/{HOOK_TOKEN}"
HOOK_SECRET = "s3cret-signing-key-0123456789"

_alert_keys = count(1)


def create_operator(
    app: Flask, username: str = "alice", password: str = PASSWORD, role: str = "admin"
) -> None:
    """Store an account, an admin unless said otherwise (the one /setup makes is)."""
    with app.app_context():
        services.create_user(username, password, role)


def _built(model: type[Any], columns: dict[str, Any], fields: dict[str, Any]) -> Any:
    """Build `model` from `columns`, then set each of `fields` (properties that encrypt a
    secret among them)."""
    row = model(**columns)
    for key, value in fields.items():
        setattr(row, key, value)
    return row


def _store(app: Flask, build: Callable[[], Any]) -> int:
    """Store the row `build` makes (inside the app: secrets are encrypted with its key); return
    its id."""
    with app.app_context():
        row = build()
        db.session.add(row)
        db.session.commit()
        return row.id


def new_source(name: str, **fields: Any) -> Source:
    """Build (not store) a source with placeholder connection settings, overridden by `fields`."""
    columns = {"pg_host": "h", "pg_port": 5432, "pg_database": "d", "pg_username": "u"}
    columns |= {"publication_name": "p", "replication_id": 0}
    return _built(Source, {"name": name, **columns}, {"pg_password": "x", **fields})


def sampled_source(index: int, **state: Any) -> Source:
    """Build (not store) source number `index` with a monitor state made of `state`."""
    source = new_source(f"src-{index:04d}")
    source.state = SourceState(consecutive_failures=0, slot_count=1, **state)
    return source


def add_source(
    app: Flask,
    name: str,
    port: int,
    user: str = "rosetta_monitor",
    password: str = MONITOR_PASSWORD,
    database: str = "shop",
    publication_name: str = "rosetta_pub",
    slot_name: str = "rosetta_slot",
) -> int:
    """Register a source on 127.0.0.1:`port` the way the API does; return its id."""
    return _store(
        app,
        lambda: new_source(
            name,
            pg_host="127.0.0.1",
            pg_port=port,
            pg_database=database,
            pg_username=user,
            pg_password=password,
            publication_name=publication_name,
            slot_name=slot_name,
        ),
    )


def wal_metric(source_id: int, recorded_at: datetime, **figures: Any) -> WalMetric:
    """Build (not store) one sample of a source's WAL, with one active slot unless told."""
    defaults: dict[str, Any] = {
        "current_lsn": "0/0",
        "wal_position_bytes": 0,
        "slot_count": 1,
        "inactive_slot_count": 0,
    }
    return WalMetric(source_id=source_id, recorded_at=recorded_at, **{**defaults, **figures})


def slot_metric(
    server_id: int, recorded_at: datetime, slot_name: str, **figures: Any
) -> SlotMetric:
    """Build (not store) one slot of a server as a sample at `recorded_at` saw it."""
    defaults: dict[str, Any] = {"slot_type": "logical", "active": True}
    return SlotMetric(
        server_id=server_id,
        recorded_at=recorded_at,
        slot_name=slot_name,
        **{**defaults, **figures},
    )


def new_state(source_id: int | None, **fields: Any) -> SourceState:
    """Build (not store) a source's monitor state: OK, no failures, unless `fields` say."""
    defaults: dict[str, Any] = {"status": "OK", "consecutive_failures": 0}
    return SourceState(source_id=source_id, **{**defaults, **fields})


def new_server(
    address: str = "h:5432", system_identifier: str | None = "7000000000000000042", **fields: Any
) -> Server:
    """Build (not store) a PostgreSQL server as a sample identifies it."""
    return Server(address=address, system_identifier=system_identifier, **fields)


# A server's slots over its samples as the monitor stores them, a row per slot at each sample
# (never one per source), made in one statement on PostgreSQL. Slot k (slot_001...) is in
# database db_<k % databases>, physical when k is a multiple of 50; every fifth has no
# consumer; slot 7 lost the WAL it needed (it retains none) and slot 13 is unreserved; the
# others retain up to 5 GB, a little more at each sample.
MANY_SLOTS = """
INSERT INTO slot_metrics (server_id, recorded_at, slot_name, plugin, slot_type, database, active,
                          inactive_since, retained_bytes, lag_bytes, wal_status, safe_wal_size,
                          series_started_at)
SELECT :server_id, :last - n * :every, 'slot_' || lpad(k::text, 3, '0'),
       CASE WHEN k % 50 <> 0 THEN 'pgoutput' END,
       CASE WHEN k % 50 = 0 THEN 'physical' ELSE 'logical' END,
       CASE WHEN k % 50 <> 0 THEN 'db_' || (k % :databases) END,
       k % 5 <> 0,
       CASE WHEN k % 5 = 0 THEN :last - interval '2 hours' END,
       CASE WHEN k <> 7 THEN ((k * 7919) % 5000)::bigint * 1048576 + k * 4096
                             + (:samples - n) * 65536 END,
       CASE WHEN k % 50 <> 0 AND k <> 7 THEN ((k * 7919) % 5000)::bigint * 524288 END,
       CASE k WHEN 7 THEN 'lost' WHEN 13 THEN 'unreserved' ELSE 'reserved' END,
       CASE WHEN k = 13 THEN 1048576 END,
       :last - :samples * :every
FROM generate_series(0, :samples - 1) AS n CROSS JOIN generate_series(1, :slots) AS k
"""


def add_many_slots(
    server_id: int,
    slots: int,
    last: datetime,
    samples: int = 1,
    every: timedelta = timedelta(minutes=5),
    databases: int = 4,
) -> None:
    """Store (in the session's transaction, PostgreSQL) `samples` samples of a server's
    `slots` slots, `every` apart up to `last` (see MANY_SLOTS)."""
    params = {"server_id": server_id, "slots": slots, "last": last, "samples": samples}
    db.session.execute(db.text(MANY_SLOTS), {**params, "every": every, "databases": databases})


def add_slot_server(app: Flask, slots: int, growing: int = 0) -> tuple[int, int]:
    """Store a source on database db_1 of a server whose three samples, 5 minutes apart, saw
    `slots` slots (see MANY_SLOTS), the source's own samples at the same times, and each
    slot's trend, the first `growing` of them (by name) growing; return the source's and the
    server's ids."""
    last = utcnow().replace(microsecond=0) - timedelta(minutes=1)
    with app.app_context():
        server = new_server(f"h{slots}:5432", system_identifier=f"70000000000000{slots:05d}")
        server.last_sampled_at = last
        source = new_source(f"on-{slots}", pg_database="db_1")
        db.session.add_all([server, source])
        db.session.flush()
        source.state = new_state(source.id, server_id=server.id, last_sampled_at=last)
        add_many_slots(server.id, slots, last, samples=3)
        for n in range(3):
            moment = last - n * timedelta(minutes=5)
            db.session.add(wal_metric(source.id, moment, size_bytes=6 * GIB))
        latest = db.session.execute(
            db.select(SlotMetric.slot_name, SlotMetric.retained_bytes).where(
                SlotMetric.server_id == server.id, SlotMetric.recorded_at == last
            )
        )
        # A trend as the alert rules read it: the growth, and the figures it was fitted to.
        server.slot_trends = {
            name: {
                "growth": 100 * MIB * (k + 1) if k < growing else None,
                "at": last.timestamp(),
                "slot": {"retained_bytes": retained, "safe_wal_size": None},
            }
            for k, (name, retained) in enumerate(sorted(latest))
        }
        db.session.commit()
        return source.id, server.id


def fleet_status(index: int) -> str:
    """Return the monitor status of source number `index` of a fleet: one in 97 ERROR, one in
    89 BACKOFF, one in 53 never sampled (PENDING, no state row), the others OK."""
    if index % 97 == 0:
        return "ERROR"
    if index % 89 == 0:
        return "BACKOFF"
    return "PENDING" if index % 53 == 0 else "OK"


def fleet_retained_bytes(index: int) -> int:
    """Return the WAL retained by source number `index`'s slot: scattered, no two alike."""
    return (index * 7919 % 10007) * 100_000 + index


def add_fleet(count: int, servers: int = 50) -> list[dict[str, Any]]:
    """Store `count` sampled sources in bulk, statements of at most 1,000 rows: source number i
    is src-0000i, database db<i> on server i % `servers`, with a slot of its own (inactive when
    i % 7 == 0) and a 24-hour sparkline; its status is fleet_status(i). Return each one's
    name, status, retained_bytes and inactive_slot_count, for the tests to order themselves."""
    now = utcnow()
    bucket = int(now.timestamp()) // 600 * 600
    # Sixteen lines drawn once, shared: drawing 10,000 would take longer than storing them.
    lines = [
        draw([[bucket - 600 * k, (k * (7 + n)) % 97 + n] for k in range(143, -1, -1)])
        for n in range(16)
    ]
    password = encrypt_secret("x")
    server_rows = [
        {"system_identifier": str(7_100_000_000_000_000_000 + n), "address": f"pg-{n}:5432"}
        for n in range(servers)
    ]
    server_ids = list(
        db.session.scalars(
            db.insert(Server).returning(Server.id, sort_by_parameter_order=True),
            [{**row, "last_sampled_at": now} for row in server_rows],
        )
    )
    fleet = [
        {
            "name": f"src-{index:05d}",
            "status": fleet_status(index),
            "retained_bytes": fleet_retained_bytes(index),
            "inactive_slot_count": int(index % 7 == 0),
        }
        for index in range(count)
    ]
    source_ids: list[int] = []
    for chunk in batches(fleet):
        source_ids += db.session.scalars(
            db.insert(Source).returning(Source.id, sort_by_parameter_order=True),
            [
                {
                    "name": one["name"],
                    "pg_host": f"pg-{index % servers}",
                    "pg_port": 5432,
                    "pg_database": f"db{index}",
                    "pg_username": "u",
                    "pg_password_encrypted": password,
                    "publication_name": "p",
                    "replication_id": 0,
                    "readiness": {"ready": index % 5 != 0},
                }
                for index, one in enumerate(chunk, start=len(source_ids))
            ],
        )
    states, slots = [], []
    for index, (source_id, one) in enumerate(zip(source_ids, fleet, strict=True)):
        server_id = server_ids[index % servers]
        inactive = bool(one["inactive_slot_count"])
        slots.append(
            {
                "server_id": server_id,
                "recorded_at": now,
                "slot_name": f"slot_{index}",
                "plugin": "pgoutput",
                "slot_type": "logical",
                "database": f"db{index}",
                "active": not inactive,
                "inactive_since": now - timedelta(hours=index % 24 + 1) if inactive else None,
                "retained_bytes": one["retained_bytes"],
                "lag_bytes": 0,
                "wal_status": "reserved",
            }
        )
        if one["status"] == "PENDING":
            continue
        failing = one["status"] != "OK"
        states.append(
            {
                "source_id": source_id,
                "status": one["status"],
                "consecutive_failures": 3 if failing else 0,
                "last_attempt_at": now,
                "last_sampled_at": now - timedelta(minutes=10 if failing else 1),
                "last_error": "connection refused" if failing else None,
                "next_attempt_at": now + timedelta(minutes=5) if failing else None,
                "size_bytes": 1024**3 + index,
                "retained_bytes": one["retained_bytes"],
                "slot_count": 1,
                "inactive_slot_count": one["inactive_slot_count"],
                "retained_sparkline": lines[index % len(lines)],
                "server_id": server_id,
            }
        )
    for model, rows in ((SourceState, states), (SlotMetric, slots)):
        for chunk in batches(rows):
            db.session.execute(db.insert(model), chunk)
    # Each server's slots' trends, as a round keeps them: one slot in 101 growing.
    trends: dict[int, dict[str, Any]] = {server_id: {} for server_id in server_ids}
    for index, slot in enumerate(slots):
        trends[slot["server_id"]][slot["slot_name"]] = fleet_trend(index, slot, now)
    # A bulk UPDATE skips the model's validator: the summary is set beside, as it would be.
    db.session.execute(
        db.update(Server),
        [
            {"id": server_id, "slot_trends": trend, **slot_summary(trend)}
            for server_id, trend in trends.items()
        ],
    )
    db.session.commit()
    return fleet


def fleet_trend(index: int, slot: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Return the stored trend of source number `index`'s slot: growing (1 GiB an hour and
    more) when index % 101 == 1, else flat."""
    at = now.timestamp()
    growth = float(GIB * (1 + index % 5)) if index % 101 == 1 else None
    since = slot["inactive_since"]
    return {
        "fitted": growth,
        "growing_since": at - 600 if growth else None,
        "growth": growth,
        "window": 3600 if growth else None,
        "at": at,
        "series": at - 86400,
        "wal": 10 * GIB,
        "flush": 10 * GIB,
        "flush_since": at - 60,
        "wal_at_flush": 10 * GIB,
        "slot": {
            "database": slot["database"],
            "active": slot["active"],
            "inactive_since": since.timestamp() if since else None,
            "retained_bytes": slot["retained_bytes"],
            "lag_bytes": 0,
            "wal_status": "reserved",
            "safe_wal_size": None,
        },
    }


def new_destination(name: str = "d", **fields: Any) -> Destination:
    """Build (not store) a Snowflake destination with placeholder settings, overridden by
    `fields` (a passphrase among them, stored encrypted)."""
    columns = {"snowflake_account": "a", "snowflake_user": "u", "snowflake_database": "db"}
    columns |= {"snowflake_schema": "s", "snowflake_private_key_path": "k.p8"}
    return _built(Destination, {"name": name, **columns}, fields)


def new_alert(source_id: int | None, **fields: Any) -> Alert:
    """Build (not store) an alert as the engine would: a firing retained_wal warning on slot
    `orders` unless `fields` say otherwise; a resolved one resolved a minute ago."""
    now = utcnow()
    values: dict[str, Any] = {
        "key": f"test:{next(_alert_keys)}",
        "rule": "retained_wal",
        "severity": "warning",
        "state": "firing",
        "source_id": source_id,
        "source_name": "production-postgres",
        "slot_name": "orders",
        "value": 6.0 * GIB,
        "threshold": 5.0 * GIB,
        "message": "slot orders retains 6 GB",
        "started_at": now - timedelta(minutes=10),
        "evaluated_at": now,
        **fields,
    }
    if values["state"] == "resolved":
        values.setdefault("resolved_at", now - timedelta(minutes=1))
    return Alert(**values)


def add_alert(app: Flask, source_id: int | None, **fields: Any) -> int:
    """Store an alert built by new_alert; return its id."""
    return _store(app, lambda: new_alert(source_id, **fields))


def new_channel(name: str, **fields: Any) -> Channel:
    """Build (not store) a channel: a webhook for warnings and worse from every source, unless
    `fields` say otherwise (its url and secret among them, stored encrypted)."""
    columns = {"type": "webhook", "min_severity": "warning", "source_ids": []}
    columns |= {key: fields.pop(key) for key in list(columns) if key in fields}
    return _built(Channel, {"name": name, **columns}, fields)


def add_channel(app: Flask, name: str = "seeded", **fields: Any) -> int:
    """Store a webhook channel at HOOK_URL signed with HOOK_SECRET unless told; return its id."""
    url, secret = fields.pop("url", HOOK_URL), fields.pop("secret", HOOK_SECRET)
    return _store(app, lambda: new_channel(name, url=url, secret=secret, **fields))


def new_delivery(channel_id: int, notification_id: int, **fields: Any) -> Delivery:
    """Build (not store) one attempt to deliver a notification: a `test` sent now, unless told."""
    defaults: dict[str, Any] = {
        "event": "test",
        "attempted_at": utcnow(),
        "ok": True,
        "duration_ms": 3,
    }
    return Delivery(
        channel_id=channel_id, notification_id=notification_id, **{**defaults, **fields}
    )


def seed_alerting(app: Flask, source_id: int) -> None:
    """Give every alerts GET something to show: an alert, a channel with a delivery and a
    silence (for tests that call each documented GET with id 1)."""
    add_alert(app, source_id)
    channel_id = add_channel(app)
    with app.app_context():
        notification = Notification(channel_id=channel_id, event="test", payload={})
        db.session.add(notification)
        db.session.flush()
        db.session.add(
            new_delivery(channel_id, notification.id, ok=False, status_code=500, error="HTTP 500")
        )
        db.session.commit()


def add_alerts(app: Flask) -> None:
    """Store a firing alert with a long message, a resolved one, and a channel: the alert
    pages' widest content."""
    now = utcnow()
    long_name = "a-source-with-a-rather-long-name"
    with app.app_context():
        for state in ("firing", "resolved"):
            db.session.add(
                new_alert(
                    1,
                    key=f"slot_inactive:layout:{state}",
                    rule="slot_inactive",
                    state=state,
                    source_name=long_name,
                    slot_name="a_replication_slot_with_a_long_name",
                    value=45,
                    threshold=30,
                    message=f"slot `a_replication_slot_with_a_long_name` on {long_name}:5432 "
                    "has had no consumer for 45 min (warning at 30 min)",
                    started_at=now,
                    resolved_at=now if state == "resolved" else None,
                    evaluated_at=now,
                )
            )
        db.session.add(
            new_channel(
                "pagerduty-for-the-platform-team",
                type="apprise",
                source_ids=[1],
                url="pagerduty://integration-key-1234567890abcdef@api-key-abcdef1234567890",
            )
        )
        db.session.commit()


def new_change(
    table: str,
    op: str,
    row: dict[str, Any] | None,
    columns: dict[str, str | tuple[str, int, int]],
    key: tuple[str, ...] = ("id",),
    lsn: int = 1,
    unchanged: frozenset[str] = frozenset(),
) -> Change:
    """Build a Change as changes.parse reads one: `columns` maps each name to its PostgreSQL
    type (INT4, TEXT, MOOD...) or to (NUMERIC, precision, scale); `table` is schema.name."""
    schema, _, name = table.partition(".")
    built = []
    for column, spec in columns.items():
        pg_type, length, scale = spec if isinstance(spec, tuple) else (spec, None, None)
        kind = kind_of(pg_type, enum=pg_type == "MOOD")  # the tests' one enum type
        built.append(Column(column, pg_type, kind, True, length, scale))
    return Change(
        table=TableName(schema, name),
        op=op,
        key=key,
        columns=tuple(built),
        row=row,
        lsn=lsn,
        committed_ms=lsn,
        unchanged=unchanged,
    )


# The engine process the pages' tests say owns their pipelines (host:pid).
ENGINE_OWNER = "etl-host-1:4242"


def add_pipeline(app: Flask, status: str = "START", name: str = "orders-to-sf") -> int:
    """Store a source, a destination and a pipeline between them; return the pipeline's id."""
    with app.app_context():
        pipeline = Pipeline(
            name=name,
            source=new_source(f"{name}-src"),
            destination=new_destination(f"{name}-dst"),
            status=status,
        )
        db.session.add(pipeline)
        db.session.commit()
        return pipeline.id


def add_engine_process(
    app: Flask, id: str = ENGINE_OWNER, seen_ago_s: float = 2, problem: str | None = None
) -> None:
    """Store an engine process's heartbeat, as the engine writes it."""
    now = utcnow()
    _store(
        app,
        lambda: EngineProcess(
            id=id,
            started_at=now - timedelta(minutes=10),
            seen_at=now - timedelta(seconds=seen_ago_s),
            problem=problem,
        ),
    )


def verify_table(name: str, **fields: Any) -> dict[str, Any]:
    """One table of a stored Verify: the same at both ends unless `fields` say otherwise."""
    return {
        "table": name,
        "source_rows": 10,
        "destination_rows": 10,
        "sampled": 10,
        "differing": [],
        "differing_keys": 0,
        "ok": True,
        "note": None,
        **fields,
    }


def add_verification(
    app: Flask, pipeline_id: int, tables: list[dict[str, Any]], **fields: Any
) -> None:
    """Store a Verify as an engine process ends one: done, ok when every table is."""
    now = utcnow()
    columns = {"state": "done", "sample_keys": 1000, "started_at": now, "finished_at": now}
    columns |= {"ok": all(t["ok"] for t in tables), "tables": tables, **fields}
    _store(app, lambda: PipelineVerification(pipeline_id=pipeline_id, **columns))
