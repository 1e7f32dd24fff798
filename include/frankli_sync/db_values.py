"""Values on their way to and from the databases: IN-lists in chunks, datetimes in UTC."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY

T = TypeVar("T")

IN_LIST_SIZE = 2000  # bound parameters per IN (…): well under SQLite's and psycopg's limits


def chunked(items: Sequence[T], size: int = IN_LIST_SIZE) -> list[list[T]]:
    """`items` in consecutive lists of at most `size`, for one IN (…) each."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def one_of(column: Any, values: Sequence[Any], dialect: str) -> list[Any]:
    """`column IN values` as the conditions of one query each.

    PostgreSQL: a single ``= ANY(array)`` with one bound array, served by the column's index however
    many values (a 1% change at 1,000,000 users looks up ~24,000 ids; lists of 2,000 cost a dozen
    queries, each rendered and parsed with 2,000 parameters). Elsewhere: IN lists of `IN_LIST_SIZE`.
    """
    if not values:
        return []
    if dialect == "postgresql":
        return [column == any_(bindparam(None, list(values), type_=ARRAY(column.type), unique=True))]
    return [column.in_(chunk) for chunk in chunked(values)]


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime: SQLite returns naive values (stored as UTC), PostgreSQL aware ones."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
