"""Verify compares a destination with its source: real PostgreSQL, fakesnow's Snowflake, the
figures checked against psql; and its API, its audit record and its refusals."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from rosetta_web.engine.loader import Loader, open_destination
from rosetta_web.engine.verify import EXTRA, MISSING, VALUES, Verifier
from rosetta_web.extensions import db
from rosetta_web.models import AuditRecord, Pipeline, PipelineVerification
from rosetta_web.postgres.connection import Target
from rosetta_web.readiness.destination import SnowflakeTarget

from .factories import add_engine_process, add_pipeline, add_verification, verify_table
from .pg import Cluster, wait_for
from .snowflake import new_user, write_key

_names = itertools.count(1)


class Ends:
    """A source database and a destination schema, filled by hand, and a Verifier of them."""

    def __init__(self, cluster: Cluster, snowflake: Any, key_path: Path, user: str) -> None:
        n = next(_names)
        self.cluster = cluster
        self.snowflake = snowflake
        self.database = f"verify_{n}_{os.getpid()}"
        self.schema = f"VERIFY_{n}"
        cluster.create_database(self.database)
        snowflake.execute(f"CREATE SCHEMA IF NOT EXISTS ANALYTICS.{self.schema}")
        self.source = Target(0, "verify", "127.0.0.1", cluster.port, self.database, "postgres", "")
        self.destination = SnowflakeTarget(
            account="xy12345.us-east-1",
            user=user,
            database="ANALYTICS",
            schema=self.schema,
            private_key_path=str(key_path),
            host=snowflake.host_setting,
        )

    def sql(self, *statements: str) -> list[tuple[Any, ...]]:
        """Run statements on the source; return the last one's rows."""
        rows: list[tuple[Any, ...]] = []
        with closing(self.cluster.connect(self.database)) as conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
                rows = cur.fetchall() if cur.description else []
        return rows

    def dest(self, *statements: str) -> list[tuple[Any, ...]]:
        """Run statements in the destination schema; return the last one's rows."""
        return self.snowflake.execute(
            "USE DATABASE ANALYTICS", f"USE SCHEMA {self.schema}", *statements
        )[-1]

    def verify(
        self,
        tables: list[str],
        sample_keys: int = 1000,
        passed: Callable[[int], bool] = lambda lsn: True,
    ) -> dict[str, Any]:
        """Verify `tables` (of schema public); return each table's verdict by name."""
        conn = open_destination(self.destination, 10, 30)
        loader = Loader(conn, "ANALYTICS", self.schema)
        try:
            verifier = Verifier(
                self.source, loader, [("public", t) for t in tables], sample_keys, passed, 10
            )
            return {v.table: v for v in verifier.run()}
        finally:
            loader.close()


@pytest.fixture(scope="module")
def key(snowflake: Any, tmp_path_factory: Any) -> tuple[Path, str]:
    """A key pair registered for a fakesnow user."""
    path = tmp_path_factory.mktemp("verify-key") / "rsa_key.p8"
    return path, new_user(snowflake, write_key(path))


@pytest.fixture
def ends(source_cluster: Cluster, snowflake: Any, key: tuple[Path, str]) -> Iterator[Ends]:
    """Fresh source and destination ends."""
    yield Ends(source_cluster, snowflake, *key)


ITEMS_DDL = "CREATE TABLE items (id bigint PRIMARY KEY, note text, amount numeric(12,2))"
ITEMS_TARGET = "CREATE TABLE ITEMS (ID BIGINT, NOTE VARCHAR, AMOUNT NUMBER(12,2))"


def _fill(ends: Ends, rows: int) -> None:
    """Put the same `rows` items at both ends."""
    ends.sql(
        ITEMS_DDL,
        f"INSERT INTO items SELECT g, 'note ' || g, g * 1.25 FROM generate_series(1, {rows}) g",
    )
    ends.dest(
        ITEMS_TARGET,
        "INSERT INTO ITEMS SELECT g, 'note ' || g, g * 1.25 "
        f"FROM (SELECT seq4() + 1 AS g FROM table(generator(rowcount => {rows})))",
    )


def test_the_same_table_passes_and_every_key_of_a_small_one_is_compared(ends):
    """A table equal at both ends passes, with the counts psql and Snowflake give, and every
    one of its keys compared (it has fewer than 10,000 rows)."""
    _fill(ends, 500)

    verdict = ends.verify(["items"])["public.items"]

    assert verdict.ok and verdict.differing == []
    assert verdict.source_rows == ends.sql("SELECT count(*) FROM items")[0][0] == 500
    assert verdict.destination_rows == ends.dest("SELECT count(*) FROM ITEMS")[0][0] == 500
    assert verdict.sampled == 500


def test_a_missing_a_changed_and_an_extra_row_are_each_named(ends):
    """A row deleted, a value changed and a row added by hand at the destination: Verify names
    each key, says how it differs and which column, and the table fails."""
    _fill(ends, 300)
    ends.dest(
        "DELETE FROM ITEMS WHERE ID = 7",
        "UPDATE ITEMS SET AMOUNT = 0 WHERE ID = 42",
        "INSERT INTO ITEMS VALUES (9001, 'only here', 1)",
    )

    verdict = ends.verify(["items"])["public.items"]

    assert not verdict.ok
    assert (verdict.source_rows, verdict.destination_rows) == (300, 300)  # equal counts hide it
    found = {(d.key["id"], d.problem): d.columns for d in verdict.differing}
    assert found == {
        (7, MISSING): ["id", "note", "amount"],
        (42, VALUES): ["amount"],
        (9001, EXTRA): ["id", "note", "amount"],
    }
    assert verdict.differing_keys == 3
    assert verdict.sampled == 301


def test_a_change_landing_between_the_two_reads_is_not_a_difference(ends):
    """A change committed at the source after its read, and loaded before the destination's
    read, differs at first: read again once the pipeline passed it, it is equal, and the
    table passes. A value changed by hand still differs after every read."""
    _fill(ends, 100)
    ends.dest("UPDATE ITEMS SET NOTE = 'by hand' WHERE ID = 99")
    calls = []

    def passed(lsn: int) -> bool:
        if not calls:  # the pipeline loads a change committed just after the source's read
            ends.sql("UPDATE items SET note = 'moved on' WHERE id = 5")
            ends.dest("UPDATE ITEMS SET NOTE = 'moved on' WHERE ID = 5")
        calls.append(lsn)
        return True

    verdict = ends.verify(["items"], passed=passed)["public.items"]

    assert [(d.key, d.columns) for d in verdict.differing] == [({"id": 99}, ["note"])]
    assert len(calls) == 3  # read three times: the key by hand differs every time
    assert calls == sorted(calls)


def test_a_row_written_after_the_sources_read_is_not_compared_with_it(ends):
    """A destination row whose last write came from a source position after the source's
    read (its _ROSETTA_LSN) is newer than what it would be compared with: it is read again,
    and when it is newer every time it is left out and said to be changing, not different."""
    _fill(ends, 20)
    ends.dest(
        'ALTER TABLE ITEMS ADD COLUMN "_ROSETTA_LSN" NUMBER(20,0)',
        'UPDATE ITEMS SET "_ROSETTA_LSN" = 1',
        "UPDATE ITEMS SET NOTE = 'by hand' WHERE ID = 2",
        f"UPDATE ITEMS SET NOTE = 'newer', \"_ROSETTA_LSN\" = {2**62} WHERE ID = 5",
    )

    verdict = ends.verify(["items"])["public.items"]

    assert [d.key for d in verdict.differing] == [{"id": 2}]
    assert verdict.note == (
        "1 of the keys changed at the source every time they were read: not compared"
    )


def test_a_paused_pipeline_is_compared_once_and_said_to_be_behind(ends):
    """When the pipeline has not loaded up to the source's position (paused), Verify does
    not read again in vain: it compares once and says a difference may not be loaded yet."""
    _fill(ends, 50)
    ends.sql("UPDATE items SET note = 'not loaded yet' WHERE id = 3")
    calls = []

    def passed(lsn: int) -> bool:
        calls.append(lsn)
        return False

    verdict = ends.verify(["items"], passed=passed)["public.items"]

    assert [d.key for d in verdict.differing] == [{"id": 3}]
    assert len(calls) == 1
    assert verdict.note is not None and "paused" in verdict.note


def test_a_large_table_is_sampled_reading_only_sampled_pages_and_the_index(ends):
    """A table of 60,000 rows: the sample's keys are compared, not every one, spread over the
    table; the source reads the table through once (the count) plus the pages TABLESAMPLE
    picks, and the keys by their index, as pg_stat_user_tables counts it."""
    _fill(ends, 60_000)
    ends.sql("ANALYZE items")
    ends.dest("UPDATE ITEMS SET NOTE = 'wrong' WHERE ID <= 30000")  # half of them differ

    def stats() -> tuple[int, int]:
        (row,) = ends.sql(
            "SELECT seq_tup_read, coalesce(idx_scan, 0) FROM pg_stat_user_tables "
            "WHERE relname = 'items'"
        )
        return int(row[0]), int(row[1])

    before = stats()
    verdict = ends.verify(["items"], sample_keys=100)["public.items"]

    assert (verdict.source_rows, verdict.destination_rows) == (60_000, 60_000)
    assert 100 <= verdict.sampled <= 110  # the source's 100, and up to 10 from the destination
    assert 0.25 * verdict.sampled < verdict.differing_keys < 0.75 * verdict.sampled
    assert len(verdict.differing) == 20  # the first 20 shown
    assert wait_for(lambda: stats()[1] > before[1], timeout=10, interval=0.2)
    seq_read = stats()[0] - before[0]
    assert 60_000 <= seq_read < 60_000 * 1.5, seq_read  # one count, and a sample's pages


def test_keyless_tables_are_left_out_and_other_types_are_counted(ends):
    """A table without a primary key is not compared (its destination is a history); a
    table with a type the comparison cannot read exactly has its counts compared only."""
    ends.sql(
        "CREATE TABLE events (note text)",
        "INSERT INTO events VALUES ('a'), ('b')",
        "CREATE TABLE hosts (id int PRIMARY KEY, address inet)",
        "INSERT INTO hosts VALUES (1, '10.0.0.1'), (2, '10.0.0.2')",
    )
    ends.dest(
        "CREATE TABLE HOSTS (ID INTEGER, ADDRESS VARCHAR)", "INSERT INTO HOSTS VALUES (1, 'x')"
    )

    found = ends.verify(["events", "hosts"])

    events, hosts = found["public.events"], found["public.hosts"]
    assert events.ok and not events.compared and "no primary key" in (events.note or "")
    assert (hosts.source_rows, hosts.destination_rows) == (2, 1) and not hosts.ok
    assert "inet" in (hosts.note or "") and hosts.sampled == 0


# ---- The API -----------------------------------------------------------------------------


def test_verify_is_refused_without_an_engine_and_audited(app, api):
    """With no engine process, POST …/verify is refused with 409 NoEngineError and the audit
    log says so; with one, it is asked for (202, Location), audited, and a second POST while
    it waits returns the same Verify."""
    pipeline_id = add_pipeline(app, status="PAUSE")
    url = f"/api/v1/pipelines/{pipeline_id}/verify"
    assert api.get(url).status_code == 404

    refused = api.post(url)
    assert refused.status_code == 409 and refused.get_json()["error"] == "NoEngineError"

    add_engine_process(app)
    asked = api.post(url, json={"sample_keys": 50})
    assert asked.status_code == 202, asked.get_json()
    body = asked.get_json()
    assert body["state"] == "running" and body["sample_keys"] == 50 and body["owner"] is None
    assert asked.headers["Location"].endswith(url)
    again = api.post(url)
    assert again.status_code == 202 and again.get_json()["id"] == body["id"]
    assert api.get(url).get_json()["id"] == body["id"]
    with app.app_context():
        records = db.session.scalars(
            db.select(AuditRecord).where(AuditRecord.action == "verify").order_by(AuditRecord.id)
        ).all()
        assert [r.outcome for r in records] == ["refused", "done"]
        assert records[1].target_id == pipeline_id
        assert db.session.scalar(db.select(db.func.count()).select_from(PipelineVerification)) == 1


@pytest.mark.parametrize("body", [{"sample_keys": 0}, {"sample_keys": "10"}, {"x": 1}])
def test_verify_refuses_a_bad_sample_size_with_422(app, api, body):
    """A sample size out of range, not a number, or an unknown field: 422 naming the field."""
    pipeline_id = add_pipeline(app, status="PAUSE")
    add_engine_process(app)
    answer = api.post(f"/api/v1/pipelines/{pipeline_id}/verify", json=body)
    assert answer.status_code == 422
    assert set(answer.get_json()["details"]["fields"]) == set(body)
    with app.app_context():
        assert db.session.get(Pipeline, pipeline_id) is not None
        assert db.session.scalar(db.select(db.func.count()).select_from(PipelineVerification)) == 0


# ---- The page ----------------------------------------------------------------------------


def _store_result(app, pipeline_id: int) -> None:
    """Store a Verify as an engine process ends one that found a difference."""
    missing = {"key": {"id": 7}, "columns": ["id", "note"], "problem": MISSING}
    orders = verify_table("public.orders", source_rows=1200, destination_rows=1199, ok=False)
    orders |= {"sampled": 1000, "differing": [missing], "differing_keys": 1}
    tags = verify_table("public.tags", source_rows=3, destination_rows=3, sampled=3)
    add_verification(app, pipeline_id, [orders, tags], owner="engine-host:42")


def test_the_verify_button_says_why_it_is_refused_and_keeps_the_page(app, browser):
    """Verify with no engine process running: the page comes back saying to start one, and
    nothing is asked for; with one, the part shows the Verify waiting for it, and polls."""
    pipeline_id = add_pipeline(app, status="PAUSE")
    page = browser.get(f"/pipelines/{pipeline_id}").get_data(as_text=True)
    assert 'id="verify-button"' in page and "Not verified yet." in page

    part = browser.post(f"/pipelines/{pipeline_id}/verify", headers={"HX-Request": "true"})
    html = part.get_data(as_text=True)
    assert part.status_code == 200 and 'id="verify-refusal"' in html
    assert "No engine process is running" in html and "flask rosetta engine" in html

    add_engine_process(app)
    followed = browser.post(f"/pipelines/{pipeline_id}/verify", follow_redirects=True)
    html = followed.get_data(as_text=True)
    assert "waiting for an engine process to take it" in html
    assert f'hx-get="/pipelines/{pipeline_id}/verification"' in html
    assert "Verifying…" in html


def test_a_verify_that_found_a_difference_names_it_and_offers_refresh_of_that_table(app, browser):
    """The page shows each table's counts and keys compared, names the key that differs and
    how, and offers a REFRESH of that table alone, which the button asks for."""
    pipeline_id = add_pipeline(app, status="PAUSE")
    _store_result(app, pipeline_id)

    html = browser.get(f"/pipelines/{pipeline_id}").get_data(as_text=True)

    assert "differs" in html and "1,200" in html and "1,199" in html
    assert "<code>id = 7</code>: missing at the destination" in html
    assert 'name="tables" value="public.orders"' in html
    assert 'name="tables" value="public.tags"' not in html
    assert ">Refresh public.orders</button>" in html


def test_a_verify_of_several_tables_reads_as_an_operator_needs_it(app, browser):
    """Several tables differ: the result says in how many, the keys are listed under their
    table with how many of them are shown, the Refresh button counts the tables and its
    question names them, the pipeline and that a paused one starts; a keyless table reads
    "not compared", not "yes"."""
    pipeline_id = add_pipeline(app, status="PAUSE")
    keys = [
        {"key": {"order_id": k, "line_no": 1}, "columns": [], "problem": MISSING} for k in range(20)
    ]
    tables = [
        verify_table("public.order_items", differing=keys, differing_keys=37, ok=False),
        verify_table("public.orders", destination_rows=9, ok=False),
        verify_table("public.events", destination_rows=None, sampled=0, note="no primary key"),
        verify_table("public.tags"),
    ]
    add_verification(app, pipeline_id, tables)

    html = browser.get(f"/pipelines/{pipeline_id}").get_data(as_text=True)

    assert "in 2 of 4 tables" in html
    assert "In <code>public.order_items</code>, 37 keys differ; the first 20:" in html
    assert "<code>order_id = 0</code>, <code>line_no = 1</code>: missing at the destination" in html
    assert ">Refresh the 2 tables that differ</button>" in html
    assert (
        'data-confirm="Refresh 2 tables of pipeline orders-to-sf (public.order_items, '
        "public.orders)? They get a new snapshot" in html
    )
    assert "The pipeline is paused: this starts it." in html
    events = html[html.index('id="verify-public.events"') :]
    assert '<td data-label="Same"><span class="muted">not compared</span>' in events
    tags = html[html.index('id="verify-public.tags"') :]
    assert '<td data-label="Same">yes</td>' in tags
    # Verify comes before the chart, right after the live part.
    assert html.index('id="verify"') < html.index('id="progress-charts"')
