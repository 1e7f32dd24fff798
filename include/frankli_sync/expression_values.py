"""The value of an Entra expression for one user (issue 14: the scalar reference, before the vectorised one).

`evaluate(tree, row)` computes what Entra computes for one user, function by function, following
Microsoft's reference page (tests/unit/entra_expression_examples.json holds its examples, which are
the tests' oracle). `row` maps Entra attribute names to values (None or absent: the attribute is not
set). A multi-valued result is a list. Functions whose semantics are not evaluated yet raise
`ExpressionError` naming them, never a guess.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

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
)

# NormalizeDiacritics' table on Microsoft's page (letters with diacritics -> the plain ones); a letter the
# table does not list is kept as it is.
DIACRITICS: tuple[tuple[str, str], ...] = (
    ("ä, à, â, ã, å, á, ą, ă, ā, ā́, ā̀, ā̂, ā̃, ǟ, ā̈, ǡ, a̱, å̄", "a"),
    ("Ä, À, Â, Ã, Å, Á, Ą, Ă, Ā, Ā́, Ā̀, Ā̂, Ā̃, Ǟ, Ā̈, Ǡ, A̱, Å̄", "A"),
    ("æ, ǣ", "ae"),
    ("Æ, Ǣ", "AE"),
    ("ç, č, ć, c̄, c̱", "c"),
    ("Ç, Č, Ć, C̄, C̱", "C"),
    ("ď, d̄, ḏ", "d"),
    ("Ď, D̄, Ḏ", "D"),
    ("ë, è, é, ê, ę, ě, ė, ē, ḗ, ḕ, ē̂, ē̃, ê̄, e̱, ë̄, e̊̄", "e"),
    ("Ë, È, É, Ê, Ę, Ě, Ė, Ē, Ḗ, Ḕ, Ē̂, Ē̃, Ê̄, E̱, Ë̄, E̊̄", "E"),
    ("ğ, ḡ, g̱", "g"),
    ("Ğ, Ḡ, G̱", "G"),
    ("ï, î, ì, í, ı, ī, ī́, ī̀, ī̂, ī̃, i̱", "i"),  # noqa: RUF001 - the dotless i is the page's own
    ("Ï, Î, Ì, Í, İ, Ī, Ī́, Ī̀, Ī̂, Ī̃, I̱", "I"),
    ("ľ, ł, l̄, ḹ, ḻ", "l"),
    ("Ł, Ľ, L̄, Ḹ, Ḻ", "L"),
    ("ñ, ń, ň, n̄, ṉ", "n"),
    ("Ñ, Ń, Ň, N̄, Ṉ", "N"),
    ("ö, ò, ő, õ, ô, ó, ō, ṓ, ṑ, ō̂, ō̃, ȫ, ō̈, ǭ, ȭ, ȱ, o̱", "o"),
    ("Ö, Ò, Ő, Õ, Ô, Ó, Ō, Ṓ, Ṑ, Ō̂, Ō̃, Ȫ, Ō̈, Ǭ, Ȭ, Ȱ, O̱", "O"),
    ("ø, ø̄, œ̄", "oe"),
    ("Ø, Ø̄, Œ̄", "OE"),
    ("ř, r̄, ṟ, ṝ", "r"),
    ("Ř, R̄, Ṟ, Ṝ", "R"),
    ("ß", "ss"),
    ("š, ś, ș, ş, s̄, s̱", "s"),
    ("Š, Ś, Ș, Ş, S̄, S̱", "S"),
    ("ť, ț, t̄, ṯ", "t"),
    ("Ť, Ț, T̄, Ṯ", "T"),
    ("ü, ù, û, ú, ů, ű, ū, ū́, ū̀, ū̂, ū̃, u̇̄, ǖ, ṻ, ṳ̄, u̱", "u"),
    ("Ü, Ù, Û, Ú, Ů, Ű, Ū, Ū́, Ū̀, Ū̂, Ū̃, U̇̄, Ǖ, Ṻ, Ṳ̄, U̱", "U"),
    ("ÿ, ý, ȳ, ȳ́, ȳ̀, ȳ̃, y̱", "y"),
    ("Ÿ, Ý, Ȳ, Ȳ́, Ȳ̀, Ȳ̃, Y̱", "Y"),
    ("ź, ž, ż, z̄, ẕ", "z"),
    ("Ź, Ž, Ż, Z̄, Ẕ", "Z"),
)
_REPLACEMENTS = {
    unicodedata.normalize("NFC", letter): plain for letters, plain in DIACRITICS for letter in letters.split(", ")
}
_LETTERS = re.compile("|".join(re.escape(k) for k in sorted(_REPLACEMENTS, key=len, reverse=True)))


def evaluate(node: Node, row: Mapping[str, Any]) -> Any:
    """The expression's value for this user."""
    if isinstance(node, Attribute):
        return row.get(node.name)
    if isinstance(node, Constant):
        return node.value
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Word):
        return node.name
    if isinstance(node, Omitted):
        return None
    if isinstance(node, Comparison):
        return _compare(node.operator, evaluate(node.left, row), evaluate(node.right, row))
    function = FUNCTIONS.get(node.function)
    if function is None:
        raise ExpressionError(f"{node.function} is not evaluated yet", node.column)
    return function(node, row)


def _args(node: Call, row: Mapping[str, Any]) -> list[Any]:
    return [evaluate(a, row) for a in node.arguments]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, list) and not value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _values(value: Any) -> list[Any]:
    """A source as the list of its values (a multi-valued attribute's each; a missing one: none)."""
    if _missing(value):
        return []
    return list(value) if isinstance(value, list) else [value]


def _compare(operator: str, left: Any, right: Any) -> bool:
    """IIF's condition: fails (False) when either side is null or empty, as the page says."""
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


def _number(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _append(node: Call, row: Mapping[str, Any]) -> Any:
    source, suffix = _args(node, row)
    return _text(source) + _text(suffix)


def _coalesce(node: Call, row: Mapping[str, Any]) -> Any:
    """The first source that is not null; the last argument is the default value when all are null."""
    values = _args(node, row)
    for value in values:
        if not _missing(value):
            return value
    return None


def _join(node: Call, row: Mapping[str, Any]) -> Any:
    """Every value of every source (a multi-valued one's each), empty ones skipped, with the separator."""
    separator, *sources = _args(node, row)
    parts = [_text(v) for source in sources for v in _values(source) if _text(v) != ""]
    return _text(separator).join(parts)


def _left(node: Call, row: Mapping[str, Any]) -> Any:
    source, count = _args(node, row)
    text, number = _text(source), _number(count)
    if number is None or number < 0:
        return text
    return text[:number]


def _mid(node: Call, row: Mapping[str, Any]) -> Any:
    source, start, length = _args(node, row)
    text, begin, size = _text(source), _number(start), _number(length)
    if begin is None or size is None or begin < 1 or size < 0:
        return ""
    return text[begin - 1 : begin - 1 + size]


def normalize_diacritics(text: str) -> str:
    """Letters with diacritics as the page's table gives them (``Zoë`` → ``Zoe``, ``æ`` → ``ae``), whichever
    Unicode form they arrive in (compared composed)."""
    return _LETTERS.sub(lambda found: _REPLACEMENTS[found.group()], unicodedata.normalize("NFC", text))


def _normalize(node: Call, row: Mapping[str, Any]) -> Any:
    (source,) = _args(node, row)
    return None if source is None else normalize_diacritics(_text(source))


def _split(node: Call, row: Mapping[str, Any]) -> Any:
    """The values between delimiters, trimmed (the page's example drops the space after the comma)."""
    source, delimiter = _args(node, row)
    if _missing(source):
        return []
    return [part.strip() for part in _text(source).split(_text(delimiter)) if part.strip() != ""]


def _switch(node: Call, row: Mapping[str, Any]) -> Any:
    """The value after the first key equal to the source (case-sensitive); else the default value."""
    source, default, *pairs = _args(node, row)
    if len(pairs) % 2:
        raise ExpressionError("Switch takes its keys and values in pairs", node.column)
    text = _text(source)
    for key, value in zip(pairs[::2], pairs[1::2], strict=True):
        if _text(key) == text:
            return value
    return default


def _lower(node: Call, row: Mapping[str, Any]) -> Any:
    source = _args(node, row)[0]
    return None if source is None else _text(source).lower()


def _upper(node: Call, row: Mapping[str, Any]) -> Any:
    source = _args(node, row)[0]
    return None if source is None else _text(source).upper()


def _word(node: Call, row: Mapping[str, Any]) -> Any:
    """The n-th word (1-based) between any of the delimiter characters; empty when there is none."""
    source, number, delimiters = _args(node, row)
    index = _number(number)
    if source is None or index is None or index < 1:
        return ""
    words, current = [], []
    for char in _text(source):
        if char in _text(delimiters):
            if current:
                words.append("".join(current))
            current = []
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    return words[index - 1] if index <= len(words) else ""


def _instr(node: Call, row: Mapping[str, Any]) -> Any:
    """The 1-based position of value2 in value1 from `start` (0: not found); vbTextCompare ignores case."""
    values = _args(node, row)
    haystack, needle = _text(values[0]), _text(values[1])
    start = _number(values[2]) if len(values) > 2 and values[2] is not None else 1
    if len(values) > 3 and values[3] == "vbTextCompare":
        haystack, needle = haystack.casefold(), needle.casefold()
    found = haystack.find(needle, max((start or 1) - 1, 0))
    return found + 1


def _strip_spaces(node: Call, row: Mapping[str, Any]) -> Any:
    (source,) = _args(node, row)
    return None if source is None else _text(source).replace(" ", "")


def _is_null(node: Call, row: Mapping[str, Any]) -> Any:
    return _args(node, row)[0] is None


def _is_null_or_empty(node: Call, row: Mapping[str, Any]) -> Any:
    value = _args(node, row)[0]
    return _missing(value) or value == ""


def _is_present(node: Call, row: Mapping[str, Any]) -> Any:
    return not _is_null_or_empty(node, row)


def _is_string(node: Call, row: Mapping[str, Any]) -> Any:
    return isinstance(_args(node, row)[0], str)


def _not(node: Call, row: Mapping[str, Any]) -> Any:
    """False for True (or "True"); True for anything else."""
    value = _args(node, row)[0]
    return not (value is True or (isinstance(value, str) and value.casefold() == "true"))


def _cstr(node: Call, row: Mapping[str, Any]) -> Any:
    value = _args(node, row)[0]
    return None if value is None else _text(value)


def _iif(node: Call, row: Mapping[str, Any]) -> Any:
    condition, if_true, if_false = node.arguments
    return evaluate(if_true if evaluate(condition, row) is True else if_false, row)


FUNCTIONS: dict[str, Callable[[Call, Mapping[str, Any]], Any]] = {
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
