"""The alert rules and the growth fit, on figures made for them: hysteresis, escalation, and a
spike that must not swing the forecast."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from rosetta_web.alerts.engine import rules, trends
from rosetta_web.models import ALERT_SETTING_KEYS

from .constants import MB

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
    """With every rule null, even a huge retained figure fires nothing."""
    assert fire(10**12, {}) == []


def _trend(values: list[float], step_s: int = 300, interval_s: int = 0) -> dict:
    trend = None
    for index, value in enumerate(values):
        moment = NOW - timedelta(seconds=step_s * (len(values) - 1 - index))
        slot = FakeSlot(retained_bytes=int(value))
        trend = trends.update(trend, moment, slot, None, interval_s)
    assert trend is not None
    return trend


def _growths(values: list[float], step_s: int, jitter_s: float = 0) -> list[float | None]:
    """The growth (bytes per hour) the trend holds after each sample, the server sampled
    every `step_s` (each sample up to `jitter_s` late, as a round's clock is)."""
    trend, found = None, []
    for index, value in enumerate(values):
        late = jitter_s * ((index * 7919) % 13) / 13
        moment = NOW + timedelta(seconds=step_s * index + late)
        slot = FakeSlot(retained_bytes=int(value))
        trend = trends.update(trend, moment, slot, None, step_s)
        found.append(trend["growth"])
    return found


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


def test_growth_is_told_over_the_minimum_span_once_established():
    """Four samples at least, spanning at least two minutes and three sampling intervals,
    and told once significant for a minute and two samples: three samples seconds apart
    are no trend, nor is a fit seen once."""
    # Every 5 minutes: the fit is significant at the 4th sample, told from the 5th.
    assert _growths([i * 5 * MB for i in range(6)], step_s=300) == [None] * 4 + [60 * MB] * 2
    # 5 s apart: 25 samples span the two minutes; told from a minute later.
    growths = _growths([i * MB for i in range(40)], step_s=5)
    assert growths[:36] == [None] * 36 and growths[36:] == [720 * MB] * 4
    # Samples older than an hour are dropped: 5 minutes apart, 13 span the hour.
    assert len(_trend([i * MB for i in range(30)], step_s=300)["points"]) == 13


@pytest.mark.parametrize("step_s", [5, 60, 300])
def test_growth_follows_a_slot_that_starts_growing_after_an_idle_spell(step_s):
    """Flat for an hour (an idle server's few bytes), then 700 MiB/h, sampled every 5 s, a
    minute or 5 minutes (the default), each round a little late: the growth is told within
    3 minutes (3 samples at the default), where a fit over the hour would still be a few
    kB/h, and from a minute (or a sample) later it is within 10 % of the truth."""
    per_sample = 700 * MB * step_s / 3600
    flat_count = 3600 // step_s
    flat = [1000 + i * 40 for i in range(flat_count)]
    steep = [flat[-1] + per_sample * k for k in range(1, 3600 // step_s)]
    growths = _growths(flat + steep, step_s, jitter_s=0.003)[flat_count:]
    told = next(index for index, growth in enumerate(growths) if (growth or 0) > 350 * MB)
    assert told * step_s <= max(180, 3 * step_s)
    settled = told + max(1, 60 // step_s)  # a minute later, or the next sample
    for growth in growths[settled:]:
        assert growth is not None and abs(growth - 700 * MB) <= 0.1 * 700 * MB
    hour = trends.fit(_trend(flat + steep[: told + 1], step_s=step_s)["points"], 0)
    assert hour is None or hour.growth * 3600 < 350 * MB  # the hour alone would be far behind


@pytest.mark.parametrize("inserts", [1, 2])
def test_a_few_batch_inserts_are_not_a_trend(inserts):
    """An hour of an idle server at 5 s, then one or two 11 MB inserts 30 s apart,
    ten minutes more: no growth faster than the idle bytes is told at any sample."""
    idle = [1000 + i * 7 for i in range(720)]
    after = [idle[-1] + 11 * MB * min(inserts, 1 + i // 6) + i * 7 for i in range(1, 121)]
    growths = _growths(idle + after, step_s=5)
    assert max(g or 0 for g in growths) < 0.01 * MB


def test_bursts_every_few_minutes_grow_at_their_average():
    """10 MB every 5 minutes, sampled every minute: a slot filled by a batch job grows 120
    MB/h, and the fit says so though most pairs of samples in a burst's plateau are flat."""
    values, total = [], 0
    for minute in range(120):
        total += 10 * MB if minute % 5 == 0 else 0
        values.append(total)
    growths = _growths(values, step_s=60)
    # Never faster than the truth, at any sample: a burst alone is not a trend.
    assert all(growth is None or growth <= 120 * MB for growth in growths)
    for growth in growths[20:]:
        assert growth is not None and abs(growth - 120 * MB) <= 0.05 * 120 * MB


def test_points_are_kept_densest_in_the_last_minutes():
    """An hour at 6 s: at most MAX_POINTS are kept, the hour still covered, and more of them
    in the last five minutes than in any five minutes before (for the short window's fit)."""
    trend = _trend([i * 1000 for i in range(600)], step_s=6)
    times = [point[0] for point in trend["points"]]
    assert len(times) == trends.MAX_POINTS
    now = NOW.timestamp()
    assert now - times[0] >= 3500
    recent = sum(1 for t in times if now - t <= 300)
    earliest = sum(1 for t in times if now - t > 3300)
    assert recent >= 10 and recent > 3 * earliest
    assert trend["growth"] == 1000 / 6 * 3600


def _stored(growth: float, slot: FakeSlot, at: datetime = NOW) -> dict:
    """A trend as the round stores it: the fit and the slot's figures at its sample."""
    trend = trends.update(None, at, slot, None)
    return {**trend, "growth": growth}


def test_forecast_words_and_severity():
    """Lost in under an hour is critical; within the setting, a warning; in words."""
    slot = FakeSlot(retained_bytes=100 * MB, safe_wal_size=30 * MB)
    trend = _stored(60 * MB, slot)
    forecast = trends.forecast(trend, 10 * 1024 * MB)
    assert forecast.eta_lost == NOW + timedelta(minutes=30)
    facts = rules.SlotFacts(slot, None, "extended", trend, forecast, 1, "db:5432", 7, "shop")
    [finding] = rules.slot_findings(facts, settings(forecast_hours=6), {}, NOW)
    assert finding.severity == "critical"
    assert finding.message == "slot `orders` on db:5432 is lost in about 30 min at 60 MB/h"
    slot.safe_wal_size = 180 * MB
    trend = _stored(60 * MB, slot)
    forecast = trends.forecast(trend, 10 * 1024 * MB)
    facts = rules.SlotFacts(slot, None, "extended", trend, forecast, 1, "db:5432", 7, "shop")
    [finding] = rules.slot_findings(facts, settings(forecast_hours=6), {}, NOW)
    assert (finding.severity, finding.value) == ("warning", 3.0)
    assert "is lost in about 3 h at 60 MB/h" in finding.message
    assert rules.slot_findings(facts, settings(forecast_hours=2), {}, NOW) == []
    # Not growing: no forecast at all.
    assert trends.forecast({**trend, "growth": -5.0}, 10 * MB) == trends.NO_FORECAST


def test_a_slot_growing_a_few_bytes_an_hour_is_not_lost_within_a_year():
    """100 B/h to a 10 GB threshold is ~12,000 years away: no ETA and no OverflowError, and
    the page says it is not within a year rather than "about 12,000 years"."""
    from rosetta_web.alerts.display import forecast_words

    slot = FakeSlot(retained_bytes=MB, safe_wal_size=10 * 1024 * MB)
    forecast = trends.forecast(_stored(100.0, slot), 20 * 1024 * MB)
    assert (forecast.growth_bytes_per_hour, forecast.eta_critical, forecast.eta_lost) == (
        100.0,
        None,
        None,
    )
    assert forecast.beyond == "lost"
    words = forecast_words("orders", forecast, 20 * 1024 * MB, NOW)
    assert words is not None and words.rest == "grows 100 bytes/h: is not lost within a year"


def test_durations_past_a_few_days_read_in_days_months_and_years():
    """What an operator reads: "about 3 years", not "1276 d 20 h"."""
    from rosetta_web.formatting import duration_words

    day = 86400
    assert duration_words(42) == "42 s"
    assert duration_words(3 * 3600 + 600) == "3 h 10 min"
    assert duration_words(2 * day + 4 * 3600) == "2 d 4 h"
    assert duration_words(23 * day) == "about 23 days"
    assert duration_words(150 * day) == "about 5 months"
    assert duration_words(1276 * day + 20 * 3600) == "about 3 years"
    assert duration_words(400 * day) == "about 1 year"


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


# Pipelines


def pipeline(**fields: object) -> rules.PipelineFacts:
    """A START pipeline `orders-to-sf` of source 7 `shop`, streaming, owned, caught up."""
    values: dict = {
        "pipeline_id": 3,
        "name": "orders-to-sf",
        "wanted": "START",
        "state": "streaming",
        "reason": None,
        "since": NOW - timedelta(hours=1),
        "owned": True,
        "lag_seconds": 0.0,
        "lag_bytes": 0,
        "source_id": 7,
        "source_name": "shop",
        **fields,
    }
    return rules.PipelineFacts(**values)


def test_a_failed_pipeline_is_critical_at_once_and_retrying_only_after_its_minutes():
    """Failed fires at once; retrying only once it has lasted pipeline_failed_minutes, and
    then holds while the pipeline goes between retrying and failed; paused or off, never."""
    on = settings(pipeline_failed_minutes=15)
    key = rules.pipeline_key("pipeline_failed", 3)
    failed = pipeline(state="failed", reason="Snowflake refused", since=NOW - timedelta(minutes=2))
    [finding] = rules.pipeline_findings(failed, on, {}, NOW)
    assert (finding.rule, finding.key, finding.severity) == ("pipeline_failed", key, "critical")
    assert key == "pipeline_failed:pipeline:3" and rules.pipeline_of(key) == 3
    assert (finding.source_id, finding.source_name, finding.slot_name) == (7, "shop", None)
    assert finding.message == "pipeline `orders-to-sf` failed 2 min ago: Snowflake refused"
    assert (finding.value, finding.threshold) == (2.0, None)

    retrying = pipeline(
        state="retrying", reason="Snowflake: 503", since=NOW - timedelta(minutes=14)
    )
    assert rules.pipeline_findings(retrying, on, {}, NOW) == []
    # Back to retrying after failing: its time starts afresh, but a firing alert holds.
    assert rules.pipeline_findings(retrying, on, {key: "critical"}, NOW)[0].key == key
    late = pipeline(state="retrying", reason="Snowflake: 503", since=NOW - timedelta(minutes=16))
    [finding] = rules.pipeline_findings(late, on, {}, NOW)
    assert finding.message == (
        "pipeline `orders-to-sf` has been retrying for 16 min (critical at 15 min): Snowflake: 503"
    )
    assert (finding.value, finding.threshold) == (16.0, 15)
    assert rules.pipeline_findings(pipeline(state="failed", wanted="PAUSE"), on, {}, NOW) == []
    assert rules.pipeline_findings(failed, settings(), {}, NOW) == []


def test_pipeline_lag_warns_escalates_and_holds_until_ten_percent_below():
    """Lag in seconds against the warning and critical thresholds, with the size rules'
    hysteresis; the message says the lag in words and bytes; an unowned pipeline's figure
    (no live engine measures it) fires nothing."""
    on = settings(pipeline_lag_warning_seconds=300, pipeline_lag_critical_seconds=1800)
    key = rules.pipeline_key("pipeline_lag", 3)

    def lag(seconds: float, firing: dict[str, str] | None = None, **fields: object) -> list:
        facts = pipeline(lag_seconds=seconds, lag_bytes=64 * MB, **fields)
        return rules.pipeline_findings(facts, on, firing or {}, NOW)

    assert lag(299) == []
    [warning] = lag(320)
    assert (warning.rule, warning.key, warning.severity, warning.threshold) == (
        "pipeline_lag",
        key,
        "warning",
        300,
    )
    assert warning.message == (
        "pipeline `orders-to-sf` is 5 min and 64 MB of WAL behind its source (warning at 5 min)"
    )
    assert lag(1800, {key: "warning"})[0].severity == "critical"
    assert lag(1650, {key: "critical"})[0].severity == "critical"  # over 90 % of 1800
    assert lag(1650, {key: "warning"})[0].severity == "warning"
    assert lag(280, {key: "warning"})[0].severity == "warning"  # over 90 % of 300
    assert lag(260, {key: "warning"}) == []
    assert lag(5000, owned=False) == []
    assert rules.pipeline_findings(pipeline(lag_seconds=5000), settings(), {}, NOW) == []


def test_what_resolved_a_pipeline_alert_is_said_in_its_own_words():
    """Streaming again, paused, no longer behind, no engine to measure it, deleted."""
    on = settings(
        pipeline_failed_minutes=15,
        pipeline_lag_warning_seconds=300,
        pipeline_lag_critical_seconds=1800,
    )
    said = rules.resolved_pipeline_message
    assert said("pipeline_failed", "p", pipeline(), on) == "pipeline `p` is streaming"
    assert (
        said("pipeline_failed", "p", pipeline(wanted="PAUSE", state="paused"), on)
        == "pipeline `p`: PAUSE requested, and it is paused"
    )
    assert (
        said("pipeline_lag", "p", pipeline(lag_seconds=90.0), on)
        == "pipeline `p` is 1 min behind its source now (warning at 5 min)"
    )
    stopped = pipeline(state="stopped", reason="No engine process is running.", owned=False)
    assert said("pipeline_lag", "p", stopped, on) == (
        "pipeline `p` is stopped: No engine process is running.; no engine reads it, so its "
        "lag is not measured"
    )
    assert said("pipeline_lag", "p", None, None) == "pipeline `p` was deleted"
    message = "pipeline `orders-to-sf` failed 2 min ago: x"
    assert rules.pipeline_named(message, 3) == "orders-to-sf"
    assert rules.pipeline_of("retained_wal:server:1:slot:orders") is None


def test_slot_messages_name_the_pipeline_that_should_read_the_slot():
    """slot_inactive and consumer_stalled end with the pipeline reading the slot, when one
    does; without one, they say nothing of pipelines."""
    slot = FakeSlot(active=False)
    reader = "pipeline `orders-to-sf` (START) should be reading it"
    common = {
        "wal_status": "reserved",
        "forecast": trends.NO_FORECAST,
        "server_id": 1,
        "server_name": "db:5432",
        "source_id": 7,
        "source_name": "shop",
    }
    idle = rules.SlotFacts(slot, NOW - timedelta(minutes=40), trend={}, reader=reader, **common)
    [inactive] = rules.slot_findings(idle, settings(slot_inactive_minutes=30), {}, NOW)
    assert inactive.rule == "slot_inactive" and inactive.message.endswith(f"; {reader}")
    unread = rules.SlotFacts(slot, NOW - timedelta(minutes=40), trend={}, **common)
    [inactive] = rules.slot_findings(unread, settings(slot_inactive_minutes=30), {}, NOW)
    assert "pipeline" not in inactive.message
    stalled_since = (NOW - timedelta(minutes=40)).timestamp()
    trend = {"flush_since": stalled_since, "wal": 5 * MB, "wal_at_flush": MB}
    stalled = rules.SlotFacts(FakeSlot(active=True), None, trend=trend, reader=reader, **common)
    [finding] = rules.slot_findings(stalled, settings(consumer_stalled_minutes=30), {}, NOW)
    assert finding.rule == "consumer_stalled" and finding.message.endswith(f"; {reader}")
