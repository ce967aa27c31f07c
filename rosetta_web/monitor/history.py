"""A source's WAL history over a time range: its samples at their own times, or bucketed in SQL.

When the range holds no more samples than `max_points`, they come back as they are. Otherwise
buckets of one width, their edges on multiples of that width since 1970 (so they stay put as
time moves on), each drawn at the time of its last sample with that sample's values as the
line and the bucket's min and max as a band. Failed samples come back too, as points with no
values and their error, so a chart breaks its line where sampling failed.

A range longer than a day (or older than the samples kept) is read from the hourly and daily
roll-ups (`rollups.py`) in buckets of whole hours or days, under the same rules: a point is
its bucket's last sample at that sample's own time, with the bucket's min and max.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from flask import current_app
from sqlalchemy import Float, func, literal, select, text
from sqlalchemy.orm import aliased, defer

from ..extensions import db
from ..forms import MAX_INT
from ..models import (
    ALERT_RULES,
    SEVERITIES,
    SampleError,
    Server,
    SlotMetric,
    Source,
    SourceState,
    WalMetric,
)
from ..shapes import Declared, Described, IntArg, Moment, TextArg
from ..timeutil import MOMENT_WORDS, ParameterError, as_utc, isoformat, parse_moment, utcnow
from . import rollups

DEFAULT_RANGE = timedelta(hours=24)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_MAX_POINTS = 1000
MAX_POINTS_LIMIT = 5000
START = TextArg("start", description=f"{MOMENT_WORDS}; default end minus 24h")
END = TextArg("end", description=f"{MOMENT_WORDS}; default now")
MAX_POINTS = IntArg("max_points", minimum=1, maximum=MAX_POINTS_LIMIT, default=DEFAULT_MAX_POINTS)
# GET /metrics/wal: a source's newest samples.
SOURCE_ID = IntArg("source_id", minimum=1, maximum=MAX_INT, required=True)
SAMPLES_LIMIT = IntArg("limit", minimum=1, maximum=1000, default=100)


@dataclass(frozen=True)
class Window:
    """The range asked for."""

    start: datetime
    end: datetime


def window(start: str | None, end: str | None, now: datetime | None = None) -> Window:
    """Resolve the range: ISO-8601 or relative times, ending now and 24 hours long by default."""
    now = now or utcnow()
    end_at = parse_moment("end", end, now) if end else now
    try:
        start_at = parse_moment("start", start, now) if start else end_at - DEFAULT_RANGE
        start_at.timestamp()  # the buckets are counted in seconds since 1970
    except ParameterError:
        raise
    except (OverflowError, ValueError):
        raise ParameterError("start", "start is out of range.") from None
    if end_at <= start_at:
        raise ParameterError("end", "end must be after start.")
    # Nothing is older than 1970: an earlier start reads as all history (buckets are counted
    # in seconds since then).
    return Window(max(start_at, EPOCH), end_at)


def _by_bucket(
    model: Any,
    owner: Any,
    owner_id: int,
    win: Window,
    width: int,
    names: tuple[str, ...],
    key: str | None = None,
    only: tuple[Any, ...] = (),
    labels: tuple[str, ...] = (),
) -> Any:
    """Bucket the rows of `model` whose `owner` column is `owner_id`: per bucket (and `key`),
    the time of the last row, its values, and the min and max of each of `names`.

    One pass groups the rows in range for min, max and the last time; a lookup on that time,
    through the (owner, recorded_at) index, reads the last row's values: one per bucket, not
    a window over every row.
    """
    bucket = rollups.whole(rollups.epoch_seconds(model.recorded_at) / literal(float(width), Float))
    keys = [getattr(model, key)] if key else []
    figures: list[Any] = []
    for name in names:
        column = getattr(model, name)
        figures += [func.min(column).label(f"{name}_min"), func.max(column).label(f"{name}_max")]
    figures += [func.max(getattr(model, name)).label(name) for name in labels]
    buckets = (
        select(
            bucket.label("bucket"), *keys, func.max(model.recorded_at).label("last_at"), *figures
        )
        .where(
            owner == owner_id, model.recorded_at >= win.start, model.recorded_at < win.end, *only
        )
        .group_by(bucket, *keys)
        .subquery()
    )
    # A correlated lookup per bucket: the planner cannot turn it into a hash join that reads
    # every row of the source again (it would, misjudging how few buckets there are).
    last = aliased(model)
    found = [getattr(last, owner.key) == owner_id, last.recorded_at == buckets.c.last_at]
    if key:
        found.append(getattr(last, key) == buckets.c[key])
    triples: list[Any] = []
    for name in names:
        triples += [
            select(getattr(last, name)).where(*found).limit(1).scalar_subquery(),
            buckets.c[f"{name}_min"],
            buckets.c[f"{name}_max"],
        ]
    return select(
        buckets.c.bucket,
        buckets.c.last_at,
        *([buckets.c[key]] if key else []),
        *[buckets.c[name] for name in labels],
        *triples,
    )


def _raw(
    model: Any,
    owner: Any,
    owner_id: int,
    win: Window,
    names: tuple[str, ...],
    key: str | None = None,
    only: tuple[Any, ...] = (),
    labels: tuple[str, ...] = (),
) -> Any:
    """Read the rows in range as they are, in `_by_bucket`'s columns (min = max = last)."""
    keys = [getattr(model, key)] if key else []
    triples: list[Any] = []
    for name in names:
        triples += [getattr(model, name)] * 3
    return select(
        literal(0),
        model.recorded_at,
        *keys,
        *[getattr(model, name) for name in labels],
        *triples,
    ).where(owner == owner_id, model.recorded_at >= win.start, model.recorded_at < win.end, *only)


WAL_SERIES = ("size_bytes", "retained_bytes", "wal_rate_bytes_per_second")
SLOT_SERIES = ("retained_bytes",)
TOP_SLOTS = 10  # besides the source's own database's slots, charted one line each


@dataclass
class _Point:
    at: datetime
    wal: list[tuple[Any, Any, Any]] | None = None  # in WAL_SERIES's order
    error: str | None = None
    slots: dict[str, tuple[Any, Any, Any]] = field(default_factory=dict)


def _point(points: dict[datetime, _Point], at: datetime) -> _Point:
    """The point at `at`, added if there is none yet."""
    point = points.get(at)
    if point is None:
        point = points[at] = _Point(at)
    return point


def _figures(row: Any, first: int, count: int) -> list[tuple[Any, Any, Any]]:
    """Read `count` (last, min, max) triples from a row, starting at column `first`."""
    return [_triple(row, i) for i in range(first, first + 3 * count, 3)]


def _triple(row: Any, i: int) -> tuple[Any, Any, Any]:
    """Read one (last, min, max) triple from a row at column `i`, as the chart takes them."""
    last, low, high = row[i : i + 3]
    if type(last) is type(low) is type(high) is int:  # byte counts: taken as they are
        return last, low, high
    return _number(last), _number(low), _number(high)


def _more_than(limit: int, model: Any, owner: Any, owner_id: int, win: Window) -> int:
    """Count the rows in range, stopping past `limit`: enough to choose raw or buckets."""
    found = (
        select(literal(1))
        .select_from(model)
        .where(owner == owner_id, model.recorded_at >= win.start, model.recorded_at < win.end)
        .limit(limit + 1)
        .subquery()
    )
    return db.session.scalar(select(func.count()).select_from(found)) or 0


_FIGURE = {"type": "array", "items": {"type": ["number", "null"]}}
_KINDS: dict[str, Any] = {"last": _FIGURE, "min": _FIGURE, "max": _FIGURE}
FIGURES: dict[str, Any] = {
    "type": "object",
    "required": ["last", "min", "max"],
    "properties": _KINDS,
    "description": "One value per time: the last sample's (the line), and the bucket's "
    "min and max (a band); equal when the points are raw samples; null where it failed",
}
SLOT_FIGURES: dict[str, Any] = {
    **FIGURES,
    "required": ["database", "own", "last", "min", "max", "series_starts"],
    "properties": {
        **_KINDS,
        "database": {"type": ["string", "null"]},
        "own": {"type": "boolean", "description": "a slot of the source's own database"},
        "series_starts": {
            "type": "array",
            "items": {"type": "string", "format": "date-time"},
            "description": "times (among `times`) at which the slot starts a new series: "
            "it was dropped and created again, so its line breaks there",
        },
    },
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Thresholds(Declared):
    """A source's retained-WAL alert thresholds, in bytes (None: the rule is off)."""

    warning_bytes: int | None
    critical_bytes: int | None


@dataclass(frozen=True)
class AlertSpan(Declared):
    """A period one of the source's alerts fired, cut to the range."""

    rule: Annotated[str, Described(schema={"type": "string", "enum": list(ALERT_RULES)})]
    severity: Annotated[str, Described(schema={"type": "string", "enum": list(SEVERITIES)})]
    slot_name: str | None
    start: datetime
    end: datetime


@dataclass(frozen=True)
class WalHistory(Declared):
    """A source's WAL series over a range (see `history`), its thresholds and its alerts."""

    api_name = "WalHistory"

    source_id: int
    start: Moment
    end: Moment
    bucket_seconds: Annotated[
        int,
        Described(
            "0: every point is a sample at its own time; else the width of the buckets, whose "
            "edges are multiples of it since 1970"
        ),
    ]
    times: Annotated[
        list[Moment], Described("each point's time: its sample's, or its bucket's last sample's")
    ]
    errors: Annotated[list[str | None], Described("at each time, null, or why the sample failed")]
    series: Annotated[
        dict[str, Any],
        Described(
            schema={
                "type": "object",
                "additionalProperties": False,
                "properties": dict.fromkeys(WAL_SERIES, FIGURES),
            }
        ),
    ]
    slots: Annotated[
        dict[str, Any],
        Described(
            "the slots of the source's database and the 10 others of its server that retain "
            "the most (of a database with more than 10, its 10 that retain the most)",
            {"type": "object", "additionalProperties": SLOT_FIGURES},
        ),
    ]
    other_slots: Annotated[
        dict[str, Any] | None,
        Described(
            "the server's remaining slots: the most WAL any one of them retains, which is "
            "the WAL they keep together (each retains from its restart_lsn to the same end)",
            {
                "oneOf": [
                    {"type": "null"},
                    {
                        **FIGURES,
                        "required": ["count", "last", "min", "max"],
                        "properties": {**_KINDS, "count": {"type": "integer"}},
                    },
                ]
            },
        ),
    ]
    thresholds: Annotated[
        Thresholds, Described("the source's retained-WAL alert thresholds (null: rule off)")
    ]
    alert_spans: Annotated[
        list[AlertSpan], Described("the periods the source's alerts fired, cut to the range")
    ]


def history(source: Source, win: Window, max_points: int) -> dict[str, Any]:
    """Return the source's WAL series over the window, every series indexed by `times`."""
    span = (win.end - win.start).total_seconds()
    base = 0  # the roll-ups read (HOUR or DAY), or 0: the samples
    if win.end - win.start > rollups.RAW_SPAN:
        width, base = rollups.widths_for(span, max_points)
    else:
        if db.session.get_bind().dialect.name == "postgresql":
            # Room to group a day of samples in memory; this transaction only.
            db.session.execute(text("SET LOCAL work_mem = '32MB'"))
        samples = _more_than(max_points, WalMetric, WalMetric.source_id, source.id, win)
        if samples <= max_points:
            samples += _more_than(max_points, SampleError, SampleError.source_id, source.id, win)
        width = 0 if samples <= max_points else max(math.ceil(span / max_points), 1)
        retention = timedelta(days=current_app.config["WAL_METRICS_RETENTION_DAYS"])
        if not samples and win.start < utcnow() - retention:
            # A short range older than the samples kept: its hours from the roll-ups.
            width, base = rollups.widths_for(span, max_points)

    def rows(
        model: Any,
        owner: Any,
        owner_id: int,
        names: tuple[str, ...],
        key: str | None = None,
        only: tuple[Any, ...] = (),
        labels: tuple[str, ...] = (),
    ) -> Any:
        if width:
            query = _by_bucket(model, owner, owner_id, win, width, names, key, only, labels)
        else:
            query = _raw(model, owner, owner_id, win, names, key, only, labels)
        # Core rows, as tuples: no ORM processing of a few thousand of them.
        return db.session.connection().execute(query).all()

    points: dict[datetime, _Point] = {}
    # In buckets, a slot's figures go to the point of its source's sample in the same bucket.
    bucket_time: dict[int, datetime] = {}
    # Each row: bucket, time of its last sample, [slot name, database], (last, min, max)...
    if base:
        good, failed = rollups.source_rows(source.id, win.start, win.end, width, base)
    else:
        good = rows(WalMetric, WalMetric.source_id, source.id, WAL_SERIES)
        failed = rows(SampleError, SampleError.source_id, source.id, ("error",))
    for row in good:
        at = as_utc(row[1])
        points[at] = _Point(at, wal=_figures(row, 2, len(WAL_SERIES)))
        if width:
            bucket_time[row[0]] = at
    for row in failed:
        at = as_utc(row[1])
        _point(points, at).error = row[2]

    own: list[str] = []
    shown: list[str] = []
    not_drawn: list[str] = []
    databases: dict[str, str | None] = {}
    # The source's server, in one query (not its state's, then the state's server's), without
    # its slots' trends: the chart draws none of them.
    server = db.session.scalar(
        select(Server)
        .join(SourceState, SourceState.server_id == Server.id)
        .where(SourceState.source_id == source.id)
        .options(defer(Server.slot_trends))
    )
    if server is not None and server.last_sampled_at is not None:
        in_range = (
            SlotMetric.server_id == server.id,
            SlotMetric.recorded_at >= win.start,
            SlotMetric.recorded_at < win.end,
        )
        peaks: dict[str, float] = {}
        lines: dict[str, list[tuple[datetime, tuple[Any, Any, Any]]]] = {}
        series_of: dict[str, dict[datetime, Any]] = {}

        def read(names: list[str] | None = None) -> None:
            if base:
                found = rollups.slot_rows(server.id, win.start, win.end, width, base, names)
            else:
                found = rows(
                    SlotMetric,
                    SlotMetric.server_id,
                    server.id,
                    SLOT_SERIES,
                    "slot_name",
                    () if names is None else (SlotMetric.slot_name.in_(names),),
                    ("database", "series_started_at"),
                )
            for row in found:
                bucket, moment, name, database, series = row[:5]
                at = (width and bucket_time.get(bucket)) or as_utc(moment)
                figures = _triple(row, 5)
                lines.setdefault(name, []).append((at, figures))
                series_of.setdefault(name, {})[at] = series
                databases[name] = database
                peaks[name] = max(peaks.get(name, 0), figures[2] or 0)

        latest = db.session.scalar(
            select(func.count()).where(
                SlotMetric.server_id == server.id,
                SlotMetric.recorded_at == server.last_sampled_at,
            )
        )
        many = (latest or 0) > TOP_SLOTS
        if many:
            # Which slots get a line: one pass over the covering index, before any series.
            ranked: Iterable[Any]
            if base:
                ranked = rollups.slot_peaks(server.id, win.start, win.end, width, base)
            else:
                ranked = db.session.execute(
                    select(
                        SlotMetric.slot_name,
                        func.max(SlotMetric.database),
                        func.max(SlotMetric.retained_bytes),
                    )
                    .where(*in_range)
                    .group_by(SlotMetric.slot_name)
                )
            for name, database, peak in ranked:
                databases[name], peaks[name] = database, peak or 0
        else:
            read()  # few slots: read every series at once, ranked below
        own = sorted(name for name in peaks if databases[name] == source.pg_database)
        others = sorted((name for name in peaks if name not in own), key=lambda n: -peaks[n])
        # Of a database with hundreds of slots, its TOP_SLOTS worst get a line, as others do.
        own_ranked = sorted(own, key=lambda n: -peaks[n])
        shown = sorted(own_ranked[:TOP_SLOTS]) + sorted(others[:TOP_SLOTS])
        not_drawn = own_ranked[TOP_SLOTS:] + others[TOP_SLOTS:]
        if many and shown:
            read(shown)
        # Raw, a slot row at a time this source has no sample of (another database of the
        # server was sampled then) is left out: it would break the WAL line for nothing.
        own_times = set(points)
        for name in shown:
            for at, figures in lines.get(name, []):
                if width or at in own_times:
                    _point(points, at).slots[name] = figures
        if not_drawn and many and base:
            most = rollups.other_slots(server.id, win.start, win.end, width, base, shown)
            for bucket, (at, last, low, high) in most.items():
                at = bucket_time.get(bucket, at)
                figures = (_number(last), _number(low), _number(high))
                _point(points, at).slots[OTHERS] = figures
        elif not_drawn and many:
            _most_of_others(points, bucket_time, width, in_range, shown)
        elif not_drawn:
            for name in not_drawn:
                for at, figures in lines[name]:
                    if not width and at not in own_times:
                        continue
                    point = _point(points, at)
                    last, low, high = point.slots.get(OTHERS, (0, 0, 0))
                    point.slots[OTHERS] = (
                        max(last or 0, figures[0] or 0),
                        max(low or 0, figures[1] or 0),
                        max(high or 0, figures[2] or 0),
                    )

    ordered = [points[at] for at in sorted(points)]

    def series(pick: Any) -> dict[str, list[Any]]:
        values = [pick(point) or _NONE for point in ordered]
        kinds = [list(kind) for kind in zip(*values, strict=True)] or [[], [], []]
        return dict(zip(("last", "min", "max"), kinds, strict=True))

    other_slots = None
    if not_drawn:
        other_slots = {"count": len(not_drawn), **series(lambda p: p.slots.get(OTHERS))}
    return {
        "source_id": source.id,
        "start": isoformat(win.start),
        "end": isoformat(win.end),
        "bucket_seconds": width,
        # Each point's time is aware UTC already (as_utc when read).
        "times": [point.at.isoformat().replace("+00:00", "Z") for point in ordered],
        "errors": [point.error for point in ordered],
        "series": {
            name: series(lambda p, i=i: p.wal[i] if p.wal else None)
            for i, name in enumerate(WAL_SERIES)
        },
        "slots": {
            name: {
                "database": databases.get(name),
                "own": name in own,
                **series(lambda p, name=name: p.slots.get(name)),
                "series_starts": _series_starts(ordered, name, series_of.get(name, {})),
            }
            for name in shown
        },
        "other_slots": other_slots,
    }


def _series_starts(ordered: list[_Point], name: str, series: dict[datetime, Any]) -> list[str]:
    """Return the times at which a slot's line starts a new series (the slot was dropped and
    created again): its line ends before them, not joined to the new one."""
    starts: list[str] = []
    before = None
    for point in ordered:
        if name not in point.slots:
            continue
        now = series.get(point.at)
        if now is not None and before is not None and now != before:
            starts.append(str(isoformat(point.at)))
        before = now if now is not None else before
    return starts


_NONE = (None, None, None)  # a point without the series
OTHERS = "\x00others"  # the key of the slots not drawn in a point: no slot is named so


def _most_of_others(
    points: dict[datetime, _Point],
    bucket_time: dict[int, datetime],
    width: int,
    in_range: tuple[Any, ...],
    shown: list[str],
) -> None:
    """Add to the points the WAL the slots not shown retain together: the most one of them
    retains (their retained WAL overlaps, all of it ending at the server's position; a sum
    would count it once per slot), per sample in SQL, then, in buckets, the last and the
    smallest and largest."""
    totals = db.session.execute(
        select(SlotMetric.recorded_at, func.max(SlotMetric.retained_bytes))
        .where(*in_range, SlotMetric.slot_name.not_in(shown))
        .group_by(SlotMetric.recorded_at)
        .order_by(SlotMetric.recorded_at)
    )
    if not width:
        for moment, total in totals:
            at = as_utc(moment)
            if at in points:  # a time this source was sampled at
                value = _number(total)
                points[at].slots[OTHERS] = (value, value, value)
        return
    buckets: dict[int, tuple[datetime, Any, Any, Any]] = {}
    for moment, total in totals:
        at = as_utc(moment)
        value = _number(total)
        bucket = int(at.timestamp() // width)
        _, _, low, high = buckets.get(bucket, (at, value, value, value))
        buckets[bucket] = (at, value, min(low, value), max(high, value))  # rows come in order
    for bucket, (at, last, low, high) in buckets.items():
        at = bucket_time.get(bucket, at)
        _point(points, at).slots[OTHERS] = (last, low, high)


def _number(value: Any) -> Any:
    if value is None or type(value) is int or isinstance(value, str):
        return value
    number = float(value)  # a float column, or a sum (Decimal)
    return int(number) if number.is_integer() else round(number, 3)
