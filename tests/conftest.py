"""Fixtures: a real PostgreSQL metadata database, the app, clients signed in by form or token."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

# Set before the app reads them, so no developer's .env or instance key leaks into a run.
os.environ.update(SECRET_KEY="test-secret-key-not-for-production", APP_ENV="development")
os.environ.pop("ENCRYPTION_KEY", None)
# An instance folder of the run's own (of each worker's, run in parallel): its lock files and
# key are nobody else's. The engine processes the tests start inherit it.
os.environ["ROSETTA_INSTANCE_PATH"] = tempfile.mkdtemp(
    prefix=f"rosetta-instance-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-"
)

from rosetta_web import create_app  # noqa: E402
from rosetta_web.auth import services  # noqa: E402
from rosetta_web.extensions import db as _db  # noqa: E402
from rosetta_web.monitor.workers import kept_connections  # noqa: E402

from .apps import make_app  # noqa: E402
from .clients import Api, Browser, QueryCounter, sign_in  # noqa: E402
from .factories import MONITOR_PASSWORD, PASSWORD, PLAIN_PASSWORD, create_operator  # noqa: E402
from .pg import Cluster, HangingServer, free_port  # noqa: E402


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster | None]:
    """Start a disposable cluster, unless TEST_DATABASE_URL names a database to use."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    cluster = Cluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def source_cluster(pg_cluster: Cluster | None) -> Iterator[Cluster]:
    """A cluster with wal_level=logical to monitor: the test cluster, or one of its own."""
    if pg_cluster is not None:
        yield pg_cluster
        return
    cluster = Cluster("rosetta-source").start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def source_db(source_cluster: Cluster) -> Iterator[dict[str, Any]]:
    """A source database 'shop' with a publication, an inactive pgoutput slot and two roles.

    rosetta_monitor has pg_monitor (may size the WAL directory); plain_user has not.
    """
    from contextlib import closing

    source_cluster.create_database("shop")
    with closing(source_cluster.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, note text)")
        cur.execute("CREATE PUBLICATION rosetta_pub FOR TABLE orders")
        cur.execute(f"CREATE ROLE rosetta_monitor LOGIN PASSWORD '{MONITOR_PASSWORD}'")
        cur.execute("GRANT pg_monitor TO rosetta_monitor")
        cur.execute(f"CREATE ROLE plain_user LOGIN PASSWORD '{PLAIN_PASSWORD}'")
        cur.execute("SELECT pg_create_logical_replication_slot('rosetta_slot', 'pgoutput')")
    yield {"cluster": source_cluster, "port": source_cluster.port, "database": "shop"}
    with closing(source_cluster.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active"
        )


@pytest.fixture
def hanging_server() -> Iterator[HangingServer]:
    """A local socket that accepts connections and never answers."""
    server = HangingServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def database_url(pg_cluster: Cluster | None) -> str:
    """The metadata database's URL, its schema built by the real migrations."""
    url = os.environ.get("TEST_DATABASE_URL") or pg_cluster.create_database("rosetta_meta")  # type: ignore[union-attr]
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True})
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
        _db.engine.dispose()
    return url


@pytest.fixture
def app(database_url: str) -> Iterator[Flask]:
    """The app on the PostgreSQL metadata database, emptied for each test."""
    app = make_app(database_url)
    yield app
    kept_connections(app).close()  # the monitor's, kept by scheduled rounds
    with app.app_context():
        _db.engine.dispose()


@pytest.fixture
def sqlite_app(tmp_path: Any) -> Iterator[Flask]:
    """The app on an embedded SQLite file, built by the same migrations."""
    url = f"sqlite:///{tmp_path / 'rosetta.db'}"
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True})
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
    yield app


@pytest.fixture
def db(app: Flask) -> Iterator[Any]:
    """The SQLAlchemy extension inside an app context."""
    with app.app_context():
        yield _db


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> Any:
    return app.test_cli_runner()


@pytest.fixture
def browser(app: Flask, client: FlaskClient) -> Browser:
    """A client signed in through the login form."""
    create_operator(app)
    assert sign_in(client).status_code == 303
    return Browser(client)


@pytest.fixture
def api(app: Flask, client: FlaskClient) -> Api:
    """A client holding a fresh API token of an admin (who may call every endpoint)."""
    with app.app_context():
        user = services.create_user("script-owner", PASSWORD, "admin")
        _, raw = services.create_token(user, "tests")
    return Api(client, raw)


@pytest.fixture
def count_queries(app: Flask) -> Any:
    """Return a context manager counting the app's SQL statements."""
    with app.app_context():
        engine = _db.engine
    return lambda: QueryCounter(engine)


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """Serve the app over real HTTP on a free local port; yield its base URL."""
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="session")
def ready_source() -> Iterator[dict[str, Any]]:
    """The API body of a source that passes every readiness check, on a logical cluster of its
    own (its slot would show in other tests' counts of a server's slots): signed in as
    postgres, with a publication of all tables (each with a primary key) and a pgoutput slot."""
    from contextlib import closing

    cluster = Cluster("rosetta-ready").start()
    cluster.create_database("ready")
    with closing(cluster.connect("ready")) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE accounts (id bigint PRIMARY KEY, owner text)")
        cur.execute("CREATE PUBLICATION ready_pub FOR ALL TABLES")
        cur.execute("SELECT pg_create_logical_replication_slot('ready_slot', 'pgoutput')")
    yield {
        "name": "ready-postgres",
        "pg_host": "127.0.0.1",
        "pg_port": cluster.port,
        "pg_database": "ready",
        "pg_username": "postgres",
        "pg_password": "unused-trust-auth",
        "publication_name": "ready_pub",
        "slot_name": "ready_slot",
    }
    cluster.stop()


@pytest.fixture(scope="session")
def snowflake() -> Iterator[Any]:
    """fakesnow's Snowflake-protocol server, with the database and schema the destinations
    load into."""
    from .snowflake import fake_snowflake

    with fake_snowflake() as server:
        server.execute(
            "CREATE DATABASE IF NOT EXISTS ANALYTICS",
            "CREATE SCHEMA IF NOT EXISTS ANALYTICS.RAW_DATA",
        )
        yield server


@pytest.fixture(scope="session")
def ready_destination(snowflake: Any, tmp_path_factory: Any) -> dict[str, Any]:
    """The API body of a destination that passes every readiness check: the test Snowflake
    server, a key file of its own and a user with that key registered."""
    from .seed import DESTINATION
    from .snowflake import new_user, write_key

    key_path = tmp_path_factory.mktemp("ready-destination") / "rsa_key.p8"
    user = new_user(snowflake, write_key(key_path))
    return {
        **DESTINATION,
        "snowflake_user": user,
        "snowflake_private_key_path": str(key_path),
        "snowflake_host": snowflake.host_setting,
    }
