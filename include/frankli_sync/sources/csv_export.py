"""Entra admin center "Download users" CSV → staging rows, in pages, like the Graph source.

The export's columns are Graph attribute names, except where noted below.
It carries no manager and no hire date: tenants synced from the CSV get no
manager links and no start dates (the mapping can point those fields at
columns that exist).

Evidence, not counts (DESIGN.md §2 Safety): a file source is complete only when
every record parsed against the header. A missing row means an archived person,
so the file is read twice: the first pass checks every line and stages nothing,
the second yields pages, and it must read the very bytes the first one checked.

Why not `csv.DictReader`: on this Python even `strict=True` accepts a stray quote
inside an unquoted value, a NUL and a value running over several lines, and an
unterminated quote swallows the rest of the file into one field (it is reported,
if at all, at the last line and never with the column). The export's grammar is
smaller than what csv accepts — one record per physical line, a value either
unquoted (no quote, no comma) or quoted with its quotes doubled — so each line is
split by that grammar, which names the exact line and column of any departure.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from frankli_sync.entra import ENTRA_ATTRIBUTES, NUL
from frankli_sync.errors import SyncStopped

# Export column → Graph attribute, where the export names it differently.
RENAMED = {
    "objectId": "id",
    "physicalDeliveryOfficeName": "officeLocation",
    "telephoneNumber": "businessPhones",
    "mobile": "mobilePhone",
}
REQUIRED_COLUMNS = ("objectId", "userPrincipalName", "accountEnabled")
# The columns of the admin center's "Download users" file, in its order (others are ignored when read).
EXPORT_COLUMNS = (
    "userPrincipalName",
    "displayName",
    "surname",
    "mail",
    "givenName",
    "objectId",
    "userType",
    "jobTitle",
    "department",
    "accountEnabled",
    "usageLocation",
    "streetAddress",
    "state",
    "country",
    "physicalDeliveryOfficeName",
    "city",
    "postalCode",
    "telephoneNumber",
    "mobile",
)

# A user's line is a few hundred characters; this only bounds memory on a file that is not an export.
MAX_LINE_CHARS = 1_000_000

REDOWNLOAD = "Nothing was staged from this file: download the users again from the Entra admin center and replace it"
FIX_QUOTE = "Nothing was staged from this file: fix the quote, or download the users again from the Entra admin center"

# Possessive (`*+`): an opening quote whose doubled quotes run to the end of the line is unterminated,
# not a shorter value followed by stray text.
_QUOTED = re.compile(r'"((?:[^"]|"")*+)"')
_UNQUOTED = re.compile(r'[^",]*')
# A whole well-formed line, matched in one call: the common case never walks the values in Python.
_VALUE = r'(?:"(?:[^"]|"")*+"|[^",]*)'
_WELL_FORMED = re.compile(rf"{_VALUE}(?:,{_VALUE})*+")
# The file is decoded with `surrogateescape`: each byte that is not UTF-8 becomes one lone surrogate.
_NOT_UTF8 = re.compile(r"[\udc80-\udcff]")


class CsvSourceError(ValueError):
    """The CSV file cannot be staged whole; the message names the file (and line and column) and the fix.

    This base class is retried by Airflow: the file may be missing or being written right now.
    """


class CsvMalformed(CsvSourceError, SyncStopped):
    """The file is not a whole Entra users export. Retrying reads the same bytes: the task fails at once."""


class CsvFileChanged(CsvSourceError):
    """The file changed while it was read: a retry reads it once it is finished."""


class _Malformed(ValueError):
    """A line departs from the export's grammar at value `index` (0-based, None: the whole line).

    Raised by the pure line functions; `_located` turns it into a CsvMalformed naming file, line and column.
    """

    def __init__(self, index: int | None, problem: str, advice: str = REDOWNLOAD) -> None:
        super().__init__(problem)
        self.index = index
        self.problem = problem
        self.advice = advice


@dataclass
class _Reading:
    """What one pass read: how many records, and a hash of every byte, to prove the second pass read the same."""

    records: int = 0
    digest: Any = field(default_factory=hashlib.sha256)


@dataclass(frozen=True)
class _Checked:
    records: int
    digest: str
    stamp: tuple[int, ...]


# --------------------------------------------------------------------------- public


def check_csv(path: str | Path) -> int:
    """Parse the whole file strictly, staging nothing; return its number of records or raise CsvSourceError."""
    return _check(Path(path)).records


def read_csv_pages(path: str | Path, page_size: int = 1000) -> Iterator[list[dict[str, Any]]]:
    """Yield staging rows in pages, only once the whole file has parsed; the file is streamed, never held.

    First pass: every line is checked (nothing is yielded). Second pass: the rows are yielded,
    and the file must be the one the first pass checked (same inode, size, times and hash).
    """
    path = Path(path)
    checked = _check(path)
    reading = _Reading()
    page: list[dict[str, Any]] = []
    with _open(path) as handle:
        if _stamp(handle) != checked.stamp:
            raise _changed(path, "between the check and the read")
        try:
            for row in _staging_rows(handle, path, reading):
                page.append(row)
                if len(page) >= page_size:
                    yield page
                    page = []
        except CsvSourceError as error:
            # The first pass parsed every line: one that no longer parses belongs to a file that changed.
            raise _changed(path, "while it was read (a line the check accepted no longer parses)") from error
        if _stamp(handle) != checked.stamp or (reading.records, reading.digest.hexdigest()) != (
            checked.records,
            checked.digest,
        ):
            raise _changed(path, "while it was read")
    if page:
        yield page


# --------------------------------------------------------------------------- the two passes


def _check(path: Path) -> _Checked:
    if not path.is_file():
        raise CsvSourceError(f"CSV source {path} does not exist")
    reading = _Reading()
    with _open(path) as handle:
        stamp = _stamp(handle)
        for _ in _staging_rows(handle, path, reading):
            pass
        if _stamp(handle) != stamp:
            raise _changed(path, "while it was checked")
    return _Checked(records=reading.records, digest=reading.digest.hexdigest(), stamp=stamp)


def _open(path: Path) -> IO[str]:
    # newline="": line ends reach the parser untouched, so a quoted value cannot hide one.
    return path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")


def _stamp(handle: IO[str]) -> tuple[int, ...]:
    """Identity and version of the open file: a file replaced (new inode) or rewritten (size, times) differs.

    ctime too: a rewrite can restore the mtime (`touch -r`, copy tools) but every write moves the ctime.
    """
    status = os.fstat(handle.fileno())
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def _changed(path: Path, when: str) -> CsvFileChanged:
    return CsvFileChanged(
        f"CSV source {path} changed {when}; the extract stops rather than stage a mix of two files. "
        "Re-run once nothing is writing the file (copy a finished download into place in one move)."
    )


def _staging_rows(handle: IO[str], path: Path, reading: _Reading) -> Iterator[dict[str, Any]]:
    """Every record of the open file as a staging row, in file order; raises CsvSourceError at the first bad line."""
    lines = _lines(handle, path, reading)
    first = next(lines, None)
    if first is None:
        raise CsvMalformed(f"CSV source {path} is empty: no header row. {REDOWNLOAD}")
    header = _header(first[1], path)
    layout = _layout(header)
    for number, text in lines:
        try:
            values = _values(text, len(header))
        except _Malformed as bad:
            raise _located(path, number, header, bad) from None
        yield _row(values, layout, path, number)
        reading.records += 1


def _lines(handle: IO[str], path: Path, reading: _Reading) -> Iterator[tuple[int, str]]:
    """(1-based physical line number, line without its line end), hashing every byte read."""
    number = 0
    while line := handle.readline(MAX_LINE_CHARS):
        number += 1
        reading.digest.update(line.encode("utf-8", "surrogateescape"))
        if len(line) >= MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
            raise CsvMalformed(
                f"CSV source {path}, line {number}: longer than {MAX_LINE_CHARS} characters, "
                f"not an Entra users export. {REDOWNLOAD}"
            )
        yield number, _without_line_end(line)


def _without_line_end(line: str) -> str:
    if line.endswith("\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith(("\n", "\r")) else line


# --------------------------------------------------------------------------- one line


def _split(text: str) -> list[str]:
    """The values of one physical line by the export's grammar (RFC 4180, no line break inside a value).

    Raises `_Malformed` naming the 0-based value index where the line departs from it.
    """
    if '"' not in text:
        return text.split(",")  # nothing quoted, nothing to get wrong
    if _WELL_FORMED.fullmatch(text):
        # On a line of this grammar csv (in C) reads exactly these values; it is only trusted after the match,
        # as on its own it accepts a stray quote, and an unclosed one at the end of its input.
        return next(csv.reader((text,), strict=True))
    raise _departure(text)


def _departure(text: str) -> _Malformed:
    """Where and how a line that is not well-formed departs from the grammar: walked value by value."""
    position = 0
    index = 0
    while True:
        if text.startswith('"', position):
            quoted = _QUOTED.match(text, position)
            if quoted is None:
                return _Malformed(
                    index,
                    f"the quoted value {_excerpt(text[position:])} is not closed on this line: an unterminated quote, "
                    "or a value spanning lines, which the Entra export never writes",
                    FIX_QUOTE,
                )
            position = quoted.end()
        else:
            unquoted = _UNQUOTED.match(text, position)
            assert unquoted is not None  # `[^",]*` matches even the empty string
            start, position = position, unquoted.end()
            if text.startswith('"', position):
                return _Malformed(
                    index,
                    f"a quote inside the unquoted value {_excerpt(text[start : position + 1])} "
                    "(a value holding a quote must be quoted, its quotes doubled)",
                    FIX_QUOTE,
                )
        if position == len(text):
            return _Malformed(None, "the line does not parse")  # unreachable while _WELL_FORMED is this grammar
        if text[position] != ",":
            return _Malformed(
                index,
                f"text {_excerpt(text[position:])} after the closing quote of the value "
                "(a quote inside a quoted value must be doubled)",
                FIX_QUOTE,
            )
        position += 1
        index += 1


def _values(text: str, width: int) -> list[str]:
    """A record's values, exactly `width` of them, each UTF-8 and free of NUL."""
    if text == "":
        raise _Malformed(None, "an empty line (the Entra export writes none)")
    values = _split(text)
    if len(values) < width:
        raise _Malformed(
            len(values), f"{len(values)} values where the header has {width}: the record is cut short here"
        )
    if len(values) > width:
        raise _Malformed(
            width, f"{len(values)} values where the header has {width} (an unquoted comma, or a stray column?)"
        )
    if NUL in text or _NOT_UTF8.search(text):  # rare: only then look for the value that holds it
        for index, value in enumerate(values):
            _check_characters(value, index)
    return values


def _check_characters(value: str, index: int) -> None:
    if NUL in value:
        raise _Malformed(index, "a NUL byte (the file is binary or damaged, not a text export)")
    if bad := _NOT_UTF8.search(value):
        byte = ord(bad.group()) - 0xDC00
        raise _Malformed(
            index,
            f"byte 0x{byte:02X}, which is not UTF-8 (the export is UTF-8; was the file re-saved in another encoding?)",
        )


def _header(text: str, path: Path) -> list[str]:
    """The header's column names, checked: the required ones present, each name UTF-8 and used once.

    The required columns come first: a data row in line 1 is a missing header, not a duplicate name.
    """
    if text == "":
        raise CsvMalformed(f"CSV source {path}, line 1: empty, where the header row should be. {REDOWNLOAD}")
    try:
        header = _split(text)
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            shown = ", ".join(_excerpt(name) for name in header[:6]) + (", …" if len(header) > 6 else "")
            raise _Malformed(
                None,
                f"not the header of an Entra users export, missing column(s) {', '.join(missing)} (found {shown}); "
                "the first line must be the export's header row",
            )
        seen: dict[str, int] = {}
        for index, name in enumerate(header):
            _check_characters(name, index)
            if name.strip() == "":
                raise _Malformed(index, "a header column with no name")
            if name in seen:
                raise _Malformed(index, f"the header names {name!r} twice (columns {seen[name] + 1} and {index + 1})")
            seen[name] = index
    except _Malformed as bad:
        raise _located(path, 1, None, bad) from None
    return header


def _located(path: Path, line: int, header: list[str] | None, bad: _Malformed) -> CsvMalformed:
    where = f"line {line}" if bad.index is None else f"line {line}, {_column(header, bad.index)}"
    return CsvMalformed(f"CSV source {path}, {where}: {bad.problem}. {bad.advice}")


def _column(header: list[str] | None, index: int) -> str:
    """'column 16 (city)': the 1-based position, as a spreadsheet counts, and the header's name for it."""
    if header is None:
        return f"column {index + 1}"
    if index < len(header):
        return f"column {index + 1} ({header[index]})"
    return f"column {index + 1} (past the header's {len(header)} columns)"


def _excerpt(text: str, limit: int = 24) -> str:
    """A short quote of the offending text: enough to find it in the file, not a whole record of personal data."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


# --------------------------------------------------------------------------- one record


@dataclass(frozen=True)
class _Layout:
    """Where each staged attribute sits in this file's records, worked out once from the header."""

    header: tuple[str, ...]
    columns: tuple[tuple[int, str], ...]  # (value index, staging column), in header order
    enabled: int  # value index of accountEnabled


def _layout(header: list[str]) -> _Layout:
    columns = []
    for index, column in enumerate(header):
        attribute = RENAMED.get(column, column)
        staging_column = ENTRA_ATTRIBUTES.get(attribute)
        # Unknown columns are ignored; the export has no manager, and a column named so is no manager id.
        if staging_column is not None and attribute != "manager":
            columns.append((index, staging_column))
    return _Layout(tuple(header), tuple(columns), header.index("accountEnabled"))


def _row(values: list[str], layout: _Layout, path: Path, line: int) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(ENTRA_ATTRIBUTES.values())
    for index, staging_column in layout.columns:
        row[staging_column] = values[index] or None  # an empty value is no value, as Graph's null
    enabled = values[layout.enabled].strip().lower()
    if enabled not in ("true", "false"):
        column = _column(list(layout.header), layout.enabled)
        raise CsvMalformed(
            f"CSV source {path}, line {line}, {column}: {_excerpt(values[layout.enabled])} is neither true nor "
            f"false. {REDOWNLOAD}"
        )
    row["account_enabled"] = enabled == "true"
    return row
