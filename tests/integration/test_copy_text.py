"""`bulk_insert`'s COPY text (sinks/copy_text.py) loads exactly what psycopg's row-by-row COPY loads.

Hostile text (tabs, newlines, carriage returns, backslashes, `\\N` spelt out, quotes, non-ASCII),
missing values, booleans, integers, dates and aware timestamps go into a real PostgreSQL table
both ways and are read back equal; values Arrow does not type fall back to the row path.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from frankli_sync.json_text import dumps
from frankli_sync.sinks import database
from frankli_sync.sinks.copy_text import copied_rows, copy_payload
from frankli_sync.sinks.database import bulk_insert
from sqlalchemy import JSON, Boolean, Column, Date, DateTime, Integer, MetaData, Table, Text, create_engine, select

HOSTILE = [
    "plain",
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "back\\slash",
    "\\N",
    "\\.",
    "ends with backslash\\",
    'O\'Brien "quoted"',
    "Ŝtraße ☃ \U0001d518",
    "",
    " ",
    None,
]


def _table(metadata: MetaData) -> Table:
    return Table(
        "copied",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("name", Text),
        Column("enabled", Boolean),
        Column("started", Date),
        Column("at", DateTime(timezone=True)),
        Column("details", JSON),
    )


def _rows() -> list[dict[str, object]]:
    rows = []
    for n, text in enumerate(HOSTILE * 3):
        rows.append(
            {
                "id": n + 1,
                "name": text,
                "enabled": None if n % 5 == 0 else n % 2 == 0,
                "started": None if n % 4 == 0 else date(2020, 1, 1 + n % 28),
                "at": datetime(2026, 12, 1, 8, n % 60, 1, 123456, tzinfo=UTC),
                "details": None if n % 3 == 0 else {"text": text, "n": n, "nested": [text, None]},
            }
        )
    return rows


@pytest.mark.parametrize("slice_rows", [50_000, 7])
def test_copy_text_loads_what_the_row_path_loads(postgres_url: str, slice_rows: int, monkeypatch) -> None:
    monkeypatch.setattr(database, "COPY_ROWS", slice_rows)  # one slice, or several
    engine = create_engine(postgres_url)
    metadata = MetaData()
    table = _table(metadata)
    metadata.create_all(engine)
    rows = _rows()
    columns = [[r[c] for r in rows] for c in rows[0]]
    columns[-1] = [None if d is None else dumps(d) for d in columns[-1]]  # bulk_insert's JSON text
    assert copy_payload(columns) is not None  # the Arrow path is the one taken
    with engine.begin() as connection:
        bulk_insert(connection, table, rows)
        loaded = [dict(r._mapping) for r in connection.execute(select(table).order_by(table.c.id))]
    assert loaded == rows


def test_untyped_values_take_the_row_path(postgres_url: str, monkeypatch) -> None:
    monkeypatch.setattr(database, "COPY_ROWS", 1)  # the odd row's slice alone takes the row path
    engine = create_engine(postgres_url)
    metadata = MetaData()
    table = Table("mixed", metadata, Column("id", Integer, primary_key=True), Column("name", Text))
    metadata.create_all(engine)
    rows = [{"id": 1, "name": "text"}, {"id": 2, "name": 5}, {"id": 3, "name": None}]
    assert copy_payload([[r["id"] for r in rows], [r["name"] for r in rows]]) is None
    with engine.begin() as connection:
        bulk_insert(connection, table, rows)
        names = list(connection.execute(select(table.c.name).order_by(table.c.id)).scalars())
    assert names == ["text", "5", None]


@pytest.mark.parametrize("text", HOSTILE)
def test_each_hostile_text_is_escaped(text: str | None) -> None:
    payload = copy_payload([[text]])
    assert payload is not None
    line = payload.decode()
    assert line.endswith("\n") and "\n" not in line[:-1] and "\t" not in line
    assert line == (
        "\\N\n"
        if text is None
        else text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r") + "\n"
    )


def test_a_whole_snapshot_read_by_copy_equals_the_row_read(postgres_url: str, monkeypatch) -> None:
    """`copied_rows` (COPY … TO STDOUT as CSV, parsed by Arrow) reads back what the row path reads.

    NULL against an empty text, quotes, commas, newlines and CSV's own escapes in every column.
    """
    from frankli_sync import staging as staging_module
    from frankli_sync.entra import STAGED_COLUMNS
    from frankli_sync.staging import Staging

    copies: list[int] = []

    def counted(*args: object) -> object:
        frame = copied_rows(*args)
        copies.append(len(frame))
        return frame

    monkeypatch.setattr(staging_module, "copied_rows", counted)
    staging = Staging(create_engine(postgres_url))
    # The last one is longer than Arrow's CSV block (1 MiB): it reads back whole too.
    extra = ["a,b", '"', '""', "line\r\nbreak", "\u2400 nul mark", "=1+2", 'long, "quoted"\n' * 200_000]
    rows = []
    for n, text in enumerate([*HOSTILE, *extra]):
        row: dict[str, object] = {c: text for c in STAGED_COLUMNS}
        row.update(object_id=f"00000000-0000-0000-0000-{n:012d}", account_enabled=[True, False, None][n % 3])
        rows.append(row)
    staging.begin_snapshot("t", "r", "graph")
    staging.apply_page("t", "r", rows, {}, None)
    staging.complete_snapshot("t", "r", len(rows))
    whole = staging.snapshot("t", "r")  # the COPY path
    by_rows = staging.rows_of("t", "r", [r["object_id"] for r in rows])  # the row path
    import pandas as pd

    empty = Staging(create_engine(postgres_url))
    empty.begin_snapshot("t", "none", "graph")
    empty.complete_snapshot("t", "none", 0)
    nothing = empty.snapshot("t", "none")  # COPY delivers no byte at all: still a frame of every column
    assert list(nothing.columns) == list(STAGED_COLUMNS) and len(nothing) == 0
    assert copies == [len(rows), 0], "the whole snapshot is read by COPY, the rows of some users row by row"
    pd.testing.assert_frame_equal(whole, by_rows)
    assert whole["job_title"].tolist() == [*HOSTILE, *extra]
    assert whole["account_enabled"].tolist()[:3] == [True, False, None]
    assert all(v is None or isinstance(v, str) for v in whole["city"])
