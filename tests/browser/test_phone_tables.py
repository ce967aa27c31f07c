"""In a real Chromium: at phone width a list's rows are cards that name each value, nothing hides
past the screen's edge, and a table that still scrolls shows that it does."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from rosetta_web.extensions import db as _db
from rosetta_web.models import Pipeline, Silence
from rosetta_web.sparkline import draw
from rosetta_web.timeutil import utcnow

from ..constants import PHONE
from ..factories import add_alerts, add_source, create_operator, new_destination, sampled_source

# Each starts Chromium and a server: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow

ACCOUNTS = (("bob", "operator"), ("carol", "viewer"), ("dave-from-the-platform-team", "admin"))
LIST_PAGES = (
    "/",
    "/sources/",
    "/destinations/",
    "/pipelines/",
    "/alerts/",
    "/alerts/channels/",
    "/audit/",
    "/accounts",
)
# Lists whose cards read as a sentence (when, who or what, the message, how it ended), each
# value saying what it is, so their cells carry no label.
NARRATIVE = ("history-table", "audit-table")
# A host name with no hyphen or space to wrap at: it must still stay inside its card.
LONG_HOST = "orders.cluster.c9abcdefgh.euwest1.rds.amazonaws.com"

# Each column header of a table, and where the screen shows it: "header" when its <th> and every
# row's cell of that column lie inside what the viewport (and the table's scroll box) shows,
# "label" when every row's cell lies inside and names it (the card's data-label), "scroll" when
# the table's box scrolls and shows so; None when the column is out of sight and nothing says so.
COLUMNS_JS = """
(table) => {
  const box = table.closest('.table-scroll');
  const frame = box ? box.getBoundingClientRect() : { left: 0, right: innerWidth };
  const [left, right] = [Math.max(0, frame.left), Math.min(innerWidth, frame.right)];
  const inside = (el) => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.left >= left - 0.5 && r.right <= right + 0.5;
  };
  const shows = box && box.dataset.more && getComputedStyle(box).maskImage !== 'none';
  const rows = Array.from(table.tBodies[0].rows).filter((row) => row.cells.length > 1);
  return Array.from(table.tHead.rows[0].cells)
    .map((th, i) => [th, th.textContent.trim(), i])
    .filter(([, text]) => text)
    .map(([th, text, i]) => {
      const cells = rows.map((row) => row.cells[i]);
      const labelled = cells.every(
        (td) => getComputedStyle(td, '::before').content === JSON.stringify(text));
      if (cells.every(inside) && inside(th)) return [text, 'header'];
      if (cells.every(inside) && labelled) return [text, 'label'];
      return [text, shows ? 'scroll' : null];
    });
}
"""

# Every table of the page: whether its box scrolls, and which of its elements reach past the
# part of the screen it is shown in.
TABLES_JS = """
() => Array.from(document.querySelectorAll('main table')).map((table) => {
  const box = table.closest('.table-scroll');
  const frame = box ? box.getBoundingClientRect() : { right: innerWidth };
  const right = Math.min(innerWidth, frame.right);
  const past = Array.from(table.querySelectorAll('*'))
    .filter((el) => el.getBoundingClientRect().right > right + 0.5)
    .map((el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + ' ' +
                 el.textContent.trim().slice(0, 30));
  return {
    table: table.id || table.tHead.textContent.trim().slice(0, 40),
    scrolls: !!box && box.scrollWidth > box.clientWidth + 1,
    past: past,
  };
})
"""


SCROLL_BOX = "xpath=ancestor::div[contains(concat(' ', @class, ' '), ' table-scroll ')][1]"


def seed(app) -> None:
    """What the list pages show at their widest: sampled sources (one failing, one with a long
    name and host), a destination, pipelines, alerts, a silence, and four accounts."""
    create_operator(app)
    for username, role in ACCOUNTS:
        create_operator(app, username, role=role)
    bucket = int(utcnow().timestamp()) // 600 * 600
    with app.app_context():
        for index in range(1, 5):
            wave = [
                [bucket - 600 * k, int(index * 10**6 * (1.5 + math.sin(k / 7)))]
                for k in range(143, -1, -1)
            ]
            source = sampled_source(
                index,
                status="ERROR" if index == 3 else "OK",
                last_error="connection refused: is the server running?" if index == 3 else None,
                size_bytes=index * 1_300_000_000,
                retained_bytes=index * 51_000_000,
                inactive_slot_count=index % 2,
                last_sampled_at=utcnow(),
                retained_sparkline=draw(wave),
            )
            if index == 2:
                source.name = "production-orders-postgres-eu-west"
                source.pg_host = LONG_HOST
            _db.session.add(source)
        destination = new_destination(
            "snowflake-production",
            snowflake_account="xy12345.us-east-1",
            snowflake_user="ETL_USER",
            snowflake_database="ANALYTICS",
            snowflake_schema="RAW_DATA",
            snowflake_warehouse="LOADING_WH",
        )
        _db.session.add(destination)
        _db.session.flush()
        for index, status in ((1, "START"), (2, "PAUSE")):
            _db.session.add(
                Pipeline(
                    name=f"src-{index:04d}-to-snowflake",
                    source_id=index,
                    destination_id=destination.id,
                    status=status,
                )
            )
        _db.session.add(
            Silence(
                source_id=2,
                ends_at=utcnow() + timedelta(hours=3),
                comment="maintenance window",
                created_by="alice",
            )
        )
        _db.session.commit()
    add_alerts(app)


@pytest.fixture
def seeded(app, live_server, page, sign_in) -> Any:
    """Seed the list pages' data, sign in as alice (an admin), and yield the page."""
    seed(app)
    sign_in()
    return page


def hidden_columns(table: Any) -> list[str]:
    """The headers of `table` (a locator) that the screen neither shows nor says can be
    scrolled to."""
    columns = table.evaluate(COLUMNS_JS)
    assert len(columns) >= 4, columns
    return [text for text, how in columns if how is None]


def test_dashboard_and_accounts_show_every_column_and_button_on_a_phone(seeded, live_server):
    """At 390 px every column of the dashboard's and the accounts' table is on screen, named,
    and Disable, History and Reset password of each account are there to press, with no
    sideways scrolling of the page or of the table."""
    page = seeded
    page.set_viewport_size(PHONE)
    page.goto(live_server + "/")
    expect(page.locator("#dashboard-table tbody tr")).to_have_count(4)
    assert hidden_columns(page.locator("#dashboard-table table")) == []
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")

    page.goto(live_server + "/accounts")
    assert hidden_columns(page.locator("#accounts-table")) == []
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    rows = page.locator("#accounts-table tbody tr")
    expect(rows).to_have_count(1 + len(ACCOUNTS))
    for row in rows.all():
        for control in (
            row.get_by_role("button", name="Disable"),
            row.get_by_role("link", name="History"),
            row.get_by_role("button", name="Reset password"),
        ):
            expect(control).to_be_visible()
            box = control.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (
                row.get_attribute("id"),
                control.inner_text(),
                box,
            )

    # Pressed where they are: each answers, and nothing had to scroll sideways to reach it.
    bob = page.locator("#accounts-table tbody tr", has_text="bob")
    scrolled = "[scrollX, document.querySelector('.table-scroll').scrollLeft]"
    asked: list[str] = []

    def decline(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", decline)
    for count, name in enumerate(("Disable", "Reset password"), start=1):
        bob.get_by_role("button", name=name).click()
        assert len(asked) == count and "bob" in asked[-1], (name, asked)
        assert page.evaluate(scrolled) == [0, 0], name
    bob.get_by_role("link", name="History").click()
    expect(page).to_have_url(re.compile(r"/audit/\?target_type=user&target_id=\d+$"))
    expect(page.locator("#audit-table")).to_contain_text("bob")


def test_every_list_fits_a_phone_or_shows_it_scrolls(seeded, live_server):
    """At 390 px no list page has a table with content past the screen's edge unless its box
    scrolls and shows it (the edge fades); each list's columns are all named on screen."""
    page = seeded
    page.set_viewport_size(PHONE)
    for path in LIST_PAGES:
        page.goto(live_server + path)
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth"), path
        tables = page.evaluate(TABLES_JS)
        assert tables, path
        for index, table in enumerate(tables):
            if table["scrolls"]:
                box = page.locator("main table").nth(index).locator(SCROLL_BOX)
                expect(box).to_have_attribute("data-more", re.compile("right"))
            else:
                assert table["past"] == [], (path, table)
        for table in page.locator("main table").all():
            if table.get_attribute("id") not in NARRATIVE:
                assert hidden_columns(table) == [], (path, table.get_attribute("id"))


def test_a_table_that_still_scrolls_fades_the_side_with_more(app, live_server, page, sign_in):
    """Where a list is too wide and not yet cards (the sources' ten columns at 900 px), its box
    fades the edge that has more to see, follows the scrolling, and takes the keyboard's arrows;
    once the rows are cards (390 px) nothing scrolls and nothing fades."""
    create_operator(app)
    add_source(app, "orders", 5432)
    sign_in()
    page.set_viewport_size({"width": 900, "height": 800})
    page.goto(live_server + "/sources/")
    box = page.locator("main .table-scroll")
    expect(box).to_have_attribute("data-more", "right")
    assert "gradient" in box.evaluate("(el) => getComputedStyle(el).maskImage")
    expect(box).to_have_attribute("tabindex", "0")
    box.focus()
    page.keyboard.press("ArrowRight")
    expect(box).to_have_attribute("data-more", "left right")
    box.evaluate("(el) => { el.scrollLeft = el.scrollWidth; }")
    expect(box).to_have_attribute("data-more", "left")
    page.set_viewport_size(PHONE)
    expect(box).not_to_have_attribute("data-more", re.compile("."))
    assert box.evaluate("(el) => getComputedStyle(el).maskImage") == "none"
