"""Pipeline pages: names in the selects, status buttons swapping one row, delete refused in use."""

from __future__ import annotations

from rosetta_web.extensions import db as _db
from rosetta_web.models import Pipeline

from .seed import DESTINATION, SOURCE


def _setup(browser, source=SOURCE, destination=DESTINATION):
    assert browser.post("/sources/new", source).status_code == 303
    assert browser.post("/destinations/new", destination).status_code == 303


def test_selects_list_names_and_pipeline_defaults_to_pause(browser, app):
    """The form offers sources and destinations by name; a new pipeline is PAUSE by default."""
    _setup(browser)
    form = browser.get("/pipelines/new").get_data(as_text=True)
    assert '<option value="1">production-postgres</option>' in form
    assert '<option value="1">snowflake-production</option>' in form
    response = browser.post(
        "/pipelines/new", {"name": "prod-to-sf", "source_id": "1", "destination_id": "1"}
    )
    assert response.status_code == 303
    listing = browser.get("/pipelines/").get_data(as_text=True)
    assert "production-postgres" in listing and "snowflake-production" in listing
    with app.app_context():
        assert _db.session.get(Pipeline, 1).status == "PAUSE"


def test_pipeline_form_requires_a_source(browser):
    """Submitting without choosing a source says so beside the select."""
    _setup(browser)
    html = browser.post(
        "/pipelines/new", {"name": "p", "source_id": "0", "destination_id": "1"}
    ).get_data(as_text=True)
    assert "Choose a source." in html


def test_status_button_swaps_only_its_row(browser, app, ready_source, ready_destination):
    """An htmx status change answers with that pipeline's row alone, showing the new status."""
    _setup(browser, {**SOURCE, **ready_source, "name": SOURCE["name"]}, ready_destination)
    browser.post("/pipelines/new", {"name": "prod-to-sf", "source_id": "1", "destination_id": "1"})
    response = browser.client.post(
        "/pipelines/1/status",
        data={"status": "START"},
        headers={"HX-Request": "true", "X-CSRFToken": browser.token},
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.lstrip().startswith('<tr id="pipeline-1">') and "<table" not in html
    assert '<span class="badge status-start">START</span>' in html
    with app.app_context():
        assert _db.session.get(Pipeline, 1).status == "START"
    # Without htmx the same form posts and redirects back to the list.
    plain = browser.post("/pipelines/1/status", {"status": "REFRESH"})
    assert plain.status_code == 303
    assert "set to REFRESH" in browser.get("/pipelines/").get_data(as_text=True)


def test_start_on_a_source_that_is_not_ready_is_refused_in_the_row(browser, app):
    """Start on a source that fails its checks keeps the pipeline paused and says why in its
    row, linking to the checks; without htmx, the list says it."""
    _setup(browser)
    browser.post("/pipelines/new", {"name": "prod-to-sf", "source_id": "1", "destination_id": "1"})
    response = browser.client.post(
        "/pipelines/1/status",
        data={"status": "START"},
        headers={"HX-Request": "true", "X-CSRFToken": browser.token},
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and html.lstrip().startswith('<tr id="pipeline-1">')
    assert '<span class="badge status-pause">PAUSE</span>' in html
    assert "is not ready for CDC: connection failed" in html
    assert 'href="/sources/1#readiness"' in html
    plain = browser.post("/pipelines/1/status", {"status": "REFRESH"})
    assert plain.status_code == 303
    listing = browser.get("/pipelines/").get_data(as_text=True)
    assert "stays PAUSE: Source &#39;production-postgres&#39; is not ready" in listing
    with app.app_context():
        assert _db.session.get(Pipeline, 1).status == "PAUSE"


def test_htmx_status_change_without_csrf_token_is_refused(browser, app):
    """An htmx request without the CSRF header changes nothing and reloads the page."""
    _setup(browser)
    browser.post("/pipelines/new", {"name": "prod-to-sf", "source_id": "1", "destination_id": "1"})
    response = browser.client.post(
        "/pipelines/1/status", data={"status": "START"}, headers={"HX-Request": "true"}
    )
    assert response.headers.get("HX-Refresh") == "true"
    with app.app_context():
        assert _db.session.get(Pipeline, 1).status == "PAUSE"


def test_deleting_a_source_in_use_is_refused_with_the_pipelines(browser, app):
    """A source or destination a pipeline uses cannot be deleted; the page names the pipeline."""
    _setup(browser)
    browser.post("/pipelines/new", {"name": "prod-to-sf", "source_id": "1", "destination_id": "1"})
    confirm = browser.get("/sources/1/delete").get_data(as_text=True)
    assert "cannot be deleted" in confirm and "prod-to-sf" in confirm
    response = browser.post("/sources/1/delete")
    assert response.status_code == 409 and "prod-to-sf" in response.get_data(as_text=True)
    assert browser.post("/destinations/1/delete").status_code == 409
    assert browser.post("/pipelines/1/delete").status_code == 303
    assert browser.post("/sources/1/delete").status_code == 303


def test_pipeline_list_queries_do_not_grow_with_pipelines(browser, app, count_queries):
    """Listing pipelines loads their sources and destinations without one query per row."""
    _setup(browser)
    browser.post("/pipelines/new", {"name": "p-0", "source_id": "1", "destination_id": "1"})
    with count_queries() as one:
        browser.get("/pipelines/")
    for i in range(1, 30):
        browser.post("/pipelines/new", {"name": f"p-{i}", "source_id": "1", "destination_id": "1"})
    with count_queries() as thirty:
        html = browser.get("/pipelines/").get_data(as_text=True)
    assert html.count('<tr id="pipeline-') == 30
    assert len(thirty.statements) == len(one.statements)


def test_edit_and_delete_a_pipeline_through_the_forms(
    browser, app, ready_source, ready_destination
):
    """A pipeline's form edits its name, source and status; delete removes it. START on a
    source that is not ready is refused on the form, the operator's input kept."""
    _setup(browser, destination=ready_destination)
    browser.post("/sources/new", {**SOURCE, **ready_source, "name": "staging-postgres"})
    browser.post("/pipelines/new", {"name": "prod-to-sf", "source_id": "1", "destination_id": "1"})
    form = browser.get("/pipelines/1/edit").get_data(as_text=True)
    assert '<option selected value="1">production-postgres</option>' in form
    refused = browser.post(
        "/pipelines/1/edit",
        {"name": "renamed", "source_id": "1", "destination_id": "1", "status": "START"},
    )
    page = refused.get_data(as_text=True)
    assert refused.status_code == 409 and "is not ready for CDC: connection failed" in page
    assert 'value="renamed"' in page
    with app.app_context():
        assert _db.session.get(Pipeline, 1).name == "prod-to-sf"
    response = browser.post(
        "/pipelines/1/edit",
        {"name": "staging-to-sf", "source_id": "2", "destination_id": "1", "status": "START"},
    )
    assert response.status_code == 303
    with app.app_context():
        pipeline = _db.session.get(Pipeline, 1)
        assert (pipeline.name, pipeline.source_id, pipeline.status) == ("staging-to-sf", 2, "START")
    assert "Delete pipeline staging-to-sf?" in browser.get("/pipelines/1/delete").get_data(
        as_text=True
    )
    assert browser.post("/pipelines/1/delete").status_code == 303
    with app.app_context():
        assert _db.session.get(Pipeline, 1) is None


def test_history_restore_gets_the_whole_page(browser):
    """When htmx restores history after a cache miss, it gets the full page, not a fragment."""
    headers = {"HX-Request": "true", "HX-History-Restore-Request": "true"}
    assert "<html" in browser.get("/pipelines/", headers=headers).get_data(as_text=True)
