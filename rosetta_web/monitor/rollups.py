"""Hourly and daily roll-ups of the WAL history: a long range is drawn from a few rows.

Per source (`WalRollup`: its WAL figures and its failed samples) and per slot of a server
(`SlotRollup`), each hour and each day in UTC (their edges multiples of 3600 and 86400 s
since 1970) holds the last sample's figures with that sample's own time, each figure's min
and max, and how many samples. A round adds what it stored before it commits (`add_round`),
in statements of at most 1,000 rows; `backfill` builds them from the samples kept (migration
0018 does on upgrade). Charts of ranges longer than a day read them
(`monitor/history.py`), in buckets of 1 to 6 hours made from the hourly rows, or of whole
days from the daily ones; they are kept WAL_ROLLUP_RETENTION_DAYS, longer than the samples.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    CursorResult,
    Float,
    Integer,
    bindparam,
    case,
    cast,
    delete,
    extract,
    func,
    or_,
    select,
    text,
    type_coerce,
)
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from ..batching import batches, upsert
from ..extensions import built_once, db
from ..models import (
    WAL_ROLLUP_FIGURES,
    SampleError,
    Server,
    SlotMetric,
    SlotRollup,
    Source,
    WalMetric,
    WalRollup,
)
from ..timeutil import as_utc, epoch_us_of, utcnow

log = logging.getLogger(__name__)

HOUR = 3600
DAY = 86400
WIDTHS = (HOUR, DAY)
# Ranges longer than this are drawn from the roll-ups.
RAW_SPAN = timedelta(days=1)
# Buckets made of hourly rows, in hours (each divides a day, so their edges fall on days'):
# past 6 hours a bucket reads too many rows for what it draws, and days are read instead.
HOURS = (1, 2, 3, 4, 6)


def bucket_start(moment: datetime, width: int) -> datetime:
    """Return the start of the bucket of `width` seconds that `moment` falls in."""
    return datetime.fromtimestamp(math.floor(as_utc(moment).timestamp() / width) * width, UTC)


def widths_for(span_s: float, max_points: int) -> tuple[int, int]:
    """Choose the narrowest bucket whose count over the span is within `max_points`; return
    its width and the roll-up it is made of (HOUR or DAY)."""
    for hours in HOURS:
        if span_s / (hours * HOUR) <= max_points:
            return hours * HOUR, HOUR
    return max(1, math.ceil(span_s / DAY / max_points)) * DAY, DAY


# ---------------------------------------------------------------------------------------------
# Kept as rounds are stored


def _least(old: Any, new: Any) -> Any:
    """The smaller of two nullable figures, on PostgreSQL and on SQLite."""
    if db.session.get_bind().dialect.name == "postgresql":
        return func.least(old, new)  # ignores NULLs
    return func.min(func.coalesce(old, new), func.coalesce(new, old))


def _greatest(old: Any, new: Any) -> Any:
    """The larger of two nullable figures, on PostgreSQL and on SQLite."""
    if db.session.get_bind().dialect.name == "postgresql":
        return func.greatest(old, new)
    return func.max(func.coalesce(old, new), func.coalesce(new, old))


def _newer(old: Any, new: Any) -> Any:
    """Whether the row being added is the bucket's latest (its figures become the last)."""
    return or_(old.is_(None), new >= old)


def add_round(started_at: datetime, source_ids: Iterable[int], server_ids: Iterable[int]) -> None:
    """Add to the roll-ups what a round stored at `started_at` for these sources (samples and
    failures) and servers (slots), in the round's transaction, before it commits.

    Read back from the rows just stored, by index, a batch of sources or servers at a time. A
    source is stored once at a round's time, so its rows are added as they are; a server's
    slots are stored only when newer than its last stored ones, so a slot row is added only
    when newer than its bucket's last: one stored by a lane at a time a round already stored
    the server at is not counted twice.
    """
    sources = sorted(set(source_ids))
    servers = sorted(set(server_ids))
    samples: list[Any] = []
    failures: list[Any] = []
    slots: list[Any] = []
    for batch in batches(sources):
        samples += db.session.execute(
            select(
                WalMetric.source_id,
                WalMetric.recorded_at,
                *[getattr(WalMetric, name) for name in WAL_ROLLUP_FIGURES],
            ).where(WalMetric.source_id.in_(batch), WalMetric.recorded_at == started_at)
        ).all()
        failures += db.session.execute(
            select(SampleError.source_id, SampleError.recorded_at, SampleError.error).where(
                SampleError.source_id.in_(batch), SampleError.recorded_at == started_at
            )
        ).all()
    for batch in batches(servers):
        slots += db.session.execute(
            select(
                SlotMetric.server_id,
                SlotMetric.slot_name,
                SlotMetric.recorded_at,
                SlotMetric.retained_bytes,
                SlotMetric.database,
                SlotMetric.series_started_at,
            ).where(SlotMetric.server_id.in_(batch), SlotMetric.recorded_at == started_at)
        ).all()
    for width in WIDTHS:
        _add_samples(samples, width)
        _add_failures(failures, width)
        _add_slots(slots, width)


def _add_samples(rows: list[Any], width: int) -> None:
    """Add good samples to their sources' buckets of `width`."""
    values: dict[tuple[int, datetime], dict[str, Any]] = {}
    for source_id, recorded_at, *figures in rows:
        row = {
            "source_id": source_id,
            "bucket_seconds": width,
            "bucket_start": bucket_start(recorded_at, width),
            "last_at": recorded_at,
            "sample_count": 1,
            "error_count": 0,
        }
        for name, figure in zip(WAL_ROLLUP_FIGURES, figures, strict=True):
            row |= {name: figure, f"{name}_min": figure, f"{name}_max": figure}
        key = (source_id, row["bucket_start"])
        values[key] = _merged(values.get(key), row)
    upsert(WalRollup.__table__, list(values.values()), _sample_changes)


def _sample_changes(old: Any, new: Any) -> dict[str, Any]:
    """A sample added to its bucket: counted; its figures the last when it is the latest."""
    newer = _newer(old.last_at, new.last_at)
    changes: dict[str, Any] = {
        "last_at": case((newer, new.last_at), else_=old.last_at),
        "sample_count": old.sample_count + new.sample_count,
    }
    for name in WAL_ROLLUP_FIGURES:
        changes[name] = case((newer, new[name]), else_=old[name])
        changes[f"{name}_min"] = _least(old[f"{name}_min"], new[f"{name}_min"])
        changes[f"{name}_max"] = _greatest(old[f"{name}_max"], new[f"{name}_max"])
    return changes


def _merged(before: dict[str, Any] | None, row: dict[str, Any]) -> dict[str, Any]:
    """Fold a second row for one key into the first (not expected of one round's rows, but
    one statement may not update a row twice)."""
    if before is None:
        return row
    merged = dict(before)
    newer = as_utc(row["last_at"]) >= as_utc(before["last_at"])
    for key, value in row.items():
        if key.endswith("_count"):
            merged[key] = before[key] + value
        elif key.endswith("_min"):
            merged[key] = min((v for v in (before[key], value) if v is not None), default=None)
        elif key.endswith("_max"):
            merged[key] = max((v for v in (before[key], value) if v is not None), default=None)
        elif newer:
            merged[key] = value
    return merged


def _add_failures(rows: list[Any], width: int) -> None:
    """Add failed samples to their sources' buckets of `width`: how many, the last's time and
    error."""
    values: dict[tuple[int, datetime], dict[str, Any]] = {}
    for source_id, recorded_at, error in rows:
        row = {
            "source_id": source_id,
            "bucket_seconds": width,
            "bucket_start": bucket_start(recorded_at, width),
            "sample_count": 0,
            "error_count": 1,
            "last_error_at": recorded_at,
            "last_error": error,
        }
        key = (source_id, row["bucket_start"])
        before = values.get(key)
        if before is not None:
            row["error_count"] += before["error_count"]
            if as_utc(before["last_error_at"]) > as_utc(recorded_at):
                row |= {name: before[name] for name in ("last_error_at", "last_error")}
        values[key] = row
    upsert(WalRollup.__table__, list(values.values()), _failure_changes)


def _failure_changes(old: Any, new: Any) -> dict[str, Any]:
    """A failure added to its bucket: counted; its error the last when it is the latest."""
    newer = _newer(old.last_error_at, new.last_error_at)
    return {
        "error_count": old.error_count + new.error_count,
        "last_error_at": case((newer, new.last_error_at), else_=old.last_error_at),
        "last_error": case((newer, new.last_error), else_=old.last_error),
    }


def _add_slots(rows: list[Any], width: int) -> None:
    """Add slot rows to their slots' buckets of `width`, each only if newer than the bucket's
    last (a server's slots are stored in time order)."""
    values: dict[tuple[int, str, datetime], dict[str, Any]] = {}
    for server_id, slot_name, recorded_at, retained, database, series_started_at in rows:
        row = {
            "server_id": server_id,
            "slot_name": slot_name,
            "bucket_seconds": width,
            "bucket_start": bucket_start(recorded_at, width),
            "last_at": recorded_at,
            "sample_count": 1,
            "retained_bytes": retained,
            "retained_bytes_min": retained,
            "retained_bytes_max": retained,
            "database": database,
            "series_started_at": series_started_at,
        }
        key = (server_id, slot_name, row["bucket_start"])
        values[key] = _merged(values.get(key), row)
    upsert(
        SlotRollup.__table__,
        list(values.values()),
        _slot_changes,
        # Only a newer row: one stored at a time already counted is not counted again.
        where=lambda old, new: old.last_at < new.last_at,
    )


def _slot_changes(old: Any, new: Any) -> dict[str, Any]:
    """A slot row added to its bucket, the latest: its figures the last."""
    return {
        "last_at": new.last_at,
        "sample_count": old.sample_count + new.sample_count,
        "retained_bytes": new.retained_bytes,
        "retained_bytes_min": _least(old.retained_bytes_min, new.retained_bytes_min),
        "retained_bytes_max": _greatest(old.retained_bytes_max, new.retained_bytes_max),
        "database": new.database,
        "series_started_at": new.series_started_at,
    }


def delete_expired(retention_days: int, now: datetime | None = None) -> int:
    """Delete the buckets that ended before the retention, a batch of sources (or servers) per
    transaction; return rows deleted."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    deleted = 0
    for model, owner, ids in (
        (WalRollup, WalRollup.source_id, select(Source.id).order_by(Source.id)),
        (SlotRollup, SlotRollup.server_id, select(Server.id).order_by(Server.id)),
    ):
        for batch in batches(db.session.scalars(ids).all()):
            for width in WIDTHS:
                result = db.session.execute(
                    delete(model).where(
                        owner.in_(batch),
                        model.bucket_seconds == width,
                        model.bucket_start <= cutoff - timedelta(seconds=width),
                    )
                )
                assert isinstance(result, CursorResult)  # a DELETE's result counts rows
                deleted += result.rowcount
            db.session.commit()  # short transactions: no lock held for long
    log.info(
        "WAL roll-up retention: deleted %d buckets older than %d days", deleted, retention_days
    )
    return deleted


# ---------------------------------------------------------------------------------------------
# Built from the samples kept

# Each bucket's start, from a stored time, in SQL: on SQLite a time is text as SQLAlchemy
# writes it ('2026-03-01 12:00:00.000000'), and the start must be written the same way.
_BUCKET = {
    "postgresql": "to_timestamp(floor(date_part('epoch', {column}) / :width) * :width)",
    "sqlite": "strftime('%Y-%m-%d %H:%M:%S', CAST(strftime('%s', substr({column}, 1, 19)) "
    "AS INTEGER) / :width * :width, 'unixepoch') || '.000000'",
}

# The last sample's figures, each read by a lookup through the (owner, recorded_at) index,
# which covers them: one per bucket, no join with the whole table.
_LAST = (
    "(SELECT l.{figure} FROM {table} AS l WHERE l.{owner} = b.{owner} "
    "AND l.recorded_at = b.last_at{also} LIMIT 1)"
)


def _last(figure: str, table: str, owner: str, also: str = "") -> str:
    return _LAST.format(figure=figure, table=table, owner=owner, also=also)


_SAMPLES = f"""
INSERT INTO wal_rollups (source_id, bucket_seconds, bucket_start, last_at, sample_count,
    size_bytes, size_bytes_min, size_bytes_max, retained_bytes, retained_bytes_min,
    retained_bytes_max, wal_rate_bytes_per_second, wal_rate_bytes_per_second_min,
    wal_rate_bytes_per_second_max, error_count)
SELECT b.source_id, :width, b.bucket_start, b.last_at, b.samples,
       {_last("size_bytes", "wal_metrics", "source_id")}, b.size_min, b.size_max,
       {_last("retained_bytes", "wal_metrics", "source_id")}, b.retained_min, b.retained_max,
       {_last("wal_rate_bytes_per_second", "wal_metrics", "source_id")}, b.rate_min, b.rate_max,
       0
FROM (SELECT source_id, {{bucket}} AS bucket_start, max(recorded_at) AS last_at,
             count(*) AS samples, min(size_bytes) AS size_min, max(size_bytes) AS size_max,
             min(retained_bytes) AS retained_min, max(retained_bytes) AS retained_max,
             min(wal_rate_bytes_per_second) AS rate_min, max(wal_rate_bytes_per_second) AS rate_max
      FROM wal_metrics WHERE source_id = :owner
      GROUP BY source_id, {{bucket}}) AS b
"""

_FAILURES = f"""
INSERT INTO wal_rollups (source_id, bucket_seconds, bucket_start, sample_count, error_count,
    last_error_at, last_error)
SELECT b.source_id, :width, b.bucket_start, 0, b.errors, b.last_at,
       {_last("error", "sample_errors", "source_id")}
FROM (SELECT source_id, {{bucket}} AS bucket_start, max(recorded_at) AS last_at,
             count(*) AS errors
      FROM sample_errors WHERE source_id = :owner
      GROUP BY source_id, {{bucket}}) AS b
WHERE true
ON CONFLICT (source_id, bucket_seconds, bucket_start) DO UPDATE
SET error_count = excluded.error_count, last_error_at = excluded.last_error_at,
    last_error = excluded.last_error
"""

_SLOT = " AND l.slot_name = b.slot_name"
_SLOTS = f"""
INSERT INTO slot_rollups (server_id, slot_name, bucket_seconds, bucket_start, last_at,
    sample_count, retained_bytes, retained_bytes_min, retained_bytes_max, database,
    series_started_at)
SELECT b.server_id, b.slot_name, :width, b.bucket_start, b.last_at, b.samples,
       {_last("retained_bytes", "slot_metrics", "server_id", _SLOT)}, b.low, b.high,
       {_last("database", "slot_metrics", "server_id", _SLOT)},
       {_last("series_started_at", "slot_metrics", "server_id", _SLOT)}
FROM (SELECT server_id, slot_name, {{bucket}} AS bucket_start, max(recorded_at) AS last_at,
             count(*) AS samples, min(retained_bytes) AS low, max(retained_bytes) AS high
      FROM slot_metrics WHERE server_id = :owner
      GROUP BY server_id, slot_name, {{bucket}}) AS b
"""


@dataclass(frozen=True)
class Backfilled:
    """What `backfill` built: how many sources and servers, and their roll-up rows."""

    sources: int
    source_rows: int
    servers: int
    slot_rows: int


def backfill(connection: Connection) -> Backfilled:
    """Build the roll-ups from the samples kept, one source (or server) at a time, replacing
    what it had (migration 0018 builds them so on upgrade; tests and benchmarks that store
    samples directly do too).

    All of it is done in the database, a source's (or a server's) samples grouped by one
    statement per width: nothing grows in this process's memory with the history. It runs in
    the connection's transaction (the migration's own), committed by the caller.
    """
    bucket = _BUCKET[connection.dialect.name].format(column="recorded_at")
    totals = {"sources": 0, "source_rows": 0, "servers": 0, "slot_rows": 0}
    for owners, table, column, statements in (
        ("sources", "wal_rollups", "source_id", (_SAMPLES, _FAILURES)),
        ("servers", "slot_rollups", "server_id", (_SLOTS,)),
    ):
        built = [text(sql.format(bucket=bucket)) for sql in statements]
        for owner in connection.execute(text(f"SELECT id FROM {owners} ORDER BY id")).scalars():
            connection.execute(
                text(f"DELETE FROM {table} WHERE {column} = :owner"), {"owner": owner}
            )
            for width in WIDTHS:
                for statement in built:
                    connection.execute(statement, {"owner": owner, "width": width})
            totals[owners] += 1
            totals["source_rows" if owners == "sources" else "slot_rows"] += connection.execute(
                text(f"SELECT count(*) FROM {table} WHERE {column} = :owner"), {"owner": owner}
            ).scalar_one()
    return Backfilled(**totals)


# ---------------------------------------------------------------------------------------------
# Read for charts, in monitor/history.py's row shapes. Every time comes back as whole
# microseconds since 1970 (`epoch_us`), and each statement is built once per shape with its
# values as parameters (`built_once`): a chart reads thousands of rows in a request that
# should take milliseconds.


def epoch_seconds(column: Any) -> ColumnElement[float]:
    """Seconds since 1970 of a timestamp column as a float, on PostgreSQL and on SQLite."""
    if db.session.get_bind().dialect.name == "sqlite":
        # julianday() is a float of days: round off its error so bucket edges stay exact.
        return type_coerce(func.round((func.julianday(column) - 2440587.5) * 86400.0, 3), Float)
    # date_part() gives float8; extract() gives numeric, several times slower to compute with.
    return type_coerce(func.date_part("epoch", column), Float)


def epoch_us(column: Any) -> ColumnElement[int]:
    """Microseconds since 1970 of a timestamp column, exactly, as a whole number.

    Read so, a time costs a fraction of a timestamp's: psycopg2 builds a datetime and its
    time zone for every timestamp it reads; a chart makes strings of the few it shows.
    """
    if db.session.get_bind().dialect.name == "sqlite":
        # Stored as text, '2026-03-01 12:00:00.000000': its whole seconds, then microseconds.
        return type_coerce(
            cast(func.strftime("%s", func.substr(column, 1, 19)), Integer) * 1_000_000
            + cast(func.substr(column, 21, 6), Integer),
            BigInteger,
        )
    return cast(extract("epoch", column) * 1_000_000, BigInteger)  # numeric: exact


def whole(value: Any) -> ColumnElement[int]:
    """Round a non-negative number down (SQLite's CAST truncates; PostgreSQL's rounds)."""
    if db.session.get_bind().dialect.name == "sqlite":
        return cast(value, Integer)
    return cast(func.floor(value), Integer)


def _bucket_of(column: Any) -> ColumnElement[int]:
    """The chart bucket (of `width` seconds, a parameter) a roll-up's start falls in."""
    return whole(epoch_seconds(column) / bindparam("width", type_=Float))


def _chart_range(owner: Any) -> list[Any]:
    """The roll-ups of one owner (a source's, or a server's slots') and width (`base`) that
    make up the chart buckets over [start, end): from the first bucket's start (`first`)."""
    model = owner.class_
    return [
        owner == bindparam("owner"),
        model.bucket_seconds == bindparam("base"),
        model.bucket_start >= bindparam("first"),
        model.bucket_start < bindparam("end"),
    ]


def _range_values(
    owner_id: int, start: datetime, end: datetime, width: int, base: int
) -> dict[str, Any]:
    """The parameters of `_chart_range` and `_bucket_of`, and the range's start."""
    return {
        "owner": owner_id,
        "base": base,
        "first": bucket_start(start, width),
        "start": start,
        "end": end,
        "width": float(width),
    }


def _source_select(fold: bool) -> Any:
    """A source's roll-ups as chart buckets: the last sample's time (`epoch_us`), each WAL
    figure's last, min and max, for the rows whose last sample is at or after the `start`
    parameter.

    Folded (buckets wider than the roll-ups'), the rows of a bucket become one, in SQL: the
    latest row's time and lasts, the least of the mins and the most of the maxes; each bucket
    is kept when its last sample is in range.
    """
    r = WalRollup
    triples = [
        (getattr(r, name), getattr(r, f"{name}_min"), getattr(r, f"{name}_max"))
        for name in WAL_ROLLUP_FIGURES
    ]
    where = [*_chart_range(r.source_id), r.last_at < bindparam("end")]
    start: Any = bindparam("start")
    if not fold:
        figures = [column for triple in triples for column in triple]
        return select(epoch_us(r.last_at), *figures).where(*where, r.last_at >= start)
    bucket = _bucket_of(r.bucket_start)
    # One window for all (the whole bucket, latest first): one pass over the sorted rows.
    every: dict[str, Any] = {
        "partition_by": bucket,
        "order_by": r.last_at.desc(),
        "rows": (None, None),
    }
    figures = []
    for last, low, high in triples:
        figures += [last, func.min(low).over(**every), func.max(high).over(**every)]
    latest = func.row_number().over(**every)
    rows = (
        select(
            epoch_us(r.last_at).label("at_us"),
            *figures,
            r.last_at.label("at"),
            latest.label("latest"),
        )
        .where(*where)
        .subquery()
    )
    return select(*list(rows.c)[:-2]).where(rows.c.latest == 1, rows.c.at >= start)


def _failures_select() -> Any:
    r = WalRollup
    return (
        select(epoch_us(r.last_error_at), r.last_error)
        .where(
            *_chart_range(r.source_id),
            r.last_error_at >= bindparam("start"),
            r.last_error_at < bindparam("end"),
        )
        .order_by(r.last_error_at)
    )


def source_rows(
    source_id: int, start: datetime, end: datetime, width: int, base: int
) -> tuple[list[Any], list[Any]]:
    """Read a source's roll-ups of `base` into chart buckets of `width` over [start, end).

    Return the good samples' rows (last sample's time, then last, min and max of each WAL
    figure) and the failures' (last failure's time, its error three times), each whose time
    falls in the range, times in microseconds since 1970. Buckets wider than the
    roll-ups' are folded in SQL, over one range of the chart index (`ix_wal_rollups_chart`,
    which holds every column read).
    """
    values = _range_values(source_id, start, end, width, base)
    connection = db.session.connection()
    good = connection.execute(built_once(_source_select, width != base), values).all()
    failures = connection.execute(built_once(_failures_select), values)
    # Failures are few: each chart bucket's last (they come in time order).
    width_us = width * 1_000_000
    last_failure = {at // width_us: (at, error, error, error) for at, error in failures}
    return list(good), list(last_failure.values())


def _slot_select(named: bool, fold: bool) -> Any:
    """A server's slots' roll-ups (those named by the `names` parameter, or all) from the first
    chart bucket's start, in history's row shape (`slot_rows`), in the chart index's order.

    Not folded, each row is a chart bucket, kept when its last sample is at or after `start`.
    Folded, `slot_rows` folds them: a window partitioned by slot name sorts text, which costs
    several times what reading the rows does.
    """
    r = SlotRollup
    where = [*_chart_range(r.server_id), r.last_at < bindparam("end")]
    if named:
        where.append(r.slot_name.in_(bindparam("names", expanding=True)))
    if not fold:
        where.append(r.last_at >= bindparam("start"))
    return (
        select(
            epoch_us(r.last_at),
            r.slot_name,
            r.database,
            epoch_us(r.series_started_at),
            r.retained_bytes,
            r.retained_bytes_min,
            r.retained_bytes_max,
        )
        .where(*where)
        .order_by(r.slot_name, r.bucket_start)  # the chart index's order: no sort
    )


def slot_rows(
    server_id: int,
    start: datetime,
    end: datetime,
    width: int,
    base: int,
    names: list[str] | None = None,
) -> Sequence[Any]:
    """Read a server's slots' roll-ups (those named, or all) into chart buckets: rows of
    (last sample's time, slot, database, series start, last, min, max), times in
    microseconds since 1970, each whose time falls in the range, a slot's in time order.

    A slot's rows of a bucket (several, when buckets are wider than the roll-ups') become
    one: the latest row's time, last, database and series, the least of the mins and the most
    of the maxes; each bucket is kept when its last sample is in range.
    """
    values = _range_values(server_id, start, end, width, base)
    if names is not None:
        values["names"] = names
    fold = width != base
    statement = built_once(_slot_select, names is not None, fold)
    found = db.session.connection().execute(statement, values).all()
    if not fold:  # a row a bucket
        return found
    # A slot's rows of a bucket (its last sample's time falls in it) come one after another,
    # the latest last.
    width_us = width * 1_000_000
    folded: list[list[Any]] = []
    row: list[Any] = [None, None]
    key = None
    for at, name, database, series, last, low, high in found:
        if at // width_us != key or name != row[1]:
            key = at // width_us
            row = [at, name, database, series, last, low, high]
            folded.append(row)
            continue
        row[0], row[2], row[3], row[4] = at, database, series, last
        if low is not None and (row[5] is None or low < row[5]):
            row[5] = low
        if high is not None and (row[6] is None or high > row[6]):
            row[6] = high
    since = epoch_us_of(start)
    return [tuple(row) for row in folded if row[0] >= since]


def _peaks_select() -> Any:
    r = SlotRollup
    return (
        select(r.slot_name, func.max(r.database), func.max(r.retained_bytes_max))
        .where(*_chart_range(r.server_id))
        .group_by(r.slot_name)
    )


def slot_peaks(
    server_id: int, start: datetime, end: datetime, width: int, base: int
) -> list[tuple[str, str | None, Any]]:
    """Each slot of the server with roll-ups in the range: its name, database and the most
    WAL it retained."""
    values = _range_values(server_id, start, end, width, base)
    return [
        (name, database, peak)
        for name, database, peak in db.session.connection().execute(
            built_once(_peaks_select), values
        )
    ]


def _folded(rows: list[Any]) -> list[tuple[Any, ...]]:
    """Fold rows of (chart bucket, time, last, min, max) into one per chart bucket: the latest
    row's time and last, the least of the mins and the most of the maxes."""
    found: dict[Any, tuple[Any, ...]] = {}
    for key, at, last, low, high in rows:
        before = found.get(key)
        if before is not None:
            if at < before[1]:
                at, last = before[1], before[2]
            low = min(low, before[3])
            high = (
                before[4] if high is None else high if before[4] is None else max(high, before[4])
            )
        found[key] = (key, at, last, low, high)
    return list(found.values())


def _others_select() -> Any:
    r = SlotRollup
    within = r.bucket_start
    every = (
        select(
            r.slot_name,
            r.bucket_start,
            r.last_at,
            r.sample_count,
            r.retained_bytes,
            r.retained_bytes_min,
            r.retained_bytes_max,
            # Of every slot of the server: its last sample in the bucket, and how many.
            func.max(r.last_at).over(partition_by=within).label("server_last_at"),
            func.max(r.sample_count).over(partition_by=within).label("server_samples"),
        )
        .where(*_chart_range(r.server_id), r.last_at < bindparam("end"))
        .subquery()
    )
    c = every.c
    return (
        select(
            _bucket_of(c.bucket_start),
            epoch_us(func.max(c.server_last_at)),
            func.coalesce(
                func.max(case((c.last_at == c.server_last_at, c.retained_bytes), else_=None)), 0
            ),
            func.coalesce(
                func.max(case((c.sample_count == c.server_samples, c.retained_bytes_min))), 0
            ),
            func.max(c.retained_bytes_max),
        )
        .where(c.slot_name.not_in(bindparam("shown", expanding=True)))
        .group_by(c.bucket_start)
    )


def other_slots(
    server_id: int, start: datetime, end: datetime, width: int, base: int, shown: list[str]
) -> dict[int, tuple[int, Any, Any, Any]]:
    """The most WAL one of the slots not shown retains, per chart bucket: (time of the
    server's last sample in it, in microseconds since 1970, the most one of them retained
    then, a least and a most of it).

    Their retained WAL overlaps (all of it ends at the server's position), so the line is the
    largest, not a sum. The band's top is exact (the largest of their largest); its bottom is
    a bound the figure never went below: the largest of the least of the slots present in
    every sample of the bucket (roll-ups keep no per-sample largest).
    """
    values = {**_range_values(server_id, start, end, width, base), "shown": shown}
    rows: list[Any] = list(db.session.connection().execute(built_once(_others_select), values))
    if width != base:
        rows = _folded(rows)
    since = epoch_us_of(start)
    return {key: (at, last, low, high) for key, at, last, low, high in rows if at >= since}
