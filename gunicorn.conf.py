"""gunicorn settings read from the working directory: each worker starts the WAL monitor.

The workers share one PostgreSQL advisory lock, so exactly one of them samples each tick.
"""

import os

from rosetta_web import check_settings
from rosetta_web.config import ConfigError
from rosetta_web.monitor.scheduler import post_worker_init  # noqa: F401


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
