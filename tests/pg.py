"""Disposable PostgreSQL clusters for the tests, started from the installed server binaries."""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import psycopg2

from .constants import MIB


def _bindir() -> Path:
    """Find the PostgreSQL server binaries (pg_config, Debian's layout, or PATH)."""
    found = shutil.which("pg_config")
    if found:
        bindir = subprocess.run([found, "--bindir"], capture_output=True, text=True).stdout.strip()
        if (Path(bindir) / "initdb").exists():
            return Path(bindir)
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The server settings every cluster starts with, unless its `settings` say otherwise.
DEFAULT_SETTINGS: dict[str, str | int] = {
    "wal_level": "logical",
    "max_replication_slots": 20,
    "max_wal_senders": 20,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": 200,
}


class Cluster:
    """A throwaway PostgreSQL server with wal_level=logical, trust auth on 127.0.0.1.

    `settings` replace or add to DEFAULT_SETTINGS, e.g. {"wal_level": "replica"}. They are
    given on the command line, so ALTER SYSTEM cannot change them: leave out a setting that a
    test changes while the server runs.
    """

    def __init__(
        self, name: str = "rosetta-test", settings: dict[str, str | int] | None = None
    ) -> None:
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.datadir = self.root / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0  # PostgreSQL refuses to run as root

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, text=True)

    def start(self) -> Cluster:
        """Create and start the cluster."""
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        # postgres connects without a password; every other role must give its password.
        (self.datadir / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": self.root,
            **self.settings,
        }
        # pg_ctl hands the options to a shell: quote each one.
        self.options = " ".join(
            f"-c {shlex.quote(f'{name}={value}')}" for name, value in settings.items()
        )
        self.resume()
        return self

    def halt(self) -> None:
        """Stop the server, keeping its files, as an outage would."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the server (again, after halt()) on its port."""
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-l",
            str(self.root / "server.log"),
            "-o",
            self.options,
            "-w",
            "start",
        )

    def stop(self) -> None:
        """Stop the cluster and delete its files."""
        try:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(
        self, database: str = "postgres", user: str = "postgres", password: str | None = None
    ) -> str:
        """Return a SQLAlchemy URL for a database of this cluster."""
        auth = f"{user}:{password}" if password else user
        return f"postgresql+psycopg2://{auth}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):  # type: ignore[no-untyped-def]
        """Open an autocommit superuser connection."""
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, dbname=database, user="postgres")
        conn.autocommit = True
        return conn

    def create_database(self, name: str) -> str:
        """Create a database and return its URL."""
        with closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns a truthy value or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def psql(cluster: Cluster, query: Any, *args: Any, database: str = "shop") -> list[tuple[Any, ...]]:
    """Run one statement (text or psycopg2.sql) as postgres; return its rows, none for a
    command."""
    with closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute(query, args or None)
        return cur.fetchall() if cur.description else []


def client_options(cluster: Cluster, database: str = "shop") -> list[str]:
    """Return the command-line options of a PostgreSQL client connecting as postgres."""
    return ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", "-d", database]


# Ways to write WAL: rows into shop's `orders`, or logical messages of 1 MB (no table grows).
INSERT_ROWS = "INSERT INTO orders (note) SELECT md5(random()::text) FROM generate_series(1, 2000)"
EMIT_MESSAGE = "SELECT pg_logical_emit_message(false, 'rosetta-test', repeat('x', 1048576))"


def write_wal(
    cluster: Cluster, megabytes: float, statement: str = INSERT_ROWS, database: str = "shop"
) -> int:
    """Write at least `megabytes` of WAL into `database`, `statement` at a time; return the
    bytes written."""
    with closing(cluster.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_current_wal_lsn()")
        start = cur.fetchone()[0]
        while True:
            cur.execute(statement)
            cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint", (start,))
            written = int(cur.fetchone()[0])
            if written >= megabytes * MIB:
                return written


def emit_wal(cluster: Cluster, megabytes: float) -> int:
    """Write at least `megabytes` of WAL quickly, as logical messages; return the bytes."""
    return write_wal(cluster, megabytes, EMIT_MESSAGE)


def retained(cluster: Cluster, slot: str = "orders") -> int:
    """What PostgreSQL says the slot retains: pg_wal_lsn_diff(current, restart_lsn)."""
    return int(
        psql(
            cluster,
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s",
            slot,
            database="postgres",
        )[0][0]
    )


def recvlogical(
    cluster: Cluster, slot: str, publication: str = "pub", database: str = "shop"
) -> subprocess.Popen[bytes]:
    """Start a real consumer on the slot, confirming every second, and wait until psql shows
    it active."""
    options = ["-o", "proto_version=1", "-o", f"publication_names={publication}"]
    process = subprocess.Popen(
        [str(cluster.bindir / "pg_recvlogical"), *client_options(cluster, database)]
        + ["--slot", slot, "--start", "-f", "/dev/null", "-s", "1", "-F", "1", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    active = wait_for(
        lambda: psql(
            cluster, "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND active", slot
        ),
        timeout=10,
    )
    if not active:
        process.terminate()
        _, stderr = process.communicate(timeout=5)
        raise AssertionError(f"pg_recvlogical did not connect: {stderr.decode()}")
    return process


@contextmanager
def keep_size(cluster: Cluster, value: str) -> Iterator[None]:
    """Set max_slot_wal_keep_size with ALTER SYSTEM while inside, waiting until it applies."""
    psql(cluster, "ALTER SYSTEM SET max_slot_wal_keep_size = %s", value)
    psql(cluster, "SELECT pg_reload_conf()")
    expected = psql(cluster, "SELECT pg_size_pretty(pg_size_bytes(%s))", value)[0][0]
    assert wait_for(lambda: keep_size_now(cluster) == expected), "the reload did not apply"
    try:
        yield
    finally:
        psql(cluster, "ALTER SYSTEM RESET max_slot_wal_keep_size")
        psql(cluster, "SELECT pg_reload_conf()")
        wait_for(lambda: psql(cluster, "SHOW max_slot_wal_keep_size")[0][0] == "-1")


def keep_size_now(cluster: Cluster) -> str | None:
    """Return max_slot_wal_keep_size as pg_size_pretty shows it; None when unlimited (-1)."""
    setting = psql(cluster, "SHOW max_slot_wal_keep_size")[0][0]
    if setting == "-1":
        return None
    return psql(cluster, "SELECT pg_size_pretty(pg_size_bytes(%s))", setting)[0][0]


def lose_slot(cluster: Cluster, slot: str, timeout: float, statement: str = EMIT_MESSAGE) -> bool:
    """Write WAL past a small max_slot_wal_keep_size, switching segments and checkpointing,
    until psql shows the slot's wal_status lost; tell whether it did within `timeout`."""

    def lost() -> bool:
        write_wal(cluster, 17, statement)
        psql(cluster, "SELECT pg_switch_wal()")
        psql(cluster, "CHECKPOINT")
        status = psql(
            cluster, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", slot
        )
        return status == [("lost",)]

    return bool(wait_for(lost, timeout=timeout, interval=0))


class HangingServer:
    """A TCP server on 127.0.0.1 that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        """Stop accepting and drop every held connection."""
        self.sock.close()
        for conn in self.held:
            conn.close()
