"""Statements whose size does not grow with the number of sources: an IN list holds at most
BATCH_ROWS values, and what needs more is asked in several statements.

A statement with one parameter per source fails at 10,000 sources: PostgreSQL's parser runs
out of stack on a long row-value IN list (`stack depth limit exceeded`), and SQLite refuses
more than 32,766 parameters. As many rows as the ORM inserts in one statement
(`insertmanyvalues`, 1,000 rows) is known to be safe on both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

BATCH_ROWS = 1000

T = TypeVar("T")


def batches(values: Sequence[T], size: int = BATCH_ROWS) -> Iterator[Sequence[T]]:
    """Yield the values, in their order, in slices of at most `size`."""
    for start in range(0, len(values), size):
        yield values[start : start + size]
