"""The alert pages in the browser, server side: the firing list with its buttons, silences, the
history, the rule settings, the channels, the banner, and alerts on the source page, the
dashboard and the source form. Bad input comes back beside its field with the input kept."""

from __future__ import annotations

import itertools
import re
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from rosetta_web.alerts.engine import trends
from rosetta_web.alerts.engine.settings import GIB
from rosetta_web.extensions import db as _db
from rosetta_web.models import Alert, AlertSettings, Channel, Silence, Source
from rosetta_web.timeutil import utcnow

from .factories import add_alert as store_alert
from .factories import new_server, new_source, new_state, slot_metric
from .seed import SOURCE

MIB = 1024**2
HX = {"HX-Request": "true"}
KEYS = itertools.count(1)


def add_source(app, name: str = "shop", **fields: Any) -> int:
    with app.app_context():
        source = new_source(name, **fields)
        _db.session.add(source)
        _db.session.commit()
        return source.id


def add_alert(app, source_id: int | None, **fields: Any) -> int:
    """Store an alert as the engine would; firing retained_wal warning unless told."""
    now = utcnow()
    values: dict[str, Any] = {
        "source_name": "shop",
        "value": 6 * GIB,
        "threshold": 5 * GIB,
        "message": "slot `orders` on h:5432 retains 6144 MB of WAL (warning at 5120 MB)",
        "started_at": now - timedelta(minutes=30),
        "evaluated_at": now,
        **fields,
    }
    values.setdefault("key", f"{values.get('rule', 'retained_wal')}:test:{next(KEYS)}")
    return store_alert(app, source_id, **values)


def add_silence(app, source_id: int, rule: str | None = None, hours: float = 1) -> int:
    with app.app_context():
        silence = Silence(
            source_id=source_id,
            rule=rule,
            ends_at=utcnow() + timedelta(hours=hours),
            comment="maintenance",
            created_by="bob",
        )
        _db.session.add(silence)
        _db.session.commit()
        return silence.id


def banner(html: str) -> str:
    """Return the text of the page's alert banner ('' when none shows)."""
    match = re.search(r'<div id="alert-banner"[^>]*>(.*?)</div>', html, re.S)
    assert match, "no banner element"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", match.group(1))).strip()


def text(response: Any) -> str:
    return response.get_data(as_text=True)


# The firing list


def test_firing_alerts_worst_first_with_their_details(browser, app):
    """Critical first, then the oldest; each shows its message, source link, slot, value
    against threshold, age, and its marks (silenced until, acknowledged by)."""
    shop = add_source(app)
    now = utcnow()
    old_warning = add_alert(app, shop, started_at=now - timedelta(hours=3))
    new_critical = add_alert(
        app,
        shop,
        severity="critical",
        value=11 * GIB,
        threshold=10 * GIB,
        message="slot `orders` on h:5432 retains 11 GB (critical at 10 GB)",
        started_at=now - timedelta(minutes=5),
    )
    old_critical = add_alert(
        app,
        shop,
        rule="source_unreachable",
        severity="critical",
        slot_name=None,
        value=4,
        threshold=3,
        message="source `shop` failed 4 rounds in a row (critical at 3): timeout",
        started_at=now - timedelta(hours=1),
        acknowledged_by="bob",
        acknowledged_at=now - timedelta(minutes=2),
    )
    add_alert(app, shop, state="resolved", resolved_at=now, message="an old one")
    add_silence(app, shop, "retained_wal")
    html = text(browser.get("/alerts/"))
    firing = html[html.index('id="firing-list"') : html.index('id="silences"')]
    order = [
        int(i) for i in re.findall(r'<article class="alert-item[^"]*" id="alert-(\d+)"', firing)
    ]
    assert order == [old_critical, new_critical, old_warning]
    assert "an old one" not in firing
    assert "<code>orders</code>" in firing  # the message's `names` as code
    assert f'href="/sources/{shop}"' in firing
    assert "11 GB retained (critical at 10 GB)" in firing
    assert "4 failed rounds in a row (critical at 3)" in firing
    assert "firing for" in firing and "1 h" in firing
    assert f'id="alert-{new_critical}-silenced"' in firing  # silenced, still shown
    assert f'id="alert-{old_critical}-silenced"' not in firing  # the silence is for one rule
    assert "acknowledged by bob" in firing
    assert f'id="alert-{old_critical}-ack"' not in firing  # nothing left to acknowledge
    assert f'id="alert-{new_critical}-ack"' in firing


def test_acknowledge_in_place_and_by_form(browser, app):
    """htmx gets the row back marked with who acknowledged; a plain form is redirected."""
    shop = add_source(app)
    first, second = add_alert(app, shop), add_alert(app, shop, slot_name="other")
    response = browser.post(f"/alerts/{first}/ack", headers=HX)
    row = text(response)
    assert response.status_code == 200 and row.lstrip().startswith("<article")
    assert "acknowledged by alice" in row and f'id="alert-{first}-ack"' not in row
    response = browser.post(f"/alerts/{second}/ack")
    assert response.status_code == 303 and response.headers["Location"] == "/alerts/"
    with app.app_context():
        acked = _db.session.scalars(select(Alert.acknowledged_by).order_by(Alert.id)).all()
    assert acked == ["alice", "alice"]


def test_acknowledging_a_resolved_alert_says_so(browser, app):
    """Acknowledging a resolved alert says it resolved first; an unknown alert is a 404."""
    shop = add_source(app)
    alert = add_alert(app, shop, state="resolved", resolved_at=utcnow())
    row = text(browser.post(f"/alerts/{alert}/ack", headers=HX))
    assert "resolved before it was acknowledged" in row
    assert browser.post("/alerts/999/ack", headers=HX).status_code == 404


def test_acknowledge_needs_the_csrf_token(browser, app):
    """An acknowledge posted without the CSRF token is a 400 and records no one."""
    shop = add_source(app)
    alert = add_alert(app, shop)
    response = browser.client.post(f"/alerts/{alert}/ack")
    assert response.status_code == 400
    with app.app_context():
        assert _db.session.get(Alert, alert).acknowledged_by is None


# Silences


def test_silence_from_the_row_in_place(browser, app):
    """A silence ending in the past comes back in the row beside its field, input kept; a
    good one marks the row silenced and empties the banner, out of band."""
    shop = add_source(app)
    alert = add_alert(app, shop)
    prefix = f"alert-{alert}-"
    bad = {
        f"{prefix}csrf_token": browser.token,
        f"{prefix}rule": "",
        f"{prefix}ends_at": "2001-02-03T04:05",
        f"{prefix}comment": "deploying",
    }
    response = browser.post(f"/alerts/{alert}/silence", bad, headers=HX)
    row = text(response)
    assert response.status_code == 200
    assert f'id="{prefix}ends_at-error">The silence must end in the future.' in row
    assert 'value="2001-02-03T04:05"' in row and 'value="deploying"' in row
    assert f'id="{prefix}silence" open' in row  # the form stays open
    with app.app_context():
        assert _db.session.scalar(select(Silence.id)) is None

    good = {**bad, f"{prefix}ends_at": "2099-01-01T00:00"}
    row = text(browser.post(f"/alerts/{alert}/silence", good, headers=HX))
    assert "silenced until 2099-01-01 00:00:00 UTC" in row
    assert banner(row) == ""
    assert 'id="silences-list" hx-swap-oob="true"' in row and "deploying" in row
    with app.app_context():
        silence = _db.session.scalars(select(Silence)).one()
    assert (silence.source_id, silence.rule, silence.created_by) == (shop, None, "alice")


def test_silence_one_rule_from_the_row_without_htmx(browser, app):
    """Without htmx, a row's silence stores one rule for the alert's own source (a source_id sent
    along is ignored); a bad end date gives the whole page with the error."""
    shop = add_source(app)
    alert = add_alert(app, shop, rule="slot_inactive", value=45, threshold=30)
    prefix = f"alert-{alert}-"
    data = {
        f"{prefix}csrf_token": browser.token,
        f"{prefix}rule": "slot_inactive",
        f"{prefix}ends_at": "2099-01-01T00:00",
        # A source_id sent along is ignored: the alert's own source is silenced.
        f"{prefix}source_id": "12345",
    }
    response = browser.post(f"/alerts/{alert}/silence", data)
    assert response.status_code == 303
    with app.app_context():
        silence = _db.session.scalars(select(Silence)).one()
    assert (silence.source_id, silence.rule) == (shop, "slot_inactive")
    # A bad one, without htmx: the whole page, the row's form open with its error.
    response = browser.post(f"/alerts/{alert}/silence", {**data, f"{prefix}ends_at": "soon"})
    assert response.status_code == 200
    assert "Enter a date and time such as 2026-12-01T08:00." in text(response)


def test_silences_page_form_create_list_and_end(browser, app):
    """The page's form: errors beside the fields with the input kept; a good one is listed
    with who made it, and End now ends it."""
    shop = add_source(app)
    add_source(app, "billing")
    response = browser.post(
        "/alerts/silences",
        {"source_id": "0", "rule": "retained_wal", "ends_at": "2000-01-01T00:00", "comment": "x"},
    )
    html = text(response)
    assert response.status_code == 200
    assert 'id="source_id-error">Choose a source.' in html
    assert 'id="ends_at-error">The silence must end in the future.' in html
    assert 'value="2000-01-01T00:00"' in html
    assert '<details class="new-silence" id="new-silence" open>' in html

    response = browser.post(
        "/alerts/silences",
        {
            "source_id": str(shop),
            "rule": "",
            "ends_at": "2099-06-01T08:00+02:00",
            "comment": "move",
        },
    )
    assert response.status_code == 303
    html = text(browser.get("/alerts/"))
    listed = html[html.index('id="silences-list"') : html.index('id="new-silence"')]
    assert "shop" in listed and "every rule" in listed and "2099-06-01 06:00:00 UTC" in listed
    assert "move" in listed and "alice" in listed
    with app.app_context():
        silence_id = _db.session.scalar(select(Silence.id))
    response = browser.post(f"/alerts/silences/{silence_id}/end")
    assert response.status_code == 303
    assert 'id="no-silences"' in text(browser.get("/alerts/"))


# History


def test_history_filters_and_pages(browser, app):
    """50 a page, newest first; filters by source, rule, state and time range; htmx asks for
    the history alone."""
    shop, billing = add_source(app), add_source(app, "billing")
    now = utcnow()
    for index in range(55):
        add_alert(
            app,
            shop,
            state="resolved",
            started_at=now - timedelta(hours=100 - index),
            resolved_at=now - timedelta(hours=99 - index),
            message=f"old number {index}",
        )
    add_alert(app, billing, rule="source_unreachable", slot_name=None, message="billing down")

    html = text(browser.get("/alerts/"))
    assert "56 alerts; page 1 of 2, newest first." in html
    assert html.count('<tr id="history-') == 50
    assert "billing down" in html and "old number 54" in html and "old number 5<" not in html
    assert 'href="/alerts/?page=2"' in html

    page2 = browser.get("/alerts/?page=2", headers=HX)
    fragment = text(page2)
    assert fragment.lstrip().startswith('<section id="alert-history"')
    assert "<html" not in fragment and fragment.count('<tr id="history-') == 6
    assert "HX-Request" in page2.headers["Vary"]
    assert page2.headers["HX-Push-Url"] == "/alerts/?page=2"

    by_rule = text(browser.get("/alerts/?rule=source_unreachable"))
    assert by_rule.count('<tr id="history-') == 1
    by_source = text(browser.get(f"/alerts/?source_id={shop}&state=resolved"))
    assert "55 alerts" in by_source
    assert "billing down" not in by_source.split('id="alert-history"')[1]
    start = (now - timedelta(hours=50, minutes=30)).strftime("%Y-%m-%dT%H:%M")
    end = (now - timedelta(hours=47, minutes=30)).strftime("%Y-%m-%dT%H:%M")
    ranged = text(browser.get(f"/alerts/?state=resolved&start={start}&end={end}"))
    # Those that overlap the range: started before its end, resolved after its start.
    assert ranged.count('<tr id="history-') == 4


def test_history_bad_filters_are_shown_beside_them(browser, app):
    """Bad history filters (a date that is no date, an unknown rule, an end before the start) show
    their errors beside them, with what was typed kept."""
    add_source(app)
    html = text(browser.get("/alerts/?start=yesterday&end=2026-01-01T00:00&rule=nope"))
    assert 'id="history-start-error">Enter a date and time' in html
    assert 'id="history-rule-error">Choose a rule from the list.' in html
    assert 'value="yesterday"' in html
    html = text(browser.get("/alerts/?start=2026-02-01T00:00&end=2026-01-01T00:00"))
    assert 'id="history-end-error">The end must be after the start.' in html


# Rule settings


def test_settings_page_shows_sizes_as_typed(browser, app):
    """The settings page shows the byte thresholds as sizes (5 GB, 10 GB), not raw bytes."""
    html = text(browser.get("/alerts/settings"))
    assert re.search(r'<input id="retained_warning_bytes" [^>]*value="5 GB">', html)
    assert 'value="10 GB"' in html and 'name="slot_inactive_minutes"' in html


def test_settings_bad_input_beside_the_fields_with_input_kept(browser, app):
    """Warning at or above critical, zero or negative durations: each beside its field."""
    browser.get("/alerts/settings")  # the row, with the defaults
    data = {
        "retained_warning_bytes": "20 GB",
        "retained_critical_bytes": "10 GB",
        "slot_inactive_minutes": "0",
        "consumer_stalled_minutes": "-5",
        "unreachable_rounds": "3",
        "forecast_hours": "6",
        "repeat_minutes": "60",
    }
    response = browser.post("/alerts/settings", data)
    html = text(response)
    assert response.status_code == 200
    assert (
        'id="retained_warning_bytes-error">The warning threshold must be below the critical one.'
        in html
    )
    assert 'id="slot_inactive_minutes-error">Enter a whole number of minutes' in html
    assert 'id="consumer_stalled_minutes-error">Enter a whole number of minutes' in html
    assert 'value="20 GB"' in html and 'value="-5"' in html
    response = browser.post("/alerts/settings", {**data, "retained_warning_bytes": "lots"})
    assert 'id="retained_warning_bytes-error">Enter a size such as 5 GB' in text(response)
    assert 'value="lots"' in text(response)
    with app.app_context():
        settings = _db.session.get(AlertSettings, 1)
        assert settings.retained_warning_bytes == 5 * GIB and settings.slot_inactive_minutes == 30


def test_settings_saved_and_blank_turns_a_rule_off(browser, app):
    """Saved settings are stored as bytes and minutes, a blank one as null (the rule off), and the
    page says so with the sizes as typed."""
    data = {
        "retained_warning_bytes": "512 MB",
        "retained_critical_bytes": "2GB",
        "slot_inactive_minutes": "",
        "consumer_stalled_minutes": "15",
        "unreachable_rounds": "5",
        "forecast_hours": "12",
        "repeat_minutes": "30",
    }
    response = browser.post("/alerts/settings", data)
    assert response.status_code == 303 and response.headers["Location"] == "/alerts/settings"
    with app.app_context():
        settings = _db.session.get(AlertSettings, 1)
        assert settings.retained_warning_bytes == 512 * MIB
        assert settings.retained_critical_bytes == 2 * GIB
        assert settings.slot_inactive_minutes is None
        assert settings.repeat_minutes == 30
    html = text(browser.get("/alerts/settings"))
    assert "Alert settings saved." in html and 'value="512 MB"' in html


# Channels


WEBHOOK = {
    "name": "ops-hook",
    "type": "webhook",
    "url": "https://hooks.example.com/rosetta?token=sekrit-token",
    "secret": "a-signing-secret-of-32-characters",
    "min_severity": "warning",
}


def test_channel_bad_input_beside_the_fields_with_input_kept(browser, app):
    """A bad webhook or Apprise URL and a short secret come back beside their fields with the input
    kept (never the secret), and no channel is stored."""
    data = {**WEBHOOK, "url": "ftp://files.example.com/x", "secret": "short"}
    response = browser.post("/alerts/channels/new", data)
    html = text(response)
    assert response.status_code == 200
    assert 'id="url-error">A webhook URL starts with http:// or https://' in html
    assert 'id="secret-error">A webhook needs a signing secret of at least 16' in html
    assert 'value="ftp://files.example.com/x"' in html and 'value="ops-hook"' in html
    assert "short" not in html  # a secret is never sent back
    response = browser.post(
        "/alerts/channels/new", {**WEBHOOK, "type": "apprise", "url": "nonsense://what"}
    )
    assert 'id="url-error">Apprise cannot read this URL.' in text(response)
    with app.app_context():
        assert _db.session.scalar(select(Channel.id)) is None


def test_channel_aimed_at_an_internal_target_is_refused_beside_the_url(browser, app):
    """The metadata service, a link-local or an unspecified address: the form says why beside
    the URL, keeps what was typed, and stores nothing."""
    for url, said in (
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254: a cloud metadata address"),
        ("http://metadata.google.internal/v1/", "metadata.google.internal: a cloud metadata name"),
        ("http://[fe80::1]/hook", "fe80::1: a link-local address"),
        ("http://0.0.0.0:9000/hook", "0.0.0.0: an unspecified address"),
    ):
        response = browser.post("/alerts/channels/new", {**WEBHOOK, "url": url})
        html = text(response)
        assert response.status_code == 200
        assert f'id="url-error">Rosetta does not send to {said}.' in html, url
        assert f'value="{url}"' in html
    with app.app_context():
        assert _db.session.scalar(select(Channel.id)) is None


def test_channel_create_list_edit_and_delete(browser, app):
    """The URL shows masked only; on edit it is blank ("leave blank to keep") and kept when
    left blank; the sources are check boxes."""
    shop = add_source(app)
    add_source(app, "billing")
    response = browser.post("/alerts/channels/new", {**WEBHOOK, "source_ids": [str(shop)]})
    assert response.status_code == 303 and response.headers["Location"] == "/alerts/channels/"
    listing = text(browser.get("/alerts/channels/"))
    assert "ops-hook" in listing and "sekrit-token" not in listing
    assert "hooks.example.com" in listing and "1 source" in listing
    assert 'href="/alerts/channels/1"' in listing and 'id="test-1"' in listing

    form = text(browser.get("/alerts/channels/1/edit"))
    assert 'name="url" type="text" value=""' in form and "sekrit-token" not in form
    assert "Now: <code" in form
    # By name: billing, then shop.
    assert 'type="checkbox" name="source_ids" value="2" id="source_ids-0">' in form
    assert f'type="checkbox" name="source_ids" value="{shop}" id="source_ids-1" checked>' in form
    response = browser.post(
        "/alerts/channels/1/edit",
        {**WEBHOOK, "url": "", "secret": "", "min_severity": "critical"},
    )
    assert response.status_code == 303
    with app.app_context():
        channel = _db.session.get(Channel, 1)
        assert channel.url == WEBHOOK["url"] and channel.secret == WEBHOOK["secret"]
        assert channel.min_severity == "critical" and channel.source_ids == []
    detail = text(browser.get("/alerts/channels/1"))
    assert "critical alerts only" in detail and "every source" in detail
    assert 'id="no-deliveries"' in detail and "sekrit-token" not in detail

    assert "Delete channel ops-hook?" in text(browser.get("/alerts/channels/1/delete"))
    assert browser.post("/alerts/channels/1/delete").status_code == 303
    with app.app_context():
        assert _db.session.get(Channel, 1) is None


def test_send_a_test_notification_shows_the_outcome_in_place(browser, app, httpserver):
    """Delivered, or the HTTP status, or the error: as a fragment, with the fresh log."""
    httpserver.expect_request("/ok", method="POST").respond_with_data("", status=204)
    httpserver.expect_request("/broken", method="POST").respond_with_data("no", status=500)
    for name, path in (("good", "/ok"), ("bad", "/broken")):
        browser.post(
            "/alerts/channels/new", {**WEBHOOK, "name": name, "url": httpserver.url_for(path)}
        )
    with app.app_context():
        ids = {row.name: row.id for row in _db.session.execute(select(Channel.name, Channel.id))}
    outcome = text(browser.post(f"/alerts/channels/{ids['good']}/test", headers=HX))
    assert "Delivered (HTTP 204)" in outcome and "delivery-log" not in outcome
    outcome = text(
        browser.post(f"/alerts/channels/{ids['bad']}/test", {"with_log": "1"}, headers=HX)
    )
    assert "Not delivered: HTTP 500" in outcome
    assert (
        'id="delivery-log" hx-swap-oob="true"' in outcome
        and "<td>test</td>" in outcome
        and "test message" in outcome
    )
    detail = text(browser.get(f"/alerts/channels/{ids['good']}"))
    assert "delivered" in detail and "HTTP 204" in detail and "<td>test</td>" in detail
    listing = text(browser.get("/alerts/channels/"))
    assert listing.count('class="ok-text">delivered') == 1
    assert listing.count('class="danger-text">failed') == 1


# The banner


def test_banner_on_every_page_counts_unsilenced_firing_alerts(browser, app):
    """The banner on every page counts firing alerts by severity, acknowledged ones included, and
    leaves out resolved and silenced ones."""
    shop, billing = add_source(app), add_source(app, "billing")
    html = text(browser.get("/"))
    assert banner(html) == ""
    add_alert(app, shop)
    assert banner(text(browser.get("/sources/"))) == "1 warning alert firing See alerts →"
    critical = add_alert(app, billing, severity="critical", slot_name="x")
    add_alert(app, shop, state="resolved", resolved_at=utcnow(), severity="critical")
    for path in ("/", "/sources/", f"/sources/{shop}", "/alerts/", "/alerts/channels/"):
        html = text(browser.get(path))
        assert banner(html) == "1 critical and 1 warning alerts firing See alerts →", path
        assert 'class="alert-banner alert-banner-critical" href="/alerts/"' in html
    with app.app_context():
        alert = _db.session.get(Alert, critical)
        alert.acknowledged_by = "bob"  # acknowledging stops repeats, not the banner
        _db.session.commit()
    assert "1 critical" in banner(text(browser.get("/")))
    add_silence(app, billing)
    html = text(browser.get("/"))
    assert banner(html) == "1 warning alert firing See alerts →"
    assert 'alert-banner-warning"' in html


def test_banner_is_one_query_and_never_on_error_pages(browser, app, count_queries):
    """The banner's counts take one query; no banner shows on a 404 or when signed out."""
    from rosetta_web.alerts.services import banner_counts

    shop = add_source(app)
    add_alert(app, shop, severity="critical")
    add_silence(app, shop, "slot_inactive")
    with app.app_context(), count_queries() as counter:
        assert banner_counts() == {"critical": 1, "warning": 0}
    assert len(counter.statements) == 1
    response = browser.get("/no-such-page")
    assert response.status_code == 404 and 'id="alert-banner"' not in text(response)
    assert "alert-banner" in text(browser.get("/"))
    # Signed out: no banner, no query for it.
    html = text(app.test_client().get("/login"))
    assert "alert-banner-critical" not in html


def test_banner_left_out_when_the_database_fails(browser, app, monkeypatch):
    """A page that got this far is served without the banner rather than broken."""
    from rosetta_web.alerts import context

    def down() -> dict[str, int]:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    add_alert(app, add_source(app))
    monkeypatch.setattr(context, "banner_counts", down)
    response = browser.get("/sources/")
    assert response.status_code == 200 and banner(text(response)) == ""


def test_dashboard_poll_updates_the_banner_out_of_band(browser, app):
    """The dashboard's htmx refresh carries the banner out of band, with its count."""
    add_alert(app, add_source(app))
    fragment = text(browser.get("/", headers=HX))
    assert '<div id="alert-banner" hx-swap-oob="true">' in fragment
    assert banner(fragment) == "1 warning alert firing See alerts →"


# Nav, source page, dashboard, source form


def test_nav_has_alerts(browser):
    """The nav marks Alerts as the current page on the settings and channels pages."""
    html = text(browser.get("/alerts/settings"))
    assert '<a href="/alerts/" aria-current="page">Alerts</a>' in html
    html = text(browser.get("/alerts/channels/"))
    assert '<a href="/alerts/" aria-current="page">Alerts</a>' in html


def _sampled_slots(app, source_id: int, slots: dict[str, dict[str, Any]]) -> None:
    """Give a source a server whose last sample saw these slots, with their trends."""
    with app.app_context():
        now = utcnow()
        server = new_server(last_sampled_at=now)
        growths = {name: slot.pop("growth") for name, slot in slots.items()}
        _db.session.add(server)
        _db.session.flush()
        rows = {
            name: slot_metric(server.id, now, name, database="d", **figures)
            for name, figures in slots.items()
        }
        # The trend as the round stores it: the fit, and the figures of the sample it is from.
        server.slot_trends = {
            name: {**trends.update(None, now, row, None), "growth": growths[name]}
            for name, row in rows.items()
        }
        _db.session.add(new_state(source_id, server_id=server.id, last_sampled_at=now))
        _db.session.add_all(rows.values())
        _db.session.commit()


def test_source_page_shows_its_alerts_and_forecast(browser, app):
    """A source's page shows its own firing and recently resolved alerts, the thresholds, and a
    forecast for each growing slot (not the steady one)."""
    shop = add_source(app)
    _sampled_slots(
        app,
        shop,
        {
            # 1 GB of room left at 300 MB/h: lost in about 3 h 24 min.
            "orders": {
                "active": False,
                "retained_bytes": 2 * GIB,
                "safe_wal_size": GIB,
                "growth": 300 * MIB,
            },
            # 2 GB below the critical 10 GB, at 1 GB/h: about 2 h.
            "events": {"retained_bytes": 8 * GIB, "growth": GIB},
            "steady": {"retained_bytes": GIB, "growth": 0},
        },
    )
    firing = add_alert(app, shop, severity="critical", message="it is `big`")
    add_alert(app, shop, state="resolved", resolved_at=utcnow(), message="it was fine after")
    add_alert(app, add_source(app, "other"), message="not this source")
    html = text(browser.get(f"/sources/{shop}"))
    section = html[html.index('id="source-alerts"') : html.index("<h2>WAL trend</h2>")]
    assert f'id="alert-{firing}"' in section and "it is <code>big</code>" in section
    assert f'id="alert-{firing}-ack"' in section
    assert "Recently resolved (1)" in section and "it was fine after" in section
    assert "not this source" not in section
    assert "warns at <strong>5 GB</strong> and is critical at <strong>10 GB</strong>" in section
    forecasts = re.findall(r"<li[^>]*>(.*?)</li>", section.split('id="forecasts"')[1], re.S)
    assert len(forecasts) == 2  # the steady slot is not growing: nothing said
    # (a few seconds pass between the sample and the page)
    assert re.match(
        r"Slot <code>events</code> reaches the critical 10 GB in about (2 h|1 h 59 min) at "
        r"1024 MB/h",
        forecasts[0],
    )
    assert re.match(
        r"Slot <code>orders</code> is lost in about 3 h 2[34] min at 300 MB/h", forecasts[1]
    )


def test_source_page_without_alerts(browser, app):
    """A source with no alerts and no slots says nothing is firing and shows no forecasts."""
    shop = add_source(app)
    html = text(browser.get(f"/sources/{shop}"))
    assert 'id="source-nothing-firing"' in html and 'id="forecasts"' not in html


def test_dashboard_summary_counts_and_soonest_forecast(browser, app):
    """The dashboard's alerts card leaves silenced alerts out of its counts and names the slot
    forecast to reach the critical threshold soonest."""
    shop = add_source(app)
    _sampled_slots(
        app,
        shop,
        {
            "orders": {"retained_bytes": 9 * GIB, "growth": 2 * GIB},  # critical in 30 min
            "events": {"retained_bytes": GIB, "safe_wal_size": 4 * GIB, "growth": GIB},
        },
    )
    add_alert(app, shop, severity="critical")
    add_alert(app, shop)
    add_alert(app, shop, slot_name="silenced")
    add_silence(app, shop, hours=2)
    html = text(browser.get("/"))
    card = html[html.index('id="alerts-card"') :]
    # Silenced alerts are not counted.
    assert "0 critical" in card[:800] and "0 warning" in card[:800]
    line = re.sub(r"\s+", " ", re.search(r'id="soonest-forecast">(.*?)</span>', html, re.S)[1])
    assert "Forecast: slot <strong>orders</strong>" in line
    assert re.search(r"reaches the critical 10 GB in about (30|29) min at 2048 MB/h", line)
    assert 'class="hint forecast-line urgent"' in html


def test_source_form_has_the_alert_overrides(browser, app):
    """Folded away with the global settings as placeholders; saved; bad ones beside them."""
    form = text(browser.get("/sources/new"))
    assert '<details class="subform" id="alert_overrides">' in form
    assert 'name="alert_overrides-retained_warning_bytes"' in form
    assert 'placeholder="global: 5 GB"' in form and 'placeholder="global: 30"' in form
    data = {**SOURCE, "alert_overrides-retained_critical_bytes": "4 GB"}
    response = browser.post("/sources/new", data)
    html = text(response)
    assert response.status_code == 200
    assert "The warning threshold must be below the critical one" in html
    assert 'value="4 GB"' in html and '<details class="subform" id="alert_overrides" open>' in html
    data["alert_overrides-retained_warning_bytes"] = "1 GB"
    data["alert_overrides-slot_inactive_minutes"] = "5"
    assert browser.post("/sources/new", data).status_code == 303
    with app.app_context():
        source = _db.session.scalars(select(Source)).one()
        assert source.alert_overrides["retained_critical_bytes"] == 4 * GIB
        assert source.alert_overrides["slot_inactive_minutes"] == 5
        assert source.alert_overrides["forecast_hours"] is None
    form = text(browser.get(f"/sources/{source.id}/edit"))
    assert 'id="alert_overrides" open' in form and "3 set" in form
    assert 'name="alert_overrides-retained_critical_bytes" placeholder="global: 10 GB"' in form
    assert 'value="4 GB"' in form


def test_every_page_says_the_same_forecast_as_the_alert(browser, app, api):
    """One stored fit: the alert's message, the source page, the dashboard and the API give
    the same time for one moment, counted from the sample the fit is from."""
    import time_machine

    from rosetta_web.alerts.engine.evaluation import evaluate
    from rosetta_web.alerts.engine.settings import load_settings

    shop = add_source(app)
    with time_machine.travel(utcnow(), tick=False) as traveller:
        sampled = utcnow()
        _sampled_slots(
            app,
            shop,
            {
                "orders": {
                    "active": False,
                    "retained_bytes": 2 * GIB,
                    "safe_wal_size": GIB,  # at 300 MB/h: lost in 3 h 24 min 48 s
                    "growth": 300 * MIB,
                }
            },
        )
        with app.app_context():
            load_settings().forecast_hours = 6
            _db.session.commit()
        traveller.shift(timedelta(minutes=4))  # the pages are read a while after the sample
        with app.app_context():
            evaluate()
            message = _db.session.scalar(select(Alert.message))
        words = "is lost in about 3 h 20 min at 300 MB/h"
        assert message == f"slot `orders` on h:5432 {words}"
        source_page = text(browser.get(f"/sources/{shop}"))
        assert f"Slot <code>orders</code> {words}" in source_page
        html = text(browser.get("/"))
        line = re.sub(r"\s+", " ", re.search(r'id="soonest-forecast">(.*?)</span>', html, re.S)[1])
        assert line.startswith("Forecast: slot <strong>orders</strong> on ")
        assert line.endswith(f"</a> {words}.")
        [slot] = api.get(f"/api/v1/sources/{shop}/slots").get_json()
    eta = sampled + timedelta(hours=GIB / (300 * MIB))
    assert slot["eta_lost"] == eta.isoformat().replace("+00:00", "Z")


# Pipelines


def test_settings_refuse_bad_pipeline_values_beside_their_fields_with_input_kept(browser, app):
    """The pipeline settings: zero minutes, text for seconds and a lag warning at or above its
    critical threshold each come back beside the field, as typed, and nothing is stored; good
    values are stored, and blank turns a rule off."""
    browser.get("/alerts/settings")  # the row, with the defaults
    data = {
        "retained_warning_bytes": "5 GB",
        "retained_critical_bytes": "10 GB",
        "slot_inactive_minutes": "30",
        "consumer_stalled_minutes": "30",
        "unreachable_rounds": "3",
        "forecast_hours": "6",
        "pipeline_failed_minutes": "0",
        "pipeline_lag_warning_seconds": "1800",
        "pipeline_lag_critical_seconds": "600",
        "repeat_minutes": "60",
    }
    html = text(browser.post("/alerts/settings", data))
    assert 'id="pipeline_failed_minutes-error">Enter a whole number of minutes from 1' in html
    assert (
        'id="pipeline_lag_warning_seconds-error">The warning threshold must be below the '
        "critical one." in html
    )
    assert re.search(r'<input [^>]*id="pipeline_failed_minutes" [^>]*value="0"', html)
    assert re.search(r'<input [^>]*id="pipeline_lag_warning_seconds" [^>]*value="1800"', html)
    assert re.search(r'<input [^>]*id="pipeline_lag_critical_seconds" [^>]*value="600"', html)
    html = text(browser.post("/alerts/settings", {**data, "pipeline_lag_critical_seconds": "½ h"}))
    assert 'id="pipeline_lag_critical_seconds-error">' in html and 'value="½ h"' in html
    with app.app_context():
        stored = _db.session.get(AlertSettings, 1)
        assert (
            stored.pipeline_failed_minutes,
            stored.pipeline_lag_warning_seconds,
            stored.pipeline_lag_critical_seconds,
        ) == (15, 300, 1800)
    good = {
        **data,
        "pipeline_failed_minutes": "",
        "pipeline_lag_warning_seconds": "60",
        "pipeline_lag_critical_seconds": "600",
    }
    assert browser.post("/alerts/settings", good).status_code == 303
    with app.app_context():
        stored = _db.session.get(AlertSettings, 1)
        assert (
            stored.pipeline_failed_minutes,
            stored.pipeline_lag_warning_seconds,
            stored.pipeline_lag_critical_seconds,
        ) == (None, 60, 600)
    page = text(browser.get("/alerts/settings"))
    assert 'placeholder="blank: off; default 15"' in page
    assert "Pipeline behind: warning at (seconds)" in page


def test_source_form_overrides_a_pipeline_threshold_against_the_global_one(browser, app):
    """A source's pipeline lag warning at or above the global critical threshold is refused
    beside the field, saying whose threshold it is; under it, it is saved."""
    form = text(browser.get("/sources/new"))
    assert 'name="alert_overrides-pipeline_lag_warning_seconds"' in form
    assert 'placeholder="global: 300"' in form and 'placeholder="global: 1800"' in form
    data = {**SOURCE, "alert_overrides-pipeline_lag_warning_seconds": "2400"}
    html = text(browser.post("/sources/new", data))
    assert (
        'id="alert_overrides-pipeline_lag_warning_seconds-error">The warning threshold must be '
        "below the critical one (the global: 1800 seconds)." in html
    )
    assert 'value="2400"' in html
    data["alert_overrides-pipeline_lag_critical_seconds"] = "3600"
    assert browser.post("/sources/new", data).status_code == 303
    with app.app_context():
        source = _db.session.scalars(select(Source)).one()
        assert source.alert_overrides["pipeline_lag_warning_seconds"] == 2400
        assert source.alert_overrides["pipeline_lag_critical_seconds"] == 3600
        assert source.alert_overrides["pipeline_failed_minutes"] is None


def test_pipeline_alerts_show_their_labels_and_measures(browser, app):
    """The alerts page names the pipeline rules and says their figures in words; the source
    page of a source with a pipeline says when its pipelines alert."""
    from .factories import new_destination

    shop = add_source(app)
    with app.app_context():
        from rosetta_web.models import Pipeline

        _db.session.add(
            Pipeline(
                name="orders-to-sf",
                source_id=shop,
                destination=new_destination("warehouse"),
                status="START",
            )
        )
        _db.session.commit()
    add_alert(
        app,
        shop,
        rule="pipeline_lag",
        severity="critical",
        slot_name=None,
        value=1900.0,
        threshold=1800.0,
        message="pipeline `orders-to-sf` is 31 min behind its source (critical at 30 min)",
    )
    add_alert(
        app,
        shop,
        rule="pipeline_failed",
        severity="critical",
        slot_name=None,
        value=3.0,
        threshold=None,
        message="pipeline `orders-to-sf` failed 3 min ago: refused",
    )
    html = text(browser.get("/alerts/"))
    firing = html[html.index('id="firing-list"') : html.index('id="silences"')]
    assert "Pipeline behind</strong>" in firing and "Pipeline failed</strong>" in firing
    assert "31 min behind (critical at 30 min)" in firing
    assert "failed for 3 min" in firing
    assert "pipeline <code>orders-to-sf</code> failed 3 min ago" in firing
    page = text(browser.get(f"/sources/{shop}"))
    assert (
        '<span id="pipeline-thresholds">Its pipelines: critical when failed or retrying for '
        "15 min; behind their source, warning at 5 min and critical at 30 min.</span>" in page
    )
    assert 'id="pipeline-thresholds"' not in text(browser.get(f"/sources/{add_source(app, 'x')}"))
