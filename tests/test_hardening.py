"""What an attacker and a bad day found, each proved fixed on a real database or server."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
from contextlib import closing

import pytest
from flask_migrate import upgrade

from rosetta_web import create_app
from rosetta_web.config import ConfigError, load_config
from rosetta_web.extensions import db as _db
from rosetta_web.models import MonitorRound, User
from rosetta_web.monitor.rounds import join_lanes, sample_sources
from rosetta_web.monitor.scheduler import next_tick_at
from rosetta_web.sources.services import after_round

from .clients import csrf_token
from .constants import ROOT
from .factories import PASSWORD, add_source, seed_alerting
from .pg import Cluster, free_port
from .seed import DESTINATION, PIPELINE, SOURCE


@pytest.mark.parametrize("backend", ["app", "sqlite_app"])
def test_concurrent_setups_create_exactly_one_account(request, backend):
    """Eight set-ups sent at once on a fresh database: one account, the others sent to sign-in."""
    app = request.getfixturevalue(backend)
    clients = [app.test_client() for _ in range(8)]
    tokens = [csrf_token(client, "/setup") for client in clients]
    start = threading.Barrier(len(clients))
    answers: list = [None] * len(clients)

    def set_up(i: int) -> None:
        start.wait()
        answers[i] = clients[i].post(
            "/setup",
            data={
                "username": f"admin{i}",
                "password": PASSWORD,
                "confirm": PASSWORD,
                "csrf_token": tokens[i],
            },
        )

    threads = [threading.Thread(target=set_up, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    with app.app_context():
        assert _db.session.scalar(_db.select(_db.func.count(User.id))) == 1
    locations = sorted(answer.headers["Location"] for answer in answers)
    assert locations == ["/"] + ["/login"] * (len(clients) - 1)


@pytest.fixture
def outage_cluster():
    """A metadata database of its own, that a test may stop and start again."""
    cluster = Cluster("rosetta-outage").start()
    yield cluster
    cluster.stop()


def test_a_metadata_database_outage_answers_503_and_logs_twice(outage_cluster, caplog):
    """With the metadata database stopped, every request answers 503 with Retry-After, as
    the envelope or a page that needs no database; one log line when it goes, one when it
    is back; and it serves again without a restart."""
    url = outage_cluster.create_database("meta")
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True})
    with app.app_context():
        upgrade()
        from rosetta_web.auth import services

        _, token = services.create_token(services.create_user("alice", PASSWORD, "admin"), "t")
    api = {"Authorization": f"Bearer {token}"}
    browser = app.test_client()
    browser.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": csrf_token(browser)},
    )
    assert browser.get("/").status_code == 200

    caplog.set_level(logging.INFO)
    caplog.clear()
    outage_cluster.halt()
    calls = [
        ("GET", "/api/v1/sources", api, None),
        ("POST", "/api/v1/sources", api, SOURCE),
        ("GET", "/metrics", api, None),
        ("GET", "/", {}, None),
        ("GET", "/sources/1", {}, None),
        ("GET", "/no-such-page", {}, None),
        ("GET", "/login", {}, None),
    ] * 5
    statuses = []
    for method, path, headers, body in calls:
        client = browser if not headers else app.test_client()
        response = client.open(path, method=method, headers=headers, json=body)
        statuses.append(response.status_code)
        assert response.headers["Retry-After"] == "10", path
        if path.startswith(("/api/", "/metrics")):
            assert response.get_json()["error"] == "ServiceUnavailableError"
        else:
            assert "The metadata database is not answering" in response.get_data(as_text=True)
    health = app.test_client().get("/health")
    assert health.status_code == 503 and health.get_json()["status"] == "error"
    assert statuses == [503] * len(calls)
    messages = [record.getMessage() for record in caplog.records if record.levelno >= 30]
    assert len([m for m in messages if "metadata database unavailable" in m]) == 1, messages
    assert not [record for record in caplog.records if record.exc_info], "no tracebacks"

    outage_cluster.resume()
    assert browser.get("/").status_code == 200
    assert app.test_client().get("/api/v1/sources", headers=api).status_code == 200
    back = [r.getMessage() for r in caplog.records if "metadata database back" in r.getMessage()]
    assert len(back) == 1
    with app.app_context():
        _db.engine.dispose()


@pytest.mark.parametrize("backend", ["app", "sqlite_app"])
def test_a_lone_surrogate_is_a_422_naming_the_field(request, backend):
    """JSON may carry half a UTF-16 pair; it is refused by name on POST and PATCH."""
    app = request.getfixturevalue(backend)
    with app.app_context():
        from rosetta_web.auth import services

        _, token = services.create_token(services.create_user("script", PASSWORD, "admin"), "t")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def send(method: str, path: str, body: dict) -> dict:
        raw = json.dumps(body)  # ensure_ascii: the surrogate travels as the escape \\ud800
        response = client.open(path, method=method, data=raw, headers=headers)
        assert response.status_code == 422, response.get_data(as_text=True)
        return response.get_json()["details"]["fields"]

    assert "\\ud800" in json.dumps({**SOURCE, "pg_database": "shop\ud800"})
    assert list(send("POST", "/api/v1/sources", {**SOURCE, "pg_database": "shop\ud800"})) == [
        "pg_database"
    ]
    assert client.post("/api/v1/sources", json=SOURCE, headers=headers).status_code == 201
    fields = send("PATCH", "/api/v1/sources/1", {"pg_password": "\udfff"})
    assert fields == {"pg_password": ["Must be valid Unicode text (it holds a lone surrogate)."]}


def test_security_headers_on_every_kind_of_answer(app, browser):
    """Pages, API answers and errors carry the CSP, no framing, nosniff and the referrer rule;
    HSTS only in production."""
    for path in ("/", "/sources/", "/account", "/api/v1/sources", "/nope", "/static/js/ui.js"):
        headers = browser.get(path).headers
        policy = headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, path
        assert "unsafe-eval" not in policy and "'unsafe-inline'" not in policy.split("style")[0]
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        assert "Strict-Transport-Security" not in headers
    app.config["APP_ENV"] = "production"
    assert "max-age=" in browser.get("/").headers["Strict-Transport-Security"]


def test_the_server_message_is_shown_whole_whatever_the_password(app, source_db):
    """A password that is one letter, or the user's name, never masks the server's words."""
    from rosetta_web.models import Source

    cluster = source_db["cluster"]
    with closing(cluster.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS a")
        cur.execute("CREATE ROLE a LOGIN PASSWORD 'right-password'")
    one_letter = add_source(app, "one-letter", source_db["port"], "plain_user", "a")
    own_name = add_source(app, "own-name", source_db["port"], "a", "a")
    app.config["WAL_MONITOR_MAX_RETRIES"] = 0
    with app.app_context():
        after_round(sample_sources())
        errors = {
            source.id: source.state.last_error for source in _db.session.scalars(_db.select(Source))
        }
    assert errors[one_letter] == (
        'cannot sign in as plain_user: FATAL: password authentication failed for user "plain_user"'
    )
    assert errors[own_name] == (
        'cannot sign in as a: FATAL: password authentication failed for user "a"'
    )


def test_a_hanging_source_never_delays_a_healthy_one(app, source_db, hanging_server, caplog):
    """At a 5 s interval, three sources that hang and room for two at a time: the healthy
    source is still sampled every tick, on the 5 s grid, and each round's row counts its
    storing too."""
    from rosetta_web.monitor.scheduler import MonitorScheduler

    app.config.update(
        WAL_MONITOR_INTERVAL_SECONDS=5, WAL_MONITOR_TIMEOUT_SECONDS=4, WAL_MONITOR_CONCURRENCY=2
    )
    healthy = add_source(app, "healthy", source_db["port"])
    for i in range(3):
        add_source(app, f"hangs-{i}", hanging_server.port)
    monitor = MonitorScheduler(app)
    monitor.start()
    try:
        from .pg import wait_for

        def healthy_times() -> list:
            with app.app_context():
                from rosetta_web.models import WalMetric

                return [
                    m.recorded_at.timestamp()
                    for m in _db.session.scalars(
                        _db.select(WalMetric)
                        .where(WalMetric.source_id == healthy)
                        .order_by(WalMetric.recorded_at)
                    )
                ]

        assert wait_for(lambda: len(healthy_times()) >= 6, timeout=45)
    finally:
        monitor.stop()
        # The hanging sources' lane ends within three timeouts: let it store before the next
        # test empties the tables under it.
        join_lanes(30, app)
    times = healthy_times()
    gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]  # after the first round
    print(f"healthy source's gaps beside three hanging ones at 5 s: {gaps}")
    assert gaps and max(gaps) <= 5.5
    assert all(abs(t - round(t / 5) * 5) < 0.5 for t in times)  # on the grid
    with app.app_context():
        rounds = _db.session.scalars(_db.select(MonitorRound)).all()
    for row in rounds:
        assert row.duration_ms >= row.sampling_ms + row.storing_ms - 1
        assert row.sampling_ms is not None and row.storing_ms is not None


def test_ticks_fall_on_the_interval_grid():
    """Whenever a process starts, its first tick is the next multiple of the interval."""
    from datetime import UTC, datetime

    moment = datetime(2026, 3, 1, 12, 0, 7, 300000, tzinfo=UTC)
    assert next_tick_at(moment, 300) == datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
    assert next_tick_at(datetime(2026, 3, 1, 12, 5, tzinfo=UTC), 300).minute == 10


def test_a_timeout_not_shorter_than_the_interval_is_refused(tmp_path):
    """The monitor must give up on a source before its next round is due."""
    env = {"WAL_MONITOR_INTERVAL_SECONDS": "5", "WAL_MONITOR_TIMEOUT_SECONDS": "30"}
    with pytest.raises(ConfigError, match=r"TIMEOUT_SECONDS \(30\) must be shorter than"):
        load_config(str(tmp_path), env)
    assert load_config(str(tmp_path), {**env, "WAL_MONITOR_TIMEOUT_SECONDS": "4"})


def test_ids_past_four_bytes_are_404_for_every_method(api):
    """An id no row can have answers 404 whatever the method, not 405."""
    huge = "/api/v1/sources/99999999999"
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        response = api.open(huge, method=method, json=SOURCE)
        assert response.status_code == 404, method
        assert response.get_json()["error"] == "EntityNotFoundError"


def test_a_database_url_with_a_stray_character_says_to_percent_encode(tmp_path):
    """A password with '@', ':' or '/' in DATABASE_URL stops start-up with advice, never the
    URL or its password."""
    env = {"DATABASE_URL": "postgresql://rosetta:p@ss:w/rd@db:5432/meta"}
    with pytest.raises(ConfigError) as refused:
        load_config(str(tmp_path), env)
    assert "percent-encode" in str(refused.value) and "ss:w" not in str(refused.value)
    cli = subprocess.run(
        [sys.executable, "-m", "flask", "routes"],
        cwd=ROOT,
        env={**os.environ, **env, "FLASK_APP": "wsgi"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode != 0 and "percent-encode" in cli.stderr
    assert "Traceback" not in cli.stderr and "w/rd" not in cli.stderr


def test_the_embedded_database_is_readable_by_its_owner_alone(tmp_path):
    """instance/rosetta.db holds hashes and encrypted secrets: created 0600, like the key."""
    load_config(str(tmp_path), {})
    mode = stat.S_IMODE((tmp_path / "rosetta.db").stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600


def test_a_closed_port_is_said_in_rosettas_words(app):
    """A failure says what Rosetta tried, then the server's or the system's own words."""
    port = free_port()
    source_id = add_source(app, "closed", port)
    app.config["WAL_MONITOR_MAX_RETRIES"] = 0
    with app.app_context():
        (sample,) = after_round(sample_sources())
    assert sample.error.startswith(f"cannot connect to 127.0.0.1:{port}: ")
    assert "Connection refused. Is the server running" in sample.error
    assert source_id


def test_a_body_nested_100000_deep_is_a_400_for_every_endpoint_that_reads_json(app, api, caplog):
    """Each operation the OpenAPI document gives a body answers a JSON body nested 100,000
    deep with a 400 envelope saying so, not a 500, and logs no traceback."""
    assert api.post("/api/v1/sources", json=SOURCE).status_code == 201
    assert api.post("/api/v1/destinations", json=DESTINATION).status_code == 201
    assert api.post("/api/v1/pipelines", json={**PIPELINE, "status": "PAUSE"}).status_code == 201
    seed_alerting(app, 1)  # a channel, id 1
    deep = "[" * 100_000 + "]" * 100_000
    spec = api.get("/api/v1/openapi.json").get_json()
    called = []
    caplog.clear()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if "requestBody" not in operation:
                continue
            url = path.replace("{entity_id}", "1")
            response = api.open(url, method=method, data=deep, content_type="application/json")
            assert response.status_code == 400, (method, url, response.get_data(as_text=True))
            body = response.get_json()
            assert set(body) == {"error", "message", "details", "timestamp"}
            assert body["error"] == "BadRequestError"
            assert body["message"] == "The request body is nested too deeply to read"
            called.append(f"{method.upper()} {url}")
    assert len(called) >= 16 and "POST /api/v1/sources/1/slot" in called
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"


def test_null_in_the_publication_and_slot_bodies_is_a_422_naming_the_field(app, api, source_db):
    """null is not the string or boolean the document declares: each is refused by name, and
    psql shows no slot or publication made (before, a null slot_name made the default slot)."""
    cluster = source_db["cluster"]
    source_id = add_source(
        app,
        "nulls",
        source_db["port"],
        "postgres",
        "unused",
        publication_name="nulls_pub",
        slot_name=None,  # type: ignore[arg-type]  # no slot named yet: the default is made
    )

    def made() -> list:
        with closing(cluster.connect("shop")) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT slot_name::text FROM pg_replication_slots WHERE slot_name = 'rosetta_nulls'"
                " UNION ALL SELECT pubname::text FROM pg_publication WHERE pubname = 'nulls_pub'"
            )
            return cur.fetchall()

    cases = [
        (
            "slot",
            {"slot_name": None},
            "slot_name",
            "Send the slot's name as a string, or leave it out.",
        ),
        (
            "publication",
            {"all_tables": None, "tables": ["public.orders"]},
            "all_tables",
            "Send true or false.",
        ),
        (
            "publication",
            {"all_tables": True, "tables": None},
            "tables",
            "Send a non-empty list of table names (schema.table).",
        ),
        ("publication", {"all_tables": None}, "all_tables", "Send true or false."),
    ]
    try:
        for endpoint, body, field, message in cases:
            response = api.post(f"/api/v1/sources/{source_id}/{endpoint}", json=body)
            assert response.status_code == 422, (body, response.get_json())
            answer = response.get_json()
            assert answer["error"] == "ValidationError"
            assert answer["details"]["fields"] == {field: [message]}, body
        assert made() == []
        # Leaving the field out still makes the default slot, as the README says.
        created = api.post(f"/api/v1/sources/{source_id}/slot", json={})
        assert created.status_code == 201 and created.get_json()["slot_name"] == "rosetta_nulls"
    finally:
        with closing(cluster.connect("shop")) as conn, conn.cursor() as cur:
            cur.execute("DROP PUBLICATION IF EXISTS nulls_pub")
            cur.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = 'rosetta_nulls'"
            )


@pytest.mark.slow
def test_a_url_too_long_gets_rosettas_414_through_gunicorn(app, database_url):
    """Served by gunicorn with gunicorn.conf.py, a URL over MAX_URL_BYTES answers 414 in the
    envelope to a script and as Rosetta's page to a browser, before sign-in; one of exactly
    MAX_URL_BYTES goes on to ask for sign-in; only a request line past gunicorn's own limit
    (8190 bytes) gets gunicorn's page."""
    import requests

    from rosetta_web.errors import MAX_URL_BYTES

    from .pg import wait_for

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url, "WAL_MONITOR_ENABLED": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def serving() -> bool:
        try:
            return requests.get(f"{base}/health", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    def url(path: str, length: int) -> str:
        return f"{path}?q={'a' * (length - len(path) - 3)}"

    try:
        assert wait_for(serving, timeout=30), "gunicorn did not serve"
        script = requests.get(base + url("/api/v1/sources", MAX_URL_BYTES + 1), timeout=10)
        assert script.status_code == 414, script.text[:300]
        body = script.json()
        assert set(body) == {"error", "message", "details", "timestamp"}
        assert body["error"] == "URITooLongError"
        assert body["details"] == {"url_bytes": MAX_URL_BYTES + 1, "max_url_bytes": MAX_URL_BYTES}

        page = requests.get(
            base + url("/sources/", 6000), headers={"Accept": "text/html"}, timeout=10
        )
        assert page.status_code == 414 and page.headers["Content-Type"].startswith("text/html")
        assert "414 · Request URI Too Long" in page.text and "URITooLongError" in page.text
        assert f"up to {MAX_URL_BYTES} bytes" in page.text

        at_limit = requests.get(base + url("/api/v1/sources", MAX_URL_BYTES), timeout=10)
        assert at_limit.status_code == 401 and at_limit.json()["error"] == "AuthenticationError"

        past_gunicorn = requests.get(base + url("/api/v1/sources", 9000), timeout=10)
        assert past_gunicorn.status_code == 414
        assert "URITooLongError" not in past_gunicorn.text  # gunicorn's own page, as documented
    finally:
        server.terminate()
        try:
            server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
