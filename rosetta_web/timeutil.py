"""Times as Rosetta keeps and shows them: aware UTC, ISO-8601 with a Z."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Return a stored time as aware UTC (SQLite hands back naive datetimes, meant as UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def isoformat(moment: datetime | None) -> str | None:
    """Format a stored time as ISO-8601 UTC with a Z."""
    if moment is None:
        return None
    return as_utc(moment).isoformat().replace("+00:00", "Z")
