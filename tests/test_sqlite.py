"""The embedded SQLite default runs the same flows: set-up, forms and API."""

from __future__ import annotations

import csv
import io

from rosetta_web.auth import services
from rosetta_web.extensions import db as _db
from rosetta_web.models import Source

from .clients import Api, Browser, csrf_token
from .factories import PASSWORD
from .seed import DESTINATION, PIPELINE, SOURCE


def test_browser_and_api_crud_on_sqlite(sqlite_app):
    """Set up, create through forms and API, edit, refuse delete-in-use, delete: all on SQLite."""
    client = sqlite_app.test_client()
    token = csrf_token(client, "/setup")
    data = {"username": "alice", "password": PASSWORD, "confirm": PASSWORD, "csrf_token": token}
    assert client.post("/setup", data=data).status_code == 303
    browser = Browser(client)
    assert browser.post("/sources/new", SOURCE).status_code == 303
    assert "A source named" in browser.post("/sources/new", SOURCE).get_data(as_text=True)
    assert (
        browser.post(
            "/sources/1/edit", {**SOURCE, "pg_password": "", "pg_port": "6543"}
        ).status_code
        == 303
    )
    with sqlite_app.app_context():
        _, raw = services.create_token(services.find_user("alice"), "sqlite")
    api = Api(sqlite_app.test_client(), raw)
    assert api.get("/api/v1/sources/1").get_json()["pg_port"] == 6543
    assert api.post("/api/v1/destinations", json=DESTINATION).status_code == 201
    refused = api.post("/api/v1/pipelines", json=PIPELINE)  # START: the source is not ready
    assert refused.get_json()["error"] == "SourceNotReadyError"
    paused = {**PIPELINE, "status": "PAUSE"}
    assert api.post("/api/v1/pipelines", json=paused).status_code == 201
    assert api.post("/api/v1/pipelines", json=paused).get_json()["error"] == "DuplicateNameError"
    # A stale result is checked again inside the save, which SQLite's one writer must allow.
    with sqlite_app.app_context():
        source = _db.session.get(Source, 1)
        source.readiness = {**source.readiness, "checked_at": "2020-01-01T00:00:00Z"}
        _db.session.commit()
    assert api.patch("/api/v1/pipelines/1", json={"status": "START"}).status_code == 409
    assert api.get("/api/v1/pipelines/1").get_json()["status"] == "PAUSE"
    assert api.get("/api/v1/sources/1").get_json()["readiness"]["checked_at"] > "2026"
    assert api.delete("/api/v1/sources/1").status_code == 409
    listing = browser.get("/pipelines/").get_data(as_text=True)
    assert "production-to-snowflake" in listing and "production-postgres" in listing
    assert api.delete("/api/v1/pipelines/1").status_code == 204
    assert browser.post("/sources/1/delete").status_code == 303
    assert api.get("/api/v1/sources").get_json() == []
    assert client.get("/health").get_json()["checks"]["database"]["status"] == "ok"
    # No COPY on SQLite: the export is written by Python, the same records the API lists.
    export = api.get("/audit/export.csv", query_string={"target_type": "source"})
    assert export.status_code == 200 and export.is_streamed
    rows = list(csv.DictReader(io.StringIO(export.get_data(as_text=True), newline="")))
    listed = api.get("/api/v1/audit?target_type=source&limit=500").get_json()["items"]
    assert [int(row["id"]) for row in rows] == [record["id"] for record in listed]
    assert rows[0]["action"] == "delete" and rows[0]["target_name"] == "production-postgres"
