"""The audit log: one record per change with its actor, refusals recorded alone, the table
append-only on PostgreSQL, and the page, the CSV export and the API that read it."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import subprocess
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import MultiDict

from rosetta_web.audit import services as audit
from rosetta_web.auth import services as auth
from rosetta_web.crud import entity_form
from rosetta_web.errors import DuplicateName
from rosetta_web.extensions import db
from rosetta_web.models import AuditRecord, Source
from rosetta_web.sources.services import SOURCES
from rosetta_web.timeutil import as_utc, utcnow

from .apps import make_app
from .clients import Browser, csrf_token, sign_in
from .factories import PASSWORD, add_alert, create_operator, new_source
from .pg import wait_for
from .seed import DESTINATION, PASSPHRASE, PIPELINE, SOURCE

CHANNEL = {
    "name": "on-call",
    "type": "webhook",
    "url": "https://hooks.example.com/rosetta?token=Webhook-Token-77",
    "secret": "Signing-Secret-0123456789",
    "min_severity": "warning",
}
SECRETS = (
    SOURCE["pg_password"],
    PASSPHRASE,
    "Webhook-Token-77",
    CHANNEL["secret"],
    PASSWORD,
)


def records(app: Any) -> list[dict[str, Any]]:
    """Every record, oldest first, as the API shows them."""
    with app.app_context():
        rows = db.session.scalars(select(AuditRecord).order_by(AuditRecord.id))
        return [row.to_dict() for row in rows]


def new_records(app: Any, before: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records written since `before` was read."""
    seen = {record["id"] for record in before}
    return [record for record in records(app) if record["id"] not in seen]


def one_new(app: Any, before: list[dict[str, Any]]) -> dict[str, Any]:
    """The one record written since `before`; fail if there are more or none."""
    written = new_records(app, before)
    assert len(written) == 1, written
    return written[0]


def by_token(record: dict[str, Any]) -> None:
    """Assert the record names the api fixture's token, its user and the test client's IP."""
    assert (record["actor"], record["token_name"], record["ip"]) == (
        "script-owner",
        "tests",
        "127.0.0.1",
    )


def test_each_api_change_writes_one_record_naming_the_token_and_its_user(app, api):
    """Create, update and delete of a source, a destination, a pipeline and a channel, the
    settings, a pause, a silence and its end: one record each, with the token and its user,
    the fields before and after, and no secret anywhere."""
    steps: list[tuple[str, Any, str, str]] = [
        ("POST", "/api/v1/sources", "create", "source"),
        ("PATCH", "/api/v1/sources/1", "update", "source"),
        ("POST", "/api/v1/destinations", "create", "destination"),
        ("PATCH", "/api/v1/destinations/1", "update", "destination"),
        ("POST", "/api/v1/pipelines", "create", "pipeline"),
        ("POST", "/api/v1/pipelines/1/pause", "pause", "pipeline"),
        ("POST", "/api/v1/channels", "create", "channel"),
        ("PATCH", "/api/v1/channels/1", "update", "channel"),
        ("PUT", "/api/v1/alert-settings", "update", "settings"),
        ("POST", "/api/v1/silences", "silence", "source"),
        ("DELETE", "/api/v1/silences/1", "silence", "source"),
        ("DELETE", "/api/v1/channels/1", "delete", "channel"),
        ("DELETE", "/api/v1/pipelines/1", "delete", "pipeline"),
        ("DELETE", "/api/v1/destinations/1", "delete", "destination"),
        ("DELETE", "/api/v1/sources/1", "delete", "source"),
    ]
    settings = api.get("/api/v1/alert-settings").get_json()
    forecast_hours = settings["forecast_hours"]
    settings["forecast_hours"] = forecast_hours * 2
    bodies = {
        "/api/v1/sources": SOURCE,
        "/api/v1/destinations": {**DESTINATION, "snowflake_private_key_passphrase": PASSPHRASE},
        "/api/v1/pipelines": {**PIPELINE, "status": "PAUSE"},
        "/api/v1/channels": CHANNEL,
        "/api/v1/alert-settings": settings,
        "/api/v1/silences": {
            "source_id": 1,
            "ends_at": f"{utcnow() + timedelta(hours=2):%Y-%m-%dT%H:%M}",
            "comment": "maintenance",
        },
    }
    patches = {
        "/api/v1/sources/1": {
            "pg_host": "db2.example.com",
            "pg_password": "Rotated-Pass-1!",
            "alert_overrides": {"forecast_hours": 12},
        },
        "/api/v1/destinations/1": {"snowflake_private_key_passphrase": "Another-Phrase-9!"},
        "/api/v1/channels/1": {"min_severity": "critical"},
    }
    written = []
    for method, path, action, target_type in steps:
        before = records(app)
        response = api.open(path, method=method, json=bodies.get(path) or patches.get(path))
        assert response.status_code < 300, (path, response.get_json())
        record = one_new(app, before)
        by_token(record)
        assert (record["action"], record["target_type"], record["outcome"]) == (
            action,
            target_type,
            "done",
        ), path
        assert record["target_id"] == 1, path
        written.append(record)
    by_step = {(step[0], step[1]): record for step, record in zip(steps, written, strict=True)}

    created = by_step["POST", "/api/v1/sources"]
    assert created["target_name"] == "production-postgres"
    assert created["changes"]["pg_host"] == [None, "postgres.example.com"]
    assert created["changes"]["pg_password"] == "changed"
    updated = by_step["PATCH", "/api/v1/sources/1"]
    assert updated["changes"] == {
        "pg_host": ["postgres.example.com", "db2.example.com"],
        "pg_password": "changed",
        "alert_overrides.forecast_hours": [None, 12],
    }
    assert not any(name.startswith("alert_overrides") for name in created["changes"])
    assert by_step["PATCH", "/api/v1/destinations/1"]["changes"] == {
        "snowflake_private_key_passphrase": "changed"
    }
    channel = by_step["POST", "/api/v1/channels"]["changes"]
    assert channel["url"] == "changed" and channel["secret"] == "changed"
    assert by_step["PATCH", "/api/v1/channels/1"]["changes"] == {
        "min_severity": ["warning", "critical"]
    }
    assert by_step["PUT", "/api/v1/alert-settings"]["changes"] == {
        "forecast_hours": [forecast_hours, forecast_hours * 2]
    }
    assert by_step["POST", "/api/v1/pipelines/1/pause"]["changes"] == {}  # it was paused
    silence = by_step["POST", "/api/v1/silences"]
    assert silence["target_name"] == "production-postgres"
    assert silence["changes"]["comment"] == [None, "maintenance"]
    assert by_step["DELETE", "/api/v1/silences/1"]["changes"]["silence_id"] == [1, None]
    deleted = by_step["DELETE", "/api/v1/sources/1"]
    assert deleted["changes"]["pg_host"] == ["db2.example.com", None]
    everything = json.dumps(records(app))
    for secret in (*SECRETS, "Rotated-Pass-1!", "Another-Phrase-9!"):
        assert secret not in everything


def test_start_refused_by_readiness_is_recorded_alone_and_changes_nothing(app, api):
    """A START the source's checks refuse (409) writes one refused record, with the refusal's
    message, and the pipeline stays paused."""
    api.post("/api/v1/sources", json=SOURCE)
    api.post("/api/v1/destinations", json=DESTINATION)
    api.post("/api/v1/pipelines", json={**PIPELINE, "status": "PAUSE"})
    before = records(app)
    refused = api.post("/api/v1/pipelines/1/start")
    assert refused.status_code == 409
    record = one_new(app, before)
    assert (record["action"], record["outcome"], record["target_name"]) == (
        "start",
        "refused",
        "production-to-snowflake",
    )
    assert record["message"] == refused.get_json()["message"]
    assert record["changes"] == {}
    assert api.get("/api/v1/pipelines/1").get_json()["status"] == "PAUSE"


def test_duplicate_name_is_refused_and_recorded_and_changes_nothing_else(app, api, browser):
    """A 409 on a taken name, from the API and from the form, writes one refused record
    each and changes nothing else."""
    api.post("/api/v1/sources", json=SOURCE)
    api.post("/api/v1/sources", json={**SOURCE, "name": "staging"})
    before = records(app)
    taken = api.patch("/api/v1/sources/2", json={"name": "production-postgres"})
    assert taken.status_code == 409
    record = one_new(app, before)
    by_token(record)
    assert (record["action"], record["outcome"], record["target_id"]) == ("update", "refused", 2)
    assert record["target_name"] == "staging"
    assert record["changes"] == {"name": ["staging", "production-postgres"]}
    assert record["message"] == "A source named 'production-postgres' already exists"
    assert api.get("/api/v1/sources/2").get_json()["name"] == "staging"

    before = records(app)
    page = browser.post("/sources/new", data={**SOURCE, "pg_port": "5432"})
    assert page.status_code == 409
    assert "already exists" in page.get_data(as_text=True)
    record = one_new(app, before)
    assert (record["actor"], record["token_name"], record["action"], record["outcome"]) == (
        "alice",
        None,
        "create",
        "refused",
    )
    assert (record["target_type"], record["target_id"], record["target_name"]) == (
        "source",
        None,
        "production-postgres",
    )
    assert len(api.get("/api/v1/sources").get_json()) == 2


def test_a_save_that_loses_a_race_for_its_name_keeps_only_the_refusal(app):
    """Two writers race for a name: the one whose commit fails leaves a refused record and
    no done record, and its change is rolled back with it."""
    with app.app_context():
        db.session.add_all([new_source("first"), new_source("second")])
        db.session.commit()
    before = records(app)
    with app.test_request_context():
        second = db.session.scalar(select(Source).where(Source.name == "second"))
        data = {k: v for k, v in SOURCES.form_data(second).items() if v is not None}
        data |= {"name": "third", "pg_host": "moved.example.com"}
        form = entity_form(SOURCES, second, formdata=MultiDict(data), meta={"csrf": False})
        assert form.validate(), form.errors
        with db.engine.begin() as conn:  # another writer takes the name first
            conn.execute(
                Source.__table__.update().where(Source.name == "first").values(name="third")
            )
        with pytest.raises(DuplicateName):
            SOURCES.save(form, second)
    record = one_new(app, before)
    assert (record["action"], record["outcome"], record["target_name"]) == (
        "update",
        "refused",
        "second",
    )
    assert record["changes"]["name"] == ["second", "third"]  # what it tried
    assert record["changes"]["pg_host"] == ["h", "moved.example.com"]
    with app.app_context():
        host = db.session.scalar(select(Source.pg_host).where(Source.name == "second"))
    assert host == "h"


def test_a_change_without_its_record_is_refused(app):
    """The guard: a request that changes an audited table and writes no record cannot
    commit, so no route can forget its record."""
    with app.app_context():
        db.session.add(new_source("guarded"))
        db.session.commit()
    with app.test_request_context():
        source = db.session.scalar(select(Source))
        source.pg_host = "elsewhere.example.com"
        with pytest.raises(audit.UnrecordedChange, match="sources"):
            db.session.commit()
        db.session.rollback()
    with app.app_context():
        assert db.session.scalar(select(Source.pg_host)) == "h"
    assert records(app) == []


def test_sign_in_failures_and_sign_out_are_recorded(app, client):
    """A sign-in, a wrong password, an unknown name, a disabled account and a sign-out each
    write one record; a failure names the name typed and never the password."""
    create_operator(app)
    create_operator(app, "bob", role="operator")
    cases = [
        ("alice", "wrong-password-1", "sign_in_failed", "refused", "alice", 1),
        # A name no account has may be a password typed in the wrong box: it is not kept.
        ("Tr0ub4dor&3", PASSWORD, "sign_in_failed", "refused", None, None),
        ("alice", PASSWORD, "sign_in", "done", "alice", 1),
    ]
    for username, password, action, outcome, name, target_id in cases:
        before = records(app)
        sign_in(client, username, password)
        record = one_new(app, before)
        assert (record["actor"], record["action"], record["outcome"]) == (name, action, outcome)
        assert (record["target_type"], record["target_id"], record["target_name"]) == (
            "user",
            target_id,
            name,
        )
        assert record["ip"] == "127.0.0.1"
    assert "Tr0ub4dor" not in json.dumps(records(app))
    before = records(app)
    client.post("/logout", data={"csrf_token": csrf_token(client, "/account")})
    assert one_new(app, before)["action"] == "sign_out"
    with app.app_context():
        auth.disable_user(auth.find_user("bob"))
    before = records(app)
    assert sign_in(client, "bob", PASSWORD).status_code == 403
    record = one_new(app, before)
    assert (record["action"], record["outcome"], record["message"]) == (
        "sign_in_failed",
        "refused",
        "The account is disabled.",
    )
    assert PASSWORD not in json.dumps(records(app))


def test_a_failed_change_names_its_error_without_the_statement_or_secrets(app):
    """A change the database rejects is recorded as failed with the error's kind and first
    line; never the statement with its values (an encrypted password among them)."""
    with app.app_context():
        db.session.add(new_source("prod", pg_password="Hunter-2-Secret!"))
        db.session.commit()
    with app.test_request_context():
        source = db.session.scalar(select(Source))
        ciphertext = source.pg_password_encrypted
        with pytest.raises(IntegrityError), audit.change("update", source) as change:
            source.pg_host = None  # NOT NULL: the database refuses the row
            source.pg_password = "Rotated-Secret-3!"
            change.record()
            db.session.commit()
    record = records(app)[-1]
    assert (record["action"], record["outcome"], record["target_name"]) == (
        "update",
        "failed",
        "prod",
    )
    assert record["message"].startswith('NotNullViolation: null value in column "pg_host"')
    assert record["changes"] == {"pg_host": ["h", None], "pg_password": "changed"}
    text = json.dumps(record)
    assert ciphertext[:20] not in text and "UPDATE" not in text and "Rotated" not in text


def test_account_and_token_changes_are_recorded(app, browser, runner):
    """An admin's account changes in the browser, a token made and revoked, and the command
    line's: one record each, the command line named as cli:<user>."""
    admin = Browser(browser.client, "/accounts")
    steps = [
        (
            "/accounts",
            {"username": "vic", "role": "viewer", "password": PASSWORD, "confirm": PASSWORD},
            "create",
            {"username": [None, "vic"], "role": [None, "viewer"], "password": "changed"},
        ),
        ("/accounts/2/role", {"role": "operator"}, "set_role", {"role": ["viewer", "operator"]}),
        ("/accounts/2/disable", {}, "disable_user", {"disabled": [False, True]}),
        ("/accounts/2/enable", {}, "update", {"disabled": [True, False]}),
        (
            "/accounts/2/reset-password",
            {},
            "update",
            {"password": "changed", "must_change_password": [False, True]},
        ),
    ]
    for path, data, action, changes in steps:
        before = records(app)
        assert admin.post(path, data).status_code in (200, 303), path
        record = one_new(app, before)
        assert (record["actor"], record["action"], record["target_name"]) == (
            "alice",
            action,
            "vic",
        ), path
        for name, change in changes.items():
            assert record["changes"][name] == change, (path, name)
    before = records(app)
    assert admin.post("/accounts/1/role", {"role": "viewer"}).status_code == 409
    last_admin = one_new(app, before)
    assert (last_admin["action"], last_admin["outcome"]) == ("set_role", "refused")
    assert "last enabled admin" in last_admin["message"]

    account = Browser(browser.client, "/account")
    before = records(app)
    account.post("/account", {"name": "grafana", "read_only": "y"})
    made = one_new(app, before)
    assert (made["action"], made["target_type"], made["target_name"]) == (
        "create_token",
        "token",
        "grafana",
    )
    assert made["changes"] == {
        "name": [None, "grafana"],
        "user": [None, "alice"],
        "read_only": [None, True],
    }
    before = records(app)
    account.post(f"/account/tokens/{made['target_id']}/revoke", {})
    assert one_new(app, before)["action"] == "revoke_token"

    before = records(app)
    result = runner.invoke(args=["users", "create", "carol", "--password", PASSWORD])
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["users", "set-role", "carol", "admin"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["users", "create", "carol", "--password", PASSWORD])
    assert result.exit_code != 0 and "already exists" in result.output
    cli = new_records(app, before)
    assert [(r["action"], r["outcome"]) for r in cli] == [
        ("create", "done"),
        ("set_role", "done"),
        ("create", "refused"),
    ]
    assert all(r["actor"].startswith("cli:") and r["ip"] is None for r in cli)


def test_acknowledging_an_alert_is_recorded_and_a_resolved_one_refused(app, api):
    """An acknowledgement names the alert; one of a resolved alert is a refused record."""
    api.post("/api/v1/sources", json=SOURCE)
    firing = add_alert(app, 1)
    resolved = add_alert(app, 1, state="resolved")
    before = records(app)
    assert api.post(f"/api/v1/alerts/{firing}/ack").status_code == 200
    record = one_new(app, before)
    by_token(record)
    assert (record["action"], record["target_type"], record["target_id"]) == (
        "ack",
        "alert",
        firing,
    )
    assert record["target_name"] == "retained_wal on production-postgres/orders"
    before = records(app)
    refused = api.post(f"/api/v1/alerts/{resolved}/ack")
    assert refused.status_code == 409 and refused.get_json()["details"] == {"state": "resolved"}
    assert one_new(app, before)["outcome"] == "refused"


def test_a_check_is_recorded_with_its_result(app, api):
    """Pressing Check (or its API call) records the check with the result the page shows."""
    api.post("/api/v1/sources", json={**SOURCE, "pg_host": "127.0.0.1", "pg_port": 1})
    before = records(app)
    result = api.post("/api/v1/sources/1/check").get_json()
    record = one_new(app, before)
    assert (record["action"], record["target_name"]) == ("check", "production-postgres")
    assert result["checks"][0]["status"] == "fail"
    assert record["message"] == "Not ready: connection failed."


def test_the_audit_table_refuses_update_delete_and_truncate_from_sql(app, api, database_url):
    """On PostgreSQL, psql cannot UPDATE, DELETE or TRUNCATE audit records; only the
    retention function deletes, and only records older than its cutoff and than a day."""
    with time_machine.travel(utcnow() - timedelta(days=400)):
        api.post("/api/v1/sources", json=SOURCE)
    api.patch("/api/v1/sources/1", json={"pg_port": 5433})
    with app.app_context():
        url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    kept = len(records(app))

    def psql(statement: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["psql", url, "-v", "ON_ERROR_STOP=1", "-Atc", statement],
            capture_output=True,
            text=True,
            check=False,
        )

    for statement in (
        "UPDATE audit_log SET actor = 'someone-else'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ):
        done = psql(statement)
        assert done.returncode != 0, statement
        assert "audit_log is append-only" in done.stderr, statement
    unchanged = "SELECT count(*) FROM audit_log WHERE actor IS DISTINCT FROM 'someone-else'"
    assert psql(unchanged).stdout.strip() == str(kept)
    # Naming a cutoff by hand, as the retention function does, lets no record of the last
    # day go.
    forged = psql(
        "BEGIN; SELECT set_config('rosetta.audit_prune_before', '99999999999', true); "
        "DELETE FROM audit_log WHERE at > now() - interval '1 day'; COMMIT;"
    )
    assert forged.returncode != 0 and "append-only" in forged.stderr
    assert psql("SELECT count(*) FROM audit_log").stdout.strip() == str(kept)
    # A cutoff in the future keeps the last day anyway: only the source's creation goes.
    assert psql("SELECT audit_log_prune(now() + interval '1 day')").stdout.strip() == "1"
    left = [(r["action"], r["target_type"]) for r in records(app)]
    assert len(left) == kept - 1
    assert ("create", "source") not in left and ("update", "source") in left


def test_retention_deletes_only_records_older_than_its_days(app, api, sqlite_app):
    """AUDIT_RETENTION_DAYS: the daily retention deletes older records and keeps the rest,
    on PostgreSQL (through its function) and on SQLite."""
    for flask_app in (app, sqlite_app):
        flask_app.config["AUDIT_RETENTION_DAYS"] = 30
        with flask_app.test_request_context():
            for days_ago in (45, 31, 29, 0):
                with time_machine.travel(utcnow() - timedelta(days=days_ago)):
                    audit.record("sign_out", audit.Target("user", 1, "alice"))
                    db.session.commit()
        with flask_app.app_context():
            assert audit.prune() == 2
            ages = [
                round((utcnow() - as_utc(at)).total_seconds() / 86400)
                for at in db.session.scalars(
                    select(AuditRecord.at)
                    .where(AuditRecord.action == "sign_out")
                    .order_by(AuditRecord.id)
                )
            ]
        assert ages == [29, 0], flask_app.config["SQLALCHEMY_DATABASE_URI"]


def _seed(app: Any, count: int) -> None:
    """Write `count` records: sign-outs of alice and bob in turn, a minute apart, the last
    a minute ago."""
    with app.test_request_context():
        start = utcnow() - timedelta(minutes=count)
        for i in range(count):
            name = ("alice", "bob")[i % 2]
            with time_machine.travel(start + timedelta(minutes=i)):
                audit.act_as(audit.Actor(name, None, "10.0.0.1"))
                audit.record("sign_out", audit.Target("user", 1 + i % 2, name))
                db.session.commit()


def test_api_pages_with_a_cursor_newest_first_and_filters(app, api):
    """GET /api/v1/audit: pages by cursor, newest first, none twice or skipped; filters by
    actor, action, target and time; a bad filter or cursor is a 422 naming it."""
    _seed(app, 7)
    newest_first = [record["id"] for record in reversed(records(app))]
    seeded = [record for record in reversed(records(app)) if record["action"] == "sign_out"]
    seen: list[int] = []
    cursor = None
    while True:
        query = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = api.get("/api/v1/audit", query_string=query).get_json()
        seen += [record["id"] for record in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first

    def ids(**query: Any) -> list[int]:
        response = api.get("/api/v1/audit", query_string={"action": "sign_out", **query})
        assert response.status_code == 200, response.get_json()
        return [record["id"] for record in response.get_json()["items"]]

    assert ids(actor="bob") == [r["id"] for r in seeded if r["actor"] == "bob"]
    assert ids(actor="BOB", target_type="user", target_id=1) == []
    assert ids(target_type="user", target_id=1) == [r["id"] for r in seeded if r["target_id"] == 1]
    assert ids(since="150s") == [r["id"] for r in seeded[:2]]
    assert ids(until="150s", limit=2) == [r["id"] for r in seeded[2:4]]
    for query, field in (
        ({"action": "explode"}, "action"),
        ({"target_type": "galaxy"}, "target_type"),
        ({"target_id": "one"}, "target_id"),
        ({"since": "yesterday"}, "since"),
        ({"since": "1h", "until": "2h"}, "until"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": audit.encode_cursor(2**64)}, "cursor"),
        ({"actor": "a\x00b"}, "actor"),
        ({"actor": "x" * 81}, "actor"),
        ({"limit": 0}, "limit"),
    ):
        response = api.get("/api/v1/audit", query_string=query)
        assert response.status_code == 422, query
        assert list(response.get_json()["details"]["fields"]) == [field], query


def test_the_page_filters_pages_and_exports_what_it_shows(app, browser):
    """/audit shows records newest first, filtered, with Older pages; a bad filter is shown
    beside its field (422); the CSV export holds the filtered records and no formula."""
    _seed(app, 53)
    seeded = [r["id"] for r in reversed(records(app)) if r["action"] == "sign_out"]
    page = browser.get("/audit/?action=sign_out")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert re.findall(r'<tr id="audit-(\d+)"', text) == [str(i) for i in seeded[:50]]
    older = re.search(r'<a href="([^"]+)"[^>]*id="audit-older"', text)
    assert older is not None
    second = browser.get(html.unescape(older.group(1))).get_data(as_text=True)
    assert re.findall(r'<tr id="audit-(\d+)"', second) == [str(i) for i in seeded[50:]]
    assert 'id="audit-older"' not in second

    filtered = browser.get("/audit/?actor=bob&action=sign_out").get_data(as_text=True)
    assert filtered.count('<tr id="audit-') == 26

    bad = browser.get("/audit/?since=yesterday&actor=bob")
    assert bad.status_code == 422
    body = bad.get_data(as_text=True)
    assert 'id="audit-since-error"' in body and 'value="yesterday"' in body

    with app.test_request_context():
        audit.act_as(audit.Actor("=HYPERLINK(1)", None, None))
        audit.record("sign_in_failed", audit.Target("user", None, "=HYPERLINK(1)"))
        db.session.commit()
    export = browser.get("/audit/export.csv?action=sign_in_failed")
    assert export.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert [(row["actor"], row["target_name"]) for row in rows] == [
        ("'=HYPERLINK(1)", "'=HYPERLINK(1)")
    ]
    export = browser.get("/audit/export.csv").get_data(as_text=True)
    everything = list(csv.DictReader(io.StringIO(export)))
    assert [int(row["id"]) for row in everything] == [r["id"] for r in reversed(records(app))]
    assert everything[0]["action"] == "sign_in_failed"


# Records whose cells a CSV must quote, a spreadsheet must not run, and JSON must escape:
# (actor, target name, changes, message).
AWKWARD: list[tuple[str, str, dict[str, Any] | None, str | None]] = [
    (
        '=HYPERLINK("x")',
        "a, b",
        {
            "pg_port": [5432, 5433],
            "name": ["shop", "shop-eu"],
            "alert_overrides.forecast_hours": [None, 12],
        },
        'said "no", twice',
    ),
    ("+plus", "line one\nline two", {"note": ["café ☕", 'naïve\u2028 \\ "q"']}, "-minus"),
    ("@at", "\ttab", {"status": ["PAUSE", "START"]}, "\rcarriage"),
    ("ünïcode", "", {}, ""),
    ("plain", "emoji 🚀", {"tables": [None, ["public.a", "public.b"]], "b": [1, 2]}, "x\r\ny"),
    ("null-json", "n", None, None),
]


def _awkward(app: Any) -> None:
    """Store AWKWARD, the first at a whole second, the others with microseconds; changes of
    None as JSON null (the column is NOT NULL)."""
    from sqlalchemy import insert

    whole_second = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    with app.test_request_context():
        for i, (actor, name, changes, message) in enumerate(AWKWARD):
            moment = whole_second + timedelta(seconds=i, microseconds=i * 1234)
            with time_machine.travel(moment, tick=False):
                audit.act_as(audit.Actor(actor, "tok,en" if i == 1 else None, "10.0.0.1"))
                if changes is None:
                    db.session.execute(
                        insert(AuditRecord).values(
                            at=utcnow(), actor=actor, action="check", changes=None, outcome="done"
                        )
                    )
                else:
                    audit.record("update", audit.Target("source", i, name), changes, message)
                db.session.commit()


def _csv(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode(), newline="")))


def test_the_export_is_the_records_as_sql_reads_them_cell_for_cell(app, api):
    """On PostgreSQL the export is COPY's: every cell reads as the Python writer writes the
    records the ORM reads (quotes, commas, newlines, formula starts, unicode, null and empty
    changes, keys in order), the times as the API gives them; lines end in LF. A record stored
    before its keys were kept in order gives them as stored."""
    from sqlalchemy import text

    from rosetta_web.audit.export import CSV_COLUMNS, written

    _awkward(app)
    legacy = '{"pg_port": [5432, 5433], "name": ["a", "b"]}'  # as json.dumps wrote it
    with app.app_context():
        stored = text("SELECT changes::text FROM audit_log WHERE actor = :actor")
        first_stored = db.session.scalar(stored, {"actor": AWKWARD[0][0]})
        assert first_stored == json.dumps(AWKWARD[0][2], sort_keys=True)
        db.session.execute(
            text(
                "INSERT INTO audit_log (at, actor, action, changes, outcome) "
                "VALUES (now(), 'legacy', 'update', :changes, 'done')"
            ),
            {"changes": legacy},
        )
        db.session.commit()
    response = api.get("/audit/export.csv")
    assert response.status_code == 200 and response.is_streamed
    assert response.headers["Content-Disposition"].startswith(
        'attachment; filename="rosetta-audit-'
    )
    body = response.get_data()
    assert body.startswith(",".join(CSV_COLUMNS).encode() + b"\n")
    with app.app_context():
        python = _csv(b"".join(written(audit.AuditFilter())))
    exported = _csv(body)
    assert exported[0] == python[0] == list(CSV_COLUMNS)
    assert exported[2:] == python[2:]  # all but the newest, the legacy record
    rows = {row[2]: dict(zip(CSV_COLUMNS, row, strict=True)) for row in exported[1:]}
    assert rows["legacy"]["changes"] == legacy
    assert json.loads(python[1][CSV_COLUMNS.index("changes")]) == json.loads(legacy)
    first = rows['\'=HYPERLINK("x")']
    assert first["changes"] == (
        '{"alert_overrides.forecast_hours": [null, 12], "name": ["shop", "shop-eu"], '
        '"pg_port": [5432, 5433]}'
    )
    assert first["target_name"] == "a, b" and first["message"] == 'said "no", twice'
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first["at"])
    second = rows["'+plus"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.001234Z", second["at"])
    assert second["token_name"] == "tok,en" and second["message"] == "'-minus"
    assert json.loads(second["changes"]) == AWKWARD[1][2]
    assert second["target_name"] == "line one\nline two"
    assert rows["'@at"]["target_name"] == "'\ttab" and rows["'@at"]["message"] == "'\rcarriage"
    assert rows["ünïcode"]["changes"] == "" and rows["ünïcode"]["message"] == ""
    assert rows["plain"]["changes"].startswith('{"b": [1, 2], "tables"')
    assert rows["null-json"]["changes"] == ""


def test_the_export_applies_the_filters_and_refuses_bad_ones(app, api):
    """The export holds exactly the records the API lists for the same filters (actor,
    action, target, time), newest first; a bad filter is a 422 naming it."""
    _seed(app, 6)
    _awkward(app)
    newest = records(app)[-1]["at"]
    for query in (
        {},
        {"actor": "bob"},
        {"action": "update", "target_type": "source", "target_id": "1"},
        {"actor": "ünïcode"},
        {"since": "24h", "action": "sign_out"},
        {"until": newest},
        {"actor": "nobody"},
    ):
        listed = api.get("/api/v1/audit", query_string={**query, "limit": 500}).get_json()
        exported = _csv(api.get("/audit/export.csv", query_string=query).get_data())
        assert [int(row[0]) for row in exported[1:]] == [r["id"] for r in listed["items"]], query
    bad = api.get("/audit/export.csv?target_id=x&since=yesterday")
    assert bad.status_code == 422 and bad.mimetype == "text/plain"
    assert "target_id:" in bad.get_data(as_text=True) and "since:" in bad.get_data(as_text=True)


def test_an_export_closed_early_stops_its_copy(app, api):
    """A client that goes away mid-export stops the COPY on the server and leaves no
    connection behind; the next export is whole."""
    from sqlalchemy import text

    with app.app_context():
        db.session.execute(
            text(
                "INSERT INTO audit_log (at, actor, action, changes, outcome, message) "
                "SELECT now(), 'bulk', 'check', '{}', 'done', repeat('m', 500) "
                "FROM generate_series(1, 5000)"
            )
        )
        db.session.commit()
    response = api.get("/audit/export.csv", buffered=False)
    chunks = iter(response.response)
    first = next(chunks)
    assert 0 < len(first) <= 64 * 1024
    response.close()

    def copying() -> int:
        with app.app_context():
            return db.session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT%' "
                    "AND pid <> pg_backend_pid()"
                )
            )

    assert wait_for(lambda: copying() == 0)
    whole = _csv(api.get("/audit/export.csv").get_data())
    assert len(whole) == 1 + 5000 + len(records(app)) - 5000


def test_entity_pages_link_to_their_history(app, api, browser):
    """A source's page links to the log filtered to it, which lists its records."""
    api.post("/api/v1/sources", json=SOURCE)
    page = browser.get("/sources/1").get_data(as_text=True)
    assert 'href="/audit/?target_type=source&amp;target_id=1"' in page
    history = browser.get("/audit/?target_type=source&target_id=1").get_data(as_text=True)
    assert history.count('<tr id="audit-') == 1 and "production-postgres" in history


@pytest.mark.parametrize(("proxies", "recorded"), [(0, "127.0.0.1"), (1, "203.0.113.9")])
def test_the_client_address_behind_a_trusted_proxy(database_url, proxies, recorded):
    """TRUSTED_PROXIES=1 records the address the proxy forwards; 0 ignores a forged one."""
    app = make_app(database_url, TRUSTED_PROXIES=proxies)
    create_operator(app)
    client = app.test_client()
    token = csrf_token(client)
    client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert [r["ip"] for r in records(app) if r["action"] == "sign_in"] == [recorded]
