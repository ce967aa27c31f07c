"""Template filters that show figures in an operator's units."""

from __future__ import annotations

from datetime import datetime

from flask import Flask
from jinja2.filters import do_filesizeformat
from markupsafe import Markup, escape

from .monitor.rounds import SPARKLINE_BUCKET_SECONDS, SPARKLINE_SPAN_SECONDS
from .timeutil import as_utc, utcnow


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


def sparkline(points: list[list[int]] | None, now: datetime | None = None) -> Markup:
    """Draw 24 hours of half-hourly retained WAL as a small SVG line, with gaps where it failed."""
    slots = SPARKLINE_SPAN_SECONDS // SPARKLINE_BUCKET_SECONDS
    end = int((now or utcnow()).timestamp()) // SPARKLINE_BUCKET_SECONDS * SPARKLINE_BUCKET_SECONDS
    start = end - SPARKLINE_SPAN_SECONDS + SPARKLINE_BUCKET_SECONDS
    # Points stored before the last 24 hours (a source failing since) are not drawn.
    points = [point for point in points or [] if start <= point[0] <= end]
    if not points:
        return Markup('<span class="muted">—</span>')
    top = max(value for _, value in points) or 1
    # Whole-number coordinates in a viewBox of one unit per half hour: cheap to write for a
    # thousand sources, and the browser stretches the line to the cell.
    path, previous = [], None
    for moment, value in points:
        x = (moment - start) // SPARKLINE_BUCKET_SECONDS
        y = 22 - value * 20 // top
        # A point after a gap starts a new line; the tiny step makes a lone point visible.
        path.append(f"L{x},{y}" if previous == x - 1 else f"M{x},{y}l0.1,0")
        previous = x
    label = escape(f"WAL retained over 24 hours, peak {human_bytes(top)}")
    return Markup(
        f'<svg class="sparkline" viewBox="0 0 {slots - 1} 24" preserveAspectRatio="none" '
        f'role="img" aria-label="{label}"><title>{label}</title>'
        f'<path d="{"".join(path)}"/></svg>'
    )


def register_filters(app: Flask) -> None:
    """Make the filters available to every template."""
    app.add_template_filter(human_bytes, "bytes")
    app.add_template_filter(relative_time, "ago")
    app.add_template_filter(utc, "utc")
    app.add_template_filter(sparkline, "sparkline")
