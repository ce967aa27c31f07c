"""Template filters that show figures in an operator's units."""

from __future__ import annotations

from datetime import datetime

from flask import Flask
from jinja2.filters import do_filesizeformat

from .models import as_utc, utcnow


def human_bytes(value: int | None) -> str:
    """Format a byte count in kB, MB, GB (powers of 1000); None as a dash."""
    if value is None:
        return "—"
    return do_filesizeformat(value)


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


def utc(moment: datetime | None) -> str:
    """Format a moment as 'YYYY-MM-DD HH:MM:SS UTC'."""
    if moment is None:
        return "—"
    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


def register_filters(app: Flask) -> None:
    """Make the filters available to every template."""
    app.add_template_filter(human_bytes, "bytes")
    app.add_template_filter(relative_time, "ago")
    app.add_template_filter(utc, "utc")
