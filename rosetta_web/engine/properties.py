"""What one pipeline's Debezium engine is told: its source, its slot, its offsets, its batches.

The properties live only in the engine's memory (a java.util.Properties): the source's
password and the metadata database's are never written to a file or a command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from ..postgres.connection import Target
from ..postgres.replication_objects import HEARTBEAT_SCHEMA, HEARTBEAT_TABLE, PublishedTable
from .changes import UNCHANGED

# Where Debezium keeps each pipeline's offsets on the metadata PostgreSQL: one table each,
# because every save deletes the whole table; TEXT columns, because the default VARCHAR(1255)
# overflows after an incremental snapshot of a dozen tables and Debezium then only warns.
OFFSETS_TABLE = "rosetta_offsets_{}"
OFFSETS_DDL = (
    "CREATE TABLE %s (id VARCHAR(36) NOT NULL, offset_key TEXT, offset_val TEXT, "
    "record_insert_ts TIMESTAMP NOT NULL, record_insert_seq INTEGER NOT NULL, PRIMARY KEY (id))"
)
# What the offset store is given for a metadata database that asks for no password.
UNUSED_PASSWORD = "unused"
# Where Debezium's notifications (an incremental snapshot's progress) reach the handler.
NOTIFICATIONS = "rosetta.notifications"
# How long Debezium waits before it starts its task again on new connections, after it lost
# the source or could not start the stream.
SOURCE_RETRY_S = 5


@dataclass(frozen=True)
class Batching:
    """How the engine groups changes into one Snowflake load."""

    seconds: float
    rows: int
    queue_bytes: int


@dataclass(frozen=True)
class PipelineSpec:
    """Everything one pipeline's engine needs, read from the metadata database."""

    pipeline_id: int
    name: str
    source: Target  # where and as whom Debezium reads the source
    publication: str = ""
    slot: str = ""
    tables: tuple[tuple[str, str], ...] = ()  # the publication's (schema, table), by name
    heartbeat: bool = False  # the source's publication has the heartbeat table
    # Those of `tables` without a primary key: loaded append-only, never REFRESHed.
    keyless: frozenset[tuple[str, str]] = frozenset()
    # When the pipeline was created: its id alone may name a new pipeline once it is deleted
    # (SQLite gives the highest id again).
    created_at: datetime | None = None


def pipeline_spec(
    pipeline_id: int,
    name: str,
    source: Target,
    publication: str,
    slot: str,
    published: list[PublishedTable],
    heartbeat: bool,
    created_at: datetime | None = None,
) -> PipelineSpec:
    """Describe a pipeline from its source's publication as read from the source: its tables
    (the heartbeat table aside), and which of them have no primary key."""
    tables = [t for t in published if (t.schema, t.table) != (HEARTBEAT_SCHEMA, HEARTBEAT_TABLE)]
    return PipelineSpec(
        pipeline_id=pipeline_id,
        name=name,
        source=source,
        publication=publication,
        slot=slot,
        tables=tuple((table.schema, table.table) for table in tables),
        heartbeat=heartbeat,
        created_at=created_at,
        keyless=frozenset((t.schema, t.table) for t in tables if not t.has_primary_key),
    )


def table_pattern(schema: str, table: str) -> str:
    """Match exactly one table in Debezium's table.include.list (a comma-separated regex list)."""
    return re.escape(f"{schema}.{table}").replace(",", "\\x2c")


def offset_storage(database_url: str, folder: Path | None, pipeline_id: int) -> dict[str, str]:
    """Say where the pipeline's offsets live: a table of the metadata PostgreSQL, or a file in
    `folder` (beside the SQLite database) otherwise."""
    url = make_url(database_url)
    if folder is not None:
        path = folder / f"pipeline-{pipeline_id}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        return {
            "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
            "offset.storage.file.filename": str(path),
        }
    jdbc = f"jdbc:postgresql://{url.host or 'localhost'}:{url.port or 5432}/{url.database}"
    properties = {
        "offset.storage": "io.debezium.storage.jdbc.offset.JdbcOffsetBackingStore",
        "offset.storage.jdbc.connection.url": jdbc,
        "offset.storage.jdbc.table.name": OFFSETS_TABLE.format(pipeline_id),
        "offset.storage.jdbc.table.ddl": OFFSETS_DDL,
    }
    if url.username:
        properties["offset.storage.jdbc.connection.user"] = url.username
    # Debezium requires one; a server that trusts the connection ignores it.
    properties["offset.storage.jdbc.connection.password"] = str(url.password or UNUSED_PASSWORD)
    return properties


def debezium_properties(
    spec: PipelineSpec, offsets: dict[str, str], batching: Batching
) -> dict[str, Any]:
    """Return the pipeline's Debezium properties."""
    rows = max(1, batching.rows)
    tables = [table_pattern(schema, table) for schema, table in spec.tables]
    properties: dict[str, Any] = {
        # Each pipeline's own names: its MBeans, topics and offsets never collide.
        "name": f"rosetta-pipeline-{spec.pipeline_id}",
        "topic.prefix": f"rosetta_{spec.pipeline_id}",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": spec.source.host,
        "database.port": spec.source.port,
        "database.user": spec.source.user,
        "database.password": spec.source.password,
        "database.dbname": spec.source.database,
        "plugin.name": "pgoutput",
        "publication.name": spec.publication,
        "publication.autocreate.mode": "disabled",
        "slot.name": spec.slot,
        # Debezium does not read the list from the publication.
        "table.include.list": ",".join(tables),
        "snapshot.mode": "initial",
        # A slot created again behind Rosetta's back (ahead of the offset) stops the pipeline.
        "offset.mismatch.strategy": "trust_offset",
        # A stream that cannot start (the slot still held by a lost host's walsender, or the
        # connection cut as the stream starts) is one retriable error, as a lost source is:
        # Debezium starts the task again on new connections SOURCE_RETRY_S later, for as long
        # as it takes. Its own retries of the start would reuse the connection, dead or alive
        # (24 of them took 2 minutes).
        "slot.max.retries": 0,
        "retriable.restart.connector.wait.ms": SOURCE_RETRY_S * 1000,
        "skipped.operations": "none",
        "tombstones.on.delete": "false",
        "decimal.handling.mode": "string",
        "interval.handling.mode": "string",
        "binary.handling.mode": "bytes",
        "column.propagate.source.type": ".*",
        "unavailable.value.placeholder": UNCHANGED,
        "key.converter.schemas.enable": "true",
        "value.converter.schemas.enable": "true",
        # One load per batch: Debezium hands over what arrived within `seconds`, up to `rows`.
        "poll.interval.ms": int(batching.seconds * 1000),
        "max.batch.size": rows,
        "max.queue.size": rows * 2 + 1,
        # Memory, whatever the rows' width: a batch also ends when its queue holds this much.
        "max.queue.size.in.bytes": batching.queue_bytes,
        # The handler loads each batch before it returns: commit its offset at once.
        "offset.flush.interval.ms": 0,
        "heartbeat.interval.ms": 10_000,
        "signal.enabled.channels": "in-process",
        "notification.enabled.channels": "sink",
        "notification.sink.topic.name": NOTIFICATIONS,
        "incremental.snapshot.allow.schema.changes": "true",
        "read.only": "true",
        **offsets,
    }
    if spec.heartbeat:
        properties["table.include.list"] += "," + table_pattern(HEARTBEAT_SCHEMA, HEARTBEAT_TABLE)
        properties["heartbeat.action.query"] = (
            f"INSERT INTO {HEARTBEAT_SCHEMA}.{HEARTBEAT_TABLE} (slot_name, beat_at) "
            f"VALUES ('{spec.slot}', now()) "
            "ON CONFLICT (slot_name) DO UPDATE SET beat_at = excluded.beat_at"
        )
    return properties
