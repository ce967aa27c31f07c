"""Readiness of a Snowflake destination: its key file and key, its account, a key-pair login.

No Flask and no ORM: a SnowflakeTarget comes in, a checklist goes out. The connector is
imported only when a login is tried (it is slow to import), and the whole run, login and
queries included, ends within the timeout it is given.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shlex
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from . import FAIL, PASS, SKIP, WARN, Check

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection
    from snowflake.connector.auth import AuthByKeyPair

MIN_KEY_BITS = 2048
# A PEM key is a few kB; anything much larger is not a key, and is not read whole.
MAX_KEY_FILE_BYTES = 64 * 1024
SNOWFLAKE_DOMAIN = "snowflakecomputing.com"
# The connector's own HTTP log lines say nothing secret (it redacts bodies), but they are one
# line per request: Rosetta reports what matters in the checks.
CONNECTOR_LOG_LEVEL = logging.ERROR

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# The Host setting: a host, host:port, or an http(s) URL with an optional port. The form checks
# it with this pattern and the API document shows it, so it uses nothing but plain groups.
HOST_PATTERN = rf"^(?:(https?)://)?({_LABEL}(?:\.{_LABEL})*)(?::({_PORT}))?/?$"
_HOST = re.compile(HOST_PATTERN)

# Account identifiers (https://docs.snowflake.com/en/user-guide/admin-account-identifier):
# org-account ("myorg-myaccount"), or a legacy locator with its region and cloud
# ("xy12345", "xy12345.us-east-1", "xy12345.us-east-2.aws"); either may end in .privatelink.
_ORG_ACCOUNT = r"[A-Za-z][A-Za-z0-9]*-[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*"
_LOCATOR = r"[A-Za-z][A-Za-z0-9_]*(?:\.[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?:\.(?:aws|gcp|azure))?)?"
_ACCOUNT = re.compile(rf"(?:{_ORG_ACCOUNT}|{_LOCATOR})(?:\.privatelink)?", re.IGNORECASE)
_UNQUOTED_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")

REMOTE_CHECKS = [
    ("login", "Key-pair login"),
    ("role", "Role"),
    ("database", "Database"),
    ("schema", "Schema"),
    ("warehouse", "Warehouse"),
]


@dataclass(frozen=True)
class SnowflakeTarget:
    """What a destination's checks look at: its Snowflake settings, the passphrase in clear."""

    account: str
    user: str
    database: str
    schema: str
    private_key_path: str
    role: str | None = None
    warehouse: str | None = None
    passphrase: str | None = field(default=None, repr=False)
    host: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """Where the connector logs in."""

    protocol: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.protocol}://{self.host}:{self.port}"


def parse_host(setting: str | None, account: str) -> Endpoint:
    """Read the Host setting (blank: the account's own host); raise ValueError if malformed."""
    if not setting:
        # As the connector derives it: underscores are not valid in a host name.
        host = f"{account.lower().replace('_', '-')}.{SNOWFLAKE_DOMAIN}"
        return Endpoint("https", host, 443)
    match = _HOST.fullmatch(setting.strip())
    if match is None:
        raise ValueError(
            f"Host {setting!r} is not a host name, host:port or http(s)://host[:port] URL"
        )
    protocol = match.group(1) or "https"
    port = int(match.group(3)) if match.group(3) else (443 if protocol == "https" else 80)
    return Endpoint(protocol, match.group(2).lower(), port)


def sql_identifier(name: str) -> str:
    """Quote a Snowflake name for SQL as the connector's setting means it.

    An unquoted name is case-insensitive (Snowflake stores it upper case); one already in
    double quotes is kept; anything else is quoted, its double quotes doubled.
    """
    if _UNQUOTED_IDENTIFIER.fullmatch(name):
        return f'"{name.upper()}"'
    if len(name) > 2 and name[0] == name[-1] == '"' and '"' not in name[1:-1].replace('""', ""):
        return name
    return '"' + name.replace('"', '""') + '"'


def public_key_fingerprint(key: rsa.RSAPrivateKey) -> str:
    """Return the key's fingerprint as DESC USER shows RSA_PUBLIC_KEY_FP."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(_public_der(key)).digest()).decode()


def _public_der(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_destination(target: SnowflakeTarget, timeout_s: float) -> list[Check]:
    """Check a Snowflake destination, within `timeout_s` seconds; return its checklist."""
    deadline = time.monotonic() + timeout_s
    checks, key = _key_checks(target)
    account = _account_check(target.account)
    checks.append(account)
    if key is None:
        return checks + _skip_remote(target, "Skipped: the private key cannot be used.")
    if account.status == FAIL:
        return checks + _skip_remote(target, "Skipped: the account identifier is malformed.")
    try:
        endpoint = parse_host(target.host, target.account)
    except ValueError as exc:
        login = Check(
            "login",
            FAIL,
            _title("login", target),
            f"{exc}.",
            "Set Host to a host (xy12345.snowflakecomputing.com), host:port, or a URL such as "
            "https://host:443; leave it blank for the account's own host.",
        )
        return checks + [login] + _skip_remote(target, "Skipped: no login.")[1:]
    return checks + _remote_checks(target, key, endpoint, deadline, timeout_s)


def _key_checks(target: SnowflakeTarget) -> tuple[list[Check], rsa.RSAPrivateKey | None]:
    """Check the key file and the key in it, show its fingerprint; return the key if usable."""
    path = os.path.abspath(target.private_key_path)
    raw, file_check = _read_key_file(path)
    if raw is None:
        return [
            file_check,
            Check("private_key", SKIP, "Private key", "Skipped: the file cannot be read."),
            Check("key_fingerprint", SKIP, "Public key fingerprint", "Skipped: no key."),
        ], None
    key, key_check = _load_key(raw, path, target)
    if key is None:
        skip = Check("key_fingerprint", SKIP, "Public key fingerprint", "Skipped: no usable key.")
        return [file_check, key_check, skip], None
    fingerprint = Check(
        "key_fingerprint",
        PASS,
        "Public key fingerprint",
        f"{public_key_fingerprint(key)} — DESC USER {sql_identifier(target.user)} shows the "
        "registered key's as RSA_PUBLIC_KEY_FP (or RSA_PUBLIC_KEY_2_FP); they must match.",
    )
    return [file_check, key_check, fingerprint], key


def _read_key_file(path: str) -> tuple[bytes | None, Check]:
    """Read the key file if the server can; say what stands in the way."""
    title = "Private key file"
    quoted = shlex.quote(path)
    owner = _server_user()
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None, Check(
            "key_file",
            FAIL,
            title,
            f"{path} does not exist on the Rosetta server.",
            f"Copy the key file to {path} on the server running Rosetta, or set Private key "
            "path to where it is.",
        )
    except OSError as exc:
        return None, Check(
            "key_file",
            FAIL,
            title,
            f"{path} cannot be looked at: {exc.strerror}.",
            f"Let the user running Rosetta ({owner}) into the directories above {path}.",
        )
    if not stat.S_ISREG(info.st_mode):
        return None, Check(
            "key_file",
            FAIL,
            title,
            f"{path} is not a file.",
            "Set Private key path to the key file itself (e.g. rsa_key.p8).",
        )
    if info.st_size > MAX_KEY_FILE_BYTES:
        return None, Check(
            "key_file",
            FAIL,
            title,
            f"{path} holds {info.st_size} bytes, far more than a key file does.",
            "Set Private key path to the PEM key file (rsa_key.p8).",
        )
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_KEY_FILE_BYTES)
    except PermissionError:
        return None, Check(
            "key_file",
            FAIL,
            title,
            f"{path} exists but the user running Rosetta ({owner}) may not read it.",
            f"chown {shlex.quote(owner)} {quoted} && chmod 600 {quoted}",
        )
    except OSError as exc:
        return None, Check("key_file", FAIL, title, f"{path} cannot be read: {exc.strerror}.")
    if info.st_mode & stat.S_IROTH:
        return raw, Check(
            "key_file",
            WARN,
            title,
            f"{path} is readable by Rosetta, and by every user of the server.",
            f"chmod 600 {quoted}",
        )
    return raw, Check("key_file", PASS, title, f"{path} is readable by Rosetta ({owner}).")


def _server_user() -> str:
    """Name the user the server runs as (the owner a key file should have)."""
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())


_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
GENERATE_KEY = (
    "openssl genrsa 2048 | openssl pkcs8 -topk8 -v2 aes256 -inform PEM -out rsa_key.p8\n"
    "openssl rsa -in rsa_key.p8 -pubout -out rsa_key.pub"
)


def _load_key(
    raw: bytes, path: str, target: SnowflakeTarget
) -> tuple[rsa.RSAPrivateKey | None, Check]:
    """Open the key as the connector will: PEM PKCS#8 RSA, with the stored passphrase."""
    title = "Private key"
    quoted = shlex.quote(path)
    found = _PEM_LABEL.search(raw)
    label = found.group(1).decode() if found else None

    def fail(observed: str, fix: str) -> tuple[None, Check]:
        return None, Check("private_key", FAIL, title, observed, fix)

    if label is None:
        kind = "DER (binary)" if raw[:1] == b"\x30" else "not PEM"
        return fail(
            f"The file is {kind}: no -----BEGIN PRIVATE KEY----- line.",
            f"Convert it to PEM PKCS#8: openssl pkcs8 -topk8 -v2 aes256 -inform DER -in {quoted}"
            " -out rsa_key.p8 — or generate a key:\n" + GENERATE_KEY,
        )
    if label == "EC PRIVATE KEY":
        return fail(
            "The file holds an EC key; Snowflake key-pair authentication takes RSA keys.",
            GENERATE_KEY,
        )
    if label in ("RSA PRIVATE KEY", "OPENSSH PRIVATE KEY"):
        return fail(
            f"The file holds a {label} (not PKCS#8); Snowflake's connector reads PKCS#8.",
            f"openssl pkcs8 -topk8 -v2 aes256 -in {quoted} -out rsa_key.p8\n"
            "(then set Private key path to rsa_key.p8 and its passphrase)",
        )
    if label in ("PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE"):
        return fail(
            f"The file holds a {label.lower()}; the login needs the private key.",
            "Set Private key path to the private key (rsa_key.p8), whose public half is "
            "registered with ALTER USER ... SET RSA_PUBLIC_KEY.",
        )
    if label not in ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"):
        return fail(f"The file holds a {label}, not a private key.", GENERATE_KEY)
    encrypted = label == "ENCRYPTED PRIVATE KEY"
    if encrypted and not target.passphrase:
        return fail(
            "The key is encrypted and no passphrase is stored.",
            "Enter the key's passphrase in the destination's Private key passphrase field.",
        )
    password = target.passphrase.encode() if encrypted and target.passphrase else None
    try:
        key = serialization.load_pem_private_key(raw, password=password)
    except ValueError as exc:
        if encrypted and re.search(r"password|decrypt", str(exc), re.IGNORECASE):
            return fail(
                "wrong passphrase: the stored passphrase does not open the key.",
                "Enter the passphrase the key was encrypted with in the Private key "
                "passphrase field (leaving it blank keeps the stored one).",
            )
        return fail(
            "The file is corrupt: its PEM block does not decode to a private key.",
            "Copy the key file again, whole, or generate a key:\n" + GENERATE_KEY,
        )
    except Exception:  # cryptography raises others for unsupported ciphers and key types
        return fail(
            "The key uses a cipher or key type this server cannot open.",
            "Re-encrypt it as Snowflake documents: openssl pkcs8 -topk8 -v2 aes256 "
            f"-in {quoted} -out rsa_key.p8",
        )
    if not isinstance(key, rsa.RSAPrivateKey):
        return fail(
            f"The key is {type(key).__name__.replace('PrivateKey', '')}, not RSA; Snowflake "
            "key-pair authentication takes RSA keys.",
            GENERATE_KEY,
        )
    kind = "encrypted" if encrypted else "unencrypted"
    if key.key_size < MIN_KEY_BITS:
        return fail(
            f"The key is a {kind} PKCS#8 RSA key of {key.key_size} bits; Snowflake requires "
            f"{MIN_KEY_BITS} or more.",
            f"{GENERATE_KEY}\nALTER USER {sql_identifier(target.user)} SET "
            "RSA_PUBLIC_KEY='<rsa_key.pub without its BEGIN/END lines>';",
        )
    note = " (a passphrase is stored but not needed)" if target.passphrase and not encrypted else ""
    return key, Check(
        "private_key",
        PASS,
        title,
        f"{kind.capitalize()} PKCS#8 RSA key of {key.key_size} bits{note}.",
    )


def _account_check(account: str) -> Check:
    """Tell whether the account identifier has a form Snowflake knows."""
    title = "Account identifier"
    if _ACCOUNT.fullmatch(account):
        kind = "organization-account name" if "-" in account.split(".")[0] else "account locator"
        return Check("account_identifier", PASS, title, f"{account} is an {kind}.")
    bare = re.sub(r"^https?://", "", account, flags=re.IGNORECASE).rstrip("/")
    bare = re.sub(rf"\.{re.escape(SNOWFLAKE_DOMAIN)}(?::\d+)?$", "", bare, flags=re.IGNORECASE)
    if bare != account and _ACCOUNT.fullmatch(bare):
        return Check(
            "account_identifier",
            FAIL,
            title,
            f"{account} is a URL or host name, not an account identifier.",
            f"Set Account to {bare} (without https:// and .{SNOWFLAKE_DOMAIN}).",
        )
    return Check(
        "account_identifier",
        FAIL,
        title,
        f"{account} is neither an organization-account name (myorg-myaccount) nor an account "
        "locator (xy12345, xy12345.us-east-1, xy12345.us-east-2.aws).",
        "Set Account to the result of SELECT CURRENT_ORGANIZATION_NAME() || '-' || "
        "CURRENT_ACCOUNT_NAME(); run in a Snowflake worksheet.",
    )


def _title(check_id: str, target: SnowflakeTarget) -> str:
    """Title a remote check with the names it is about."""
    if check_id == "login":
        return f"Key-pair login as {target.user}"
    if check_id == "role":
        return f"Role {target.role}" if target.role else "Role (the user's default)"
    if check_id == "database":
        return f"Database {target.database}"
    if check_id == "schema":
        return f"Schema {target.database}.{target.schema}"
    return f"Warehouse {target.warehouse}" if target.warehouse else "Warehouse"


def _skip_remote(target: SnowflakeTarget, why: str) -> list[Check]:
    """Skip the checks that need a login, saying why (no warehouse set is its own reason)."""
    return [
        _no_warehouse(target)
        if check_id == "warehouse" and not target.warehouse
        else Check(check_id, SKIP, _title(check_id, target), why)
        for check_id, _ in REMOTE_CHECKS
    ]


def _no_warehouse(target: SnowflakeTarget) -> Check:
    return Check(
        "warehouse",
        SKIP,
        _title("warehouse", target),
        "No warehouse set: sessions use the user's default warehouse.",
    )


def _remote_checks(
    target: SnowflakeTarget,
    key: rsa.RSAPrivateKey,
    endpoint: Endpoint,
    deadline: float,
    timeout_s: float,
) -> list[Check]:
    """Log in and use the role, database, schema and warehouse, all before the deadline.

    The connector bounds its login and its queries itself; the thread is the guarantee that
    nothing else it does (a DNS lookup, which no timeout of its bounds, say) holds the check
    longer.
    """
    done: list[Check] = []
    worker = threading.Thread(
        target=_login_and_use,
        args=(target, key, endpoint, deadline, timeout_s, done),
        name="destination-check",
        daemon=True,
    )
    worker.start()
    # A little grace, so the connector's own timeout error is the one reported.
    worker.join(max(0.0, deadline - time.monotonic()) + 1.0)
    if not worker.is_alive():  # done: what it did not reach waited on a failed login
        if not done:  # it died before it could say so: never call that ready
            done = [
                Check(
                    "login",
                    FAIL,
                    _title("login", target),
                    "the login could not be tried: the check stopped before it.",
                )
            ]
        return done + _skip_remote(target, "Skipped: the login failed.")[len(done) :]
    finished = list(done)
    check_id = REMOTE_CHECKS[len(finished)][0]
    timed_out = Check(
        check_id,
        FAIL,
        _title(check_id, target),
        f"timed out after {_seconds(timeout_s)} s: no answer from {endpoint}.",
        _reach_fix(target, endpoint),
    )
    rest = _skip_remote(target, "Skipped: the check ran out of time.")[len(finished) + 1 :]
    return finished + [timed_out] + rest


def _login_and_use(
    target: SnowflakeTarget,
    key: rsa.RSAPrivateKey,
    endpoint: Endpoint,
    deadline: float,
    timeout_s: float,
    done: list[Check],
) -> None:
    """Log in with the key, then check each object the destination names; append to `done`."""
    started = time.monotonic()
    try:
        seconds = max(1, round(deadline - time.monotonic()))
        conn = _open(target, key, endpoint, deadline, seconds)
    except Exception as exc:  # the connector's errors, and any other it lets through
        done.append(_login_failure(exc, target, key, endpoint, timeout_s))
        return
    try:
        version = _scalar(conn, "SELECT CURRENT_VERSION()")
        took = time.monotonic() - started
        done.append(
            Check(
                "login",
                PASS,
                _title("login", target),
                f"Logged in to {endpoint} as {target.user} in {took:.1f} s (Snowflake {version}).",
            )
        )
        _use_objects(conn, target, done)
    except Exception as exc:  # whatever else the connector raises, as the check it stopped
        if len(done) < len(REMOTE_CHECKS):
            check_id = REMOTE_CHECKS[len(done)][0]
            done.append(Check(check_id, FAIL, _title(check_id, target), _words(exc)))
            done.extend(_skip_remote(target, "Skipped: an earlier check failed.")[len(done) :])
    finally:
        try:
            conn.close(retry=False)  # one logout request, not three
        except Exception:  # the checks are done; a failed logout changes none of them
            pass


def connect(
    target: SnowflakeTarget, timeout_s: float, query_timeout_s: float | None = None
) -> SnowflakeConnection:
    """Log in to the destination with its key pair within `timeout_s` seconds.

    Each later request waits `timeout_s` for an answer; a query (its polling and retries
    included) may run `query_timeout_s`, or as long as it takes when None. Raise ValueError
    when its key file, key or Host setting cannot be used (the message says what the
    readiness checks say), or the connector's error when the login fails.
    """
    deadline = time.monotonic() + timeout_s
    path = os.path.abspath(target.private_key_path)
    raw, file_check = _read_key_file(path)
    if raw is None:
        raise ValueError(file_check.observed)
    key, key_check = _load_key(raw, path, target)
    if key is None:
        raise ValueError(key_check.observed)
    endpoint = parse_host(target.host, target.account)
    return _open(target, key, endpoint, deadline, query_timeout_s)


def _open(
    target: SnowflakeTarget,
    key: rsa.RSAPrivateKey,
    endpoint: Endpoint,
    deadline: float,
    network_timeout_s: float | None,
) -> SnowflakeConnection:
    """Open the connector's session with the key, its login bounded by the deadline."""
    logger = logging.getLogger("snowflake.connector")
    if logger.level == logging.NOTSET:  # unless the operator configured it; before the
        logger.setLevel(CONNECTOR_LOG_LEVEL)  # import, which logs what it found installed
    seconds = max(1, round(deadline - time.monotonic()))
    import snowflake.connector

    return snowflake.connector.connect(
        account=target.account,
        user=target.user,
        auth_class=_key_pair_login(key, deadline),
        host=endpoint.host,
        port=endpoint.port,
        protocol=endpoint.protocol,
        application="Rosetta",
        # Each HTTP request's connect and read timeout (the login's too: see
        # _key_pair_login, which also decides its retry, so login_timeout is not used),
        # and how long any other request, retries included, may take: a query still
        # running then is cancelled.
        socket_timeout=seconds,
        network_timeout=network_timeout_s,
        # Zero skips the probes of cloud metadata endpoints (169.254.169.254 and the like)
        # the connector sends at each login to report its platform: off-cloud they only
        # wait for their own timeout. The environment-only checks still run.
        platform_detection_timeout_seconds=0.0,
    )


def _key_pair_login(key: rsa.RSAPrivateKey, deadline: float) -> AuthByKeyPair:
    """The connector's key-pair (SNOWFLAKE_JWT) login, made to fail fast with its cause.

    The connector's own (AuthByKeyPair, as connect(private_key=...) makes it) retries a
    failed login request (refused, reset, timed out) with backoff until login_timeout, up to
    ten times, then says only "Could not connect". This one retries once, at once, and only
    if time is left, so that a check reports the cause (the first error in the chain of the
    one raised) at once. Its login requests wait socket_timeout, not the JWT_CNXN_WAIT_TIME
    (10 s) the connector's gives them. auth_class takes such a subclass of AuthByKeyPair.
    """
    from snowflake.connector.auth import AuthByKeyPair
    from snowflake.connector.errorcode import ER_FAILED_TO_CONNECT_TO_DB
    from snowflake.connector.errors import OperationalError

    class CheckLogin(AuthByKeyPair):
        def __init__(self) -> None:
            super().__init__(private_key=key)
            self._socket_timeout = None  # the connection's socket_timeout
            self.retried = False

        def handle_timeout(
            self,
            *,
            authenticator: str,
            service_name: str | None,
            account: str,
            user: str,
            password: str | None,
            **kwargs: Any,
        ) -> None:
            if self.retried or time.monotonic() >= deadline:
                # This errno is the one that ends the connector's retry loop.
                raise OperationalError(
                    msg="Could not connect to Snowflake.", errno=ER_FAILED_TO_CONNECT_TO_DB
                )
            self.retried = True
            self.prepare(account=account, user=user)  # a fresh JWT, as the connector does

    return CheckLogin()


def _scalar(conn: SnowflakeConnection, sql: str) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
    return row[0] if row else None


def _use_objects(conn: SnowflakeConnection, target: SnowflakeTarget, done: list[Check]) -> None:
    """USE the role, database, schema and warehouse in turn: each USE fails as a load would."""
    import snowflake.connector

    user = sql_identifier(target.user)
    role_sql = sql_identifier(target.role) if target.role else None
    database = sql_identifier(target.database)
    schema = f"{database}.{sql_identifier(target.schema)}"
    try:
        if role_sql is not None:
            _scalar(conn, f"USE ROLE {role_sql}")
            done.append(Check("role", PASS, _title("role", target), f"{user} may use {role_sql}."))
        else:
            current = _scalar(conn, "SELECT CURRENT_ROLE()")
            done.append(
                Check(
                    "role",
                    PASS,
                    _title("role", target),
                    f"No role set: sessions use {user}'s default role, {current}.",
                )
            )
            role_sql = sql_identifier(str(current)) if current else '"PUBLIC"'
    except snowflake.connector.Error as exc:
        if role_sql is None:
            observed = f"The session's role cannot be read: {_words(exc)}"
        else:
            observed = f"{role_sql} does not exist or is not granted to {user}: {_words(exc)}"
        done.append(
            Check(
                "role",
                FAIL,
                _title("role", target),
                observed,
                f"GRANT ROLE {role_sql or '<role>'} TO USER {user};\n"
                "-- or set Role to one granted to the user (SHOW GRANTS TO USER shows them)",
            )
        )
        done.extend(_skip_remote(target, "Skipped: the role is not usable.")[2:])
        return
    owner = "-- as a role that may create databases, e.g. SYSADMIN\n"
    database_ok = _use(
        conn,
        target,
        done,
        "database",
        database,
        f"{owner}CREATE DATABASE IF NOT EXISTS {database};\n"
        f"GRANT USAGE ON DATABASE {database} TO ROLE {role_sql};\n"
        "-- or correct the destination's Database setting",
        role_sql,
    )
    if database_ok:
        _use(
            conn,
            target,
            done,
            "schema",
            schema,
            f"{owner}CREATE SCHEMA IF NOT EXISTS {schema};\n"
            f"GRANT USAGE ON SCHEMA {schema} TO ROLE {role_sql};\n"
            "-- or correct the destination's Schema setting",
            role_sql,
        )
    else:
        done.append(
            Check("schema", SKIP, _title("schema", target), "Skipped: the database is not usable.")
        )
    if not target.warehouse:
        done.append(_no_warehouse(target))
        return
    warehouse = sql_identifier(target.warehouse)
    _use(
        conn,
        target,
        done,
        "warehouse",
        warehouse,
        f"GRANT USAGE ON WAREHOUSE {warehouse} TO ROLE {role_sql};\n"
        "-- or correct the destination's Warehouse setting",
        role_sql,
    )


def _use(
    conn: SnowflakeConnection,
    target: SnowflakeTarget,
    done: list[Check],
    check_id: str,
    name: str,
    fix: str,
    role_sql: str,
) -> bool:
    """USE one object, as a load would; append its check and tell whether it passed."""
    import snowflake.connector

    title = _title(check_id, target)
    kind = check_id.capitalize()
    try:
        _scalar(conn, f"USE {check_id.upper()} {name}")
    except snowflake.connector.Error as exc:
        observed = f"{kind} {name} does not exist or {role_sql} may not use it: {_words(exc)}"
        done.append(Check(check_id, FAIL, title, observed, fix))
        return False
    done.append(Check(check_id, PASS, title, f"{kind} {name} exists and {role_sql} may use it."))
    return True


_ERROR_PREFIX = re.compile(r"^(?:\d{3,6}(?: \([0-9A-Z]{5}\))?: )+")
_NOISE = re.compile(
    r"Failed to login: |Login error: |HTTP request failed after retries: |login request\. "
    r"|Failed to connect to DB: \S+\. |, code: \d+| \(request_id=[^)]*\)"
)


# pyOpenSSL's errors read [('SSL routines', '', 'certificate verify failed')]: the reasons say it.
_OPENSSL_REASON = re.compile(r"\('[^']*', '[^']*', '([^']*)'\)")


def _words(exc: BaseException) -> str:
    """Say what a connector error says, without its codes and request ids."""
    text = str(getattr(exc, "msg", None) or exc)
    if text.startswith("[(") and (reasons := _OPENSSL_REASON.findall(text)):
        text = "; ".join(reasons)
    text = _NOISE.sub("", _ERROR_PREFIX.sub("", text.strip()))
    return text.strip().rstrip(".") + "."


def _root_cause(exc: BaseException) -> BaseException:
    """Follow an error's chain (raised from, or while handling) to the first error raised."""
    seen = {id(exc)}
    while True:
        follow = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if follow is None or id(follow) in seen:
            return exc
        seen.add(id(follow))
        exc = follow


def _reach_fix(target: SnowflakeTarget, endpoint: Endpoint) -> str:
    default = parse_host(None, target.account)
    setting = (
        f"Host is set to {target.host}; leave it blank for {default}."
        if target.host
        else f"Host is blank, so {default} is used; set Host for a private-link endpoint or a "
        "proxy."
    )
    return (
        f"Check that the Rosetta server may open {endpoint.host}:{endpoint.port} "
        f"(firewall, proxy, DNS). {setting}"
    )


def _login_failure(
    exc: Exception,
    target: SnowflakeTarget,
    key: rsa.RSAPrivateKey,
    endpoint: Endpoint,
    timeout_s: float,
) -> Check:
    """Turn a failed connect into plain words and the fix: unreachable, timed out or refused."""
    title = _title("login", target)
    words = _redact(_words(exc), target)
    # What the network said (refused, timed out, a TLS error) is at the end of the error's
    # chain: the connector raises its own errors while handling it.
    cause = _redact(_words(_root_cause(exc)), target)
    lowered = f"{words} {cause}".lower()
    errno = getattr(exc, "errno", None)
    where = f"{endpoint.host}:{endpoint.port}"
    if getattr(exc, "sqlstate", None) == "HYT00" or "timed out" in lowered:
        return Check(
            "login",
            FAIL,
            title,
            f"timed out after {_seconds(timeout_s)} s: no answer from {endpoint}.",
            _reach_fix(target, endpoint),
        )
    reasons = [
        ("connection refused", "connection refused"),
        ("name or service not known", "the host name does not resolve"),
        ("temporary failure in name resolution", "the host name does not resolve"),
        ("failed to resolve", "the host name does not resolve"),
        ("wrong version number", "no TLS there (wrong version number) — is it http, not https?"),
        ("certificate", f"TLS failed: {cause}"),
        ("ssl", f"TLS failed: {cause}"),
        ("connection reset", cause),
        ("remote end closed", cause),
        ("unreachable", cause),
        ("errno", cause),
    ]
    for needle, reason in reasons:
        if needle in lowered:
            return Check(
                "login",
                FAIL,
                title,
                f"cannot reach {where}: {reason}",
                _reach_fix(target, endpoint),
            )
    user = sql_identifier(target.user)
    if errno == 390144 or "jwt" in lowered:
        body = base64.b64encode(_public_der(key)).decode()
        return Check(
            "login",
            FAIL,
            title,
            f"login failed: {words} Snowflake does not accept this key for {target.user}: "
            f"compare {public_key_fingerprint(key)} with RSA_PUBLIC_KEY_FP in DESC USER {user}.",
            f"ALTER USER {user} SET RSA_PUBLIC_KEY='{body}';",
        )
    return Check(
        "login",
        FAIL,
        title,
        f"login failed: {words}" if cause == words else f"login failed: {words} {cause}",
        f"Check the Account ({target.account}) and User ({target.user}) settings; "
        f"DESC USER {user} shows the user and its key's fingerprint.",
    )


def _redact(text: str, target: SnowflakeTarget) -> str:
    """Keep the passphrase out of a message, should anything ever echo it."""
    if target.passphrase and target.passphrase in text:
        return text.replace(target.passphrase, "********")
    return text


def _seconds(value: float) -> str:
    return f"{value:g}"
