"""Run the sampler on a schedule, in exactly one process among all that share the database.

After each round it stores, the scheduler acts on it (`sources.services.after_round`): the
round itself only stores.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import math
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import IO, Any, NamedTuple

import click
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from flask import Flask
from flask.helpers import get_debug_flag
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from ..alerts.engine import delivery
from ..audit import services as audit
from ..errors import DATABASE_UNAVAILABLE, Outage
from ..sources import services as sources
from ..timeutil import utcnow
from . import prometheus, rollups, rounds
from .workers import kept_connections

log = logging.getLogger(__name__)

# pg_try_advisory_lock key: any fixed number no other application on the database uses.
LEADER_LOCK_KEY = 0x524F5345545441  # "ROSETTA"
# How soon a source saved in the browser or the API gets its first sample.
NEW_SOURCE_SECONDS = 5
# How often due alert notifications (retries included) are looked for.
DELIVERY_SECONDS = 5
# How often sources whose readiness is older than a day are looked for.
RECHECK_MINUTES = 15


class Job(NamedTuple):
    """One scheduled job: its id, what it runs, and the APScheduler trigger and arguments."""

    id: str
    function: Callable[[], None]
    trigger: str
    arguments: dict[str, Any]


class Leadership:
    """Decide which process samples: the holder of a lock all of them share.

    On PostgreSQL, an advisory lock on the metadata database: it lives as long as its
    connection, so a leader that dies frees it and another process takes it at its next tick.
    On SQLite, an exclusive lock on a file beside the database, freed when the process ends.
    """

    def __init__(self, app: Flask) -> None:
        url = app.config["SQLALCHEMY_DATABASE_URI"]
        self.on_postgres = url.startswith("postgresql")
        self.lock_path = os.path.join(app.instance_path, "sampler.lock")
        self.engine: Engine | None = None
        if self.on_postgres:
            self.engine = create_engine(
                url,
                poolclass=NullPool,
                connect_args={
                    "connect_timeout": 10,
                    "application_name": "rosetta-leader",
                    # Both ends notice a dead peer within about a minute: the client, to stop
                    # sampling; the server, to free the lock for another process to take.
                    "keepalives": 1,
                    "keepalives_idle": 30,
                    "keepalives_interval": 10,
                    "keepalives_count": 3,
                    "options": (
                        "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 "
                        "-c tcp_keepalives_count=3 -c tcp_user_timeout=60000"
                    ),
                },
            )
        self.connection: Connection | None = None
        self.lock_file: IO[str] | None = None
        self._mutex = threading.Lock()  # the sampling and retention jobs run in two threads
        # The lock and the jobs that take it (rounds, new sources, retention) share one outage:
        # a line when the metadata database goes and one when it is back, not one a tick.
        self.outage = Outage("not sampling", "WAL monitor: ", log)
        self.reached = True  # whether the last check got an answer from the database

    def is_leader(self) -> bool:
        """Confirm leadership, or try to take it; never raise."""
        with self._mutex:
            return self._check(self.engine) if self.engine is not None else self._check_file()

    def _check_file(self) -> bool:
        if self.lock_file is not None:
            return True
        try:
            os.makedirs(os.path.dirname(self.lock_path), exist_ok=True)
            lock_file = open(self.lock_path, "a")  # noqa: SIM115 - held for the process's life
        except OSError as exc:
            log.warning("cannot open the sampler lock file %s: %s", self.lock_path, exc)
            return False
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            return False
        self.lock_file = lock_file
        log.info("this process (pid %d) now samples WAL for all sources", os.getpid())
        return True

    def _check(self, engine: Engine) -> bool:
        lost = False
        if self.connection is not None:
            try:
                self.connection.exec_driver_sql("SELECT 1")
                self.reached = True
                return True
            except Exception:
                lost = True  # said below: in an outage, by the outage's line alone
                self._close()
        try:
            connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            taken = connection.exec_driver_sql(
                "SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,)
            ).scalar()
        except DATABASE_UNAVAILABLE as exc:
            self.reached = False
            self.outage.failed(exc)
            return False
        except Exception as exc:
            self.reached = False
            log.warning("cannot take the sampler lock: %s", exc)
            return False
        self.reached = True
        if lost:
            log.warning(
                "lost the sampler lock's connection; %s",
                "took the lock again" if taken else "another process holds it now",
            )
        if taken:
            self.connection = connection
            log.info("this process (pid %d) now samples WAL for all sources", os.getpid())
            return True
        connection.close()
        return False

    def _close(self) -> None:
        for held in (self.connection, self.lock_file):
            if held is not None:
                try:
                    held.close()
                except Exception:
                    pass
        self.connection = self.lock_file = None

    def answered(self) -> None:
        """Note that a job that takes the lock ran through; end a logged outage if the lock's
        own check reached the database too."""
        if self.reached:
            self.outage.answered()

    def release(self) -> None:
        """Give up leadership."""
        with self._mutex:
            self._close()


def next_tick_at(now: datetime, interval_s: int) -> datetime:
    """Return the first multiple of the interval since 1970 after `now`."""
    ticks = math.floor(now.timestamp() / interval_s) + 1
    return datetime.fromtimestamp(ticks * interval_s, UTC)


class MonitorScheduler:
    """APScheduler jobs: a sampling round every interval, retention once a day."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.interval_s = app.config["WAL_MONITOR_INTERVAL_SECONDS"]
        self.leadership = Leadership(app)
        self._round_lock = threading.Lock()
        self.scheduler: BackgroundScheduler | BlockingScheduler | None = None
        self.delivery_outage = Outage("notifications wait", "alert delivery: ", log)

    def _as_leader(self, work: Callable[[], object], failed: str) -> None:
        """Run `work` in an app context if this process leads. A metadata outage is said once
        (the leadership's outage); any other failure is logged with `failed`."""
        try:
            with self.app.app_context():
                if self.leadership.is_leader():
                    work()
                else:  # another process samples: it keeps the connections
                    kept_connections(self.app).close()
            self.leadership.answered()
        except DATABASE_UNAVAILABLE as exc:
            self.leadership.outage.failed(exc)
        except Exception:
            log.exception(failed)

    def tick(self) -> None:
        """Run one round if this process leads and the last round has finished."""
        if not self._round_lock.acquire(blocking=False):
            log.warning("WAL round still running after %d s; this tick is skipped", self.interval_s)
            return
        try:
            self._as_leader(
                lambda: sources.after_round(rounds.scheduled_round(apart=sources.after_round)),
                "WAL round failed; the next tick will try again",
            )
        finally:
            self._round_lock.release()

    def sample_new(self) -> None:
        """Close the connections kept for sources edited or deleted since; sample the sources
        saved since the last round (new, or with a new connection); with none, render /metrics
        if no rendering is kept (a source renamed or deleted, or none stored yet)."""
        if not self._round_lock.acquire(blocking=False):
            return  # a round is running: it samples them, and renders /metrics

        def sample() -> None:
            rounds.close_changed_connections()
            done = rounds.sample_new_sources()
            if done is not None:
                sources.after_round(done)
            elif not prometheus.is_kept():
                prometheus.keep()

        try:
            self._as_leader(sample, "sampling new sources failed; the next round will try them")
        finally:
            self._round_lock.release()

    def deliver(self) -> None:
        """Send the alert notifications that are due (new, or retries), without waiting."""
        try:
            with self.app.app_context():
                delivery.kick()
            self.delivery_outage.answered()
        except DATABASE_UNAVAILABLE as exc:
            self.delivery_outage.failed(exc)
        except Exception:
            log.exception("delivering alert notifications failed; the next run tries again")

    def expire(self) -> None:
        """Delete history and audit records older than their retention, if this process
        leads."""
        jobs: list[tuple[str, Callable[[], int]]] = [
            ("WAL", partial(rounds.delete_expired, self.app.config["WAL_METRICS_RETENTION_DAYS"])),
            (
                "WAL roll-up",
                partial(rollups.delete_expired, self.app.config["WAL_ROLLUP_RETENTION_DAYS"]),
            ),
            ("audit", audit.prune),
        ]
        for kind, expire in jobs:
            # Each in an app context of its own: one failing does not stop the other.
            self._as_leader(expire, f"{kind} retention failed; it runs again tomorrow")

    def recheck(self) -> None:
        """Check again the sources whose readiness is older than a day, if this process
        leads; WAL_MONITOR_CONCURRENCY at a time."""
        self._as_leader(
            sources.recheck_stale, "checking stale readiness failed; the next run tries again"
        )

    def jobs(self, now: datetime) -> list[Job]:
        """Declare the jobs, first runs counted from `now`."""
        # Ticks on multiples of the interval since 1970: whichever process leads, and after
        # a handover, samples land on the same grid, never one off it.
        first_tick = next_tick_at(now, self.interval_s)
        return [
            Job(
                "wal-sample",
                self.tick,
                "interval",
                {"seconds": self.interval_s, "start_date": first_tick, "next_run_time": first_tick},
            ),
            # An operator who just saved a source wants to see it sampled, not wait for a round.
            Job(
                "wal-sample-new",
                self.sample_new,
                "interval",
                {
                    "seconds": NEW_SOURCE_SECONDS,
                    "next_run_time": now + timedelta(seconds=NEW_SOURCE_SECONDS),
                },
            ),
            # Any process may deliver: a notification is claimed before it is sent. Retries and
            # what a process that died left behind are picked up here.
            Job(
                "alert-delivery",
                self.deliver,
                "interval",
                {
                    "seconds": DELIVERY_SECONDS,
                    "next_run_time": now + timedelta(seconds=DELIVERY_SECONDS),
                },
            ),
            Job(
                "wal-retention",
                self.expire,
                "interval",
                {"days": 1, "next_run_time": now + timedelta(minutes=1)},
            ),
            # A readiness checked a day ago may no longer be true (a setting, a role, a table).
            Job(
                "readiness-recheck",
                self.recheck,
                "interval",
                {
                    "minutes": RECHECK_MINUTES,
                    "next_run_time": now + timedelta(minutes=2),
                    "max_instances": 1,
                },
            ),
        ]

    def start(self, blocking: bool = False) -> None:
        """Start the jobs; the first round runs at the next multiple of the interval.

        Blocking runs until interrupted.
        """
        scheduler_class = BlockingScheduler if blocking else BackgroundScheduler
        # APScheduler logs every run of every job at INFO: the new-source check runs every
        # 5 s. Rosetta logs its rounds itself; keep APScheduler's warnings and errors.
        logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)
        self.scheduler = scheduler_class(
            timezone="UTC",
            # A second concurrent tick reaches tick() and is logged as skipped there.
            job_defaults={
                "coalesce": True,
                "max_instances": 2,
                "misfire_grace_time": self.interval_s,
            },
        )
        for job in self.jobs(utcnow()):
            self.scheduler.add_job(job.function, job.trigger, id=job.id, **job.arguments)
        log.info("WAL monitor scheduled every %d s", self.interval_s)
        if not blocking:
            atexit.register(self.stop)
        try:
            self.scheduler.start()
        finally:
            if blocking:
                self.stop()

    def stop(self) -> None:
        """Stop the jobs, let the sources sampled apart be stored, and free leadership."""
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        # A source being sampled gives up within its timeout; its result is stored after.
        rounds.join_lanes(self.app.config["WAL_MONITOR_TIMEOUT_SECONDS"] + 1, self.app)
        kept_connections(self.app).close()
        self.leadership.release()


def start_monitor(app: Flask) -> MonitorScheduler | None:
    """Start the background sampler in a serving process, once, when it is enabled."""
    if not app.config["WAL_MONITOR_ENABLED"]:
        log.info("WAL monitor disabled (WAL_MONITOR_ENABLED=false)")
        return None
    if "rosetta_monitor" in app.extensions:
        running: MonitorScheduler = app.extensions["rosetta_monitor"]
        return running
    monitor = MonitorScheduler(app)
    monitor.start()
    app.extensions["rosetta_monitor"] = monitor
    return monitor


def serving_with_flask_run() -> bool:
    """Tell whether `flask run` loads the app to serve it (in the reloader's child only)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.info_name != "run":
        return False
    reload = ctx.params.get("reload")
    if reload is None:  # the reloader follows debug mode, which flask sets after create_app
        reload = get_debug_flag()
    return not reload or os.environ.get("WERKZEUG_RUN_MAIN") == "true"
