"""In a real Chromium: a pipeline's page shows its engine's state, follows it as the engine
writes a new one, and fits a desktop and a phone screen."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from rosetta_web.extensions import db as _db
from rosetta_web.models import (
    EngineProcess,
    Pipeline,
    PipelineError,
    PipelineRun,
    PipelineVerification,
)
from rosetta_web.timeutil import utcnow

from ..constants import PHONE
from ..factories import (
    add_engine_process,
    add_pipeline,
    add_verification,
    create_operator,
    new_destination,
    new_source,
    verify_table,
)

pytestmark = pytest.mark.slow

# Set ROSETTA_SHOTS to a folder to keep screenshots (desktop and phone width).
SHOTS = os.environ.get("ROSETTA_SHOTS")
OWNER = "etl-host-1:4242"
# Elements past the screen's right edge, outside a box that scrolls on purpose.
OVERFLOW_JS = """
() => Array.from(document.querySelectorAll('body *'))
  .filter((el) => el.getBoundingClientRect().right > innerWidth + 0.5)
  .filter((el) => !el.closest('.table-scroll'))
  .map((el) => el.tagName + '#' + el.id + '.' + el.className)
"""


def _shot(page: Any, name: str) -> None:
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)


def _retrying_pipeline(app: Any) -> int:
    """A START pipeline whose live engine retries it, with three errors (one long)."""
    now = utcnow()
    with app.app_context():
        pipeline = Pipeline(
            name="orders-to-snowflake",
            source=new_source("orders-postgres"),
            destination=new_destination("snowflake-analytics"),
            status="START",
        )
        _db.session.add(pipeline)
        _db.session.add(EngineProcess(id=OWNER, started_at=now - timedelta(hours=1), seen_at=now))
        _db.session.flush()
        _db.session.add(
            PipelineRun(
                pipeline_id=pipeline.id,
                state="retrying",
                reason="Snowflake refused the login: JWT token is invalid",
                owner=OWNER,
                since=now - timedelta(minutes=4),
                updated_at=now,
                next_try_at=now + timedelta(minutes=2),
                last_lsn=0x16_B374D848,
            )
        )
        long_message = "snowflake.connector.errors.DatabaseError: 250001 (08001): " + "x" * 300
        for minutes, message in ((9, "connection reset by peer"), (4, long_message)):
            _db.session.add(
                PipelineError(
                    pipeline_id=pipeline.id, at=now - timedelta(minutes=minutes), message=message
                )
            )
        _db.session.commit()
        return pipeline.id


def test_pipeline_page_follows_its_engine_at_desktop_and_phone_width(
    app, live_server, page, sign_in
):
    """The page shows the engine retrying with its reason, owner, next try, last LSN and
    errors, fits 1280 and 390 px without spilling past the screen, and shows `streaming`
    once the engine writes it, without a reload."""
    create_operator(app)
    pipeline_id = _retrying_pipeline(app)
    sign_in()
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server}/pipelines/{pipeline_id}")
    expect(page.locator("#engine-state .badge")).to_have_text("retrying")
    expect(page.locator("#engine-reason")).to_contain_text("JWT token is invalid")
    expect(page.locator("#engine-owner")).to_have_text(OWNER)
    expect(page.locator("#engine-next-try")).to_contain_text("in 1 min")
    expect(page.locator("#engine-lsn")).to_have_text("16/B374D848")
    expect(page.locator("#engine-errors tbody tr")).to_have_count(2)
    expect(page.locator("#engine-errors tbody tr").first).to_contain_text("250001")
    assert page.evaluate(OVERFLOW_JS) == []
    _shot(page, "pipeline-retrying-1280")

    page.set_viewport_size(PHONE)
    assert page.evaluate(OVERFLOW_JS) == []
    widths = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    assert widths[0] <= widths[1], widths
    _shot(page, "pipeline-retrying-390")

    with app.app_context():
        run = _db.session.get(PipelineRun, pipeline_id)
        run.state, run.reason, run.next_try_at = "streaming", None, None
        run.updated_at = utcnow()
        # Another operator pauses it meanwhile.
        _db.session.get(Pipeline, pipeline_id).status = "PAUSE"
        _db.session.commit()
    # The live part asks again every 5 s while the tab is visible: the header's status and
    # its buttons with the engine's state.
    expect(page.locator("#engine-state .badge")).to_have_text("streaming", timeout=12_000)
    expect(page.locator("#engine-next-try")).to_have_count(0)
    expect(page.locator("h1 .badge")).to_have_text("PAUSE")
    expect(page.locator("#status-pause")).to_have_attribute("aria-disabled", "true")
    _shot(page, "pipeline-streaming-390")

    page.goto(f"{live_server}/pipelines/")
    row = page.locator(f"#pipeline-{pipeline_id}")
    expect(row.locator(".engine-cell .badge")).to_have_text("streaming")
    assert page.evaluate(OVERFLOW_JS) == []
    _shot(page, "pipelines-list-390")
    page.set_viewport_size({"width": 1280, "height": 900})
    _shot(page, "pipelines-list-1280")


def test_a_stopped_pipeline_says_why_in_the_list_and_on_its_page(app, live_server, page, sign_in):
    """With no engine process running, the list's Engine cell and the page say to start one,
    and the long reason stays inside the screen at desktop and phone width."""
    create_operator(app)
    with app.app_context():
        _db.session.add(
            Pipeline(
                name="billing-to-snowflake",
                source=new_source("billing-postgres"),
                destination=new_destination("snowflake-finance"),
                status="START",
            )
        )
        _db.session.commit()
    sign_in()
    for width in (1280, PHONE["width"]):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_server}/pipelines/")
        cell = page.locator("#pipelines-table tbody tr").first.locator(".engine-cell")
        expect(cell.locator(".badge")).to_have_text("stopped")
        expect(cell).to_contain_text("start `flask rosetta engine`")
        assert page.evaluate(OVERFLOW_JS) == []
        _shot(page, f"pipelines-stopped-{width}")
        page.goto(f"{live_server}/pipelines/1")
        expect(page.locator("#engine-reason")).to_contain_text("No engine process is running")
        assert page.evaluate(OVERFLOW_JS) == []
        _shot(page, f"pipeline-stopped-{width}")


def _verification(pipeline_id: int) -> PipelineVerification:
    """Return the pipeline's one Verify (call inside an app context)."""
    return _db.session.scalars(
        _db.select(PipelineVerification).where(PipelineVerification.pipeline_id == pipeline_id)
    ).one()


def test_verify_is_refused_in_place_then_runs_and_shows_its_result(app, live_server, page, sign_in):
    """Verify with no engine process: the refusal shows in the Verify part and the page stays;
    with one: the part says the Verify waits, polls, and shows the result once an engine
    process stores it, without a reload, fitting a phone's screen throughout."""
    create_operator(app)
    pipeline_id = add_pipeline(app, status="PAUSE")
    sign_in()
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server}/pipelines/{pipeline_id}")
    expect(page.locator("#verify-none")).to_have_text("Not verified yet.")
    url = page.url

    page.click("#verify-button")
    expect(page.locator("#verify-refusal")).to_contain_text("No engine process is running")
    assert page.url == url
    expect(page.locator("#pipeline-live")).to_have_count(1)
    assert page.evaluate(OVERFLOW_JS) == []

    add_engine_process(app)
    page.click("#verify-button")
    expect(page.locator("#verify-result")).to_contain_text("waiting for an engine process")
    expect(page.locator("#verify-refusal")).to_have_count(0)
    expect(page.locator("#verify-button")).to_have_attribute("aria-disabled", "true")
    with app.app_context():
        verification = _verification(pipeline_id)
        verification.state, verification.ok, verification.finished_at = "done", True, utcnow()
        verification.tables = [
            {
                "table": "public.orders",
                "source_rows": 3,
                "destination_rows": 3,
                "sampled": 3,
                "differing": [],
                "differing_keys": 0,
                "ok": True,
                "note": None,
            }
        ]
        _db.session.commit()
    # The part asks again every 2 s while the Verify runs.
    expect(page.locator("#verify-result")).to_have_text("the same")
    expect(page.locator("#verify-button")).to_have_attribute("type", "submit")
    expect(page.locator("#verify")).not_to_have_attribute("hx-trigger", "every 2s")
    assert page.evaluate(OVERFLOW_JS) == []


def test_a_verify_that_differs_fits_a_phone_and_asks_before_refresh(
    app, live_server, page, sign_in
):
    """A Verify of tables with long names and keys: nothing spills past a phone's screen, the
    Verify part comes before the chart, and its Refresh button asks, naming the tables."""
    create_operator(app)
    pipeline_id = add_pipeline(app, status="START")
    long_key = "customer-reference-" + "x7Qp2" * 12
    long_table = "sales.refunds_with_a_rather_long_table_name"
    differing = {"key": {"refund_reference": long_key}, "columns": ["reason_text"]}
    differing["problem"] = "values differ"
    note = "not at the destination, so not compared: internal_memo"
    table = verify_table(long_table, source_rows=9_120, destination_rows=9_119, sampled=9_120)
    table |= {"differing": [differing], "differing_keys": 1, "ok": False, "note": note}
    add_verification(app, pipeline_id, [table])
    sign_in()
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server}/pipelines/{pipeline_id}")
    button = page.locator("#verify-refresh-button")
    expect(button).to_have_text(f"Refresh {long_table}")
    assert page.evaluate(OVERFLOW_JS) == []
    above = page.evaluate(
        "document.querySelector('#verify').getBoundingClientRect().bottom"
        " <= document.querySelector('#progress-charts').getBoundingClientRect().top"
    )
    assert above
    _shot(page, "pipeline-verify-differs-390")

    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    button.click()
    expect(page.locator("#verify-refresh-button")).to_be_visible()
    assert asked and asked[0].startswith(f"Refresh {long_table} of pipeline orders-to-sf?")
    with app.app_context():
        assert _db.session.get(Pipeline, pipeline_id).status == "START"
