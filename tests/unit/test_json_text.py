"""json_text: the columnar audit details are the very text the per-row encoding gives."""

from __future__ import annotations

import math

import numpy as np
import pytest
from frankli_sync import json_text

pytestmark = pytest.mark.unit


def per_row(key: str, columns: dict[str, list], count: int) -> list[str]:
    rows = zip(*columns.values(), strict=True) if columns else [()] * count
    return [json_text.dumps({key: {n: v for n, v in zip(columns, row, strict=True) if v is not None}}) for row in rows]


@pytest.mark.parametrize(
    "columns",
    [
        {"email": ["a@x", None, '"q"\\\n'], "role": [None, None, "Dév ✓"], "n": [np.int64(3), None, 1.5]},
        # Names a struct could trip on: methods, dunders, keywords, the outer key, text JSON must escape.
        {"copy": ["c", None], "__init__": [None, "i"], "class": ["k", "k"], "fields": ["f", None], 'a"b\\': [1, 2]},
        {"only_missing": [None, None, None]},
    ],
)
def test_nested_rows_equal_the_per_row_encoding(columns: dict[str, list]) -> None:
    count = len(next(iter(columns.values())))
    assert json_text.nested_rows("fields", columns, count) == per_row("fields", columns, count)


def test_nested_rows_without_columns_give_an_empty_object_per_row() -> None:
    assert json_text.nested_rows("fields", {}, 2) == ['{"fields":{}}'] * 2


def test_documents_sort_keys_and_write_missing_values_as_null() -> None:
    text = json_text.document({"b": float("nan"), "a": {"d": np.int64(2), "c": None}, "e": math.inf})
    assert text == '{"a":{"c":null,"d":2},"b":null,"e":null}'
    assert json_text.loads(json_text.document({"x": [1, "é"]}, indent=2)) == {"x": [1, "é"]}


def test_documents_with_keys_that_are_not_text_are_written_with_their_text() -> None:
    text = json_text.document({"by_size": {2: "b", 10: "a"}, "t": (1, {3: None})})
    assert json_text.loads(text) == {"by_size": {"10": "a", "2": "b"}, "t": [1, {"3": None}]}
