"""Times as Rosetta keeps and shows them (aware UTC, ISO-8601 with a Z) and reads them from
the operator (ISO-8601, or relative like 24h)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

RELATIVE = re.compile(r"^(\d{1,10})\s*([smhdw])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """Return a stored time as aware UTC (SQLite hands back naive datetimes, meant as UTC)."""
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_us_of(moment: datetime) -> int:
    """Return a stored time as whole microseconds since 1970 (as `rollups.epoch_us` reads it)."""
    return (as_utc(moment) - EPOCH) // _MICROSECOND


def isoformat(moment: datetime | None) -> str | None:
    """Format a stored time as ISO-8601 UTC with a Z."""
    if moment is None:
        return None
    return as_utc(moment).isoformat().replace("+00:00", "Z")


class ParameterError(ValueError):
    """A parameter of a request (a time, a range) is wrong; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# How the times parse_moment reads are described to API clients.
MOMENT_WORDS = "ISO-8601 UTC (2026-01-14T00:00:00Z) or relative to now (30m, 24h, 7d)"


def parse_moment(field: str, raw: str, now: datetime) -> datetime:
    """Read an ISO-8601 time (UTC when no offset is given) or a relative one like '24h'."""
    text = raw.strip()
    match = RELATIVE.match(text.lower())
    try:
        if match:
            return now - timedelta(seconds=int(match.group(1)) * UNIT_SECONDS[match.group(2)])
        return as_utc(datetime.fromisoformat(text))
    except (ValueError, OverflowError):  # unreadable, or past year 1 or 9999 in UTC
        raise ParameterError(
            field,
            "Use an ISO-8601 time (2026-01-14T00:00:00Z) or a relative one like 24h, "
            "between the years 1 and 9999.",
        ) from None
