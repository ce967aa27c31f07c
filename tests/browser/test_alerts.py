"""In a real Chromium: the alert banner, acknowledging and silencing from /alerts in place, the
thresholds and alert periods on a source's chart, and the alert forms' errors beside their
fields with the operator's input kept."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from rosetta_web.alerts.engine.settings import load_settings
from rosetta_web.extensions import db as _db
from rosetta_web.timeutil import utcnow

from ..constants import MIB
from ..factories import add_alert, add_source, create_operator, new_state, wal_metric
from ..pg import free_port

# Each starts Chromium and a server: `make test-fast` leaves them out.
pytestmark = pytest.mark.slow


def fire(app, source_id: int, name: str, **fields: Any) -> int:
    """Store a firing alert as the engine would."""
    now = utcnow()
    values: dict[str, Any] = {
        "key": f"retained_wal:{source_id}:{fields.get('slot_name', 'orders')}:{now.timestamp()}",
        "source_name": name,
        "value": 6 * 1024**3,
        "threshold": 5 * 1024**3,
        "message": f"slot `orders` of {name} retains 6144 MB of WAL (warning at 5120 MB)",
        "started_at": now - timedelta(minutes=20),
        "evaluated_at": now,
        **fields,
    }
    return add_alert(app, source_id, **values)


@pytest.fixture
def firing(app, live_server, page, sign_in) -> dict[str, int]:
    """Two sources, a critical alert on one and a warning on the other; signed in."""
    create_operator(app)
    shop = add_source(app, "shop", free_port())
    billing = add_source(app, "billing", free_port())
    critical = fire(
        app,
        shop,
        "shop",
        severity="critical",
        value=11 * 1024**3,
        threshold=10 * 1024**3,
        message="slot `orders` of shop retains 11 GB of WAL (critical at 10 GB)",
    )
    warning = fire(app, billing, "billing", slot_name="events")
    sign_in()
    return {"shop": shop, "billing": billing, "critical": critical, "warning": warning}


def test_banner_shows_while_alerts_fire_and_silence_takes_them_off(firing, live_server, page):
    """The banner counts unsilenced firing alerts on every page: acknowledging stops repeats
    but not the banner; silencing the source takes its alert off the count, in place."""
    banner = page.locator("#alert-banner a.alert-banner")
    expect(banner).to_have_text("1 critical and 1 warning alerts firing See alerts →")
    expect(banner).to_have_class("alert-banner alert-banner-critical")
    page.goto(live_server + "/sources/")
    expect(banner).to_contain_text("1 critical and 1 warning")
    banner.click()
    expect(page).to_have_url(live_server + "/alerts/")

    critical = f"#alert-{firing['critical']}"
    page.evaluate("window.marker = 'same page'")
    page.click(f"{critical}-ack")
    expect(page.locator(f"{critical}-acked")).to_contain_text("acknowledged by alice")
    expect(page.locator(f"{critical}-ack")).to_have_count(0)
    expect(banner).to_contain_text("1 critical")  # still firing, still counted

    page.click(f"{critical}-silence summary")
    page.select_option(f"#alert-{firing['critical']}-rule", "")
    page.fill(f"#alert-{firing['critical']}-comment", "resizing the disk")
    page.click(f"{critical}-silence button[type=submit]")
    expect(page.locator(f"{critical}-silenced")).to_contain_text("silenced until")
    # The banner and the silences list changed in place, out of band.
    expect(banner).to_have_text("1 warning alert firing See alerts →")
    expect(banner).to_have_class("alert-banner alert-banner-warning")
    expect(page.locator("#silences-table")).to_contain_text("resizing the disk")
    assert page.evaluate("window.marker") == "same page"  # no reload

    page.goto(live_server + "/")
    expect(banner).to_have_text("1 warning alert firing See alerts →")


def test_acknowledge_in_place_keeps_the_order(firing, live_server, page):
    """Critical first; acknowledging swaps only its row, whose marks say who and when."""
    page.goto(live_server + "/alerts/")
    rows = page.locator("#firing-list article")
    expect(rows).to_have_count(2)
    assert rows.nth(0).get_attribute("id") == f"alert-{firing['critical']}"
    page.evaluate("window.marker = 'same page'")
    page.click(f"#alert-{firing['warning']}-ack")
    expect(page.locator(f"#alert-{firing['warning']}-acked")).to_contain_text(
        "acknowledged by alice"
    )
    assert rows.nth(1).get_attribute("id") == f"alert-{firing['warning']}"
    assert page.evaluate("window.marker") == "same page"


def test_a_silence_ending_in_the_past_is_refused_beside_the_field(firing, live_server, page):
    """A silence ending in the past is refused under its field, the form left open with the input
    kept, and the alert still counts in the banner."""
    page.goto(live_server + "/alerts/")
    box = f"#alert-{firing['warning']}-silence"
    page.click(f"{box} summary")
    until = f"#alert-{firing['warning']}-ends_at"
    page.fill(until, "2020-01-01T00:00")
    page.fill(f"#alert-{firing['warning']}-comment", "too late")
    page.click(f"{box} button[type=submit]")
    error = page.locator(f"{until}-error")
    expect(error).to_have_text("The silence must end in the future.")
    expect(page.locator(box)).to_have_attribute("open", "")
    expect(page.locator(until)).to_have_value("2020-01-01T00:00")
    expect(page.locator(f"#alert-{firing['warning']}-comment")).to_have_value("too late")
    # Beside its field: in the same field box, right under the input.
    assert error.evaluate(f"(el) => el.closest('.field').querySelector('{until}') !== null")
    expect(page.locator("#alert-banner a")).to_contain_text("1 warning")


def _charted(app) -> int:
    """A source with two hours of samples up to 90 MB, and an alert that fired for an hour."""
    source_id = add_source(app, "charted", free_port())
    now = utcnow()
    with app.app_context():
        settings = load_settings()
        settings.retained_warning_bytes = 60 * MIB
        settings.retained_critical_bytes = 100 * MIB
        for step in range(25):
            moment = now - timedelta(minutes=5 * step)
            _db.session.add(
                wal_metric(
                    source_id,
                    moment,
                    wal_position_bytes=10**9 - step * 1_000_000,
                    size_bytes=(90 - step * 3) * MIB,
                    retained_bytes=(80 - step * 3) * MIB,
                )
            )
        _db.session.add(
            new_state(source_id, last_sampled_at=now, retained_bytes=80 * MIB, size_bytes=90 * MIB)
        )
        _db.session.commit()
    fire(
        app,
        source_id,
        "charted",
        state="resolved",
        started_at=now - timedelta(minutes=90),
        resolved_at=now - timedelta(minutes=30),
    )
    fire(app, source_id, "charted", severity="critical", started_at=now - timedelta(minutes=10))
    return source_id


def test_thresholds_and_alert_periods_on_the_chart(app, live_server, page, sign_in):
    """The retained-WAL chart draws the warning and critical thresholds as horizontal lines
    and the periods alerts fired as shaded bands."""
    create_operator(app)
    source_id = _charted(app)
    sign_in()
    page.goto(f"{live_server}/sources/{source_id}?range=6h")
    charts = page.locator("#wal-charts")
    expect(charts).to_have_attribute("data-range", "6h")
    expect(charts).to_have_attribute("data-thresholds", "warning threshold,critical threshold")
    shapes = page.evaluate("document.getElementById('chart-wal').layout.shapes")
    lines = {s["name"]: s for s in shapes if s["type"] == "line"}
    assert lines["warning threshold"]["y0"] == lines["warning threshold"]["y1"] == 60 * MIB
    assert lines["critical threshold"]["y0"] == 100 * MIB
    assert all(s["xref"] == "paper" and s["visible"] for s in lines.values())
    bands = [s for s in shapes if s["type"] == "rect"]
    assert sorted(s["name"] for s in bands) == ["critical alert firing", "warning alert firing"]
    assert all(s["yref"] == "paper" and s["y0"] == 0 and s["y1"] == 1 for s in bands)
    # Drawn: two threshold lines (with their labels) in the chart's shape layer.
    assert page.locator("#chart-wal .shapelayer path, #chart-wal .layer-above path").count() >= 2
    # The axis reaches the critical line, though every sample is below it.
    top = page.evaluate("document.getElementById('chart-wal')._fullLayout.yaxis.range[1]")
    assert top >= 100 * MIB
    # The rate chart has neither.
    assert not page.evaluate("document.getElementById('chart-rate').layout.shapes")


def test_thresholds_far_above_the_data_are_named_not_drawn(app, live_server, page, sign_in):
    """With the defaults (5 GB / 10 GB) over 90 MB of data, the lines would flatten it: the
    chart names them instead."""
    create_operator(app)
    source_id = _charted(app)
    with app.app_context():
        settings = load_settings()
        settings.retained_warning_bytes, settings.retained_critical_bytes = 5 * 1024**3, None
        _db.session.commit()
    sign_in()
    page.goto(f"{live_server}/sources/{source_id}?range=6h")
    expect(page.locator("#wal-charts")).to_have_attribute("data-thresholds", "")
    note = page.evaluate("document.getElementById('chart-wal').layout.annotations[0].text")
    assert note == "Alert thresholds above the chart: warning at 5 GB"


def test_channel_form_bad_input_beside_the_fields(app, live_server, page, sign_in):
    """A webhook with an ftp URL and a short secret shows each error under its field with the input
    kept; the secret field shows for webhooks only."""
    create_operator(app)
    sign_in()
    page.goto(live_server + "/alerts/channels/new")
    page.fill("#name", "ops-hook")
    page.select_option("#type", "webhook")
    page.fill("#url", "ftp://files.example.com/drop")
    page.fill("#secret", "short")
    page.click("main button.primary")
    url_error = page.locator("#url-error")
    expect(url_error).to_contain_text("A webhook URL starts with http:// or https://")
    expect(page.locator("#secret-error")).to_contain_text("at least 16 characters")
    expect(page.locator("#url")).to_have_value("ftp://files.example.com/drop")
    expect(page.locator("#name")).to_have_value("ops-hook")
    expect(page.locator("#url")).to_have_attribute("aria-invalid", "true")
    assert url_error.evaluate("(el) => el.closest('.field').querySelector('#url') !== null")
    # The signing secret is for webhooks only: hidden for an Apprise URL.
    page.select_option("#type", "apprise")
    expect(page.locator("#secret")).to_be_hidden()
    page.select_option("#type", "webhook")
    expect(page.locator("#secret")).to_be_visible()


def test_settings_form_bad_input_beside_the_fields(app, live_server, page, sign_in):
    """Bad rule settings show each error under its field with the input kept; put right, they are
    saved and the page says so."""
    create_operator(app)
    sign_in()
    page.click("nav a:text('Alerts')")
    page.click(".tabs a:text('Rule settings')")
    expect(page.locator("#retained_warning_bytes")).to_have_value("5 GB")
    page.fill("#retained_warning_bytes", "20 GB")
    page.fill("#slot_inactive_minutes", "0")
    page.fill("#repeat_minutes", "-15")
    page.fill("#pipeline_lag_warning_seconds", "1800")  # the critical one's default
    page.click("#settings-form button.primary")
    expect(page.locator("#retained_warning_bytes-error")).to_have_text(
        "The warning threshold must be below the critical one."
    )
    expect(page.locator("#slot_inactive_minutes-error")).to_contain_text("from 1 to")
    expect(page.locator("#repeat_minutes-error")).to_contain_text("from 1 to")
    expect(page.locator("#retained_warning_bytes")).to_have_value("20 GB")
    expect(page.locator("#repeat_minutes")).to_have_value("-15")
    expect(page.locator("#pipeline_lag_warning_seconds-error")).to_have_text(
        "The warning threshold must be below the critical one."
    )
    expect(page.locator("#pipeline_lag_warning_seconds")).to_have_value("1800")
    # Put right: saved, and the page says so.
    page.fill("#retained_warning_bytes", "2 GB")
    page.fill("#slot_inactive_minutes", "")
    page.fill("#repeat_minutes", "45")
    page.fill("#pipeline_lag_warning_seconds", "600")
    page.click("#settings-form button.primary")
    expect(page.locator(".flash")).to_have_text("Alert settings saved.")
    expect(page.locator("#slot_inactive_minutes")).to_have_value("")
    expect(page.locator("#pipeline_lag_warning_seconds")).to_have_value("600")


def test_send_a_test_notification_in_place(app, live_server, page, httpserver, sign_in):
    """Send test on a new channel delivers one webhook and shows the outcome and the delivery row
    without leaving the page."""
    create_operator(app)
    httpserver.expect_request("/hook", method="POST").respond_with_data("", status=204)
    sign_in()
    page.goto(live_server + "/alerts/channels/new")
    page.fill("#name", "ops-hook")
    page.fill("#url", httpserver.url_for("/hook"))
    page.fill("#secret", "a-long-enough-signing-secret")
    page.click("main button.primary")
    page.click("#channels-table a:text('ops-hook')")
    expect(page.locator("#no-deliveries")).to_be_visible()
    page.evaluate("window.marker = 'same page'")
    page.click("#send-test")
    expect(page.locator("#test-outcome")).to_contain_text("Delivered (HTTP 204)")
    expect(page.locator("#delivery-table tbody tr")).to_have_count(1)
    assert page.evaluate("window.marker") == "same page"
    assert len(httpserver.log) == 1
