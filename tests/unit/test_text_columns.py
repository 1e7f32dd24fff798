"""The whole-column text functions give exactly what the per-value Python they replace gives.

Each column below mixes what a hostile directory holds: every kind of Unicode white space at
either end, decomposed and compatibility characters (Kelvin sign, ß, ﬁ, full-width letters),
NUL, HTML metacharacters, blanks and missing values. Each vectorised function is compared with
its per-value rule over that column and over columns holding non-text values.
"""

from __future__ import annotations

import html
import random
import sys
import unicodedata

import numpy as np
import pandas as pd
import pytest
from frankli_sync import text_columns
from frankli_sync.entra import NUL, NUL_MARK
from frankli_sync.transform import (
    clean_text,
    email_fold,
    email_fold_of,
    email_key,
    email_key_of,
    email_spelling,
    email_spelling_of,
    iso_date,
    name_key,
    name_key_of,
)
from frankli_sync.validation import _escaped, _fits, _nfc

PIECES = [
    "Ada.Lovelace@Contoso.com",
    "kristin.stra\u00dfe@contoso.com",
    "\u212aelvin@contoso.com",  # Kelvin sign
    "e\u0301mile@contoso.com",  # decomposed é
    "\ufb01nance@contoso.com",  # ﬁ ligature
    "\uff21dmin@contoso.com",  # full-width A
    'O\'Brien & <Sons> "Ltd"',
    "2021-03-01T00:00:00Z",
    "1999-12-31",
    "x" * 300,
    f"nul{NUL}inside",
    f"mark{NUL_MARK}inside",
    "",
    "Σίσυφος",
    "ǅemal",
    "İstanbul",
]


def _hostile_column(seed: int, size: int = 600) -> pd.Series:
    rng = random.Random(seed)
    values: list[object] = []
    for _ in range(size):
        roll = rng.random()
        if roll < 0.08:
            values.append(None)
        elif roll < 0.12:
            values.append(float("nan"))
        else:
            left = "".join(rng.choice(text_columns.WHITESPACE + "a") for _ in range(rng.randint(0, 2)))
            right = "".join(rng.choice(text_columns.WHITESPACE) for _ in range(rng.randint(0, 2)))
            values.append(left + rng.choice(PIECES) + right)
    return pd.Series(values, dtype=object, index=pd.RangeIndex(10, 10 + size))


def _as_list(series: pd.Series) -> list[object]:
    return [None if v is None or (isinstance(v, float) and v != v) else v for v in series]


COLUMNS = [
    pytest.param(_hostile_column(1), id="object"),
    pytest.param(_hostile_column(2).astype("str"), id="str-dtype"),
    pytest.param(pd.Series(["  a  ", 5, None, True, " B "], dtype=object), id="not-only-text"),
    pytest.param(pd.Series([], dtype=object), id="empty"),
    pytest.param(pd.Series([None, float("nan")], dtype=object), id="only-missing"),
]


def test_whitespace_is_what_str_strip_removes() -> None:
    expected = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())
    assert expected == text_columns.WHITESPACE


@pytest.mark.parametrize("values", COLUMNS)
@pytest.mark.parametrize(
    ("vectorised", "per_value"),
    [
        (email_key, email_key_of),
        (email_fold, email_fold_of),
        (email_spelling, email_spelling_of),
        (name_key, name_key_of),
    ],
    ids=["email_key", "email_fold", "email_spelling", "name_key"],
)
def test_keys_equal_the_per_value_rule(values: pd.Series, vectorised, per_value) -> None:
    out = vectorised(values)
    assert list(out.index) == list(values.index)
    assert out.dtype == object
    assert _as_list(out) == [per_value(v if isinstance(v, str) else None) for v in _as_list(values)]


@pytest.mark.parametrize("values", COLUMNS)
def test_clean_text_trims_exactly_as_strip(values: pd.Series) -> None:
    expected = [(v.strip() or None) if isinstance(v, str) else v for v in _as_list(values)]
    out = clean_text(values)
    assert _as_list(out) == expected
    assert all(v is None or not isinstance(v, float) for v in out)  # missing is None, never NaN


@pytest.mark.parametrize("values", COLUMNS)
def test_iso_date_takes_the_first_ten_characters_of_trimmed_text(values: pd.Series) -> None:
    expected = [((v.strip()[:10] or None) if isinstance(v, str) else None) for v in _as_list(values)]
    assert _as_list(iso_date(values)) == expected


def test_iso_date_of_date_objects() -> None:
    values = pd.Series([pd.Timestamp("2021-03-01T10:00:00"), None, " 2020-01-02T00:00:00Z"], dtype=object)
    assert _as_list(iso_date(values)) == ["2021-03-01", None, "2020-01-02"]


@pytest.mark.parametrize("values", COLUMNS)
def test_nfc_normalises_only_what_python_would(values: pd.Series) -> None:
    expected = [unicodedata.normalize("NFC", v) if isinstance(v, str) else v for v in _as_list(values)]
    assert _as_list(_nfc(values)) == expected


def test_escaped_copy_equals_html_escape_and_keeps_other_values() -> None:
    frame = pd.DataFrame(
        {
            "_row": np.arange(5),
            "text": pd.Series(["<b>&amp;</b>", None, "'\"", "plain", float("nan")], dtype=object),
            "flags": pd.Series([True, None, False, True, None], dtype=object),
        }
    )
    escaped = _escaped(frame)
    assert _as_list(escaped["text"]) == [html.escape(v) if isinstance(v, str) else None for v in frame["text"]]
    assert list(escaped["flags"]) == list(frame["flags"])
    assert list(escaped["_row"]) == list(range(5))


@pytest.mark.parametrize("values", COLUMNS)
@pytest.mark.parametrize("length", [0, 10, 255])
def test_fits_equals_the_per_value_rule(values: pd.Series, length: int) -> None:
    def rule(v: object) -> bool | None:
        return None if v is None else _fits(str(v), length)

    out = text_columns.fits(values, length, (NUL, NUL_MARK), rule)
    assert _as_list(out) == [rule(v) for v in _as_list(values)]
