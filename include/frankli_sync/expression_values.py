"""The value of an Entra expression for one user (issue 14: the scalar reference, before the vectorised one).

`evaluate(tree, row, now)` computes what Entra computes for one user, function by function, following
Microsoft's reference page (tests/unit/entra_expression_examples.json holds its examples, which are
the tests' oracle). `row` maps Entra attribute names to values (None or absent: the attribute is not
set; a multi-valued one is a list). A multi-valued result is a list. `now` is the run's clock (the
DAG run's logical date, so a retried task computes the same value): what ``Now()`` gives.

Dates: CDate, Now and DateAdd give an `EntraDateTime`, the text Entra shows (UTC,
``M/d/yyyy h:mm:ss tt``) carrying the moment; DateAdd and DateDiff take only those, as the page asks
("use CDate to wrap the datetime string"). CDate reads ISO text as Graph sends it
(``2021-03-01T00:00:00Z``), Workday's ``2012-03-16-07:00`` and Entra's own ``3/16/2012 7:00:00 AM``;
a time without an offset is UTC (Entra's service clock). DateDiff counts as Visual Basic's DateDiff,
which the page's examples match (days, hours, … truncate the elapsed time; weeks count Sundays; months
and years the calendar parts). FormatDateTime reads and writes .NET custom date formats, with the
page's default styles (an offset is converted to UTC, the service's local time).

`IgnoreFlowIfNullOrEmpty` of a null or empty value gives `IGNORE_FLOW`: the sync then leaves that field
as Frankli has it for this user (Entra drops the attribute from the flow). It may be the whole
expression or an IIF branch; a function given it as an argument raises `ExpressionError`.

What the page leaves open and this module decided: a null (or empty) date, source or list gives null
(None) rather than failing the user; Item past the last value gives None; RemoveDuplicates keeps the
first of equal values, in order, comparing case-sensitively. Anything else the page does not settle
(a function not evaluated, an undocumented Replace mode or date interval, a format specifier not
implemented, a multi-valued value where one is read) raises `ExpressionError` naming it, never a guess.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, Final

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


Clock = datetime | None
Function = Callable[[Call, Mapping[str, Any], Clock], Any]


class _IgnoreFlow:
    """What IgnoreFlowIfNullOrEmpty gives for a null or empty value: leave this field as Frankli has it."""

    _made: _IgnoreFlow | None = None

    def __new__(cls) -> _IgnoreFlow:
        if cls._made is None:
            cls._made = super().__new__(cls)
        return cls._made

    def __repr__(self) -> str:
        return "IGNORE_FLOW"

    def __reduce__(self) -> str:
        return "IGNORE_FLOW"  # pickled and copied as the module's one value


# The sync treats IGNORE_FLOW as "leave this field as Frankli has it for this user" (Entra: drop the
# attribute from the flow); compare with `is`.
IGNORE_FLOW: Final = _IgnoreFlow()


class EntraDateTime(str):
    """A date as CDate, Now and DateAdd give it: Entra's text for it (UTC, ``M/d/yyyy h:mm:ss tt``), which
    is what the expression shows, carrying the moment DateAdd and DateDiff compute with."""

    moment: datetime

    def __new__(cls, moment: datetime) -> EntraDateTime:
        utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        hour = utc.hour % 12 or 12
        text = super().__new__(
            cls, f"{utc.month}/{utc.day}/{utc.year} {hour}:{utc.minute:02}:{utc.second:02} {_meridiem(utc)}"
        )
        text.moment = utc
        return text

    def __reduce__(self) -> tuple[type[EntraDateTime], tuple[datetime]]:
        return (EntraDateTime, (self.moment,))


def evaluate(node: Node, row: Mapping[str, Any], now: datetime | None = None) -> Any:
    """The expression's value for this user; `now` is the run's clock, what Now() gives."""
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
        left, right = (_argument(node, "a comparison", side, row, now) for side in (node.left, node.right))
        if node.operator not in ("=", "<>") and EntraDateTime in (type(left), type(right)):
            raise ExpressionError(
                f"a date compared with {node.operator}: the page does not say whether Entra compares the moments or "
                'the texts; compare DateDiff(…) with a number, as its example does (DateDiff("d", Now(), …) > 5)',
                node.column,
            )
        return _compare(node.operator, left, right)
    function = FUNCTIONS.get(node.function)
    if function is None:
        raise ExpressionError(f"{node.function} is not evaluated yet", node.column)
    return function(node, row, now)


def _argument(node: Call | Comparison, where: str, argument: Node, row: Mapping[str, Any], now: Clock) -> Any:
    """An argument's value; IGNORE_FLOW is refused (the page documents it only as what a mapping gives)."""
    value = evaluate(argument, row, now)
    if value is IGNORE_FLOW:
        raise ExpressionError(
            f"IgnoreFlowIfNullOrEmpty inside {where}: it can only be the whole expression (or an IIF branch)",
            node.column,
        )
    return value


def _args(node: Call, row: Mapping[str, Any], now: Clock) -> list[Any]:
    return [_argument(node, node.function, a, row, now) for a in node.arguments]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, list) and not value)


def _blank(value: Any) -> bool:
    return _missing(value) or value == ""


def _one(node: Call, value: Any) -> Any:
    """A value read as one: a multi-valued attribute's several values are refused (an empty one is null)."""
    if isinstance(value, list):
        if not value:
            return None
        raise ExpressionError(
            f"{node.function} reads one value, not the {len(value)} of a multi-valued one", node.column
        )
    return value


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
    if isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _append(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    source, suffix = _args(node, row, now)
    return _text(source) + _text(suffix)


def _coalesce(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """The first source that is not null; the last argument is the default value when all are null."""
    values = _args(node, row, now)
    for value in values:
        if not _missing(value):
            return value
    return None


def _join(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """Every value of every source (a multi-valued one's each), empty ones skipped, with the separator."""
    separator, *sources = _args(node, row, now)
    parts = [_text(v) for source in sources for v in _values(source) if _text(v) != ""]
    return _text(separator).join(parts)


def _left(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    source, count = _args(node, row, now)
    text, number = _text(source), _number(count)
    if number is None or number < 0:
        return text
    return text[:number]


def _mid(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    source, start, length = _args(node, row, now)
    text, begin, size = _text(source), _number(start), _number(length)
    if begin is None or size is None or begin < 1 or size < 0:
        return ""
    return text[begin - 1 : begin - 1 + size]


def normalize_diacritics(text: str) -> str:
    """Letters with diacritics as the page's table gives them (``Zoë`` → ``Zoe``, ``æ`` → ``ae``), whichever
    Unicode form they arrive in (compared composed)."""
    return _LETTERS.sub(lambda found: _REPLACEMENTS[found.group()], unicodedata.normalize("NFC", text))


def _normalize(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    (source,) = _args(node, row, now)
    return None if source is None else normalize_diacritics(_text(source))


def _split(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """The values between delimiters, trimmed (the page's example drops the space after the comma)."""
    source, delimiter = _args(node, row, now)
    if _missing(source):
        return []
    return [part.strip() for part in _text(source).split(_text(delimiter)) if part.strip() != ""]


def _switch(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """The value after the first key equal to the source (case-sensitive); else the default value."""
    source, default, *pairs = _args(node, row, now)
    if len(pairs) % 2:
        raise ExpressionError("Switch takes its keys and values in pairs", node.column)
    text = _text(source)
    for key, value in zip(pairs[::2], pairs[1::2], strict=True):
        if _text(key) == text:
            return value
    return default


def _lower(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    source = _args(node, row, now)[0]
    return None if source is None else _text(source).lower()


def _upper(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    source = _args(node, row, now)[0]
    return None if source is None else _text(source).upper()


def _word(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """The n-th word (1-based) between any of the delimiter characters; empty when there is none."""
    source, number, delimiters = _args(node, row, now)
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


def _instr(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """The 1-based position of value2 in value1 from `start` (0: not found); vbTextCompare ignores case."""
    values = _args(node, row, now)
    haystack, needle = _text(values[0]), _text(values[1])
    start = _number(values[2]) if len(values) > 2 and values[2] is not None else 1
    if len(values) > 3 and values[3] == "vbTextCompare":
        haystack, needle = haystack.casefold(), needle.casefold()
    found = haystack.find(needle, max((start or 1) - 1, 0))
    return found + 1


def _strip_spaces(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    (source,) = _args(node, row, now)
    return None if source is None else _text(source).replace(" ", "")


def _is_null(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    return _args(node, row, now)[0] is None


def _is_null_or_empty(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    return _blank(_args(node, row, now)[0])


def _is_present(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    return not _is_null_or_empty(node, row, now)


def _is_string(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    return isinstance(_args(node, row, now)[0], str)


def _not(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """False for True (or "True"); True for anything else."""
    value = _args(node, row, now)[0]
    return not (value is True or (isinstance(value, str) and value.casefold() == "true"))


def _cstr(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    value = _args(node, row, now)[0]
    return None if value is None else _text(value)


def _iif(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """valueIfTrue when the condition is True, else valueIfFalse (only the chosen branch is evaluated)."""
    condition, if_true, if_false = node.arguments
    chosen = if_true if _argument(node, "IIF's condition", condition, row, now) is True else if_false
    return evaluate(chosen, row, now)


def _cbool(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """True for a non-zero value (True, "True", a non-zero number); False for zero, False, null or empty."""
    value = _one(node, _args(node, row, now)[0])
    if _blank(value):
        return False
    if isinstance(value, bool):
        return value
    text = _text(value).strip()
    if text.casefold() in ("true", "false"):
        return text.casefold() == "true"
    try:
        return float(text) != 0
    except ValueError:
        raise ExpressionError(f"CBool cannot read {text!r} as a boolean or a number", node.column) from None


def _ignore_flow(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """IGNORE_FLOW (leave the field as Frankli has it) when the value is null or empty; else the value."""
    value = _args(node, row, now)[0]
    return IGNORE_FLOW if _blank(value) else value


def _item(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """The index-th value (1-based) of a multi-valued attribute; None past the last one."""
    values, index = _args(node, row, now)
    number = _number(index)
    if number is None:
        raise ExpressionError(f"Item's index {index!r} is not a whole number", node.column)
    if number < 1:
        raise ExpressionError(
            f"Item's index is 1-based: {number} is no item (the page: 0 shouldn't be used)", node.column
        )
    items = _values(values)
    return items[number - 1] if number <= len(items) else None


def _remove_duplicates(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """The values with each repeat dropped (first one kept, in order, compared case-sensitively)."""
    (values,) = _args(node, row, now)
    if not isinstance(values, list):
        return values  # null stays null; a single value has nothing to repeat
    kept: list[Any] = []
    for value in values:
        if value not in kept:
            kept.append(value)
    return kept


# ---- Dates ------------------------------------------------------------------------------------------

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")  # fmt: skip
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# The interval values the page lists for DateAdd and DateDiff (exactly as written: the syntax is case-sensitive).
INTERVALS: Final = {"yyyy": "year", "m": "month", "d": "day", "ww": "week", "h": "hour", "n": "minute", "s": "second"}
_ISO = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"(?:[T ](?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,7}))?)?)?"
    r"(?P<zone>Z|[+-]\d{2}:?\d{2})?"
)
_US = re.compile(
    r"(?P<month>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{4})"
    r"(?:\s+(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?(?:\s*(?P<meridiem>[AaPp][Mm]))?)?"
)


def _meridiem(moment: datetime) -> str:
    return "AM" if moment.hour < 12 else "PM"


def read_date(text: str) -> datetime:
    """The UTC moment of a date text CDate reads (ISO with or without time and offset, Workday's
    ``2012-03-16-07:00``, Entra's ``3/16/2012 7:00:00 AM``); no offset is UTC. ValueError otherwise."""
    text = text.strip()
    found = _ISO.fullmatch(text) or _US.fullmatch(text)
    if found is None:
        raise ValueError(text)
    parts = found.groupdict()
    hour = int(parts["hour"] or 0)
    if parts.get("meridiem"):
        if not 1 <= hour <= 12:
            raise ValueError(text)
        hour = hour % 12 + (12 if parts["meridiem"].upper() == "PM" else 0)
    fraction = (parts.get("fraction") or "").ljust(6, "0")[:6]
    moment = datetime(
        int(parts["year"]), int(parts["month"]), int(parts["day"]), hour, int(parts["minute"] or 0),
        int(parts["second"] or 0), int(fraction), tzinfo=UTC,
    )  # fmt: skip
    zone = parts.get("zone")
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        moment -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return moment


def _cdate(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """The date a text stands for, in UTC, shown as ``M/d/yyyy h:mm:ss tt``; null or empty gives None."""
    value = _one(node, _args(node, row, now)[0])
    if _blank(value):
        return None
    if isinstance(value, datetime):
        return EntraDateTime(value)
    try:
        return EntraDateTime(read_date(_text(value)))
    except ValueError:
        raise ExpressionError(f"CDate cannot read {_text(value)!r} as a date", node.column) from None


def _now(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """The run's clock in UTC, shown as ``M/d/yyyy h:mm:ss tt``."""
    if now is None:
        raise ExpressionError("Now needs the run's clock", node.column)
    return EntraDateTime(now)


def _interval(node: Call, value: Any) -> str:
    if not isinstance(value, str) or value not in INTERVALS:
        listed = ", ".join(INTERVALS)
        raise ExpressionError(f"{node.function}'s interval {value!r} is none of the page's ({listed})", node.column)
    return INTERVALS[value]


def _date(node: Call, value: Any, name: str) -> datetime | None:
    """A date argument's moment: a CDate, Now or DateAdd value; null or empty gives None."""
    value = _one(node, value)
    if isinstance(value, EntraDateTime):
        return value.moment
    if _blank(value):
        return None
    raise ExpressionError(
        f"{node.function}'s {name} must be a date from CDate or Now (the page: wrap a date string in CDate), "
        f"not {_text(value)!r}",
        node.column,
    )


def _add_months(moment: datetime, months: int) -> datetime:
    """.NET's AddMonths: the same day, or the month's last day when it has fewer."""
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    following = datetime(year + (month + 1) // 12, (month + 1) % 12 + 1, 1)
    last = (following - timedelta(days=1)).day
    return moment.replace(year=year, month=month + 1, day=min(moment.day, last))


def _date_add(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """The date moved by value intervals (negative: back), shown as ``M/d/yyyy h:mm:ss tt``; null date: None."""
    interval, count, value = _args(node, row, now)
    unit = _interval(node, interval)
    moment = _date(node, value, "dateTime")
    if moment is None or _blank(count):
        return None
    number = _number(count)
    if number is None:
        raise ExpressionError(f"DateAdd's value {_text(count)!r} is not a whole number", node.column)
    try:
        if unit in ("year", "month"):
            return EntraDateTime(_add_months(moment, number * (12 if unit == "year" else 1)))
        step = {"day": timedelta(days=1), "week": timedelta(weeks=1), "hour": timedelta(hours=1),
                "minute": timedelta(minutes=1), "second": timedelta(seconds=1)}[unit]  # fmt: skip
        return EntraDateTime(moment + number * step)
    except (OverflowError, ValueError):
        raise ExpressionError(f"DateAdd takes {moment:%Y-%m-%d} out of the calendar's range", node.column) from None


def _toward_zero(numerator: int, denominator: int) -> int:
    quotient = abs(numerator) // denominator
    return quotient if numerator >= 0 else -quotient


def _date_diff(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """date2 - date1 in intervals, as Visual Basic's DateDiff: years and months by calendar parts, weeks
    by Sundays passed, days to seconds the elapsed time truncated; a null date gives None."""
    interval, first, second = _args(node, row, now)
    unit = _interval(node, interval)
    date1, date2 = _date(node, first, "date1"), _date(node, second, "date2")
    if date1 is None or date2 is None:
        return None
    if unit == "year":
        return date2.year - date1.year
    if unit == "month":
        return (date2.year - date1.year) * 12 + date2.month - date1.month
    if unit == "week":
        date1 -= timedelta(days=date1.isoweekday() % 7)  # back to the week's Sunday, as VB does
        date2 -= timedelta(days=date2.isoweekday() % 7)
        return _toward_zero(_toward_zero((date2 - date1) // timedelta(microseconds=1), 86_400_000_000), 7)
    size = {"day": timedelta(days=1), "hour": timedelta(hours=1), "minute": timedelta(minutes=1),
            "second": timedelta(seconds=1)}[unit]  # fmt: skip
    return _toward_zero((date2 - date1) // timedelta(microseconds=1), size // timedelta(microseconds=1))


# .NET custom date and time format specifiers this module reads and writes, with the run lengths it
# implements; `Z` is .NET's UTC designator when parsing and a literal when formatting.
_SPECIFIERS: Final = {
    "y": {1, 2, 4}, "M": {1, 2, 3, 4}, "d": {1, 2, 3, 4}, "H": {1, 2}, "h": {1, 2}, "m": {1, 2}, "s": {1, 2},
    "f": set(range(1, 8)), "t": {1, 2}, "z": {1, 2, 3}, "K": {1}, "Z": {1},
}  # fmt: skip
_NOT_IMPLEMENTED = "Fg"  # .NET specifiers (F: fractions without trailing zeros, g: era) not implemented here


def _format_tokens(node: Call, form: str) -> list[tuple[str, str]]:
    """A .NET custom format as (specifier, run) and ("", literal text) tokens; a specifier not implemented
    raises ExpressionError naming it."""
    if len(form) == 1 and form != "Z":
        raise ExpressionError(f"FormatDateTime's standard format {form!r} is not implemented", node.column)
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(form):
        char = form[i]
        if char in "'\"":
            end = form.find(char, i + 1)
            if end < 0:
                raise ExpressionError(f"FormatDateTime's format {form!r} does not close its quote", node.column)
            tokens.append(("", form[i + 1 : end]))
            i = end + 1
        elif char == "\\" and i + 1 < len(form):
            tokens.append(("", form[i + 1]))
            i += 2
        elif char == "%" and i + 1 < len(form):
            i += 1  # %d: the specifier d on its own
        elif char in _SPECIFIERS or char in _NOT_IMPLEMENTED:
            run = len(form[i:]) - len(form[i:].lstrip(char))
            if char in _NOT_IMPLEMENTED or run not in _SPECIFIERS[char]:
                raise ExpressionError(
                    f"FormatDateTime's format specifier {char * run!r} is not implemented", node.column
                )
            tokens.append((char, char * run))
            i += run
        else:
            tokens.append(("", char))  # .NET copies any other character (: and / in the invariant culture)
            i += 1
    return tokens


def _names(names: tuple[str, ...], run: int) -> str:
    return "(?i:" + "|".join(n[:3] if run == 3 else n for n in names) + ")"  # names in any case, as .NET reads them


_PATTERNS: Final = {
    "y1": r"\d{1,2}", "y2": r"\d{2}", "y4": r"\d{4}", "M1": r"\d{1,2}", "M2": r"\d{2}",
    "M3": _names(_MONTHS, 3), "M4": _names(_MONTHS, 4), "d1": r"\d{1,2}", "d2": r"\d{2}",
    "d3": _names(_DAYS, 3), "d4": _names(_DAYS, 4), "t1": "(?i:[AP])", "t2": "(?i:AM|PM)",
    "z1": r"[+-]\d{1,2}", "z2": r"[+-]\d{2}", "z3": r"[+-]\d{2}:\d{2}", "K1": r"Z|[+-]\d{2}:\d{2}|", "Z1": "Z",
}  # fmt: skip


def _token_pattern(kind: str, size: int) -> str:
    """What one specifier matches when parsing (.NET: one letter, one or two digits; more, exactly that many)."""
    if kind + str(size) in _PATTERNS:
        return _PATTERNS[kind + str(size)]
    return r"\d{1,2}" if size == 1 and kind != "f" else rf"\d{{{size}}}"


def _parse_date(node: Call, text: str, form: str) -> tuple[datetime, str]:
    """The date `text` holds in .NET format `form`, and its kind: "utc" (a Z), "local" (an offset, converted
    to UTC as the service's local time) or "unspecified"."""
    tokens = _format_tokens(node, form)
    pattern = "".join(
        f"(?P<g{i}>{_token_pattern(kind, len(run))})" if kind else re.escape(run)
        for i, (kind, run) in enumerate(tokens)
    )
    found = re.fullmatch(pattern, text.strip())  # the default styles allow leading and trailing white space
    if found is None:
        raise ExpressionError(f"FormatDateTime cannot read {text!r} as {form!r}", node.column)
    fields: dict[str, Any] = {}
    for i, (kind, run) in enumerate(tokens):
        if kind:
            fields[kind + str(len(run))] = found.group(f"g{i}")
    return _assemble(node, text, form, fields)


def _assemble(node: Call, text: str, form: str, fields: dict[str, str]) -> tuple[datetime, str]:
    def first(*keys: str) -> str | None:
        return next((fields[k] for k in keys if k in fields), None)

    year = first("y4", "y2", "y1")
    if year is None:
        raise ExpressionError(
            f"FormatDateTime's input format {form!r} has no year (.NET would take today's)", node.column
        )
    number = int(year) if "y4" in fields else 2000 + int(year) if int(year) <= 49 else 1900 + int(year)
    month_name = first("M4", "M3")
    month = (
        [m[: len(month_name)].casefold() for m in _MONTHS].index(month_name.casefold()) + 1
        if month_name
        else int(first("M2", "M1") or 1)
    )
    hour = first("H2", "H1")
    meridiem = first("t2", "t1")
    if hour is None and first("h2", "h1") is not None:
        if meridiem is None:
            raise ExpressionError(f"FormatDateTime's input format {form!r} has h (1-12) without tt", node.column)
        hour = str(int(first("h2", "h1") or 0) % 12 + (12 if meridiem.upper().startswith("P") else 0))
    fraction = next((fields[f"f{n}"] for n in range(7, 0, -1) if f"f{n}" in fields), "")
    try:
        moment = datetime(
            number, month, int(first("d2", "d1") or 1), int(hour or 0), int(first("m2", "m1") or 0),
            int(first("s2", "s1") or 0), int(fraction.ljust(6, "0")[:6]),
        )  # fmt: skip
    except ValueError:
        raise ExpressionError(f"FormatDateTime: {text!r} is no date in {form!r}", node.column) from None
    day_name = first("d4", "d3")
    if day_name and not _DAYS[moment.weekday()].casefold().startswith(day_name.casefold()):
        raise ExpressionError(f"FormatDateTime: {text!r} names the wrong weekday", node.column)
    zone = first("z3", "z2", "z1", "K1")
    if "Z1" in fields or zone in ("Z", "z"):
        return moment.replace(tzinfo=UTC), "utc"
    if zone:
        sign = -1 if zone[0] == "-" else 1
        hours, _, minutes = zone[1:].partition(":")
        return moment.replace(tzinfo=UTC) - sign * timedelta(hours=int(hours), minutes=int(minutes or 0)), "local"
    return moment.replace(tzinfo=UTC), "unspecified"


def _format_date(node: Call, moment: datetime, kind: str, form: str) -> str:
    """`moment` written in .NET custom format `form` (the invariant culture's names; UTC as local time)."""
    out = []
    for spec, run in _format_tokens(node, form):
        size = len(run)
        if not spec:
            out.append(run)
        elif spec == "y":
            out.append(f"{moment.year:04}" if size == 4 else f"{moment.year % 100:0{size}}")
        elif spec == "M":
            out.append(_MONTHS[moment.month - 1][: 3 if size == 3 else None] if size > 2 else f"{moment.month:0{size}}")
        elif spec == "d":
            out.append(_DAYS[moment.weekday()][: 3 if size == 3 else None] if size > 2 else f"{moment.day:0{size}}")
        elif spec in "Hhms":
            value = {"H": moment.hour, "h": moment.hour % 12 or 12, "m": moment.minute, "s": moment.second}[spec]
            out.append(f"{value:0{size}}")
        elif spec == "f":
            out.append(f"{moment.microsecond:06}0"[:size])
        elif spec == "t":
            out.append(_meridiem(moment)[:size])
        elif spec == "z":
            out.append({1: "+0", 2: "+00", 3: "+00:00"}[size])
        elif spec == "K":
            out.append({"utc": "Z", "local": "+00:00", "unspecified": ""}[kind])
        else:  # Z
            out.append("Z")
    return "".join(out)


def _format_date_time(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """The source date read in inputFormat, written in outputFormat (.NET custom formats); null or empty:
    None. Only the page's default dateTimeStyles are implemented."""
    values = _args(node, row, now)
    source, styles, input_form, output_form = values if len(values) == 4 else (values[0], None, *values[1:])
    if not _blank(styles):
        raise ExpressionError(
            f"FormatDateTime's dateTimeStyles {_text(styles)!r} is not implemented (leave it out for the page's "
            "default: RoundtripKind, AllowLeadingWhite, AllowTrailingWhite)",
            node.column,
        )
    source = _one(node, source)
    if _blank(source):
        return None
    moment, kind = _parse_date(node, _text(source), _text(input_form))
    return _format_date(node, moment, kind, _text(output_form))


# ---- Replace ----------------------------------------------------------------------------------------

_REPLACE_PARAMETERS = ("oldValue", "regexPattern", "regexGroupName", "replacementValue", "replacementAttributeName",
                       "template")  # fmt: skip
_NAMED_GROUP = re.compile(r"\(\?(?:<(\w+)>|'(\w+)')")
_BACK_REFERENCE = re.compile(r"\\k(?:<(\w+)>|'(\w+)')")
_SUBSTITUTION = re.compile(r"\$(?:(\$)|\{(\w+)\}|(\d+)|([&`'_+]))")


def python_pattern(pattern: str) -> str:
    """A .NET regular expression in Python's syntax: named groups ``(?<name>…)`` / ``(?'name'…)`` and
    back references ``\\k<name>`` rewritten; the rest is the same syntax (a difference fails to compile)."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        char = pattern[i]
        reference = _BACK_REFERENCE.match(pattern, i)
        group = _NAMED_GROUP.match(pattern, i)
        if reference and not in_class:
            out.append(f"(?P={reference.group(1) or reference.group(2)})")
            i = reference.end()
        elif char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
        elif in_class:
            in_class = char != "]"
            out.append(char)
            i += 1
        elif char == "[":
            opening = re.match(r"\[\^?\]?", pattern[i:])
            out.append(opening.group() if opening else char)
            i += len(opening.group()) if opening else 1
            in_class = True
        elif group:
            out.append(f"(?P<{group.group(1) or group.group(2)}>")
            i = group.end()
        else:
            out.append(char)
            i += 1
    return "".join(out)


@cache
def _compiled(pattern: str) -> re.Pattern[str] | str:
    try:
        return re.compile(python_pattern(pattern))
    except re.error as error:
        return str(error)


def _regex(node: Call, pattern: Any) -> re.Pattern[str]:
    compiled = _compiled(_text(pattern))
    if isinstance(compiled, str):
        raise ExpressionError(f"Replace's regexPattern {_text(pattern)!r} cannot be read: {compiled}", node.column)
    return compiled


def _group(node: Call, regex: re.Pattern[str], name: Any) -> str | int:
    key: str | int = int(name) if _text(name).isdigit() else _text(name)
    if key not in regex.groupindex and not (isinstance(key, int) and key <= regex.groups):
        raise ExpressionError(f"Replace's regexGroupName {_text(name)!r} is no group of its regexPattern", node.column)
    return key


def _substitute(replacement: str, found: re.Match[str]) -> str:
    """.NET's replacement text for one match: ``$1``, ``${name}``, ``$&``, ``$```, ``$'``, ``$_``, ``$$``; a
    group the pattern has not stays literal, as in .NET."""

    def one(token: re.Match[str]) -> str:
        dollar, name, number, special = token.groups()
        if dollar:
            return "$"
        if special:
            if special == "+":
                raise ValueError("$+")
            text = found.string
            return {"&": found.group(), "`": text[: found.start()], "'": text[found.end() :], "_": text}[special]
        key: str | int = int(name or number) if (name or number).isdigit() else name
        try:
            return found.group(key) or ""
        except IndexError:
            return token.group()

    return _SUBSTITUTION.sub(one, replacement)


def _replace_text(node: Call, source: Any, given: dict[str, Any]) -> Any:
    """oldValue + replacementValue: every occurrence of oldValue in the source replaced."""
    old = _text(given["oldValue"])
    if old == "":
        raise ExpressionError("Replace's oldValue is empty: there is nothing to look for", node.column)
    return None if source is None else _text(source).replace(old, _text(given["replacementValue"]))


def _replace_in_template(node: Call, source: Any, given: dict[str, Any]) -> Any:
    """oldValue + template: every occurrence of oldValue in the template replaced by the source."""
    old = _text(given["oldValue"])
    if old == "":
        raise ExpressionError("Replace's oldValue is empty: there is nothing to look for", node.column)
    return None if source is None else _text(given["template"]).replace(old, _text(source))


def _replace_regex(node: Call, source: Any, given: dict[str, Any]) -> Any:
    """regexPattern + replacementValue: every match replaced by replacementValue, its ``${group}`` filled in."""
    regex = _regex(node, given["regexPattern"])
    if source is None:
        return None
    try:
        return regex.sub(lambda found: _substitute(_text(given["replacementValue"]), found), _text(source))
    except ValueError:
        raise ExpressionError("Replace's replacementValue uses $+, which is not implemented", node.column) from None


def _replace_group(node: Call, source: Any, given: dict[str, Any]) -> Any:
    """regexPattern + regexGroupName + replacementValue: in every match, the group's text replaced."""
    regex = _regex(node, given["regexPattern"])
    key = _group(node, regex, given["regexGroupName"])
    replacement = _text(given["replacementValue"])
    if "$" in replacement:
        raise ExpressionError(
            "Replace with regexGroupName: the page does not say whether replacementValue's $ substitutes", node.column
        )
    if source is None:
        return None

    def one(found: re.Match[str]) -> str:
        if found.start(key) < 0:
            return found.group()
        text = found.string
        return text[found.start() : found.start(key)] + replacement + text[found.end(key) : found.end()]

    return regex.sub(one, _text(source))


def _replace_from_attribute(node: Call, source: Any, given: dict[str, Any]) -> Any:
    """regexPattern + regexGroupName + replacementAttributeName: the source when it has a value, else the
    group's text in replacementAttributeName's value (None when that is null or empty)."""
    regex = _regex(node, given["regexPattern"])
    key = _group(node, regex, given["regexGroupName"])
    if not _blank(source):
        return source
    other = _one(node, given["replacementAttributeName"])
    if _blank(other):
        return None
    found = regex.search(_text(other))
    if found is None or found.start(key) < 0:
        raise ExpressionError(
            f"Replace: regexPattern finds no {_text(given['regexGroupName'])!r} in {_text(other)!r} and the page "
            "does not say what Replace gives then",
            node.column,
        )
    return found.group(key)


_REPLACE_MODES: Final = {
    frozenset({"oldValue", "replacementValue"}): _replace_text,
    frozenset({"oldValue", "template"}): _replace_in_template,
    frozenset({"regexPattern", "replacementValue"}): _replace_regex,
    frozenset({"regexPattern", "regexGroupName", "replacementValue"}): _replace_group,
    frozenset({"regexPattern", "regexGroupName", "replacementAttributeName"}): _replace_from_attribute,
}


def _replace(node: Call, row: Mapping[str, Any], now: Clock) -> Any:
    """One of the page's five modes, chosen by which arguments are given (not left out by position)."""
    if len(node.arguments) != 1 + len(_REPLACE_PARAMETERS):
        raise ExpressionError(f"Replace takes 7 arguments, not {len(node.arguments)}", node.column)
    source = _one(node, _argument(node, "Replace", node.arguments[0], row, now))
    given = {
        name: _argument(node, "Replace", argument, row, now)
        for name, argument in zip(_REPLACE_PARAMETERS, node.arguments[1:], strict=True)
        if not isinstance(argument, Omitted)
    }
    mode = _REPLACE_MODES.get(frozenset(given))
    if mode is None:
        named = " + ".join(given) or "no argument but source"
        raise ExpressionError(f"Replace with {named} is none of the page's modes", node.column)
    return mode(node, source, given)


FUNCTIONS: dict[str, Function] = {
    "Append": _append,
    "CBool": _cbool,
    "CDate": _cdate,
    "Coalesce": _coalesce,
    "CStr": _cstr,
    "DateAdd": _date_add,
    "DateDiff": _date_diff,
    "FormatDateTime": _format_date_time,
    "IgnoreFlowIfNullOrEmpty": _ignore_flow,
    "IIF": _iif,
    "InStr": _instr,
    "IsNull": _is_null,
    "IsNullOrEmpty": _is_null_or_empty,
    "IsPresent": _is_present,
    "IsString": _is_string,
    "Item": _item,
    "Join": _join,
    "Left": _left,
    "Mid": _mid,
    "NormalizeDiacritics": _normalize,
    "Not": _not,
    "Now": _now,
    "RemoveDuplicates": _remove_duplicates,
    "Replace": _replace,
    "Split": _split,
    "StripSpaces": _strip_spaces,
    "Switch": _switch,
    "ToLower": _lower,
    "ToUpper": _upper,
    "Word": _word,
}
