"""Source pages in the browser: list, create, edit, delete, errors beside fields, and the page
of a source whose server has hundreds of slots."""

from __future__ import annotations

import re

from rosetta_web.extensions import db as _db
from rosetta_web.models import Source
from rosetta_web.timeutil import utcnow

from .clients import sign_in
from .constants import MIB
from .factories import (
    add_slot_server,
    create_operator,
    new_server,
    new_source,
    new_state,
    sampled_source,
    slot_metric,
)
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


# The page of a source on a server with hundreds of slots


def _names(html: str) -> list[str]:
    """Read the names of the slots both tables draw."""
    return [name for name, _ in _rows(html, "slots-table") + _rows(html, "other-slots-table")]


def _rows(html: str, table_id: str) -> list[tuple[str, str]]:
    """Read a slot table as drawn: each row's slot name and WAL retained."""
    table = html.split(f'<table id="{table_id}"')[1].split("</table>")[0]
    return re.findall(
        r'data-label="Slot">([a-z0-9_]+).*?data-label="WAL retained"[^>]*>([^<]*)<', table, re.S
    )


# The order the page promises, said once more in SQL, with the sizes as PostgreSQL prints them.
WORST_SQL = """
SELECT slot_name, coalesce(pg_size_pretty(retained_bytes), '—') FROM slot_metrics
WHERE server_id = :server AND recorded_at = (SELECT last_sampled_at FROM servers WHERE id = :server)
  AND (database IS NOT DISTINCT FROM 'db_1') = :own
ORDER BY CASE wal_status WHEN 'lost' THEN 0 WHEN 'unreserved' THEN 1 ELSE 2 END,
         retained_bytes DESC NULLS LAST, slot_name
"""


def test_source_page_of_a_500_slot_server_reads_only_what_it_draws(browser, app, count_queries):
    """A server with 500 slots: the page costs the queries of one with 12, draws the worst 10
    of each table as PostgreSQL orders and prints them (the lost and the unreserved slot
    first), says how many more there are, names the soonest 10 growing slots, and reads
    neither every slot's row nor the trends of the slots that do not grow."""
    few_id, _ = add_slot_server(app, 12, growing=1)
    many_id, server_id = add_slot_server(app, 500, growing=12)
    browser.get(f"/sources/{few_id}")  # the first read of the alert settings stores them
    with count_queries() as few:
        assert browser.get(f"/sources/{few_id}").status_code == 200
    with count_queries() as many:
        html = browser.get(f"/sources/{many_id}").get_data(as_text=True)
    assert len(many.statements) == len(few.statements) <= 20
    for statement in many.statements:
        assert "slot_points" not in statement and "servers.slot_trends," not in statement
        if "FROM slot_metrics" in statement and "slot_metrics.id" in statement:
            assert "LIMIT" in statement, statement  # never every slot's row
    with app.app_context():
        expected = {
            own: [
                tuple(row)
                for row in _db.session.execute(
                    _db.text(WORST_SQL), {"server": server_id, "own": own}
                )
            ]
            for own in (True, False)
        }
    own, others = _rows(html, "slots-table"), _rows(html, "other-slots-table")
    assert own == expected[True][:10] and others == expected[False][:10]
    assert own[0][0] == "slot_013" and others[0] == ("slot_007", "—")  # unreserved, lost
    assert re.fullmatch(r"49\d\d MB", others[1][1])  # as pg_size_pretty says 4.9 GB
    assert len({name for name, _ in own + others}) == 20  # each slot once
    assert "500 slots on the server" in html
    assert f">Show all {len(expected[True])}</a>" in html
    assert f">Show all {len(expected[False])}</a>" in html
    forecasts = re.findall(r"<li[^>]*>Slot <code>(slot_\d+)</code>", html)
    assert len(forecasts) == 10 and "And 2 more growing slots" in html
    assert len(html) < 60_000  # all 500 rows weigh 390 kB


def test_slot_tables_filter_by_name_and_show_all(browser, app, count_queries):
    """The slot filter's htmx request gets the slot tables alone, with the slots whose name
    holds the text; `slots=all` draws every slot of the server, each once."""
    source_id, _ = add_slot_server(app, 500)
    path = f"/sources/{source_id}"
    with count_queries() as queries:
        fragment = browser.get(f"{path}?slot=SLOT_04", headers={"HX-Request": "true"})
    html = fragment.get_data(as_text=True)
    assert "<html" not in html
    assert 'id="slot-tables"' in html and "HX-Request" in fragment.headers["Vary"]
    names = _names(html)
    assert names and all(name.startswith("slot_04") for name in names)
    assert "whose name holds “slot_04”: 10." in html
    assert not any("alerts" in statement for statement in queries.statements)  # tables alone

    everything = browser.get(f"{path}?slots=all").get_data(as_text=True)
    assert sorted(_names(everything)) == [f"slot_{k:03d}" for k in range(1, 501)]
    assert "Show all" not in everything and "Show the worst 10 of each table" in everything
    nothing = browser.get(f"{path}?slot=nope%25").get_data(as_text=True)
    assert "No slot of this database matches “nope%”." in nothing
    assert "No other slot matches “nope%”." in nothing


def test_chart_of_a_500_slot_server_draws_the_worst_and_the_most_the_rest_retain(
    browser, app, count_queries
):
    """The source's chart draws a line for at most 10 slots of its database and 10 others, and
    one for the rest: at each sample the most any of them retains, as max() says in SQL (their
    WAL overlaps: a sum would count it once per slot). It reads no slot trends."""
    source_id, server_id = add_slot_server(app, 500, growing=3)
    browser.get(f"/sources/{source_id}")  # the first read of the alert settings stores them
    with count_queries() as queries:
        data = browser.get(f"/api/v1/sources/{source_id}/wal-history?start=1h").get_json()
    assert not [statement for statement in queries.statements if "slot_trends" in statement]
    drawn = data["slots"]
    assert sum(slot["own"] for slot in drawn.values()) == 10 and len(drawn) == 20
    assert data["other_slots"]["count"] == 480
    with app.app_context():
        most = _db.session.execute(
            _db.text(
                "SELECT max(retained_bytes) FROM slot_metrics WHERE server_id = :server "
                "AND slot_name <> ALL(:drawn) GROUP BY recorded_at ORDER BY recorded_at"
            ),
            {"server": server_id, "drawn": list(drawn)},
        ).scalars()
        assert data["other_slots"]["last"] == list(most)
    assert len(data["times"]) == 3


def test_source_page_slots_and_forecasts_on_sqlite(sqlite_app):
    """On the embedded SQLite the page reads its slots and growing trends the same way: the
    lost slot first, the rest by WAL retained, the growing slot's forecast, the filter."""
    sqlite_app.config["WTF_CSRF_ENABLED"] = False
    create_operator(sqlite_app)
    client = sqlite_app.test_client()
    assert sign_in(client).status_code == 303
    now = utcnow().replace(microsecond=0)
    with sqlite_app.app_context():
        server = new_server(last_sampled_at=now)
        source = new_source("lite", pg_database="app")
        _db.session.add_all([server, source])
        _db.session.flush()
        source.state = new_state(source.id, server_id=server.id, last_sampled_at=now)
        figures = {"kept": 5 * MIB, "gone": None, "big": 9 * MIB, "elsewhere": 7 * MIB}
        for name, retained in figures.items():
            _db.session.add(
                slot_metric(
                    server.id,
                    now,
                    name,
                    database="other" if name == "elsewhere" else "app",
                    retained_bytes=retained,
                    wal_status="lost" if retained is None else "reserved",
                )
            )
        server.slot_trends = {
            name: {
                "growth": 1024 * MIB if name == "big" else None,
                "at": now.timestamp(),
                "slot": {"retained_bytes": retained, "safe_wal_size": None},
            }
            for name, retained in figures.items()
        }
        _db.session.commit()
        source_id = source.id
    html = client.get(f"/sources/{source_id}").get_data(as_text=True)
    assert _rows(html, "slots-table") == [("gone", "—"), ("big", "9216 kB"), ("kept", "5120 kB")]
    assert _rows(html, "other-slots-table") == [("elsewhere", "7168 kB")]
    assert re.findall(r"<li[^>]*>Slot <code>(\w+)</code> reaches", html) == ["big"]
    fragment = client.get(f"/sources/{source_id}?slot=e", headers={"HX-Request": "true"})
    assert _names(fragment.get_data(as_text=True)) == ["gone", "kept", "elsewhere"]
