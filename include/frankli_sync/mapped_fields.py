"""The Frankli field values a tenant's expression mappings give (issue 14), evaluated over the whole frame.

An expression (``mapping.<field>.expression``) is evaluated column-wise (`expression_columns`); its
results become field values as Frankli stores them: text trimmed, blank as cleared (None), a yes/no
or a number as Entra writes it (``True``, ``42``), ``start_date`` as ``YYYY-MM-DD``. A user whose value
cannot be one is not guessed at: the user fails (`MappedField.failures`, the reason names the field,
the value and what to change) and validation quarantines them, as Entra fails that user's export.
`IgnoreFlowIfNullOrEmpty` gives `IGNORE_FLOW`: the plan leaves that field as Frankli has it.

`trace` says, for one user, which mapping gave each value and from which attribute values: what an
``only_user`` run's report shows so an admin can debug an expression.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from frankli_sync.config import FieldMapping
from frankli_sync.entra import ENTRA_ATTRIBUTES
from frankli_sync.expression_columns import evaluate_columns
from frankli_sync.expression_values import IGNORE_FLOW, evaluate
from frankli_sync.expressions import ExpressionError, Node, parse

# What a start date from an expression must look like: an ISO date, perhaps with a time after it.
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:$|[T ])")
# How much of a failing value a reason quotes.
_QUOTED_CHARS = 60


@dataclass(frozen=True)
class MappedField:
    """One expression field over a frame: each row's value, and the rows that have none it can be."""

    values: pd.Series  # object dtype, None when cleared, IGNORE_FLOW to leave Frankli's value
    failures: pd.Series  # index label -> why that row's value cannot be stored (failing rows only)


def key(field: str) -> str:
    """How validation and reports name an expression field's value: ``mapping.<field>``."""
    return f"mapping.{field}"


def tree(rule: FieldMapping) -> Node:
    if rule.expression is None:
        raise ValueError("not an expression mapping")
    return _parsed(rule.expression)


_PARSED: dict[str, Node] = {}


def _parsed(text: str) -> Node:
    if text not in _PARSED:
        _PARSED[text] = parse(text)
    return _PARSED[text]


def mapped_field(
    field: str,
    rule: FieldMapping,
    staged: pd.DataFrame,
    now: datetime | None = None,
    max_length: int | None = None,
) -> MappedField:
    """The field's value for every staged row (`staged` has the staging column names)."""
    node = tree(rule)
    try:
        raw = evaluate_columns(node, staged, columns=ENTRA_ATTRIBUTES, now=now)
        errors: dict[int, str] = {}
    except ExpressionError:  # some rows fail (a date CDate cannot read): each row on its own, to say which
        raw, errors = _row_by_row(node, staged, now)
    array = raw.to_numpy(dtype=object)
    values = np.empty(len(array), dtype=object)
    reasons: dict[int, str] = {}
    texts = np.fromiter((type(v) is str for v in array), dtype=bool, count=len(array))
    if texts.any():  # the usual result, done column-wise: trimmed, blank as cleared, measured
        values[texts] = _stored_texts(field, array[texts], np.flatnonzero(texts), max_length, reasons)
    for i in np.flatnonzero(~texts).tolist():
        values[i], why = _stored(field, array[i], max_length)
        if why:
            reasons[i] = why
    for i, message in errors.items():
        values[i] = None
        reasons[i] = f": {message}"
    ordered = sorted(reasons)
    failed = pd.Series([f"{key(field)} {reasons[i]}".replace(" : ", ": ") for i in ordered],
                       index=staged.index[ordered], dtype="object")  # fmt: skip
    return MappedField(pd.Series(values, index=staged.index, dtype="object"), failed)


def _stored_texts(
    field: str, texts: np.ndarray, positions: np.ndarray, max_length: int | None, reasons: dict[int, str]
) -> np.ndarray:
    """`_stored` of many texts at once; the reasons of those that cannot be stored go into `reasons`."""
    out = np.array([text.strip() for text in texts.tolist()] + [None], dtype=object)[:-1]  # 1-D even when empty
    lengths = np.fromiter(map(len, out), dtype=np.int64, count=len(out))
    blank = lengths == 0
    if field == "start_date":
        dated = np.fromiter((bool(_ISO_DATE.match(t)) for t in out), dtype=bool, count=len(out))
        bad = ~blank & ~dated
        out = np.array([t[:10] for t in out.tolist()] + [None], dtype=object)[:-1]
    elif max_length is not None:
        bad = ~blank & (lengths > max_length)
    else:
        bad = np.zeros(len(texts), dtype=bool)
    out[blank | bad] = None
    for i in np.flatnonzero(bad).tolist():
        reasons[int(positions[i])] = _stored(field, texts[i], max_length)[1] or ""
    return out


def failures(
    staged: pd.DataFrame,
    mapping: Mapping[str, FieldMapping],
    lengths: Mapping[str, int],
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Validation's quarantine entries for the users an expression field gives no storable value (one entry
    per user, a reason per field; `lengths`: ``mapping.<field>`` -> the most characters Frankli holds)."""
    reasons: dict[Any, list[dict[str, Any]]] = {}
    for field, rule in mapping.items():
        if rule.expression is None:
            continue
        failed = mapped_field(field, rule, staged, now, lengths.get(key(field))).failures
        for label, reason in failed.items():
            reasons.setdefault(label, []).append(
                {"expectation": f"expression:{field}", "column": key(field), "value": reason, "severity": "critical"}
            )
    return [
        {
            "object_id": _plain(staged.at[label, "object_id"]),
            "user_principal_name": _plain(staged.at[label, "user_principal_name"]),
            "reasons": found,
        }
        for label, found in reasons.items()
    ]


def merged(quarantined: list[dict[str, Any]], more: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation's quarantine entries with `more`: one entry per user, reasons added to an existing one."""
    by_id = {q["object_id"]: q for q in quarantined if q.get("object_id")}
    out = list(quarantined)
    for entry in more:
        if entry["object_id"] in by_id:
            by_id[entry["object_id"]]["reasons"] = [*by_id[entry["object_id"]]["reasons"], *entry["reasons"]]
        else:
            out.append(entry)
    return out


def _row_by_row(node: Node, staged: pd.DataFrame, now: datetime | None) -> tuple[pd.Series, dict[int, str]]:
    """Each row's value by the scalar evaluator, and the positions of the rows it fails for, with why."""
    values, errors = [], {}
    for position, row in enumerate(_rows(staged)):
        try:
            values.append(evaluate(node, row, now=now))
        except ExpressionError as error:
            values.append(None)
            errors[position] = str(error)
    return pd.Series(values, index=staged.index, dtype="object"), errors


def _rows(staged: pd.DataFrame) -> list[dict[str, Any]]:
    """Each staged row as the attribute -> value mapping the scalar evaluator reads."""
    present = {a: c for a, c in ENTRA_ATTRIBUTES.items() if c in staged.columns}
    columns = {a: staged[c].astype("object").where(staged[c].notna(), None).to_numpy() for a, c in present.items()}
    return [{a: column[i] for a, column in columns.items()} for i in range(len(staged))]


def _stored(field: str, value: Any, max_length: int | None) -> tuple[Any, str | None]:
    """The value as Frankli stores it, or why it cannot be stored."""
    if value is None or value is IGNORE_FLOW:
        return value, None
    if isinstance(value, list):
        if len(value) <= 1:  # no value, or the one value a single-valued field can hold
            return _stored(field, value[0] if value else None, max_length)
        return None, (
            f"gives {len(value)} values ({_quoted(', '.join(map(str, value)))}) and Frankli's field holds one: "
            "take one with Item(…, 1) or join them with Join"
        )
    text = ("True" if value else "False") if isinstance(value, bool) else str(value)
    text = text.strip()
    if not text:
        return None, None
    if field == "start_date":
        if not _ISO_DATE.match(text):
            return None, (
                f"gives {_quoted(text)}, not a date as YYYY-MM-DD: wrap the expression in "
                'FormatDateTime(…, , "yyyy-MM-dd")'
            )
        return text[:10], None
    if max_length is not None and len(text) > max_length:
        return None, f"gives {len(text)} characters ({_quoted(text)}) and Frankli's field holds at most {max_length}"
    return text, None


def _quoted(text: str) -> str:
    return repr(text if len(text) <= _QUOTED_CHARS else text[:_QUOTED_CHARS] + "…")


def trace(
    row: Mapping[str, Any], mapping: Mapping[str, FieldMapping], now: datetime | None = None
) -> list[dict[str, Any]]:
    """For one staged row: per field, the mapping (attribute or expression), the attribute values it read and
    the value it gave (or why it gave none)."""
    frame = pd.DataFrame([dict(row)], dtype="object")
    lines = []
    for field, rule in mapping.items():
        if rule.source == "manager":
            continue
        attributes = sorted(rule.attributes)
        inputs = {a: _plain(row.get(ENTRA_ATTRIBUTES[a])) for a in attributes}
        if rule.expression is None:
            value, failure, how = _plain(row.get(rule.column or "")), None, f"from: {rule.source}"
        else:
            mapped = mapped_field(field, rule, frame, now)
            value = mapped.values.iloc[0]
            value = "(left as Frankli has it: IgnoreFlowIfNullOrEmpty)" if value is IGNORE_FLOW else value
            failure = mapped.failures.iloc[0] if len(mapped.failures) else None
            how = f"expression: {rule.expression}"
        lines.append({"field": field, "mapping": how, "on": rule.on, "inputs": inputs, "value": value,
                      "failure": failure})  # fmt: skip
    return lines


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") and not isinstance(value, str) else value
