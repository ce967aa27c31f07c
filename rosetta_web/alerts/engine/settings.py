"""The alert rule settings: their defaults and the one global row (the forms that edit them
are in rosetta_web/alerts/forms.py)."""

from __future__ import annotations

from datetime import datetime

from flask import current_app
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from ...extensions import db
from ...models import AlertSettings

GIB = 1024**3
DEFAULTS: dict[str, int | None] = {
    "retained_warning_bytes": 5 * GIB,
    "retained_critical_bytes": 10 * GIB,
    "slot_inactive_minutes": 30,
    "consumer_stalled_minutes": 30,
    "unreachable_rounds": 3,
    "forecast_hours": 6,
    "pipeline_failed_minutes": 15,
    "pipeline_lag_warning_seconds": 5 * 60,
    "pipeline_lag_critical_seconds": 30 * 60,
    "repeat_minutes": 60,
}


def default_settings() -> AlertSettings:
    """Return the settings a new installation starts with (ALERT_REPEAT_MINUTES sets one)."""
    values = {**DEFAULTS, "repeat_minutes": current_app.config["ALERT_REPEAT_MINUTES"]}
    return AlertSettings(id=1, **values)


def load_settings(lock: bool = False, now: datetime | None = None) -> AlertSettings:
    """Return the global settings row, creating it with the defaults the first time.

    With `lock`, write it first: the transaction then holds the row (PostgreSQL) or the
    database (SQLite) until it commits, and other evaluations wait their turn.
    """
    if lock:
        taken = update(AlertSettings).where(AlertSettings.id == 1).values(evaluated_at=now)
        if not getattr(db.session.execute(taken), "rowcount", 1):
            _insert_defaults()
            db.session.execute(taken)
    settings = db.session.get(AlertSettings, 1)
    if settings is None:
        _insert_defaults()
        settings = db.session.get(AlertSettings, 1)
        assert settings is not None
    return settings


def _insert_defaults() -> None:
    """Insert the settings row, unless another process just did (then theirs stands)."""
    try:
        with db.session.begin_nested():
            db.session.add(default_settings())
    except IntegrityError:
        pass
