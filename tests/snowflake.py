"""A Snowflake-protocol server for the tests, and the key files a destination points at.

The server is fakesnow's standalone one (Starlette on uvicorn, DuckDB behind it), run in its
own process by `python -m tests.snowflake PORT`, so that DuckDB, uvicorn and fakesnow's logs
and warnings stay out of the tests' process. The client is the real connector, unpatched.

What fakesnow 0.12.1 checks by itself:

- every request after the login carries a session token the login handed out (390104);
- databases and schemas are real (DuckDB catalogs and schemas): `USE DATABASE` or
  `USE SCHEMA` of a missing one fails with 002003, as on Snowflake.

What it does not: it accepts any login (any account, user, password or JWT), and has no
users, roles, warehouses or grants: `USE ROLE` and `USE WAREHOUSE` pass for any name, and
every session may do anything. `ALTER USER` it cannot parse.

What this file adds, in front of fakesnow's own routes:

- a key-pair (SNOWFLAKE_JWT) login is checked as Snowflake checks it: the JWT's RS256
  signature against the user's registered public key, its issuer
  (`ACCOUNT.USER.SHA256:<fingerprint>`), subject and expiry. A refusal is Snowflake's
  answer, "JWT token is invalid" (390144). Other logins (the tests' admin session) pass.
- `ALTER USER ... SET RSA_PUBLIC_KEY='...'` registers the user's key, as on Snowflake; the
  admin session has fakesnow answer the statement itself as a no-op (its `nop_regexes`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .pg import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "RIVER_ADMIN"
# The statements fakesnow answers as no-ops in the admin's session (it cannot parse them).
ALTER_USER_NOP = r"\s*ALTER\s+USER\s"


def write_key(path: Path, bits: int = 2048, passphrase: str | None = None) -> rsa.RSAPrivateKey:
    """Write a new RSA key to `path` as PEM PKCS#8 (mode 600), encrypted given a passphrase."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    path.chmod(0o600)  # as a key file should be: only its owner reads it
    return key


def public_key_body(key: rsa.RSAPrivateKey) -> str:
    """Return the public key as `ALTER USER ... SET RSA_PUBLIC_KEY` takes it: DER in base64."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


class FakeSnowflake:
    """fakesnow's server on a local port, in a process of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.log = Path(tempfile.mkdtemp(prefix="fakesnow-")) / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host_setting(self) -> str:
        """The destination's Host setting that reaches this server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeSnowflake:
        """Start the server and wait until it answers."""
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.snowflake", str(self.port)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not wait_for(self._listening, timeout=60):
            self.stop()
            raise RuntimeError(f"fakesnow did not start:\n{self.log.read_text()}")
        return self

    def _listening(self) -> bool:
        import socket

        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"fakesnow exited:\n{self.log.read_text()}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """Stop the server."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def connect(self, network_timeout: int = 10) -> Any:
        """Open an administrator's session (a password login); the caller closes it."""
        import snowflake.connector

        return snowflake.connector.connect(
            account="fakesnow",
            user=ADMIN,
            password="admin-password",
            host="127.0.0.1",
            port=self.port,
            protocol="http",
            login_timeout=10,
            network_timeout=network_timeout,
            platform_detection_timeout_seconds=0.0,
            # The server registers the key an ALTER USER sets; fakesnow then answers it.
            session_parameters={"nop_regexes": [ALTER_USER_NOP]},
        )

    def execute(self, *statements: str) -> list[list[tuple[Any, ...]]]:
        """Run statements as an administrator would (a password login), return their rows."""
        conn = self.connect()
        with closing(conn), closing(conn.cursor()) as cur:
            results = []
            for statement in statements:
                cur.execute(statement)
                results.append(list(cur.fetchall()))
            return results


def new_user(snowflake: FakeSnowflake, key: Any) -> str:
    """Create a user name and register the key's public half for it, as an admin would."""
    user = f"ETL_{uuid.uuid4().hex[:8].upper()}"
    snowflake.execute(f"ALTER USER \"{user}\" SET RSA_PUBLIC_KEY='{public_key_body(key)}'")
    return user


def openssl_fingerprint(key_path: Path, passphrase: str | None = None) -> str:
    """Compute RSA_PUBLIC_KEY_FP with the openssl CLI, as Snowflake's docs do."""
    pubout = ["openssl", "pkey", "-in", str(key_path), "-pubout", "-outform", "DER"]
    if passphrase:
        pubout += ["-passin", f"pass:{passphrase}"]
    der = subprocess.run(pubout, check=True, capture_output=True).stdout
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary"], input=der, check=True, capture_output=True
    ).stdout
    return "SHA256:" + base64.b64encode(digest).decode()


@contextmanager
def fake_snowflake() -> Iterator[FakeSnowflake]:
    """Run fakesnow's server for the duration of the block."""
    server = FakeSnowflake().start()
    try:
        yield server
    finally:
        server.stop()


# ---- What runs in the server's process ---------------------------------------------------

ALTER_USER_KEY = re.compile(
    r"""\s*ALTER\s+USER\s+("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)\s+SET\s+RSA_PUBLIC_KEY\s*=\s*
        '([A-Za-z0-9+/=\s]+)'\s*;?\s*""",
    re.IGNORECASE | re.VERBOSE,
)


def _identifier(text: str) -> str:
    """Resolve a SQL identifier as Snowflake does: unquoted ones are upper case."""
    if text.startswith('"'):
        return text[1:-1].replace('""', '"')
    return text.upper()


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _jwt_refusal(body: dict[str, Any], keys: dict[str, bytes]) -> str | None:
    """Say why Snowflake would refuse this key-pair login, or None when it would accept it."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    data = body["data"]
    user = data["LOGIN_NAME"].upper()
    account = data["ACCOUNT_NAME"].upper().split(".")[0]
    registered = keys.get(user)
    if registered is None:
        return f"no RSA_PUBLIC_KEY is set for user {user}"
    header, payload, signature = data["TOKEN"].split(".")
    public_key = serialization.load_der_public_key(registered)
    assert isinstance(public_key, rsa.RSAPublicKey)
    try:
        public_key.verify(
            _b64url(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature:
        return "the signature does not match the user's RSA_PUBLIC_KEY"
    claims = json.loads(_b64url(payload))
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(registered).digest()).decode()
    if claims.get("iss") != f"{account}.{user}.{fingerprint}":
        return f"issuer {claims.get('iss')!r} is not {account}.{user}.{fingerprint}"
    if claims.get("sub") != f"{account}.{user}":
        return f"subject {claims.get('sub')!r} is not {account}.{user}"
    if claims.get("exp", 0) < time.time():
        return "the token has expired"
    return None


def serve(port: int) -> None:
    """Serve fakesnow on 127.0.0.1:`port`, checking key-pair logins as Snowflake does."""
    import gzip
    import logging

    import fakesnow.server
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    log = logging.getLogger("fakesnow.server")
    keys: dict[str, bytes] = {}  # user -> DER public key

    async def read_json(request: Request) -> dict[str, Any]:
        body = await request.body()  # Starlette keeps it: fakesnow reads it again
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return dict(json.loads(body))

    async def login(request: Request) -> Response:
        body = await read_json(request)
        if body["data"].get("AUTHENTICATOR") == "SNOWFLAKE_JWT":
            why = _jwt_refusal(body, keys)
            if why is not None:
                log.warning("JWT refused: %s", why)
                return JSONResponse(
                    {
                        "data": {"nextAction": None, "authnMethod": "JWT"},
                        "code": "390144",
                        "message": f"JWT token is invalid. [{secrets.token_hex(8)}]",
                        "success": False,
                        "headers": None,
                    }
                )
        return await fakesnow.server.login_request(request)

    async def query(request: Request) -> Response:
        match = ALTER_USER_KEY.fullmatch((await read_json(request)).get("sqlText", ""))
        if match is not None:
            keys[_identifier(match.group(1))] = base64.b64decode("".join(match.group(2).split()))
        return await fakesnow.server.query_request(request)

    # Starlette takes the first route that matches: these two, then fakesnow's own.
    app = Starlette(
        routes=[
            Route("/session/v1/login-request", login, methods=["POST"]),
            Route("/queries/v1/query-request", query, methods=["POST"]),
            *fakesnow.server.routes,
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    serve(int(sys.argv[1]))
