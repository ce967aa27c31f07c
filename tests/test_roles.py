"""Roles: every route that changes something refuses a viewer and a read-only token (walked
from the URL map, so a new route cannot forget it), operators are kept from the admin's
routes, disabled accounts stop at once, and the pages show only the buttons one may press."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import time_machine
from flask import Flask
from sqlalchemy import select

from rosetta_web.auth import services
from rosetta_web.auth.roles import ADMIN_ONLY, SAFE_METHODS, SELF_SERVICE
from rosetta_web.extensions import db
from rosetta_web.models import ALERT_SETTING_KEYS, ApiToken, AuditRecord, Source, User
from rosetta_web.timeutil import utcnow

from .clients import Api, Browser, sign_in
from .factories import PASSWORD, create_operator
from .seed import DESTINATION, PIPELINE, SOURCE

# Values for the URL map's placeholders: ids of the entities `_world` makes.
ARGUMENTS = {
    "entity_id": 1,
    "alert_id": 1,
    "silence_id": 1,
    "token_id": 1,
    "user_id": 1,
    "slot_name": "some_slot",
    "action": "start",
    "filename": "css/rosetta.css",
}


def _world(app: Flask) -> None:
    """A source, a destination and a pipeline to aim the routes at."""
    admin = Api(app.test_client(), _token(app, "root", "admin"))
    assert admin.post("/api/v1/sources", json=SOURCE).status_code == 201
    assert admin.post("/api/v1/destinations", json=DESTINATION).status_code == 201
    body = {**PIPELINE, "status": "PAUSE"}
    assert admin.post("/api/v1/pipelines", json=body).status_code == 201


def _token(app: Flask, username: str, role: str, read_only: bool = False) -> str:
    with app.app_context():
        user = services.find_user(username) or services.create_user(username, PASSWORD, role)
        return services.create_token(user, f"{role}-{read_only}", read_only)[1]


def _changing_routes(app: Flask) -> list[tuple[str, str, str]]:
    """Every (endpoint, method, path) that changes something, from the URL map."""
    found = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if rule.endpoint in SELF_SERVICE or rule.endpoint == "static":
                continue
            for method in sorted((rule.methods or set()) - SAFE_METHODS):
                path = rule.build({name: ARGUMENTS[name] for name in rule.arguments})
                assert path is not None
                found.append((rule.endpoint, method, path[1]))
    return found


def _browser_as(app: Flask, username: str, role: str) -> Browser:
    create_operator(app, username, role=role)
    client = app.test_client()
    assert sign_in(client, username).status_code == 303
    return Browser(client)


def test_every_changing_route_refuses_a_viewer_and_a_read_only_token(app):
    """Walked from the URL map: each route that changes something answers a viewer (signed in
    in the browser, or by token) and an admin's read-only token 403, and changes nothing."""
    _world(app)
    routes = _changing_routes(app)
    assert len(routes) >= 50  # the walk found the app's routes, not an empty map
    viewer_token = Api(app.test_client(), _token(app, "vera", "viewer"))
    read_only = Api(app.test_client(), _token(app, "root", "admin", read_only=True))
    viewer = _browser_as(app, "vic", "viewer")
    for endpoint, method, path in routes:
        for caller in (viewer_token, read_only):
            response = getattr(caller, method.lower())(path, json={})
            assert response.status_code == 403, (endpoint, method, path)
            if path.startswith("/api/"):
                assert response.get_json()["error"] == "PermissionDeniedError"
        page = viewer.client.open(path, method=method, data={"csrf_token": viewer.token})
        assert page.status_code == 403, (endpoint, method, path)
    with app.app_context():
        assert db.session.get(Source, 1).name == SOURCE["name"]  # nothing deleted or renamed
    assert (
        Api(app.test_client(), _token(app, "root", "admin"))
        .get("/api/v1/pipelines/1")
        .get_json()["status"]
        == "PAUSE"
    )


def test_operators_are_kept_from_the_admins_routes_only(app):
    """An operator gets 403 on the admin's routes (channels, settings, drops) and never on
    the others; the message names the role it needs."""
    _world(app)
    operator = Api(app.test_client(), _token(app, "otto", "operator"))
    refused = []
    for endpoint, method, path in _changing_routes(app):
        if not path.startswith("/api/"):
            continue
        response = getattr(operator, method.lower())(path, json={})
        if response.status_code == 403:
            refused.append(endpoint)
            assert "needs the admin role" in response.get_json()["message"]
    assert set(refused) == {endpoint for endpoint in ADMIN_ONLY if endpoint.startswith("api.")}


def test_a_viewer_reads_every_page_and_sees_no_button_to_change_anything(app):
    """A viewer's pages have no New, Edit, Delete, Sample now, Check or status buttons; an
    admin's have them."""
    _world(app)
    viewer = _browser_as(app, "vic", "viewer")
    admin = _browser_as(app, "ada", "admin")
    pages = (
        "/",
        "/sources/",
        "/sources/1",
        "/destinations/",
        "/destinations/1",
        "/pipelines/",
        "/pipelines/1",
        "/alerts/",
        "/alerts/channels/",
        "/alerts/settings",
    )
    markers = (
        "/sources/new",
        "/sources/1/edit",
        "Sample now",
        'id="check-button"',
        "/pipelines/1/status",
        "/destinations/1/edit",
        "Save settings",
    )
    seen_by_admin = set()
    for path in pages:
        page = viewer.get(path)
        assert page.status_code == 200, path
        html = page.get_data(as_text=True)
        assert not [marker for marker in markers if marker in html], path
        admin_html = admin.get(path).get_data(as_text=True)
        seen_by_admin |= {marker for marker in markers if marker in admin_html}
    assert seen_by_admin == set(markers)
    assert "Only an admin changes these." in viewer.get("/alerts/settings").get_data(as_text=True)


def test_forbidden_is_a_page_for_the_browser_and_the_envelope_for_htmx(app):
    """The same refusal: a 403 page for a browser, the JSON envelope for htmx."""
    _world(app)
    viewer = _browser_as(app, "vic", "viewer")
    page = viewer.post("/pipelines/1/status", {"status": "START"})
    assert page.status_code == 403 and "<html" in page.get_data(as_text=True)
    assert "needs the operator role or above; vic is a viewer" in page.get_data(as_text=True)
    swapped = viewer.client.post(
        "/pipelines/1/status",
        data={"status": "START"},
        headers={"HX-Request": "true", "X-CSRFToken": viewer.token},
    )
    assert swapped.status_code == 403 and swapped.get_json()["error"] == "PermissionDeniedError"


def test_a_read_only_token_reads(app):
    """A read-only token reads what its user may read."""
    _world(app)
    read_only = Api(app.test_client(), _token(app, "root", "admin", read_only=True))
    assert read_only.get("/api/v1/sources/1").status_code == 200
    assert read_only.get("/api/v1/summary").status_code == 200


def test_disabling_an_account_ends_its_session_and_tokens_at_once(app, runner):
    """`flask users disable` signs the account out on its next request and refuses its token;
    the last enabled admin cannot be disabled or demoted."""
    _world(app)
    token = Api(app.test_client(), _token(app, "otto", "operator"))
    browser = _browser_as(app, "olga", "operator")
    with app.app_context():
        olga_token = Api(
            app.test_client(), services.create_token(services.find_user("olga"), "t")[1]
        )
    assert browser.get("/sources/").status_code == 200
    assert olga_token.get("/api/v1/sources").status_code == 200
    result = runner.invoke(args=["users", "disable", "olga"])
    assert result.exit_code == 0, result.output
    assert browser.get("/sources/").status_code == 302  # to the sign-in page
    assert olga_token.get("/api/v1/sources").status_code == 401
    assert token.get("/api/v1/sources").status_code == 200  # others go on
    refused_sign_in = sign_in(app.test_client(), "olga")
    assert refused_sign_in.status_code == 403
    assert "This account is disabled." in refused_sign_in.get_data(as_text=True)

    # "root" (from _world) is the only admin.
    for args in (["users", "disable", "root"], ["users", "set-role", "root", "operator"]):
        refused = runner.invoke(args=args)
        assert refused.exit_code != 0
        assert "root is the last enabled admin" in refused.output


def test_cli_creates_accounts_with_roles_and_read_only_tokens(app, runner):
    """`flask users create` makes an operator unless --role says otherwise; set-role changes
    it; `flask tokens create --read-only` makes a token that reads and changes nothing."""
    _world(app)
    assert runner.invoke(args=["users", "create", "nia", "--password", PASSWORD]).output == (
        "Created operator nia.\n"
    )
    made = runner.invoke(args=["users", "create", "vi", "--password", PASSWORD, "--role", "viewer"])
    assert made.output == "Created viewer vi.\n"
    assert runner.invoke(args=["users", "set-role", "vi", "admin"]).output == "vi is now admin.\n"
    wrong = runner.invoke(args=["users", "set-role", "vi", "boss"])
    assert wrong.exit_code != 0 and "'boss' is not one of" in wrong.output
    created = runner.invoke(
        args=["tokens", "create", "--user", "nia", "--name", "board", "--read-only"]
    )
    assert created.exit_code == 0 and "Created read-only token 'board'" in created.output
    raw = created.output.strip().splitlines()[-1]
    board = Api(app.test_client(), raw)
    assert board.get("/api/v1/sources/1").status_code == 200
    assert board.post("/api/v1/sources/1/sample").status_code == 403
    listed = runner.invoke(args=["tokens", "list", "--user", "nia"]).output
    assert "\tread-only\t" in listed


def test_the_first_account_is_an_admin(app):
    """/setup makes an admin; the account page says the role."""
    client = app.test_client()
    from .clients import csrf_token

    token = csrf_token(client, "/setup")
    client.post(
        "/setup",
        data={"username": "first", "password": PASSWORD, "confirm": PASSWORD, "csrf_token": token},
    )
    with app.app_context():
        assert services.find_user("first").role == "admin"
    page = client.get("/account").get_data(as_text=True)
    assert '<span class="badge" id="account-role"' in page and ">admin</span>" in page


def test_an_admin_manages_accounts_in_the_browser(app):
    """Create a viewer; make it an operator; the last admin cannot be demoted (409, role
    kept); disable ends its session; enable lets it sign in again."""
    admin = _browser_as(app, "ada", "admin")
    assert admin.get("/accounts").status_code == 200
    made = admin.post(
        "/accounts",
        {"username": "vic", "role": "viewer", "password": PASSWORD, "confirm": PASSWORD},
    )
    assert made.status_code == 303
    taken = admin.post(
        "/accounts",
        {"username": "vic", "role": "viewer", "password": PASSWORD, "confirm": PASSWORD},
    )
    assert taken.status_code == 409
    assert "An account named vic already exists." in taken.get_data(as_text=True)
    with app.app_context():
        vic, ada = services.find_user("vic"), services.find_user("ada")
        assert vic.role == "viewer"
        vic_id, ada_id = vic.id, ada.id
    vic_client = app.test_client()
    assert sign_in(vic_client, "vic").status_code == 303
    vic_browser = Browser(vic_client)

    assert admin.post(f"/accounts/{vic_id}/role", {"role": "operator"}).status_code == 303
    demoted = admin.post(f"/accounts/{ada_id}/role", {"role": "viewer"})
    assert demoted.status_code == 409
    assert "ada is the last enabled admin" in demoted.get_data(as_text=True)
    with app.app_context():
        assert services.find_user("vic").role == "operator"
        assert services.find_user("ada").role == "admin"

    assert vic_browser.get("/sources/").status_code == 200
    assert admin.post(f"/accounts/{vic_id}/disable").status_code == 303
    assert vic_browser.get("/sources/").status_code == 302  # signed out
    assert admin.post(f"/accounts/{vic_id}/enable").status_code == 303
    assert sign_in(app.test_client(), "vic").status_code == 303


def test_a_reset_password_must_be_changed_at_the_next_sign_in(app):
    """The admin sees the new password once; the user is signed out, and after signing in
    with it every page leads to the account page until a new password is chosen."""
    admin = _browser_as(app, "ada", "admin")
    user = _browser_as(app, "olga", "operator")
    with app.app_context():
        olga_id = services.find_user("olga").id
    assert admin.post(f"/accounts/{olga_id}/reset-password").status_code == 303
    page = admin.get("/accounts").get_data(as_text=True)
    new_password = page.split('aria-label="New password of olga"')[0].rsplit('value="', 1)[1]
    new_password = new_password.split('"')[0]
    assert "The new password of <strong>olga</strong>" in page
    assert "The new password of" not in admin.get("/accounts").get_data(as_text=True)  # once
    assert user.get("/sources/").status_code == 302  # the reset signed olga out

    client = app.test_client()
    assert sign_in(client, "olga", new_password).status_code == 303
    olga = Browser(client, "/account")
    blocked = olga.get("/sources/")
    assert blocked.status_code == 302 and blocked.headers["Location"].endswith("/account")
    wrong = olga.post(
        "/account/password",
        {"current": "not-it", "password": "Brand-New-Pass-1", "confirm": "Brand-New-Pass-1"},
    )
    assert "That is not your current password." in wrong.get_data(as_text=True)
    changed = olga.post(
        "/account/password",
        {"current": new_password, "password": "Brand-New-Pass-1", "confirm": "Brand-New-Pass-1"},
    )
    assert changed.status_code == 303
    assert olga.get("/sources/").status_code == 200
    assert sign_in(app.test_client(), "olga", "Brand-New-Pass-1").status_code == 303


def _page_text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def _last_record(app: Flask, action: str) -> AuditRecord:
    with app.app_context():
        record = db.session.scalar(
            select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.id.desc())
        )
        assert record is not None, action
        db.session.expunge(record)
        return record


def test_a_password_reset_stops_the_accounts_tokens_until_a_new_password(app):
    """After an admin's reset the account's token answers 401 saying why, the pages say the
    tokens are stopped, the audit record says so; once the user has chosen a new password
    the same token works again."""
    admin = _browser_as(app, "ada", "admin")
    create_operator(app, "olga", role="operator")
    with app.app_context():
        olga = services.find_user("olga")
        olga_id, raw = olga.id, services.create_token(olga, "nightly")[1]
    script = Api(app.test_client(), raw)
    assert script.get("/api/v1/sources").status_code == 200

    assert admin.post(f"/accounts/{olga_id}/reset-password").status_code == 303
    stopped = script.get("/api/v1/sources")
    assert stopped.status_code == 401
    assert "an admin reset its user's password" in stopped.get_json()["message"]
    assert script.post("/api/v1/sources", json={}).status_code == 401
    page = admin.get("/accounts").get_data(as_text=True)
    assert "Until then olga's API tokens are stopped." in page
    new_password = re.search(r'value="([^"]+)"[^>]*aria-label="New password of olga"', page)[1]
    assert new_password not in stopped.get_data(as_text=True)
    reset = _last_record(app, "update")
    assert reset.message == (
        "Password reset by an admin; to be changed at the next sign-in. "
        "Its API token is stopped until then."
    )

    client = app.test_client()
    assert sign_in(client, "olga", new_password).status_code == 303
    olga_browser = Browser(client, "/account")
    assert "Your API tokens are stopped until you do." in _page_text(olga_browser.get("/account"))
    assert script.get("/api/v1/sources").status_code == 401  # signed in is not enough
    changed = olga_browser.post(
        "/account/password",
        {"current": new_password, "password": "Brand-New-Pass-1", "confirm": "Brand-New-Pass-1"},
    )
    assert changed.status_code == 303
    assert script.get("/api/v1/sources").status_code == 200
    assert _last_record(app, "update").message == "Its API tokens work again."


def test_disabling_an_account_revokes_its_tokens_for_good(app):
    """Disabling in the browser revokes the account's tokens and says so; enabling it again
    does not bring them back; the disable's audit record names the tokens revoked."""
    admin = _browser_as(app, "ada", "admin")
    create_operator(app, "olga", role="operator")
    with app.app_context():
        olga = services.find_user("olga")
        olga_id = olga.id
        scripts = [
            Api(app.test_client(), services.create_token(olga, name)[1])
            for name in ("nightly", "grafana")
        ]
    assert all(script.get("/api/v1/sources").status_code == 200 for script in scripts)
    disabled = admin.post(f"/accounts/{olga_id}/disable", follow_redirects=True)
    assert [script.get("/api/v1/sources").status_code for script in scripts] == [401, 401]
    assert (
        "Disabled olga: signed out, its 2 API tokens revoked. Enabling it again does not bring "
        "them back." in _page_text(disabled)
    )
    record = _last_record(app, "disable_user")
    assert record.changes == {"disabled": [False, True], "tokens": [["grafana", "nightly"], None]}
    assert record.message == "Signed out; its 2 API tokens revoked."

    enabled = admin.post(f"/accounts/{olga_id}/enable", follow_redirects=True)
    assert "Enabled olga. The API tokens its disabling revoked stay revoked" in _page_text(enabled)
    assert [script.get("/api/v1/sources").status_code for script in scripts] == [401, 401]
    with app.app_context():
        assert db.session.scalars(select(ApiToken).where(ApiToken.user_id == olga_id)).all() == []
    assert sign_in(app.test_client(), "olga").status_code == 303
    accounts = _page_text(admin.get("/accounts"))
    assert "Disabling an account ends its sessions and revokes its API tokens" in accounts
    assert "enabling the account again does not bring them back" in accounts  # the confirm


def test_enabling_revokes_the_tokens_an_earlier_disable_kept(app):
    """An account disabled before disabling revoked tokens still holds them: enabling it
    revokes those made before it was disabled (and records it), and keeps one made since."""
    admin = _browser_as(app, "ada", "admin")
    create_operator(app, "olga", role="operator")
    start = utcnow()
    with app.app_context():
        olga = services.find_user("olga")
        olga_id = olga.id
        with time_machine.travel(start - timedelta(days=3)):
            old = Api(app.test_client(), services.create_token(olga, "old")[1])
        olga.disabled_at = start - timedelta(days=2)  # as the previous version disabled
        db.session.commit()
        with time_machine.travel(start - timedelta(days=1)):
            since = Api(app.test_client(), services.create_token(olga, "since")[1])
    assert admin.post(f"/accounts/{olga_id}/enable").status_code == 303
    assert old.get("/api/v1/sources").status_code == 401
    assert since.get("/api/v1/sources").status_code == 200
    record = _last_record(app, "update")
    assert record.changes == {"disabled": [True, False], "tokens": [["old"], None]}
    assert "its API token revoked: made before it was disabled" in record.message


def test_account_forms_without_a_valid_csrf_token_say_the_form_expired(app):
    """Disable, Enable, Reset password and Set role sent with a missing or forged CSRF token
    change nothing and say the form expired, like every other form."""
    admin = _browser_as(app, "ada", "admin")
    create_operator(app, "olga", role="operator")
    create_operator(app, "dora", role="operator")
    with app.app_context():
        olga, dora = services.find_user("olga"), services.find_user("dora")
        services.disable_user(dora)
        olga_id, dora_id = olga.id, dora.id
        before = db.session.scalar(select(db.func.count(AuditRecord.id)))
    forms = [
        (f"/accounts/{olga_id}/disable", {}, "Disable"),
        (f"/accounts/{dora_id}/enable", {}, "Enable"),
        (f"/accounts/{olga_id}/reset-password", {}, "Reset password"),
        (f"/accounts/{olga_id}/role", {"role": "viewer"}, "Set role"),
    ]
    for path, data, button in forms:
        for token in ({}, {"csrf_token": "forged"}):
            sent = admin.client.post(path, data={**data, **token})
            assert sent.status_code == 303 and sent.headers["Location"] == "/accounts", path
            page = _page_text(admin.get("/accounts"))
            assert f"The form expired before you sent it; press {button} again." in page, path
            assert 'id="reset-password"' not in page  # no new password was made
    with app.app_context():
        olga, dora = db.session.get(User, olga_id), db.session.get(User, dora_id)
        assert (olga.role, olga.disabled_at, olga.must_change_password) == ("operator", None, False)
        assert dora.disabled_at is not None
        assert db.session.scalar(select(db.func.count(AuditRecord.id))) == before
    assert sign_in(app.test_client(), "olga").status_code == 303


def test_viewers_and_operators_read_the_alert_settings_as_text(app):
    """Those who may not change the alert settings see them as text, with no input to type
    in; an admin sees the form, and a rule the admin turns off reads "off"."""
    admin = _browser_as(app, "ada", "admin")
    names = ALERT_SETTING_KEYS
    assert admin.get("/alerts/settings").status_code == 200
    form = {
        name: value
        for name, value in zip(
            names, ("5 GB", "10 GB", "", "30", "1", "6", "15", "300", "", "60"), strict=True
        )
    }
    assert admin.post("/alerts/settings", form).status_code == 303
    admin_page = admin.get("/alerts/settings").get_data(as_text=True)
    assert all(f'name="{name}"' in admin_page for name in names)
    for username, role in (("vic", "viewer"), ("otto", "operator")):
        page = _browser_as(app, username, role).get("/alerts/settings").get_data(as_text=True)
        assert not [name for name in names if f'name="{name}"' in page], role
        assert 'id="settings-form"' not in page and "<input" not in page.split("<main")[1]
        values = dict(re.findall(r'<dd id="([a-z_]+)-value">([^<]*)</dd>', page))
        assert values == {
            "retained_warning_bytes": "5 GB",
            "retained_critical_bytes": "10 GB",
            "slot_inactive_minutes": "off",
            "consumer_stalled_minutes": "30 minutes",
            "unreachable_rounds": "1 round",
            "forecast_hours": "6 hours",
            "pipeline_failed_minutes": "15 minutes",
            "pipeline_lag_warning_seconds": "300 seconds",
            "pipeline_lag_critical_seconds": "off",
            "repeat_minutes": "60 minutes",
        }, role
        assert "<dt>Repeat notifications every</dt>" in page
        assert "Only an admin changes these." in page


def test_the_setup_page_says_no_account_exists(app):
    """Before the first account, the set-up page says no account (not operator) exists."""
    setup = app.test_client().get("/setup").get_data(as_text=True)
    assert "No account exists yet. Create the first one, an admin;" in setup
    assert "No operator" not in setup


def test_a_refusal_says_a_or_an_by_the_role(app):
    """An operator refused an admin's page reads "oscar is an operator", not "a operator"."""
    oscar = _browser_as(app, "oscar", "operator")
    refused = oscar.get("/accounts")
    assert refused.status_code == 403
    assert "This needs the admin role or above; oscar is an operator." in _page_text(refused)
