"""In a real Chromium: a source's readiness checks run in place, and a slot that retains WAL
is dropped through the typed confirmation, on a real cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest
from playwright.sync_api import expect

from rosetta_web.monitor.rounds import scheduled_round
from rosetta_web.sources.services import after_round

from ..factories import add_source, create_operator
from ..pg import Cluster

pytestmark = pytest.mark.slow

# Set ROSETTA_SHOTS to a folder to keep screenshots of each step (desktop and phone width).
SHOTS = os.environ.get("ROSETTA_SHOTS")


def shot(page: Any, name: str) -> None:
    if SHOTS:
        for width in (1280, 390):
            page.set_viewport_size({"width": width, "height": 900})
            page.screenshot(path=f"{SHOTS}/{name}-{width}.png", full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})


@pytest.fixture
def doomed() -> Iterator[Cluster]:
    """A cluster of its own (what a drop frees depends on every slot of the server) with
    database 'browse' and an inactive pgoutput slot 'doomed' that retains WAL."""
    cluster = Cluster("rosetta-browse").start()
    try:
        cluster.create_database("browse")
        with closing(cluster.connect("browse")) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE items (id int PRIMARY KEY)")
            cur.execute("CREATE PUBLICATION browse_pub FOR ALL TABLES")
            cur.execute("SELECT pg_create_logical_replication_slot('doomed', 'pgoutput')")
            cur.execute("INSERT INTO items SELECT generate_series(1, 20000)")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def browse(app, doomed, sign_in) -> int:
    """Register the source on the doomed cluster's database 'browse' and sign in; its id."""
    create_operator(app)
    source_id = add_source(
        app,
        "browse",
        doomed.port,
        user="postgres",
        database="browse",
        publication_name="browse_pub",
        slot_name="doomed",
    )
    sign_in()
    return source_id


def _slot_exists(cluster: Cluster) -> bool:
    with closing(cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'doomed'")
        return bool(cur.fetchone()[0])


def test_check_in_place_then_drop_a_slot_by_typing_its_name(app, live_server, page, doomed, browse):
    """Check swaps the checklist in without a reload; the drop page shows what the slot
    retains; a wrong name is refused beside the field and the slot survives; its name drops
    it, and the source's page says what it retained."""
    source_id = browse
    page.goto(f"{live_server}/sources/{source_id}")
    expect(page.locator("#readiness-none")).to_be_visible()
    page.evaluate("window.marker = 'same page'")
    page.click("#check-button")
    expect(page.locator("#check-wal_level .badge")).to_have_text("pass")
    expect(page.locator("#check-slot")).to_contain_text("Logical slot doomed (pgoutput)")
    expect(page.locator("#check-max_slot_wal_keep_size .check-fix")).to_contain_text(
        "ALTER SYSTEM SET max_slot_wal_keep_size"
    )
    assert page.evaluate("window.marker") == "same page"
    shot(page, "source-readiness")

    page.click("button:has-text('Sample now')")
    page.click("a[aria-label='Drop slot doomed']")
    expect(page.locator("h1")).to_contain_text("Drop replication slot doomed?")
    expect(page.locator("#slot-consumer")).to_have_text("none connected")
    expect(page.locator("#slot-retained")).to_contain_text("dropping it frees about")
    page.fill("#confirm", "doomd")
    page.click("#drop-slot-button")
    expect(page.locator("#confirm-error")).to_contain_text("Type the name, doomed, to confirm")
    expect(page.locator("#confirm")).to_have_value("doomd")
    assert _slot_exists(doomed)
    shot(page, "drop-slot-refused")

    page.fill("#confirm", "doomed")
    page.click("#drop-slot-button")
    expect(page.locator(".flash-success")).to_contain_text("Dropped slot doomed: it retained")
    expect(page).to_have_url(f"{live_server}/sources/{source_id}")
    assert not _slot_exists(doomed)
    expect(page.locator("#check-slot .badge")).to_have_text("fail")
    expect(page.locator("#create-slot")).to_have_text("Create slot doomed")
    shot(page, "source-after-drop")


def test_a_slot_dropped_through_psql_shows_at_the_next_round_and_is_made_again(
    app, live_server, page, doomed, browse
):
    """Checked ready; the slot dropped through psql and a round run: the page, reloaded,
    shows the source not ready with the Create slot button, and its check's age; pressing it
    makes the slot (psql sees it) and the badge turns ready."""
    source_id = browse
    page.goto(f"{live_server}/sources/{source_id}")
    page.click("#check-button")
    expect(page.locator("#readiness .readiness-badge")).to_have_text("ready")
    expect(page.locator("#create-slot")).to_have_count(0)

    with closing(doomed.connect("browse")) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_drop_replication_slot('doomed')")
    assert not _slot_exists(doomed)
    with app.app_context():
        after_round(scheduled_round())
    page.reload()
    expect(page.locator("#readiness .readiness-badge")).to_have_text("not ready")
    expect(page.locator("#readiness-checked")).to_contain_text("checked")
    expect(page.locator("#check-slot .badge")).to_have_text("fail")
    expect(page.locator("#create-slot")).to_have_text("Create slot doomed")
    shot(page, "source-slot-dropped-by-psql")

    page.click("#create-slot")
    expect(page.locator(".flash-success")).to_contain_text("Created slot doomed.")
    expect(page.locator("#readiness .readiness-badge")).to_have_text("ready")
    assert _slot_exists(doomed)
