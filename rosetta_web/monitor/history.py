"""A source's WAL history over a time range, bucketed in SQL to at most `max_points` points."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Float, Integer, cast, func, literal, text, type_coerce
from sqlalchemy.sql import ColumnElement

from ..extensions import db
from ..models import SlotMetric, WalMetric
from ..timeutil import as_utc, isoformat, utcnow

DEFAULT_RANGE = timedelta(hours=24)
DEFAULT_MAX_POINTS = 1000
MAX_POINTS_LIMIT = 5000
RELATIVE = re.compile(r"^(\d{1,10})\s*([smhdw])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class HistoryParameterError(ValueError):
    """A parameter of the history request is wrong; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_moment(field: str, raw: str, now: datetime) -> datetime:
    """Read an ISO-8601 time (UTC when no offset is given) or a relative one like '24h'."""
    text = raw.strip()
    match = RELATIVE.match(text.lower())
    try:
        if match:
            return now - timedelta(seconds=int(match.group(1)) * UNIT_SECONDS[match.group(2)])
        return as_utc(datetime.fromisoformat(text))
    except (ValueError, OverflowError):  # unreadable, or past year 1 or 9999 in UTC
        raise HistoryParameterError(
            field,
            "Use an ISO-8601 time (2026-01-14T00:00:00Z) or a relative one like 24h, "
            "between the years 1 and 9999.",
        ) from None


@dataclass(frozen=True)
class Window:
    """The range asked for and the width of its buckets."""

    start: datetime
    end: datetime
    bucket_seconds: int
    buckets: int


def window(
    start: str | None,
    end: str | None,
    max_points: int,
    interval_s: int,
    now: datetime | None = None,
) -> Window:
    """Resolve the range and choose buckets: at most `max_points`, never finer than sampling.

    A bucket is at least 1.5 sampling intervals wide, so a source sampled on time fills every
    bucket and an empty one really means samples failed: the charts draw it as a gap.
    """
    now = now or utcnow()
    end_at = parse_moment("end", end, now) if end else now
    try:
        start_at = parse_moment("start", start, now) if start else end_at - DEFAULT_RANGE
        start_at.timestamp()  # the buckets are counted in seconds since 1970
    except HistoryParameterError:
        raise
    except (OverflowError, ValueError):
        raise HistoryParameterError("start", "start is out of range.") from None
    if end_at <= start_at:
        raise HistoryParameterError("end", "end must be after start.")
    span = (end_at - start_at).total_seconds()
    width = max(math.ceil(span / max_points), math.ceil(interval_s * 1.5), 1)
    return Window(start_at, end_at, width, math.ceil(span / width))


def _epoch(column: Any) -> ColumnElement[float]:
    """Seconds since 1970 of a timestamp column as a float, on PostgreSQL and on SQLite."""
    if db.session.get_bind().dialect.name == "sqlite":
        # julianday() is a float of days: round off its error so bucket edges stay exact.
        return type_coerce(func.round((func.julianday(column) - 2440587.5) * 86400.0, 3), Float)
    # date_part() gives float8; extract() gives numeric, several times slower to compute with.
    return type_coerce(func.date_part("epoch", column), Float)


def _whole(value: Any) -> ColumnElement[int]:
    """Round a non-negative number down (SQLite's CAST truncates; PostgreSQL's rounds)."""
    if db.session.get_bind().dialect.name == "sqlite":
        return cast(value, Integer)
    return cast(func.floor(value), Integer)


def _series_by_bucket(
    model: Any, source_id: int, win: Window, names: tuple[str, ...], key: str | None = None
) -> Any:
    """Bucket one source's rows of `model` in the window: per bucket, last, min and max.

    One pass groups the rows in range by bucket (and `key`) for min, max and the time of the
    bucket's last row; a lookup on that time, through the (source_id, recorded_at) index,
    reads the last row's values: one per bucket, not a window over every row.
    """
    epoch = _epoch(model.recorded_at)
    start = literal(win.start.timestamp(), Float)
    width = literal(float(win.bucket_seconds), Float)
    bucket = _whole((epoch - start) / width)
    keys = [getattr(model, key)] if key else []
    figures: list[Any] = []
    for name in names:
        figures += [
            func.min(getattr(model, name)).label(f"{name}_min"),
            func.max(getattr(model, name)).label(f"{name}_max"),
        ]
    buckets = (
        db.select(
            bucket.label("bucket"),
            *keys,
            func.max(model.recorded_at).label("last_at"),
            *figures,
        )
        .where(
            model.source_id == source_id,
            model.recorded_at >= win.start,
            model.recorded_at < win.end,
        )
        .group_by(bucket, *keys)
        .subquery()
    )
    # A correlated lookup per bucket: the planner cannot turn it into a hash join that reads
    # every row of the source again (it would, misjudging how few buckets there are).
    last = db.aliased(model)
    found = [last.source_id == source_id, last.recorded_at == buckets.c.last_at]
    if key:
        found.append(getattr(last, key) == buckets.c[key])
    lasts = [
        db.select(getattr(last, name))
        .where(*found)
        .limit(1)
        .scalar_subquery()
        .label(f"{name}_last")
        for name in names
    ]
    return db.select(buckets, *lasts).order_by(buckets.c.bucket)


WAL_SERIES = ("size_bytes", "retained_bytes", "wal_rate_bytes_per_second")
SLOT_SERIES = ("retained_bytes",)


def history(source_id: int, win: Window) -> dict[str, Any]:
    """Return the source's WAL series over the window: per bucket, last, min and max."""
    if db.session.get_bind().dialect.name == "postgresql":
        # Room to group a month of samples in memory; this transaction only.
        db.session.execute(text("SET LOCAL work_mem = '32MB'"))
    series: dict[str, Any] = {name: _empty(win) for name in WAL_SERIES}
    for row in db.session.execute(_series_by_bucket(WalMetric, source_id, win, WAL_SERIES)):
        _fill(series, row, WAL_SERIES, row.bucket)

    slots: dict[str, Any] = {}
    slot_query = _series_by_bucket(SlotMetric, source_id, win, SLOT_SERIES, key="slot_name")
    for row in db.session.execute(slot_query):
        target = slots.setdefault(row.slot_name, {name: _empty(win) for name in SLOT_SERIES})
        _fill(target, row, SLOT_SERIES, row.bucket)

    return {
        "source_id": source_id,
        "start": isoformat(win.start),
        "end": isoformat(win.end),
        "bucket_seconds": win.bucket_seconds,
        "buckets": [
            isoformat(win.start + timedelta(seconds=i * win.bucket_seconds))
            for i in range(win.buckets)
        ],
        "series": series,
        "slots": slots,
    }


def _empty(win: Window) -> dict[str, list[Any]]:
    return {"last": [None] * win.buckets, "min": [None] * win.buckets, "max": [None] * win.buckets}


def _fill(target: dict[str, Any], row: Any, names: tuple[str, ...], bucket: int) -> None:
    if not 0 <= bucket < len(next(iter(target.values()))["last"]):
        return
    for name in names:
        for kind in ("last", "min", "max"):
            value = getattr(row, f"{name}_{kind}")
            target[name][kind][bucket] = value if value is None else _number(value)


def _number(value: Any) -> int | float:
    number = float(value)
    return int(number) if number.is_integer() else round(number, 3)
