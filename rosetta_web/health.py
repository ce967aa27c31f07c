"""GET /health for load balancers: whether the metadata database answers, no sign-in needed."""

from __future__ import annotations

import time

from flask import Flask, jsonify
from sqlalchemy import text
from werkzeug.wrappers import Response

from .errors import RETRY_AFTER_SECONDS, outage
from .extensions import db
from .timeutil import isoformat, utcnow
from .version import __version__


def health() -> tuple[Response, int, dict[str, str]]:
    """Report whether the metadata database answers, for load balancers."""
    started = time.perf_counter()
    try:
        db.session.execute(text("SELECT 1"))
        database = {
            "status": "ok",
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        }
    except Exception as exc:  # any failure to answer is the check's answer, not a 500
        outage.failed(exc)  # logged once per outage, however often a balancer asks
        try:
            db.session.rollback()
        except Exception:
            pass  # the connection is gone; the pool replaces it
        database = {"status": "error", "error": type(exc).__name__}
    ok = database["status"] == "ok"
    body = {
        "status": "ok" if ok else "error",
        "version": __version__,
        "timestamp": isoformat(utcnow()),
        "checks": {"database": database},
    }
    if ok:
        return jsonify(body), 200, {}
    return jsonify(body), 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}


def init_app(app: Flask) -> None:
    """Serve /health at the top level, its endpoint named `health` as sign-in exempts it."""
    app.add_url_rule("/health", "health", health)
