"""The alert rules and the growth fit, on figures made for them: hysteresis, escalation, and a
spike that must not swing the forecast."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rosetta_web.alerting import rules, trends
from rosetta_web.models import ALERT_SETTING_KEYS

MB = 1024 * 1024
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@dataclass
class FakeSlot:
    slot_name: str = "orders"
    active: bool = False
    retained_bytes: int | None = 0
    lag_bytes: int | None = 0
    safe_wal_size: int | None = None
    database: str | None = "shop"
    inactive_since: datetime | None = None
    wal_status: str | None = None


def settings(**values: int | None) -> rules.Settings:
    base = dict.fromkeys(ALERT_SETTING_KEYS)
    return rules.Settings(**{**base, **values})


def fire(retained: int, firing: dict[str, str], **values: int | None) -> list[rules.Finding]:
    facts = rules.SlotFacts(
        slot=FakeSlot(retained_bytes=retained),
        inactive_since=None,
        wal_status=None,
        trend={},
        forecast=trends.NO_FORECAST,
        server_id=1,
        server_name="db:5432",
        source_id=7,
        source_name="shop",
    )
    return rules.slot_findings(facts, settings(**values), firing, NOW)


def test_size_alerts_hold_until_ten_percent_below_their_threshold():
    """A value hovering at the line does not flap: it resolves under 90 % of the threshold."""
    limits = {"retained_warning_bytes": 100 * MB, "retained_critical_bytes": 1000 * MB}
    key = rules.slot_key("retained_wal", 1, "orders")
    assert fire(99 * MB, {}, **limits) == []
    [warning] = fire(100 * MB, {}, **limits)
    assert (warning.severity, warning.threshold, warning.key) == ("warning", 100 * MB, key)
    assert "retains 100 MB of WAL (warning at 100 MB)" in warning.message
    assert fire(91 * MB, {key: "warning"}, **limits)[0].severity == "warning"
    assert fire(89 * MB, {key: "warning"}, **limits) == []
    # Escalation, and a critical alert held at 90 % of its threshold, then back to warning.
    assert fire(1000 * MB, {key: "warning"}, **limits)[0].severity == "critical"
    assert fire(950 * MB, {key: "critical"}, **limits)[0].severity == "critical"
    assert fire(950 * MB, {key: "warning"}, **limits)[0].severity == "warning"
    assert fire(850 * MB, {key: "critical"}, **limits)[0].severity == "warning"


def test_a_rule_set_to_null_is_off():
    assert fire(10**12, {}) == []


def _trend(values: list[float], step_s: int = 300) -> dict:
    trend = None
    for index, value in enumerate(values):
        moment = NOW - timedelta(seconds=step_s * (len(values) - 1 - index))
        trend = trends.update(trend, moment, FakeSlot(retained_bytes=int(value)), None)
    assert trend is not None
    return trend


def test_growth_ignores_a_single_spike():
    """1 MB a minute for an hour: 60 MB/h; one sample 2 GB off moves the fit under 20 %,
    where a least-squares line or the last two samples would be far off."""
    steady = [1000 * MB + i * 5 * MB for i in range(12)]  # every 5 minutes
    spiked = list(steady)
    spiked[9] += 2048 * MB
    calm = _trend(steady)["growth"]
    assert abs(calm - 60 * MB) < 0.01 * 60 * MB
    growth = _trend(spiked)["growth"]
    assert abs(growth - calm) <= 0.2 * calm

    # What the robust fit is there for: the naive estimates are thrown far off.
    xs = list(range(12))
    mean_x, mean_y = sum(xs) / 12, sum(spiked) / 12
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, spiked, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    assert abs(slope * 12 - calm) > 0.2 * calm
    two_point = (spiked[10] - spiked[9]) * 12
    assert abs(two_point - calm) > 0.2 * calm


def test_growth_needs_three_samples_within_the_hour():
    assert _trend([0, 5 * MB])["growth"] is None
    assert _trend([0, 5 * MB, 10 * MB])["growth"] == 60 * MB
    # Samples older than an hour are dropped: 5 minutes apart, 13 span the hour.
    assert len(_trend([i * MB for i in range(30)], step_s=300)["points"]) == 13


def test_points_are_thinned_evenly_however_often_sampled():
    trend = _trend([i * 1000 for i in range(600)], step_s=6)  # an hour at 6 s
    times = [point[0] for point in trend["points"]]
    assert len(times) == trends.MAX_POINTS
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) <= 3 * min(gaps)
    assert trend["growth"] == 1000 / 6 * 3600


def test_forecast_words_and_severity():
    """Lost in under an hour is critical; within the setting, a warning; in words."""
    slot = FakeSlot(retained_bytes=100 * MB, safe_wal_size=30 * MB)
    trend = {"growth": 60 * MB}
    forecast = trends.forecast(trend, slot, NOW, 10 * 1024 * MB)
    assert forecast.eta_lost == NOW + timedelta(minutes=30)
    facts = rules.SlotFacts(slot, None, "extended", trend, forecast, 1, "db:5432", 7, "shop")
    [finding] = rules.slot_findings(facts, settings(forecast_hours=6), {}, NOW)
    assert finding.severity == "critical"
    assert finding.message == "slot `orders` on db:5432 is lost in about 30 min at 60 MB/h"
    slot.safe_wal_size = 180 * MB
    forecast = trends.forecast(trend, slot, NOW, 10 * 1024 * MB)
    facts = rules.SlotFacts(slot, None, "extended", trend, forecast, 1, "db:5432", 7, "shop")
    [finding] = rules.slot_findings(facts, settings(forecast_hours=6), {}, NOW)
    assert (finding.severity, finding.value) == ("warning", 3.0)
    assert "is lost in about 3 h at 60 MB/h" in finding.message
    assert rules.slot_findings(facts, settings(forecast_hours=2), {}, NOW) == []
    # Not growing: no forecast at all.
    assert trends.forecast({"growth": -5.0}, slot, NOW, 10 * MB) == trends.NO_FORECAST


def test_a_slot_growing_a_few_bytes_an_hour_has_no_eta_rather_than_an_error():
    """100 B/h to a 10 GB threshold is ~12,000 years away: no ETA, and no OverflowError."""
    slot = FakeSlot(retained_bytes=MB, safe_wal_size=10 * 1024 * MB)
    forecast = trends.forecast({"growth": 100.0}, slot, NOW, 10 * 1024 * MB)
    assert (forecast.growth_bytes_per_hour, forecast.eta_critical, forecast.eta_lost) == (
        100.0,
        None,
        None,
    )


def test_a_consumer_with_nothing_to_confirm_is_not_stalled():
    """An idle server: neither WAL nor the consumer's position moves; the stall clock waits
    for WAL to move, then counts from there."""
    consumer = FakeSlot(active=True, retained_bytes=MB, lag_bytes=100)
    start = trends.update(None, NOW, consumer, 10_000)
    idle = trends.update(start, NOW + timedelta(hours=2), consumer, 10_000)
    assert idle["flush_since"] == (NOW + timedelta(hours=2)).timestamp()
    behind = FakeSlot(active=True, retained_bytes=MB, lag_bytes=5100)
    written = trends.update(idle, NOW + timedelta(hours=2, minutes=5), behind, 15_000)
    assert written["flush_since"] == idle["flush_since"]  # WAL moved, the consumer did not
    assert written["wal"] - written["wal_at_flush"] == 5000


def test_inactive_since_read_back_naive_from_sqlite_is_utc_whatever_the_local_zone(monkeypatch):
    """SQLite hands back naive datetimes meant as UTC: the host's time zone changes nothing."""
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        naive = datetime(2026, 11, 29, 11, 0)
        slot = FakeSlot(inactive_since=naive)
        stored = trends.update(None, NOW, slot, 0)["slot"]["inactive_since"]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert stored == naive.replace(tzinfo=UTC).timestamp()
