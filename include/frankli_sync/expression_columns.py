"""Entra expressions over a whole DataFrame of staged users at once (issue 14: the column-wise evaluator).

`evaluate_columns(tree, frame)` gives, for every row, exactly what `expression_values.evaluate(tree, row)`
gives for that user (the scalar evaluator is the reference; tests/unit/test_expression_columns.py holds
the two equal, types included, over Microsoft's documented examples and generated directories), but in
seconds for a million rows instead of minutes.

How: every intermediate value is a *column* kept as distinct values plus one code per row (an attribute
column is factorized once, by Arrow's hash for pandas string columns: a directory has few countries,
departments or offices), or, for a high-cardinality attribute (mail, display name: judged on a 100,000-row
sample), as one value per row, or as one constant. A function runs over its arguments' distinct values
only: one argument varying, over that argument's distinct values; several, over the distinct combinations
of their codes (one integer factorization; per row instead when the combinations could outnumber the
rows), and the result keeps the codes. The function itself is a tight loop or numpy operation repeating the
scalar evaluator's rule for that function (tests hold them equal).

Vectorised (a column rule of their own):
- IIF, Coalesce, Switch (constant keys): the choice is made per distinct value of the condition / source
  (Coalesce: per argument, null or not), then each row's value is picked with numpy, keeping the picked
  argument's codes: no value is computed or copied.
- Join (constant separator): each source's share (text; a multi-valued source's values joined) over its own
  distinct values, then the shares glued per combination (or per row).
- NormalizeDiacritics: ASCII text as it is; other text NFC-composed, its one-character letters of the page's
  table (`expression_values.DIACRITICS`) replaced with one regex pass; a text keeping a combining mark that
  could start one of the table's longer letters goes through `expression_values.normalize_diacritics`.
- Append, CStr, InStr, IsNull, IsNullOrEmpty, IsPresent, IsString, Left, Mid, Not, Split, StripSpaces,
  ToLower, ToUpper, Word, comparisons (``[country]="US"``): the scalar rule over distinct values (constant
  arguments read once: Left's count, Word's delimiters as one compiled split, InStr's needle).
- attributes and constants; a subtree that reads no attribute (``Left("John Doe", 3)``, ``Now()``) is
  evaluated once by the scalar evaluator and used as a constant.
Join with a varying separator and Switch with varying keys take the generic per-combination loop.

Fallback (the scalar evaluator itself): every other function (CBool, CDate, DateAdd, DateDiff,
FormatDateTime, IgnoreFlowIfNullOrEmpty, Item, Now, RemoveDuplicates, Replace, and any function added
to the scalar evaluator later) is evaluated as a whole subtree by `expression_values.evaluate`, once per
distinct combination of the attributes the subtree reads (once per row when one of them is
high-cardinality, e.g. ``Replace([mail], …)``: that is the scalar evaluator's speed). So is any vectorised
node whose column rule raises (an IIF branch that only fails on rows the condition does not choose, Split
with an empty delimiter, IGNORE_FLOW reaching an argument): the scalar evaluator then decides, raising
exactly where it raises. IGNORE_FLOW passes through an IIF branch as it does in the scalar evaluator.

Rows read as the scalar evaluator reads them: ``{attribute: value}`` with NaN / None / NA / NaT as None, an
attribute missing from `columns` or from the frame as None, and numpy scalars of typed columns as the
Python values ``Series.to_numpy(dtype=object)`` gives (``True``, not ``numpy.True_``). Each list in the
result (Split, a multi-valued attribute passed through) is a list of its own row's.
"""

from __future__ import annotations

import inspect
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache, partial
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd

from frankli_sync import expression_values
from frankli_sync.entra import ENTRA_ATTRIBUTES
from frankli_sync.expression_values import IGNORE_FLOW
from frankli_sync.expressions import (
    Attribute,
    Call,
    Comparison,
    Constant,
    ExpressionError,
    Node,
    Number,
    Omitted,
    Word,
    attributes_of,
)

# An attribute column whose sampled rows are more than this share distinct is kept one value per row:
# factorizing it would cost more than it saves.
# (A sample of 100,000 rows tells 100,000 distinct values in a million rows, ~63% distinct in it, from a million,
# ~95%.)
_DENSE_SHARE = 0.8
_SAMPLE = 100_000


@dataclass(frozen=True)
class _Const:
    """The same value on every row."""

    value: Any


@dataclass
class _Column:
    """`values[codes[i]]` is row i's value; `codes` None: `values` holds one value per row."""

    values: np.ndarray  # dtype object
    codes: np.ndarray | None
    distinct: bool = False  # `values` holds no two equal values (an attribute's factorization)
    flow: bool = False  # `values` may hold IGNORE_FLOW (the scalar evaluator's, or an IIF branch passing it on)
    lists: bool = True  # `values` may hold lists (each row must get its own copy)


_Value = _Const | _Column
# One argument at the level a function runs on: an object array (one value per distinct combination or
# per row) or a constant.
_Level = np.ndarray | _Const
_CONSTANT = object()  # _align's codes when every argument is constant


def evaluate_columns(
    node: Node,
    frame: pd.DataFrame,
    *,
    columns: Mapping[str, str] = ENTRA_ATTRIBUTES,
    now: datetime | None = None,
) -> pd.Series:
    """The expression's value for every row of `frame` (object Series on `frame.index`, None for missing).

    `columns` maps Entra attribute names to `frame`'s column names; `now` is passed to the scalar
    evaluator (Now(), the date functions) as `expression_values.evaluate(node, row, now=now)`.
    """
    values, _ = _evaluate(node, frame, columns, now)
    return pd.Series(values, index=frame.index, dtype=object, copy=False)


def _evaluate(
    node: Node, frame: pd.DataFrame, columns: Mapping[str, str], now: datetime | None
) -> tuple[np.ndarray, list[str]]:
    """The values per row, and which nodes the scalar evaluator computed (and why), for tests and the benchmark."""
    if len(frame) == 0:
        return np.empty(0, dtype=object), []
    compiler = _Compiler(frame, columns, now)
    return _rows(compiler.value(node), len(frame)), compiler.fallbacks


def scalar_evaluator(now: datetime | None = None) -> Callable[[Node, Mapping[str, Any]], Any]:
    """`expression_values.evaluate` with `now` passed when the scalar evaluator takes it."""
    evaluate = expression_values.evaluate
    if "now" in inspect.signature(evaluate).parameters:
        return lambda node, row: evaluate(node, row, now=now)  # type: ignore[call-arg]
    return evaluate


class _Compiler:
    def __init__(self, frame: pd.DataFrame, columns: Mapping[str, str], now: datetime | None) -> None:
        self.frame = frame
        self.columns = columns
        self.size = len(frame)
        self.scalar = scalar_evaluator(now)
        self.attributes: dict[str, _Value] = {}
        self.fallbacks: list[str] = []

    def value(self, node: Node) -> _Value:
        no_rule = isinstance(node, Call) and (
            node.function not in _RULES or node.function not in expression_values.FUNCTIONS
        )
        if no_rule and attributes_of(node):  # (one that reads no attribute is a constant: evaluated once below)
            self.fallbacks.append(f"{_name(node)}: no column rule")
            return self._scalar(node)
        try:
            return self._vectorised(node)
        except Exception as error:  # the scalar evaluator decides (and raises where it raises)
            self.fallbacks.append(f"{_name(node)}: {type(error).__name__}: {error}")
            return self._scalar(node)

    def _vectorised(self, node: Node) -> _Value:
        if isinstance(node, Attribute):
            return self._attribute(node.name)
        if isinstance(node, Constant | Number | Word | Omitted):
            return _Const(self.scalar(node, {}))
        if not attributes_of(node):  # Left("John Doe", 3), Now(): the same on every row
            return _Const(self.scalar(node, {}))
        if isinstance(node, Comparison):
            operator = node.operator
            sides = [self.value(node.left), self.value(node.right)]
            if any(_flows(side) for side in sides):
                raise ExpressionError("IgnoreFlowIfNullOrEmpty inside a comparison")
            value = self._apply(lambda level, size: _map(lambda a, b: _compare(operator, a, b), level, size), sides)
            if isinstance(value, _Column):
                value.lists = False
            return value
        assert isinstance(node, Call)
        arguments = [self.value(a) for a in node.arguments]
        branches = arguments[1:] if node.function == "IIF" else []  # IIF passes a branch's IGNORE_FLOW on
        for argument in arguments[: len(arguments) - len(branches)]:
            if _flows(argument):  # the scalar evaluator refuses it as an argument: it decides where
                raise ExpressionError(f"IgnoreFlowIfNullOrEmpty inside {node.function}")
        if node.function == "IIF":
            return self._iif(*arguments)
        if node.function == "Coalesce":
            return self._coalesce(arguments)
        if node.function == "Switch" and all(isinstance(k, _Const) for k in arguments[2::2]):
            return self._switch(arguments)
        if node.function == "Join" and isinstance(arguments[0], _Const):
            return self._join(_text(arguments[0].value), arguments[1:])
        value = self._apply(_RULES[node.function], arguments)
        if isinstance(value, _Column):
            value.lists = node.function in _MAY_GIVE_LISTS and (
                node.function == "Split" or any(_has_lists(a) for a in arguments)
            )
        return value

    # IIF, Coalesce and Switch pick one of their arguments' values for each row: no value is computed, so the
    # pick is made per row with numpy and the picked values keep their codes (offset into one value array).

    def _iif(self, condition: _Value, if_true: _Value, if_false: _Value) -> _Value:
        if isinstance(condition, _Const):
            return if_true if condition.value is True else if_false
        chosen = self._per_row_flags(condition, lambda v: v is True)
        return self._select([if_true, if_false], np.where(chosen, 0, 1))

    def _coalesce(self, arguments: list[_Value]) -> _Value:
        options = [*arguments, _Const(None)]  # all null (or empty lists): None
        choice = np.full(self.size, len(arguments), dtype=np.intp)
        for position in reversed(range(len(arguments))):
            argument = arguments[position]
            if isinstance(argument, _Const):
                if not _missing(argument.value):
                    choice[:] = position
                continue
            choice = np.where(self._per_row_flags(argument, lambda v: not _missing(v)), position, choice)
        return self._select(options, choice)

    def _switch(self, arguments: list[_Value]) -> _Value:
        source, default, *pairs = arguments
        if len(pairs) % 2:
            raise ExpressionError("Switch takes its keys and values in pairs")
        table: dict[str, int] = {}
        for position, key in enumerate(pairs[::2]):
            table.setdefault(_text(key.value), position + 1)  # type: ignore[union-attr]  # the first equal key wins
        options = [default, *pairs[1::2]]
        if isinstance(source, _Const):
            return options[table.get(_text(source.value), 0)]
        picks = np.fromiter(
            (table.get(v if type(v) is str else _text(v), 0) for v in source.values),
            dtype=np.intp,
            count=len(source.values),
        )
        return self._select(options, picks if source.codes is None else picks[source.codes])

    def _join(self, glue: str, sources: list[_Value]) -> _Value:
        """Each source's share of the text first, over its own distinct values; then the shares glued."""
        parts = []
        for source in sources:
            if isinstance(source, _Const):
                if (part := _part(glue, source.value)) != "":
                    parts.append(_Const(part))
            else:
                parts.append(_Column(_objects([_part(glue, v) for v in source.values]), source.codes, lists=False))
        if not parts:
            return _Const("")
        value = self._apply(lambda level, size: _glued(glue, level, size), parts)
        if isinstance(value, _Column):
            value.lists = False
        return value

    def _per_row_flags(self, column: _Column, test: Callable[[Any], bool]) -> np.ndarray:
        flags = np.fromiter((test(v) for v in column.values), dtype=bool, count=len(column.values))
        return flags if column.codes is None else flags[column.codes]

    def _select(self, options: list[_Value], choice: np.ndarray) -> _Value:
        """Row i's value is options[choice[i]]'s value of row i."""
        used = [k for k in range(len(options)) if (choice == k).any()]
        if len(used) == 1:
            return options[used[0]]
        picked = [options[k] for k in used]
        flow, lists = any(_flows(o) for o in picked), any(_has_lists(o) for o in picked)
        if any(isinstance(o, _Column) and o.codes is None for o in picked):
            out = np.empty(self.size, dtype=object)
            for k in used:
                rows = choice == k
                out[rows] = _array(_per_row(options[k]), self.size)[rows]
            return _Column(out, None, flow=flow, lists=lists)
        values, codes, offset = [], np.empty(self.size, dtype=np.intp), 0
        for k in used:
            option, rows = options[k], choice == k
            if isinstance(option, _Const):
                values.append(_objects([option.value]))
                codes[rows] = offset
            else:
                assert option.codes is not None
                values.append(option.values)
                codes[rows] = option.codes[rows] + offset
            offset += len(values[-1])
        return _Column(np.concatenate(values), codes, flow=flow, lists=lists)

    def _attribute(self, name: str) -> _Value:
        if name not in self.attributes:
            self.attributes[name] = self._read(name)
        return self.attributes[name]

    def _read(self, name: str) -> _Value:
        column = self.columns.get(name)
        if column is None or column not in self.frame.columns:
            return _Const(None)
        series = self.frame[column]
        if isinstance(series.dtype, pd.StringDtype):  # text or missing only: factorized where it is (Arrow's hash)
            if series.isna().all():
                return _Const(None)
            if self._high_cardinality(series.array):
                return _Column(series.to_numpy(dtype=object, na_value=None), None, lists=False)
            codes, distinct = pd.factorize(series)
            return _Column(
                *_with_none(codes, distinct.to_numpy(dtype=object, na_value=None)), distinct=True, lists=False
            )
        values = series.to_numpy(dtype=object, na_value=None)
        kinds = set(map(type, values))
        if kinds == {type(None)}:
            return _Const(None)
        lists = any(issubclass(kind, list) for kind in kinds)
        if not _hashed_exactly(kinds) or self._high_cardinality(values):
            return _Column(values, None, lists=lists)
        codes, distinct = pd.factorize(values)
        return _Column(*_with_none(codes, distinct), distinct=True, lists=False)

    def _high_cardinality(self, values: Any) -> bool:
        """Mostly distinct values (mail, display name): kept one per row, as factorizing would not pay."""
        if self.size <= 2 * _SAMPLE:
            return False
        sample = values[:: self.size // _SAMPLE]
        return len(pd.unique(sample)) > _DENSE_SHARE * len(sample)

    def _scalar(self, node: Node) -> _Value:
        """The scalar evaluator over the distinct combinations of the attributes `node` reads."""
        names = sorted(attributes_of(node))
        if not names:
            return _Const(self.scalar(node, {}))
        level, codes, size = self._align([self._attribute(name) for name in names])
        evaluate = self.scalar
        results = [evaluate(node, dict(zip(names, row, strict=True))) for row in zip(*_each(level, size), strict=True)]
        value = _result(_objects(results), codes)
        if isinstance(value, _Column):
            kinds = set(map(type, results))
            value.flow = type(IGNORE_FLOW) in kinds
            value.lists = any(issubclass(kind, list) for kind in kinds)
        return value

    def _apply(self, rule: Callable[[list[_Level], int], np.ndarray], arguments: list[_Value]) -> _Value:
        level, codes, size = self._align(arguments)
        return _result(rule(level, size), codes)

    def _align(self, arguments: list[_Value]) -> tuple[list[_Level], Any, int]:
        """The arguments at one level: their distinct combinations (with the codes of each row), their rows
        (codes None), or one constant row (codes _CONSTANT)."""
        varying = list({id(a): a for a in arguments if isinstance(a, _Column)}.values())
        if not varying:
            return list(arguments), _CONSTANT, 1
        if any(a.codes is None for a in varying):
            return [_per_row(a) for a in arguments], None, self.size
        if len(varying) == 1:
            (only,) = varying
            return [a if isinstance(a, _Const) else a.values for a in arguments], only.codes, len(only.values)
        shrunk = {id(a): _shrunk(a) for a in varying}
        if np.prod([float(len(a.values)) for a in shrunk.values()]) > self.size:  # about as many combinations as rows
            return [_per_row(shrunk[id(a)]) if isinstance(a, _Column) else a for a in arguments], None, self.size
        combined: np.ndarray | None = None
        span = 1
        for column in shrunk.values():
            assert column.codes is not None
            width = max(len(column.values), 1)
            if combined is None:
                combined, span = column.codes.astype(np.int64), width
                continue
            if span * width >= 2**62:
                combined, seen = pd.factorize(combined)
                span = len(seen)
            combined = combined * width + column.codes
            span *= width
        codes, seen = pd.factorize(combined)
        first = np.empty(len(seen), dtype=np.intp)
        first[codes] = np.arange(self.size)  # a row of each combination
        level = []
        for a in arguments:
            if isinstance(a, _Const):
                level.append(a)
            else:
                column = shrunk[id(a)]
                assert column.codes is not None
                level.append(column.values[column.codes[first]])
        return level, codes, len(seen)


def _per_row(value: _Value) -> _Level:
    if isinstance(value, _Const):
        return value
    return value.values if value.codes is None else value.values[value.codes]


def _name(node: Node) -> str:
    return node.function if isinstance(node, Call) else type(node).__name__


def _hashed_exactly(kinds: set[type]) -> bool:
    """Whether values of these types are factorized without merging two a rule tells apart: text, flags or
    whole numbers, never mixed (a hash table takes True and 1, "a" and a str subclass's "a" for one value)."""
    kinds = kinds - {type(None)}
    return len(kinds) == 1 and kinds <= {str, bool, int}


def _flows(value: _Value) -> bool:
    return value.value is IGNORE_FLOW if isinstance(value, _Const) else value.flow


def _has_lists(value: _Value) -> bool:
    return isinstance(value.value, list) if isinstance(value, _Const) else value.lists


def _with_none(codes: np.ndarray, distinct: Any) -> tuple[np.ndarray, np.ndarray]:
    """pd.factorize's result with the missing rows (-1) coded as one more value, None."""
    values = np.asarray(distinct, dtype=object)
    missing = codes < 0
    if missing.any():
        values = np.append(values, np.array([None], dtype=object))
        codes = np.where(missing, len(values) - 1, codes)
    return values, codes.astype(np.intp, copy=False)


def _shrunk(column: _Column) -> _Column:
    """A computed column with its equal values merged (fewer combinations for the function it feeds)."""
    if column.distinct or column.codes is None or len(column.values) < 64:
        return column
    if not _hashed_exactly({type(v) for v in column.values}):
        return column
    inner, distinct = pd.factorize(column.values)
    values, inner = _with_none(inner, distinct)
    return _Column(values, inner[column.codes], distinct=True, flow=column.flow, lists=column.lists)


def _result(values: np.ndarray, codes: Any) -> _Value:
    if codes is _CONSTANT:
        return _Const(values[0])
    return _Column(values, codes)


def _rows(value: _Value, size: int) -> np.ndarray:
    """One value per row, each list a copy of its own (rows sharing a distinct value share no list)."""
    if isinstance(value, _Const):
        out = np.empty(size, dtype=object)
        out.fill(value.value)
        return _own_lists(out, isinstance(value.value, list))
    out = value.values.copy() if value.codes is None else value.values.take(value.codes)
    return _own_lists(out, value.lists)


def _own_lists(out: np.ndarray, has_lists: bool) -> np.ndarray:
    if has_lists:
        for i in np.flatnonzero(np.fromiter((isinstance(v, list) for v in out), dtype=bool, count=len(out))):
            out[i] = list(out[i])
    return out


def _objects(items: Iterable[Any], count: int | None = None) -> np.ndarray:
    """An object array of exactly these items (lists kept as elements, never a second dimension)."""
    if count is None:
        items = list(items)
        count = len(items)
    return np.fromiter(items, dtype=object, count=count)


def _each(level: list[_Level], size: int) -> list[Iterable[Any]]:
    return [repeat(a.value, size) if isinstance(a, _Const) else a for a in level]


def _array(argument: _Level, size: int) -> np.ndarray:
    if isinstance(argument, _Const):
        out = np.empty(size, dtype=object)
        out.fill(argument.value)
        return out
    return argument


def _map(rule: Callable[..., Any], level: list[_Level], size: int) -> np.ndarray:
    return _objects([rule(*values) for values in zip(*_each(level, size), strict=True)], size)


# --- the scalar evaluator's rules, value by value (kept identical to expression_values; the tests compare) --


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, list) and not value)


def _values(value: Any) -> list[Any]:
    if _missing(value):
        return []
    return list(value) if isinstance(value, list) else [value]


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _compare(operator: str, left: Any, right: Any) -> bool:
    if left is None or right is None or left == "" or right == "":
        return False
    if isinstance(left, int) and not isinstance(right, int):
        right = _number(right)
    if isinstance(right, int) and not isinstance(left, int):
        left = _number(left)
    if left is None or right is None:
        return False
    try:
        return {
            "=": left == right,
            "<>": left != right,
            ">": left > right,
            ">=": left >= right,
            "<": left < right,
            "<=": left <= right,
        }[operator]
    except TypeError:
        return False


def _texts(argument: _Level, size: int) -> list[str]:
    """`_text` of every value at the level."""
    if isinstance(argument, _Const):
        return [_text(argument.value)] * size
    return [v if type(v) is str else _text(v) for v in argument]


# --- column rules: (arguments at one level, the level's size) -> object array of that size -------------


def _append(level: list[_Level], size: int) -> np.ndarray:
    source, suffix = level
    if isinstance(suffix, _Const):
        end = _text(suffix.value)
        return _objects([t + end for t in _texts(source, size)], size)
    return _objects([a + b for a, b in zip(_texts(source, size), _texts(suffix, size), strict=True)], size)


def _coalesce(level: list[_Level], size: int) -> np.ndarray:
    result = _array(_Const(None), size)
    for argument in reversed(level):
        if isinstance(argument, _Const):
            if not _missing(argument.value):
                result = _array(argument, size)
            continue
        present = np.fromiter((not _missing(v) for v in argument), dtype=bool, count=size)
        result = np.where(present, argument, result)
    return result


def _cstr(level: list[_Level], size: int) -> np.ndarray:
    (source,) = level
    return _objects([None if v is None else (v if type(v) is str else _text(v)) for v in _array(source, size)], size)


def _iif(level: list[_Level], size: int) -> np.ndarray:
    condition, if_true, if_false = level
    chosen = np.fromiter((v is True for v in _array(condition, size)), dtype=bool, count=size)
    return np.where(chosen, _array(if_true, size), _array(if_false, size))


def _instr_one(*values: Any) -> int:
    haystack, needle = _text(values[0]), _text(values[1])
    start = _number(values[2]) if len(values) > 2 and values[2] is not None else 1
    if len(values) > 3 and values[3] == "vbTextCompare":
        haystack, needle = haystack.casefold(), needle.casefold()
    return haystack.find(needle, max((start or 1) - 1, 0)) + 1


def _instr(level: list[_Level], size: int) -> np.ndarray:
    source, *rest = level
    if not all(isinstance(a, _Const) for a in rest):
        return _map(_instr_one, level, size)
    constants = [a.value for a in rest]  # type: ignore[union-attr]
    if len(constants) > 2 and constants[2] == "vbTextCompare":
        return _map(_instr_one, level, size)
    needle = _text(constants[0])
    start = _number(constants[1]) if len(constants) > 1 and constants[1] is not None else 1
    offset = max((start or 1) - 1, 0)
    return _objects([t.find(needle, offset) + 1 for t in _texts(source, size)], size)


def _is_null(level: list[_Level], size: int) -> np.ndarray:
    return _objects([v is None for v in _array(level[0], size)], size)


def _is_null_or_empty(level: list[_Level], size: int) -> np.ndarray:
    return _objects([_missing(v) or v == "" for v in _array(level[0], size)], size)


def _is_present(level: list[_Level], size: int) -> np.ndarray:
    return _objects([not (_missing(v) or v == "") for v in _array(level[0], size)], size)


def _is_string(level: list[_Level], size: int) -> np.ndarray:
    return _objects([isinstance(v, str) for v in _array(level[0], size)], size)


def _join_one(separator: Any, *sources: Any) -> str:
    parts = [_text(v) for source in sources for v in _values(source) if _text(v) != ""]
    return _text(separator).join(parts)


def _join(level: list[_Level], size: int) -> np.ndarray:
    """Join with a separator that varies (a constant one is glued by _Compiler._join)."""
    return _map(_join_one, level, size)


def _part(glue: str, value: Any) -> str:
    """A Join source's share of the joined text ("" when it adds nothing)."""
    if type(value) is str:
        return value
    if isinstance(value, list):
        return glue.join([t for v in value if (t := _text(v)) != ""])
    return _text(value)


def _glued(glue: str, level: list[_Level], size: int) -> np.ndarray:
    """The non-empty shares of each row, with the separator between them."""
    joined: list[str] | str = ""
    for share in level:
        if isinstance(share, _Const):
            text = share.value
            if isinstance(joined, str):
                joined = joined + glue + text if joined else text
            else:
                joined = [a + glue + text if a else text for a in joined]
        elif isinstance(joined, str):
            joined = [joined + glue + b if b else joined for b in share] if joined else list(share)
        else:
            joined = [a + glue + b if a and b else a or b for a, b in zip(joined, share, strict=True)]
    return _objects([joined] * size if isinstance(joined, str) else joined, size)


def _left_one(source: Any, count: Any) -> str:
    text, number = _text(source), _number(count)
    if number is None or number < 0:
        return text
    return text[:number]


def _left(level: list[_Level], size: int) -> np.ndarray:
    source, count = level
    if isinstance(count, _Const):
        number = _number(count.value)
        texts = _texts(source, size)
        if number is None or number < 0:
            return _objects(texts, size)
        return _objects([t[:number] for t in texts], size)
    return _map(_left_one, level, size)


def _mid_one(source: Any, start: Any, length: Any) -> str:
    text, begin, size = _text(source), _number(start), _number(length)
    if begin is None or size is None or begin < 1 or size < 0:
        return ""
    return text[begin - 1 : begin - 1 + size]


def _mid(level: list[_Level], size: int) -> np.ndarray:
    source, start, length = level
    if isinstance(start, _Const) and isinstance(length, _Const):
        begin, count = _number(start.value), _number(length.value)
        if begin is None or count is None or begin < 1 or count < 0:
            return _objects([""] * size, size)
        return _objects([t[begin - 1 : begin - 1 + count] for t in _texts(source, size)], size)
    return _map(_mid_one, level, size)


@cache
def _diacritics() -> tuple[dict[str, str], re.Pattern[str], re.Pattern[str]]:
    """NormalizeDiacritics' table as the scalar evaluator reads it (`expression_values.DIACRITICS`, letters
    compared composed): its one-character letters (a dict and a pattern finding them), and a pattern of the
    characters that occur only inside its longer letters (combining marks after NFC: ``ā́`` is ``ā`` + U+0301)."""
    letters = {
        unicodedata.normalize("NFC", letter): plain
        for letters, plain in expression_values.DIACRITICS
        for letter in letters.split(", ")
    }
    single = {letter: plain for letter, plain in letters.items() if len(letter) == 1}
    marks = sorted({char for letter in letters if len(letter) > 1 for char in letter[1:]})
    return (
        single,
        re.compile("[" + "".join(re.escape(c) for c in sorted(single)) + "]"),
        re.compile("[" + "".join(re.escape(c) for c in marks) + "]" if marks else "(?!)"),
    )


def _normalize(level: list[_Level], size: int) -> np.ndarray:
    """ASCII text as it is (the table has no ASCII letter, NFC keeps ASCII); other text, composed, with its
    one-character letters replaced, which is the scalar rule exactly unless a combining mark of a longer
    letter's tail is left after NFC (only then could a longer letter match): then the scalar rule itself."""
    normalize = expression_values.normalize_diacritics
    table, letters, marks = _diacritics()
    replace = partial(_replaced, table)
    nfc = unicodedata.normalize
    out = []
    for v in _array(level[0], size):
        if v is None:
            out.append(None)
            continue
        text = v if type(v) is str else _text(v)
        if text.isascii():
            out.append(text)
            continue
        composed = nfc("NFC", text)
        out.append(normalize(text) if marks.search(composed) else letters.sub(replace, composed))
    return _objects(out, size)


def _replaced(table: dict[str, str], found: re.Match[str]) -> str:
    return table[found.group()]


def _not(level: list[_Level], size: int) -> np.ndarray:
    return _objects(
        [not (v is True or (isinstance(v, str) and v.casefold() == "true")) for v in _array(level[0], size)], size
    )


def _split_one(source: Any, delimiter: Any) -> list[str]:
    if _missing(source):
        return []
    return [part.strip() for part in _text(source).split(_text(delimiter)) if part.strip() != ""]


def _split(level: list[_Level], size: int) -> np.ndarray:
    return _map(_split_one, level, size)


def _strip_spaces(level: list[_Level], size: int) -> np.ndarray:
    return _objects(
        [None if v is None else (v if type(v) is str else _text(v)).replace(" ", "") for v in _array(level[0], size)],
        size,
    )


def _switch(level: list[_Level], size: int) -> np.ndarray:
    source, default, *pairs = level
    if len(pairs) % 2:
        raise ExpressionError("Switch takes its keys and values in pairs")
    keys, values = pairs[::2], pairs[1::2]
    if not all(isinstance(k, _Const) for k in keys):
        return _map(_switch_one, level, size)
    table: dict[str, int] = {}
    for position, key in enumerate(keys):
        table.setdefault(_text(key.value), position)  # type: ignore[union-attr]  # the first equal key wins
    choices = [table.get(t, -1) for t in _texts(source, size)]
    if all(isinstance(v, _Const) for v in (default, *values)):
        outcomes = [v.value for v in values] + [default.value]  # type: ignore[union-attr]  # -1: the default
        return _objects([outcomes[c] for c in choices], size)
    chosen = np.asarray(choices, dtype=np.intp)
    result = _array(default, size)
    for position, value in enumerate(values):
        result = np.where(chosen == position, _array(value, size), result)
    return result


def _switch_one(source: Any, default: Any, *pairs: Any) -> Any:
    text = _text(source)
    for key, value in zip(pairs[::2], pairs[1::2], strict=True):
        if _text(key) == text:
            return value
    return default


def _lower(level: list[_Level], size: int) -> np.ndarray:
    return _objects(
        [None if v is None else (v if type(v) is str else _text(v)).lower() for v in _array(level[0], size)], size
    )


def _upper(level: list[_Level], size: int) -> np.ndarray:
    return _objects(
        [None if v is None else (v if type(v) is str else _text(v)).upper() for v in _array(level[0], size)], size
    )


def _words_of(delimiters: str) -> Callable[[str], list[str]]:
    """The words of a text between any of the delimiter characters, as the scalar rule finds them."""
    if delimiters == "":
        return lambda text: [text] if text else []
    if len(delimiters) == 1:
        return lambda text: [w for w in text.split(delimiters) if w]
    pattern = re.compile("[" + "".join(re.escape(c) for c in sorted(set(delimiters))) + "]")
    return lambda text: [w for w in pattern.split(text) if w]


def _word_one(source: Any, number: Any, delimiters: Any) -> str:
    index = _number(number)
    if source is None or index is None or index < 1:
        return ""
    words = _words_of(_text(delimiters))(_text(source))
    return words[index - 1] if index <= len(words) else ""


def _word(level: list[_Level], size: int) -> np.ndarray:
    source, number, delimiters = level
    if not (isinstance(number, _Const) and isinstance(delimiters, _Const)):
        return _map(_word_one, level, size)
    index = _number(number.value)
    if index is None or index < 1:
        return _objects([""] * size, size)
    words = _words_of(_text(delimiters.value))
    out = []
    for v in _array(source, size):
        if v is None:
            out.append("")
            continue
        found = words(v if type(v) is str else _text(v))
        out.append(found[index - 1] if index <= len(found) else "")
    return _objects(out, size)


# Rules whose values may be lists: Split's own, or an argument's passed on.
_MAY_GIVE_LISTS = frozenset({"Coalesce", "IIF", "Split", "Switch"})

_RULES: dict[str, Callable[[list[_Level], int], np.ndarray]] = {
    "Append": _append,
    "Coalesce": _coalesce,
    "CStr": _cstr,
    "IIF": _iif,
    "InStr": _instr,
    "IsNull": _is_null,
    "IsNullOrEmpty": _is_null_or_empty,
    "IsPresent": _is_present,
    "IsString": _is_string,
    "Join": _join,
    "Left": _left,
    "Mid": _mid,
    "NormalizeDiacritics": _normalize,
    "Not": _not,
    "Split": _split,
    "StripSpaces": _strip_spaces,
    "Switch": _switch,
    "ToLower": _lower,
    "ToUpper": _upper,
    "Word": _word,
}
