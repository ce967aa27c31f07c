"""Source pages in the browser: list, create, edit, delete, errors beside fields."""

from __future__ import annotations

from rosetta_web.extensions import db as _db
from rosetta_web.models import Source
from rosetta_web.timeutil import utcnow

from .factories import sampled_source
from .seed import SOURCE


def _stored(app):
    with app.app_context():
        return [s.to_dict() for s in _db.session.scalars(_db.select(Source).order_by(Source.id))]


def test_create_source_through_the_form(browser, app):
    """Creating a source redirects to the list with a message and the source in it."""
    response = browser.post("/sources/new", SOURCE)
    assert response.status_code == 303 and response.headers["Location"] == "/sources/"
    page = browser.get("/sources/").get_data(as_text=True)
    assert "Source &#39;production-postgres&#39; created." in page
    assert "postgres.example.com:5432" in page and "myapp_production" in page
    stored = _stored(app)[0]
    assert stored["pg_username"] == "replication_user" and stored["replication_id"] == 1
    assert stored["slot_name"] is None


def test_invalid_form_comes_back_with_input_and_errors_beside_fields(browser, app):
    """Every bad field gets its message; what the operator typed is still there."""
    data = {
        **SOURCE,
        "name": "Bad Name!",
        "pg_port": "70000",
        "publication_name": "ü" * 32,  # 64 bytes: PostgreSQL would shorten it
        "slot_name": "Slot-1",
        "pg_password": "",
    }
    response = browser.post("/sources/new", data)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Use lowercase letters, digits, &#39;-&#39; and &#39;_&#39; only." in html
    assert "Enter a port from 1 to 65535." in html
    assert "A name has at most 63 bytes (PostgreSQL would silently shorten it)." in html
    assert "Slot names use lowercase letters, digits and &#39;_&#39; only." in html
    assert "This field is required." in html  # the password, on create
    assert 'value="postgres.example.com"' in html and 'value="70000"' in html
    assert 'value="' + "ü" * 32 + '"' in html
    assert _stored(app) == []


def test_port_must_be_a_number(browser):
    """A port that is not a number gets one clear message."""
    html = browser.post("/sources/new", {**SOURCE, "pg_port": "abc"}).get_data(as_text=True)
    assert html.count("Enter a whole number.") == 1


def test_duplicate_name_is_refused_beside_the_field(browser, app):
    """A second source with a taken name (in any case) is refused with a message on the name."""
    browser.post("/sources/new", SOURCE)
    response = browser.post("/sources/new", {**SOURCE, "name": "Production-Postgres"})
    assert "A source named &#39;production-postgres&#39; already exists." in response.get_data(
        as_text=True
    )
    assert len(_stored(app)) == 1


def test_edit_keeps_the_password_when_left_blank(browser, app):
    """Editing without typing a password keeps the stored one; typing one replaces it."""
    browser.post("/sources/new", SOURCE)
    form = browser.get("/sources/1/edit").get_data(as_text=True)
    assert 'value="myapp_production"' in form and SOURCE["pg_password"] not in form
    response = browser.post(
        "/sources/1/edit",
        {**SOURCE, "pg_password": "", "slot_name": "rosetta_slot", "pg_port": "6432"},
    )
    assert response.status_code == 303
    with app.app_context():
        source = _db.session.get(Source, 1)
        assert source.pg_password == SOURCE["pg_password"]
        assert (source.slot_name, source.pg_port) == ("rosetta_slot", 6432)
    browser.post("/sources/1/edit", {**SOURCE, "pg_password": "N3w-Secret"})
    with app.app_context():
        assert _db.session.get(Source, 1).pg_password == "N3w-Secret"


def test_edit_may_keep_its_own_name(browser):
    """Saving a source under its own name is not a duplicate."""
    browser.post("/sources/new", SOURCE)
    assert browser.post("/sources/1/edit", SOURCE).status_code == 303


def test_delete_asks_for_confirmation_then_deletes(browser, app):
    """Delete shows a confirmation page; confirming removes the source."""
    browser.post("/sources/new", SOURCE)
    page = browser.get("/sources/1/delete").get_data(as_text=True)
    assert "Delete source production-postgres?" in page and _stored(app)
    response = browser.post("/sources/1/delete")
    assert response.status_code == 303
    assert "Source &#39;production-postgres&#39; deleted." in browser.get("/sources/").get_data(
        as_text=True
    )
    assert _stored(app) == []


def test_unknown_source_is_a_404_page(browser):
    """Editing a source that does not exist answers 404 with a readable page."""
    response = browser.get("/sources/999/edit")
    assert response.status_code == 404
    assert "Source with id &#39;999&#39; not found" in response.get_data(as_text=True)


def test_htmx_filter_returns_only_the_table(browser):
    """The name filter's htmx request gets the table fragment; a full request gets the page."""
    browser.post("/sources/new", SOURCE)
    browser.post("/sources/new", {**SOURCE, "name": "staging-postgres"})
    fragment = browser.get("/sources/?q=staging", headers={"HX-Request": "true"})
    html = fragment.get_data(as_text=True)
    assert html.lstrip().startswith('<table id="sources-table"')
    assert "staging-postgres" in html and "production-postgres" not in html
    assert "<html" not in html
    assert "HX-Request" in fragment.headers["Vary"]
    page = browser.get("/sources/?q=staging")
    assert "<html" in page.get_data(as_text=True) and "HX-Request" in page.headers["Vary"]
    boosted = browser.get("/sources/", headers={"HX-Request": "true", "HX-Boosted": "true"})
    assert "<html" in boosted.get_data(as_text=True)


def test_list_of_500_sources_runs_a_constant_number_of_queries(browser, app, count_queries):
    """The sources page costs the same few queries for 5 sources as for 500."""

    def add(n, start):
        with app.app_context():
            for i in range(start, start + n):
                _db.session.add(
                    sampled_source(
                        i,
                        status="OK",
                        size_bytes=i * 1000,
                        retained_bytes=i,
                        inactive_slot_count=i % 2,
                        last_sampled_at=utcnow(),
                    )
                )
            _db.session.commit()

    add(5, 0)
    with count_queries() as few:
        assert browser.get("/sources/").status_code == 200
    add(495, 5)
    with count_queries() as many:
        html = browser.get("/sources/").get_data(as_text=True)
    assert html.count("<tr>") == 501  # header + 500 rows
    assert html.count("1 inactive") == 250 and "487 kB" in html  # 499,000 bytes, as psql says
    assert len(many.statements) == len(few.statements) <= 3
