"""gunicorn settings read from the working directory: each worker starts the WAL monitor.

The workers share one PostgreSQL advisory lock, so exactly one of them samples each tick.
"""

import gc
import os
from typing import Any

from rosetta_web import check_settings
from rosetta_web.config import ConfigError
from rosetta_web.monitor.scheduler import start_monitor


def post_worker_init(worker: Any) -> None:
    """Start the WAL monitor in each worker (the advisory lock picks one sampler), then freeze
    what loading the app made: it lives as long as the worker, and the collector's full passes
    no longer walk its hundred thousand objects in the middle of a request."""
    start_monitor(worker.wsgi)
    gc.freeze()


def on_starting(server: object) -> None:
    """Stop gunicorn at once on a wrong setting, with its message."""
    # Checked in the master: a worker that cannot start is replaced, again and again.
    try:
        check_settings()
    except ConfigError as exc:
        raise SystemExit(f"Rosetta cannot start: {exc}") from None


# "Sample now" samples in the request, for up to WAL_MONITOR_TIMEOUT_SECONDS: a worker gets
# that long and half a minute more before gunicorn deems it stuck (its default is 30 s).
timeout = int(os.environ.get("WAL_MONITOR_TIMEOUT_SECONDS", "").strip() or 30) + 30

# gunicorn answers a request line over its limit (4094 bytes by default) with an HTML page of
# its own. Its highest limit lets a URL well past Rosetta's (MAX_URL_BYTES, 4096 bytes) through,
# to be answered 414 in Rosetta's envelope; only a request line past 8190 bytes gets gunicorn's.
limit_request_line = 8190
