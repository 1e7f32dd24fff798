"""JSON text on the bulk paths (audit rows, kept plans, the report's audit read), encoded in C.

A first sync of a million users writes a million audit details and keeps its plan as JSON; with
the standard library that was tens of seconds of per-value Python (`transform.json_ready`'s walk,
then `json.dumps`). msgspec (already installed with Airflow) encodes the same values with the same
rules: missing values (None, NaN, pandas' NA and NaT) become null, numpy scalars their Python
value, tuples lists, dict keys strings. Non-ASCII text is written as UTF-8 rather than
``\\uXXXX`` escapes: the same JSON value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import starmap
from typing import Any

import msgspec
import numpy as np
import pandas as pd


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if value is pd.NA or value is pd.NaT:
        return None
    raise TypeError(f"a value of type {type(value).__name__} has no JSON form: {value!r}")


def _shown(value: Any) -> Any:
    if isinstance(value, np.generic) or value is pd.NA or value is pd.NaT:
        return _scalar(value)
    return str(value)


_ENCODER = msgspec.json.Encoder(enc_hook=_scalar)
_DOCUMENT_ENCODER = msgspec.json.Encoder(enc_hook=_shown, order="sorted")
_DECODER = msgspec.json.Decoder()


def dumps(value: Any) -> str:
    """`value` as JSON text (NaN, NA, NaT as null; numpy scalars as their value)."""
    return _ENCODER.encode(value).decode()


def document(value: Any, indent: int = 0) -> str:
    """A run document's text: keys sorted, missing values and non-finite floats as null, datetimes in
    ISO 8601, any other value JSON has no type for as its ``str`` (a Decimal, a path)."""
    try:
        encoded = _DOCUMENT_ENCODER.encode(value)
    except TypeError:  # msgspec sorts only text keys: other keys become their text, as `json.dumps` did
        encoded = _DOCUMENT_ENCODER.encode(_text_keys(value))
    return (msgspec.json.format(encoded, indent=indent) if indent else encoded).decode()


def _text_keys(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _text_keys(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_text_keys(v) for v in value]
    return value


def nested_rows(key: str, columns: Mapping[str, Sequence[Any]], count: int) -> list[str]:
    """Per row (`count` rows), the text of ``{key: {name: value, …}}``: the row's non-null values in order.

    The same text `dumps` gives for those dicts, built without a dict per row: a msgspec struct
    whose missing fields are omitted (names travel as renames; a name msgspec cannot rename to, with a
    quote, a backslash or a control character, takes the per-row way).
    """
    names = list(columns)
    rows = zip(*columns.values(), strict=True) if names else ((),) * count
    if any(c in '"\\' or c < " " for name in (key, *names) for c in name):
        return [dumps({key: {n: v for n, v in zip(names, row, strict=True) if v is not None}}) for row in rows]
    fields = msgspec.defstruct(
        "Fields", [(f"f{n}", Any, None) for n in range(len(names))], omit_defaults=True,
        rename={f"f{n}": name for n, name in enumerate(names)},
    )  # fmt: skip
    outer = msgspec.defstruct("Nested", [("value", fields)], rename={"value": key})
    values = map(outer, starmap(fields, rows))
    return [text.decode() for text in map(_ENCODER.encode, values)]


def loads(text: str | bytes) -> Any:
    return _DECODER.decode(text)


def loads_many(texts: Sequence[str | None]) -> list[Any]:
    """Each text decoded (None stays None), in one call of the decoder."""
    present = [t for t in texts if t is not None]
    values = _DECODER.decode("[" + ",".join(present) + "]") if present else []
    if len(values) != len(present):  # a text holding more than one value ("1,2"): each alone, to fail on it
        values = [_DECODER.decode(t) for t in present]
    decoded = iter(values)
    return [None if t is None else next(decoded) for t in texts]
