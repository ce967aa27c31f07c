"""Source readiness and replication objects against real clusters: each failing check produced
for real, each figure and object cross-checked with psql, each fix applied as an operator would."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from psycopg2 import sql

from rosetta_web.engine.properties import Batching, PipelineSpec, debezium_properties
from rosetta_web.extensions import db
from rosetta_web.models import Source
from rosetta_web.monitor.rounds import scheduled_round
from rosetta_web.monitor.scheduler import MonitorScheduler
from rosetta_web.postgres.checks import QUOTED_KEYWORDS, TITLES
from rosetta_web.postgres.checks import quote_ident as offline
from rosetta_web.postgres.connection import Target
from rosetta_web.postgres.replication_objects import add_heartbeat_table, session
from rosetta_web.sources.services import after_round
from rosetta_web.timeutil import utcnow

from .constants import ENVELOPE_KEYS, GIB, MB
from .factories import add_source
from .pg import (
    Cluster,
    HangingServer,
    client_options,
    emit_wal,
    free_port,
    keep_size,
    keep_size_now,
    lose_slot,
    psql,
    recvlogical,
    retained,
    wait_for,
)
from .seed import DESTINATION

pytestmark = pytest.mark.slow

CDC_PASSWORD = "Cdc-Secret-7!"
MIXED = "Mixed Case"
MIXED_PASSWORD = "Mixed-Secret-3!"
# What a check against an unreachable source may take beyond its timeout (name lookup, Flask).
SLACK_S = 2.0
TIMEOUT_S = 1
# Slots in use and max_replication_slots, as psql shows them.
IN_USE = (
    "SELECT count(*)::int, current_setting('max_replication_slots')::int FROM pg_replication_slots"
)


# Clusters and what is in them


@pytest.fixture(scope="module")
def logical() -> Iterator[Cluster]:
    """A logical cluster of these tests' own, its WAL kept small so a slot can be lost.

    max_slot_wal_keep_size stays off the command line: tests change it with ALTER SYSTEM.
    """
    cluster = Cluster(
        "rosetta-readiness", settings={"max_wal_size": "32MB", "min_wal_size": "32MB"}
    ).start()
    cluster.create_database("shop")
    cluster.create_database("other")
    with closing(cluster.connect("shop")) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, note text)")
        cur.execute("CREATE TABLE t (id int PRIMARY KEY)")
        cur.execute("INSERT INTO t VALUES (1), (2)")
        cur.execute(f"CREATE ROLE cdc LOGIN REPLICATION PASSWORD '{CDC_PASSWORD}'")
        cur.execute("GRANT pg_monitor TO cdc")
        # cdc may create the heartbeat table, and own a publication (see `publish`).
        cur.execute("GRANT CREATE ON DATABASE shop TO cdc")
        cur.execute("GRANT CREATE ON SCHEMA public TO cdc")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def replica() -> Iterator[Cluster]:
    """A cluster at wal_level=replica with room for two slots only."""
    cluster = Cluster(
        "rosetta-replica", settings={"wal_level": "replica", "max_replication_slots": 2}
    ).start()
    cluster.create_database("shop")
    yield cluster
    cluster.stop()


def apply_fix(cluster: Cluster, fix: str, database: str = "shop") -> None:
    """Paste a check's fix into psql as postgres, as the operator would; stop at an error."""
    subprocess.run(
        [
            str(cluster.bindir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            *client_options(cluster, database),
        ],
        input=fix,
        text=True,
        check=True,
        capture_output=True,
    )


def publish(cluster: Cluster) -> None:
    """Publish orders as cdc_pub, owned by cdc as one made with Create publication would be:
    cdc may then create the heartbeat table and add it to it (the `heartbeat` check passes)."""
    psql(cluster, "CREATE PUBLICATION cdc_pub FOR TABLE orders")
    psql(cluster, "ALTER PUBLICATION cdc_pub OWNER TO cdc")


def _clean(cluster: Cluster) -> None:
    """Drop every slot (its consumer stopped first) and every publication of shop."""
    psql(
        cluster,
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
        "WHERE active_pid IS NOT NULL",
    )
    wait_for(lambda: not psql(cluster, "SELECT 1 FROM pg_replication_slots WHERE active"), 5)
    psql(cluster, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")
    for (name,) in psql(cluster, "SELECT pubname::text FROM pg_publication"):
        psql(cluster, sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(name)))
    psql(cluster, "DROP TABLE IF EXISTS public.rosetta_heartbeat")


@pytest.fixture
def shop(logical: Cluster) -> Iterator[Cluster]:
    """The logical cluster, left without slots or publications after the test."""
    yield logical
    _clean(logical)


@pytest.fixture
def bare(replica: Cluster) -> Iterator[Cluster]:
    """The replica-level cluster, left without slots after the test."""
    yield replica
    psql(replica, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")


@pytest.fixture
def mixed_role(logical: Cluster) -> Iterator[str]:
    """A role named "Mixed Case" (quotes needed) with neither REPLICATION nor pg_monitor."""
    psql(logical, f"CREATE ROLE \"{MIXED}\" LOGIN PASSWORD '{MIXED_PASSWORD}'")
    yield MIXED
    psql(logical, f'DROP ROLE "{MIXED}"')


@pytest.fixture
def short_timeout(app: Any) -> int:
    """Bound every check and replication call by TIMEOUT_S seconds."""
    app.config["WAL_MONITOR_TIMEOUT_SECONDS"] = TIMEOUT_S
    return TIMEOUT_S


def slots(cluster: Cluster) -> list[tuple[Any, ...]]:
    """Every slot psql lists: name, type, plugin, database, active."""
    return psql(
        cluster,
        "SELECT slot_name::text, slot_type, plugin::text, database::text, active "
        "FROM pg_replication_slots ORDER BY 1",
    )


def publications(cluster: Cluster) -> list[tuple[Any, ...]]:
    """Every publication of shop: name and FOR ALL TABLES."""
    return psql(cluster, "SELECT pubname::text, puballtables FROM pg_publication ORDER BY 1")


def published_tables(cluster: Cluster, name: str) -> list[tuple[Any, ...]]:
    return psql(
        cluster,
        "SELECT schemaname::text, tablename::text FROM pg_publication_tables "
        "WHERE pubname = %s ORDER BY 1, 2",
        name,
    )


def tables(cluster: Cluster) -> list[tuple[Any, ...]]:
    """Every user table of shop: schema, name."""
    return psql(
        cluster,
        "SELECT schemaname::text, tablename::text FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
    )


# Rosetta's side


def add(api: Any, cluster: Cluster, name: str = "shop", **fields: Any) -> int:
    """Register a source through the API; return its id."""
    body = {
        "name": name,
        "pg_host": "127.0.0.1",
        "pg_port": cluster.port,
        "pg_database": "shop",
        "pg_username": "cdc",
        "pg_password": CDC_PASSWORD,
        "publication_name": "cdc_pub",
        "slot_name": "cdc_slot",
        **fields,
    }
    response = api.post("/api/v1/sources", json=body)
    assert response.status_code == 201, response.get_json()
    return int(response.get_json()["id"])


def check(api: Any, source_id: int) -> dict[str, Any]:
    """Press Check through the API; return the result."""
    response = api.post(f"/api/v1/sources/{source_id}/check")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"ready", "checked_at", "checks"}
    return body


def by_id(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in result["checks"]}


def statuses(result: dict[str, Any]) -> dict[str, str]:
    return {item["id"]: item["status"] for item in result["checks"]}


def failing(result: dict[str, Any]) -> list[str]:
    return [item["id"] for item in result["checks"] if item["status"] == "fail"]


def error(response: Any, status: int, name: str) -> dict[str, Any]:
    """Assert the response is the error envelope with this status and error; return it."""
    body = response.get_json()
    assert response.status_code == status, body
    assert set(body) == ENVELOPE_KEYS and body["error"] == name, body
    return body


# Each failing check, produced for real


def test_replica_server_fails_wal_level(api, bare):
    """wal_level=replica (psql says so): wal_level fails with the ALTER SYSTEM fix."""
    assert psql(bare, "SHOW wal_level") == [("replica",)]
    source_id = add(api, bare, pg_username="postgres", pg_password="unused")
    result = check(api, source_id)
    wal_level = by_id(result)["wal_level"]
    assert wal_level["status"] == "fail"
    assert wal_level["observed"].startswith("wal_level is replica:")
    assert wal_level["fix"].startswith(
        "ALTER SYSTEM SET wal_level = logical;\n-- then restart PostgreSQL"
    )
    assert result["ready"] is False and "wal_level" in failing(result)
    # Nothing fills the slots yet: psql counts 0 of 2.
    assert psql(bare, IN_USE) == [(0, 2)]
    assert by_id(result)["replication_slots_free"]["status"] == "pass"
    assert by_id(result)["replication_slots_free"]["observed"].startswith(
        "0 of max_replication_slots = 2 in use."
    )


def test_full_max_replication_slots_fails_until_the_slot_exists(api, bare):
    """Every slot taken and the source's missing: replication_slots_free fails; its own slot
    being one of them passes it (and `slot` then says the slot is not logical)."""
    for name in ("standby_a", "standby_b"):
        psql(bare, "SELECT pg_create_physical_replication_slot(%s)", name)
    assert psql(bare, IN_USE) == [(2, 2)]
    source_id = add(api, bare, pg_username="postgres", pg_password="unused")
    free = by_id(check(api, source_id))["replication_slots_free"]
    assert free["status"] == "fail"
    assert free["observed"] == (
        "2 of max_replication_slots = 2 in use. None is free for the source's slot cdc_slot."
    )
    assert free["fix"].startswith("ALTER SYSTEM SET max_replication_slots = 6;\n")

    assert (
        api.patch(f"/api/v1/sources/{source_id}", json={"slot_name": "standby_a"}).status_code
        == 200
    )
    result = by_id(check(api, source_id))
    assert result["replication_slots_free"]["status"] == "pass"
    assert result["slot"]["status"] == "fail"
    assert result["slot"]["observed"] == "Slot standby_a is a physical slot, not a logical one."


def test_role_without_replication_or_pg_monitor(api, shop, mixed_role):
    """A role "Mixed Case" lacking both: replication_role fails and wal_directory_access warns,
    each fix quoting the name; pasted into psql, the fixes make both pass."""
    assert psql(
        shop,
        "SELECT rolsuper, rolreplication, pg_has_role(%s, 'pg_monitor', 'MEMBER') "
        "FROM pg_roles WHERE rolname = %s",
        MIXED,
        MIXED,
    ) == [(False, False, False)]
    source_id = add(api, shop, pg_username=MIXED, pg_password=MIXED_PASSWORD)
    result = check(api, source_id)
    role, waldir = by_id(result)["replication_role"], by_id(result)["wal_directory_access"]
    assert role["status"] == "fail"
    assert role["fix"] == (
        'ALTER ROLE "Mixed Case" WITH REPLICATION;\n'
        '-- Amazon RDS and Aurora: GRANT rds_replication TO "Mixed Case";'
    )
    assert waldir["status"] == "warn"
    assert waldir["fix"] == 'GRANT pg_monitor TO "Mixed Case";'
    assert "replication_role" in failing(result)

    apply_fix(shop, role["fix"])
    apply_fix(shop, waldir["fix"])
    assert psql(
        shop,
        "SELECT rolreplication, pg_has_role(%s, 'pg_monitor', 'MEMBER') "
        "FROM pg_roles WHERE rolname = %s",
        MIXED,
        MIXED,
    ) == [(True, True)]
    again = statuses(check(api, source_id))
    assert (again["replication_role"], again["wal_directory_access"]) == ("pass", "pass")


def test_missing_publication_fails_and_its_fix_creates_it(api, shop):
    """No publication "Cdc Pub" (psql lists none) and a role that is no superuser (psql): the
    fix names the database's own tables (FOR TABLE, not FOR ALL TABLES, saying why), and the
    two checks that depend on it are skipped; pasted into psql, it publishes those tables."""
    assert publications(shop) == []
    assert psql(shop, "SELECT rolsuper FROM pg_roles WHERE rolname = 'cdc'") == [(False,)]
    source_id = add(api, shop, publication_name="Cdc Pub")
    result = check(api, source_id)
    publication = by_id(result)["publication"]
    assert publication["status"] == "fail"
    assert publication["observed"] == "No publication Cdc Pub in this database."
    assert publication["fix"] == (
        "-- FOR ALL TABLES needs a superuser, and the source's role is not one: this names each\n"
        "-- table of the database (run it as the tables' owner, or as a superuser).\n"
        'CREATE PUBLICATION "Cdc Pub" FOR TABLE public.orders, public.t;\n'
        "-- or press Create publication on the source's page."
    )
    assert "FOR ALL TABLES;" not in publication["fix"]
    assert statuses(result)["publication_tables"] == "skip"
    assert statuses(result)["replica_identity"] == "skip"
    assert statuses(result)["heartbeat"] == "skip"

    apply_fix(shop, publication["fix"])
    assert publications(shop) == [("Cdc Pub", False)]
    assert published_tables(shop, "Cdc Pub") == tables(shop)
    again = by_id(check(api, source_id))
    assert again["publication"]["status"] == "pass"
    assert again["publication_tables"]["observed"] == "2 table(s): public.orders, public.t."


def test_published_table_without_a_key_fails_naming_it(api, shop):
    """A published table with no primary key and REPLICA IDENTITY DEFAULT (psql shows both;
    PostgreSQL then refuses the application's UPDATE and DELETE on it): replica_identity fails
    naming it, with a quoted ALTER TABLE that makes it pass."""
    psql(shop, 'CREATE TABLE "Line Items" (note text)')
    try:
        psql(shop, 'CREATE PUBLICATION cdc_pub FOR TABLE orders, "Line Items"')
        assert psql(
            shop,
            "SELECT relreplident::text, EXISTS (SELECT 1 FROM pg_index "
            "WHERE indrelid = c.oid AND indisprimary) FROM pg_class c "
            "WHERE oid = '\"Line Items\"'::regclass",
        ) == [("d", False)]
        source_id = add(api, shop)
        result = by_id(check(api, source_id))
        assert result["publication_tables"]["observed"] == (
            "2 table(s): public.Line Items, public.orders."
        )
        identity = result["replica_identity"]
        assert identity["status"] == "fail"
        assert identity["observed"] == (
            "Updates and deletes of public.Line Items (no primary key) cannot replicate."
        )
        assert identity["fix"] == (
            "-- Add a primary key, or have PostgreSQL log whole old rows:\n"
            'ALTER TABLE public."Line Items" REPLICA IDENTITY FULL;'
        )
        assert psql(shop, "SELECT quote_ident('public') || '.' || quote_ident('Line Items')") == [
            ('public."Line Items"',)
        ]
        apply_fix(shop, identity["fix"])
        assert psql(
            shop, "SELECT relreplident::text FROM pg_class WHERE oid = '\"Line Items\"'::regclass"
        ) == [("f",)]
        assert statuses(check(api, source_id))["replica_identity"] == "pass"
    finally:
        _clean(shop)
        psql(shop, 'DROP TABLE "Line Items"')


# The engine's heartbeat table, for a role that is no superuser

WRITER = "Beat Writer"
WRITER_PASSWORD = "Beat-Secret-5!"
HEARTBEAT_DDL_SHOWN = (
    "CREATE TABLE IF NOT EXISTS public.rosetta_heartbeat "
    "(slot_name text PRIMARY KEY, beat_at timestamptz NOT NULL);"
)
FIX_HEAD = (
    "-- As a superuser: the heartbeat table, published, and writable by the source's role\n"
    "-- (its upsert needs SELECT, INSERT and UPDATE).\n"
)


@pytest.fixture
def writer(logical: Cluster) -> Iterator[str]:
    """A role "Beat Writer" (quotes needed) that may do nothing but sign in."""
    psql(logical, f"CREATE ROLE \"{WRITER}\" LOGIN PASSWORD '{WRITER_PASSWORD}'")
    yield WRITER
    psql(logical, "DROP TABLE IF EXISTS public.rosetta_heartbeat")
    psql(logical, f'DROP OWNED BY "{WRITER}"')  # its publication, its grants
    psql(logical, f'DROP ROLE "{WRITER}"')


def as_writer(cluster: Cluster) -> Target:
    """Where and as whom the engine reaches the source, signed in as the writer."""
    return Target(0, "shop", "127.0.0.1", cluster.port, "shop", WRITER, WRITER_PASSWORD)


def heartbeat_privileges(cluster: Cluster) -> tuple[Any, ...]:
    """psql's word on the writer: may it SELECT, INSERT, UPDATE the table; is it published."""
    return psql(
        cluster,
        "SELECT has_table_privilege(%s, 'public.rosetta_heartbeat', 'SELECT'), "
        "has_table_privilege(%s, 'public.rosetta_heartbeat', 'INSERT'), "
        "has_table_privilege(%s, 'public.rosetta_heartbeat', 'UPDATE'), "
        "EXISTS (SELECT 1 FROM pg_publication_tables WHERE tablename = 'rosetta_heartbeat')",
        WRITER,
        WRITER,
        WRITER,
    )[0]


def start_and_beat(cluster: Cluster, publication: str) -> None:
    """Do as START does, as the writer: make sure of the heartbeat table, then run the
    engine's own heartbeat query twice (an insert, then an update of its row)."""
    with session(as_writer(cluster), 5) as s:
        add_heartbeat_table(s, publication)
        add_heartbeat_table(s, publication)  # a second START finds it all done
        spec = PipelineSpec(0, "p", as_writer(cluster), publication, "cdc_slot", heartbeat=True)
        beat = debezium_properties(spec, {}, Batching(1, 1, 1))["heartbeat.action.query"]
        s.run(beat)
        s.run(beat)
    assert psql(cluster, "SELECT slot_name FROM public.rosetta_heartbeat") == [("cdc_slot",)]


@pytest.mark.parametrize(
    ("setup", "lacking", "fix"),
    [
        (
            ['CREATE PUBLICATION "Cdc Pub" FOR TABLE orders'],
            "public.rosetta_heartbeat does not exist and Beat Writer may not create tables in "
            "schema public; Beat Writer may not add it to publication Cdc Pub (it does not own "
            "the publication)",
            HEARTBEAT_DDL_SHOWN + "\n"
            'ALTER PUBLICATION "Cdc Pub" ADD TABLE public.rosetta_heartbeat;\n'
            'GRANT SELECT, INSERT, UPDATE ON public.rosetta_heartbeat TO "Beat Writer";',
        ),
        (
            [
                'CREATE PUBLICATION "Cdc Pub" FOR ALL TABLES',
                HEARTBEAT_DDL_SHOWN,
                'GRANT INSERT, UPDATE ON public.rosetta_heartbeat TO "Beat Writer"',
            ],
            "Beat Writer may not write to it",
            'GRANT SELECT, INSERT, UPDATE ON public.rosetta_heartbeat TO "Beat Writer";',
        ),
        (
            [
                f'GRANT CREATE ON DATABASE shop TO "{WRITER}"',
                'CREATE PUBLICATION "Cdc Pub" FOR TABLE orders',
                f'ALTER PUBLICATION "Cdc Pub" OWNER TO "{WRITER}"',
                HEARTBEAT_DDL_SHOWN,
                'GRANT SELECT, INSERT, UPDATE ON public.rosetta_heartbeat TO "Beat Writer"',
            ],
            "Beat Writer may not add it to publication Cdc Pub (it does not own the table)",
            'ALTER PUBLICATION "Cdc Pub" ADD TABLE public.rosetta_heartbeat;',
        ),
    ],
    ids=["nothing", "not-writable", "not-published"],
)
def test_heartbeat_the_role_may_not_set_up_fails_with_the_sql_that_makes_it_pass(
    api, shop, writer, setup, lacking, fix
):
    """A role that may not create, publish or write to the heartbeat table (psql says which):
    `heartbeat` fails naming what is lacking, with exactly the SQL needed, quoted as
    quote_ident() quotes; run by a superuser, it makes the check pass, and START's part and
    the engine's heartbeat query then work as that role."""
    for statement in setup:
        psql(shop, statement)
    source_id = add(
        api, shop, pg_username=writer, pg_password=WRITER_PASSWORD, publication_name="Cdc Pub"
    )
    result = check(api, source_id)
    heartbeat = by_id(result)["heartbeat"]
    assert heartbeat["status"] == "fail" and "heartbeat" in failing(result)
    assert heartbeat["observed"] == (
        "The engine's heartbeat (which moves the slot while the published tables are idle) "
        f"cannot run: {lacking}."
    )
    assert heartbeat["fix"] == FIX_HEAD + fix
    assert quote_ident(shop, writer) == '"Beat Writer"'

    apply_fix(shop, heartbeat["fix"])
    assert heartbeat_privileges(shop) == (True, True, True, True)
    again = by_id(check(api, source_id))["heartbeat"]
    assert again["status"] == "pass", again
    assert again["observed"] == (
        "public.rosetta_heartbeat is in publication Cdc Pub and Beat Writer may write to it."
    )
    start_and_beat(shop, "Cdc Pub")


@pytest.mark.parametrize("all_tables", [False, True], ids=["owned-publication", "all-tables"])
def test_heartbeat_the_role_may_create_passes_and_start_creates_it(api, shop, writer, all_tables):
    """A role with CREATE on schema public and a publication it owns (or one FOR ALL TABLES,
    which lists every table): `heartbeat` passes saying START creates the table, which the
    check itself does not (psql); START's part, as that role, creates and publishes it, and
    the check then finds it there."""
    psql(shop, f'GRANT CREATE ON SCHEMA public TO "{writer}"')
    if all_tables:
        psql(shop, 'CREATE PUBLICATION "Cdc Pub" FOR ALL TABLES')
        how = "publication Cdc Pub is FOR ALL TABLES, so it lists it at once"
    else:
        psql(shop, f'GRANT CREATE ON DATABASE shop TO "{writer}"')
        psql(shop, 'CREATE PUBLICATION "Cdc Pub" FOR TABLE orders')
        psql(shop, f'ALTER PUBLICATION "Cdc Pub" OWNER TO "{writer}"')
        how = "adds it to publication Cdc Pub"
    source_id = add(
        api, shop, pg_username=writer, pg_password=WRITER_PASSWORD, publication_name="Cdc Pub"
    )
    heartbeat = by_id(check(api, source_id))["heartbeat"]
    assert heartbeat == {
        "id": "heartbeat",
        "status": "pass",
        "title": "The engine's heartbeat table is published and writable",
        "observed": "public.rosetta_heartbeat does not exist yet: START creates it (Beat Writer "
        f"may create tables in schema public) and {how}.",
        "fix": None,
    }
    assert psql(shop, "SELECT to_regclass('public.rosetta_heartbeat') IS NULL") == [(True,)]

    start_and_beat(shop, "Cdc Pub")
    assert psql(
        shop, "SELECT tableowner::text FROM pg_tables WHERE tablename = 'rosetta_heartbeat'"
    ) == [(writer,)]
    assert heartbeat_privileges(shop) == (True, True, True, True)
    again = by_id(check(api, source_id))["heartbeat"]
    assert again["status"] == "pass"
    assert again["observed"].startswith("public.rosetta_heartbeat is in publication Cdc Pub")


def test_slot_in_another_database_fails(api, shop):
    """The source's slot exists but psql shows it in database other: `slot` fails saying so."""
    publish(shop)
    psql(
        shop, "SELECT pg_create_logical_replication_slot('cdc_slot', 'pgoutput')", database="other"
    )
    assert slots(shop) == [("cdc_slot", "logical", "pgoutput", "other", False)]
    source_id = add(api, shop)
    result = check(api, source_id)
    slot = by_id(result)["slot"]
    assert slot["status"] == "fail"
    assert slot["observed"] == "Slot cdc_slot belongs to database other, not shop."
    assert "SELECT pg_drop_replication_slot('cdc_slot');" in slot["fix"]
    assert statuses(result)["slot_wal_status"] == "skip"
    # The slot exists, so it needs no free place of its own.
    assert statuses(result)["replication_slots_free"] == "pass"
    assert failing(result) == ["slot"]


def test_slot_of_the_wrong_kind_offers_no_create_button(app, api, browser, shop):
    """A slot of that name in another database: Create slot could only fail, so the page
    offers the drop-and-create fix, not the button."""
    psql(
        shop, "SELECT pg_create_logical_replication_slot('cdc_slot', 'pgoutput')", database="other"
    )
    source_id = add(api, shop)
    page = browser.get(f"/sources/{source_id}").get_data(as_text=True)
    assert 'class="check check-fail" id="check-slot"' in page
    assert 'id="create-slot"' not in page


def test_lost_slot_fails(api, shop):
    """max_slot_wal_keep_size 1MB and WAL written past it until psql shows wal_status lost:
    slot_wal_status fails with the drop-and-recreate fix."""
    publish(shop)
    psql(shop, "SELECT pg_create_logical_replication_slot('cdc_slot', 'pgoutput')")
    source_id = add(api, shop)
    with keep_size(shop, "1MB"):
        assert lose_slot(shop, "cdc_slot", timeout=30), "the slot was never lost"
        result = check(api, source_id)
    status = by_id(result)["slot_wal_status"]
    assert status["status"] == "fail"
    assert status["observed"].startswith("Slot cdc_slot is lost:")
    assert status["fix"] == (
        "SELECT pg_drop_replication_slot('cdc_slot');\n"
        "SELECT pg_create_logical_replication_slot('cdc_slot', 'pgoutput');\n"
        "-- or press Create slot on the source's page.\n"
        "-- then REFRESH the pipeline: its tables must be copied anew."
    )
    assert by_id(result)["max_slot_wal_keep_size"]["observed"] == "max_slot_wal_keep_size is 1MB."
    assert failing(result) == ["slot_wal_status"]
    apply_fix(shop, status["fix"])
    assert psql(
        shop, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'cdc_slot'"
    ) == [("reserved",)]
    assert statuses(check(api, source_id))["slot_wal_status"] == "pass"


def test_unlimited_keep_size_warns_with_twice_the_critical_threshold(api, shop):
    """max_slot_wal_keep_size -1 (psql): a warning whose suggested value psql reads as twice
    the source's critical threshold; pasted into psql, it passes."""
    assert psql(shop, "SHOW max_slot_wal_keep_size") == [("-1",)]
    overrides = {"retained_warning_bytes": 1 * GIB, "retained_critical_bytes": 3 * GIB}
    source_id = add(api, shop, alert_overrides=overrides)
    keep = by_id(check(api, source_id))["max_slot_wal_keep_size"]
    assert keep["status"] == "warn"
    first_line = keep["fix"].splitlines()[0]
    prefix = "ALTER SYSTEM SET max_slot_wal_keep_size = '"
    assert first_line.startswith(prefix) and first_line.endswith("';")
    suggested = first_line.removeprefix(prefix).removesuffix("';")
    assert psql(shop, "SELECT pg_size_bytes(%s)", suggested) == [(2 * 3 * GIB,)]
    try:
        apply_fix(shop, keep["fix"])
        assert wait_for(lambda: keep_size_now(shop) == "6144 MB")
        assert statuses(check(api, source_id))["max_slot_wal_keep_size"] == "pass"
    finally:
        psql(shop, "ALTER SYSTEM RESET max_slot_wal_keep_size")
        psql(shop, "SELECT pg_reload_conf()")
        wait_for(lambda: keep_size_now(shop) is None)


def test_ready_source_passes_every_check_and_is_stored(api, shop):
    """Publication, pgoutput slot in its database, a role with REPLICATION and pg_monitor, a
    bounded max_slot_wal_keep_size: every check passes, and GET shows the stored result."""
    publish(shop)
    psql(shop, "SELECT pg_create_logical_replication_slot('cdc_slot', 'pgoutput')")
    source_id = add(api, shop)
    with keep_size(shop, "1GB"):
        result = check(api, source_id)
    assert result["ready"] is True
    assert set(statuses(result).values()) == {"pass"}, statuses(result)
    observed = by_id(result)
    assert observed["connection"]["observed"] == (
        f"Connected to 127.0.0.1:{shop.port}/shop as cdc."
    )
    assert observed["slot"]["observed"] == (
        "Logical slot cdc_slot (pgoutput) in shop; no consumer is connected."
    )
    assert all(item["fix"] is None for item in result["checks"])
    assert api.get(f"/api/v1/sources/{source_id}").get_json()["readiness"] == result


# Sources that cannot be reached: the same shape, the reason, within the timeout


@pytest.mark.parametrize(
    ("case", "kind"),
    [
        ("wrong-password", "Authentication"),
        ("missing-database", "Database missing"),
        ("refused", "Refused"),
        ("dns", "DNS"),
        ("timeout", "Timeout"),
    ],
)
def test_connection_failures_say_which(api, shop, short_timeout, hanging_server, case, kind):
    """Each way of not connecting is a 200 with `connection` failing with its kind, never the
    password, the other checks skipped, all within the timeout."""
    wrong = "Wrong-Secret-42!"
    fields: dict[str, Any] = {
        "wrong-password": {"pg_password": wrong},
        "missing-database": {"pg_database": "No Such DB"},
        "refused": {"pg_port": free_port()},
        "dns": {"pg_host": "nonexistent.invalid"},
        "timeout": {"pg_port": hanging_server.port},
    }[case]
    source_id = add(api, shop, **fields)
    started = time.monotonic()
    response = api.post(f"/api/v1/sources/{source_id}/check")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert wrong not in text and CDC_PASSWORD not in text
    result = response.get_json()
    connection = by_id(result)["connection"]
    assert connection["status"] == "fail"
    assert connection["observed"].startswith(f"{kind}: "), connection["observed"]
    assert result["ready"] is False and failing(result) == ["connection"]
    assert set(statuses(result).values()) == {"fail", "skip"}
    assert elapsed < short_timeout + SLACK_S
    if case == "missing-database":
        assert psql(shop, "SELECT 1 FROM pg_database WHERE datname = 'No Such DB'") == []
        assert connection["fix"] == (
            'Correct the database name, or create it: CREATE DATABASE "No Such DB";'
        )


# Publications: any identifier, created, listed and dropped, every table surviving


@pytest.mark.parametrize("name", ['a"b', "x; DROP TABLE t; --", "ünïcode"])
def test_publication_named_anything_is_created_listed_and_dropped(api, shop, name):
    """A publication named with quotes, a semicolon or unicode: created for all tables and for
    a list, shown by psql and by the check, dropped; every table (and t's rows) survive."""
    before = tables(shop)
    source_id = add(api, shop, publication_name=name, pg_username="postgres", pg_password="x")
    path = f"/api/v1/sources/{source_id}/publication"

    created = api.post(path, json={"all_tables": True})
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["publication"] == name
    assert publications(shop) == [(name, True)]
    result = by_id(created.get_json()["readiness"])
    assert result["publication"]["observed"] == f"Publication {name} exists."
    count = len(published_tables(shop, name))
    assert result["publication_tables"]["observed"] == (
        f"All tables ({count} now: public.orders, public.t)."
    )
    dropped = api.delete(path, query_string={"confirm": name})
    assert dropped.status_code == 200 and dropped.get_json()["dropped"] == name
    assert publications(shop) == []

    created = api.post(path, json={"tables": ["public.orders", "public.t"]})
    assert created.status_code == 201, created.get_json()
    assert publications(shop) == [(name, False)]
    assert published_tables(shop, name) == [("public", "orders"), ("public", "t")]
    listed = by_id(check(api, source_id))["publication_tables"]
    assert listed["observed"] == "2 table(s): public.orders, public.t."
    assert api.delete(path, query_string={"confirm": name}).status_code == 200
    assert publications(shop) == []

    assert tables(shop) == before
    assert psql(shop, "SELECT id FROM t ORDER BY id") == [(1,), (2,)]


def test_publication_of_an_unknown_table_is_refused_and_nothing_created(api, shop):
    """A table that does not exist is a 422 naming it; psql shows no publication."""
    source_id = add(api, shop, pg_username="postgres", pg_password="x")
    response = api.post(
        f"/api/v1/sources/{source_id}/publication",
        json={"tables": ["public.orders", "public.ghost"]},
    )
    body = error(response, 422, "ValidationError")
    message = (
        "No table public.ghost in the source's database "
        "(name each as schema.table, e.g. public.orders)."
    )
    assert body["message"] == message
    assert body["details"]["fields"] == {"tables": [message]}
    assert publications(shop) == []


def test_publication_drop_needs_its_name(api, shop):
    """Dropping the publication without its name typed, or with another, is a 422 and psql
    still lists it."""
    publish(shop)
    source_id = add(api, shop, pg_username="postgres", pg_password="x")
    path = f"/api/v1/sources/{source_id}/publication"
    for query in ({}, {"confirm": "cdc_pu"}):
        body = error(api.delete(path, query_string=query), 422, "ValidationError")
        assert "confirm" in body["details"]["fields"]
    assert publications(shop) == [("cdc_pub", False)]


# Slots: created, and dropped safely


def test_slot_created_through_the_api_is_pgoutput_in_the_source_database(api, shop):
    """POST slot makes a pgoutput slot in the source's database (psql) and records its name;
    creating it again is the server's refusal, in the envelope."""
    source_id = add(api, shop, slot_name=None)
    response = api.post(f"/api/v1/sources/{source_id}/slot", json={"slot_name": "made_here"})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["slot_name"] == "made_here"
    assert slots(shop) == [("made_here", "logical", "pgoutput", "shop", False)]
    assert api.get(f"/api/v1/sources/{source_id}").get_json()["slot_name"] == "made_here"
    assert by_id(response.get_json()["readiness"])["slot"]["status"] == "pass"

    again = api.post(f"/api/v1/sources/{source_id}/slot")
    body = error(again, 409, "SourceRefusedError")
    assert body["details"]["sqlstate"] == "42710"
    assert "already exists" in body["message"]
    assert [row[0] for row in slots(shop)] == ["made_here"]


def test_slot_without_a_name_is_named_after_its_source(api, shop):
    """A source without a slot name gets rosetta_<its name>, as psql lists it."""
    source_id = add(api, shop, name="shop-east", slot_name=None)
    response = api.post(f"/api/v1/sources/{source_id}/slot")
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["slot_name"] == "rosetta_shop_east"
    assert slots(shop) == [("rosetta_shop_east", "logical", "pgoutput", "shop", False)]


@pytest.mark.parametrize(
    ("slot_name", "message"),
    [
        ("Bad-Name", "A slot name uses only lowercase letters, digits and '_'."),
        ("a" * 64, "A slot name has at most 63 characters."),
    ],
)
def test_invalid_slot_name_is_refused(api, shop, slot_name, message):
    """A name PostgreSQL would refuse is a 422 saying why; psql lists no slot."""
    source_id = add(api, shop)
    response = api.post(f"/api/v1/sources/{source_id}/slot", json={"slot_name": slot_name})
    body = error(response, 422, "ValidationError")
    assert body["details"]["fields"] == {"slot_name": [message]}
    assert slots(shop) == []
    assert api.get(f"/api/v1/sources/{source_id}").get_json()["slot_name"] == "cdc_slot"


def test_dropping_a_slot_frees_the_wal_it_retained(api, shop):
    """freed_bytes is what psql measured the slot retaining, between just before and just after
    the drop; psql no longer lists the slot."""
    psql(shop, "SELECT pg_create_logical_replication_slot('retainer', 'pgoutput')")
    emit_wal(shop, 3)
    restart_lsn = psql(
        shop, "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'retainer'"
    )[0][0]
    before = retained(shop, "retainer")
    assert before >= 3 * MB
    source_id = add(api, shop)
    response = api.delete(
        f"/api/v1/sources/{source_id}/slots/retainer", query_string={"confirm": "retainer"}
    )
    after = psql(shop, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint", restart_lsn)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["dropped"] == "retainer"
    assert before <= body["retained_bytes"] <= after[0][0]
    assert body["freed_bytes"] == body["retained_bytes"]  # the server's only slot
    assert slots(shop) == []
    # The sample taken at once after the drop sees no slot left in shop, as psql does.
    assert body["sample"]["ok"] is True and body["sample"]["sample"]["retained_bytes"] is None


def test_slot_drop_needs_its_name_typed(api, shop):
    """A missing or wrong confirm is a 422 on `confirm`, and psql still lists the slot."""
    psql(shop, "SELECT pg_create_logical_replication_slot('keeper', 'pgoutput')")
    source_id = add(api, shop)
    path = f"/api/v1/sources/{source_id}/slots/keeper"
    for query in ({}, {"confirm": "keepe"}, {"confirm": "KEEPER"}):
        body = error(api.delete(path, query_string=query), 422, "ValidationError")
        assert body["details"]["fields"] == {
            "confirm": ["Type the name, keeper, to confirm; nothing was dropped."]
        }
    assert [row[0] for row in slots(shop)] == ["keeper"]


def test_active_slot_is_refused_naming_its_consumer(api, shop):
    """A slot pg_recvlogical streams from: 409 SlotActiveError with the pid and application
    name psql shows, and the slot survives, still active."""
    psql(shop, "CREATE PUBLICATION pub FOR TABLE orders")
    psql(shop, "SELECT pg_create_logical_replication_slot('busy', 'pgoutput')")
    consumer = recvlogical(shop, "busy", "pub")
    try:
        [(pid, application)] = psql(
            shop,
            "SELECT s.active_pid, a.application_name FROM pg_replication_slots s "
            "JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE s.slot_name = 'busy'",
        )
        source_id = add(api, shop)
        response = api.delete(
            f"/api/v1/sources/{source_id}/slots/busy", query_string={"confirm": "busy"}
        )
        body = error(response, 409, "SlotActiveError")
        assert body["details"]["pid"] == pid
        assert body["details"]["application_name"] == application == "pg_recvlogical"
        assert f"pid {pid}" in body["message"]
        assert slots(shop) == [("busy", "logical", "pgoutput", "shop", True)]
    finally:
        consumer.terminate()
        consumer.wait(5)


def test_drop_the_server_refuses_changes_nothing(api, shop, mixed_role):
    """A role without REPLICATION may not drop a slot: 409 SourceRefusedError with the
    server's SQLSTATE and words; psql still lists the slot."""
    psql(shop, "SELECT pg_create_logical_replication_slot('guarded', 'pgoutput')")
    source_id = add(api, shop, pg_username=MIXED, pg_password=MIXED_PASSWORD)
    stored = api.get(f"/api/v1/sources/{source_id}").get_json()
    response = api.delete(
        f"/api/v1/sources/{source_id}/slots/guarded", query_string={"confirm": "guarded"}
    )
    body = error(response, 409, "SourceRefusedError")
    assert body["details"]["sqlstate"] == "42501"
    assert "superuser or replication role" in body["message"]
    assert [row[0] for row in slots(shop)] == ["guarded"]
    assert api.get(f"/api/v1/sources/{source_id}").get_json() == stored


def test_drop_on_an_unreachable_source_is_a_502_within_the_timeout(
    api, browser, shop, short_timeout, hanging_server: HangingServer
):
    """A server that never answers: the drop answers 502 in the envelope, within the timeout;
    the page's drop too."""
    source_id = add(api, shop, pg_port=hanging_server.port)
    started = time.monotonic()
    response = api.delete(
        f"/api/v1/sources/{source_id}/slots/cdc_slot", query_string={"confirm": "cdc_slot"}
    )
    elapsed = time.monotonic() - started
    body = error(response, 502, "SourceUnreachableError")
    assert "timed out" in body["message"]
    assert elapsed < short_timeout + SLACK_S

    # The page's drop waits once too, and says why beside the form it keeps.
    started = time.monotonic()
    page = browser.post(f"/sources/{source_id}/slots/cdc_slot/drop", {"confirm": "cdc_slot"})
    elapsed = time.monotonic() - started
    assert page.status_code == 502 and elapsed < short_timeout + SLACK_S
    assert "timed out after 1 s" in page.get_data(as_text=True)


# Pipelines follow the truth


def _pipeline(api: Any, source_id: int, destination_body: dict[str, Any] = DESTINATION) -> int:
    """A paused pipeline from the source to a new destination (one that fails its checks
    unless `destination_body` is a ready one); return its id."""
    destination = api.post("/api/v1/destinations", json=destination_body)
    assert destination.status_code == 201, destination.get_json()
    pipeline = api.post(
        "/api/v1/pipelines",
        json={
            "name": "shop-to-sf",
            "source_id": source_id,
            "destination_id": destination.get_json()["id"],
            "status": "PAUSE",
        },
    )
    assert pipeline.status_code == 201, pipeline.get_json()
    return int(pipeline.get_json()["id"])


def test_pipeline_starts_only_once_its_source_is_ready(api, shop, ready_destination):
    """Its slot missing (psql): start and refresh are 409 SourceNotReadyError listing `slot`,
    pause is allowed; once the slot is created through the API, start works."""
    publish(shop)
    source_id = add(api, shop)
    pipeline_id = _pipeline(api, source_id, ready_destination)
    assert slots(shop) == []
    for action in ("start", "refresh"):
        body = error(
            api.post(f"/api/v1/pipelines/{pipeline_id}/{action}"), 409, "SourceNotReadyError"
        )
        assert body["details"]["failing"] == ["slot"]
        assert body["details"]["source_id"] == source_id
    paused = api.post(f"/api/v1/pipelines/{pipeline_id}/pause")
    assert paused.status_code == 200 and paused.get_json()["status"] == "PAUSE"

    assert api.post(f"/api/v1/sources/{source_id}/slot").status_code == 201
    assert [row[0] for row in slots(shop)] == ["cdc_slot"]
    started = api.post(f"/api/v1/pipelines/{pipeline_id}/start")
    assert started.status_code == 200 and started.get_json()["status"] == "START"


def test_start_checks_a_stale_result_again(api, shop, app):
    """A ready result older than one monitor interval is not trusted: the slot dropped since
    (psql), start is refused; pause still works."""
    publish(shop)
    psql(shop, "SELECT pg_create_logical_replication_slot('cdc_slot', 'pgoutput')")
    source_id = add(api, shop)
    assert check(api, source_id)["ready"] is True
    pipeline_id = _pipeline(api, source_id)
    psql(shop, "SELECT pg_drop_replication_slot('cdc_slot')")
    later = utcnow() + timedelta(seconds=app.config["WAL_MONITOR_INTERVAL_SECONDS"] + 1)
    with time_machine.travel(later, tick=True):
        body = error(api.post(f"/api/v1/pipelines/{pipeline_id}/start"), 409, "SourceNotReadyError")
        assert body["details"]["failing"] == ["slot"]
        assert api.post(f"/api/v1/pipelines/{pipeline_id}/pause").status_code == 200


def test_start_checks_a_failing_result_again_so_a_fix_by_hand_counts_at_once(
    api, shop, ready_destination
):
    """Start refused while the slot is missing; the operator creates it with psql, not
    through Rosetta: the very next start works, within the monitor interval (a failing result
    is never reused)."""
    publish(shop)
    source_id = add(api, shop)
    pipeline_id = _pipeline(api, source_id, ready_destination)
    body = error(api.post(f"/api/v1/pipelines/{pipeline_id}/start"), 409, "SourceNotReadyError")
    assert body["details"]["failing"] == ["slot"]
    psql(shop, "SELECT pg_create_logical_replication_slot('cdc_slot', 'pgoutput')")
    started = api.post(f"/api/v1/pipelines/{pipeline_id}/start")
    assert started.status_code == 200 and started.get_json()["status"] == "START"
    readiness = api.get(f"/api/v1/sources/{source_id}").get_json()["readiness"]
    assert readiness["ready"] is True


def test_patching_status_to_start_is_refused_too(api, shop):
    """PATCH {"status": "START"} is a start like any other: refused while the source fails."""
    publish(shop)
    source_id = add(api, shop)
    pipeline_id = _pipeline(api, source_id)
    response = api.patch(f"/api/v1/pipelines/{pipeline_id}", json={"status": "START"})
    body = error(response, 409, "SourceNotReadyError")
    assert body["details"]["failing"] == ["slot"]
    assert api.get(f"/api/v1/pipelines/{pipeline_id}").get_json()["status"] == "PAUSE"


# The command line


def test_cli_check_exits_1_on_a_failing_source_and_0_on_a_ready_one(api, shop, runner):
    """`flask rosetta check --source NAME` prints every check id; exit 1 while the publication
    is missing (its fix printed), 0 once it is ready."""
    psql(shop, "SELECT pg_create_logical_replication_slot('cdc_slot', 'pgoutput')")
    broken_id = add(api, shop, name="broken", publication_name="missing_pub")
    add(api, shop, name="ready-one")
    publish(shop)

    broken = runner.invoke(args=["rosetta", "check", "--source", "broken"])
    assert broken.exit_code == 1, broken.output
    lines = broken.output.splitlines()
    assert lines[0].split() == ["SOURCE", "CHECK", "STATUS", "OBSERVED"]
    rows = [line.split()[1:3] for line in lines[1 : 1 + len(TITLES)]]
    assert [check_id for check_id, _ in rows] == list(TITLES)
    assert ["publication", "FAIL"] in rows
    stored = api.get(f"/api/v1/sources/{broken_id}").get_json()["readiness"]
    assert rows == [[item["id"], item["status"].upper()] for item in stored["checks"]]
    assert "\n  CREATE PUBLICATION missing_pub FOR TABLE public.orders, public.t;\n" in (
        broken.output
    )
    assert "1 checked, 0 ready; not ready: broken" in broken.output

    ready = runner.invoke(args=["rosetta", "check", "--source", "ready-one"])
    assert ready.exit_code == 0, ready.output
    assert "1 checked, 1 ready" in ready.output
    assert "FAIL" not in ready.output


# The browser pages


def test_check_button_answers_htmx_with_the_readiness_section(app, browser, shop):
    """Check pressed through htmx: the readiness section alone, each check with its status,
    the missing publication's fix and the buttons to create what is missing."""
    source_id = add_source(app, "shop", shop.port, user="cdc", password=CDC_PASSWORD)
    response = browser.post(f"/sources/{source_id}/check", headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="readiness"') and "<html" not in html
    assert 'class="check check-fail" id="check-publication" data-status="fail"' in html
    assert 'class="check check-fail" id="check-slot" data-status="fail"' in html
    assert 'class="check check-pass" id="check-wal_level" data-status="pass"' in html
    assert "CREATE PUBLICATION rosetta_pub FOR TABLE public.orders, public.t;" in html
    assert 'id="create-publication"' in html and 'id="create-slot"' in html
    for check_id in ("connection", "replication_role", "replica_identity", "slot_wal_status"):
        assert f'id="check-{check_id}"' in html


def test_source_page_shows_the_stored_checklist(app, browser, shop):
    """After a check, the source's page shows the stored checklist with each check's status."""
    source_id = add_source(app, "shop", shop.port, user="cdc", password=CDC_PASSWORD)
    assert browser.post(f"/sources/{source_id}/check").status_code == 303
    response = browser.get(f"/sources/{source_id}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'id="readiness-checked"' in html
    assert 'class="check check-fail" id="check-slot" data-status="fail"' in html


def test_drop_slot_page_shows_the_retained_wal_and_refuses_a_wrong_name(app, browser, shop):
    """The typed confirmation shows what psql says the slot retains; a wrong name comes back
    beside the field with the slot intact (psql); the right name drops it."""
    psql(shop, "SELECT pg_create_logical_replication_slot('retainer', 'pgoutput')")
    emit_wal(shop, 2)
    source_id = add_source(app, "shop", shop.port, user="cdc", password=CDC_PASSWORD)
    pretty = (
        "SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) "
        "FROM pg_replication_slots WHERE slot_name = 'retainer'"
    )
    path = f"/sources/{source_id}/slots/retainer/drop"
    before = psql(shop, pretty)[0][0]
    page = browser.get(path).get_data(as_text=True)
    after = psql(shop, pretty)[0][0]
    shown = {size for size in (before, after) if f"<strong>{size}</strong>" in page}
    assert shown, (before, after, page)
    assert f"dropping it frees about {shown.pop()}" in page
    assert "none connected" in page

    wrong = browser.post(path, {"confirm": "retaine"})
    html = wrong.get_data(as_text=True)
    assert wrong.status_code == 422
    assert (
        '<span class="error" id="confirm-error">Type the name, retainer, to confirm; '
        "nothing was dropped.</span>"
    ) in html
    assert 'value="retaine"' in html
    assert [row[0] for row in slots(shop)] == ["retainer"]

    dropped = browser.post(path, {"confirm": "retainer"})
    assert dropped.status_code == 303
    assert slots(shop) == []
    flash = browser.get(dropped.headers["Location"]).get_data(as_text=True)
    assert "Dropped slot retainer: it retained" in flash


def test_publication_page_lists_the_tables_and_creates_the_ticked_ones(app, browser, shop):
    """The form lists the database's tables (psql); "only some" with none ticked comes back
    with the error beside the list and nothing created; ticking one creates the publication
    for it alone; the drop page then takes its typed name."""
    # FOR TABLE needs the tables' owner (psql: "must be owner of table orders").
    source_id = add_source(app, "shop", shop.port, user="postgres", publication_name="cdc_pub")
    path = f"/sources/{source_id}/publication/new"
    form = browser.get(path).get_data(as_text=True)
    for schema, table in tables(shop):
        assert f'value="{schema}.{table}"' in form

    empty = browser.post(path, {"scope": "some"})
    assert empty.status_code == 200
    assert "Tick at least one table, or choose all tables." in empty.get_data(as_text=True)
    assert publications(shop) == []

    created = browser.post(path, {"scope": "some", "tables": ["public.orders"]})
    assert created.status_code == 303
    assert published_tables(shop, "cdc_pub") == [("public", "orders")]
    page = browser.get(created.headers["Location"]).get_data(as_text=True)
    assert "Created publication cdc_pub." in page and 'id="drop-publication"' in page

    drop = f"/sources/{source_id}/publication/drop"
    wrong = browser.post(drop, {"confirm": "cdc"})
    assert wrong.status_code == 422
    assert "Type the name, cdc_pub, to confirm; nothing was dropped." in wrong.get_data(
        as_text=True
    )
    assert [row[0] for row in publications(shop)] == ["cdc_pub"]
    assert browser.post(drop, {"confirm": "cdc_pub"}).status_code == 303
    assert publications(shop) == []
    assert [schema for schema, _ in tables(shop)]  # every table is still there


def test_create_slot_button_makes_the_sources_slot(app, api, browser, shop):
    """A source naming no slot: Create slot makes rosetta_<name> (pgoutput, in its database, as
    psql shows), records it on the source, and the checklist then passes `slot`."""
    source_id = add(api, shop, name="shop-east", slot_name=None)
    page = browser.get(f"/sources/{source_id}").get_data(as_text=True)
    assert 'id="create-slot"' in page and "Create slot rosetta_shop_east" in page
    created = browser.post(f"/sources/{source_id}/slot")
    assert created.status_code == 303
    assert [row[:3] for row in slots(shop)] == [("rosetta_shop_east", "logical", "pgoutput")]
    assert api.get(f"/api/v1/sources/{source_id}").get_json()["slot_name"] == "rosetta_shop_east"
    html = browser.get(created.headers["Location"]).get_data(as_text=True)
    assert "Created slot rosetta_shop_east." in html
    assert 'class="check check-pass" id="check-slot" data-status="pass"' in html


def test_pipeline_page_and_list_say_what_its_slot_does(app, api, browser, shop, ready_destination):
    """START with no consumer: the list says for how long and the page says none connected;
    once pg_recvlogical reads the slot, the page says connected since the first sample that
    saw it so; PAUSE with the consumer still there is said too. The readiness badges show
    in the sources list and on the dashboard."""
    publish(shop)
    psql(shop, "SELECT pg_create_logical_replication_slot('cdc_slot', 'pgoutput')")
    source_id = add(api, shop)
    pipeline_id = _pipeline(api, source_id, ready_destination)
    assert api.post(f"/api/v1/pipelines/{pipeline_id}/start").status_code == 200
    assert api.post(f"/api/v1/sources/{source_id}/sample").get_json()["ok"]
    listing = browser.get("/pipelines/").get_data(as_text=True)
    assert "START requested, no consumer for" in listing
    page = browser.get(f"/pipelines/{pipeline_id}").get_data(as_text=True)
    assert '<dd id="slot-consumer"><span class="warn-text">none connected</span> since' in page
    # Ready, warning that max_slot_wal_keep_size is -1: the list says so, the dashboard that
    # no check fails.
    assert 'class="badge readiness-badge warn" title="Warnings: max_slot_wal_keep_size">ready<' in (
        browser.get("/sources/").get_data(as_text=True)
    )
    assert 'class="badge readiness-badge monitor-ok" title="No check fails">ready<' in (
        browser.get("/").get_data(as_text=True)
    )

    consumer = recvlogical(shop, "cdc_slot", "cdc_pub")
    try:
        first = api.post(f"/api/v1/sources/{source_id}/sample").get_json()
        assert first["ok"]
        assert api.post(f"/api/v1/sources/{source_id}/sample").get_json()["ok"]
        page = browser.get(f"/pipelines/{pipeline_id}").get_data(as_text=True)
        since = first["monitor"]["last_sampled_at"].replace("T", " ")[:19]
        assert f'<dd id="slot-consumer">connected since <time datetime="{since} UTC"' in page
        assert "no consumer" not in browser.get("/pipelines/").get_data(as_text=True)
        assert api.post(f"/api/v1/pipelines/{pipeline_id}/pause").status_code == 200
        listing = browser.get("/pipelines/").get_data(as_text=True)
        assert "PAUSE requested, a consumer is still connected" in listing
    finally:
        consumer.terminate()
        consumer.wait(timeout=10)


def test_check_with_an_expired_form_under_htmx_reloads_the_page(app, browser, shop):
    """An expired token: htmx is told to load the source's page (where the message waits)
    rather than swap a whole page into the readiness section; nothing is checked."""
    source_id = add_source(app, "shop", shop.port, user="cdc", password=CDC_PASSWORD)
    response = browser.client.post(
        f"/sources/{source_id}/check",
        data={"csrf_token": "expired"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 204
    assert response.headers["HX-Redirect"] == f"/sources/{source_id}"
    assert "The form expired before you sent it" in browser.get(f"/sources/{source_id}").get_data(
        as_text=True
    )
    with app.app_context():
        assert db.session.get(Source, source_id).readiness is None


def test_senders_in_use_count_for_a_role_without_pg_monitor(api):
    """Every WAL sender taken by another role's consumer (psql: pg_stat_replication): a role
    without pg_monitor, which cannot see other roles' backend types, is still warned."""
    cluster = Cluster("rosetta-senders", settings={"max_wal_senders": 1}).start()
    try:
        cluster.create_database("shop")
        psql(cluster, "CREATE TABLE orders (id int PRIMARY KEY)")
        psql(cluster, "CREATE PUBLICATION cdc_pub FOR ALL TABLES")
        psql(cluster, "SELECT pg_create_logical_replication_slot('busy', 'pgoutput')")
        psql(cluster, f"CREATE ROLE plain LOGIN REPLICATION PASSWORD '{CDC_PASSWORD}'")
        consumer = recvlogical(cluster, "busy", "cdc_pub")
        try:
            assert psql(cluster, "SELECT count(*) FROM pg_stat_replication") == [(1,)]
            source_id = add(api, cluster, pg_username="plain", slot_name="busy")
            senders = by_id(check(api, source_id))["wal_senders_free"]
            assert senders["status"] == "warn"
            assert senders["observed"].startswith("1 of max_wal_senders = 1 in use.")
        finally:
            consumer.terminate()
            consumer.wait(timeout=10)
    finally:
        cluster.stop()


def test_a_slot_waiting_on_an_open_transaction_is_refused_naming_it(api, shop, short_timeout):
    """A new slot waits for every transaction already writing: one held open past the timeout
    gives a 409 naming its pid (psql's), not an unreachable source; no slot is left."""
    source_id = add(api, shop, pg_username="postgres")
    with closing(shop.connect("shop")) as writer, writer.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO orders (note) VALUES ('held open')")
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        started = time.monotonic()
        response = api.post(f"/api/v1/sources/{source_id}/slot")
        assert time.monotonic() - started < short_timeout + SLACK_S
        body = error(response, 409, "SourceRefusedError")
        assert body["details"]["pid"] == pid
        assert f"the oldest, pid {pid}" in body["message"]
        cur.execute("ROLLBACK")
    assert wait_for(lambda: slots(shop) == [], timeout=5)
    assert api.get(f"/api/v1/sources/{source_id}").get_json()["slot_name"] == "cdc_slot"


def test_dropping_a_slot_an_older_one_outlives_frees_nothing(app, api, browser, shop):
    """Two slots, the older one retaining more (psql): dropping the younger reports what it
    retained and that nothing is freed, on the page and in the API."""
    psql(shop, "SELECT pg_create_logical_replication_slot('older', 'pgoutput')")
    emit_wal(shop, 2)
    psql(shop, "SELECT pg_create_logical_replication_slot('younger', 'pgoutput')")
    emit_wal(shop, 1)
    assert retained(shop, "older") > retained(shop, "younger")
    source_id = add(api, shop)
    page = browser.get(f"/sources/{source_id}/slots/younger/drop").get_data(as_text=True)
    assert "dropping it frees nothing: an older slot of the server needs that WAL too" in page
    response = api.delete(
        f"/api/v1/sources/{source_id}/slots/younger", query_string={"confirm": "younger"}
    )
    body = response.get_json()
    assert response.status_code == 200 and body["freed_bytes"] == 0
    assert body["retained_bytes"] >= MB
    assert [row[0] for row in slots(shop)] == ["older"]


def test_a_query_that_times_out_keeps_the_checks_done_before_it(api, shop, short_timeout):
    """pg_publication_rel locked (psql): the checks up to the publication's stand, the
    publication check fails with the timeout, the rest are skipped saying why."""
    publish(shop)
    source_id = add(api, shop)
    with closing(shop.connect("shop")) as locker, locker.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("LOCK TABLE pg_catalog.pg_publication_rel IN ACCESS EXCLUSIVE MODE")
        result = check(api, source_id)
        cur.execute("ROLLBACK")
    found = statuses(result)
    assert [
        found[i] for i in ("connection", "server_version", "wal_level", "replication_role")
    ] == ["pass"] * 4
    publication = by_id(result)["publication"]
    assert publication["status"] == "fail" and "timed out after 1 s" in publication["observed"]
    assert by_id(result)["slot"] == {
        **by_id(result)["slot"],
        "status": "skip",
        "observed": "Not checked: publication failed.",
    }


def test_checks_are_no_edits_and_the_cli_finds_a_name_in_capitals(api, shop, runner):
    """A check leaves updated_at as it was; `--source SHOP` finds source shop."""
    source_id = add(api, shop)
    before = api.get(f"/api/v1/sources/{source_id}").get_json()["updated_at"]
    check(api, source_id)
    assert api.get(f"/api/v1/sources/{source_id}").get_json()["updated_at"] == before
    result = runner.invoke(args=["rosetta", "check", "--source", "SHOP"])
    assert "no source named" not in result.output and "shop" in result.output


# The audit log: each replication object created or dropped, refused or failed, recorded once


AUDIT_KEYS = {
    "id",
    "at",
    "actor",
    "token_name",
    "ip",
    "action",
    "target_type",
    "target_id",
    "target_name",
    "changes",
    "outcome",
    "message",
}


def audit_of(api: Any, source_id: int) -> list[dict[str, Any]]:
    """Every audit record about the source, newest first, as the API pages through them."""
    records: list[dict[str, Any]] = []
    query: dict[str, Any] = {"target_type": "source", "target_id": source_id, "limit": 100}
    while True:
        response = api.get("/api/v1/audit", query_string=query)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        records += body["items"]
        if body["next_cursor"] is None:
            return records
        query["cursor"] = body["next_cursor"]


def audited(api: Any, source_id: int, call: Any) -> tuple[Any, dict[str, Any]]:
    """Make `call` (an API request); assert it added exactly one record about the source, the
    newest, leaving the older ones as they were; return the response and that record."""
    before = audit_of(api, source_id)
    response = call()
    after = audit_of(api, source_id)
    assert len(after) == len(before) + 1, after[: len(after) - len(before)]
    assert after[1:] == before
    record = after[0]
    assert set(record) == AUDIT_KEYS, record
    return response, record


def by_the_tests_token(source_id: int, name: str = "shop") -> dict[str, Any]:
    """What every record the `api` fixture causes about the source says of who and what."""
    return {
        "actor": "script-owner",
        "token_name": "tests",
        "ip": "127.0.0.1",
        "target_type": "source",
        "target_id": source_id,
        "target_name": name,
    }


def test_audit_records_each_publication_and_slot_created_and_dropped(api, shop):
    """Creating a publication of orders and a slot, then dropping both, through the API: each
    call writes exactly one done record about the source, by the token, saying what changed;
    the drop's retained_bytes is the API's, lies between what psql measured the slot retaining
    just before and just after, and the message words both figures as pg_size_pretty does."""
    # FOR TABLE needs the tables' owner.
    source_id = add(api, shop, pg_username="postgres", pg_password="x")
    who = by_the_tests_token(source_id)
    publication = f"/api/v1/sources/{source_id}/publication"

    created, record = audited(
        api, source_id, lambda: api.post(publication, json={"tables": ["public.orders"]})
    )
    assert created.status_code == 201, created.get_json()
    assert published_tables(shop, "cdc_pub") == [("public", "orders")]
    assert record == {
        **record,
        **who,
        "action": "create_publication",
        "outcome": "done",
        "changes": {"publication": [None, "cdc_pub"], "tables": [None, ["public.orders"]]},
    }

    made, record = audited(
        api,
        source_id,
        lambda: api.post(f"/api/v1/sources/{source_id}/slot", json={"slot_name": "audited"}),
    )
    assert made.status_code == 201, made.get_json()
    assert slots(shop) == [("audited", "logical", "pgoutput", "shop", False)]
    assert record == {
        **record,
        **who,
        "action": "create_slot",
        "outcome": "done",
        "changes": {"slot": [None, "audited"], "slot_name": ["cdc_slot", "audited"]},
    }

    emit_wal(shop, 3)
    [(restart_lsn,)] = psql(
        shop, "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'audited'"
    )
    before = retained(shop, "audited")
    assert before >= 3 * MB
    dropped, record = audited(
        api,
        source_id,
        lambda: api.delete(
            f"/api/v1/sources/{source_id}/slots/audited", query_string={"confirm": "audited"}
        ),
    )
    [(after,)] = psql(shop, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint", restart_lsn)
    assert dropped.status_code == 200, dropped.get_json()
    assert slots(shop) == []
    body = dropped.get_json()
    assert record == {
        **record,
        **who,
        "action": "drop_slot",
        "outcome": "done",
        "changes": {
            "slot": ["audited", None],
            "retained_bytes": [body["retained_bytes"], None],
            "freed_bytes": [None, body["freed_bytes"]],
        },
    }
    assert before <= record["changes"]["retained_bytes"][0] <= after
    [(freed_words, retained_words)] = psql(
        shop,
        "SELECT pg_size_pretty(%s::bigint), pg_size_pretty(%s::bigint)",
        body["freed_bytes"],
        body["retained_bytes"],
    )
    assert record["message"] == f"Freed {freed_words} of WAL; the slot retained {retained_words}."

    gone, record = audited(
        api, source_id, lambda: api.delete(publication, query_string={"confirm": "cdc_pub"})
    )
    assert gone.status_code == 200, gone.get_json()
    assert publications(shop) == []
    assert record == {
        **record,
        **who,
        "action": "drop_publication",
        "outcome": "done",
        "changes": {"publication": ["cdc_pub", None]},
    }


def test_audit_records_a_drop_with_the_wrong_name_as_refused(api, shop):
    """A slot's or publication's drop confirmed with another name: a 422 and one refused
    record with the form's words and no changes; psql still lists both objects."""
    publish(shop)
    psql(shop, "SELECT pg_create_logical_replication_slot('keeper', 'pgoutput')")
    source_id = add(api, shop)
    who = by_the_tests_token(source_id)

    response, record = audited(
        api,
        source_id,
        lambda: api.delete(
            f"/api/v1/sources/{source_id}/slots/keeper", query_string={"confirm": "keepe"}
        ),
    )
    body = error(response, 422, "ValidationError")
    assert record == {
        **record,
        **who,
        "action": "drop_slot",
        "outcome": "refused",
        "changes": {},
        "message": body["message"],
    }
    assert record["message"] == "Type the name, keeper, to confirm; nothing was dropped."

    response, record = audited(
        api,
        source_id,
        lambda: api.delete(
            f"/api/v1/sources/{source_id}/publication", query_string={"confirm": "cdc_pu"}
        ),
    )
    error(response, 422, "ValidationError")
    assert record == {
        **record,
        **who,
        "action": "drop_publication",
        "outcome": "refused",
        "changes": {},
        "message": "Type the name, cdc_pub, to confirm; nothing was dropped.",
    }
    assert slots(shop) == [("keeper", "logical", "pgoutput", "shop", False)]
    assert publications(shop) == [("cdc_pub", False)]


def test_audit_records_dropping_an_active_slot_as_refused_naming_its_pid(api, shop):
    """A slot pg_recvlogical streams from: the 409 writes one refused record whose message
    names the pid psql shows as the slot's active_pid; the slot survives, still active."""
    psql(shop, "CREATE PUBLICATION pub FOR TABLE orders")
    psql(shop, "SELECT pg_create_logical_replication_slot('busy', 'pgoutput')")
    consumer = recvlogical(shop, "busy", "pub")
    try:
        [(pid,)] = psql(
            shop, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'busy'"
        )
        source_id = add(api, shop)
        response, record = audited(
            api,
            source_id,
            lambda: api.delete(
                f"/api/v1/sources/{source_id}/slots/busy", query_string={"confirm": "busy"}
            ),
        )
        body = error(response, 409, "SlotActiveError")
        assert record == {
            **record,
            **by_the_tests_token(source_id),
            "action": "drop_slot",
            "outcome": "refused",
            "changes": {},
            "message": body["message"],
        }
        assert f"pid {pid}," in record["message"]
        assert slots(shop) == [("busy", "logical", "pgoutput", "shop", True)]
    finally:
        consumer.terminate()
        consumer.wait(timeout=10)


def test_audit_records_a_slot_on_a_source_that_does_not_answer_as_failed(api, shop, short_timeout):
    """A source on a port nothing listens on: creating its slot is a 502 and one failed
    record carrying the 502's message; the source keeps its slot name."""
    source_id = add(api, shop, pg_port=free_port())
    response, record = audited(
        api, source_id, lambda: api.post(f"/api/v1/sources/{source_id}/slot")
    )
    body = error(response, 502, "SourceUnreachableError")
    assert record == {
        **record,
        **by_the_tests_token(source_id),
        "action": "create_slot",
        "outcome": "failed",
        "changes": {},
        "message": body["message"],
    }
    assert record["message"]
    assert api.get(f"/api/v1/sources/{source_id}").get_json()["slot_name"] == "cdc_slot"


# Fixes fitted to the database they are for


def quote_ident(cluster: Cluster, name: str) -> str:
    """What the server's own quote_ident() makes of a name."""
    return str(psql(cluster, "SELECT quote_ident(%s)", name)[0][0])


@pytest.fixture
def cdc_user(logical: Cluster) -> Iterator[str]:
    """A role cdc_user (a name needing no quotes) with neither REPLICATION nor pg_monitor."""
    psql(logical, f"CREATE ROLE cdc_user LOGIN PASSWORD '{CDC_PASSWORD}'")
    yield "cdc_user"
    psql(logical, "DROP OWNED BY cdc_user")
    psql(logical, "DROP ROLE cdc_user")


def test_fix_identifiers_are_quoted_as_the_servers_quote_ident(api, shop, cdc_user):
    """Role cdc_user, tables orders, t and "Orders": every identifier in the fixes is what
    SELECT quote_ident(...) gives on the cluster (cdc_user bare, "Orders" quoted), and the
    publication's fix, pasted into psql, publishes exactly those tables."""
    psql(shop, 'CREATE TABLE "Orders" (id int PRIMARY KEY)')
    try:
        role = quote_ident(shop, cdc_user)
        assert role == "cdc_user"
        expected_tables = psql(
            shop,
            "SELECT string_agg(quote_ident(schemaname) || '.' || quote_ident(tablename), ', ' "
            "ORDER BY schemaname::text, tablename::text) "
            "FROM pg_tables WHERE schemaname = 'public'",
        )[0][0]
        assert 'public."Orders"' in expected_tables
        source_id = add(api, shop, pg_username=cdc_user)
        result = by_id(check(api, source_id))
        assert result["replication_role"]["fix"] == (
            f"ALTER ROLE {role} WITH REPLICATION;\n"
            f"-- Amazon RDS and Aurora: GRANT rds_replication TO {role};"
        )
        assert result["wal_directory_access"]["fix"] == f"GRANT pg_monitor TO {role};"
        assert '"cdc_user"' not in str(result)
        publication = result["publication"]["fix"]
        assert (
            f"CREATE PUBLICATION {quote_ident(shop, 'cdc_pub')} FOR TABLE {expected_tables};"
            in (publication)
        )
        apply_fix(shop, publication)
        assert published_tables(shop, "cdc_pub") == tables(shop)
        assert ("public", "Orders") in tables(shop)
    finally:
        _clean(shop)
        psql(shop, 'DROP TABLE "Orders"')


def test_missing_publication_offers_all_tables_to_a_superuser(api, shop):
    """The source's role a superuser (psql: rolsuper): the fix is FOR ALL TABLES, with the
    database's real tables as the example of some; pasted into psql, it publishes all."""
    assert psql(shop, "SELECT rolsuper FROM pg_roles WHERE rolname = 'postgres'") == [(True,)]
    source_id = add(api, shop, pg_username="postgres", pg_password="unused")
    publication = by_id(check(api, source_id))["publication"]
    assert publication["fix"] == (
        "CREATE PUBLICATION cdc_pub FOR ALL TABLES;\n"
        "-- or only some of its tables, e.g.:\n"
        "-- CREATE PUBLICATION cdc_pub FOR TABLE public.orders, public.t;\n"
        "-- or press Create publication on the source's page."
    )
    apply_fix(shop, publication["fix"])
    assert publications(shop) == [("cdc_pub", True)]
    assert statuses(check(api, source_id))["publication"] == "pass"


def test_empty_publication_fix_adds_the_databases_tables(api, shop):
    """A publication listing no table (psql): publication_tables warns with an ALTER
    PUBLICATION naming the database's real tables, which pasted into psql makes it pass."""
    psql(shop, "CREATE PUBLICATION cdc_pub")
    assert published_tables(shop, "cdc_pub") == []
    source_id = add(api, shop)
    listed = by_id(check(api, source_id))["publication_tables"]
    assert listed["status"] == "warn"
    assert listed["fix"] == "ALTER PUBLICATION cdc_pub ADD TABLE public.orders, public.t;"
    apply_fix(shop, listed["fix"])
    assert published_tables(shop, "cdc_pub") == tables(shop)
    assert statuses(check(api, source_id))["publication_tables"] == "pass"


def test_quoting_without_a_connection_matches_quote_ident(shop):
    """The fix written when the database is missing (no connection to ask) quotes names as
    the cluster's quote_ident() does: every keyword the server knows, and awkward names."""
    known = {word for (word,) in psql(shop, "SELECT word FROM pg_get_keywords()")}
    names = sorted(known) + [
        "cdc_user",
        "Orders",
        "No Such DB",
        'a"b',
        "_x1",
        "1abc",
        "abc$",
        "ünïcode",
        "shop-east",
        "",
    ]
    # Keywords of newer servers than this one are quoted anyway: a quoted name is valid there.
    newer = QUOTED_KEYWORDS - known
    compared = [name for name in names if name not in newer]
    server = dict(psql(shop, "SELECT n, quote_ident(n) FROM unnest(%s::text[]) AS n", compared))
    assert {name: offline(name) for name in compared} == server
    assert offline("cdc_user") == "cdc_user" and offline("Orders") == '"Orders"'


# A stored readiness follows the server


def round_now(app: Any) -> None:
    """Run one monitor round, as the scheduler's tick does."""
    with app.app_context():
        after_round(scheduled_round())


def checked_at(api: Any, source_id: int) -> str:
    return str(api.get(f"/api/v1/sources/{source_id}").get_json()["readiness"]["checked_at"])


def test_slot_dropped_through_psql_turns_the_source_not_ready_at_the_next_round(
    app, api, browser, shop
):
    """Ready with its slot; a round that sees nothing new checks nothing; the slot dropped
    through psql, the next round turns the page not ready with the Create slot button; the
    slot created again through psql, the next round makes it ready again."""
    publish(shop)
    psql(shop, "SELECT pg_create_logical_replication_slot('cdc_slot', 'pgoutput')")
    source_id = add(api, shop)
    assert api.get(f"/api/v1/sources/{source_id}").get_json()["readiness"]["ready"] is True
    before = checked_at(api, source_id)
    round_now(app)
    assert checked_at(api, source_id) == before  # nothing contradicted: no check
    page = browser.get(f"/sources/{source_id}").get_data(as_text=True)
    assert 'id="create-slot"' not in page and ">not ready<" not in page

    psql(shop, "SELECT pg_drop_replication_slot('cdc_slot')")
    assert slots(shop) == []
    round_now(app)
    readiness = api.get(f"/api/v1/sources/{source_id}").get_json()["readiness"]
    assert readiness["ready"] is False and failing(readiness) == ["slot"]
    page = browser.get(f"/sources/{source_id}").get_data(as_text=True)
    assert 'title="Failing: slot">not ready</span>' in page
    assert 'id="readiness-checked">checked <time' in page
    assert "No replication slot cdc_slot on this server." in page
    assert '<button type="submit" id="create-slot">Create slot cdc_slot</button>' in page
    listing = browser.get("/sources/").get_data(as_text=True)
    assert 'title="Failing: slot">not ready</span>' in listing
    assert 'class="muted nowrap readiness-age">checked ' in listing

    psql(shop, "SELECT pg_create_logical_replication_slot('cdc_slot', 'pgoutput')")
    round_now(app)
    assert api.get(f"/api/v1/sources/{source_id}").get_json()["readiness"]["ready"] is True
    assert 'id="create-slot"' not in browser.get(f"/sources/{source_id}").get_data(as_text=True)


def test_publication_dropped_through_psql_turns_the_source_not_ready_at_the_next_round(
    app, api, browser, shop
):
    """Ready with its publication; dropped through psql, the next round turns the page not
    ready, failing `publication`, with the Create publication button."""
    publish(shop)
    psql(shop, "SELECT pg_create_logical_replication_slot('cdc_slot', 'pgoutput')")
    source_id = add(api, shop)
    assert api.get(f"/api/v1/sources/{source_id}").get_json()["readiness"]["ready"] is True

    psql(shop, "DROP PUBLICATION cdc_pub")
    assert publications(shop) == []
    round_now(app)
    readiness = api.get(f"/api/v1/sources/{source_id}").get_json()["readiness"]
    assert failing(readiness) == ["publication"]
    page = browser.get(f"/sources/{source_id}").get_data(as_text=True)
    assert 'title="Failing: publication">not ready</span>' in page
    assert 'id="create-publication"' in page and 'id="drop-publication"' not in page


def test_a_source_unchecked_for_a_day_is_checked_again_by_the_leader(app, api, shop):
    """A source last checked 24 h and a minute ago is checked again by the scheduler's job in
    the process that leads (another process's run changes nothing); one checked 1 h ago is
    left alone. The job runs every 15 minutes, one run at a time."""
    start = utcnow()
    with time_machine.travel(start, tick=True):
        stale_id = add(api, shop, name="stale")  # no publication nor slot yet: not ready
    publish(shop)
    psql(shop, "SELECT pg_create_logical_replication_slot('cdc_slot', 'pgoutput')")
    with time_machine.travel(start + timedelta(hours=23), tick=True):
        fresh_id = add(api, shop, name="fresh")
    fresh_checked = checked_at(api, fresh_id)
    assert api.get(f"/api/v1/sources/{stale_id}").get_json()["readiness"]["ready"] is False

    leader, follower = MonitorScheduler(app), MonitorScheduler(app)
    try:
        with app.app_context():
            assert leader.leadership.is_leader() and not follower.leadership.is_leader()
        with time_machine.travel(start + timedelta(hours=24, minutes=1), tick=True):
            follower.recheck()
            assert api.get(f"/api/v1/sources/{stale_id}").get_json()["readiness"]["ready"] is False
            leader.recheck()
            stale = api.get(f"/api/v1/sources/{stale_id}").get_json()["readiness"]
        assert stale["ready"] is True
        assert stale["checked_at"].startswith(
            (start + timedelta(hours=24, minutes=1)).strftime("%Y-%m-%dT%H:%M")
        )
        assert checked_at(api, fresh_id) == fresh_checked
    finally:
        leader.leadership.release()
        follower.leadership.release()

    monitor = MonitorScheduler(app)
    monitor.start()
    try:
        assert monitor.scheduler is not None
        job = monitor.scheduler.get_job("readiness-recheck")
        assert job.trigger.interval == timedelta(minutes=15) and job.max_instances == 1
    finally:
        monitor.stop()


# The pipeline badge


def test_pipeline_badge_marks_only_the_slots_a_pipeline_uses(app, api, browser, shop):
    """Two sources on one server naming slots cdc_slot and other_slot (psql lists both): no
    badge while no pipeline exists, though the source names cdc_slot; with a pipeline on the
    other source, only other_slot carries it, naming the pipeline."""
    psql(shop, "SELECT pg_create_logical_replication_slot('cdc_slot', 'pgoutput')")
    psql(shop, "SELECT pg_create_logical_replication_slot('other_slot', 'pgoutput')")
    assert [row[0] for row in slots(shop)] == ["cdc_slot", "other_slot"]
    source_id = add(api, shop)
    other_id = add(api, shop, name="other", slot_name="other_slot")
    for sampled in (source_id, other_id):
        assert api.post(f"/api/v1/sources/{sampled}/sample").get_json()["ok"]

    def badges() -> dict[str, str | None]:
        """Each slot's name cell on the source's page, and the badge in it if any."""
        page = browser.get(f"/sources/{source_id}").get_data(as_text=True)
        cells = re.findall(
            r"<td[^>]*>(cdc_slot|other_slot)( <span[^>]*>pipeline</span>)?</td>", page
        )
        return {name: badge or None for name, badge in cells}

    assert badges() == {"cdc_slot": None, "other_slot": None}
    _pipeline(api, other_id)
    assert badges() == {
        "cdc_slot": None,
        "other_slot": ' <span class="badge" title="Used by pipeline shop-to-sf">pipeline</span>',
    }
