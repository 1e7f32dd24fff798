"""Whole-column text work in Arrow, with exactly the results of the per-value Python it replaces.

Trimming, address keys, HTML escaping and length checks run over a million directory values per
sync; done value by value in Python they were most of validate's and transform's time (issue 11).
Each function here runs over an Arrow array instead, and keeps the per-value function's result
exactly: trimming removes precisely what ``str.strip()`` removes (`WHITESPACE`), and where Arrow's
Unicode tables could differ from Python's (NFC, case folding) the non-ASCII values go through the
per-value function. A column holding anything but text and missing values (a number, a list)
takes the per-value path whole, so odd input is never coerced to text.

Each function returns an object Series with ``None`` for missing, on the input's index.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# Every character `str.isspace()` accepts: what `str.strip()` removes (tests/unit/test_text_columns.py
# derives it from Python's own tables, so a Python upgrade that changes it fails there).
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_NULL = pa.scalar(None, pa.string())
# html.escape(quote=True), & first so the other entities are not escaped twice.
_HTML_ENTITIES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("'", "&#x27;"))


def as_arrow(values: pd.Series) -> pa.Array | None:
    """The column as an Arrow string array (missing → null); None when it holds anything but text."""
    try:
        return pa.array(values.to_numpy(dtype=object, na_value=None), type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def to_objects(array: pa.Array | pa.ChunkedArray, index: pd.Index) -> pd.Series:
    """An Arrow string array back as an object Series (null → None)."""
    return pd.Series(array.to_numpy(zero_copy_only=False), index=index, dtype=object)


def _blank_to_null(array: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(array, ""), _NULL, array)


def _per_value(values: pd.Series, function: Callable[[Any], Any]) -> pd.Series:
    return pd.Series([function(v) for v in values], index=values.index, dtype=object)


def _with_non_ascii(
    array: pa.Array, ascii_result: pa.Array, function: Callable[[str], Any], index: pd.Index
) -> pd.Series:
    """`ascii_result` where the value is ASCII; `function(value)` (Python) for the others."""
    out = to_objects(ascii_result, index)
    non_ascii = np.flatnonzero(~pc.fill_null(pc.string_is_ascii(array), True).to_numpy(zero_copy_only=False))
    if len(non_ascii):
        originals = array.take(pa.array(non_ascii)).to_pylist()
        out.iloc[non_ascii] = [function(v) for v in originals]
    return out


def normalized_nfc(values: pd.Series, nfc_of: Callable[[Any], Any]) -> pd.Series:
    """`nfc_of` of each value; `values` itself when every value is ASCII text or missing (NFC leaves it)."""
    array = as_arrow(values)
    if array is None:
        return _per_value(values, nfc_of)
    if pc.all(pc.fill_null(pc.string_is_ascii(array), True)).as_py() is not False:
        return values
    return _with_non_ascii(array, array, nfc_of, values.index)


def stripped(values: pd.Series, fallback: Callable[[Any], Any]) -> pd.Series:
    """``v.strip() or None`` for text; missing → None. `fallback`: the per-value rule for other columns."""
    array = as_arrow(values)
    if array is None:
        return _per_value(values, fallback)
    return to_objects(_blank_to_null(pc.utf8_trim(array, characters=WHITESPACE)), values.index)


def lowered_keys(values: pd.Series, key_of: Callable[[Any], str | None]) -> pd.Series:
    """`key_of` of each value, for keys that on ASCII text are the trimmed text with A-Z lower-cased.

    That is true of `transform.email_key_of` (NFC leaves ASCII alone), `email_fold_of`,
    `email_spelling_of` and `name_key_of` (casefold and lower agree on ASCII): those values are
    keyed in Arrow (ascii_lower maps the bytes A-Z only, which in UTF-8 are only those letters);
    every other value, non-ASCII text included, goes through `key_of` itself.
    """
    array = as_arrow(values)
    if array is None:
        return _per_value(values, key_of)
    keys = _blank_to_null(pc.ascii_lower(pc.utf8_trim(array, characters=WHITESPACE)))
    return _with_non_ascii(array, keys, key_of, values.index)


def leading(values: pd.Series, length: int, per_value: Callable[[Any], Any]) -> pd.Series:
    """The first `length` characters of each trimmed ASCII text (blank: None); `per_value` for the rest."""
    array = as_arrow(values)
    if array is None:
        return _per_value(values, per_value)
    heads = _blank_to_null(pc.utf8_slice_codeunits(pc.utf8_trim(array, characters=WHITESPACE), 0, length))
    return _with_non_ascii(array, heads, per_value, values.index)


_NO_TEXT = frozenset({"empty", "boolean", "integer", "floating", "decimal", "complex"})


def html_escaped(values: pd.Series) -> pd.Series:
    """`html.escape` of each text value; other values (missing, booleans, numbers) unchanged."""
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in _NO_TEXT:  # a column of flags (validation's `_fits_*`): nothing to escape, nothing to copy
        return values
    array = as_arrow(values) if kind == "string" else None
    if array is None:
        return values.map(lambda v: html.escape(v) if isinstance(v, str) else v)
    for character, entity in _HTML_ENTITIES:
        array = pc.replace_substring(array, character, entity)
    return to_objects(array, values.index).where(values.notna().to_numpy(), values.astype(object))


def fits(
    values: pd.Series, max_length: int, forbidden: tuple[str, ...], fallback: Callable[[Any], bool | None]
) -> pd.Series:
    """Per text value: at most `max_length` characters and none of `forbidden`; None where missing."""
    array = as_arrow(values)
    if array is None:
        return _per_value(values, fallback)
    ok = pc.less_equal(pc.utf8_length(array), max_length)
    for text in forbidden:
        ok = pc.and_(ok, pc.invert(pc.match_substring(array, text)))
    return to_objects(ok, values.index)
