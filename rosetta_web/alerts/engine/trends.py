"""What the alert rules need of a slot's past: its growth, fitted robustly, and its consumer's
progress. Updated when a server's slots are stored; no Flask, no ORM.

A trend is a small JSON document kept per slot on its server (`Server.slot_trends`, the
points apart in `Server.slot_points`: the alert rules read the rest after every round):
  points       [[epoch seconds, retained bytes], ...] over the last hour, at most MAX_POINTS,
               denser the more recent they are
  fitted       bytes per hour: the windows' fit (see `choose`), null when none is significant
  growing_since since when (epoch seconds) a fit has been significant, sample after sample
  growth       `fitted` once established (a minute and two samples at least), else null:
               what the alert rule and the pages read
  window       the window (seconds) the fit is over
  at           the sample (epoch seconds) the figures below are from: every page counts the
               forecast from here, so all of them say the same
  series       when (epoch seconds) this series of the slot began: a slot dropped and created
               again under its name, or moved back, starts a new one (`continuity`)
  wal          the server's WAL position (bytes since 0/0) at the last sample
  flush        the slot's confirmed_flush_lsn (bytes since 0/0) at the last sample
  flush_since  since when (epoch seconds) the consumer has been connected and `flush` unmoved
  wal_at_flush the server's WAL position at `flush_since`
  slot         the slot's figures in that sample (database, active, inactive_since, retained,
               lag, wal_status, safe_wal_size): the rules read the latest slots from here,
               without a pass over the slot history
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from statistics import median
from typing import Any, Protocol

from ...timeutil import as_utc

WINDOW_SECONDS = 3600
# The growth is fitted over each of these windows (the last 5 minutes, 15 minutes, the hour;
# each at least four sampling intervals). The longest significant fit is kept, unless a
# shorter window's is surely faster (`choose`): a slot that starts growing after an idle
# spell is seen within a few samples, where an hour's fit would stay flat for half an hour.
FIT_WINDOWS_SECONDS = (300, 900, WINDOW_SECONDS)
WINDOW_INTERVALS = 4
MAX_POINTS = 36
# Fewer points than this leave Sen's interval without a lower end.
MIN_POINTS = 4
# A fit spans at least this long, and at least three sampling intervals: three samples
# seconds apart around one batch insert say nothing of a trend.
MIN_SPAN_SECONDS = 120
SPAN_INTERVALS = 3
# A fit counts when the lower end of Sen's one-sided 95 % confidence interval for its slope
# is at least half the slope. A single batch insert (a step) is not a trend.
CONFIDENCE_Z = 1.645
AGREEMENT = 0.5
# A growth is told (to the alert rule and the pages) once it has been significant for this
# long and over two samples at least: a burst of a few inserts is over before that.
ESTABLISHED_SECONDS = 60
# Thinning keeps points denser the more recent they are: their weight falls with age past
# this many seconds, so the 5-minute window keeps a dozen points of an hour at 5 s.
RECENT_SECONDS = 60
# A forecast further out than a year says nothing an operator can act on.
HORIZON_HOURS = 24 * 365


class SlotLike(Protocol):
    slot_name: str
    active: bool
    retained_bytes: int | None
    lag_bytes: int | None
    safe_wal_size: int | None


class StoredSlot(SlotLike, Protocol):
    database: str | None
    inactive_since: datetime | None
    wal_status: str | None


@dataclass
class LatestSlot:
    """A slot as its server's latest sample saw it, read back from its trend."""

    slot_name: str
    database: str | None
    active: bool
    inactive_since: datetime | None
    retained_bytes: int | None
    lag_bytes: int | None
    wal_status: str | None
    safe_wal_size: int | None
    series_started_at: datetime | None = None

    @classmethod
    def of(cls, slot_name: str, trend: dict[str, Any]) -> LatestSlot | None:
        """Read the slot from its trend; None for a trend stored before it kept the slot."""
        figures = trend.get("slot")
        if figures is None:
            return None
        since = figures["inactive_since"]
        return cls(
            slot_name,
            figures["database"],
            figures["active"],
            None if since is None else datetime.fromtimestamp(since, UTC),
            figures["retained_bytes"],
            figures["lag_bytes"],
            figures["wal_status"],
            figures["safe_wal_size"],
            None if trend.get("series") is None else datetime.fromtimestamp(trend["series"], UTC),
        )


def _slopes(points: list[list[float]]) -> list[float]:
    """The slopes (per second) between every pair of points: Theil-Sen's median is taken of
    them, so one wild point changes only the slopes it takes part in, a minority."""
    return [
        (y2 - y1) / (t2 - t1)
        for index, (t1, y1) in enumerate(points)
        for t2, y2 in points[index + 1 :]
        if t2 > t1
    ]


@dataclass(frozen=True)
class Fit:
    """A significant growth over one window (bytes per second) with the ends of Sen's
    interval for it."""

    growth: float
    lower: float
    upper: float
    window: int


def fit(points: list[list[float]], min_span_s: float, window: int = 0) -> Fit | None:
    """Fit the growth of points, or None when it is not a trend.

    Theil-Sen's slope, counted only when the points span `min_span_s` and the lower end of
    Sen's one-sided 95 % confidence interval for the slope is at least half of it: most
    pairs of points must agree on the growth. A single batch insert in a flat line (a step)
    never makes them: only the pairs across it see growth.
    """
    if len(points) < MIN_POINTS or points[-1][0] - points[0][0] < min_span_s:
        return None
    slopes = sorted(_slopes(points))
    count = len(points)
    # Sen (1968): the ranks (from 1) of the interval's ends among the ordered slopes.
    spread = CONFIDENCE_Z * math.sqrt(count * (count - 1) * (2 * count + 5) / 18)
    rank = round((len(slopes) - spread) / 2)
    growth = median(slopes)
    if rank < 1 or growth <= 0 or slopes[rank - 1] < growth * AGREEMENT:
        return None
    return Fit(growth, slopes[rank - 1], slopes[len(slopes) - rank], window)


def choose(points: list[list[float]], now: float, interval_s: float) -> Fit | None:
    """Fit every window and keep the longest significant fit, or a shorter one that is surely
    faster (the lower end of its interval above the longer's growth): the fastest of noisy
    estimates would be biased high, the longest alone would be late."""
    min_span = max(MIN_SPAN_SECONDS, SPAN_INTERVALS * interval_s)
    chosen: Fit | None = None
    for base in reversed(FIT_WINDOWS_SECONDS):
        window = max(base, int(WINDOW_INTERVALS * interval_s))
        # Half an interval's grace: samples come a few milliseconds late or early.
        inside = [point for point in points if now - point[0] <= window + interval_s / 2]
        found = fit(inside, min_span, window)
        if found is not None and (chosen is None or found.lower > chosen.growth):
            chosen = found
    return chosen


def _thin(points: list[list[float]], now: float) -> None:
    """Drop inner points down to MAX_POINTS, each time the one whose neighbours are closest
    together for its age: the hour stays covered, the last minutes most densely, however
    often the server is sampled."""
    while len(points) > MAX_POINTS:
        spans = [
            (points[i + 1][0] - points[i - 1][0]) / (now - points[i][0] + RECENT_SECONDS)
            for i in range(1, len(points) - 1)
        ]
        del points[1 + spans.index(min(spans))]


def _restart(trend: dict[str, Any]) -> int | None:
    """The slot's restart_lsn (bytes since 0/0) at the trend's last sample, when known."""
    figures = trend.get("slot") or {}
    wal, retained = trend.get("wal"), figures.get("retained_bytes")
    return None if wal is None or retained is None else wal - retained


SAME, NEW_SERIES, VISITED = "same", "new series", "visited"


def continuity(trend: dict[str, Any] | None, slot: StoredSlot, wal_position: int | None) -> str:
    """Say how this sample of a slot follows its trend.

    NEW_SERIES when the server's last sample did not have the slot (new, or dropped and
    created again since), when its database changed, or when its restart_lsn went back: a
    new series begins, its chart line apart from the old one. VISITED when its restart_lsn
    moved while no consumer was seen in either sample: only a consumer (or an advance, or the
    slot dropped and created again) moves it, so its time without a consumer and its growth
    start over, on the same line. SAME otherwise.
    """
    if not trend or "slot" not in trend:
        return NEW_SERIES
    before = trend["slot"]
    if before.get("database") != slot.database:
        return NEW_SERIES
    then = _restart(trend)
    if then is None or wal_position is None or slot.retained_bytes is None:
        return SAME
    restart = wal_position - slot.retained_bytes
    if restart < then:
        return NEW_SERIES
    if restart != then and not slot.active and not before.get("active"):
        return VISITED
    return SAME


def update(
    trend: dict[str, Any] | None,
    moment: datetime,
    slot: StoredSlot,
    wal_position: int | None,
    interval_s: float = 0,
) -> dict[str, Any]:
    """Return the slot's trend with one more sample taken at `moment`, the server sampled
    every `interval_s` seconds.

    Pass None for `trend` to start a new series, or a trend of its `series` alone to start
    its growth afresh on the same series (see `continuity`).
    """
    trend = trend or {}
    now = moment.timestamp()
    points = [point for point in trend.get("points", []) if 0 < now - point[0] <= WINDOW_SECONDS]
    if slot.retained_bytes is not None:
        points.append([now, slot.retained_bytes])
    _thin(points, now)
    found = choose(points, now, interval_s)
    # Since when the growth has been significant, sample after sample; told once established.
    growing_since = None
    if found is not None:
        growing_since = trend.get("growing_since")
        if growing_since is None or trend.get("fitted") is None:
            growing_since = now
    established = (
        found is not None
        and growing_since is not None
        and now - growing_since >= max(ESTABLISHED_SECONDS, interval_s)
    )
    flush = None
    if wal_position is not None and slot.lag_bytes is not None:
        flush = wal_position - slot.lag_bytes
    flush_since, wal_at_flush = trend.get("flush_since"), trend.get("wal_at_flush")
    # The stall clock starts when a connected consumer's position is first seen, and again
    # whenever it moves, or while it has nothing to confirm (no WAL written since the last
    # sample, or nothing left behind): an idle server's consumer is not stalled. A slot
    # without a consumer is not stalled either: it is inactive.
    idle = wal_position is not None and wal_position == trend.get("wal")
    if (
        not slot.active
        or flush is None
        or flush != trend.get("flush")
        or flush_since is None
        or idle
        or slot.lag_bytes == 0
    ):
        flush_since, wal_at_flush = now, wal_position
    return {
        "points": points,
        "fitted": None if found is None else found.growth * 3600,
        "growing_since": growing_since,
        "growth": found.growth * 3600 if found is not None and established else None,
        "window": found.window if found is not None else None,
        "at": now,
        "series": trend.get("series", now),
        "wal": wal_position,
        "flush": flush,
        "flush_since": flush_since,
        "wal_at_flush": wal_at_flush,
        "slot": {
            "database": slot.database,
            "active": slot.active,
            "inactive_since": as_utc(slot.inactive_since).timestamp()
            if slot.inactive_since
            else None,
            "retained_bytes": slot.retained_bytes,
            "lag_bytes": slot.lag_bytes,
            "wal_status": slot.wal_status,
            "safe_wal_size": slot.safe_wal_size,
        },
    }


@dataclass(frozen=True)
class Forecast:
    """Where a slot is heading: bytes per hour, and when it reaches the critical threshold
    and when it is lost (null when not growing, unknown, already there, or more than a year
    away: `beyond` then names the sooner of those, 'lost' or 'critical')."""

    growth_bytes_per_hour: float | None
    eta_critical: datetime | None
    eta_lost: datetime | None
    beyond: str | None = None

    def soonest(self) -> tuple[str, datetime] | None:
        """Return which comes first, 'lost' or 'critical', and when."""
        etas = [
            (when, what)
            for what, when in (("lost", self.eta_lost), ("critical", self.eta_critical))
            if when is not None
        ]
        if not etas:
            return None
        when, what = min(etas)
        return what, when


NO_FORECAST = Forecast(None, None, None)


def forecast(trend: dict[str, Any] | None, critical_bytes: int | None) -> Forecast:
    """Forecast a slot from its stored trend alone: its growth, and its figures at the sample
    the growth was fitted at, so every page and the alert say the same."""
    trend = trend or {}
    growth, figures, at = trend.get("growth"), trend.get("slot"), trend.get("at")
    if growth is None or growth <= 0 or figures is None or at is None:
        return NO_FORECAST
    sampled_at = datetime.fromtimestamp(at, UTC)
    retained, safe = figures["retained_bytes"], figures["safe_wal_size"]
    hours: dict[str, float] = {}
    if critical_bytes is not None and retained is not None and retained < critical_bytes:
        hours["critical"] = (critical_bytes - retained) / growth
    # safe_wal_size shrinks as the slot's retained WAL grows: at zero the slot is lost.
    if safe is not None and safe > 0:
        hours["lost"] = safe / growth
    # A slot growing a few bytes an hour would otherwise reach its threshold after 9999.
    near = {
        what: sampled_at + timedelta(hours=h) for what, h in hours.items() if h <= HORIZON_HOURS
    }
    far = sorted((h, what) for what, h in hours.items() if what not in near)
    return Forecast(
        growth, near.get("critical"), near.get("lost"), beyond=far[0][1] if far else None
    )
