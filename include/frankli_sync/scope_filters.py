"""Attribute-based scoping filters, with the syntax and results of Entra provisioning's scoping filters.

Source: Microsoft Learn, "Scoping users or groups to be provisioned with scoping filters"
(learn.microsoft.com/entra/identity/app-provisioning/define-conditional-rules-for-provisioning-user-accounts),
whose source is ``docs/identity/app-provisioning/define-conditional-rules-for-provisioning-user-accounts.md`` in
MicrosoftDocs/entra-docs, read at commits efd1ce19dccb67801842cd28424abe6b7dcf2e2b and
00316808e6291ca661cca091f977673e9a8d9619 (same operator list), and the Graph ``filter`` resource
(microsoftgraph/microsoft-graph-docs-contrib ``api-reference/*/resources/synchronization-filter.md``).

Combining clauses and filters (the page, "Scoping filter construction"):

* "If multiple clauses are created in a single scoping filter, they're evaluated together using "AND" logic."
* "If multiple scoping filters are present, they're evaluated together by using "OR" logic."
* No filters: "By default, Microsoft Entra provisioning connectors don't have any attribute-based scoping filters
  configured" -- every user is in scope.

The operators (canonical spellings as the page writes them; ``parse_filters`` accepts any case, with spaces,
underscores or hyphens between the words):

==========================  ==================================================================================
EQUALS                      "matches the input string value exactly (case sensitive)"
NOT EQUALS                  "doesn't match the input string value (case sensitive)"
IS TRUE / IS FALSE          "contains a Boolean value of true" / "... of false"; no value
IS NULL / IS NOT NULL       "is empty" / "isn't empty"; no value
REGEX MATCH                 "matches a regular expression pattern ... (case sensitive)"
NOT REGEX MATCH             "doesn't match a regular expression pattern. It returns "false" if the attribute is
                            null / empty."
Greater_Than(_OR_EQUALS)    "The value specified on the scoping filter must be an integer and the attribute on
                            the user must be an integer [0,1,2,...]."
Includes                    "contains the string value (case sensitive) as described [System.String.Contains]"
                            -- an ordinal substring test, not a list of values
ENDS_WITH                   "ends with the input string value"
==========================  ==================================================================================

And, for every operator but IS NULL: "Scoping filters will return "false" if the value is null / empty." So a
null or empty ('') attribute fails EQUALS, NOT EQUALS, Includes, ENDS_WITH, REGEX MATCH, NOT REGEX MATCH, the
comparisons, IS TRUE and IS FALSE, and passes only IS NULL.

Decisions the page leaves open (made here, and why):

* REGEX MATCH is a *search* (.NET ``Regex.IsMatch``: the pattern may match any part of the value), not a
  whole-value match: the service is .NET and its other operators are the plain .NET calls (Includes links
  String.Contains). The page's examples ("``([1-9][0-9])`` matches any number between 10 and 99") only hold
  for values that are nothing but the number; anchor a pattern with ``^...$`` to test the whole value -- an
  anchored pattern gives the same result under either reading.
* The dialect is .NET's; patterns run on Python's ``re``, which agrees on the common syntax (classes,
  quantifiers, alternation, groups, ``(?i)``, Unicode ``\\d``/``\\w``). Not reproducible: .NET-only syntax is
  refused when the filter is parsed (named groups ``(?<name>...)``, ``\\p{L}``, ``\\z``, class subtraction
  ``[a-z-[aeiou]]``, balancing groups); .NET's ``\\Z`` also allows a final newline; .NET's match timeout
  (Python's ``re`` has none, so a catastrophically backtracking pattern is slow here).
* Greater_Than & co.: the value must be an integer (a parse error otherwise). An attribute value is an integer
  when it is ASCII digits with an optional sign and surrounding white space (what .NET's ``int.Parse`` takes);
  any other value -- a decimal, '1,000', 'abc', a Boolean -- fails the clause. No 32/64-bit range limit here.
* Less_Than, Less_Than_OR_EQUALS and "Not Includes" are in no version of the page (nor in the 2022 issue
  listing the portal's undocumented operators: &, !&, Present, Valid Cert Match, Ends With). Issue 14 asks
  for them, so they are this sync's own, by the page's rules for their mirrors: Less_Than(_OR_EQUALS)
  compare integers as Greater_Than does; Not Includes is "does not contain" (case sensitive); a null or
  empty attribute fails all three. A filter using them cannot be pasted back into Entra.
  ``&`` / ``!&`` are documented only as "exists in the input string value", which does not say what they
  test, so they are refused with what to use instead.
* "Filtering is not supported for multi-valued attributes": businessPhones is refused.
* IS TRUE / IS FALSE apply only to accountEnabled (the one Boolean attribute), and accountEnabled takes only
  IS TRUE, IS FALSE, IS NULL and IS NOT NULL: any other pairing could never be true, or would depend on how
  Entra spells a Boolean as text. A staged Boolean is True/False; for staging that kept it as text or a
  number, 'true'/'false' (any case) and 1/0 count too.
* EQUALS, ENDS_WITH and the rest compare ordinally (code point by code point), the way String.Contains does;
  .NET's culture-sensitive EndsWith could differ on ignorable characters.
* A value that is not text is compared as its text (``str``): 5 as '5'. An empty value ('') is null.
"""

from __future__ import annotations

import operator
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from frankli_sync.entra import ENTRA_ATTRIBUTES

EQUALS = "EQUALS"
NOT_EQUALS = "NOT EQUALS"
IS_TRUE = "IS TRUE"
IS_FALSE = "IS FALSE"
IS_NULL = "IS NULL"
IS_NOT_NULL = "IS NOT NULL"
REGEX_MATCH = "REGEX MATCH"
NOT_REGEX_MATCH = "NOT REGEX MATCH"
GREATER_THAN = "Greater_Than"
GREATER_THAN_OR_EQUALS = "Greater_Than_OR_EQUALS"
INCLUDES = "Includes"
ENDS_WITH = "ENDS_WITH"
# Not on Entra's page (see the module docstring): the mirrors of Greater_Than and Includes, by the same rules.
LESS_THAN = "Less_Than"
LESS_THAN_OR_EQUALS = "Less_Than_OR_EQUALS"
NOT_INCLUDES = "Not Includes"

OPERATORS: tuple[str, ...] = (
    EQUALS,
    NOT_EQUALS,
    IS_TRUE,
    IS_FALSE,
    IS_NULL,
    IS_NOT_NULL,
    REGEX_MATCH,
    NOT_REGEX_MATCH,
    GREATER_THAN,
    GREATER_THAN_OR_EQUALS,
    INCLUDES,
    ENDS_WITH,
    LESS_THAN,
    LESS_THAN_OR_EQUALS,
    NOT_INCLUDES,
)
UNARY_OPERATORS = frozenset({IS_TRUE, IS_FALSE, IS_NULL, IS_NOT_NULL})
INTEGER_OPERATORS = frozenset({GREATER_THAN, GREATER_THAN_OR_EQUALS, LESS_THAN, LESS_THAN_OR_EQUALS})
REGEX_OPERATORS = frozenset({REGEX_MATCH, NOT_REGEX_MATCH})
BOOLEAN_ATTRIBUTES = frozenset({"accountEnabled"})
MULTI_VALUED_ATTRIBUTES = frozenset({"businessPhones"})

# Spellings Entra does not have (or does not define), and what to write instead.
_REFUSED: dict[str, str] = {
    "&": "Entra documents & only as 'exists in the input string value', which does not define it; use "
    "Includes or REGEX MATCH",
    "!&": "Entra documents !& only as 'does not exist in the input string value', which does not define it; use "
    "NOT REGEX MATCH",
}

_COMPARE = {
    GREATER_THAN: operator.gt,
    GREATER_THAN_OR_EQUALS: operator.ge,
    LESS_THAN: operator.lt,
    LESS_THAN_OR_EQUALS: operator.le,
}
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")
_INTEGER_TEXT = r"\s*[+-]?[0-9]+\s*"
_TEXT = pd.StringDtype("python")  # Python's re; the pyarrow backend would run RE2
_CLAUSE_KEYS = ("attribute", "operator", "value")


class ScopeFilterError(ValueError):
    """A scoping filter that cannot be used; the message starts with the path of the offending part."""


@dataclass(frozen=True)
class Clause:
    """One condition on one attribute: Entra attribute name, canonical operator, value (None for unary)."""

    attribute: str
    operator: str
    value: str | None


@dataclass(frozen=True)
class ScopeFilter:
    """Clauses that must all hold (AND)."""

    clauses: tuple[Clause, ...]


def _key(operator: str) -> str:
    return re.sub(r"[\s_-]+", " ", operator.strip()).upper()


_BY_KEY: dict[str, str] = {_key(op): op for op in OPERATORS}
_ATTRIBUTE_BY_LOWER: dict[str, str] = {name.lower(): name for name in ENTRA_ATTRIBUTES}


# ---------------------------------------------------------------------------------------------------- parsing


def parse_filters(raw: Any, where: str) -> tuple[ScopeFilter, ...]:
    """The filters of the YAML ``[[{attribute, operator, value}, ...], ...]``; None (not given) is no filter.

    Errors raise ScopeFilterError naming the path, e.g. ``{where}[1][0].operator: ...`` (0-based).
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ScopeFilterError(
            f"{where}: must be a list of filters, each a list of clauses, e.g. "
            "[[{attribute: department, operator: EQUALS, value: Sales}]]"
        )
    if not raw:
        raise ScopeFilterError(f"{where}: is empty; remove it to put every user in scope, or add a filter")
    return tuple(_filter(item, f"{where}[{i}]") for i, item in enumerate(raw))


def _filter(raw: Any, where: str) -> ScopeFilter:
    if isinstance(raw, dict):
        raise ScopeFilterError(
            f"{where}: is one clause, but a filter is a list of clauses; wrap it in a list: "
            "[[{attribute: ..., operator: ..., value: ...}]]"
        )
    if not isinstance(raw, list):
        raise ScopeFilterError(f"{where}: must be a list of clauses ({{attribute, operator, value}} mappings)")
    if not raw:
        raise ScopeFilterError(f"{where}: has no clauses; give at least one or remove the filter")
    return ScopeFilter(tuple(_clause(item, f"{where}[{j}]") for j, item in enumerate(raw)))


def _clause(raw: Any, where: str) -> Clause:
    if not isinstance(raw, dict):
        raise ScopeFilterError(f"{where}: must be a mapping with attribute, operator and (most operators) value")
    unknown = sorted(str(k) for k in raw if k not in _CLAUSE_KEYS)
    if unknown:
        raise ScopeFilterError(f"{where}: unknown key {unknown[0]!r}; a clause has only {', '.join(_CLAUSE_KEYS)}")
    attribute = _attribute(raw.get("attribute"), f"{where}.attribute")
    operator = _operator(raw.get("operator"), f"{where}.operator")
    if attribute in MULTI_VALUED_ATTRIBUTES:
        raise ScopeFilterError(
            f"{where}.attribute: {attribute} is multi-valued, and Entra scoping filters do not support "
            "multi-valued attributes; filter on another attribute"
        )
    if attribute in BOOLEAN_ATTRIBUTES and operator not in UNARY_OPERATORS:
        raise ScopeFilterError(
            f"{where}.operator: {attribute} is a Boolean; use IS TRUE, IS FALSE, IS NULL or IS NOT NULL, not {operator}"
        )
    if operator in (IS_TRUE, IS_FALSE) and attribute not in BOOLEAN_ATTRIBUTES:
        raise ScopeFilterError(
            f"{where}.operator: {operator} tests a Boolean and {attribute} is text, so it would never hold; "
            f"use it on {', '.join(sorted(BOOLEAN_ATTRIBUTES))}, or EQUALS for text"
        )
    return Clause(attribute, operator, _value(raw, operator, f"{where}.value"))


def _attribute(raw: Any, where: str) -> str:
    known = ", ".join(ENTRA_ATTRIBUTES)
    if raw is None:
        raise ScopeFilterError(f"{where}: required; name an Entra attribute: {known}")
    name = _ATTRIBUTE_BY_LOWER.get(raw.strip().lower()) if isinstance(raw, str) else None
    if name is None:
        raise ScopeFilterError(f"{where}: {raw!r} is not an Entra attribute the sync reads; use one of: {known}")
    return name


def _operator(raw: Any, where: str) -> str:
    known = ", ".join(OPERATORS)
    if raw is None:
        raise ScopeFilterError(f"{where}: required; use one of: {known}")
    if not isinstance(raw, str):
        raise ScopeFilterError(f"{where}: {raw!r} is not an operator; use one of: {known}")
    key = _key(raw)
    if key in _BY_KEY:
        return _BY_KEY[key]
    if key in _REFUSED:
        raise ScopeFilterError(f"{where}: {raw!r} is not supported: {_REFUSED[key]}")
    raise ScopeFilterError(f"{where}: {raw!r} is not an Entra scoping operator; use one of: {known}")


def _value(raw: dict[str, Any], operator: str, where: str) -> str | None:
    value = raw.get("value")
    if operator in UNARY_OPERATORS:
        if value is not None:
            raise ScopeFilterError(f"{where}: {operator} takes no value; remove value ({value!r})")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None or value == "":
        hint = "" if operator in INTEGER_OPERATORS else "; to test for an empty attribute use IS NULL / IS NOT NULL"
        raise ScopeFilterError(f"{where}: {operator} needs a value{hint}")
    if not isinstance(value, str):
        raise ScopeFilterError(f"{where}: {value!r} must be text; quote it in the YAML, e.g. '{value}'")
    if operator in INTEGER_OPERATORS:
        if not _INTEGER.fullmatch(value):
            raise ScopeFilterError(
                f"{where}: {operator} compares integers and {value!r} is not one; Entra requires an integer "
                "value such as 1000000"
            )
        return str(int(value))
    if operator in REGEX_OPERATORS:
        _check_regex(value, where)
    return value


def _class_subtraction(pattern: str) -> int | None:
    """The position of a .NET character class subtraction ``[a-z-[aeiou]]``, which Python's re reads otherwise."""
    in_class, escaped = False, False
    for position, char in enumerate(pattern):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class and char == "-" and pattern[position + 1 : position + 2] == "[":
            return position
        elif char == "[" and not in_class:
            in_class = True
            if pattern[position + 1 : position + 2] == "]":  # '[]...]': a leading ']' is a member
                escaped = True
        elif char == "]" and in_class:
            in_class = False
    return None


def _check_regex(pattern: str, where: str) -> None:
    subtraction = _class_subtraction(pattern)
    if subtraction is not None:
        raise ScopeFilterError(
            f"{where}: {pattern!r} uses .NET character class subtraction at position {subtraction}, which Python's "
            "re reads as literal characters; list the characters you mean instead"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # '[a-z-[aeiou]]', '[[' ...: .NET reads them otherwise
            _compiled(pattern)
    except re.error as error:
        raise ScopeFilterError(
            f"{where}: {pattern!r} is not a valid regular expression: {error.msg} at position {error.pos}; "
            "fix the pattern (it runs on Python's re: .NET-only syntax such as (?<name>...), \\p{L} or \\z "
            "is not supported)"
        ) from error
    except FutureWarning as warning:
        raise ScopeFilterError(
            f"{where}: {pattern!r} is ambiguous ({warning}); .NET and Python read it differently, so escape the "
            "'[' or '-' you mean literally"
        ) from warning


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def attributes_needed(filters: Iterable[ScopeFilter]) -> set[str]:
    """The Entra attribute names the filters read."""
    return {clause.attribute for f in filters for clause in f.clauses}


# ----------------------------------------------------------------------------------- one value (the reference)


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and value != value


def _text(value: Any) -> str | None:
    """The attribute as text; None when null or empty."""
    if _missing(value):
        return None
    text = value if isinstance(value, str) else str(value)
    return text or None


def _boolean(value: Any) -> bool | None:
    if _missing(value):
        return None
    if isinstance(value, str):
        lowered = value.strip().lower()
        return True if lowered == "true" else False if lowered == "false" else None
    try:
        return True if value == 1 else False if value == 0 else None
    except (TypeError, ValueError):
        return None


def clause_holds(value: Any, clause: Clause) -> bool:
    """Whether one attribute value satisfies the clause (the per-value rules; ``in_scope`` is its vectorised twin)."""
    op = clause.operator
    if op in (IS_TRUE, IS_FALSE):
        return _boolean(value) is (op == IS_TRUE)
    text = _text(value)
    if op == IS_NULL:
        return text is None
    if text is None:  # "Scoping filters will return "false" if the value is null / empty."
        return False
    target = clause.value or ""
    if op == IS_NOT_NULL:
        return True
    if op == EQUALS:
        return text == target
    if op == NOT_EQUALS:
        return text != target
    if op == INCLUDES:
        return target in text
    if op == NOT_INCLUDES:
        return target not in text
    if op == ENDS_WITH:
        return text.endswith(target)
    if op == REGEX_MATCH:
        return _compiled(target).search(text) is not None
    if op == NOT_REGEX_MATCH:
        return _compiled(target).search(text) is None
    if op in INTEGER_OPERATORS:
        if not _INTEGER.fullmatch(text):
            return False
        return _COMPARE[op](int(text), int(target))
    raise ScopeFilterError(f"unknown operator {op!r}")


# -------------------------------------------------------------------------------------------------- vectorised


def _text_series(column: pd.Series) -> pd.Series:
    text = column.astype(object).astype(_TEXT)
    return text.mask(_flags(text.eq("")))


def _flags(result: pd.Series) -> np.ndarray:
    return result.fillna(False).to_numpy(dtype=bool)


def _clause_mask(column: pd.Series, text: pd.Series, clause: Clause) -> np.ndarray:
    op, target = clause.operator, clause.value or ""
    if op in (IS_TRUE, IS_FALSE):
        word, number = ("true", 1) if op == IS_TRUE else ("false", 0)
        as_text = _flags(text.str.strip().str.lower().eq(word))
        as_value = column.astype(object).isin([number])  # True == 1, False == 0: a bool, or 1 / 0 from staging
        return as_text | as_value.to_numpy()
    present = text.notna().to_numpy()
    if op == IS_NULL:
        return ~present
    if op == IS_NOT_NULL:
        return present
    if op == EQUALS:
        return _flags(text.eq(target))
    if op == NOT_EQUALS:
        return present & _flags(text.ne(target))
    if op == INCLUDES:
        return _flags(text.str.contains(target, regex=False))
    if op == NOT_INCLUDES:
        return present & ~_flags(text.str.contains(target, regex=False))
    if op == ENDS_WITH:
        return _flags(text.str.endswith(target))
    if op in REGEX_OPERATORS:
        with warnings.catch_warnings():  # "has match groups": the groups are only grouping here
            warnings.simplefilter("ignore", UserWarning)
            found = _flags(text.str.contains(_compiled(target), regex=True))
        return found if op == REGEX_MATCH else present & ~found
    if op in INTEGER_OPERATORS:
        integer = _flags(text.str.fullmatch(_INTEGER_TEXT))
        numbers = [int(number) for number in text.to_numpy()[integer]]  # Python ints: no 64-bit overflow
        bound = int(target)
        result = np.zeros(len(text), dtype=bool)
        result[integer] = [_COMPARE[op](n, bound) for n in numbers]
        return result
    raise ScopeFilterError(f"unknown operator {op!r}")


def _column(attribute: str, columns: Mapping[str, str]) -> str:
    try:
        return columns[attribute]
    except KeyError:
        raise ScopeFilterError(f"no staging column is mapped to the attribute {attribute}") from None


def in_scope(
    staged: pd.DataFrame, filters: Iterable[ScopeFilter], columns: Mapping[str, str] = ENTRA_ATTRIBUTES
) -> pd.Series:
    """Per staged row (on ``staged.index``): True when any filter has all its clauses hold; no filters is all True."""
    filters = tuple(filters)
    if not filters:
        return pd.Series(True, index=staged.index, dtype=bool)
    texts: dict[str, pd.Series] = {}
    result = np.zeros(len(staged), dtype=bool)
    for scope_filter in filters:
        holds = np.ones(len(staged), dtype=bool)
        for clause in scope_filter.clauses:
            name = _column(clause.attribute, columns)
            if name not in staged.columns:
                raise ScopeFilterError(f"the staged users have no column {name!r} for the attribute {clause.attribute}")
            if name not in texts:
                texts[name] = _text_series(staged[name])
            holds &= _clause_mask(staged[name], texts[name], clause)
        result |= holds
    return pd.Series(result, index=staged.index, dtype=bool)


# ------------------------------------------------------------------------------------------------- explaining


def _quote(value: str) -> str:
    return "'" + value + "'"


def clause_text(clause: Clause) -> str:
    """The clause as Entra's portal shows it, e.g. ``department EQUALS 'Sales'``."""
    if clause.value is None:
        return f"{clause.attribute} {clause.operator}"
    value = clause.value if clause.operator in INTEGER_OPERATORS else _quote(clause.value)
    return f"{clause.attribute} {clause.operator} {value}"


def _shown(value: Any) -> str:
    if _missing(value):
        return "null"
    if value == "":
        return "empty"
    return _quote(value) if isinstance(value, str) else repr(value)


def explain(
    staged_row: Mapping[str, Any], filters: Iterable[ScopeFilter], columns: Mapping[str, str] = ENTRA_ATTRIBUTES
) -> str:
    """For one staged row (keyed by staging column): the filter that put it in scope, or each filter's first failure.

    Filters are numbered from 1 here (a report line), e.g. "out of scope: filter 1: department EQUALS 'Sales'
    failed (department is 'Marketing')".
    """
    filters = tuple(filters)
    if not filters:
        return "in scope: there are no scoping filters, so every user is in scope"
    failures = []
    for number, scope_filter in enumerate(filters, start=1):
        for clause in scope_filter.clauses:
            name = _column(clause.attribute, columns)
            if name not in staged_row:
                raise ScopeFilterError(f"the staged row has no column {name!r} for the attribute {clause.attribute}")
            value = staged_row[name]
            if not clause_holds(value, clause):
                failures.append(
                    f"filter {number}: {clause_text(clause)} failed ({clause.attribute} is {_shown(value)})"
                )
                break
        else:
            matched = " and ".join(clause_text(c) for c in scope_filter.clauses)
            return f"in scope: filter {number} matched ({matched})"
    return "out of scope: " + "; ".join(failures)
