"""The engine as the operator runs it, for the tests: `flask rosetta engine` processes, a
source database with a publication and a slot, a destination on fakesnow, and a TCP proxy
that can cut the destination off."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

from flask import Flask

from rosetta_web.extensions import db
from rosetta_web.models import Destination, Pipeline, PipelineRun

from .constants import ROOT
from .factories import _store, add_source, new_destination
from .pg import Cluster, free_port, wait_for
from .processes import process_env
from .snowflake import FakeSnowflake, new_user, write_key

# The engine's settings in the tests: quick looks, one-second batches, short retries.
ENGINE_SETTINGS = {
    "ENGINE_POLL_SECONDS": "1",
    "ENGINE_BATCH_SECONDS": "1",
    "ENGINE_RETRY_MIN_SECONDS": "2",
    "ENGINE_RETRY_MAX_SECONDS": "4",
    "ENGINE_HEAP_MB": "256",
    "ENGINE_QUERY_TIMEOUT_SECONDS": "10",
}
_names = itertools.count(1)


class Engine:
    """One `flask rosetta engine` process against the metadata database."""

    def __init__(self, database_url: str, **settings: str) -> None:
        """Start the process; `settings` replace or add to ENGINE_SETTINGS."""
        self.log = Path(tempfile.mkdtemp(prefix="rosetta-engine-")) / "engine.log"
        env = process_env(database_url, **{**ENGINE_SETTINGS, **settings})
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flask", "rosetta", "engine"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def owner_suffix(self) -> str:
        """The end of this process's owner name (host:pid)."""
        return f":{self.process.pid}"

    def output(self) -> str:
        """What the process wrote so far."""
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM the process and return its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"the engine did not stop:\n{self.output()[-3000:]}") from None
        return self.process.returncode

    def kill(self) -> None:
        """kill -9 the process, as a crash would."""
        self.process.kill()
        self.process.wait()


class Proxy:
    """A TCP proxy from a local port to another, that can refuse and cut every connection, and
    cut the first connection that sends `cut_at` as it sends it (never forwarding those
    bytes)."""

    def __init__(self, target_port: int, cut_at: bytes | None = None) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.up = True
        self.cut_at = cut_at
        self.cuts = 0
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += [client, upstream]
            for a, b, watched in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, watched), daemon=True).start()

    def _cut_here(self, data: bytes) -> bool:
        with self.lock:
            if self.cut_at is None or self.cuts or self.cut_at not in data:
                return False
            self.cuts += 1
            return True

    def _pipe(self, source: socket.socket, sink: socket.socket, watched: bool) -> None:
        try:
            while data := source.recv(65536):
                if watched and self._cut_here(data):
                    break  # both ends are shut below, as a source restart would
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        self.up = False
        with self.lock:
            for sock in self.connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.connections.clear()

    def restore(self) -> None:
        """Accept connections again."""
        self.up = True

    def close(self) -> None:
        """Stop listening."""
        self.down()
        self.listener.close()


class Setup:
    """A source database (tables, publication, slot) and a pipeline to a fakesnow schema."""

    def __init__(
        self,
        app: Flask,
        cluster: Cluster,
        snowflake: FakeSnowflake,
        ddl: list[str],
        host: str,
        port: int | None = None,
    ) -> None:
        """`port`: where Rosetta reaches the source (the cluster's own port by default)."""
        n = next(_names)
        self.app = app
        self.cluster = cluster
        self.snowflake = snowflake
        self.database = f"engine_{n}_{os.getpid()}"
        self.schema = f"LOAD_{n}"
        self.slot = f"engine_slot_{n}"
        cluster.create_database(self.database)
        self.sql(*ddl)
        self.sql("CREATE PUBLICATION engine_pub FOR ALL TABLES")
        self.sql(f"SELECT pg_create_logical_replication_slot('{self.slot}', 'pgoutput')")
        snowflake.execute(f"CREATE SCHEMA IF NOT EXISTS ANALYTICS.{self.schema}")
        key_path = Path(tempfile.mkdtemp(prefix="engine-key-")) / "rsa_key.p8"
        user = new_user(snowflake, write_key(key_path))
        self.source_id = add_source(
            app,
            f"source-{n}",
            port or cluster.port,
            user="postgres",
            password="trusted-anyway",
            database=self.database,
            publication_name="engine_pub",
            slot_name=self.slot,
        )
        self.destination_id = _store(
            app,
            lambda: new_destination(
                f"destination-{n}",
                snowflake_account="xy12345.us-east-1",
                snowflake_user=user,
                snowflake_database="ANALYTICS",
                snowflake_schema=self.schema,
                snowflake_private_key_path=str(key_path),
                snowflake_host=host,
            ),
        )
        self.pipeline_id = _store(
            app,
            lambda: Pipeline(
                name=f"pipeline-{n}",
                source_id=self.source_id,
                destination_id=self.destination_id,
                status="PAUSE",
            ),
        )

    def sql(self, *statements: str) -> list[tuple[Any, ...]]:
        """Run statements on the source database; return the last one's rows."""
        rows: list[tuple[Any, ...]] = []
        with closing(self.cluster.connect(self.database)) as conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
                rows = cur.fetchall() if cur.description else []
        return rows

    def snowflake_rows(self, query: str) -> list[tuple[Any, ...]]:
        """Run a query in the destination's schema; return its rows."""
        return self.snowflake.execute("USE DATABASE ANALYTICS", f"USE SCHEMA {self.schema}", query)[
            -1
        ]

    def set_status(self, status: str) -> None:
        """Set the pipeline's wanted status, as the dashboard does."""
        with self.app.app_context():
            pipeline = db.session.get(Pipeline, self.pipeline_id)
            assert pipeline is not None
            pipeline.status = status
            db.session.commit()

    def run(self) -> PipelineRun | None:
        """What the engine last recorded of the pipeline."""
        with self.app.app_context():
            run = db.session.get(PipelineRun, self.pipeline_id)
            if run is not None:
                db.session.expunge(run)
            db.session.remove()
            return run

    def status(self) -> str:
        """The pipeline's wanted status, as stored now."""
        with self.app.app_context():
            pipeline = db.session.get(Pipeline, self.pipeline_id)
            assert pipeline is not None
            status = pipeline.status
            db.session.remove()
            return status

    def owned_by(self, engine: Engine, *states: str) -> bool:
        """Tell whether `engine` owns the pipeline (in one of `states`, when given)."""
        run = self.run()
        return bool(
            run is not None
            and run.owner is not None
            and run.owner.endswith(engine.owner_suffix)
            and (not states or run.state in states)
        )

    def destination_max_id(self, table: str = "ITEMS") -> int:
        """The highest ID loaded into a destination table; 0 before its first load."""
        try:
            return int(self.snowflake_rows(f"SELECT coalesce(max(ID), 0) FROM {table}")[0][0])
        except Exception:  # not created yet
            return 0

    def wait_state(self, *states: str, timeout: float = 60) -> PipelineRun:
        """Wait until the engine records one of `states`."""
        found = wait_for(
            lambda: (run := self.run()) is not None and run.state in states and run,
            timeout=timeout,
            interval=0.25,
        )
        assert found, f"pipeline state is {self.run() and self.run().state!r}, not {states}"  # type: ignore[union-attr]
        return found

    def wait_equal(
        self,
        source_query: str,
        destination_query: str,
        timeout: float = 60,
        engine: Engine | None = None,
    ) -> None:
        """Wait until the destination's rows equal the source's; a failure says what the
        engine recorded, and the end of `engine`'s output."""

        def equal() -> bool:
            try:
                return self.sql(source_query) == self.snowflake_rows(destination_query)
            except Exception:  # the table is not created yet
                return False

        if not wait_for(equal, timeout=timeout, interval=0.5):
            source = self.sql(source_query)
            try:
                destination = self.snowflake_rows(destination_query)
            except Exception as exc:
                destination = [("unreadable", str(exc))]
            run = self.run()
            raise AssertionError(
                f"not equal after {timeout} s: source has {len(source)} rows, destination "
                f"{len(destination)}; first differences: "
                f"{[(a, b) for a, b in zip(source, destination, strict=False) if a != b][:5]}; "
                f"the engine recorded {run and (run.state, run.reason, run.since)}"
                + (f"; its output ends:\n{engine.output()[-6000:]}" if engine else "")
            )

    def offsets_committed(self) -> bool:
        """Tell whether the engine has committed an offset for the pipeline (streams from it)."""
        from rosetta_web.engine.state import offsets_exist

        with self.app.app_context():
            committed = offsets_exist(self.pipeline_id)
            db.session.remove()
            return committed

    def slot_confirmed(self) -> tuple[bool, int]:
        """The slot's active flag and how far its confirmed position is behind, as psql says."""
        (row,) = self.sql(
            "SELECT active, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
            f"FROM pg_replication_slots WHERE slot_name = '{self.slot}'"
        )
        return bool(row[0]), int(row[1])


def destination_host(app: Flask, destination_id: int, host: str) -> None:
    """Point a destination at another host (a proxy's port)."""
    with app.app_context():
        destination = db.session.get(Destination, destination_id)
        assert destination is not None
        destination.snowflake_host = host
        db.session.commit()
