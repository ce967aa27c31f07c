"""The dashboard at scale: the worst sources a page at a time, filters by state and name kept
in the URL, the counts of all, and a size and a number of queries that do not grow with the
sources."""

from __future__ import annotations

import re
from typing import Any

from rosetta_web.extensions import db as _db
from rosetta_web.models import Server, Source, SourceState

from .clients import Browser, sign_in
from .factories import add_fleet, create_operator, new_server, new_source, new_state, slot_metric

# The statements of one dashboard: the signed-in user, the sources by status (and those the
# filters select), a page of them, the servers' slot summaries, their growing slots, the
# owners of the slots shown (two statements when one is on a database no source is on), the
# alert settings, the live engines, the pipelines, the banner.
QUERIES = 11
HX = {"HX-Request": "true"}


def _html(response: Any) -> str:
    return response.get_data(as_text=True)


def _names(html: str) -> list[str]:
    """The sources a page lists, in its order."""
    return re.findall(r'data-label="Source"><a href="/sources/\d+">([^<]+)</a>', html)


def _worst_first(fleet: list[dict[str, Any]]) -> list[str]:
    """The fleet's names as the dashboard orders them: failing, then most retained, by name."""

    def key(one: dict[str, Any]) -> tuple[int, bool, int, str]:
        pending = one["status"] == "PENDING"  # never sampled: nothing retained to show
        retained = None if pending else one["retained_bytes"]
        failing = one["status"] in ("ERROR", "BACKOFF")
        return (0 if failing else 1, retained is None, -(retained or 0), one["name"])

    return [one["name"] for one in sorted(fleet, key=key)]


def _fleet(app: Any, count: int, servers: int = 50) -> list[dict[str, Any]]:
    with app.app_context():
        return add_fleet(count, servers)


def test_the_first_page_of_10000_sources_is_the_worst_50_and_light(app, browser, count_queries):
    """At 10,000 sources `/` lists the worst 50 in order under 150 kB, with the counts of all;
    the name filter finds one source among them whatever its case; "more" deep in the list and
    the last page a URL may ask for answer; the queries are the same as for 130 sources."""
    fleet = _fleet(app, 10_000)
    with count_queries() as counted:
        response = browser.get("/")
    html = _html(response)
    assert response.status_code == 200 and len(response.get_data()) < 150 * 1024
    assert len(counted.statements) == QUERIES, "\n".join(x[:100] for x in counted.statements)
    order = _worst_first(fleet)
    assert _names(html) == order[:50]
    statuses = {
        status: sum(1 for one in fleet if one["status"] == status)
        for status in ("OK", "ERROR", "BACKOFF", "PENDING")
    }
    for status, count in statuses.items():
        assert re.search(rf'id="sources-{status.lower()}"[^>]*>{count:,} {status}<', html)
    inactive = sum(one["inactive_slot_count"] for one in fleet)
    assert '<span id="slots-total">10,000</span>' in html
    assert f'id="slots-inactive">{inactive:,} inactive' in html
    assert "The worst 50 of 10,000 sources" in html
    assert 'href="/?shown=100"' in html and 'hx-get="/rows?offset=50"' in html

    found = _html(browser.get("/?q=SRC-04242"))
    assert _names(found) == ["src-04242"]
    assert "The 1 source these filters select (10,000 in all)" in found

    deep = browser.get("/rows?offset=950", headers=HX)
    assert _names(_html(deep)) == order[950:1000]
    assert deep.headers["HX-Replace-Url"] == "/?shown=1000"
    assert 'id="dashboard-more-limit"' in _html(deep)  # past 1,000: the filters, not pages
    last = _html(browser.get("/?state=ok&shown=1000"))
    ok_names = {one["name"] for one in fleet if one["status"] == "OK"}
    ok = [name for name in order if name in ok_names]
    assert _names(last) == ok[:1000] and "A page lists the worst 1,000" in last


def test_more_appends_the_next_pages_in_order_and_the_url_says_how_many(app, browser):
    """The "more" button brings the next 50 (htmx appends them; the URL then lists them all,
    and a plain link or the URL opened afresh shows the same rows), until the last few."""
    order = _worst_first(_fleet(app, 130, servers=3))
    first = _html(browser.get("/"))
    assert _names(first) == order[:50]
    more = browser.get("/rows?offset=50", headers=HX)
    assert more.status_code == 200 and _names(_html(more)) == order[50:100]
    assert more.headers["HX-Replace-Url"] == "/?shown=100"
    # Out of band: the count, the next "more", and the refresh, which now redraws 100 rows.
    assert "The worst 100 of 130 sources" in _html(more)
    assert 'hx-get="/rows?offset=100"' in _html(more) and ">Show 30 more</a>" in _html(more)
    assert 'hx-get="/?shown=100" hx-target="#dashboard-table"' in _html(more)
    last = _html(browser.get("/rows?offset=100", headers=HX))
    assert _names(last) == order[100:]
    assert 'id="dashboard-more" aria-label="More sources" hx-swap-oob="true" hidden' in last
    assert "All 130 sources" in last
    # Without JavaScript: the link lists the first 100, as the URL htmx left does.
    assert _names(_html(browser.get("/?shown=100"))) == order[:100]
    plain = browser.get("/rows?offset=50")
    assert plain.status_code == 303 and plain.headers["Location"] == "/?shown=100"


def test_filters_by_state_and_name_stay_in_the_url_and_its_refresh(app, browser):
    """Each state filter lists its sources worst first; the name filter is a case-insensitive
    piece of the name; together they stay in the form, "more" and the refresh."""
    fleet = _fleet(app, 130, servers=3)
    order = _worst_first(fleet)
    status = {one["name"]: one["status"] for one in fleet}
    inactive = {one["name"] for one in fleet if one["inactive_slot_count"]}
    expected = {
        "failing": [n for n in order if status[n] in ("ERROR", "BACKOFF")],
        "error": [n for n in order if status[n] == "ERROR"],
        "backoff": [n for n in order if status[n] == "BACKOFF"],
        "pending": [n for n in order if status[n] == "PENDING"],
        "ok": [n for n in order if status[n] == "OK"][:50],
        "inactive": [n for n in order if n in inactive and status[n] != "PENDING"],
    }
    for state, names in expected.items():
        html = _html(browser.get(f"/?state={state}"))
        assert names and _names(html) == names, state
        assert f'<option value="{state}" selected>' in html
    html = _html(browser.get("/?q=0012&state=OK"))  # the state's case does not matter
    assert _names(html) == [n for n in order if "0012" in n and status[n] == "OK"]
    assert 'value="0012"' in html and '<option value="ok" selected>' in html
    assert 'hx-get="/?state=ok&amp;q=0012" hx-target="#dashboard-table"' in html
    paged = _html(browser.get("/?q=-000&state=ok"))
    ones = [n for n in order if "-000" in n and status[n] == "OK"]
    assert len(ones) > 50 and _names(paged) == ones[:50]
    assert 'hx-get="/rows?offset=50&amp;state=ok&amp;q=-000"' in paged
    assert 'href="/?state=ok&amp;q=-000&amp;shown=100"' in paged
    more = browser.get("/rows?offset=50&state=ok&q=-000", headers=HX)
    assert _names(_html(more)) == ones[50:100]
    none = _html(browser.get("/?q=no-such-source"))
    assert _names(none) == [] and "No source matches these filters." in none
    # The filters' htmx request gets the list alone (the form stays as typed), the counts of
    # all and the fields' errors (none) out of band.
    fragment = _html(browser.get("/?state=failing", headers=HX))
    assert fragment.lstrip().startswith('<section id="dashboard-table"')
    assert 'id="dashboard-filters"' not in fragment
    assert '<section class="summary" id="dashboard-summary" hx-swap-oob="true">' in fragment
    assert 'id="dashboard-state-error" hx-swap-oob="true" hidden></span>' in fragment
    assert _names(fragment) == expected["failing"]


def test_bad_filter_values_are_named_beside_their_fields_not_a_500(app, browser):
    """A state that is not one, a name no source could have, a number of rows a page cannot
    show: 422 with the input kept and the error beside its field, and the list of every source;
    the same through htmx (200, the errors out of band); "more" past the end says why."""
    order = _worst_first(_fleet(app, 60, servers=2))
    response = browser.get("/?state=bogus")
    html = _html(response)
    assert response.status_code == 422 and _names(html) == order[:50]
    assert re.search(r'id="dashboard-state-error">Choose one of failing, error, backoff', html)
    assert '<option value="bogus" selected>bogus</option>' in html
    assert 'aria-describedby="dashboard-state-error"' in html
    long_name = "x" * 256
    html = _html(browser.get(f"/?q={long_name}"))
    assert f'value="{long_name}"' in html and "A source name is at most 255 characters" in html
    assert _names(html) == order[:50]
    for shown in ("abc", "0", "1001", "-5"):
        response = browser.get(f"/?shown={shown}")
        assert response.status_code == 422, shown
        assert "A page lists from 1 to 1,000 sources: it showed the first 50." in _html(response)
        assert _names(_html(response)) == order[:50]
    fragment = browser.get("/?state=bogus", headers=HX)
    assert fragment.status_code == 200
    assert re.search(
        r'id="dashboard-state-error" hx-swap-oob="true">Choose one of', _html(fragment)
    )
    for offset in ("-1", "abc", "1000", ""):
        response = browser.get(f"/rows?offset={offset}", headers=HX)
        assert response.status_code == 422 and "offset: Give how many rows are shown" in _html(
            response
        ), offset
    assert browser.get("/rows?offset=0&state=nope", headers=HX).status_code == 422


def test_the_refresh_redraws_up_to_100_rows_then_only_the_counts(app, browser):
    """The refresh redraws the filters' first rows, as many as are shown up to 100 (two
    pages); a longer list is left as it is and the refresh gets the counts alone, out of
    band."""
    _fleet(app, 130, servers=3)
    html = _html(browser.get("/?state=ok&shown=100"))
    assert len(_names(html)) == 100
    assert 'hx-get="/?state=ok&amp;shown=100" hx-target="#dashboard-table"' in html
    longer = _html(browser.get("/?shown=150"))
    assert len(_names(longer)) == 130
    refresh = re.search(r'<p class="muted refreshed" id="dashboard-refresh"(.*?)</p>', longer, re.S)
    assert 'hx-get="/counts?shown=150" hx-swap="none"' in refresh[1]
    assert "past 100 rows the list is not redrawn" in refresh[1]
    counts = _html(browser.get("/counts?shown=150", headers=HX))
    assert _names(counts) == [] and "<table" not in counts
    assert '<section class="summary" id="dashboard-summary" hx-swap-oob="true">' in counts
    assert 'id="dashboard-refresh" hx-swap-oob="true"' in counts
    assert 'hx-get="/counts?shown=150"' in counts


def test_the_worst_slot_on_a_database_no_source_is_on_names_the_servers_first_source(
    app, browser, api
):
    """The slots card and /api/v1/summary count a server's slots from its stored summary and
    name, for a slot of a database no source is on, the server's first source."""
    with app.app_context():
        server = new_server(last_sampled_at=None)
        first, second = new_source("first", pg_database="b"), new_source("second", pg_database="a")
        _db.session.add_all([server, first, second])
        _db.session.flush()
        figures = {
            "orders": {"database": "a", "active": True, "retained_bytes": 10},
            "legacy": {"database": "zzz", "active": False, "retained_bytes": 900},
        }
        server.slot_trends = {
            name: {"slot": {"inactive_since": None, "wal_status": "reserved", **one}}
            for name, one in figures.items()
        }
        _db.session.add_all(
            [new_state(first.id, server_id=server.id), new_state(second.id, server_id=server.id)]
        )
        _db.session.add(slot_metric(server.id, server.created_at, "orders", database="a"))
        _db.session.commit()
        first_id = first.id
        assert (server.slot_count, server.inactive_slot_count) == (2, 1)
        assert _db.session.get(Server, server.id).worst_slot["slot_name"] == "legacy"
    summary = api.get("/api/v1/summary").get_json()
    assert summary["slots"] == {"total": 2, "inactive": 1}
    assert summary["worst_slot"]["slot_name"] == "legacy"
    assert summary["worst_slot"]["source_id"] == first_id
    html = _html(browser.get("/"))
    assert re.search(
        rf'id="worst-slot">Worst: <strong>legacy</strong> \(zzz\).*?/sources/{first_id}"',
        html,
        re.S,
    )


def test_the_dashboard_pages_and_filters_on_sqlite(sqlite_app):
    """The embedded SQLite default runs the same list: order, filters, "more" and counts."""
    with sqlite_app.app_context():
        fleet = add_fleet(120, 3)
    create_operator(sqlite_app)
    client = sqlite_app.test_client()
    assert sign_in(client).status_code == 303
    browser = Browser(client)
    order = _worst_first(fleet)
    html = _html(browser.get("/"))
    assert _names(html) == order[:50] and '<span id="slots-total">120</span>' in html
    assert _names(_html(browser.get("/rows?offset=50", headers=HX))) == order[50:100]
    status = {one["name"]: one["status"] for one in fleet}
    assert _names(_html(browser.get("/?state=failing&q=00"))) == [
        n for n in order if "00" in n and status[n] in ("ERROR", "BACKOFF")
    ]
    with sqlite_app.app_context():
        assert _db.session.scalar(_db.select(_db.func.count(Source.id))) == 120
        assert _db.session.scalar(_db.select(_db.func.count(SourceState.source_id))) > 100
