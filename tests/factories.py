"""Builders of test data, shared by the tests and the benchmarks: operators, sources, samples."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Flask

from rosetta_web.auth import services
from rosetta_web.extensions import db
from rosetta_web.models import SlotMetric, Source, SourceState, WalMetric

PASSWORD = "correct-horse-battery"
MONITOR_PASSWORD = "Monitor-Pass-9!"
PLAIN_PASSWORD = "Plain-Pass-7!"


def create_operator(
    app: Flask, username: str = "alice", password: str = PASSWORD, role: str = "admin"
) -> None:
    """Store an account, an admin unless said otherwise (the one /setup makes is)."""
    with app.app_context():
        services.create_user(username, password, role)


def new_source(name: str, **fields: Any) -> Source:
    """Build (not store) a source with placeholder connection settings, overridden by `fields`."""
    source = Source(
        name=name,
        pg_host="h",
        pg_port=5432,
        pg_database="d",
        pg_username="u",
        publication_name="p",
        replication_id=0,
    )
    source.pg_password = fields.pop("pg_password", "x")
    for key, value in fields.items():
        setattr(source, key, value)
    return source


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
    with app.app_context():
        source = new_source(
            name,
            pg_host="127.0.0.1",
            pg_port=port,
            pg_database=database,
            pg_username=user,
            pg_password=password,
            publication_name=publication_name,
            slot_name=slot_name,
        )
        db.session.add(source)
        db.session.commit()
        return source.id


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
