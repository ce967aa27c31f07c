"""A pipeline as Kafka Connect runs it: the Debezium source connector the engine runs, with
Kafka Connect's own offset storage, and the Snowflake sink connector beside it.

The source half is derived from `debezium_properties`, so the engine and Kafka Connect never
disagree on the slot, the publication, the tables or the value formats. Secrets are Kafka
Connect config-provider references (`FileConfigProvider`), never values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .changes import TableName
from .loader import target_table_name
from .properties import Batching, PipelineSpec, debezium_properties

# The properties file the Kafka Connect workers read secrets from (config.providers=file).
SECRETS_FILE = "/opt/kafka/secrets/rosetta.properties"
# The signal table Debezium reads signals from in Kafka Connect (the engine signals in-process).
SIGNAL_SCHEMA = "public"
SIGNAL_TABLE = "rosetta_signal"
SIGNAL_DDL = (
    f"CREATE TABLE {SIGNAL_SCHEMA}.{SIGNAL_TABLE} "
    "(id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL, data varchar(2048))"
)
JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"
SNOWFLAKE_SINK = "com.snowflake.kafka.connector.SnowflakeSinkConnector"
# What only the embedded engine uses: its offset store (Kafka Connect keeps offsets in its
# offsets topic), its in-process signals and notifications, and the batching of its loads.
EMBEDDED_ONLY_PREFIXES = ("offset.", "notification.", "signal.")
EMBEDDED_ONLY = frozenset(
    {"poll.interval.ms", "max.batch.size", "max.queue.size", "max.queue.size.in.bytes"}
)
# Characters Kafka allows in a topic name; Debezium replaces any other with `_`.
_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_SNOWFLAKE_UNQUOTED = re.compile(r"[A-Z_][A-Z0-9_$]*")
SINK_NOT_VALIDATED = (
    "The sink half is not validated by Rosetta: it is generated from the destination's "
    "settings for the Snowflake Kafka connector, which appends each change (no MERGE by key, "
    "unlike Rosetta's loader). Check it on your Kafka Connect cluster before relying on it."
)


def secret_reference(key: str) -> str:
    """Return a Kafka Connect FileConfigProvider reference to `key` of the secrets file."""
    return f"${{file:{SECRETS_FILE}:{key}}}"


def password_key(pipeline_id: int) -> str:
    """Name the source password's key in the secrets file."""
    return f"pipeline-{pipeline_id}.password"


def private_key_key(destination_id: int) -> str:
    """Name the destination private key's key in the secrets file (the PEM body, one line)."""
    return f"destination-{destination_id}.private_key"


def passphrase_key(destination_id: int) -> str:
    """Name the destination key passphrase's key in the secrets file."""
    return f"destination-{destination_id}.private_key_passphrase"


def _text(value: Any) -> str:
    """Write a property's value as Kafka Connect's configuration holds it: text."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _embedded_only(key: str) -> bool:
    return key in EMBEDDED_ONLY or key.startswith(EMBEDDED_ONLY_PREFIXES)


def source_connector(spec: PipelineSpec) -> dict[str, Any]:
    """Return the pipeline's Debezium source connector as Kafka Connect's REST API takes it
    (`{"name", "config"}`): the engine's properties without its embedded-only ones, streaming
    from the committed offset without a snapshot, its password a provider reference."""
    properties = debezium_properties(spec, {}, Batching(seconds=1, rows=1, queue_bytes=1))
    config = {key: _text(value) for key, value in properties.items() if not _embedded_only(key)}
    config.update(
        {
            # The first copy is done: continue from the committed offset (or, without one,
            # the slot's confirmed position, which follows it).
            "snapshot.mode": "no_data",
            "database.password": secret_reference(password_key(spec.pipeline_id)),
            "signal.enabled.channels": "source",
            "signal.data.collection": f"{SIGNAL_SCHEMA}.{SIGNAL_TABLE}",
            # The sink reads what these write: the same JSON, with its schema, as the engine.
            "key.converter": JSON_CONVERTER,
            "value.converter": JSON_CONVERTER,
        }
    )
    return {"name": config["name"], "config": config}


def topic_name(prefix: str, schema: str, table: str) -> str:
    """Return the Kafka topic Debezium writes a table's changes to: prefix.schema.table."""
    return _TOPIC_UNSAFE.sub("_", f"{prefix}.{schema}.{table}")


def _table_setting(name: str) -> str:
    """Write a target table name as the sink's topic2table map names it (quoted if need be)."""
    return name if _SNOWFLAKE_UNQUOTED.fullmatch(name) else '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class SinkTarget:
    """Where the Snowflake sink connector loads: the destination's settings, no secret."""

    destination_id: int
    url: str  # host:port
    user: str
    database: str
    schema: str
    role: str | None
    has_passphrase: bool


def sink_connector(spec: PipelineSpec, target: SinkTarget) -> dict[str, Any]:
    """Return the Snowflake Kafka connector's sink configuration for the pipeline's topics,
    each mapped to the table Rosetta's loader writes (not validated here)."""
    prefix = source_connector(spec)["config"]["topic.prefix"]
    topics = {
        topic_name(prefix, schema, table): target_table_name(TableName(schema, table))
        for schema, table in spec.tables
    }
    config = {
        "name": f"rosetta-pipeline-{spec.pipeline_id}-snowflake",
        "connector.class": SNOWFLAKE_SINK,
        "topics": ",".join(topics),
        "snowflake.topic2table.map": ",".join(
            f"{topic}:{_table_setting(table)}" for topic, table in topics.items()
        ),
        "snowflake.url.name": target.url,
        "snowflake.user.name": target.user,
        "snowflake.private.key": secret_reference(private_key_key(target.destination_id)),
        "snowflake.database.name": target.database,
        "snowflake.schema.name": target.schema,
        "snowflake.ingestion.method": "SNOWPIPE_STREAMING",
        "snowflake.enable.schematization": "true",
        "key.converter": JSON_CONVERTER,
        "key.converter.schemas.enable": "true",
        "value.converter": JSON_CONVERTER,
        "value.converter.schemas.enable": "true",
        # A row per change, with its operation and LSN in Rosetta's own columns.
        "transforms": "unwrap",
        "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState",
        "transforms.unwrap.add.fields": "op,lsn",
        "transforms.unwrap.add.fields.prefix": "_rosetta_",
        "transforms.unwrap.delete.tombstone.handling.mode": "rewrite",
    }
    if target.role:
        config["snowflake.role.name"] = target.role
    if target.has_passphrase:
        config["snowflake.private.key.passphrase"] = secret_reference(
            passphrase_key(target.destination_id)
        )
    return {"name": config["name"], "config": config}


def offsets_to_seed(rows: list[tuple[str | None, str | None]]) -> list[dict[str, Any]]:
    """Turn the engine's stored offsets (JdbcOffsetBackingStore's rows, in the order written:
    the key `["<connector name>", {partition}]` and the offset, both JSON text) into the
    entries of Kafka Connect's `PATCH /connectors/<name>/offsets` body."""
    latest: dict[str, dict[str, Any]] = {}
    for key, value in rows:
        if key is None:
            continue
        _, partition = json.loads(key)
        entry_key = json.dumps(partition, sort_keys=True)
        if value is None:  # a partition's offset removed
            latest.pop(entry_key, None)
            continue
        latest[entry_key] = {"partition": partition, "offset": json.loads(value)}
    return list(latest.values())
