"""Statements whose size does not grow with the number of sources: an IN list holds at most
BATCH_ROWS values, and what needs more is asked in several statements; rows are written
BATCH_ROWS a statement (`upsert`).

A statement with one parameter per source fails at 10,000 sources: PostgreSQL's parser runs
out of stack on a long row-value IN list (`stack depth limit exceeded`), and SQLite refuses
more than 32,766 parameters. As many rows as the ORM inserts in one statement
(`insertmanyvalues`, 1,000 rows) is known to be safe on both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import bindparam, cast, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY

from .extensions import db

BATCH_ROWS = 1000

T = TypeVar("T")

Changes = Callable[[Any, Any], dict[str, Any]]


def batches(values: Sequence[T], size: int = BATCH_ROWS) -> Iterator[Sequence[T]]:
    """Yield the values, in their order, in slices of at most `size`."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def upsert(
    table: Any,
    rows: Sequence[dict[str, Any]],
    changes: Changes,
    where: Callable[[Any, Any], Any] | None = None,
) -> None:
    """Insert `rows` (each with the same columns) into `table`, or fold each into the row of
    its key (its primary key) as `changes(old, new)` says (only `where(old, new)` holds, if
    given); BATCH_ROWS rows a statement, in the session's transaction.

    On PostgreSQL one statement takes a batch as one array per column (`unnest`): its size
    does not grow with the rows. On SQLite the statement is run for each row (executemany).
    """
    if not rows:
        return
    columns = list(rows[0])
    keys = [column.name for column in table.primary_key.columns]
    postgres = db.session.get_bind().dialect.name == "postgresql"
    stmt: Any
    if postgres:
        arrays = []
        for name in columns:
            # Typed, so each value is written as its column writes it (a JSON column's
            # serialized), in one dimension (a JSON column's list is one value).
            array = ARRAY(table.c[name].type, dimensions=1)
            arrays.append(func.unnest(cast(bindparam(name, type_=array), array)))
        stmt = postgresql.insert(table).from_select(columns, select(*arrays))
    else:
        stmt = sqlite.insert(table)
    old, new = table.c, stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=keys,
        set_=changes(old, new),
        where=where(old, new) if where is not None else None,
    )
    connection = db.session.connection()
    for batch in batches(rows):
        if postgres:
            connection.execute(stmt, {name: [row[name] for row in batch] for name in columns})
        else:
            connection.execute(stmt, list(batch))
