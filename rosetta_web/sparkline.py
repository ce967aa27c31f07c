"""The dashboard's 24-hour sparkline of retained WAL: folded and drawn when a sample is stored,
so a page of a thousand sources only places a thousand ready-made lines."""

from __future__ import annotations

from bisect import bisect_right
from datetime import datetime
from operator import itemgetter

from markupsafe import Markup, escape

from .formatting import pg_size_pretty
from .timeutil import utcnow

BUCKET_SECONDS = 600
SPAN_SECONDS = 24 * 3600
SLOTS = SPAN_SECONDS // BUCKET_SECONDS
_TIME = itemgetter(0)


def fold(
    points: list[list[int]] | None, moment: datetime, retained_bytes: int | None
) -> list[list[int]]:
    """Fold one sample into the 10-minute maxima of the 24 hours before it."""
    bucket = int(moment.timestamp()) // BUCKET_SECONDS * BUCKET_SECONDS
    points = points or []
    # The points are in time order: those of the day up to `bucket` are one slice. A new list,
    # whose points are never changed in place: the stored value stays as it was.
    first = bisect_right(points, bucket - SPAN_SECONDS, key=_TIME)
    kept = points[first : bisect_right(points, bucket, key=_TIME)]
    if retained_bytes is None:
        return kept
    if kept and kept[-1][0] == bucket:
        kept[-1] = [bucket, max(kept[-1][1], retained_bytes)]
    else:
        kept.append([bucket, retained_bytes])
    return kept


def draw(points: list[list[int]]) -> str | None:
    """Draw the points as "<last bucket> <peak> <SVG path>": one unit of x per bucket, the
    last bucket at x = SLOTS - 1. A gap starts a new line; a lone point gets a tiny step."""
    if not points:
        return None
    end = points[-1][0]
    peak = max(value for _, value in points)
    top = peak or 1
    path, previous = [], None
    for moment, value in points:
        x = SLOTS - 1 - (end - moment) // BUCKET_SECONDS
        y = 22 - value * 20 // top
        path.append(f"L{x},{y}" if previous == x - 1 else f"M{x},{y}l0.1,0")
        previous = x
    return f"{end} {peak} {''.join(path)}"


def render(drawn: str | None, now: datetime | None = None) -> Markup:
    """Place a drawn sparkline in the 24 hours ending now: the view slides along as time
    passes, and a line older than a day is not shown."""
    if not drawn:
        return Markup('<span class="muted">—</span>')
    end, peak, path = drawn.split(" ", 2)
    now_bucket = int((now or utcnow()).timestamp()) // BUCKET_SECONDS * BUCKET_SECONDS
    shift = (now_bucket - int(end)) // BUCKET_SECONDS
    if not 0 <= shift < SLOTS:
        return Markup('<span class="muted">—</span>')
    label = escape(f"WAL retained over 24 hours, peak {pg_size_pretty(int(peak))}")
    return Markup(
        f'<svg class="sparkline" viewBox="{shift} 0 {SLOTS - 1} 24" preserveAspectRatio="none" '
        f'role="img" aria-label="{label}"><title>{label}</title><path d="{path}"/></svg>'
    )
