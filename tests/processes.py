"""Rosetta run as the operator runs it, in a process of its own (gunicorn, flask, python -m)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from .constants import ROOT

# The monitor's interval, in seconds, of the processes started here.
INTERVAL = 5


def process_env(database_url: str, **extra: str) -> dict[str, str]:
    """Return the environment of a Rosetta process on the metadata database at `database_url`."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "WAL_MONITOR_INTERVAL_SECONDS": str(INTERVAL),
        "WAL_MONITOR_TIMEOUT_SECONDS": "3",
        "FLASK_APP": "wsgi",
        **extra,
    }


def start(args: list[str], database_url: str) -> subprocess.Popen:
    """Start `python -m ARGS` in the repository against the metadata database."""
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=process_env(database_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen, timeout: float = 15, must_stop: bool = False) -> str:
    """Stop a process with SIGTERM, SIGKILL after `timeout` seconds (failing the test then if
    it `must_stop`); return what it wrote to stderr."""
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        if must_stop:
            raise AssertionError(f"{process.args[2]} did not stop: {err[-3000:]}") from None
    return err
