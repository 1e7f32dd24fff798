"""Rows as PostgreSQL ``COPY … FROM STDIN`` text, built a column at a time in Arrow.

A first sync of a million users COPYs a million staged rows, a million Frankli users, a million
audit rows and a million record rows; psycopg's ``write_row`` formats each row in Python (~10 µs,
tens of seconds a task). Here each column becomes text in one Arrow call (integers, dates and
timestamps cast; booleans ``t``/``f``; text escaped per PostgreSQL's text format: backslash, tab,
newline and carriage return), missing values ``\\N``, and the columns are joined with tabs.

`copy_payload` returns None when a column holds values Arrow cannot type as one of those (mixed
types, lists, decimals): the caller then writes rows with psycopg as before, so unusual values are
never guessed at.

The other way, `copied_rows` reads a large SELECT as ``COPY (…) TO STDOUT`` in CSV, parsed by
Arrow: a million staged rows without a Python tuple each (NULL is the unquoted empty field, an
empty text the quoted one, as PostgreSQL writes them).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from sqlalchemy import Boolean, Integer
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

from frankli_sync.text_columns import to_objects

NULL = "\\N"
# PostgreSQL text COPY: backslash first, so the escapes themselves are not escaped again.
_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def copy_payload(columns: Sequence[Sequence[Any]]) -> bytes | None:
    """The rows (given as equally long columns) as COPY text, one line per row; None: not typed here."""
    texts = []
    for values in columns:
        text = _column_text(values)
        if text is None:
            return None
        texts.append(text)
    if not texts or len(texts[0]) == 0:
        return b""
    lines = pc.binary_join_element_wise(*texts, "\t") if len(texts) > 1 else texts[0]
    lines = pc.binary_join_element_wise(lines, "\n", "")
    # The lines lie end to end in the array's data buffer: that slice is the payload.
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    return lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0])).to_pybytes()


def _column_text(values: Sequence[Any]) -> pa.Array | None:
    try:
        array = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    kind = array.type
    if pa.types.is_null(kind):
        return pa.array([NULL] * len(array), type=pa.string())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = array
        for character, escaped in _ESCAPES:
            text = pc.replace_substring(text, character, escaped)
    elif pa.types.is_boolean(kind):
        text = pc.if_else(array, "t", "f")
    elif pa.types.is_integer(kind) or pa.types.is_date(kind) or pa.types.is_timestamp(kind):
        text = array.cast(pa.string())
    else:  # floats, durations, nested values …: psycopg knows their text form better
        return None
    return pc.fill_null(text, NULL)


def copied_rows(connection: Connection, query: Select[Any], names: Sequence[str]) -> pd.DataFrame:
    """The rows of `query` (PostgreSQL) as a frame of `names`: object columns, None for NULL.

    Integer columns come back as int64, booleans as True/False/None, the rest as text. The
    query's values travel as psycopg parameters, never inside the SQL text.
    """
    compiled = query.compile(dialect=connection.dialect)
    kinds = [column.type for column in query.selected_columns]
    driver = connection.connection.driver_connection
    assert driver is not None
    buffer = io.BytesIO()
    with (
        driver.cursor() as cursor,
        cursor.copy(f"COPY ({compiled}) TO STDOUT WITH (FORMAT csv)", compiled.params) as copy,
    ):
        for block in copy:
            buffer.write(block)
    types = {name: _arrow_type(kind) for name, kind in zip(names, kinds, strict=True)}
    if not buffer.tell():  # no rows: Arrow refuses an empty file
        return pd.DataFrame({n: pd.Series([], dtype="int64" if t == pa.int64() else object) for n, t in types.items()})
    size = buffer.tell()
    convert = pa_csv.ConvertOptions(
        column_types=types,
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=["t"],
        false_values=["f"],
    )
    parse = pa_csv.ParseOptions(newlines_in_values=True)
    try:
        buffer.seek(0)
        table = pa_csv.read_csv(buffer, pa_csv.ReadOptions(column_names=list(names)), parse, convert)
    except pa.ArrowInvalid:  # a row longer than Arrow's block (1 MiB): the whole text as one block
        buffer.seek(0)
        whole = pa_csv.ReadOptions(column_names=list(names), block_size=size + 1)
        table = pa_csv.read_csv(buffer, whole, parse, convert)
    frame = pd.DataFrame(index=pd.RangeIndex(table.num_rows))
    for name in names:
        column = table.column(name)
        if pa.types.is_integer(column.type) and not column.null_count:
            frame[name] = column.to_numpy()
        else:
            frame[name] = to_objects(column, frame.index)
    return frame


def _arrow_type(kind: Any) -> pa.DataType:
    if isinstance(kind, Boolean):
        return pa.bool_()
    if isinstance(kind, Integer):
        return pa.int64()
    return pa.string()
