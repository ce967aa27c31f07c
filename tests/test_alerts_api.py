"""The alerts API: alerts, acknowledge, silences, channels, the rule settings and a source's
alert_overrides, with their bad input answered 422 naming the field, in the envelope."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from rosetta_web.alerts.engine.delivery import SIGNATURE_HEADER
from rosetta_web.extensions import db
from rosetta_web.models import Alert, Channel, Notification, Source
from rosetta_web.monitor.rounds import sample_sources
from rosetta_web.sources.services import after_round
from rosetta_web.timeutil import isoformat, utcnow

from .apps import make_app
from .clients import Api
from .constants import ENVELOPE_KEYS, GIB
from .factories import (
    HOOK_SECRET,
    HOOK_TOKEN,
    HOOK_URL,
    add_alert,
    add_channel,
    add_source,
    new_source,
    seed_alerting,
)
from .seed import SOURCE

DEFAULTS = {
    "retained_warning_bytes": 5 * GIB,
    "retained_critical_bytes": 10 * GIB,
    "slot_inactive_minutes": 30,
    "consumer_stalled_minutes": 30,
    "unreachable_rounds": 3,
    "forecast_hours": 6,
    "pipeline_failed_minutes": 15,
    "pipeline_lag_warning_seconds": 300,
    "pipeline_lag_critical_seconds": 1800,
    "repeat_minutes": 60,
}
WEBHOOK = {"name": "ops-hook", "type": "webhook", "url": HOOK_URL, "secret": HOOK_SECRET}
SLACK_TOKEN = "TIiajkdnlazkcOXrIdevi7FQ"
SLACK_URL = f"slack://T1JJ3T3L2/A1BRTD4JD/{SLACK_TOKEN}"


def fields_of(response: Any) -> dict[str, list[str]]:
    """Return a 422's fields, checking the envelope on the way."""
    assert response.status_code == 422, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == ENVELOPE_KEYS and body["error"] == "ValidationError"
    return body["details"]["fields"]


def _schema_check(spec: dict[str, Any], schema: dict[str, Any], value: Any) -> list[str]:
    validator = Draft202012Validator(
        {**schema, "components": spec["components"]},
    )
    return [error.message for error in validator.iter_errors(value)]


# The rule settings


def test_alert_settings_read_replace_and_turn_off(api):
    """GET gives the defaults; PUT replaces every key; null turns a rule off."""
    assert api.get("/api/v1/alert-settings").get_json() == DEFAULTS
    body = {**DEFAULTS, "retained_warning_bytes": 1 * GIB, "slot_inactive_minutes": None}
    saved = api.put("/api/v1/alert-settings", json=body)
    assert saved.status_code == 200 and saved.get_json() == body
    assert api.get("/api/v1/alert-settings").get_json() == body
    # The warning off is fine, and the largest byte count a BIGINT holds is taken as sent.
    body = {**body, "retained_warning_bytes": None, "retained_critical_bytes": 2**63 - 1}
    assert api.put("/api/v1/alert-settings", json=body).get_json() == body


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"retained_warning_bytes": 10 * GIB}, "retained_warning_bytes"),  # equal: refused
        ({"retained_warning_bytes": 11 * GIB}, "retained_warning_bytes"),  # above
        ({"slot_inactive_minutes": 0}, "slot_inactive_minutes"),
        ({"consumer_stalled_minutes": -5}, "consumer_stalled_minutes"),
        ({"repeat_minutes": 0}, "repeat_minutes"),
        ({"forecast_hours": 24 * 30 + 1}, "forecast_hours"),
        ({"unreachable_rounds": 1.5}, "unreachable_rounds"),
        ({"pipeline_failed_minutes": 0}, "pipeline_failed_minutes"),
        ({"pipeline_lag_warning_seconds": 1800}, "pipeline_lag_warning_seconds"),  # = critical
        ({"pipeline_lag_critical_seconds": 60}, "pipeline_lag_warning_seconds"),  # < warning
        ({"pipeline_lag_critical_seconds": "30 min"}, "pipeline_lag_critical_seconds"),
        ({"pipeline_lag_warning_seconds": -300}, "pipeline_lag_warning_seconds"),
        ({"unreachable_rounds": True}, "unreachable_rounds"),
        ({"retained_critical_bytes": "5 GB"}, "retained_critical_bytes"),  # browser only
        ({"retained_critical_bytes": 0}, "retained_critical_bytes"),
        ({"retained_critical_bytes": -1}, "retained_critical_bytes"),
        ({"retained_critical_bytes": 2**63}, "retained_critical_bytes"),
        ({"nonsense": 1}, "nonsense"),
    ],
)
def test_alert_settings_bad_input_is_422_naming_the_field(api, change, field):
    """A warning at or above critical, a zero or negative duration, text for bytes: 422."""
    response = api.put("/api/v1/alert-settings", json={**DEFAULTS, **change})
    assert field in fields_of(response)
    assert api.get("/api/v1/alert-settings").get_json() == DEFAULTS  # nothing stored


def test_alert_settings_put_needs_every_key(api):
    """A left-out key is not read as off: PUT names it; null is how a rule is turned off."""
    body = {key: value for key, value in DEFAULTS.items() if key != "forecast_hours"}
    fields = fields_of(api.put("/api/v1/alert-settings", json=body))
    assert list(fields) == ["forecast_hours"] and "null" in fields["forecast_hours"][0]
    assert api.put("/api/v1/alert-settings", json=[1]).status_code == 400
    assert api.put("/api/v1/alert-settings", data="x", content_type="text/plain").status_code == 415


# A source's alert_overrides


def test_source_alert_overrides_round_trip(api):
    """alert_overrides takes any of the ten keys; GET shows all ten, null for global."""
    overrides = {
        "retained_warning_bytes": 1 * GIB,
        "slot_inactive_minutes": 5,
        "pipeline_lag_warning_seconds": 60,
    }
    created = api.post("/api/v1/sources", json={**SOURCE, "alert_overrides": overrides})
    assert created.status_code == 201, created.get_json()
    expected = dict.fromkeys(DEFAULTS) | overrides
    assert created.get_json()["alert_overrides"] == expected
    assert api.get("/api/v1/sources/1").get_json()["alert_overrides"] == expected
    # PATCH changes the keys it sends and keeps the others.
    patched = api.patch("/api/v1/sources/1", json={"alert_overrides": {"forecast_hours": 2}})
    assert patched.status_code == 200
    assert patched.get_json()["alert_overrides"] == expected | {"forecast_hours": 2}
    patched = api.patch("/api/v1/sources/1", json={"alert_overrides": {"forecast_hours": None}})
    assert patched.get_json()["alert_overrides"] == expected
    # A PATCH of another field keeps them all; a GET sent back on PUT keeps them too.
    assert (
        api.patch("/api/v1/sources/1", json={"pg_port": 6432}).get_json()["alert_overrides"]
        == expected
    )
    current = api.get("/api/v1/sources/1").get_json()
    assert api.put("/api/v1/sources/1", json=current).get_json()["alert_overrides"] == expected
    # null clears every key; a PUT leaving them out clears them too.
    cleared = api.patch("/api/v1/sources/1", json={"alert_overrides": None})
    assert cleared.get_json()["alert_overrides"] == dict.fromkeys(DEFAULTS)
    api.patch("/api/v1/sources/1", json={"alert_overrides": overrides})
    replaced = api.put("/api/v1/sources/1", json=SOURCE)
    assert replaced.get_json()["alert_overrides"] == dict.fromkeys(DEFAULTS)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"nope": 1}, "alert_overrides.nope"),
        ({"slot_inactive_minutes": 0}, "alert_overrides.slot_inactive_minutes"),
        ({"repeat_minutes": -1}, "alert_overrides.repeat_minutes"),
        ({"forecast_hours": "6"}, "alert_overrides.forecast_hours"),
        ({"retained_critical_bytes": 0}, "alert_overrides.retained_critical_bytes"),
        # At or above the critical threshold: its own, or the global one (10 GiB).
        (
            {"retained_warning_bytes": 2 * GIB, "retained_critical_bytes": GIB},
            "alert_overrides.retained_warning_bytes",
        ),
        ({"retained_warning_bytes": 10 * GIB}, "alert_overrides.retained_warning_bytes"),
        # The pipeline lag warning against the critical one: its own, or the global (1800 s).
        (
            {"pipeline_lag_warning_seconds": 600, "pipeline_lag_critical_seconds": 300},
            "alert_overrides.pipeline_lag_warning_seconds",
        ),
        (
            {"pipeline_lag_warning_seconds": 1800},
            "alert_overrides.pipeline_lag_warning_seconds",
        ),
        ({"pipeline_failed_minutes": 0}, "alert_overrides.pipeline_failed_minutes"),
        ([1], "alert_overrides"),
        ("5 GB", "alert_overrides"),
    ],
)
def test_source_alert_overrides_bad_input_is_422(api, overrides, field):
    """An unknown key, a zero or negative value, text, a warning at or above critical: 422."""
    response = api.post("/api/v1/sources", json={**SOURCE, "alert_overrides": overrides})
    assert field in fields_of(response)
    assert api.post("/api/v1/sources", json=SOURCE).status_code == 201
    assert field in fields_of(api.patch("/api/v1/sources/1", json={"alert_overrides": overrides}))


# Channels


def test_channel_crud_never_shows_the_url_or_secret(app, api):
    """A channel is created, listed, read, replaced, patched and deleted; no response (nor an
    error) ever holds its URL's token or its secret."""
    seen: list[str] = []

    def call(method: str, path: str, **kwargs: Any) -> Any:
        response = getattr(api, method)(path, **kwargs)
        seen.append(response.get_data(as_text=True))
        return response

    source_id = call("post", "/api/v1/sources", json=SOURCE).get_json()["id"]
    created = call("post", "/api/v1/channels", json={**WEBHOOK, "source_ids": [source_id]})
    assert created.status_code == 201 and created.headers["Location"] == "/api/v1/channels/1"
    channel = created.get_json()
    assert channel | {"created_at": None, "updated_at": None} == {
        "id": 1,
        "name": "ops-hook",
        "type": "webhook",
        "url": "https://hooks.example.com/…",
        "secret_set": True,
        "min_severity": "warning",
        "source_ids": [source_id],
        "created_at": None,
        "updated_at": None,
    }
    assert [c["name"] for c in call("get", "/api/v1/channels").get_json()] == ["ops-hook"]
    # The GET sent back on PUT keeps the stored URL and secret (the masked URL means "keep").
    current = call("get", "/api/v1/channels/1").get_json()
    replaced = call("put", "/api/v1/channels/1", json={**current, "min_severity": "critical"})
    assert replaced.status_code == 200, replaced.get_json()
    assert replaced.get_json()["min_severity"] == "critical"
    with app.app_context():
        stored = db.session.get(Channel, 1)
        assert stored.url == HOOK_URL and stored.secret == HOOK_SECRET
    # Left out, or null, the URL and secret are kept too; source_ids [] is every source.
    patched = call("patch", "/api/v1/channels/1", json={"source_ids": [], "secret": None})
    assert patched.status_code == 200 and patched.get_json()["source_ids"] == []
    put = call("put", "/api/v1/channels/1", json={"name": "ops-hook", "type": "webhook"})
    assert put.status_code == 200
    with app.app_context():
        stored = db.session.get(Channel, 1)
        assert stored.url == HOOK_URL and stored.secret == HOOK_SECRET
    # A new URL replaces the stored one.
    new_url = "https://other.example.com/hook/NEWTOKEN42"
    assert call("patch", "/api/v1/channels/1", json={"url": new_url}).status_code == 200
    with app.app_context():
        assert db.session.get(Channel, 1).url == new_url
    # Errors about the URL and secret do not repeat them either.
    call("post", "/api/v1/channels", json={**WEBHOOK, "name": "x", "url": f" {HOOK_URL}"})
    call("post", "/api/v1/channels", json={**WEBHOOK, "name": "y", "url": f"ftp://{HOOK_TOKEN}"})
    call("post", "/api/v1/channels", json={**WEBHOOK, "name": "z", "secret": HOOK_SECRET[:8]})
    call("post", "/api/v1/channels", json={**WEBHOOK})  # the name is taken
    call("get", "/api/v1/openapi.json")
    assert call("delete", "/api/v1/channels/1").status_code == 204
    assert call("get", "/api/v1/channels/1").status_code == 404
    for body in seen:
        for secret in (HOOK_TOKEN, HOOK_SECRET, HOOK_SECRET[:8], "NEWTOKEN42"):
            assert secret not in body


def test_apprise_channel_masked_url_sent_back_keeps_it(app, api):
    """An Apprise URL is shown as Apprise masks it; that masked form sent back keeps it."""
    body = {"name": "ops-slack", "type": "apprise", "url": SLACK_URL, "min_severity": "critical"}
    created = api.post("/api/v1/channels", json=body)
    assert created.status_code == 201, created.get_json()
    channel = created.get_json()
    assert SLACK_TOKEN not in created.get_data(as_text=True)
    assert channel["url"].startswith("slack://") and channel["secret_set"] is False
    replaced = api.put("/api/v1/channels/1", json={**channel, "name": "ops-slack-2"})
    assert replaced.status_code == 200, replaced.get_json()
    assert SLACK_TOKEN not in replaced.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Channel, 1).url == SLACK_URL


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "apprise", "url": "nope://what/ever"}, "url"),  # Apprise cannot read it
        ({"type": "apprise", "url": "slack://"}, "url"),
        ({"type": "webhook", "url": "ftp://hooks.example.com/x"}, "url"),  # not http(s)
        ({"type": "webhook", "url": "mailto://user:pw@example.com"}, "url"),
        ({"type": "webhook", "url": "https://"}, "url"),  # no host
        ({"url": ""}, "url"),
        ({"url": None}, "url"),
        ({"secret": "short"}, "secret"),  # a webhook's secret: 16 characters or more
        ({"secret": None}, "secret"),
        ({"type": "email"}, "type"),
        ({"type": "WEBHOOK"}, "type"),
        ({"min_severity": "info"}, "min_severity"),
        ({"source_ids": [99]}, "source_ids"),
        ({"source_ids": ["1"]}, "source_ids"),
        ({"source_ids": [True]}, "source_ids"),
        ({"source_ids": 1}, "source_ids"),
        ({"source_ids": [2**70]}, "source_ids"),
        ({"name": "Ops Hook"}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_channel_bad_input_is_422_naming_the_field(api, body, field):
    """A URL Apprise cannot read, a webhook URL not http(s), a short secret, an unknown
    severity or source: 422 naming the field, nothing stored."""
    response = api.post("/api/v1/channels", json={**WEBHOOK, **body})
    assert field in fields_of(response)
    assert api.get("/api/v1/channels").get_json() == []


def test_channel_type_change_needs_the_url_again(api):
    """Changing the type keeps no URL: it must be sent again, for the new type."""
    assert api.post("/api/v1/channels", json=WEBHOOK).status_code == 201
    assert "url" in fields_of(api.patch("/api/v1/channels/1", json={"type": "apprise"}))
    changed = api.patch("/api/v1/channels/1", json={"type": "apprise", "url": SLACK_URL})
    assert changed.status_code == 200 and changed.get_json()["type"] == "apprise"


def test_channel_404_and_409(api):
    """Unknown ids are 404 in the envelope; a taken name is 409."""
    for method, path in (
        ("get", "/api/v1/channels/9"),
        ("delete", "/api/v1/channels/9"),
        ("post", "/api/v1/channels/9/test"),
        ("get", "/api/v1/channels/9/deliveries"),
        ("get", f"/api/v1/channels/{2**70}"),
    ):
        response = getattr(api, method)(path)
        assert response.status_code == 404, path
        assert response.get_json()["error"] == "EntityNotFoundError"
    assert api.post("/api/v1/channels", json=WEBHOOK).status_code == 201
    taken = api.post("/api/v1/channels", json={**WEBHOOK, "name": "ops-hook"})
    assert taken.status_code == 409 and taken.get_json()["error"] == "DuplicateNameError"


def test_channel_test_sends_now_and_logs_it(api, httpserver):
    """POST /channels/<id>/test sends a signed test webhook now and returns the delivery,
    which the delivery log then lists, newest first."""
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    url = httpserver.url_for("/hook")
    body = {**WEBHOOK, "url": url}
    assert api.post("/api/v1/channels", json=body).status_code == 201
    sent = api.post("/api/v1/channels/1/test")
    assert sent.status_code == 200
    delivery = sent.get_json()
    assert delivery["ok"] is True and delivery["status_code"] == 200
    assert delivery["event"] == "test" and delivery["channel_id"] == 1
    (request, _), *_ = httpserver.log
    assert request.json["event"] == "test"
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", request.headers[SIGNATURE_HEADER])
    # A receiver that refuses: the delivery says so; nothing raises.
    httpserver.clear()
    httpserver.expect_request("/hook").respond_with_data("no", status=503)
    failed = api.post("/api/v1/channels/1/test").get_json()
    assert failed["ok"] is False and failed["status_code"] == 503
    log = api.get("/api/v1/channels/1/deliveries").get_json()
    assert [entry["id"] for entry in log] == [failed["id"], delivery["id"]]
    assert [e["id"] for e in api.get("/api/v1/channels/1/deliveries?limit=1").get_json()] == [
        failed["id"]
    ]
    for query in ("limit=0", "limit=1001", "limit=x", "limit="):
        assert "limit" in fields_of(api.get(f"/api/v1/channels/1/deliveries?{query}"))


def test_channel_test_of_an_unreachable_webhook_fails_quickly(api, hanging_server):
    """A webhook that never answers: the test says so after the 5 s timeout, never a 500."""
    url = f"http://127.0.0.1:{hanging_server.port}/hook"
    assert api.post("/api/v1/channels", json={**WEBHOOK, "url": url}).status_code == 201
    response = api.post("/api/v1/channels/1/test")
    assert response.status_code == 200
    body = response.get_json()
    assert body["ok"] is False and "within 5 s" in body["error"]


# Alerts


def test_alerts_list_filters_orders_and_pages(app, api):
    """state=firing lists worst first; otherwise newest first; filters and pages apply."""
    assert api.post("/api/v1/sources", json=SOURCE).status_code == 201
    assert api.post("/api/v1/sources", json={**SOURCE, "name": "other"}).status_code == 201
    now = utcnow()
    old_warning = add_alert(app, 1, started_at=now - timedelta(hours=3))
    new_critical = add_alert(
        app, 1, severity="critical", rule="slot_wal_status", started_at=now - timedelta(hours=1)
    )
    old_critical = add_alert(
        app, 2, severity="critical", rule="source_unreachable", started_at=now - timedelta(hours=2)
    )
    resolved = add_alert(
        app,
        1,
        state="resolved",
        started_at=now - timedelta(minutes=30),
        resolved_at=now - timedelta(minutes=5),
    )
    ancient = add_alert(
        app,
        None,  # its source was deleted
        state="resolved",
        started_at=now - timedelta(days=9),
        resolved_at=now - timedelta(days=8),
    )

    def ids(query: str = "") -> list[int]:
        response = api.get(f"/api/v1/alerts{query}")
        assert response.status_code == 200, response.get_json()
        return [alert["id"] for alert in response.get_json()]

    assert ids("?state=firing") == [old_critical, new_critical, old_warning]
    assert ids() == [resolved, new_critical, old_critical, old_warning, ancient]
    assert ids("?state=all") == ids()
    assert ids("?state=resolved") == [resolved, ancient]
    assert ids("?source_id=1") == [resolved, new_critical, old_warning]
    assert ids("?state=firing&source_id=1") == [new_critical, old_warning]
    assert ids("?source_id=99") == []
    assert ids("?rule=slot_wal_status") == [new_critical]
    assert ids("?state=firing&rule=retained_wal") == [old_warning]
    assert ids("?start=1d") == [resolved, new_critical, old_critical, old_warning]
    assert ids("?end=90m") == [old_critical, old_warning, ancient]
    assert ids("?state=firing&end=90m") == [old_critical, old_warning]
    start, end = isoformat(now - timedelta(days=10)), isoformat(now - timedelta(days=7))
    assert ids(f"?start={start}&end={end}") == [ancient]
    paged = api.get("/api/v1/alerts?per_page=2&page=2")
    assert [a["id"] for a in paged.get_json()] == [old_critical, old_warning]
    assert paged.headers["X-Total-Count"] == "5"
    firing = api.get("/api/v1/alerts?state=firing&per_page=2&page=2")
    assert [a["id"] for a in firing.get_json()] == [old_warning]
    assert firing.headers["X-Total-Count"] == "3"
    assert ids("?page=9") == []
    alert = api.get(f"/api/v1/alerts/{new_critical}").get_json()
    assert alert | {"started_at": None} == {
        "id": new_critical,
        "rule": "slot_wal_status",
        "severity": "critical",
        "state": "firing",
        "source_id": 1,
        "source_name": "production-postgres",
        "slot_name": "orders",
        "value": 6.0 * GIB,
        "threshold": 5.0 * GIB,
        "message": "slot orders retains 6 GB",
        "resolved_message": None,
        "started_at": None,
        "resolved_at": None,
        "acknowledged_by": None,
        "silenced_until": None,
    }


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("state=open", "state"),
        ("state=", "state"),
        ("state=FIRING", "state"),
        ("rule=disk_full", "rule"),
        ("source_id=x", "source_id"),
        ("source_id=0", "source_id"),
        (f"source_id={2**70}", "source_id"),
        ("page=0", "page"),
        ("page=1000001", "page"),
        ("per_page=0", "per_page"),
        ("per_page=501", "per_page"),
        ("start=yesterday", "start"),
        ("end=2026-13-01", "end"),
        ("start=1h&end=2h", "end"),  # ends before it starts
    ],
)
def test_alerts_list_bad_parameters_are_422_naming_them(api, query, field):
    """Unknown or invalid values answer 422 naming the parameter."""
    assert field in fields_of(api.get(f"/api/v1/alerts?{query}"))


def test_pipeline_alerts_are_listed_by_rule_as_their_schema_says_and_silenced(app, api):
    """A pipeline's alert (no slot, on its source) is listed with ?rule=, answers the Alert
    schema, and a silence of its rule is taken."""
    assert api.post("/api/v1/sources", json=SOURCE).status_code == 201
    add_alert(
        app,
        1,
        key="pipeline_lag:pipeline:4",
        rule="pipeline_lag",
        slot_name=None,
        value=1900.0,
        threshold=1800.0,
        severity="critical",
        message="pipeline `orders-to-sf` is 31 min behind its source (critical at 30 min)",
    )
    add_alert(app, 1)  # a slot's, left out by the filter
    spec = api.get("/api/v1/openapi.json").get_json()
    listed = api.get("/api/v1/alerts?rule=pipeline_lag")
    assert listed.status_code == 200
    [alert] = listed.get_json()
    assert (alert["rule"], alert["slot_name"], alert["source_id"]) == ("pipeline_lag", None, 1)
    assert _schema_check(spec, {"$ref": "#/components/schemas/Alert"}, alert) == []
    assert "pipeline_failed" in spec["components"]["schemas"]["Alert"]["properties"]["rule"]["enum"]
    ends_at = isoformat(utcnow() + timedelta(hours=1))
    body = {"source_id": 1, "rule": "pipeline_failed", "ends_at": ends_at}
    assert api.post("/api/v1/silences", json=body).status_code == 201


def test_acknowledge_firing_and_resolved_alerts(app, api):
    """Ack records who; again is harmless; a resolved alert is 409; unknown ids are 404."""
    assert api.post("/api/v1/sources", json=SOURCE).status_code == 201
    firing = add_alert(app, 1)
    resolved = add_alert(app, 1, state="resolved")
    acked = api.post(f"/api/v1/alerts/{firing}/ack")
    assert acked.status_code == 200 and acked.get_json()["acknowledged_by"] == "script-owner"
    again = api.post(f"/api/v1/alerts/{firing}/ack")
    assert again.status_code == 200 and again.get_json()["acknowledged_by"] == "script-owner"
    conflict = api.post(f"/api/v1/alerts/{resolved}/ack")
    assert conflict.status_code == 409
    body = conflict.get_json()
    assert set(body) == ENVELOPE_KEYS and body["error"] == "ConflictError"
    assert body["details"] == {"state": "resolved"}
    with app.app_context():
        assert db.session.get(Alert, resolved).acknowledged_by is None
    for path in ("/api/v1/alerts/999", "/api/v1/alerts/999/ack", f"/api/v1/alerts/{2**70}"):
        call = api.post if path.endswith("ack") else api.get
        response = call(path)
        assert response.status_code == 404 and response.get_json()["error"] == (
            "EntityNotFoundError"
        )


# Silences


def test_silences_create_list_mark_and_end(app, api):
    """A silence is created with who, listed while in force, marks the source's alerts, and
    ends on DELETE."""
    assert api.post("/api/v1/sources", json=SOURCE).status_code == 201
    alert_id = add_alert(app, 1)
    ends_at = isoformat(utcnow() + timedelta(hours=2))
    created = api.post(
        "/api/v1/silences",
        json={"source_id": 1, "rule": "retained_wal", "ends_at": ends_at, "comment": "upgrade"},
    )
    assert created.status_code == 201, created.get_json()
    silence = created.get_json()
    assert silence | {"id": None, "created_at": None, "ends_at": None} == {
        "id": None,
        "source_id": 1,
        "rule": "retained_wal",
        "ends_at": None,
        "comment": "upgrade",
        "created_by": "script-owner",
        "created_at": None,
    }
    assert silence["ends_at"][:19] == ends_at[:19]
    # Every rule, with no comment; a time with an offset, or none (UTC).
    everything = api.post(
        "/api/v1/silences",
        json={"source_id": 1, "rule": None, "ends_at": "2999-01-01T10:00:00+02:00"},
    )
    assert everything.status_code == 201, everything.get_json()
    assert everything.get_json()["rule"] is None and everything.get_json()["comment"] is None
    assert everything.get_json()["ends_at"] == "2999-01-01T08:00:00Z"
    listed = api.get("/api/v1/silences").get_json()
    assert [s["id"] for s in listed] == [silence["id"], everything.get_json()["id"]]
    assert api.get(f"/api/v1/alerts/{alert_id}").get_json()["silenced_until"] is not None
    assert api.delete(f"/api/v1/silences/{silence['id']}").status_code == 204
    assert api.delete(f"/api/v1/silences/{silence['id']}").status_code == 404
    assert api.delete(f"/api/v1/silences/{2**70}").status_code == 404
    assert [s["id"] for s in api.get("/api/v1/silences").get_json()] == [
        everything.get_json()["id"]
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ends_at": "2020-01-01T00:00:00Z"}, "ends_at"),  # in the past
        ({"ends_at": "tomorrow"}, "ends_at"),
        ({"ends_at": ""}, "ends_at"),
        ({"ends_at": None}, "ends_at"),
        ({"ends_at": "9999-12-31T23:59:59-01:00"}, "ends_at"),  # past year 9999 in UTC
        ({"ends_at": 1893456000}, "ends_at"),
        ({"source_id": 9}, "source_id"),
        ({"source_id": 0}, "source_id"),
        ({"source_id": -3}, "source_id"),
        ({"source_id": 2**70}, "source_id"),
        ({"source_id": "1"}, "source_id"),
        ({"rule": "disk_full"}, "rule"),
        ({"comment": "x" * 501}, "comment"),
        ({"comment": " padded "}, "comment"),
        ({"until": "1h"}, "until"),
    ],
)
def test_silence_bad_input_is_422_naming_the_field(api, change, field):
    """A silence ending in the past, an unknown source or rule: 422 naming the field."""
    assert api.post("/api/v1/sources", json=SOURCE).status_code == 201
    body = {"source_id": 1, "rule": None, "ends_at": "2999-01-01T00:00:00Z", **change}
    assert field in fields_of(api.post("/api/v1/silences", json=body))
    assert api.get("/api/v1/silences").get_json() == []


# The document, and the slots' forecast


def test_document_describes_the_alerts_api(api):
    """The bodies' schemas say what the server takes: arrays, objects, integers or null."""
    spec = api.get("/api/v1/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    assert schemas["ChannelInput"]["properties"]["source_ids"]["items"] == {"type": "integer"}
    assert schemas["ChannelInput"]["properties"]["secret"]["writeOnly"] is True
    assert set(schemas["ChannelInput"]["required"]) == {"name", "url"}
    assert "url" not in schemas["ChannelReplace"]["required"]
    assert schemas["ChannelInput"]["properties"]["type"]["enum"] == ["webhook", "apprise"]
    overrides = schemas["SourceInput"]["properties"]["alert_overrides"]
    assert overrides["additionalProperties"] is False
    assert set(overrides["properties"]) == set(DEFAULTS)
    assert overrides["properties"]["slot_inactive_minutes"]["minimum"] == 1
    assert schemas["AlertOverrides"]["required"] == list(DEFAULTS)
    settings = schemas["AlertSettingsInput"]
    assert settings["required"] == list(DEFAULTS)
    assert settings["properties"]["retained_warning_bytes"]["type"] == ["integer", "null"]
    assert set(schemas["Alert"]["properties"]) == {
        "id", "rule", "severity", "state", "source_id", "source_name", "slot_name", "value",
        "threshold", "message", "resolved_message", "started_at", "resolved_at",
        "acknowledged_by", "silenced_until",
    }  # fmt: skip
    silence = schemas["SilenceInput"]
    assert set(silence["required"]) == {"source_id", "ends_at"}
    assert None in silence["properties"]["rule"]["enum"]
    for path in (
        "/api/v1/alerts",
        "/api/v1/alerts/{alert_id}/ack",
        "/api/v1/silences/{silence_id}",
        "/api/v1/channels/{entity_id}/test",
        "/api/v1/alert-settings",
    ):
        assert path in spec["paths"], path


def test_every_alerts_get_answers_its_documented_schema(app, api, source_db):
    """Each alerts GET, with data, returns exactly what its schema describes; the slots carry
    their forecast."""
    source_id = add_source(app, "shop", source_db["port"])
    with app.app_context():
        assert after_round(sample_sources())[0].ok
        db.session.add(new_source("never-sampled"))
        db.session.commit()
    seed_alerting(app, source_id)
    add_alert(app, source_id, state="resolved", rule="slot_inactive", slot_name=None, value=None)
    ends_at = isoformat(utcnow() + timedelta(hours=1))
    body = {"source_id": source_id, "ends_at": ends_at}
    assert api.post("/api/v1/silences", json=body).status_code == 201
    spec = api.get("/api/v1/openapi.json").get_json()
    checked = 0
    for path in (
        "/api/v1/alerts",
        "/api/v1/alerts?state=firing",
        "/api/v1/alerts/1",
        "/api/v1/silences",
        "/api/v1/channels",
        "/api/v1/channels/1",
        "/api/v1/channels/1/deliveries",
        "/api/v1/alert-settings",
        f"/api/v1/sources/{source_id}",
        f"/api/v1/sources/{source_id}/slots",
        f"/api/v1/sources/{source_id}/wal-history",
    ):
        template = re.sub(r"/1(?=/|$)", "/{x}", path.split("?")[0])
        template = re.sub(rf"/{source_id}(?=/|$)", "/{x}", template)
        (operation,) = (
            ops["get"]
            for name, ops in spec["paths"].items()
            if re.sub(r"\{[^}]+\}", "{x}", name) == template
        )
        response = api.get(path)
        assert response.status_code == 200, path
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert _schema_check(spec, schema, response.get_json()) == [], path
        checked += 1
    assert checked == 11
    slots = api.get(f"/api/v1/sources/{source_id}/slots").get_json()
    assert slots and {"growth_bytes_per_hour", "eta_critical", "eta_lost"} <= set(slots[0])
    alert = api.get("/api/v1/alerts/1").get_json()
    assert alert["silenced_until"] is not None  # the silence covers the source's alerts


def test_alerts_api_on_sqlite(sqlite_app):
    """The same endpoints on the embedded SQLite metadata database."""
    from rosetta_web.auth import services

    from .clients import Api
    from .factories import PASSWORD

    with sqlite_app.app_context():
        _, token = services.create_token(services.create_user("lite", PASSWORD, "admin"), "t")
        db.session.add(new_source("lite-src"))
        db.session.commit()
        source_id = db.session.query(Source.id).scalar()
    api = Api(sqlite_app.test_client(), token)
    assert api.put("/api/v1/alert-settings", json=DEFAULTS).get_json() == DEFAULTS
    assert "retained_warning_bytes" in fields_of(
        api.put("/api/v1/alert-settings", json={**DEFAULTS, "retained_warning_bytes": 20 * GIB})
    )
    assert api.post("/api/v1/channels", json=WEBHOOK).status_code == 201
    assert api.patch("/api/v1/channels/1", json={"source_ids": [source_id]}).status_code == 200
    firing = add_alert(sqlite_app, source_id)
    resolved = add_alert(sqlite_app, source_id, state="resolved")
    assert [a["id"] for a in api.get("/api/v1/alerts?state=firing").get_json()] == [firing]
    assert api.post(f"/api/v1/alerts/{resolved}/ack").status_code == 409
    assert api.post(f"/api/v1/alerts/{firing}/ack").status_code == 200
    body = {"source_id": source_id, "ends_at": isoformat(utcnow() + timedelta(hours=1))}
    assert api.post("/api/v1/silences", json=body).status_code == 201
    assert "ends_at" in fields_of(
        api.post("/api/v1/silences", json={**body, "ends_at": "2001-01-01T00:00:00"})
    )
    overrides = {"alert_overrides": {"unreachable_rounds": 7}}
    patched = api.patch(f"/api/v1/sources/{source_id}", json=overrides)
    assert patched.get_json()["alert_overrides"]["unreachable_rounds"] == 7
    assert api.delete("/api/v1/channels/1").status_code == 204


def test_a_masked_url_is_never_stored_as_a_channel_url(api):
    """A channel copied by GET then POST: its masked URL is refused, not stored as the URL."""
    body = {"name": "copy", "type": "webhook", "secret": "s" * 20}
    for masked in ("https://hooks.example.com/…", "slack://T...A/B...B/C...C/"):
        kind = "webhook" if masked.startswith("https") else "apprise"
        response = api.post("/api/v1/channels", json={**body, "type": kind, "url": masked})
        assert response.status_code == 422
        assert "masked URL" in response.get_json()["details"]["fields"]["url"][0]


# Where a channel may send


@pytest.mark.parametrize(
    ("kind", "url", "host", "reason"),
    [
        ("webhook", "http://169.254.169.254/latest/meta-data/", "169.254.169.254", "metadata"),
        ("webhook", "http://metadata.google.internal/computeMetadata/v1/", None, "metadata"),
        ("webhook", "http://METADATA.google.internal./x", None, "metadata"),
        ("webhook", "http://[fe80::1]:8080/hook", "fe80::1", "link-local"),
        ("webhook", "http://169.254.10.20/hook", "169.254.10.20", "link-local"),
        ("webhook", "http://0.0.0.0:8080/hook", "0.0.0.0", "unspecified"),
        ("webhook", "http://[::]/hook", "::", "unspecified"),
        ("webhook", "http://[fd00:ec2::254]/latest", "fd00:ec2::254", "metadata"),
        ("webhook", "http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254", "metadata"),
        ("webhook", "http://[64:ff9b::a9fe:a9fe]/", "64:ff9b::a9fe:a9fe", "metadata"),  # NAT64
        ("webhook", "http://2852039166/latest", "2852039166", "metadata"),  # the same, as a number
        ("webhook", "http://100.100.100.200/latest", "100.100.100.200", "metadata"),
        ("apprise", "json://169.254.169.254/latest", "169.254.169.254", "metadata"),
        ("apprise", "ntfy://metadata.google.internal/alerts", None, "metadata"),
        ("apprise", "mailtos://u:pw@example.com?smtp=169.254.169.254&to=a@example.com", None, ""),
    ],
)
def test_a_channel_aimed_at_an_internal_target_is_refused_when_saved(api, kind, url, host, reason):
    """Link-local, unspecified and cloud-metadata hosts, however written (a name, a number,
    IPv6, an Apprise service's host or SMTP server): 422 on the URL saying why, nothing
    stored; changing a saved channel to one is refused too."""
    body = {**WEBHOOK, "type": kind, "url": url}
    [message] = fields_of(api.post("/api/v1/channels", json=body))["url"]
    assert message.startswith("Rosetta does not send to ") and reason in message
    if host:
        assert f"to {host}:" in message
    assert api.get("/api/v1/channels").get_json() == []
    assert api.post("/api/v1/channels", json=WEBHOOK).status_code == 201
    changed = api.patch("/api/v1/channels/1", json={"type": kind, "url": url})
    assert fields_of(changed)["url"][0].startswith("Rosetta does not send to ")
    assert api.get("/api/v1/channels/1").get_json()["url"] == "https://hooks.example.com/…"


PRIVATE_URLS = (
    "http://127.0.0.1:8025/hook",
    "http://localhost:8025/hook",
    "http://10.1.2.3/hook",
    "http://192.168.1.20/hook",
    "http://[::1]/hook",
    "http://[fd12:3456::1]/hook",
)


def test_private_targets_are_allowed_unless_the_setting_refuses_them(api, database_url):
    """A local relay is normal: loopback and private addresses are saved. With
    ALERT_PRIVATE_TARGETS=false they (and localhost) are 422 saying so, and a public host is
    still saved."""
    from rosetta_web.auth import services

    for number, url in enumerate(PRIVATE_URLS):
        body = {**WEBHOOK, "name": f"relay-{number}", "url": url}
        assert api.post("/api/v1/channels", json=body).status_code == 201, url
    strict = make_app(database_url, ALERT_PRIVATE_TARGETS=False)
    with strict.app_context():
        user = services.create_user("strict-owner", "a-long-password-1", "admin")
        _, raw = services.create_token(user, "tests")
    strict_api = Api(strict.test_client(), raw)
    for url in PRIVATE_URLS:
        response = strict_api.post("/api/v1/channels", json={**WEBHOOK, "url": url})
        [message] = fields_of(response)["url"]
        assert message.endswith("refused while ALERT_PRIVATE_TARGETS=false."), url
    assert strict_api.post("/api/v1/channels", json=WEBHOOK).status_code == 201
    with strict.app_context():
        db.engine.dispose()


def test_private_targets_setting_is_validated(tmp_path):
    """ALERT_PRIVATE_TARGETS is true by default, read as the other switches are, and refused
    with its name when it is neither true nor false."""
    from rosetta_web.config import ConfigError, load_config

    base = {"DATABASE_URL": "postgresql://u@h/d"}
    assert load_config(str(tmp_path), base)["ALERT_PRIVATE_TARGETS"] is True
    off = {**base, "ALERT_PRIVATE_TARGETS": "false"}
    assert load_config(str(tmp_path), off)["ALERT_PRIVATE_TARGETS"] is False
    with pytest.raises(ConfigError, match="ALERT_PRIVATE_TARGETS must be true or false"):
        load_config(str(tmp_path), {**base, "ALERT_PRIVATE_TARGETS": "sometimes"})


def test_a_stored_channel_aimed_at_the_metadata_service_is_refused_when_sent(app, api):
    """A channel saved before targets were checked, aimed at the metadata service: the test
    send fails with the reason, nothing leaves, and the delivery log records it."""
    add_channel(app, "old", url="http://169.254.169.254/latest/meta-data/iam/")
    add_channel(app, "named", url="http://metadata.google.internal/computeMetadata/v1/")
    for channel_id, host in ((1, "169.254.169.254"), (2, "metadata.google.internal")):
        sent = api.post(f"/api/v1/channels/{channel_id}/test")
        assert sent.status_code == 200
        delivery = sent.get_json()
        assert delivery["ok"] is False and delivery["status_code"] is None
        assert delivery["error"].startswith(f"refused to send to {host}: a cloud metadata")
        log = api.get(f"/api/v1/channels/{channel_id}/deliveries").get_json()
        assert [entry["error"] for entry in log] == [delivery["error"]]


# Redirects and the delivery id


def test_a_redirect_is_not_delivery_for_a_webhook_or_an_apprise_channel(api, httpserver):
    """A target that answers 302 (to a page that would answer 200): not delivered, for a
    webhook and for Apprise's JSON service, even with redirect=yes in its URL; the redirect
    is never followed."""
    httpserver.expect_request("/hook").respond_with_data(
        "", status=302, headers={"Location": httpserver.url_for("/landed")}
    )
    httpserver.expect_request("/landed").respond_with_data("ok")
    hook = httpserver.url_for("/hook")
    apprise_url = hook.replace("http://", "json://") + "?redirect=yes"
    assert api.post("/api/v1/channels", json={**WEBHOOK, "url": hook}).status_code == 201
    body = {"name": "relay", "type": "apprise", "url": apprise_url}
    assert api.post("/api/v1/channels", json=body).status_code == 201
    webhook = api.post("/api/v1/channels/1/test").get_json()
    assert webhook["ok"] is False and webhook["status_code"] == 302
    assert webhook["error"] == "HTTP 302"
    relayed = api.post("/api/v1/channels/2/test").get_json()
    assert relayed["ok"] is False and "302" in relayed["error"]
    assert [request.path for request, _ in httpserver.log] == ["/hook", "/hook"]
    for channel_id in (1, 2):
        [entry] = api.get(f"/api/v1/channels/{channel_id}/deliveries").get_json()
        assert entry["ok"] is False


def test_a_test_notification_carries_its_delivery_id_in_the_body_and_a_header(app, api, httpserver):
    """The webhook gets `delivery_id` in its signed body and X-Rosetta-Delivery; an Apprise
    service gets it in its text; each is the notification's own, new for each test."""
    from rosetta_web.alerts.engine.delivery import DELIVERY_HEADER

    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    hook = httpserver.url_for("/hook")
    assert api.post("/api/v1/channels", json={**WEBHOOK, "url": hook}).status_code == 201
    body = {"name": "relay", "type": "apprise", "url": hook.replace("http://", "json://")}
    assert api.post("/api/v1/channels", json=body).status_code == 201
    for channel_id in (1, 2, 1):
        assert api.post(f"/api/v1/channels/{channel_id}/test").get_json()["ok"] is True
    with app.app_context():
        stored = list(db.session.scalars(db.select(Notification.delivery_id).order_by("id")))
    assert len(set(stored)) == 3 and all(re.fullmatch(r"[0-9a-f-]{36}", id_) for id_ in stored)
    (first, _), (relayed, _), (again, _) = httpserver.log
    assert first.json["delivery_id"] == first.headers[DELIVERY_HEADER] == stored[0]
    assert again.json["delivery_id"] == again.headers[DELIVERY_HEADER] == stored[2]
    assert f"delivery_id: {stored[1]}" in relayed.json["message"]
