"""Values on their way to and from the databases: IN-lists in chunks, datetimes in UTC."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypeVar

T = TypeVar("T")

IN_LIST_SIZE = 2000  # bound parameters per IN (…): well under SQLite's and psycopg's limits


def chunked(items: Sequence[T], size: int = IN_LIST_SIZE) -> list[list[T]]:
    """`items` in consecutive lists of at most `size`, for one IN (…) each."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime: SQLite returns naive values (stored as UTC), PostgreSQL aware ones."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
