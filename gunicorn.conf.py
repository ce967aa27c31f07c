"""gunicorn settings read from the working directory: each worker starts the WAL monitor.

The workers share one PostgreSQL advisory lock, so exactly one of them samples each tick.
"""

from rosetta_web.monitor.scheduler import post_worker_init  # noqa: F401
