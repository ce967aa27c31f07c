"""A pipeline as Kafka Connect runs it: the source connector's configuration passes Debezium's
own validation in a real JVM against a real source, and never holds the password.

The JVM is started in this test process (once: JPype cannot start a second), as the engine
starts it; no other test module starts one in-process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest

from rosetta_web.engine import connect
from rosetta_web.extensions import db
from rosetta_web.models import Pipeline

from .factories import _store, add_source, new_destination
from .pg import Cluster

pytestmark = pytest.mark.slow

SECRET = "Kafka-Connect-S3cret!"
PROVIDER_REFERENCE = re.compile(r"\$\{file:([^:}]+):([^}]+)\}")


@pytest.fixture(scope="module")
def connect_cluster() -> Iterator[Cluster]:
    """A source of its own: a REPLICATION role signing in with a password (scram), a keyed
    table, a keyless one and one of another schema in a publication, and a pgoutput slot."""
    cluster = Cluster("rosetta-connect").start()
    cluster.create_database("shop")
    with closing(cluster.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE ROLE cdc_user LOGIN REPLICATION PASSWORD '{SECRET}'")
        cur.execute("CREATE SCHEMA sales")
        cur.execute("CREATE TABLE items (id bigint PRIMARY KEY, note text)")
        cur.execute("CREATE TABLE history (at timestamptz, what text)")
        cur.execute('CREATE TABLE sales."Order Lines" (id int PRIMARY KEY)')
        cur.execute('CREATE PUBLICATION cdc_pub FOR TABLE items, history, sales."Order Lines"')
        cur.execute("GRANT USAGE ON SCHEMA sales TO cdc_user")
        cur.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public, sales TO cdc_user")
        cur.execute("SELECT pg_create_logical_replication_slot('cdc_slot', 'pgoutput')")
    yield cluster
    cluster.stop()


def _pipeline(app: Any, cluster: Cluster) -> int:
    """Register the source (as cdc_user), a destination and a paused pipeline; its id."""
    source_id = add_source(
        app,
        "connect-source",
        cluster.port,
        user="cdc_user",
        password=SECRET,
        publication_name="cdc_pub",
        slot_name="cdc_slot",
    )
    destination_id = _store(
        app,
        lambda: new_destination(
            "connect-destination",
            snowflake_account="xy12345.us-east-1",
            snowflake_user="LOADER",
            snowflake_database="ANALYTICS",
            snowflake_schema="RAW",
            snowflake_role="LOADER_ROLE",
            snowflake_private_key_passphrase="key-Passphrase-9",
        ),
    )
    return _store(
        app,
        lambda: Pipeline(
            name="to-kafka",
            source_id=source_id,
            destination_id=destination_id,
            status="PAUSE",
        ),
    )


def _resolved(config: dict[str, str]) -> dict[str, str]:
    """Resolve the file provider's references as a Kafka Connect worker would, from a
    secrets file holding this test's password (for this test only)."""
    secrets = {connect.password_key(int(config["name"].rsplit("-", 1)[1])): SECRET}

    def value(match: re.Match[str]) -> str:
        assert match.group(1) == connect.SECRETS_FILE
        return secrets[match.group(2)]

    return {key: PROVIDER_REFERENCE.sub(value, text) for key, text in config.items()}


def _validation_errors(config: dict[str, str]) -> dict[str, list[str]]:
    """Validate a configuration with Debezium's PostgresConnector in the JVM; return each
    property's error messages (none: it passes, the connection check included)."""
    import jpype

    from rosetta_web.engine import jvm

    jvm.start(256)
    java_map = jpype.JClass("java.util.HashMap")()
    for key, text in config.items():
        java_map.put(key, text)
    connector = jpype.JClass("io.debezium.connector.postgresql.PostgresConnector")()
    result = connector.validate(java_map)
    errors: dict[str, list[str]] = {}
    for config_value in result.configValues():
        messages = [str(message) for message in config_value.errorMessages()]
        if messages:
            errors[str(config_value.name())] = messages
    return errors


def test_the_source_connector_passes_debeziums_validation(app, api, connect_cluster):
    """The source connector's configuration, its password reference resolved as a worker
    resolves it, passes PostgresConnector.validate with no error on any property (it signs
    in to the source as the role); left unresolved, the reference is no password: the same
    validation fails to sign in. The answer never holds the password."""
    pipeline_id = _pipeline(app, connect_cluster)
    response = api.get(f"/api/v1/pipelines/{pipeline_id}/connector-config")
    assert response.status_code == 200
    assert SECRET not in response.get_data(as_text=True)
    assert "key-Passphrase-9" not in response.get_data(as_text=True)
    body = response.get_json()
    config = body["config"]
    name = f"rosetta-pipeline-{pipeline_id}"
    assert body["name"] == config["name"] == name
    assert all(isinstance(value, str) for value in config.values())
    assert config["database.password"] == (
        f"${{file:{connect.SECRETS_FILE}:pipeline-{pipeline_id}.password}}"
    )
    assert config["snapshot.mode"] == "no_data"
    assert config["slot.name"] == "cdc_slot" and config["publication.name"] == "cdc_pub"
    assert config["topic.prefix"] == f"rosetta_{pipeline_id}"
    assert config["table.include.list"] == r"public\.history,public\.items,sales\.Order\ Lines"
    assert config["signal.enabled.channels"] == "source"
    assert config["signal.data.collection"] == "public.rosetta_signal"
    assert not [key for key in config if key.startswith(("offset.", "notification."))]
    assert config["key.converter"] == config["value.converter"] == connect.JSON_CONVERTER

    assert _validation_errors(_resolved(config)) == {}
    unresolved = _validation_errors(config)
    assert list(unresolved) == ["database.hostname"], unresolved
    assert "password authentication failed" in unresolved["database.hostname"][0]


def test_the_answer_gives_the_sink_and_says_what_is_missing(app, api, connect_cluster):
    """A pipeline that never streamed has no offset to seed: offsets is null and
    offsets_missing says why; the sink maps each table's topic to the table Rosetta's loader
    writes, its key and passphrase as references, and says it is not validated."""
    pipeline_id = _pipeline(app, connect_cluster)
    body = api.get(f"/api/v1/pipelines/{pipeline_id}/connector-config").get_json()
    assert body["offsets"] is None
    assert "committed no offset" in body["offsets_missing"]
    sink = body["sink"]["config"]
    prefix = f"rosetta_{pipeline_id}"
    assert (
        sink["topics"]
        == f"{prefix}.public.history,{prefix}.public.items,{prefix}.sales.Order_Lines"
    )
    assert sink["snowflake.topic2table.map"] == (
        f"{prefix}.public.history:HISTORY,{prefix}.public.items:ITEMS,"
        f'{prefix}.sales.Order_Lines:"SALES__Order Lines"'
    )
    assert sink["snowflake.url.name"] == "xy12345.us-east-1.snowflakecomputing.com:443"
    assert sink["snowflake.user.name"] == "LOADER"
    assert (sink["snowflake.database.name"], sink["snowflake.schema.name"]) == ("ANALYTICS", "RAW")
    assert sink["snowflake.role.name"] == "LOADER_ROLE"
    references = {
        key: PROVIDER_REFERENCE.fullmatch(value)
        for key, value in sink.items()
        if value.startswith("${")
    }
    assert set(references) == {"snowflake.private.key", "snowflake.private.key.passphrase"}
    assert body["secret_keys"] == [
        f"pipeline-{pipeline_id}.password",
        *(match.group(2) for match in references.values() if match),
    ]
    assert body["sink_validated"] is False
    assert any("not validated" in note for note in body["notes"])
    assert any("PAUSE" in note for note in body["notes"])


def test_an_unreachable_source_is_a_conflict_naming_it(app, api, connect_cluster):
    """The table list is read from the source: a source that does not answer is a 409
    PublicationUnreadableError, and the password is not in it either."""
    pipeline_id = _pipeline(app, connect_cluster)
    with app.app_context():
        pipeline = db.session.get(Pipeline, pipeline_id)
        assert pipeline is not None
        pipeline.source.pg_port = 1  # nothing listens there
        db.session.commit()
    response = api.get(f"/api/v1/pipelines/{pipeline_id}/connector-config")
    assert response.status_code == 409
    assert response.get_json()["error"] == "PublicationUnreadableError"
    assert SECRET not in response.get_data(as_text=True)


def test_stored_offsets_become_kafka_connects_offsets_body():
    """JdbcOffsetBackingStore's rows (key ["connector", partition], offset JSON) become the
    PATCH /connectors/<name>/offsets entries, the last written per partition."""
    key = json.dumps(["rosetta-pipeline-7", {"server": "rosetta_7"}])
    rows: list[tuple[str | None, str | None]] = [
        (key, json.dumps({"lsn": 100, "txId": 5})),
        (key, json.dumps({"lsn": 200, "txId": 6, "lsn_proc": 200})),
        (json.dumps(["rosetta-pipeline-7", {"server": "gone"}]), None),
    ]
    assert connect.offsets_to_seed(rows) == [
        {"partition": {"server": "rosetta_7"}, "offset": {"lsn": 200, "txId": 6, "lsn_proc": 200}}
    ]
