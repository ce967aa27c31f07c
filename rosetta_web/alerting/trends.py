"""What the alert rules need of a slot's past: its growth, fitted robustly, and its consumer's
progress. Updated when a server's slots are stored; no Flask, no ORM.

A trend is a small JSON document kept per slot on its server (`Server.slot_trends`, the
points apart in `Server.slot_points`: the alert rules read the rest after every round):
  points       [[epoch seconds, retained bytes], ...] over the last hour, at most MAX_POINTS
  growth       bytes per hour fitted to the points (Theil-Sen), null with fewer than MIN_POINTS
  wal          the server's WAL position (bytes since 0/0) at the last sample
  flush        the slot's confirmed_flush_lsn (bytes since 0/0) at the last sample
  flush_since  since when (epoch seconds) the consumer has been connected and `flush` unmoved
  wal_at_flush the server's WAL position at `flush_since`
  slot         the slot's figures in that sample (database, active, inactive_since, retained,
               lag, wal_status, safe_wal_size): the rules read the latest slots from here,
               without a pass over the slot history
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from statistics import median
from typing import Any, Protocol

from ..timeutil import as_utc

WINDOW_SECONDS = 3600
MAX_POINTS = 24
MIN_POINTS = 3
# Forecasts further out than ten years say nothing an operator can act on.
HORIZON_HOURS = 24 * 365 * 10


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
        )


def theil_sen(points: list[list[float]]) -> float | None:
    """Return the median of the slopes between every pair of points (per second), or None.

    One wild point changes only the slopes it takes part in, a minority of them: the median
    ignores it, where a two-point difference or a least-squares line would swing.
    """
    slopes = [
        (y2 - y1) / (t2 - t1)
        for index, (t1, y1) in enumerate(points)
        for t2, y2 in points[index + 1 :]
        if t2 > t1
    ]
    return median(slopes) if slopes else None


def _thin(points: list[list[float]]) -> None:
    """Drop inner points down to MAX_POINTS, each time the one whose neighbours are closest
    together: the hour stays covered evenly however often the server is sampled."""
    while len(points) > MAX_POINTS:
        spans = [points[i + 1][0] - points[i - 1][0] for i in range(1, len(points) - 1)]
        del points[1 + spans.index(min(spans))]


def update(
    trend: dict[str, Any] | None, moment: datetime, slot: StoredSlot, wal_position: int | None
) -> dict[str, Any]:
    """Return the slot's trend with one more sample taken at `moment`."""
    trend = trend or {}
    now = moment.timestamp()
    points = [point for point in trend.get("points", []) if 0 < now - point[0] <= WINDOW_SECONDS]
    if slot.retained_bytes is not None:
        points.append([now, slot.retained_bytes])
    _thin(points)
    slope = theil_sen(points) if len(points) >= MIN_POINTS else None
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
        "growth": None if slope is None else slope * 3600,
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
    and when it is lost (null when not growing, unknown, or already there)."""

    growth_bytes_per_hour: float | None
    eta_critical: datetime | None
    eta_lost: datetime | None

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


def forecast(
    trend: dict[str, Any] | None,
    slot: SlotLike,
    sampled_at: datetime,
    critical_bytes: int | None,
) -> Forecast:
    """Forecast a slot from its trend, counting from the sample that saw it."""
    growth = (trend or {}).get("growth")
    if growth is None or growth <= 0:
        return NO_FORECAST
    retained = slot.retained_bytes
    eta_critical = eta_lost = None
    if critical_bytes is not None and retained is not None and retained < critical_bytes:
        eta_critical = _after(sampled_at, (critical_bytes - retained) / growth)
    # safe_wal_size shrinks as the slot's retained WAL grows: at zero the slot is lost.
    if slot.safe_wal_size is not None and slot.safe_wal_size > 0:
        eta_lost = _after(sampled_at, slot.safe_wal_size / growth)
    return Forecast(growth, eta_critical, eta_lost)


def _after(moment: datetime, hours: float) -> datetime | None:
    """Return the moment so many hours later; None past the horizon (a slot growing a few
    bytes an hour would otherwise reach its threshold after the year 9999)."""
    if hours > HORIZON_HOURS:
        return None
    return moment + timedelta(hours=hours)
