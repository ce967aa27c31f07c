"""The JSON API with a bearer token: the documented bodies, CRUD, actions and every error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from flask.json.provider import DefaultJSONProvider

from .constants import ENVELOPE_KEYS
from .seed import DESTINATION, PIPELINE, SOURCE


def _create_all(api):
    """The seed's source, destination and pipeline, the pipeline paused (its source is not
    ready for START: postgres.example.com does not resolve)."""
    assert api.post("/api/v1/sources", json=SOURCE).status_code == 201
    assert api.post("/api/v1/destinations", json=DESTINATION).status_code == 201
    assert api.post("/api/v1/pipelines", json={**PIPELINE, "status": "PAUSE"}).status_code == 201


def test_seed_bodies_are_accepted_verbatim(api, ready_source, ready_destination):
    """The three curl bodies of GETTING_STARTED.md create a source, destination and pipeline;
    the pipeline's START waits until its source is ready, then until its destination is."""
    source = api.post("/api/v1/sources", json=SOURCE)
    assert source.status_code == 201
    assert source.headers["Location"] == "/api/v1/sources/1"
    body = source.get_json()
    assert body["name"] == "production-postgres" and body["pg_port"] == 5432
    assert body["pg_password_set"] is True and "pg_password" not in body
    destination = api.post("/api/v1/destinations", json=DESTINATION).get_json()
    assert (
        destination["snowflake_role"] == "SYSADMIN" and destination["snowflake_warehouse"] is None
    )
    refused = api.post("/api/v1/pipelines", json=PIPELINE)
    assert refused.status_code == 409 and refused.get_json()["error"] == "SourceNotReadyError"
    assert "connection" in refused.get_json()["details"]["failing"]
    assert api.get("/api/v1/pipelines").get_json() == []
    connection = {k: v for k, v in ready_source.items() if k != "name"}
    assert api.patch("/api/v1/sources/1", json=connection).get_json()["readiness"]["ready"]
    refused = api.post("/api/v1/pipelines", json=PIPELINE)
    assert refused.status_code == 409
    assert refused.get_json()["error"] == "DestinationNotReadyError"
    assert refused.get_json()["details"] == {"destination_id": 1, "failing": ["key_file"]}
    ready = {k: v for k, v in ready_destination.items() if k != "name"}
    assert api.patch("/api/v1/destinations/1", json=ready).get_json()["readiness"]["ready"]
    pipeline = api.post("/api/v1/pipelines", json=PIPELINE)
    assert pipeline.status_code == 201
    body = pipeline.get_json()
    assert body["engine"]["state"] == "stopped"
    assert body | {"created_at": None, "updated_at": None, "engine": None} == {
        "id": 1,
        "name": "production-to-snowflake",
        "source_id": 1,
        "destination_id": 1,
        "status": "START",
        "refresh_tables": None,
        "refresh_skipped": None,
        "engine": None,
        "created_at": None,
        "updated_at": None,
    }


def test_list_get_put_patch_delete(api):
    """Each resource can be listed, read, replaced, partly updated and deleted."""
    _create_all(api)
    assert [s["name"] for s in api.get("/api/v1/sources").get_json()] == ["production-postgres"]
    assert api.get("/api/v1/destinations/1").get_json()["snowflake_user"] == "ETL_USER"

    put = api.put("/api/v1/sources/1", json={**SOURCE, "pg_password": "", "slot_name": "cdc_slot"})
    assert put.status_code == 200 and put.get_json()["slot_name"] == "cdc_slot"
    patch = api.patch("/api/v1/sources/1", json={"pg_port": 6432})
    assert patch.status_code == 200
    assert patch.get_json()["pg_port"] == 6432 and patch.get_json()["slot_name"] == "cdc_slot"

    # A GET response sent back on PUT is accepted: read-only fields are ignored.
    current = api.get("/api/v1/destinations/1").get_json()
    assert (
        api.put("/api/v1/destinations/1", json={**current, "snowflake_schema": "RAW"}).status_code
        == 200
    )
    assert api.get("/api/v1/destinations/1").get_json()["snowflake_schema"] == "RAW"

    pipeline = api.patch("/api/v1/pipelines/1", json={"status": "pause"})
    assert pipeline.get_json()["status"] == "PAUSE"
    assert api.get("/api/v1/pipelines?q=production").get_json()[0]["id"] == 1

    assert api.delete("/api/v1/pipelines/1").status_code == 204
    assert api.delete("/api/v1/sources/1").status_code == 204
    assert api.get("/api/v1/sources/1").status_code == 404


def test_pipeline_actions(api, ready_source, ready_destination):
    """start, pause and refresh set the pipeline's desired status; start and refresh only
    while the source and the destination pass their readiness checks, pause always."""
    _create_all(api)
    for action in ("start", "refresh"):
        refused = api.post(f"/api/v1/pipelines/1/{action}")
        assert refused.status_code == 409, action
        assert refused.get_json()["error"] == "SourceNotReadyError"
        assert refused.get_json()["details"]["failing"][0] == "connection"
    assert api.get("/api/v1/pipelines/1").get_json()["status"] == "PAUSE"
    api.patch("/api/v1/sources/1", json={k: v for k, v in ready_source.items() if k != "name"})
    refused = api.post("/api/v1/pipelines/1/start")
    assert refused.status_code == 409 and refused.get_json()["error"] == "DestinationNotReadyError"
    api.patch(
        "/api/v1/destinations/1", json={k: v for k, v in ready_destination.items() if k != "name"}
    )
    for action, status in (("pause", "PAUSE"), ("refresh", "REFRESH"), ("start", "START")):
        response = api.post(f"/api/v1/pipelines/1/{action}")
        assert response.status_code == 200 and response.get_json()["status"] == status
    assert api.post("/api/v1/pipelines/1/explode").status_code == 404
    assert api.post("/api/v1/pipelines/9/start").get_json()["error"] == "EntityNotFoundError"


def test_pipeline_status_defaults_to_pause(api):
    """A pipeline created without a status starts paused."""
    api.post("/api/v1/sources", json=SOURCE)
    api.post("/api/v1/destinations", json=DESTINATION)
    body = {k: v for k, v in PIPELINE.items() if k != "status"}
    assert api.post("/api/v1/pipelines", json=body).get_json()["status"] == "PAUSE"


def test_422_lists_every_failing_field(api):
    """Validation errors name each bad field with its message, as the form would."""
    response = api.post(
        "/api/v1/sources",
        json={
            **SOURCE,
            "name": "Bad Name",
            "pg_port": 0,
            "replication_id": -1,
            "pg_host": "",
            "slot_name": "BAD",
            "extra": 1,
            "pg_database": ["x"],
        },
    )
    assert response.status_code == 422
    body = response.get_json()
    assert set(body) == ENVELOPE_KEYS and body["error"] == "ValidationError"
    fields = body["details"]["fields"]
    assert fields["extra"] == ["Unknown field."]
    assert fields["pg_database"] == ["Must be a string."]  # as the OpenAPI document says
    # Every other failing field is listed in the same answer.
    assert {"name", "pg_port", "replication_id", "pg_host", "slot_name"} <= set(fields)
    response = api.post(
        "/api/v1/sources",
        json={
            **SOURCE,
            "name": "Bad Name",
            "pg_port": 0,
            "replication_id": -1,
            "pg_host": "",
            "slot_name": "BAD",
        },
    )
    fields = response.get_json()["details"]["fields"]
    assert set(fields) == {"name", "pg_port", "replication_id", "pg_host", "slot_name"}
    assert fields["pg_port"] == ["Enter a port from 1 to 65535."]
    missing = api.post("/api/v1/sources", json={"name": "x"}).get_json()["details"]["fields"]
    assert {"pg_host", "pg_database", "pg_username", "pg_password", "publication_name"} <= set(
        missing
    )
    assert api.get("/api/v1/sources").get_json() == []


def test_pipeline_with_unknown_source_is_422(api):
    """A pipeline pointing at ids that do not exist is refused field by field."""
    response = api.post(
        "/api/v1/pipelines", json={**PIPELINE, "source_id": 7, "destination_id": "x"}
    )
    fields = response.get_json()["details"]["fields"]
    assert response.status_code == 422
    assert fields["source_id"] == ["No source with id 7."]
    assert fields["destination_id"] == ["Must be a whole number."]
    assert api.post("/api/v1/pipelines", json={**PIPELINE, "status": "RUN"}).status_code == 422


def test_duplicate_name_is_409(api):
    """Creating or renaming onto a taken name answers 409 Conflict."""
    api.post("/api/v1/sources", json=SOURCE)
    response = api.post("/api/v1/sources", json={**SOURCE, "name": "PRODUCTION-postgres"})
    assert response.status_code == 409
    assert response.get_json()["error"] == "DuplicateNameError"
    assert "already exists" in response.get_json()["message"]
    api.post("/api/v1/sources", json={**SOURCE, "name": "staging"})
    assert api.patch("/api/v1/sources/2", json={"name": "production-postgres"}).status_code == 409


def test_delete_in_use_is_409_listing_pipelines(api):
    """A source or destination used by a pipeline is not deleted; 409 names the pipelines."""
    _create_all(api)
    for path in ("/api/v1/sources/1", "/api/v1/destinations/1"):
        response = api.delete(path)
        assert response.status_code == 409
        assert response.get_json()["details"] == {"pipelines": ["production-to-snowflake"]}
    assert api.get("/api/v1/sources/1").status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"data": "{not json", "content_type": "application/json"}, 400, "BadRequestError"),
        ({"json": [1, 2]}, 400, "BadRequestError"),
        (
            {"data": "name=x", "content_type": "application/x-www-form-urlencoded"},
            415,
            "UnsupportedMediaTypeError",
        ),
        (
            {"data": "x" * (1024 * 1024 + 1), "content_type": "application/json"},
            413,
            "PayloadTooLargeError",
        ),
    ],
)
def test_malformed_bodies_get_the_envelope(api, kwargs, status, error):
    """Bodies that are not a JSON object, or too large, answer the envelope, never a 500."""
    response = api.post("/api/v1/sources", **kwargs)
    assert response.status_code == status
    body = response.get_json()
    assert set(body) == ENVELOPE_KEYS and body["error"] == error


def test_404_405_and_unknown_paths_answer_json(api):
    """Unknown ids, unknown API paths and wrong methods all answer the envelope."""
    missing = api.get("/api/v1/destinations/42").get_json()
    assert missing == missing | {
        "error": "EntityNotFoundError",
        "message": "Destination with id '42' not found",
        "details": {"entity_type": "Destination", "entity_id": "42"},
    }
    assert missing["timestamp"].endswith("Z")
    assert api.get("/api/v1/nope").get_json()["error"] == "EntityNotFoundError"
    wrong = api.post("/api/v1/sources/1")
    assert wrong.status_code == 405 and wrong.get_json()["error"] == "MethodNotAllowedError"
    assert "DELETE" in wrong.headers["Allow"]


def test_session_api_writes_need_the_csrf_header(browser):
    """Signed in by cookie (not token), API writes need X-CSRFToken like any browser write."""
    refused = browser.client.post("/api/v1/sources", json=SOURCE)
    assert refused.status_code == 400 and refused.get_json()["error"] == "CSRFError"
    ok = browser.client.post("/api/v1/sources", json=SOURCE, headers={"X-CSRFToken": browser.token})
    assert ok.status_code == 201


def test_wal_metrics_parameters(api):
    """metrics/wal needs a known source_id and a limit from 1 to 1000."""
    api.post("/api/v1/sources", json=SOURCE)
    assert api.get("/api/v1/metrics/wal?source_id=1&limit=10").get_json() == []
    assert api.get("/api/v1/metrics/wal?source_id=2").status_code == 404
    for query in ("", "source_id=abc", "source_id=1&limit=0", "source_id=1&limit=1001"):
        response = api.get(f"/api/v1/metrics/wal?{query}")
        assert response.status_code == 422, query
        assert response.get_json()["error"] == "ValidationError"


def test_unexpected_error_is_a_500_envelope_without_internals(app, api):
    """An unexpected failure answers 500 in the envelope with no stack trace."""
    from rosetta_web.extensions import db as _db

    with app.app_context():
        _db.session.execute(_db.text("ALTER TABLE destinations RENAME TO destinations_gone"))
        _db.session.commit()
    try:
        response = api.get("/api/v1/destinations")
        body = response.get_json()
        assert response.status_code == 500 and body["error"] == "InternalServerError"
        assert "Traceback" not in response.get_data(as_text=True)
        assert "destinations_gone" not in response.get_data(as_text=True)
    finally:
        with app.app_context():
            _db.session.execute(_db.text("ALTER TABLE destinations_gone RENAME TO destinations"))
            _db.session.commit()


def test_patch_null_clears_optional_fields_and_refuses_required_ones(api):
    """null clears an optional field; on a required field or a status it is a 422."""
    _create_all(api)
    api.patch("/api/v1/sources/1", json={"slot_name": "cdc_slot"})
    cleared = api.patch("/api/v1/sources/1", json={"slot_name": None})
    assert cleared.status_code == 200 and cleared.get_json()["slot_name"] is None
    for path, body in (
        ("/api/v1/pipelines/1", {"status": None}),
        ("/api/v1/sources/1", {"pg_port": None}),
        ("/api/v1/sources/1", {"pg_host": None}),
    ):
        response = api.patch(path, json=body)
        assert response.status_code == 422, body
    assert api.get("/api/v1/pipelines/1").get_json()["status"] == "PAUSE"
    assert api.get("/api/v1/sources/1").get_json()["pg_port"] == 5432
    # A null secret keeps the stored one, like a blank form field.
    assert api.patch("/api/v1/sources/1", json={"pg_password": None}).status_code == 200


def test_out_of_range_numbers_and_nul_are_refused_not_500(api):
    """Ids and numbers past 32 bits, and text with NUL, answer 404 or 422 in the envelope."""
    _create_all(api)
    assert api.get(f"/api/v1/sources/{2**70}").status_code == 404
    assert api.get(f"/api/v1/metrics/wal?source_id={2**70}").status_code == 422
    response = api.post("/api/v1/pipelines", json={**PIPELINE, "name": "p2", "source_id": 2**70})
    assert response.get_json()["details"]["fields"]["source_id"] == [f"No source with id {2**70}."]
    big = api.post("/api/v1/sources", json={**SOURCE, "name": "big", "replication_id": 2**31})
    assert big.status_code == 422
    nul = api.post("/api/v1/sources", json={**SOURCE, "name": "nul", "pg_host": "a\x00b"})
    assert "Must not contain NUL characters." in nul.get_json()["details"]["fields"]["pg_host"]
    assert api.get("/api/v1/sources?q=%00").status_code == 200


def test_a_refused_start_commits_nothing_even_when_the_check_is_rerun(api, app):
    """A save whose START waits on a stale result checks the source again first: the refusal
    leaves the pipeline as it was (none of the save's fields stored), and the new result is
    stored all the same."""
    from rosetta_web.extensions import db
    from rosetta_web.models import Pipeline, Source

    _create_all(api)
    with app.app_context():
        source = db.session.get(Source, 1)
        source.readiness = {**source.readiness, "checked_at": "2020-01-01T00:00:00Z"}
        db.session.commit()
    response = api.patch("/api/v1/pipelines/1", json={"name": "renamed", "status": "START"})
    assert response.status_code == 409
    assert response.get_json()["details"]["failing"] == ["connection"]
    with app.app_context():
        pipeline = db.session.get(Pipeline, 1)
        assert (pipeline.name, pipeline.status) == ("production-to-snowflake", "PAUSE")
        assert db.session.get(Source, 1).readiness["checked_at"] > "2026"


def test_a_publication_body_not_as_documented_is_a_422_naming_its_field(api):
    """Each body the document does not allow is refused by PublicationForm's rules with the
    field named and what to send, before the source is asked anything."""
    assert api.post("/api/v1/sources", json=SOURCE).status_code == 201
    one_of = 'Send "all_tables": true or "tables": ["public.orders"].'
    listed = "Send a non-empty list of table names (schema.table)."
    stored = "A table name holds a character PostgreSQL cannot store."
    cases = [
        ({}, "tables", one_of),
        ({"all_tables": False}, "tables", one_of),
        (
            {"all_tables": True, "tables": ["public.orders"]},
            "tables",
            "Send all_tables: true or a list of tables, not both.",
        ),
        ({"all_tables": "yes"}, "all_tables", "Send true or false."),
        ({"tables": []}, "tables", listed),
        ({"tables": [""]}, "tables", listed),
        ({"tables": ["t" * 301]}, "tables", listed),
        ({"tables": "public.orders"}, "tables", listed),
        ({"tables": ["public.a\x00b"]}, "tables", stored),
        ({"tables": ["public.\ud800"]}, "tables", stored),
        ({"all_tables": True, "owner": "me"}, "owner", "Unknown field."),
    ]
    for body, field, message in cases:
        response = api.post("/api/v1/sources/1/publication", json=body)
        assert response.status_code == 422, body
        answer = response.get_json()
        assert answer["error"] == "ValidationError"
        assert answer["message"] == "1 field failed validation"
        assert answer["details"]["fields"] == {field: [message]}, body


def test_json_answers_say_what_flasks_encoder_says(app, api):
    """Answers are written by orjson: the same JSON as Flask's own encoder, keys sorted, times
    as HTTP dates, decimals and dataclasses as Flask writes them; what orjson refuses (an
    integer past 64 bits, a lone surrogate) is written by Flask's encoder, never a 500."""

    @dataclass
    class Point:
        at: datetime
        value: float

    flask_json = DefaultJSONProvider(app)
    moment = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    payloads = [
        {"b": [1, 2.5, None, 1e16], "a": {"z": "é", "y": True}, "c": moment},
        {"decimal": Decimal("12.50"), "point": Point(moment, 0.1)},
        [{"big": 2**64}],
        {"text": "shop\ud800"},
    ]
    with app.test_request_context():
        for payload in payloads:
            ours = app.json.response(payload)
            theirs = flask_json.response(payload)
            assert ours.mimetype == "application/json"
            assert json.loads(ours.get_data()) == json.loads(theirs.get_data())
            written = ours.get_data(as_text=True)
            assert written.endswith("\n") and "\n" not in written[:-1]
    assert app.json.response(payloads[0]).get_data(as_text=True).index('"a"') == 1
    # The API's own answers come out so, with the right type.
    response = api.get("/api/v1/sources")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == []
