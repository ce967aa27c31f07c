"""Show figures in an operator's units: the template filters (rosetta_web/templating.py
registers them) and the messages that quote sizes and durations."""

from __future__ import annotations

from datetime import datetime

from .timeutil import as_utc, utcnow

# pg_size_pretty's units: (name, the size below which it is used, whether it rounds halves).
SIZE_UNITS = (
    ("bytes", 10 * 1024, False),
    ("kB", 20 * 1024 - 1, True),
    ("MB", 20 * 1024 - 1, True),
    ("GB", 20 * 1024 - 1, True),
    ("TB", 20 * 1024 - 1, True),
    ("PB", 20 * 1024 - 1, True),
)


def _half_rounded(value: int) -> int:
    """Halve rounding half away from zero, truncating as C's integer division does."""
    return int((value + (-1 if value < 0 else 1)) / 2)


def pg_size_pretty(value: int | None) -> str:
    """Format a byte count exactly as PostgreSQL's pg_size_pretty does (1024-based); None as —."""
    if value is None:
        return "—"
    size = int(value)
    for index, (name, limit, rounds) in enumerate(SIZE_UNITS):
        last = index == len(SIZE_UNITS) - 1
        if last or abs(size) < limit:
            return f"{_half_rounded(size) if rounds else size} {name}"
        next_rounds = SIZE_UNITS[index + 1][2]
        # Ten bits per unit; one fewer before a unit that halves, one more after one that did.
        bits = 10 - next_rounds + rounds
        size = int(size / (1 << bits))
    raise AssertionError("unreachable")


def exact_bytes(value: int | None) -> str:
    """Spell a byte count out in full, for a tooltip: '845,712,384 bytes'."""
    return "" if value is None else f"{int(value):,} bytes"


def relative_time(moment: datetime | None, now: datetime | None = None) -> str:
    """Say how long ago (or how soon) a moment is: '42 s ago', 'in 5 min'."""
    if moment is None:
        return "never"
    seconds = int(((now or utcnow()) - as_utc(moment)).total_seconds())
    future, seconds = seconds < 0, abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            amount = f"{seconds // size} {unit}"
            break
    else:
        amount = f"{seconds} s"
    return f"in {amount}" if future else f"{amount} ago"


DAY_SECONDS = 86400
MONTH_DAYS = 365.25 / 12


def duration_words(seconds: float) -> str:
    """Say a duration as an operator reads it: '12 s', '42 min', '3 h 10 min', '2 d 4 h',
    then 'about 23 days', 'about 5 months', 'about 3 years'."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    if days < 7:
        return f"{days} d {hours} h" if hours else f"{days} d"
    days = round(seconds / DAY_SECONDS)
    if days < 60:
        return f"about {days} days"
    if days < 365:
        return f"about {round(days / MONTH_DAYS)} months"
    years = round(days / 365.25)
    return f"about {years} year{'s' if years != 1 else ''}"


def lag_words(seconds: float | None) -> str:
    """Say how far behind a pipeline is in time: '0 s — caught up', 'under 1 s', '4 s',
    '12 min'; '—' when not known."""
    if seconds is None:
        return "—"
    if seconds <= 0:
        return "0 s — caught up"
    if seconds < 1:
        return "under 1 s"
    return duration_words(seconds)


def thousands(value: int | None) -> str:
    """Write a count with thousands separators: '1,234,567'; None as —."""
    return "—" if value is None else f"{int(value):,}"


def utc(moment: datetime | None) -> str:
    """Format a moment as 'YYYY-MM-DD HH:MM:SS UTC'."""
    if moment is None:
        return "—"
    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


def from_iso(text: str | None) -> datetime | None:
    """Read a time stored in JSON as ISO-8601 ("…Z") back as a datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def lsn_text(position: int | None) -> str:
    """Write a WAL position (bytes since 0/0) as PostgreSQL writes an LSN, X/Y in hex; None as —."""
    if position is None:
        return "—"
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
