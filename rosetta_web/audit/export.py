"""The audit log as CSV: the API's columns, newest first, streamed.

On PostgreSQL no record passes through Python: `COPY (SELECT …) TO STDOUT` formats every cell
as the Python writer below does (times as the API gives them, a cell a spreadsheet would run
as a formula behind a quote, `changes` as JSON with sorted keys), and its output is relayed to
the response in chunks through an OS pipe, so a worker's memory stays flat whatever the log's
size. On SQLite, which has no COPY, records are read a batch at a time and written by
Python's csv module. The filters are the log page's, applied by the same statement.

What differs from the Python writer: PostgreSQL ends a line with LF where Python's csv writes
CRLF; and `changes` is the text the `json` column keeps, which is json.dumps(sort_keys=True)'s
for every record stored with its keys in order (`services.in_key_order`), while a record
stored before they were has its fields in the order it was written in. Putting those in order
in SQL (json_each, sorted, joined again) costs about 10 µs a record on the server: six times
the rest of the export for a log of changes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from collections.abc import Iterator
from contextlib import closing
from typing import Any, BinaryIO

from sqlalchemy import JSON, Text, case, cast, func, literal
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import DateTime, String

from ..extensions import db
from ..models import AuditRecord
from ..shapes import shape_of
from .services import AuditFilter, stream

CSV_COLUMNS = tuple(shape_of(AuditRecord).names)  # the API's fields, in its order
# Characters that make a spreadsheet read a cell as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CHUNK_BYTES = 64 * 1024


def csv_chunks(filters: AuditFilter) -> Iterator[bytes]:
    """Yield every record the filters select, newest first, as CSV in chunks."""
    if db.engine.dialect.name == "postgresql":
        return copied(filters)
    return written(filters)


# SQLite: written by Python


def _cell(value: Any) -> Any:
    """A value as a CSV cell that no spreadsheet runs as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _row(record: AuditRecord) -> list[Any]:
    values = record.to_dict()
    values["changes"] = json.dumps(record.changes, sort_keys=True) if record.changes else ""
    return [_cell(values[name]) for name in CSV_COLUMNS]


def written(filters: AuditFilter) -> Iterator[bytes]:
    """Yield the records as CSV written by Python, read a batch at a time (any database)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for record in stream(filters):
        writer.writerow(_row(record))
        if buffer.tell() > CHUNK_BYTES:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


# PostgreSQL: formatted by COPY


def _text_cell(value: ColumnElement[Any]) -> ColumnElement[str]:
    """Text as the writer gives it: an empty text as nothing (COPY writes "" for it, and
    nothing for null), a formula's first character behind a quote."""
    formula = func.left(value, 1).in_(FORMULA_START)
    return case((formula, literal("'", Text) + value), else_=func.nullif(value, "", type_=Text))


def _time_cell(value: ColumnElement[Any]) -> ColumnElement[str]:
    """A time as timeutil.isoformat gives it: UTC, microseconds only when there are some, Z."""
    # One to_char (it costs as much as the rest of a row): a fraction of .000000 can only be
    # the end of it.
    stamp = func.to_char(func.timezone("UTC", value), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    return func.replace(stamp, ".000000Z", "Z", type_=Text)


def _json_cell(value: ColumnElement[Any]) -> ColumnElement[str]:
    """Changes as the writer gives them, nothing for none: the text the `json` column keeps,
    which is json.dumps's of an object whose keys Rosetta stores in order (`in_key_order`)."""
    stored = cast(value, Text)
    return _text_cell(func.nullif(func.nullif(stored, "{}"), "null", type_=Text))


def _safe_choices(column: Any) -> bool:
    """Tell whether a column holds only names of Rosetta's (an action, an outcome), none of
    them empty or starting as a formula: its cells need no escaping."""
    choices = column.info.get("enum")
    return bool(choices) and all(
        choice and not choice.startswith(FORMULA_START) for choice in choices
    )


def _cells() -> list[ColumnElement[Any]]:
    """Each CSV column as SQL that formats it, labelled with its name."""
    cells: list[ColumnElement[Any]] = []
    for name in CSV_COLUMNS:
        column = AuditRecord.__table__.c[name]
        if isinstance(column.type, DateTime):
            cell = _time_cell(column)
        elif isinstance(column.type, JSON):
            cell = _json_cell(column)
        elif isinstance(column.type, String) and not _safe_choices(column):
            cell = _text_cell(column)
        else:  # a number, or one of a few names: COPY writes it as the writer does
            cell = column
        cells.append(cell.label(name))
    return cells


def copy_statement(filters: AuditFilter, cursor: Any) -> str:
    """Return the COPY that writes the filtered records as CSV, its values bound by psycopg2."""
    stmt = filters.statement().with_only_columns(*_cells(), maintain_column_froms=True)
    compiled = stmt.compile(dialect=db.engine.dialect, compile_kwargs={"render_postcompile": True})
    query: bytes = cursor.mogrify(str(compiled), compiled.params)
    return f"COPY ({query.decode()}) TO STDOUT WITH (FORMAT csv, HEADER)"


def _copy(connection: Any, sql: str, pipe: BinaryIO, failed: list[BaseException]) -> None:
    """Run the COPY into the pipe and close it; keep its error, if any, in `failed`."""
    try:
        with pipe, closing(connection.cursor()) as cursor:
            cursor.copy_expert(sql, pipe)
    except Exception as exc:  # a broken pipe among them: the response was closed
        failed.append(exc)


def copied(filters: AuditFilter) -> Iterator[bytes]:
    """Yield the CSV that PostgreSQL's COPY writes, as it comes, from a connection of the pool
    taken for the export alone.

    COPY hands its lines to a thread that writes them into an OS pipe, buffered (C code, no
    Python per line); the response reads the pipe a chunk at a time. A full pipe makes COPY
    wait for the client, so a worker holds no more than the pipe and its buffer.
    """
    connection = db.engine.raw_connection()
    read_end, write_end = os.pipe()
    source = os.fdopen(read_end, "rb", buffering=0)
    pipe = os.fdopen(write_end, "wb", buffering=CHUNK_BYTES)
    failed: list[BaseException] = []
    thread: threading.Thread | None = None
    finished = False
    try:
        with closing(connection.cursor()) as cursor:
            sql = copy_statement(filters, cursor)
        thread = threading.Thread(
            target=_copy, args=(connection, sql, pipe, failed), name="audit-export", daemon=True
        )
        thread.start()
        while chunk := source.read(CHUNK_BYTES):
            yield chunk
        thread.join()
        if failed:
            raise failed[0]
        finished = True
    finally:
        source.close()  # a COPY still writing gets a broken pipe
        if thread is None:
            pipe.close()
        else:
            if not finished and thread.is_alive():
                dbapi: Any = connection.dbapi_connection
                dbapi.cancel()  # the server stops sending, should COPY wait on it
            thread.join()
        if finished:
            connection.close()  # back to the pool, its transaction rolled back
        else:
            connection.invalidate()  # a copy cut short: not a connection to hand out again
