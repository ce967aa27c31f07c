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
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Annotated, Any

from flask import current_app
from sqlalchemy import DateTime, Float, func, literal, select, text
from sqlalchemy.orm import aliased

from ..extensions import db
from ..forms import MAX_INT
from ..models import (
    ALERT_RULES,
    SEVERITIES,
    SampleError,
    Server,
    SlotMetric,
    Source,
    WalMetric,
)
from ..shapes import Declared, Described, IntArg, Moment, TextArg
from ..timeutil import (
    EPOCH,
    MOMENT_WORDS,
    ParameterError,
    isoformat,
    parse_moment,
    utcnow,
)
from . import rollups

DEFAULT_RANGE = timedelta(hours=24)
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
    the time of the last row (`_time`: the bucket is the one of `width` it falls in), its
    values, and the min and max of each of `names`.

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
        rollups.epoch_us(buckets.c.last_at),
        *([buckets.c[key]] if key else []),
        *[_time(buckets.c[name]) for name in labels],
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
        rollups.epoch_us(model.recorded_at),
        *keys,
        *[_time(getattr(model, name)) for name in labels],
        *triples,
    ).where(owner == owner_id, model.recorded_at >= win.start, model.recorded_at < win.end, *only)


def _time(column: Any) -> Any:
    """A column as a chart reads it: a time as microseconds since 1970 (`rollups.epoch_us`)."""
    return rollups.epoch_us(column) if isinstance(column.type, DateTime) else column


def _iso(us: int) -> str:
    """A time read as microseconds since 1970, as ISO-8601 UTC with a Z (as `isoformat`
    prints it, in half its time: a chart prints a thousand)."""
    seconds, fraction = divmod(us, 1_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{text}.{fraction:06d}Z" if fraction else f"{text}Z"


WAL_SERIES = ("size_bytes", "retained_bytes", "wal_rate_bytes_per_second")
# Of the series, those stored as floats (a rate), rounded for the chart; the others are byte
# counts, read as whole numbers.
FLOAT_SERIES = frozenset({"wal_rate_bytes_per_second"})
SLOT_SERIES = ("retained_bytes",)
TOP_SLOTS = 10  # besides the source's own database's slots, charted one line each


_KINDS_ORDER = ("last", "min", "max")
_AT = itemgetter(0)  # a row's time (microseconds since 1970): its sample's, or its bucket's last


class _Chart:
    """A chart's points by time (microseconds since 1970), and its series as columns: each
    series' times and its last, min and max at them (a chart of a few thousand points is read
    as columns, not point by point)."""

    def __init__(self, times: Iterable[int]) -> None:
        # Every point's time, and why its sample failed (None: it did not).
        self.errors: dict[int, str | None] = dict.fromkeys(times)
        self.series: dict[str, tuple[list[int], Sequence[Any], Sequence[Any], Sequence[Any]]]
        self.series = {}

    def add(self, times: Iterable[int]) -> None:
        """Make sure there is a point at each of `times`."""
        self.errors.update(dict.fromkeys(set(times).difference(self.errors)))

    def put(self, name: str, times: list[int], *kinds: Sequence[Any]) -> None:
        """Set a series: its times and its last, min and max at them, adding the points."""
        self.add(times)
        self.series[name] = (times, *kinds)  # type: ignore[assignment]

    def put_cells(self, name: str, cells: dict[int, tuple[Any, Any, Any]]) -> None:
        """Set a series from its (last, min, max) by time."""
        kinds = [list(kind) for kind in zip(*cells.values(), strict=True)] or [[], [], []]
        self.put(name, list(cells), *kinds)

    def figures(self, name: str, times: list[int], index: dict[int, int]) -> dict[str, list[Any]]:
        """A series' last, min and max at each of `times` (None where it has no figure);
        `index` is each time's place among them."""
        at_times, *kinds = self.series.get(name, ([], [], [], []))
        if at_times == times:  # the series has a figure at every point
            return dict(zip(_KINDS_ORDER, (list(kind) for kind in kinds), strict=True))
        placed: list[list[Any]] = [[None] * len(times) for _ in _KINDS_ORDER]
        for kind, values in zip(placed, kinds, strict=True):
            for at, value in zip(at_times, values, strict=True):
                kind[index[at]] = value
        return dict(zip(_KINDS_ORDER, placed, strict=True))


def _columns(rows: list[Any], width: int) -> list[Sequence[Any]]:
    """The rows' columns, `width` of them (empty when there are no rows)."""
    return list(zip(*rows, strict=True)) or [()] * width


_AS_THEY_ARE = {int, type(None)}
_FLOATS = {float, type(None)}


def _numbers(values: Sequence[Any]) -> Sequence[Any]:
    """Each value as the chart takes it (`_number`): byte counts, whole numbers, as they are."""
    kinds = set(map(type, values))
    if kinds <= _AS_THEY_ARE:
        return values
    if kinds <= _FLOATS:  # a float column: whole ones as ints, the rest to 3 places
        return [
            value if value is None else int(value) if value.is_integer() else round(value, 3)
            for value in values
        ]
    return [_number(value) for value in values]


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


def history(source: Source, server: Server | None, win: Window, max_points: int) -> dict[str, Any]:
    """Return the source's WAL series over the window, every series indexed by `times`, with
    the slots of its server (`sources.services.server_of`) as they were then."""
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

    # Each row: the time of its (bucket's last) sample, [slot name, database, series start],
    # then (last, min, max) of each figure.
    if base:
        good, failed = rollups.source_rows(source.id, win.start, win.end, width, base)
    else:
        good = rows(WalMetric, WalMetric.source_id, source.id, WAL_SERIES)
        failed = rows(SampleError, SampleError.source_id, source.id, ("error",))
    good = sorted(good, key=_AT)
    columns = _columns(good, 1 + 3 * len(WAL_SERIES))
    good_times = list(columns[0])
    chart = _Chart(good_times)
    for i, name in enumerate(WAL_SERIES):
        kinds = columns[1 + 3 * i : 4 + 3 * i]
        if name in FLOAT_SERIES:
            kinds = [_numbers(kind) for kind in kinds]
        chart.put(name, good_times, *kinds)
    # In buckets, a slot's figures go to the point of its source's sample in the same bucket.
    width_us = width * 1_000_000
    bucket_time: dict[int, int] = {}
    if width:
        bucket_time = {at // width_us: at for at in good_times}
    for row in failed:
        chart.errors[row[0]] = row[1]

    own: list[str] = []
    shown: list[str] = []
    not_drawn: list[str] = []
    databases: dict[str, str | None] = {}
    # Each slot read: its times, and its last, min and max retained at them.
    lines: dict[str, tuple[list[int], Sequence[Any], Sequence[Any], Sequence[Any]]] = {}
    series_of: dict[str, dict[int, Any]] = {}
    if server is not None and server.last_sampled_at is not None:
        in_range: tuple[Any, ...] = ()  # the samples' range, read when there are no roll-ups
        if not base:
            in_range = (
                SlotMetric.server_id == server.id,
                SlotMetric.recorded_at >= win.start,
                SlotMetric.recorded_at < win.end,
            )
        peaks: dict[str, float] = {}

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
            by_slot: dict[str, list[Any]] = {}
            for row in found:
                by_slot.setdefault(row[1], []).append(row)
            for name, slot_rows in by_slot.items():
                moments, _, slot_databases, series, last, low, high = _columns(
                    sorted(slot_rows, key=_AT), 7
                )
                times = (
                    [bucket_time.get(at // width_us, at) for at in moments]
                    if width
                    else list(moments)
                )
                lines[name] = (times, last, low, high)  # byte counts: whole numbers
                series_of[name] = dict(zip(times, series, strict=True))
                databases[name] = slot_databases[-1]
                peaks[name] = max(peaks.get(name, 0), *(value or 0 for value in high))

        many = (server.slot_count or 0) > TOP_SLOTS  # in its last sample
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
        own_times = set(chart.errors)
        for name in (*shown, *not_drawn):
            if name in lines and not width:
                times, last, low, high = lines[name]
                kept = [i for i, at in enumerate(times) if at in own_times]
                if len(kept) < len(times):
                    lines[name] = (
                        [times[i] for i in kept],
                        [last[i] for i in kept],
                        [low[i] for i in kept],
                        [high[i] for i in kept],
                    )
        for name in shown:
            if name in lines:
                chart.put(name, *lines[name])
        if not_drawn and many and base:
            most = rollups.other_slots(server.id, win.start, win.end, width, base, shown)
            chart.put_cells(
                OTHERS,
                {
                    bucket_time.get(bucket, at): (_number(last), _number(low), _number(high))
                    for bucket, (at, last, low, high) in most.items()
                },
            )
        elif not_drawn and many:
            _most_of_others(chart, bucket_time, width, in_range, shown)
        elif not_drawn:
            most_at: dict[int, tuple[Any, Any, Any]] = {}
            for name in not_drawn:
                for at, *figures in zip(*lines[name], strict=True):
                    last, low, high = most_at.get(at, (0, 0, 0))
                    most_at[at] = (
                        max(last or 0, figures[0] or 0),
                        max(low or 0, figures[1] or 0),
                        max(high or 0, figures[2] or 0),
                    )
            chart.put_cells(OTHERS, most_at)

    times = sorted(chart.errors)
    index = {at: i for i, at in enumerate(times)}
    other_slots = None
    if not_drawn:
        other_slots = {"count": len(not_drawn), **chart.figures(OTHERS, times, index)}
    return {
        "source_id": source.id,
        "start": isoformat(win.start),
        "end": isoformat(win.end),
        "bucket_seconds": width,
        "times": [_iso(at) for at in times],
        "errors": [chart.errors[at] for at in times],
        "series": {name: chart.figures(name, times, index) for name in WAL_SERIES},
        "slots": {
            name: {
                "database": databases.get(name),
                "own": name in own,
                **chart.figures(name, times, index),
                "series_starts": _series_starts(
                    times, chart.series.get(name, ((),))[0], series_of.get(name, {})
                ),
            }
            for name in shown
        },
        "other_slots": other_slots,
    }


def _series_starts(times: list[int], drawn_at: Iterable[int], series: dict[int, Any]) -> list[str]:
    """Return the times (of `times`, where the slot has figures: `drawn_at`) at which a slot's
    line starts a new series (the slot was dropped and created again): its line ends before
    them, not joined to the new one."""
    if len(set(series.values()).difference((None,))) < 2:
        return []  # one series all along, nearly always
    drawn = set(drawn_at)
    starts: list[str] = []
    before = None
    for at in times:
        if at not in drawn:
            continue
        now = series.get(at)
        if now is not None and before is not None and now != before:
            starts.append(_iso(at))
        before = now if now is not None else before
    return starts


OTHERS = "\x00others"  # the key of the slots not drawn in a point: no slot is named so


def _most_of_others(
    chart: _Chart,
    bucket_time: dict[int, int],
    width: int,
    in_range: tuple[Any, ...],
    shown: list[str],
) -> None:
    """Add to the points the WAL the slots not shown retain together: the most one of them
    retains (their retained WAL overlaps, all of it ending at the server's position; a sum
    would count it once per slot), per sample in SQL, then, in buckets, the last and the
    smallest and largest."""
    totals = db.session.execute(
        select(rollups.epoch_us(SlotMetric.recorded_at), func.max(SlotMetric.retained_bytes))
        .where(*in_range, SlotMetric.slot_name.not_in(shown))
        .group_by(SlotMetric.recorded_at)
        .order_by(SlotMetric.recorded_at)
    )
    if not width:
        most: dict[int, tuple[Any, Any, Any]] = {}
        for at, total in totals:
            if at in chart.errors:  # a time this source was sampled at
                value = _number(total)
                most[at] = (value, value, value)
        chart.put_cells(OTHERS, most)
        return
    buckets: dict[int, tuple[int, Any, Any, Any]] = {}
    for at, total in totals:
        value = _number(total)
        bucket = at // (width * 1_000_000)
        _, _, low, high = buckets.get(bucket, (at, value, value, value))
        buckets[bucket] = (at, value, min(low, value), max(high, value))  # rows come in order
    chart.put_cells(
        OTHERS,
        {
            bucket_time.get(bucket, at): (last, low, high)
            for bucket, (at, last, low, high) in buckets.items()
        },
    )


def _number(value: Any) -> Any:
    if value is None or type(value) is int or type(value) is str:
        return value
    number = float(value)  # a float column, or a sum (Decimal)
    return int(number) if number.is_integer() else round(number, 3)
