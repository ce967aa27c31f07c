"""Hourly and daily roll-ups of the WAL history: kept as rounds are stored, built from the
samples kept, read by charts of long ranges, kept longer than the samples.

Every roll-up is compared with what SQL computes over the raw samples: per bucket, how many,
the last one's time and figures, each figure's min and max.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from rosetta_web.extensions import db as _db
from rosetta_web.models import SampleError, SlotMetric, SlotRollup, Source, WalMetric, WalRollup
from rosetta_web.monitor import history, rollups
from rosetta_web.monitor.rounds import sample_sources
from rosetta_web.monitor.scheduler import MonitorScheduler
from rosetta_web.sources.services import server_of
from rosetta_web.timeutil import isoformat, utcnow

from .factories import add_source, new_server, new_state
from .pg import emit_wal, free_port

HOUR, DAY = rollups.HOUR, rollups.DAY
WAL = ("size_bytes", "retained_bytes", "wal_rate_bytes_per_second")


def _buckets(table: str, owner: str, figures: tuple[str, ...], width: int) -> dict:
    """What SQL computes over the raw rows of `table`, per owner and bucket of `width` seconds:
    {(owner..., bucket index): (count, last time, [(last, min, max) per figure])}."""
    if _db.session.get_bind().dialect.name == "sqlite":
        bucket = f"CAST(strftime('%s', recorded_at) AS INTEGER) / {width}"
    else:
        bucket = f"floor(extract(epoch FROM recorded_at) / {width})::bigint"
    picks = ", ".join(
        f"max(CASE WHEN newest = 1 THEN {f} END), min({f}), max({f})" for f in figures
    )
    sql = f"""
        WITH ranked AS (
            SELECT *, {bucket} AS bucket,
                   row_number() OVER (PARTITION BY {owner}, {bucket}
                                      ORDER BY recorded_at DESC, id DESC) AS newest
            FROM {table})
        SELECT {owner}, bucket, count(*), max(recorded_at), {picks}
        FROM ranked GROUP BY {owner}, bucket"""
    keys = len(owner.split(","))
    found = {}
    for row in _db.session.execute(_db.text(sql)):
        figures_at = row[keys + 3 :]
        found[tuple(row[: keys + 1])] = (
            row[keys + 1],
            _moment(row[keys + 2]),
            [tuple(figures_at[i : i + 3]) for i in range(0, len(figures_at), 3)],
        )
    return found


def _moment(value) -> datetime:
    """A time from SQL (SQLite's is text) as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _index(moment: datetime, width: int) -> int:
    return int(_moment(moment).timestamp() // width)


def _rolled_up(width: int) -> tuple[dict, dict]:
    """The stored roll-ups of `width`, keyed as `_buckets` keys its answers: the sources'
    samples and failures, and the slots'."""
    samples, failures, slots = {}, {}, {}
    for row in _db.session.scalars(_db.select(WalRollup).where(WalRollup.bucket_seconds == width)):
        key = (row.source_id, _index(row.bucket_start, width))
        if row.sample_count:
            samples[key] = (
                row.sample_count,
                _moment(row.last_at),
                [
                    (getattr(row, f), getattr(row, f"{f}_min"), getattr(row, f"{f}_max"))
                    for f in WAL
                ],
            )
        if row.error_count:
            failures[key] = (row.error_count, _moment(row.last_error_at), row.last_error)
    for row in _db.session.scalars(
        _db.select(SlotRollup).where(SlotRollup.bucket_seconds == width)
    ):
        key = (row.server_id, row.slot_name, _index(row.bucket_start, width))
        slots[key] = (
            row.sample_count,
            _moment(row.last_at),
            [(row.retained_bytes, row.retained_bytes_min, row.retained_bytes_max)],
        )
    return (samples, failures), slots


def _assert_rollups_match_sql() -> None:
    """Every stored roll-up, hourly and daily, equals what SQL computes over the raw rows."""
    for width in rollups.WIDTHS:
        (samples, failures), slots = _rolled_up(width)
        assert samples == _buckets("wal_metrics", "source_id", WAL, width)
        failed = _buckets("sample_errors", "source_id", ("error",), width)
        # A failure's figure is its error: the last one's.
        assert failures == {key: (n, at, errors[0][0]) for key, (n, at, errors) in failed.items()}
        assert slots == _buckets("slot_metrics", "server_id, slot_name", ("retained_bytes",), width)


@pytest.mark.parametrize("backend", ["app", "sqlite_app"])
def test_rollups_follow_rounds_as_sql_computes_them(request, backend, source_db):
    """Real rounds over two hours and two days (a source sampled, its slot retaining more WAL
    each time; a source refusing connections) keep the roll-ups equal to SQL over the raw rows,
    in the rounds' own transactions."""
    app = request.getfixturevalue(backend)
    app.config["WAL_MONITOR_MAX_RETRIES"] = 0  # a refused connection fails at once
    add_source(app, "shop", source_db["port"])
    add_source(app, "closed", free_port())
    day = rollups.bucket_start(utcnow() - timedelta(days=3), DAY)
    # Two samples in one hour, one in the next, one the next day.
    moments = [day + timedelta(hours=22, minutes=m) for m in (10, 40, 70, 130)]
    with app.app_context():
        for moment in moments:
            emit_wal(source_db["cluster"], 1)
            sample_sources(now=moment)
            _assert_rollups_match_sql()
        (samples, failures), slots = _rolled_up(HOUR)
        shop = _db.session.scalar(_db.select(Source.id).where(Source.name == "shop"))
        assert [samples[key][0] for key in sorted(samples) if key[0] == shop] == [2, 1, 1]
        assert sorted(count for count, _, _ in failures.values()) == [1, 1, 2]
        (days, _), _ = _rolled_up(DAY)
        assert [count for key, (count, _, _) in sorted(days.items()) if key[0] == shop] == [3, 1]
        ours = [value for key, value in slots.items() if key[1] == "rosetta_slot"]
        count, last_at, [(last, low, high)] = sorted(ours, key=lambda v: v[1])[0]
        assert count == 2 and last_at == moments[1] and low < high == last  # it grew


def _seed_history(
    app, days: int = 40, gap_hours: tuple[int, int] = (300, 350), step_minutes: int = 17
) -> int:
    """Store `days` of samples about every `step_minutes` up to now, straight into the tables
    (as a long-running installation has them): a server with two slots, a failure now and
    then, no WAL directory size at first, and no sample at all between `gap_hours` ago."""
    source_id = add_source(app, "long", 5432)
    now = utcnow()
    with app.app_context():
        server = new_server("db:5432", "7000000000000000042", last_sampled_at=now)
        _db.session.add(server)
        _db.session.flush()
        _db.session.add(new_state(source_id, server_id=server.id, last_sampled_at=now))
        samples, slots, failures = [], [], []
        moment, i = now - timedelta(days=days), 0
        while moment < now:
            i += 1
            moment += timedelta(minutes=step_minutes, seconds=(i * 7919) % 240 - 120)
            ago = (now - moment).total_seconds() / HOUR
            if moment >= now or gap_hours[0] < ago < gap_hours[1]:
                continue
            if i % 97 == 0:
                failures.append({"source_id": source_id, "recorded_at": moment, "error": f"#{i}"})
                continue
            retained = 50_000_000 + (i * 104_729) % 9_973 * 1000
            samples.append(
                {
                    "source_id": source_id,
                    "recorded_at": moment,
                    "current_lsn": "0/0",
                    "wal_position_bytes": i * 1_000_000,
                    "size_bytes": None if i < 50 else 1_000_000_000 + (i * 7919) % 10_007 * 1000,
                    "retained_bytes": retained,
                    "slot_count": 2,
                    "inactive_slot_count": 1,
                    "wal_rate_bytes_per_second": (i % 13) * 1000.5,
                }
            )
            for slot, database, figure in (("orders", "d", retained), ("audit", "other", i)):
                slots.append(
                    {
                        "server_id": server.id,
                        "recorded_at": moment,
                        "slot_name": slot,
                        "slot_type": "logical",
                        "database": database,
                        "active": False,
                        "retained_bytes": figure,
                    }
                )
        _db.session.execute(insert(WalMetric), samples)
        _db.session.execute(insert(SlotMetric), slots)
        _db.session.execute(insert(SampleError), failures)
        _db.session.commit()
        with _db.engine.begin() as connection:
            built = rollups.backfill(connection)
        assert (built.sources, built.servers) == (1, 1)
    return source_id


def _chart(app, source_id: int, start: str, max_points: int, end: str | None = None) -> dict:
    with app.app_context():
        source = _db.session.get(Source, source_id)
        return history.history(source, server_of(source), history.window(start, end), max_points)


@pytest.mark.parametrize("backend", ["app", "sqlite_app"])
def test_long_ranges_are_drawn_from_rollups_at_their_samples_own_times(request, backend):
    """Built from 40 days of samples, the roll-ups equal SQL over them; with the samples gone,
    30 days (hourly), all history (4-hour buckets of hourly rows) and a year (days) are drawn
    from the roll-ups alone: each point the bucket's last sample at its own time with its
    figures, the band the bucket's min and max, a failed sample a point with its error, and
    the day and more without a sample a gap (no point in its buckets)."""
    app = request.getfixturevalue(backend)
    source_id = _seed_history(app)
    with app.app_context():
        _assert_rollups_match_sql()
        expected = {
            width: (
                _buckets("wal_metrics", "source_id", WAL, width),
                _buckets("slot_metrics", "server_id, slot_name", ("retained_bytes",), width),
                _buckets("sample_errors", "source_id", ("error",), width),
            )
            for width in (HOUR, 4 * HOUR, DAY)
        }
        oldest = _moment(_db.session.scalar(_db.select(_db.func.min(WalMetric.recorded_at))))
        for model in (WalMetric, SlotMetric, SampleError):
            _db.session.execute(_db.delete(model))
        _db.session.commit()

    for start, max_points, width in (
        ("30d", 1000, HOUR),
        (isoformat(oldest), 300, 4 * HOUR),
        ("365d", 1000, DAY),
    ):
        chart = _chart(app, source_id, start, max_points)
        assert chart["bucket_seconds"] == width, start
        samples, slots, failures = expected[width]
        begins = datetime.fromisoformat(chart["start"])
        # Each bucket whose last sample falls in the range, at that sample's time.
        wanted = sorted(
            (last_at, figures)
            for (_, _), (_, last_at, figures) in samples.items()
            if last_at >= begins
        )
        failed = sorted(
            (last_at, figures[0][0])
            for (_, _), (_, last_at, figures) in failures.items()
            if last_at >= begins
        )
        times = [datetime.fromisoformat(t) for t in chart["times"]]
        assert sorted({at for at, _ in wanted} | {at for at, _ in failed}) == times
        for at, figures in wanted:
            i = times.index(at)
            for name, (last, low, high) in zip(WAL, figures, strict=True):
                drawn = chart["series"][name]
                assert (drawn["last"][i], drawn["min"][i], drawn["max"][i]) == (last, low, high)
        for at, error in failed:
            assert chart["errors"][times.index(at)] == error
        band = chart["series"]["retained_bytes"]
        bands = zip(band["min"], band["max"], strict=True)
        assert any(low < high for low, high in bands if low is not None)
        for (_, slot, _), (_, last_at, [(last, low, high)]) in slots.items():
            if last_at >= begins:
                line = chart["slots"][slot]
                i = times.index(last_at)
                assert (line["last"][i], line["min"][i], line["max"][i]) == (last, low, high)
        if width < DAY:
            # The 50 hours without a sample: buckets with no point, a gap the chart keeps.
            now = utcnow()
            quiet = (now - timedelta(hours=349), now - timedelta(hours=301))
            assert [t for t in times if quiet[0] < t < quiet[1]] == []
            before = max(t for t in times if t < now - timedelta(hours=349))
            after = min(t for t in times if t > now - timedelta(hours=301))
            assert _index(after, width) - _index(before, width) > 1


@pytest.mark.parametrize("backend", ["app", "sqlite_app"])
def test_retention_deletes_samples_and_keeps_rollups_longer(request, backend):
    """The daily retention job deletes samples older than WAL_METRICS_RETENTION_DAYS and
    roll-ups older than WAL_ROLLUP_RETENTION_DAYS: a year back stays drawn."""
    app = request.getfixturevalue(backend)
    app.config.update(WAL_METRICS_RETENTION_DAYS=30, WAL_ROLLUP_RETENTION_DAYS=400)
    source_id = _seed_history(app, days=420, gap_hours=(0, 0), step_minutes=120)
    before = utcnow()
    monitor = MonitorScheduler(app)
    try:
        monitor.expire()
    finally:
        monitor.leadership.release()
    now = utcnow()
    with app.app_context():
        raw = _moment(_db.session.scalar(_db.select(_db.func.min(WalMetric.recorded_at))))
        assert before - timedelta(days=30) <= raw < now - timedelta(days=29)
        for model in (WalRollup, SlotRollup):
            for width in rollups.WIDTHS:
                first = _db.session.scalar(
                    _db.select(_db.func.min(model.bucket_start)).where(
                        model.bucket_seconds == width
                    )
                )
                # The oldest bucket kept ends within the retention (a sample every 2 hours:
                # an hour may have none), the ones before it went.
                ends = _moment(first) + timedelta(seconds=width)
                cutoff = timedelta(days=400)
                slack = timedelta(seconds=max(width, 3 * HOUR))
                assert before - cutoff < ends <= now - cutoff + slack, (model, width)
    year = _chart(app, source_id, "365d", 1000)
    assert year["bucket_seconds"] == DAY
    assert len(year["times"]) >= 364
    assert datetime.fromisoformat(year["times"][0]) < now - timedelta(days=364)
    slot = year["slots"]["orders"]
    drawn = [last for last, error in zip(slot["last"], year["errors"], strict=True) if not error]
    assert len(drawn) >= 364 and None not in drawn  # a null only at a failure's own point
    assert slot["min"][0] <= slot["last"][0] <= slot["max"][0]


@pytest.mark.parametrize("backend", ["app", "sqlite_app"])
def test_a_server_with_many_slots_draws_the_rest_from_rollups(request, backend):
    """Past 10 slots, a week from the roll-ups draws the source's own slot and the 10 others
    that retained the most; the rest are one line whose point is the most one of them retained
    at the bucket's last sample (as SQL's max() of the raw rows then), whose band's top is the
    most any of them retained in the bucket and whose bottom is no more than the least."""
    app = request.getfixturevalue(backend)
    source_id = add_source(app, "many", 5432)
    now = utcnow().replace(microsecond=0)
    moments = [now - timedelta(minutes=30 * k + 7) for k in range(3 * 48)]
    with app.app_context():
        server = new_server("db:5432", "7000000000000000043", last_sampled_at=moments[0])
        _db.session.add(server)
        _db.session.flush()
        _db.session.add(new_state(source_id, server_id=server.id, last_sampled_at=moments[0]))
        samples, slots = [], []
        for k, moment in enumerate(moments):
            samples.append(
                {
                    "source_id": source_id,
                    "recorded_at": moment,
                    "current_lsn": "0/0",
                    "wal_position_bytes": 0,
                    "slot_count": 14,
                    "inactive_slot_count": 0,
                    "retained_bytes": 1,
                }
            )
            for n in range(14):
                if n == 2 and k % 5 == 0:
                    continue  # missing from some samples: not in the band's bottom
                slots.append(
                    {
                        "server_id": server.id,
                        "recorded_at": moment,
                        "slot_name": f"slot_{n:02d}",
                        "slot_type": "logical",
                        "database": "shop" if n == 0 else "other",
                        "active": True,
                        # slot_13 retains the most, slot_01 the least; each wanders.
                        "retained_bytes": n * 1_000_000 + (k * 7919 * (n + 1)) % 500_000,
                    }
                )
        _db.session.execute(insert(WalMetric), samples)
        _db.session.execute(insert(SlotMetric), slots)
        _db.session.commit()
        with _db.engine.begin() as connection:
            rollups.backfill(connection)
        rest = ("slot_01", "slot_02", "slot_03")  # the 3 retaining least, not the own slot_00
        # Per sample, the most one of the rest retained, straight from the raw rows.
        totals = {
            _moment(at): total
            for at, total in _db.session.execute(
                _db.select(SlotMetric.recorded_at, _db.func.max(SlotMetric.retained_bytes))
                .where(SlotMetric.slot_name.in_(rest))
                .group_by(SlotMetric.recorded_at)
            )
        }
    for max_points, width in ((1000, HOUR), (50, 4 * HOUR)):  # hours, and 4 hours folded
        chart = _chart(app, source_id, "7d", max_points)
        assert chart["bucket_seconds"] == width
        assert sorted(chart["slots"]) == [f"slot_{n:02d}" for n in (0, *range(4, 14))]
        assert chart["slots"]["slot_00"]["own"] is True
        others = chart["other_slots"]
        assert others["count"] == 3
        buckets: dict[int, list] = {}
        for at, total in totals.items():
            buckets.setdefault(_index(at, width), []).append((at, total))
        for i, time in enumerate(chart["times"]):
            within = sorted(buckets[_index(datetime.fromisoformat(time), width)])
            assert within[-1][0] == datetime.fromisoformat(time)  # at the bucket's last sample
            assert others["last"][i] == within[-1][1]
            most = [total for _, total in within]
            assert others["min"][i] <= min(most) and max(most) == others["max"][i]
        assert len(chart["times"]) == len(buckets) >= 3 * 24 * HOUR // width - 1
