"""The schedule: real gunicorn workers and flask processes sharing one metadata database."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import closing

import pytest
from flask_migrate import upgrade

from rosetta_web import create_app
from rosetta_web.extensions import db as _db
from rosetta_web.models import MonitorRound, WalMetric
from rosetta_web.monitor.scheduler import MonitorScheduler

from .constants import ROOT
from .factories import add_source
from .pg import Cluster, free_port, wait_for
from .processes import INTERVAL, process_env, start, stop


def _rounds(app) -> list[MonitorRound]:
    with app.app_context():
        rounds = _db.session.scalars(_db.select(MonitorRound).order_by(MonitorRound.id)).all()
        _db.session.expunge_all()
        return rounds


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_gunicorn_workers_sample_once_per_tick_and_fail_over(request, backend, tmp_path, source_db):
    """Two gunicorn workers: one samples each tick; kill it and the other takes over in time."""
    if backend == "postgresql":
        app, database_url = request.getfixturevalue("app"), request.getfixturevalue("database_url")
    else:
        database_url = f"sqlite:///{tmp_path / 'meta.db'}"
        app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "TESTING": True})
        with app.app_context():
            upgrade()
    source_id = add_source(app, "shop", source_db["port"])
    server = start(
        ["gunicorn", "wsgi:app", "--workers", "2", "--bind", f"127.0.0.1:{free_port()}"],
        database_url,
    )
    try:
        assert wait_for(lambda: len(_rounds(app)) >= 3, timeout=INTERVAL * 3 + 5), "no rounds"
        rounds = _rounds(app)
        assert len({r.sampler for r in rounds}) == 1  # one process samples
        starts = [r.started_at for r in rounds]
        gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
        assert min(gaps) >= INTERVAL - 1  # once per tick, not once per worker
        with app.app_context():
            samples = _db.session.scalar(
                _db.select(_db.func.count(WalMetric.id)).where(WalMetric.source_id == source_id)
            )
        assert samples == len(rounds)

        leader_pid = int(rounds[-1].sampler.rsplit(":", 1)[1])
        os.kill(leader_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        # The lock is free at once; the next tick takes it. Under a loaded CI machine the
        # gunicorn master's respawn may cost that tick, so allow a second one, never more.
        took_over = wait_for(
            lambda: [r for r in _rounds(app) if not r.sampler.endswith(f":{leader_pid}")],
            timeout=2 * INTERVAL + 5,
        )
        waited = time.monotonic() - killed_at
        assert took_over, f"no other process took over in {waited:.1f} s"
    finally:
        stop(server)


@pytest.mark.slow
def test_flask_run_samples_and_other_commands_do_not(app, database_url, source_db):
    """`flask run` starts the monitor (once, even with the reloader); `flask routes` does not."""
    add_source(app, "shop", source_db["port"])
    routes = subprocess.run(
        [sys.executable, "-m", "flask", "routes"],
        cwd=ROOT,
        env=process_env(database_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # `flask routes` has exited: had it started the monitor, its first round would be stored.
    assert routes.returncode == 0 and "/api/v1/sources" in routes.stdout
    assert _rounds(app) == []

    server = start(["flask", "run", "--debug", "--port", str(free_port())], database_url)
    try:
        # The reloader's parent would have started its monitor before spawning the child.
        assert wait_for(lambda: _rounds(app), timeout=20), "flask run did not sample"
    finally:
        err = stop(server)
    assert err.count("WAL monitor scheduled every") == 1, err


def test_scheduler_survives_the_metadata_database_going_away(
    database_url, pg_cluster, source_db, hanging_server, caplog
):
    """If the metadata database vanishes while a round runs, the tick logs it and the next works."""
    if pg_cluster is None:
        pytest.skip("needs a disposable cluster it may rename databases in")
    url = pg_cluster.create_database("outage_meta")
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True})
    app.config["WAL_MONITOR_TIMEOUT_SECONDS"] = 3
    with app.app_context():
        upgrade()
    add_source(app, "hangs", hanging_server.port)
    add_source(app, "shop", source_db["port"])
    monitor = MonitorScheduler(app)
    caplog.set_level(logging.INFO)

    tick = threading.Thread(target=monitor.tick)
    tick.start()
    # The round is sampling once it holds a connection to the source that never answers.
    assert wait_for(lambda: hanging_server.held, timeout=10)
    with closing(pg_cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'outage_meta'"
        )
        cur.execute("ALTER DATABASE outage_meta RENAME TO outage_away")
    tick.join(timeout=15)
    assert not tick.is_alive()
    assert "WAL monitor: metadata database unavailable (OperationalError)" in caplog.text

    with closing(pg_cluster.connect()) as conn, conn.cursor() as cur:
        cur.execute("ALTER DATABASE outage_away RENAME TO outage_meta")
    monitor.tick()
    assert "WAL monitor: metadata database back after" in caplog.text
    rounds = _rounds(app)
    assert len(rounds) == 1 and rounds[0].sources == 2 and rounds[0].failures == 1
    monitor.stop()
    with app.app_context():
        _db.engine.dispose()


def test_a_metadata_outage_logs_two_lines_per_job_and_no_traceback(caplog):
    """With the metadata database stopped while the jobs keep running, the WAL monitor (its
    lock, rounds and retention) and alert delivery each log one line when it goes and one when
    it is back, and no traceback; then the monitor leads and samples again."""
    cluster = Cluster("rosetta-jobs-outage").start()
    monitor = None
    try:
        app = create_app(
            {"SQLALCHEMY_DATABASE_URI": cluster.create_database("meta"), "TESTING": True}
        )
        with app.app_context():
            upgrade()
        monitor = MonitorScheduler(app)
        jobs = (monitor.tick, monitor.sample_new, monitor.deliver, monitor.expire)
        for job in jobs:
            job()
        assert monitor.leadership.connection is not None, "this process leads before the outage"
        rounds_before = len(_rounds(app))
        assert rounds_before >= 1

        caplog.set_level(logging.INFO)
        caplog.clear()
        cluster.halt()
        for _ in range(5):  # what 25 s of an outage would run, the 5 s jobs each time
            for job in jobs:
                job()
        cluster.resume()

        def back() -> int:
            for job in jobs:
                job()
            return len([r for r in caplog.records if "metadata database back" in r.getMessage()])

        assert wait_for(lambda: back() >= 2, timeout=30), caplog.text
        lines = sorted(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
        assert [line.split(" after ")[0] for line in lines] == [
            "WAL monitor: metadata database back",
            "WAL monitor: metadata database unavailable (OperationalError); "
            "not sampling until it is back",
            "alert delivery: metadata database back",
            "alert delivery: metadata database unavailable (OperationalError); "
            "notifications wait until it is back",
        ], lines
        assert not [r for r in caplog.records if r.exc_info or r.stack_info], "no tracebacks"
        assert monitor.leadership.connection is not None, "it leads again"
        assert len(_rounds(app)) > rounds_before, "and samples again"
    finally:
        if monitor is not None:
            monitor.stop()
            with monitor.app.app_context():
                _db.engine.dispose()
        cluster.stop()


def test_flask_rosetta_scheduler_stops_on_sigterm_with_exit_0(app, database_url):
    """`flask rosetta scheduler`, as compose runs it, stops on SIGTERM as on Ctrl+C: it
    frees its leadership and exits 0 (compose shows no failure on `docker compose stop`)."""
    scheduler = start(["flask", "rosetta", "scheduler"], database_url)
    try:
        assert wait_for(lambda: _rounds(app), timeout=20), "the scheduler did not sample"
    finally:
        err = stop(scheduler, must_stop=True)
    assert scheduler.returncode == 0, err[-2000:]
