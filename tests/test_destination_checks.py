"""A Snowflake destination's readiness checks, against fakesnow's server and real key files.

The login is snowflake-connector-python's, unmocked, to fakesnow's standalone server (see
tests/snowflake.py for what that server checks: the key-pair JWT, databases and schemas, but
not roles, warehouses or grants). Key files are generated per test.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from rosetta_web.extensions import db as _db
from rosetta_web.models import Destination
from rosetta_web.readiness import FAIL, PASS, SKIP, WARN, Readiness
from rosetta_web.readiness.destination import (
    Endpoint,
    SnowflakeTarget,
    check_destination,
    parse_host,
)

from .factories import new_destination
from .pg import free_port
from .seed import PASSPHRASE
from .snowflake import FakeSnowflake, new_user, openssl_fingerprint, write_key

CHECK_IDS = [
    "key_file",
    "private_key",
    "key_fingerprint",
    "account_identifier",
    "login",
    "role",
    "database",
    "schema",
    "warehouse",
]


def target(snowflake: FakeSnowflake, key_path: Path, user: str, **settings: Any) -> SnowflakeTarget:
    """A destination's settings that reach the test server."""
    values: dict[str, Any] = {
        "account": "xy12345.us-east-1",
        "user": user,
        "database": "ANALYTICS",
        "schema": "RAW_DATA",
        "role": "LOADER",
        "warehouse": "LOAD_WH",
        "private_key_path": str(key_path),
        "host": snowflake.host_setting,
    }
    return SnowflakeTarget(**(values | settings))


def by_id(checks: list[Any]) -> dict[str, Any]:
    """Index a checklist by check id, after asserting it has every check, in order."""
    assert [check.id for check in checks] == CHECK_IDS
    return {check.id: check for check in checks}


# ---- The key, on its own -----------------------------------------------------------------


def test_missing_key_file_fails_and_skips_the_rest(tmp_path):
    """A key path with no file says so, names the path, and nothing after it runs."""
    missing = tmp_path / "nowhere" / "rsa_key.p8"
    checks = by_id(check_destination(SnowflakeTarget("xy12345", "U", "D", "S", str(missing)), 5))
    assert checks["key_file"].status == FAIL
    assert f"{missing} does not exist" in checks["key_file"].observed
    assert str(missing) in checks["key_file"].fix
    assert {checks[i].status for i in ("private_key", "key_fingerprint", "login")} == {SKIP}
    # The account is checked all the same: it needs no key.
    assert checks["account_identifier"].status == PASS


def test_unreadable_key_file_says_who_cannot_read_it(tmp_path):
    """A key file the server's user may not read fails with the chown/chmod that fixes it."""
    if os.geteuid() != 0:
        key_path = tmp_path / "rsa_key.p8"
        write_key(key_path)
        key_path.chmod(0)
        checks = by_id(
            check_destination(SnowflakeTarget("xy12345", "U", "D", "S", str(key_path)), 5)
        )
    else:  # root reads any file: check as nobody, in a child process, in a folder it may list
        folder = Path(tempfile.mkdtemp(prefix="rosetta-keys-"))
        try:
            folder.chmod(0o755)
            key_path = folder / "rsa_key.p8"
            write_key(key_path)
            checks = by_id(_as_nobody(SnowflakeTarget("xy12345", "U", "D", "S", str(key_path))))
        finally:
            shutil.rmtree(folder)
    assert checks["key_file"].status == FAIL
    assert "exists but the user running Rosetta" in checks["key_file"].observed
    assert "may not read it" in checks["key_file"].observed
    assert checks["key_file"].fix.startswith("chown ") and "chmod 600" in checks["key_file"].fix
    assert checks["private_key"].status == SKIP


def _as_nobody(spec: SnowflakeTarget) -> list[Any]:
    """Run the checks in a child process running as the user nobody."""
    from rosetta_web.readiness import Check

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, check, send the checklist back
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            payload = json.dumps([c.to_dict() for c in check_destination(spec, 5)]).encode()
            os.write(write, payload)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        payload = pipe.read()
    os.waitpid(pid, 0)
    return [Check(**check) for check in json.loads(payload)]


def test_world_readable_key_warns(tmp_path):
    """A key file every user of the server may read still works, with a warning and chmod."""
    key_path = tmp_path / "rsa_key.p8"
    write_key(key_path)
    key_path.chmod(0o644)
    checks = by_id(check_destination(SnowflakeTarget("-bad-", "U", "D", "S", str(key_path)), 5))
    assert checks["key_file"].status == WARN
    assert checks["key_file"].fix == f"chmod 600 {key_path}"
    assert checks["private_key"].status == PASS


@pytest.mark.parametrize(
    ("make", "passphrase", "words"),
    [
        ("corrupt", None, "The file is corrupt"),
        ("not_pem", None, "not PEM"),
        ("small", None, "RSA key of 1024 bits; Snowflake requires 2048 or more"),
        ("encrypted", "Wrong-Passphrase-1", "wrong passphrase"),
        ("encrypted", None, "The key is encrypted and no passphrase is stored"),
        ("public", None, "public key; the login needs the private key"),
        ("pkcs1", None, "RSA PRIVATE KEY (not PKCS#8)"),
    ],
)
def test_unusable_keys_fail_in_plain_words(tmp_path, make, passphrase, words):
    """Each kind of unusable key fails with what is wrong and a fix, never the passphrase or
    a trace; no login is tried."""
    key_path = tmp_path / "rsa_key.p8"
    key = write_key(key_path, bits=1024 if make == "small" else 2048, passphrase=PASSPHRASE)
    if make != "encrypted":
        write_key(key_path, bits=1024 if make == "small" else 2048)
    if make == "corrupt":
        text = key_path.read_text().splitlines()
        text[5] = "A" * len(text[5])  # a damaged line inside the PEM block
        key_path.write_text("\n".join(text) + "\n")
    elif make == "not_pem":
        key_path.write_text("this is not a key\n")
    elif make == "public":
        key_path.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    elif make == "pkcs1":
        subprocess.run(
            ["openssl", "rsa", "-in", str(key_path), "-traditional", "-out", str(key_path)],
            check=True,
            capture_output=True,
        )
    spec = SnowflakeTarget("xy12345", "ETL_USER", "D", "S", str(key_path), passphrase=passphrase)
    checks = by_id(check_destination(spec, 5))
    assert checks["private_key"].status == FAIL
    assert words in checks["private_key"].observed
    assert checks["private_key"].fix
    assert {checks[i].status for i in CHECK_IDS[2:] if i != "account_identifier"} == {SKIP}
    stored = json.dumps(Readiness(list(checks.values())).to_dict())
    assert "Traceback" not in stored and "Wrong-Passphrase-1" not in stored
    assert PASSPHRASE not in stored


@pytest.mark.parametrize(
    ("account", "ok"),
    [
        ("myorg-myaccount", True),
        ("myorg-my_account", True),
        ("xy12345", True),
        ("XY12345.us-east-1", True),
        ("xy12345.us-east-2.aws", True),
        ("xy12345.east-us-2.azure", True),
        ("xy12345.us-central1.gcp", True),
        ("xy12345.us-east-1.privatelink", True),
        ("xy12345.us-east-1.snowflakecomputing.com", False),
        ("xy12345..us-east-1", False),
        ("-myaccount", False),
        ("xy12345.us-east-1.amazon", False),
    ],
)
def test_account_identifier_forms(tmp_path, account, ok):
    """Org-account names and account locators (with region and cloud) pass; anything else
    fails with the setting to change, and no login is tried."""
    spec = SnowflakeTarget(account, "U", "D", "S", str(tmp_path / "none.p8"))
    check = by_id(check_destination(spec, 5))["account_identifier"]
    assert check.status == (PASS if ok else FAIL)
    if not ok:
        assert check.fix.startswith("Set Account to")
    if account == "xy12345.us-east-1.snowflakecomputing.com":
        assert check.fix.startswith("Set Account to xy12345.us-east-1 ")


@pytest.mark.parametrize(
    ("setting", "endpoint"),
    [
        (None, Endpoint("https", "xy12345.us-east-1.snowflakecomputing.com", 443)),
        (
            "xy12345.snowflakecomputing.com",
            Endpoint("https", "xy12345.snowflakecomputing.com", 443),
        ),
        ("proxy.internal:8443", Endpoint("https", "proxy.internal", 8443)),
        (
            "https://xy12345.privatelink.snowflakecomputing.com/",
            Endpoint("https", "xy12345.privatelink.snowflakecomputing.com", 443),
        ),
        ("http://127.0.0.1:8080", Endpoint("http", "127.0.0.1", 8080)),
        ("http://proxy.internal", Endpoint("http", "proxy.internal", 80)),
    ],
)
def test_host_setting_is_read_as_host_port_and_protocol(setting, endpoint):
    """Blank is the account's own host on 443; a host, host:port or URL says the rest."""
    assert parse_host(setting, "xy12345.us-east-1") == endpoint


# ---- Against fakesnow's server -----------------------------------------------------------


@pytest.mark.slow
def test_plain_key_passes_every_check_with_the_openssl_fingerprint(snowflake, tmp_path):
    """An unencrypted 2048-bit key registered for the user passes every check; the shown
    fingerprint is the one openssl computes, which DESC USER shows as RSA_PUBLIC_KEY_FP."""
    key_path = tmp_path / "rsa_key.p8"
    user = new_user(snowflake, write_key(key_path))
    checks = by_id(check_destination(target(snowflake, key_path, user), 10))
    assert {check.id: check.status for check in checks.values()} == dict.fromkeys(CHECK_IDS, PASS)
    assert checks["key_fingerprint"].observed.split(" ")[0] == openssl_fingerprint(key_path)
    assert "Unencrypted PKCS#8 RSA key of 2048 bits" in checks["private_key"].observed
    assert f"Logged in to http://127.0.0.1:{snowflake.port} as {user}" in checks["login"].observed
    assert checks["database"].observed == 'Database "ANALYTICS" exists and "LOADER" may use it.'
    assert all(check.fix is None for check in checks.values())


@pytest.mark.slow
def test_encrypted_key_opens_with_the_stored_passphrase(snowflake, tmp_path):
    """An encrypted key with the right passphrase logs in; no warehouse set is a skip, not a
    failure, and no role set uses the user's default."""
    key_path = tmp_path / "rsa_key.p8"
    user = new_user(snowflake, write_key(key_path, bits=3072, passphrase=PASSPHRASE))
    spec = target(snowflake, key_path, user, passphrase=PASSPHRASE, role=None, warehouse=None)
    checks = by_id(check_destination(spec, 10))
    assert "Encrypted PKCS#8 RSA key of 3072 bits" in checks["private_key"].observed
    assert checks["key_fingerprint"].observed.startswith(openssl_fingerprint(key_path, PASSPHRASE))
    assert checks["login"].status == PASS and checks["role"].status == PASS
    assert "default role" in checks["role"].observed
    assert checks["warehouse"].status == SKIP and "No warehouse set" in checks["warehouse"].observed
    assert Readiness(list(checks.values())).ready
    assert PASSPHRASE not in repr(spec)


@pytest.mark.slow
def test_key_not_registered_fails_login_and_its_fix_works(snowflake, tmp_path):
    """A key Snowflake does not have for the user fails the login with the fingerprint to
    compare and the ALTER USER that registers it; running that fix makes the login pass."""
    key_path = tmp_path / "rsa_key.p8"
    new_user(snowflake, write_key(tmp_path / "other.p8"))  # someone else's key is registered
    user = f"ETL_{uuid.uuid4().hex[:8].upper()}"
    write_key(key_path)
    checks = by_id(check_destination(target(snowflake, key_path, user), 10))
    login = checks["login"]
    assert login.status == FAIL
    assert login.observed.startswith("login failed: JWT token is invalid")
    assert openssl_fingerprint(key_path) in login.observed
    assert login.fix.startswith(f'ALTER USER "{user}" SET RSA_PUBLIC_KEY=\'MII')
    assert {checks[i].status for i in ("role", "database", "schema", "warehouse")} == {SKIP}
    snowflake.execute(login.fix)
    assert by_id(check_destination(target(snowflake, key_path, user), 10))["login"].status == PASS


@pytest.mark.slow
def test_missing_database_and_schema_fail_naming_them(snowflake, tmp_path):
    """A database that does not exist fails naming it (its schema is then skipped); a schema
    that does not exist in a database that does fails naming both."""
    key_path = tmp_path / "rsa_key.p8"
    user = new_user(snowflake, write_key(key_path))
    checks = by_id(check_destination(target(snowflake, key_path, user, database="NO_SUCH_DB"), 10))
    assert checks["database"].status == FAIL
    assert checks["database"].observed.startswith('Database "NO_SUCH_DB" does not exist')
    assert 'CREATE DATABASE IF NOT EXISTS "NO_SUCH_DB";' in checks["database"].fix
    assert 'GRANT USAGE ON DATABASE "NO_SUCH_DB" TO ROLE "LOADER";' in checks["database"].fix
    assert checks["schema"].status == SKIP
    assert checks["warehouse"].status == PASS  # a warehouse does not depend on the database
    checks = by_id(check_destination(target(snowflake, key_path, user, schema="staging"), 10))
    assert checks["database"].status == PASS
    assert checks["schema"].status == FAIL
    assert checks["schema"].observed.startswith('Schema "ANALYTICS"."STAGING" does not exist')
    assert 'CREATE SCHEMA IF NOT EXISTS "ANALYTICS"."STAGING";' in checks["schema"].fix
    snowflake.execute(checks["schema"].fix.splitlines()[1])  # the CREATE SCHEMA
    checks = by_id(check_destination(target(snowflake, key_path, user, schema="staging"), 10))
    assert checks["schema"].status == PASS


@pytest.mark.slow
def test_nothing_listening_fails_fast_in_plain_words(tmp_path):
    """A host:port where nothing listens fails the login at once: 'cannot reach', no trace."""
    key_path = tmp_path / "rsa_key.p8"
    write_key(key_path)
    port = free_port()
    spec = SnowflakeTarget("xy12345", "U", "D", "S", str(key_path), host=f"http://127.0.0.1:{port}")
    started = time.monotonic()
    checks = by_id(check_destination(spec, 5))
    assert time.monotonic() - started < 2  # not after the connector's retries and backoffs
    assert checks["login"].observed == f"cannot reach 127.0.0.1:{port}: connection refused"
    assert "Host is set to" in checks["login"].fix


@pytest.mark.slow
def test_https_to_a_plain_http_port_says_there_is_no_tls(snowflake, tmp_path):
    """An https Host whose port speaks plain http fails at once, saying so."""
    key_path = tmp_path / "rsa_key.p8"
    user = new_user(snowflake, write_key(key_path))
    spec = target(snowflake, key_path, user, host=f"https://127.0.0.1:{snowflake.port}")
    started = time.monotonic()
    login = by_id(check_destination(spec, 5))["login"]
    assert time.monotonic() - started < 2
    assert login.observed == (
        f"cannot reach 127.0.0.1:{snowflake.port}: no TLS there (wrong version number) — is it "
        "http, not https?"
    )


@pytest.mark.slow
def test_a_login_sends_no_cloud_metadata_probes(snowflake, tmp_path, hanging_server, monkeypatch):
    """The connector's platform detection sends no probes: off-cloud, a metadata endpoint that
    never answers (here AWS's, moved to a local socket) would hold each login about 2 s."""
    key_path = tmp_path / "rsa_key.p8"
    user = new_user(snowflake, write_key(key_path))
    endpoint = f"http://127.0.0.1:{hanging_server.port}"
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
    started = time.monotonic()
    assert by_id(check_destination(target(snowflake, key_path, user), 10))["login"].status == PASS
    assert time.monotonic() - started < 1.5
    assert hanging_server.held == []


@pytest.mark.slow
def test_host_that_never_answers_times_out_within_the_bound(tmp_path, hanging_server):
    """A host that accepts and never answers fails after the timeout, not later, saying so."""
    key_path = tmp_path / "rsa_key.p8"
    write_key(key_path)
    spec = SnowflakeTarget(
        "xy12345", "U", "D", "S", str(key_path), host=f"http://127.0.0.1:{hanging_server.port}"
    )
    started = time.monotonic()
    checks = by_id(check_destination(spec, 2))
    took = time.monotonic() - started
    assert 1 <= took < 3.5
    assert checks["login"].status == FAIL
    assert checks["login"].observed == (
        f"timed out after 2 s: no answer from http://127.0.0.1:{hanging_server.port}."
    )
    assert {checks[i].status for i in ("role", "database", "schema", "warehouse")} == {SKIP}


@pytest.mark.slow
@pytest.mark.parametrize("connector_level", [None, "DEBUG"])
def test_connector_logs_nothing_secret(snowflake, tmp_path, caplog, capfd, connector_level):
    """A check with an encrypted key logs and prints neither the passphrase, nor the key, nor
    the login's JWT: with the app's logging at DEBUG, and with the connector's own turned to
    DEBUG by an operator."""
    connector = logging.getLogger("snowflake.connector")
    before = connector.level
    caplog.set_level("DEBUG")
    if connector_level:
        connector.setLevel(connector_level)
    try:
        key_path = tmp_path / "rsa_key.p8"
        user = new_user(snowflake, write_key(key_path, passphrase=PASSPHRASE))
        spec = target(snowflake, key_path, user, passphrase=PASSPHRASE)
        assert by_id(check_destination(spec, 10))["login"].status == PASS
    finally:
        connector.setLevel(before)
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    if connector_level:  # the connector did log, at length
        assert sum(r.name.startswith("snowflake.connector") for r in caplog.records) > 50
    assert PASSPHRASE not in logged
    assert "PRIVATE KEY" not in logged and "eyJ" not in logged  # a JWT starts eyJ


# ---- The pages and the API ---------------------------------------------------------------


def destination_form(snowflake: FakeSnowflake, key_path: Path, user: str, **fields: Any) -> dict:
    """The destination form as an operator fills it to reach the test server."""
    return {
        "name": "snowflake-production",
        "snowflake_account": "xy12345.us-east-1",
        "snowflake_user": user,
        "snowflake_database": "ANALYTICS",
        "snowflake_schema": "RAW_DATA",
        "snowflake_role": "LOADER",
        "snowflake_warehouse": "",
        "snowflake_private_key_path": str(key_path),
        "snowflake_private_key_passphrase": PASSPHRASE,
        "snowflake_host": snowflake.host_setting,
        **fields,
    }


@pytest.mark.slow
def test_saving_checks_and_the_page_shows_the_checklist(browser, app, snowflake, tmp_path):
    """Creating a destination checks it: the list it lands on says ready with a badge; its
    page shows the checklist and the fingerprint; Check (htmx) swaps in a fresh checklist."""
    key_path = tmp_path / "rsa_key.p8"
    user = new_user(snowflake, write_key(key_path, passphrase=PASSPHRASE))
    saved = browser.post("/destinations/new", destination_form(snowflake, key_path, user))
    assert saved.status_code == 303 and saved.headers["Location"] == "/destinations/"
    listing = browser.get("/destinations/").get_data(as_text=True)
    assert "Destination &#39;snowflake-production&#39; created. Ready: every check passed." in (
        listing
    )
    assert ">ready</span>" in listing and 'href="/destinations/1"' in listing
    page = browser.get("/destinations/1").get_data(as_text=True)
    fingerprint = openssl_fingerprint(key_path, PASSPHRASE)
    assert f"<code>{fingerprint}</code>" in page
    assert f"DESC USER &#34;{user}&#34;" in page
    assert page.count('class="check check-pass"') == 8 and 'id="check-warehouse"' in page
    assert 'hx-post="/destinations/1/check"' in page and 'name="csrf_token"' in page
    with app.app_context():
        first = _db.session.get(Destination, 1).readiness["checked_at"]
    fragment = browser.post("/destinations/1/check", headers={"HX-Request": "true"})
    html = fragment.get_data(as_text=True)
    assert fragment.status_code == 200
    assert html.lstrip().startswith('<section id="readiness"') and "<html" not in html
    assert 'data-status="pass"' in html and fingerprint in html
    with app.app_context():
        assert _db.session.get(Destination, 1).readiness["checked_at"] >= first
    assert PASSPHRASE not in page + html + listing


@pytest.mark.slow
def test_a_failing_check_never_refuses_the_save(browser, app, snowflake, tmp_path):
    """A destination whose database is missing is saved all the same; the list says not ready,
    its page shows the failing check's fix, and a Check without htmx lands back on the page."""
    key_path = tmp_path / "rsa_key.p8"
    user = new_user(snowflake, write_key(key_path, passphrase=PASSPHRASE))
    form = destination_form(snowflake, key_path, user, snowflake_database="MISSING_DB")
    assert browser.post("/destinations/new", form).status_code == 303
    listing = browser.get("/destinations/").get_data(as_text=True)
    assert "Not ready: database failed." in listing and ">not ready</span>" in listing
    page = browser.get("/destinations/1").get_data(as_text=True)
    assert 'id="check-database" data-status="fail"' in page
    assert "CREATE DATABASE IF NOT EXISTS &#34;MISSING_DB&#34;;" in page
    response = browser.post("/destinations/1/check")
    assert response.status_code == 303
    assert response.headers["Location"] == "/destinations/1#readiness"
    assert "Checked &#39;snowflake-production&#39;. Not ready: database failed." in (
        browser.get("/destinations/1").get_data(as_text=True)
    )


def test_the_list_shows_not_checked_before_any_check(app, browser):
    """A destination stored without a check (as before this feature) reads 'not checked'."""
    with app.app_context():
        _db.session.add(
            new_destination(
                "legacy",
                snowflake_account="xy12345",
                snowflake_user="U",
                snowflake_database="D",
                snowflake_schema="S",
            )
        )
        _db.session.commit()
    listing = browser.get("/destinations/").get_data(as_text=True)
    assert ">not checked</span>" in listing
    page = browser.get("/destinations/1").get_data(as_text=True)
    assert 'id="readiness-none"' in page and "Not checked yet" in page


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("xy12345.snowflakecomputing.com", True),
        ("xy12345.us-east-1.privatelink.snowflakecomputing.com:443", True),
        ("https://xy12345.snowflakecomputing.com", True),
        ("http://127.0.0.1:8080", True),
        ("ftp://xy12345.snowflakecomputing.com", False),
        ("xy12345.snowflakecomputing.com:70000", False),
        ("https://xy12345.snowflakecomputing.com/path", False),
        ("user@proxy.internal:3128", False),
    ],
)
def test_host_field_takes_a_host_host_port_or_url(browser, app, host, ok):
    """The Host field takes a host, host:port or an http(s) URL, and refuses the rest with a
    message beside it."""
    form = {
        "name": "d",
        "snowflake_account": "xy12345",
        "snowflake_user": "U",
        "snowflake_database": "D",
        "snowflake_schema": "S",
        "snowflake_private_key_path": "missing.p8",
        "snowflake_host": host,
    }
    response = browser.post("/destinations/new", form)
    if ok:
        assert response.status_code == 303
        with app.app_context():
            assert _db.session.get(Destination, 1).snowflake_host == host
    else:
        assert response.status_code == 200
        assert "Enter a host (xy12345.snowflakecomputing.com), host:port, or a URL" in (
            response.get_data(as_text=True)
        )


@pytest.mark.slow
def test_api_check_returns_the_checklist(api, snowflake, tmp_path):
    """POST /api/v1/destinations/<id>/check answers the stored shape; GET shows it after."""
    key_path = tmp_path / "rsa_key.p8"
    user = new_user(snowflake, write_key(key_path))
    body = {
        key: value
        for key, value in destination_form(snowflake, key_path, user).items()
        if key != "snowflake_private_key_passphrase"
    }
    created = api.post("/api/v1/destinations", json=body)
    assert created.status_code == 201 and created.get_json()["readiness"]["ready"] is True
    response = api.post("/api/v1/destinations/1/check")
    assert response.status_code == 200
    result = response.get_json()
    assert set(result) == {"ready", "checked_at", "checks"} and result["ready"] is True
    assert result["checked_at"].endswith("Z")
    assert [check["id"] for check in result["checks"]] == CHECK_IDS
    for check in result["checks"]:
        assert set(check) == {"id", "status", "title", "observed", "fix"}
    assert api.get("/api/v1/destinations/1").get_json()["readiness"] == result


@pytest.mark.slow
def test_api_check_of_a_host_that_never_answers_is_no_500(api, app, tmp_path, hanging_server):
    """A destination whose host never answers gets its checklist within the timeout: a 200
    saying it timed out, not a 500 and not a hang."""
    app.config["WAL_MONITOR_TIMEOUT_SECONDS"] = 2
    key_path = tmp_path / "rsa_key.p8"
    write_key(key_path)
    body = {
        "name": "unreachable",
        "snowflake_account": "xy12345",
        "snowflake_user": "ETL_USER",
        "snowflake_database": "ANALYTICS",
        "snowflake_schema": "RAW_DATA",
        "snowflake_private_key_path": str(key_path),
        "snowflake_host": f"http://127.0.0.1:{hanging_server.port}",
    }
    assert api.post("/api/v1/destinations", json=body).status_code == 201
    started = time.monotonic()
    response = api.post("/api/v1/destinations/1/check")
    assert time.monotonic() - started < 3.5
    assert response.status_code == 200
    login = {check["id"]: check for check in response.get_json()["checks"]}["login"]
    assert login["status"] == "fail" and login["observed"].startswith("timed out after 2 s")


def test_api_check_of_an_unknown_destination_is_404(api):
    """Checking an id no destination has answers the 404 envelope."""
    response = api.post("/api/v1/destinations/999/check")
    assert response.status_code == 404
    assert set(response.get_json()) == {"error", "message", "details", "timestamp"}
