"""The OpenAPI document covers every API route, is valid OpenAPI 3.1, and /docs shows it."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from rosetta_web.destinations.forms import DestinationForm
from rosetta_web.forms import field_names
from rosetta_web.pipelines.forms import PipelineForm
from rosetta_web.sources.forms import SourceForm

from .seed import DESTINATION, PIPELINE, SOURCE


def test_every_api_route_is_documented(app, api):
    """Each registered /api/v1 route and method, and /health, appears in the document."""
    spec = api.get("/api/v1/openapi.json").get_json()
    validate(spec)
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    expected = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1") or rule.endpoint in ("health", "metrics"):
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
            expected |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert expected and expected == documented


def test_schemas_follow_the_forms_and_responses(app, api):
    """Request schemas carry the forms' rules; response schemas list what the API returns."""
    spec = api.get("/api/v1/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    source_input = schemas["SourceInput"]
    assert source_input["properties"]["name"]["pattern"] == "^[a-z0-9_-]+$"
    assert (
        source_input["properties"]["pg_port"].items()
        >= {"type": "integer", "minimum": 1, "maximum": 65535, "default": 5432}.items()
    )
    assert source_input["properties"]["pg_password"]["writeOnly"] is True
    assert "pg_password" in source_input["required"] and "pg_port" not in source_input["required"]
    status = schemas["PipelineInput"]["properties"]["status"]
    assert status["examples"] == ["START", "PAUSE", "REFRESH"]
    # Read in any case, as the server reads it; nothing else.
    assert re.match(status["pattern"], "pause") and not re.match(status["pattern"], "go")
    for title, form, body, path in (
        ("Source", SourceForm, SOURCE, "/api/v1/sources"),
        ("Destination", DestinationForm, DESTINATION, "/api/v1/destinations"),
    ):
        assert _writable(schemas[f"{title}Input"]) == field_names(form)
        returned = api.post(path, json=body).get_json()
        assert set(schemas[title]["properties"]) == set(returned)
        # What a GET returns may be sent back: documented as read-only, and ignored.
        assert set(schemas[f"{title}Input"]["properties"]) == field_names(form) | set(returned)
    returned = api.post("/api/v1/pipelines", json={**PIPELINE, "status": "PAUSE"}).get_json()
    assert set(schemas["Pipeline"]["properties"]) == set(returned)
    assert _writable(schemas["PipelineInput"]) == field_names(PipelineForm)


def _writable(schema: dict) -> set[str]:
    return {name for name, prop in schema["properties"].items() if not prop.get("readOnly")}


def test_docs_page_presents_the_api(browser):
    """/docs lists every endpoint with its body fields for an operator reading in a browser."""
    html = browser.get("/docs").get_data(as_text=True)
    assert "POST</span> <code>/api/v1/sources</code>" in html
    assert "<code>publication_name</code>" in html and "(secret, write-only)" in html
    assert "/api/v1/pipelines/{entity_id}/{action}" in html


def test_white_space_means_the_same_to_the_document_and_the_server(api):
    """The document spells out what the server trims, so a character class reads the same in
    any regular-expression dialect: \\x1f is trimmed (refused at the ends), U+FEFF is not."""
    spec = api.get("/api/v1/openapi.json").get_json()
    pattern = spec["components"]["schemas"]["DestinationInput"]["properties"]["snowflake_user"]
    for user, taken in (("\x1fETL", False), ("\ufeffETL", True), ("ETL USER", True)):
        assert bool(re.match(pattern["pattern"], user)) is taken, repr(user)
        body = {**DESTINATION, "name": f"d{len(user)}{int(taken)}", "snowflake_user": user}
        status = api.post("/api/v1/destinations", json=body).status_code
        assert status == (201 if taken else 422), repr(user)
    host = spec["components"]["schemas"]["SourceInput"]["properties"]["pg_host"]["pattern"]
    assert not re.match(host, "db\x00x") and not re.match(host, "db\x1fx")
    assert api.post("/api/v1/sources", json={**SOURCE, "pg_host": "db\x1fx"}).status_code == 422


def test_a_declared_answer_shows_exactly_what_its_schema_lists(app):
    """SlotDropped and the sample-now answer it holds come from one declaration: to_dict
    gives the fields the document requires, nested answers dumped, and nothing else."""
    from rosetta_web.shapes import shape_of
    from rosetta_web.sources.services import SampleResult, SlotDropped

    failed = SampleResult(ok=False, error="connection refused", sample=None, monitor=None)
    dropped = SlotDropped(dropped="old", freed_bytes=0, retained_bytes=8192, sample=failed)
    schema = shape_of(SlotDropped).schema()
    assert dropped.to_dict() == {
        "dropped": "old",
        "freed_bytes": 0,
        "retained_bytes": 8192,
        "sample": {"ok": False, "error": "connection refused", "sample": None, "monitor": None},
    }
    assert list(dropped.to_dict()) == schema["required"] == list(schema["properties"])
    assert schema["properties"]["sample"] == {"$ref": "#/components/schemas/SampleResult"}
    assert schema["properties"]["retained_bytes"]["type"] == ["integer", "null"]
