"""Sign-in, first-run set-up, sign-out, throttling, tokens and CSRF."""

from __future__ import annotations

import re
from datetime import timedelta

import time_machine

from rosetta_web.auth import services
from rosetta_web.extensions import db as _db
from rosetta_web.models import ApiToken, LoginFailure, User
from rosetta_web.timeutil import utcnow

from .apps import make_app
from .clients import csrf_token, sign_in
from .factories import PASSWORD, create_operator


def test_pages_redirect_to_login_and_api_answers_401(app, client):
    """Without a session or token, pages send the operator to sign in and the API says 401."""
    create_operator(app)
    response = client.get("/pipelines/?q=prod")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/pipelines/?q%3Dprod"
    api = client.get("/api/v1/sources")
    assert api.status_code == 401
    body = api.get_json()
    assert body["error"] == "AuthenticationError"
    assert set(body) == {"error", "message", "details", "timestamp"}


def test_setup_creates_the_first_operator_then_disappears(client, app):
    """The first visitor creates the first account at /setup; afterwards /setup is 404."""
    assert client.get("/login").headers["Location"] == "/setup"
    token = csrf_token(client, "/setup")
    bad = client.post(
        "/setup",
        data={"username": "Alice", "password": "short", "confirm": "other", "csrf_token": token},
    )
    html = bad.get_data(as_text=True)
    assert bad.status_code == 200
    assert "Use 8 to 256 characters." in html
    assert 'value="alice"' in html  # the operator's input comes back
    ok = client.post(
        "/setup",
        data={"username": "Alice", "password": PASSWORD, "confirm": PASSWORD, "csrf_token": token},
    )
    assert ok.status_code == 303
    assert client.get("/sources/").status_code == 200  # signed in straight away
    with app.app_context():
        assert [u.username for u in _db.session.scalars(_db.select(User))] == ["alice"]
    assert client.get("/setup").status_code == 404
    assert app.test_client().get("/setup").status_code == 404


def test_login_and_logout(app, client):
    """A right password signs in and returns to `next`; sign-out ends the session."""
    create_operator(app)
    token = csrf_token(client)
    wrong = client.post(
        "/login", data={"username": "alice", "password": "nope", "csrf_token": token}
    )
    assert "Unknown username or wrong password." in wrong.get_data(as_text=True)
    ok = client.post(
        "/login",
        data={
            "username": "ALICE",
            "password": PASSWORD,
            "next": "/pipelines/",
            "csrf_token": token,
        },
    )
    assert ok.status_code == 303 and ok.headers["Location"] == "/pipelines/"
    page = client.get("/pipelines/")
    assert page.status_code == 200 and "alice" in page.get_data(as_text=True)
    out = client.post("/logout", data={"csrf_token": csrf_token(client, "/pipelines/")})
    assert out.status_code == 303
    assert client.get("/pipelines/").status_code == 302


def test_login_refuses_offsite_next(app, client):
    """A `next` pointing at another site is ignored, so sign-in cannot redirect away."""
    create_operator(app)
    token = csrf_token(client)
    response = client.post(
        "/login",
        data={
            "username": "alice",
            "password": PASSWORD,
            "next": "//evil.example/x",
            "csrf_token": token,
        },
    )
    assert response.headers["Location"] == "/"


def test_five_failures_throttle_the_username(app, client):
    """After 5 failures in 15 minutes, sign-in answers 429 even with the right password."""
    create_operator(app)
    token = csrf_token(client)
    for _ in range(5):
        response = client.post(
            "/login", data={"username": "alice", "password": "wrong", "csrf_token": token}
        )
        assert response.status_code == 200
    blocked = client.post(
        "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token}
    )
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 14 * 60
    assert "Too many failed sign-ins" in blocked.get_data(as_text=True)
    # Another username is not affected.
    create_operator(app, "bob")
    assert sign_in(app.test_client(), "bob").status_code == 303
    # Once the failures are older than the window, alice may sign in again.
    with app.app_context():
        _db.session.execute(
            _db.update(LoginFailure).values(
                failed_at=LoginFailure.failed_at - _db.text("interval '16 minutes'")
            )
        )
        _db.session.commit()
    assert sign_in(client).status_code == 303


def _client_at(app, address: str):
    """A browser at a client address of its own."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _guess(client, username: str, **headers: str):
    """Post a wrong password for `username`, as a browser does."""
    data = {"username": username, "password": "wrong-guess", "csrf_token": csrf_token(client)}
    return client.post("/login", data=data, headers=headers)


def test_twenty_failures_from_one_address_throttle_every_name(app):
    """Twenty wrong passwords from one address within 15 minutes, over twenty names (a
    spray), and that address gets 429 with Retry-After even for an account's right password;
    another address signs in; the sprayer's own successful sign-in does not wipe the count;
    15 minutes after the failures the address may sign in again."""
    create_operator(app)
    sprayer = _client_at(app, "198.51.100.7")
    with time_machine.travel(utcnow(), tick=False) as clock:
        for i in range(10):
            assert _guess(sprayer, f"name{i}").status_code == 200
        # An account of the sprayer's own signs in from the same address in the middle.
        own = _client_at(app, "198.51.100.7")
        assert sign_in(own).status_code == 303
        for i in range(10, 20):
            assert _guess(sprayer, f"name{i}").status_code == 200
        blocked = sign_in(_client_at(app, "198.51.100.7"))
        assert blocked.status_code == 429
        assert blocked.headers["Retry-After"] == str(15 * 60 + 1)
        page = blocked.get_data(as_text=True)
        assert "Too many failed sign-ins from your address. Try again in 16 minutes." in page
        elsewhere = _client_at(app, "192.0.2.44")
        assert sign_in(elsewhere).status_code == 303
        with app.app_context():
            stored = _db.session.scalars(_db.select(LoginFailure.ip)).all()
            assert stored == ["198.51.100.7"] * 20  # refusals are not kept
        clock.shift(timedelta(minutes=15, seconds=1))
        again = _client_at(app, "198.51.100.7")
        assert sign_in(again).status_code == 303


def test_a_forged_x_forwarded_for_does_not_escape_the_address_throttle(database_url):
    """With no trusted proxy, a sprayer that sends a new X-Forwarded-For with each guess is
    still one address: the 21st guess is refused."""
    app = make_app(database_url, TRUSTED_PROXIES=0)
    create_operator(app)
    client = app.test_client()
    for i in range(20):
        assert (
            _guess(client, f"name{i}", **{"X-Forwarded-For": f"203.0.113.{i}"}).status_code == 200
        )
    refused = _guess(client, "alice", **{"X-Forwarded-For": "203.0.113.200"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 14 * 60
    assert "from your address" in refused.get_data(as_text=True)


def test_behind_a_trusted_proxy_each_forwarded_address_is_counted_alone(database_url):
    """With TRUSTED_PROXIES=1 the address is the one the proxy forwards, as the audit log
    records it: twenty failures from one client throttle that client, not the proxy's other
    clients."""
    app = make_app(database_url, TRUSTED_PROXIES=1)
    create_operator(app)
    client = app.test_client()
    for i in range(20):
        assert _guess(client, f"name{i}", **{"X-Forwarded-For": "203.0.113.9"}).status_code == 200
    refused = _guess(client, "alice", **{"X-Forwarded-For": "203.0.113.9"})
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    token = csrf_token(client)
    other = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
        headers={"X-Forwarded-For": "203.0.113.10"},
    )
    assert other.status_code == 303


def test_failures_from_one_ipv6_64_are_counted_together(database_url):
    """A client is handed a whole IPv6 /64: twenty failures, each from another address of
    it, throttle the next from yet another; an address of another /64 signs in."""
    app = make_app(database_url, TRUSTED_PROXIES=1)
    create_operator(app)
    client = app.test_client()
    for i in range(20):
        forwarded = {"X-Forwarded-For": f"2001:db8:1:2::{i + 1:x}"}
        assert _guess(client, f"name{i}", **forwarded).status_code == 200
    refused = _guess(client, "alice", **{"X-Forwarded-For": "2001:db8:1:2:ffff::1"})
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    other = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": csrf_token(client)},
        headers={"X-Forwarded-For": "2001:db8:1:3::1"},
    )
    assert other.status_code == 303


def test_expired_csrf_token_gives_the_form_back(app, client):
    """A stale CSRF token on the sign-in form shows a clear message and keeps the input."""
    create_operator(app)
    client.get("/login")
    response = client.post(
        "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": "stale"}
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "This form expired before it was sent" in html
    assert 'value="alice"' in html
    assert client.get("/sources/").status_code == 302  # not signed in


def test_post_without_csrf_token_is_refused(browser, app):
    """A browser write without the CSRF token changes nothing."""
    response = browser.client.post("/logout")
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)
    assert browser.get("/sources/").status_code == 200  # still signed in


def test_tokens_cli_create_and_use(app, runner, client):
    """`flask tokens create` prints the token alone on its last line; only its hash is stored."""
    create_operator(app)
    result = runner.invoke(args=["tokens", "create", "--user", "alice", "--name", "nightly"])
    assert result.exit_code == 0, result.output
    raw = result.output.strip().splitlines()[-1]
    assert re.fullmatch(r"rst_[A-Za-z0-9_-]{40,}", raw)
    response = client.get("/api/v1/sources", headers={"Authorization": f"Bearer {raw}"})
    assert response.status_code == 200 and response.get_json() == []
    assert "Set-Cookie" not in response.headers  # scripts get no session
    with app.app_context():
        stored = _db.session.scalar(_db.select(ApiToken))
        assert stored.token_hash != raw and raw not in stored.token_hash
        assert stored.last_used_at is not None
    bad = client.get("/api/v1/sources", headers={"Authorization": "Bearer rst_nope"})
    assert bad.status_code == 401 and "invalid or revoked" in bad.get_json()["message"]


def test_users_cli_creates_an_operator(app, runner):
    """`flask users create` makes an account that can sign in, and checks the rules."""
    result = runner.invoke(args=["users", "create", "Carol", "--password", PASSWORD])
    assert result.exit_code == 0 and "Created operator carol" in result.output
    short = runner.invoke(args=["users", "create", "dave", "--password", "short"])
    assert short.exit_code != 0 and "8 to 256" in short.output
    again = runner.invoke(args=["users", "create", "carol", "--password", PASSWORD])
    assert again.exit_code != 0 and "already exists" in again.output
    prompted = runner.invoke(args=["users", "create", "erin"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert prompted.exit_code == 0, prompted.output
    assert sign_in(app.test_client(), "carol").status_code == 303
    assert sign_in(app.test_client(), "erin").status_code == 303


def test_account_page_creates_shows_once_and_revokes_tokens(browser, app, client):
    """The account page shows a new token once, lists it by prefix, and revokes it."""
    response = browser.post("/account", {"name": "grafana"})
    assert response.status_code == 303  # a reload cannot create a second token
    html = browser.get("/account").get_data(as_text=True)
    raw = re.search(r'value="(rst_[^"]+)"', html).group(1)
    assert raw not in browser.get("/account").get_data(as_text=True)  # shown once
    assert (
        client.get("/api/v1/sources", headers={"Authorization": f"Bearer {raw}"}).status_code == 200
    )
    listing = browser.get("/account").get_data(as_text=True)
    assert "grafana" in listing and raw not in listing and raw[:10] in listing
    with app.app_context():
        token_id = _db.session.scalar(_db.select(ApiToken.id))
    assert browser.post(f"/account/tokens/{token_id}/revoke").status_code == 303
    other = app.test_client()
    assert (
        other.get("/api/v1/sources", headers={"Authorization": f"Bearer {raw}"}).status_code == 401
    )


def test_passwords_are_hashed(app):
    """An operator's password is stored only as a salted hash."""
    with app.app_context():
        user = services.create_user("frank", PASSWORD)
        assert PASSWORD not in user.password_hash and user.check_password(PASSWORD)


def test_concurrent_guesses_cannot_pass_the_throttle(app, database_url):
    """Twenty simultaneous wrong passwords: at most five are checked, the rest get 429."""
    import threading

    create_operator(app)
    clients = [app.test_client() for _ in range(20)]
    tokens = [csrf_token(c) for c in clients]
    barrier = threading.Barrier(len(clients))
    statuses: list[int] = []

    def guess(client, token):
        barrier.wait()
        data = {"username": "alice", "password": "guess", "csrf_token": token}
        statuses.append(client.post("/login", data=data).status_code)

    threads = [
        threading.Thread(target=guess, args=pair) for pair in zip(clients, tokens, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # When every guess is stored before any is counted, all twenty are refused: also right.
    assert len(statuses) == 20 and set(statuses) <= {200, 429}
    assert statuses.count(200) <= 5 and statuses.count(429) >= 15


def test_sign_out_ends_a_copied_session_cookie(browser, app):
    """After sign-out, a copy of the session cookie taken before it no longer works."""
    cookie = browser.client.get_cookie("session").value
    thief = app.test_client()
    thief.set_cookie("session", cookie)
    assert thief.get("/sources/").status_code == 200
    browser.post("/logout")
    assert thief.get("/sources/").status_code == 302


def test_sign_in_starts_a_new_session(app, client):
    """The CSRF token handed out before sign-in is not the one used after it."""
    create_operator(app)
    before = csrf_token(client)
    sign_in(client)
    assert csrf_token(client, "/sources/") != before


def test_bearer_token_wins_over_a_session_cookie(browser, app):
    """A call with a valid token needs no CSRF token, even from a signed-in browser."""
    with app.app_context():
        _, raw = services.create_token(services.find_user("alice"), "mixed")
    response = browser.client.post(
        "/api/v1/destinations/1/nothing", headers={"Authorization": f"Bearer {raw}"}
    )
    assert response.status_code == 404  # reached routing, not refused for CSRF
    response = browser.client.delete(
        "/api/v1/sources/9", headers={"Authorization": f"Bearer {raw}"}
    )
    assert response.get_json()["error"] == "EntityNotFoundError"


def test_htmx_request_without_session_is_sent_to_login(app, client):
    """An htmx poll after the session ended asks the browser to go to the login page."""
    create_operator(app)
    response = client.get("/sources/?q=x", headers={"HX-Request": "true"})
    assert response.status_code == 204
    assert response.headers["HX-Redirect"].startswith("/login?next=")


def test_login_refuses_nul_in_the_username(app, client):
    """A username with a NUL byte is refused by the form, not by the database."""
    create_operator(app)
    response = client.post(
        "/login", data={"username": "a\x00b", "password": "x", "csrf_token": csrf_token(client)}
    )
    assert response.status_code == 200
    assert "Must not contain NUL characters." in response.get_data(as_text=True)
