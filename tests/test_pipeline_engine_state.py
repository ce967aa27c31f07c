"""A pipeline's engine state as the operator sees it (the page, the list and the API), and the
rules around START and REFRESH: the destination's checks, one running pipeline per source,
REFRESH of chosen tables.

The engine's contract is its rows: tests write EngineProcess, PipelineRun and PipelineError
rows directly, as `flask rosetta engine` does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta

import pytest
from sqlalchemy import select

from rosetta_web.engine.supervisor import Supervisor, refresh_tables
from rosetta_web.extensions import db as _db
from rosetta_web.models import (
    AuditRecord,
    Pipeline,
    PipelineError,
    PipelineRun,
    Source,
)
from rosetta_web.timeutil import utcnow

from .constants import ENVELOPE_KEYS
from .factories import ENGINE_OWNER as OWNER
from .factories import add_engine_process, add_pipeline
from .pg import Cluster, psql
from .seed import DESTINATION


def _run(app, pipeline_id, state, **fields):
    """Store what the engine that owns the pipeline says it is doing."""
    now = utcnow()
    values = {"owner": OWNER, "since": now - timedelta(minutes=3), "updated_at": now, **fields}
    with app.app_context():
        _db.session.add(PipelineRun(pipeline_id=pipeline_id, state=state, **values))
        _db.session.commit()


def _engine_section(browser, pipeline_id):
    """The engine section of the pipeline's page, as its poll returns it."""
    response = browser.get(f"/pipelines/{pipeline_id}/engine")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def _text(html):
    """The text of an HTML fragment, tags dropped and white space folded."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


# ---- The state and its reasons ----------------------------------------------------------


def test_no_engine_process_says_how_to_start_one(app, api, browser):
    """With no engine process seen in the last 30 s (one stopped 5 min ago), a START pipeline
    is stopped and the page, the list and the API say to start `flask rosetta engine`."""
    pipeline_id = add_pipeline(app)
    add_engine_process(app, seen_ago_s=300)
    engine = api.get(f"/api/v1/pipelines/{pipeline_id}").get_json()["engine"]
    assert engine["state"] == "stopped" and engine["owner"] is None
    assert engine["reason"].startswith("No engine process is running: start `flask rosetta engine`")
    section = _text(_engine_section(browser, pipeline_id))
    assert "Engine stopped No engine process is running" in section
    assert "no engine process owns it" in section
    listing = browser.get("/pipelines/").get_data(as_text=True)
    assert '<span class="badge engine-stopped">stopped</span>' in listing
    assert "make run starts it" in listing


def test_engine_without_java_says_how_to_install_it(app, api, browser):
    """When every live engine process reports a problem (no Java), the pipeline is stopped
    with that problem and the command that installs a Java runtime."""
    pipeline_id = add_pipeline(app)
    add_engine_process(app, problem="Java runtime not found")
    engine = api.get(f"/api/v1/pipelines/{pipeline_id}").get_json()["engine"]
    assert engine["state"] == "stopped"
    assert engine["reason"].startswith("Java runtime not found.")
    assert "`apt-get install openjdk-17-jre-headless`" in engine["reason"]
    assert "apt-get install openjdk-17-jre-headless" in _engine_section(browser, pipeline_id)


def test_paused_pipeline_without_engine_is_paused(app, api):
    """PAUSE with no engine owning the pipeline is `paused`, not a fault."""
    pipeline_id = add_pipeline(app, status="PAUSE")
    engine = api.get(f"/api/v1/pipelines/{pipeline_id}").get_json()["engine"]
    assert (engine["state"], engine["reason"]) == (
        "paused",
        "PAUSE requested: no engine reads its slot.",
    )


def test_streaming_shows_owner_since_and_last_lsn(app, api, browser):
    """A live engine's streaming run shows its owner, since when, and the last LSN loaded as
    PostgreSQL writes it (X/Y); the API gives the same figures."""
    pipeline_id = add_pipeline(app)
    add_engine_process(app)
    since = utcnow().replace(microsecond=0) - timedelta(minutes=3)
    _run(app, pipeline_id, "streaming", since=since, last_lsn=0x16_B374D848)
    engine = api.get(f"/api/v1/pipelines/{pipeline_id}").get_json()["engine"]
    assert engine["state"] == "streaming" and engine["owner"] == OWNER
    assert engine["last_lsn"] == 0x16_B374D848 and engine["reason"] is None
    assert engine["since"].startswith(since.strftime("%Y-%m-%dT%H:%M:%S"))
    html = _engine_section(browser, pipeline_id)
    text = _text(html)
    assert '<span class="badge engine-streaming">streaming</span>' in html
    assert f"Owner {OWNER}" in text and "Last LSN loaded 16/B374D848" in text
    assert "Since" in text and "3 min ago" in text
    assert 'id="engine-next-try"' not in html


def test_retrying_shows_the_next_try_and_failed_its_reason(app, api, browser):
    """A retrying run shows its reason and when it tries next; a failed one its reason."""
    pipeline_id = add_pipeline(app)
    add_engine_process(app)
    next_try = utcnow() + timedelta(seconds=90)
    _run(app, pipeline_id, "retrying", reason="Snowflake login timed out", next_try_at=next_try)
    html = _engine_section(browser, pipeline_id)
    assert "Snowflake login timed out" in html
    assert "Next try" in _text(html) and "in 1 min" in _text(html)
    engine = api.get(f"/api/v1/pipelines/{pipeline_id}").get_json()["engine"]
    assert engine["state"] == "retrying" and engine["next_try_at"] is not None

    with app.app_context():
        run = _db.session.get(PipelineRun, pipeline_id)
        run.state, run.next_try_at = "failed", None
        run.reason = "Table public.items has no primary key"
        _db.session.commit()
    html = _engine_section(browser, pipeline_id)
    assert '<span class="badge engine-failed">failed</span>' in html
    assert "Table public.items has no primary key" in html and "Next try" not in html
    listing = browser.get("/pipelines/").get_data(as_text=True)
    assert "engine-failed" in listing and "has no primary key" in listing


def test_a_run_whose_engine_died_is_stopped_but_keeps_its_last_lsn(app, api):
    """A run last written 5 min ago by a process no longer seen is no engine's: stopped with
    the no-engine reason, the last LSN it loaded still shown."""
    pipeline_id = add_pipeline(app)
    add_engine_process(app, seen_ago_s=300)
    old = utcnow() - timedelta(minutes=5)
    _run(app, pipeline_id, "streaming", updated_at=old, last_lsn=4096)
    engine = api.get(f"/api/v1/pipelines/{pipeline_id}").get_json()["engine"]
    assert engine["state"] == "stopped" and engine["owner"] is None
    assert engine["reason"].startswith("No engine process is running")
    assert engine["last_lsn"] == 4096


def test_errors_are_listed_newest_first(app, browser):
    """The page lists the engine's last errors, newest first, with their times."""
    pipeline_id = add_pipeline(app)
    now = utcnow()
    with app.app_context():
        for minutes, message in ((30, "first: slot busy"), (5, "third: newest"), (20, "second")):
            at = now - timedelta(minutes=minutes)
            _db.session.add(PipelineError(pipeline_id=pipeline_id, at=at, message=message))
        _db.session.commit()
    html = _engine_section(browser, pipeline_id)
    found = re.findall(r'<td class="message" data-label="Message">([^<]*)</td>', html)
    assert found == ["third: newest", "second", "first: slot busy"]
    page = browser.get(f"/pipelines/{pipeline_id}").get_data(as_text=True)
    assert "third: newest" in page and 'id="engine-errors"' in page


def test_the_engine_section_polls_without_inline_script(app, browser):
    """The page includes its live part (wanted status, buttons, engine, slot) that its route
    returns alone; it asks again on the app's refresh event (sent every few seconds while
    the tab is visible), so the header's status never contradicts the engine's."""
    pipeline_id = add_pipeline(app)
    page = browser.get(f"/pipelines/{pipeline_id}").get_data(as_text=True)
    section = _engine_section(browser, pipeline_id)
    assert section.lstrip().startswith('<div id="pipeline-live"')
    for part in ('<section id="engine"', 'id="status-buttons"', 'id="slot-activity"', "<h1>"):
        assert part in section
    assert "<html" not in section
    assert f'hx-get="/pipelines/{pipeline_id}/engine"' in page
    assert 'hx-trigger="rosetta:refresh" data-refresh-seconds="5"' in section
    assert "<script>" not in section and "<script>" not in page.split("<main", 1)[1]


def test_pipeline_list_queries_do_not_grow_with_engine_state(app, browser, count_queries):
    """The engine and lag columns ask for the live engines (and the lag alert's settings) once
    per page, not once per row."""
    _run(app, add_pipeline(app, name="p-0"), "streaming")
    add_engine_process(app)
    with count_queries() as one:
        browser.get("/pipelines/")
    for i in range(1, 10):
        pipeline_id = add_pipeline(app, name=f"p-{i}")
        _run(app, pipeline_id, "streaming")
    with count_queries() as ten:
        html = browser.get("/pipelines/").get_data(as_text=True)
    assert html.count("engine-streaming") == 10
    assert len(ten.statements) == len(one.statements)


# ---- START and REFRESH refused ----------------------------------------------------------


def _ready_pair(api, ready_source, destination):
    """A ready source, the destination given, and a paused pipeline between them (id 1)."""
    assert api.post("/api/v1/sources", json=ready_source).status_code == 201
    assert api.post("/api/v1/destinations", json=destination).status_code == 201
    body = {"name": "ready-to-sf", "source_id": 1, "destination_id": 1, "status": "PAUSE"}
    assert api.post("/api/v1/pipelines", json=body).status_code == 201


def test_start_refused_while_the_destination_fails_its_checks(app, api, browser, ready_source):
    """START and REFRESH on a destination whose key file is missing answer 409 naming the
    failing check; the status stays PAUSE, the audit log records the refusal, and the row
    and the form say it."""
    _ready_pair(api, ready_source, DESTINATION)
    for action in ("start", "refresh"):
        refused = api.post(f"/api/v1/pipelines/1/{action}")
        assert refused.status_code == 409, action
        body = refused.get_json()
        assert body["error"] == "DestinationNotReadyError"
        assert body["details"] == {"destination_id": 1, "failing": ["key_file"]}
        assert "Destination 'snowflake-production' is not ready to load" in body["message"]
    patched = api.patch("/api/v1/pipelines/1", json={"status": "START"})
    assert patched.status_code == 409 and patched.get_json()["error"] == "DestinationNotReadyError"
    with app.app_context():
        assert _db.session.get(Pipeline, 1).status == "PAUSE"
        refusals = _db.session.scalars(
            select(AuditRecord.action).where(AuditRecord.outcome == "refused")
        ).all()
        assert {"start", "refresh"} <= set(refusals)
    row = browser.client.post(
        "/pipelines/1/status",
        data={"status": "START"},
        headers={"HX-Request": "true", "X-CSRFToken": browser.token},
    ).get_data(as_text=True)
    assert "is not ready to load: key_file failed" in row
    assert 'href="/destinations/1#readiness"' in row
    form = browser.post(
        "/pipelines/1/edit",
        {"name": "ready-to-sf", "source_id": "1", "destination_id": "1", "status": "START"},
    )
    assert form.status_code == 409
    assert "is not ready to load: key_file failed" in form.get_data(as_text=True)


def test_start_refused_while_another_pipeline_runs_on_the_source(
    app, api, browser, ready_source, ready_destination
):
    """Two pipelines on one source would share its slot: the second START is refused with
    409 naming the first; once the first is paused, the second starts."""
    _ready_pair(api, ready_source, ready_destination)
    second = {"name": "second-to-sf", "source_id": 1, "destination_id": 1, "status": "PAUSE"}
    assert api.post("/api/v1/pipelines", json=second).status_code == 201
    assert api.post("/api/v1/pipelines/1/start").status_code == 200
    refused = api.post("/api/v1/pipelines/2/start")
    assert refused.status_code == 409
    body = refused.get_json()
    assert body["error"] == "SourceBusyError"
    assert body["details"]["pipeline"] == "ready-to-sf"
    assert "Pipeline 'ready-to-sf' already runs on source 'ready-postgres'" in body["message"]
    assert "ready_slot" in body["message"]
    assert api.post("/api/v1/pipelines/2/refresh").get_json()["error"] == "SourceBusyError"
    page = browser.post("/pipelines/2/status", {"status": "START", "back": "detail"})
    assert page.status_code == 303 and page.headers["Location"] == "/pipelines/2"
    assert "already runs on source" in browser.get("/pipelines/2").get_data(as_text=True)
    # A restart of the running one is no conflict with itself.
    assert api.post("/api/v1/pipelines/1/refresh").status_code == 200
    assert api.post("/api/v1/pipelines/1/pause").status_code == 200
    assert api.post("/api/v1/pipelines/2/start").get_json()["status"] == "START"


# ---- REFRESH of chosen tables -----------------------------------------------------------


def test_refresh_of_chosen_tables(app, api, ready_source, ready_destination):
    """REFRESH with tables stores them; a name the publication does not list is a 422 naming
    it and changes nothing; without a body every table is refreshed; START clears the list."""
    _ready_pair(api, ready_source, ready_destination)
    chosen = api.post("/api/v1/pipelines/1/refresh", json={"tables": ["public.accounts"]})
    assert chosen.status_code == 200
    assert chosen.get_json()["status"] == "REFRESH"
    assert chosen.get_json()["refresh_tables"] == ["public.accounts"]

    unknown = api.post(
        "/api/v1/pipelines/1/refresh", json={"tables": ["public.accounts", "public.nope"]}
    )
    assert unknown.status_code == 422
    body = unknown.get_json()
    assert body["details"]["unknown"] == ["public.nope"]
    assert body["details"]["fields"]["tables"] == [
        "Not tables of publication ready_pub: public.nope."
    ]
    with app.app_context():
        assert _db.session.get(Pipeline, 1).refresh_tables == ["public.accounts"]

    for bad in ({"tables": []}, {"tables": "public.accounts"}, {"tables": [1]}, {"all": True}):
        assert api.post("/api/v1/pipelines/1/refresh", json=bad).status_code == 422, bad
    everything = api.post("/api/v1/pipelines/1/refresh")
    assert everything.status_code == 200 and everything.get_json()["refresh_tables"] is None
    api.post("/api/v1/pipelines/1/refresh", json={"tables": ["public.accounts"]})
    started = api.post("/api/v1/pipelines/1/start").get_json()
    assert (started["status"], started["refresh_tables"]) == ("START", None)


def test_refresh_of_tables_when_the_source_cannot_be_read(
    app, api, ready_source, ready_destination
):
    """Tables named while the source does not answer: 409 saying the publication could not
    be read, the status unchanged."""
    _ready_pair(api, ready_source, ready_destination)
    with app.app_context():  # its stored checks still pass; the server is elsewhere now
        source = _db.session.get(Source, 1)
        source.pg_port = 1
        _db.session.commit()
    response = api.post("/api/v1/pipelines/1/refresh", json={"tables": ["public.accounts"]})
    assert response.status_code == 409
    body = response.get_json()
    assert body["error"] == "PublicationUnreadableError"
    assert "The tables of publication ready_pub could not be read" in body["message"]
    with app.app_context():
        assert _db.session.get(Pipeline, 1).status == "PAUSE"


# ---- REFRESH and tables without a primary key -------------------------------------------

KEYLESS = (
    "no primary key, so its destination is an append-only history (a row per change), which "
    "REFRESH cannot repair"
)


@pytest.fixture(scope="module")
def keyless_cluster() -> Iterator[Cluster]:
    """A logical cluster whose database `mixed` has accounts (a primary key) and events and
    audit_trail (none, REPLICA IDENTITY FULL), published all together (mixed_pub) and the
    keyless ones alone (history_pub), with a slot."""
    cluster = Cluster("rosetta-keyless").start()
    cluster.create_database("mixed")
    with closing(cluster.connect("mixed")) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE accounts (id bigint PRIMARY KEY, owner text)")
        for table in ("events", "audit_trail"):
            cur.execute(f"CREATE TABLE {table} (at timestamptz, note text)")
            cur.execute(f"ALTER TABLE {table} REPLICA IDENTITY FULL")
        cur.execute("CREATE PUBLICATION mixed_pub FOR ALL TABLES")
        cur.execute("CREATE PUBLICATION history_pub FOR TABLE events, audit_trail")
        cur.execute("SELECT pg_create_logical_replication_slot('mixed_slot', 'pgoutput')")
    yield cluster
    cluster.stop()


def _keyless_pair(api, cluster, destination, publication="mixed_pub"):
    """A source on the keyless cluster (signed in as postgres, ready), the destination given,
    and a paused pipeline between them (id 1)."""
    source = {
        "name": "mixed-postgres",
        "pg_host": "127.0.0.1",
        "pg_port": cluster.port,
        "pg_database": "mixed",
        "pg_username": "postgres",
        "pg_password": "unused-trust-auth",
        "publication_name": publication,
        "slot_name": "mixed_slot",
    }
    assert api.post("/api/v1/sources", json=source).status_code == 201
    assert api.get("/api/v1/sources/1").get_json()["readiness"]["ready"] is True
    assert api.post("/api/v1/destinations", json=destination).status_code == 201
    body = {"name": "mixed-to-sf", "source_id": 1, "destination_id": 1, "status": "PAUSE"}
    assert api.post("/api/v1/pipelines", json=body).status_code == 201


def _keys(cluster):
    """psql's word on each table of mixed: whether it has a primary key, its replica identity."""
    return psql(
        cluster,
        "SELECT c.relname::text, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid "
        "AND i.indisprimary), c.relreplident::text FROM pg_class c "
        "WHERE c.relname IN ('accounts', 'events', 'audit_trail') ORDER BY 1",
        database="mixed",
    )


def test_refresh_naming_a_keyless_table_is_refused(app, api, keyless_cluster, ready_destination):
    """events has no primary key (psql): naming it, alone or beside accounts, is a 422 in the
    error envelope naming it and why, the status and tables unchanged and the refusal
    audited; naming accounts alone is a REFRESH of accounts."""
    assert _keys(keyless_cluster) == [
        ("accounts", True, "d"),
        ("audit_trail", False, "f"),
        ("events", False, "f"),
    ]
    _keyless_pair(api, keyless_cluster, ready_destination)
    message = (
        f"REFRESH cannot take public.events: {KEYLESS}. Name tables with a primary key, or "
        "leave tables out to refresh every table that has one."
    )
    for tables in (["public.events"], ["public.accounts", "public.events"]):
        refused = api.post("/api/v1/pipelines/1/refresh", json={"tables": tables})
        body = refused.get_json()
        assert refused.status_code == 422 and set(body) == ENVELOPE_KEYS, body
        assert body["error"] == "ValidationError"
        assert body["message"] == message
        assert body["details"] == {"fields": {"tables": [message]}, "keyless": ["public.events"]}
    both = api.post(
        "/api/v1/pipelines/1/refresh", json={"tables": ["public.audit_trail", "public.events"]}
    ).get_json()
    assert both["details"]["keyless"] == ["public.audit_trail", "public.events"]
    pipeline = api.get("/api/v1/pipelines/1").get_json()
    assert (pipeline["status"], pipeline["refresh_tables"]) == ("PAUSE", None)
    with app.app_context():
        refusals = _db.session.scalars(
            select(AuditRecord.message)
            .where(AuditRecord.action == "refresh", AuditRecord.outcome == "refused")
            .order_by(AuditRecord.id)
        ).all()
    assert len(refusals) == 3 and refusals[0] == message

    chosen = api.post("/api/v1/pipelines/1/refresh", json={"tables": ["public.accounts"]})
    assert chosen.status_code == 200, chosen.get_json()
    assert (chosen.get_json()["refresh_tables"], chosen.get_json()["refresh_skipped"]) == (
        ["public.accounts"],
        None,
    )


def test_refresh_of_all_tables_skips_the_keyless_ones_and_says_so(
    app, api, browser, keyless_cluster, ready_destination
):
    """REFRESH without tables: the API answers which tables it leaves out and why, the page
    and the status button's message say it, a save setting REFRESH does the same, and START
    forgets it."""
    _keyless_pair(api, keyless_cluster, ready_destination)
    refreshed = api.post("/api/v1/pipelines/1/refresh")
    assert refreshed.status_code == 200, refreshed.get_json()
    body = refreshed.get_json()
    assert (body["status"], body["refresh_tables"]) == ("REFRESH", None)
    assert body["refresh_skipped"] == ["public.audit_trail", "public.events"]
    said = f"Skipped public.audit_trail, public.events: {KEYLESS}."
    section = _text(_engine_section(browser, 1))
    assert f"Wanted REFRESH of every table with a primary key {said}" in section

    assert api.post("/api/v1/pipelines/1/start").get_json()["refresh_skipped"] is None
    button = browser.post("/pipelines/1/status", {"status": "REFRESH", "back": "detail"})
    assert button.status_code == 303
    page = browser.get("/pipelines/1").get_data(as_text=True)
    assert f"Pipeline &#39;mixed-to-sf&#39; set to REFRESH. {said}" in page
    row = browser.client.post(
        "/pipelines/1/status",
        data={"status": "REFRESH"},
        headers={"HX-Request": "true", "X-CSRFToken": browser.token},
    ).get_data(as_text=True)
    assert f'<span class="refresh-skipped">{said}</span>' in row

    assert api.post("/api/v1/pipelines/1/pause").get_json()["refresh_skipped"] is None
    patched = api.patch("/api/v1/pipelines/1", json={"status": "REFRESH"})
    assert patched.status_code == 200, patched.get_json()
    assert patched.get_json()["refresh_skipped"] == ["public.audit_trail", "public.events"]
    with app.app_context():
        stored = _db.session.get(Pipeline, 1)
        assert (stored.status, stored.refresh_skipped) == (
            "REFRESH",
            ["public.audit_trail", "public.events"],
        )


def test_refresh_of_a_publication_without_a_keyed_table_is_refused(
    app, api, browser, keyless_cluster, ready_destination
):
    """history_pub lists only tables without a primary key: REFRESH has nothing to re-read,
    409 NothingToRefreshError naming them; the status button says so in its row."""
    _keyless_pair(api, keyless_cluster, ready_destination, publication="history_pub")
    refused = api.post("/api/v1/pipelines/1/refresh")
    body = refused.get_json()
    assert refused.status_code == 409 and set(body) == ENVELOPE_KEYS, body
    assert body["error"] == "NothingToRefreshError"
    assert body["details"] == {"keyless": ["public.audit_trail", "public.events"]}
    assert body["message"].startswith(
        "No table of publication history_pub has a primary key: REFRESH has nothing to re-read."
    )
    row = browser.client.post(
        "/pipelines/1/status",
        data={"status": "REFRESH"},
        headers={"HX-Request": "true", "X-CSRFToken": browser.token},
    ).get_data(as_text=True)
    assert "No table of publication history_pub has a primary key" in row
    assert api.get("/api/v1/pipelines/1").get_json()["status"] == "PAUSE"


class _AskedRun:
    """What the supervisor asks of a running engine, without Debezium: the REFRESHes."""

    def __init__(self, spec):
        self.spec = spec
        self.refresh = None
        self.asked = []

    def refresh_now(self, tables):
        self.asked.append(tables)


def test_the_engine_never_signals_a_snapshot_of_a_keyless_table(
    app, api, keyless_cluster, ready_destination
):
    """The engine reads which tables have a primary key from the source's catalog when it
    starts: a REFRESH of all, or of tables named before a key was dropped, signals only those
    with one; with none left, it signals nothing and the status goes back to START."""
    _keyless_pair(api, keyless_cluster, ready_destination)
    supervisor = Supervisor(app)
    with app.app_context():
        pipeline = _db.session.get(Pipeline, 1)
        spec = supervisor._spec(pipeline)
        assert spec.tables == (
            ("public", "accounts"),
            ("public", "audit_trail"),
            ("public", "events"),
        )
        assert spec.keyless == {("public", "audit_trail"), ("public", "events")}
        assert spec.heartbeat
        for named, signalled in (
            (None, [("public", "accounts")]),
            (["public.accounts", "public.events"], [("public", "accounts")]),
            (["public.events"], []),
        ):
            pipeline.refresh_tables = named
            assert refresh_tables(pipeline, spec) == signalled

        # events named when it still had a key, which it has lost since: nothing is signalled.
        pipeline.status, pipeline.refresh_tables = "REFRESH", ["public.events"]
        _db.session.commit()
        run = _AskedRun(spec)
        supervisor._follow_refresh(run, pipeline)
        assert run.asked == [] and run.refresh.done
        _db.session.expire_all()
        assert (pipeline.status, pipeline.refresh_tables) == ("START", None)

        pipeline.status, pipeline.refresh_tables = "REFRESH", None
        _db.session.commit()
        run = _AskedRun(spec)
        supervisor._follow_refresh(run, pipeline)
        assert run.asked == [[("public", "accounts")]]
    supervisor.ownership.close()
    assert psql(
        keyless_cluster,
        "SELECT tablename::text FROM pg_publication_tables WHERE pubname = 'mixed_pub' ORDER BY 1",
        database="mixed",
    ) == [("accounts",), ("audit_trail",), ("events",), ("rosetta_heartbeat",)]


def test_the_page_has_start_pause_and_refresh(app, browser):
    """The pipeline's page has the three status buttons, REFRESH asking first; the current
    status's button sends nothing."""
    pipeline_id = add_pipeline(app, status="PAUSE")
    page = browser.get(f"/pipelines/{pipeline_id}").get_data(as_text=True)
    assert 'id="status-start" type="submit"' in page
    assert 'id="status-pause" type="button" aria-disabled="true"' in page
    assert re.search(r'id="status-refresh" type="submit"\s*data-confirm="Refresh pipeline', page)
    paused = browser.post(f"/pipelines/{pipeline_id}/status", {"status": "PAUSE", "back": "detail"})
    assert paused.headers["Location"] == f"/pipelines/{pipeline_id}"
