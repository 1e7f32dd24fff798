"""The Entra "Download users" CSV source: a file stages only when every record parsed against the header.

Issue 10, defect 1: one unterminated quote swallowed the rest of a file into one
field and the missing users were archived. Each malformed case below must raise
`CsvSourceError` naming the file, the physical line where the bad record starts
and (where it applies) the column, and `read_csv_pages` must yield no page at all
from such a file. Files are real files in tmp_path, written byte for byte.
"""

from __future__ import annotations

import csv
import io
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from frankli_sync.entra import ENTRA_ATTRIBUTES
from frankli_sync.sources import csv_export
from frankli_sync.sources.csv_export import EXPORT_COLUMNS, CsvSourceError, read_csv_pages

pytestmark = pytest.mark.unit

# The admin center's "Download users" columns (FIELD_NOTES), in its order.
COLUMNS = list(EXPORT_COLUMNS)
CITY = COLUMNS.index("city")  # 0-based: column 16 in the messages
BOM = "\ufeff"


# --------------------------------------------------------------------------- writing exports


def _user(n: int) -> dict[str, str]:
    upn = f"person{n:03d}@contoso.example"
    return {
        "userPrincipalName": upn,
        "displayName": f"Person {n:03d}, Jr.",  # a comma: the export quotes it
        "surname": f"Surname{n:03d}",
        "mail": upn,
        "givenName": f"Given{n:03d}",
        "objectId": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"person{n}.contoso.example")),
        "userType": "Member",
        "jobTitle": 'Engineer "II"' if n % 7 == 0 else "Engineer",
        "department": "R&D, Platform" if n % 3 == 0 else "Sales",
        "accountEnabled": "True" if n % 11 else "False",
        "usageLocation": "AU",
        "streetAddress": "" if n % 5 == 0 else f"{n} George St",
        "state": "NSW",
        "country": "Australia",
        "physicalDeliveryOfficeName": "Sydney HQ",
        "city": "Sydney",
        "postalCode": "2000",
        "telephoneNumber": f"+61 2 9000 {n:04d}",
        "mobile": "",
    }


def _line(values: list[str], quoting: int = csv.QUOTE_MINIMAL) -> str:
    """One record as the export writes it (no line end)."""
    buffer = io.StringIO()
    csv.writer(buffer, quoting=quoting, lineterminator="").writerow(values)
    return buffer.getvalue()


def _lines(count: int, quoting: int = csv.QUOTE_MINIMAL) -> list[str]:
    """Header and `count` records; list index i is physical line i + 1."""
    return [_line(COLUMNS, quoting)] + [_line([_user(n)[c] for c in COLUMNS], quoting) for n in range(1, count + 1)]


def _write(path: Path, lines: list[str], end: str = "\r\n", prefix: str = BOM) -> Path:
    """The file as the admin center saves it: UTF-8 with BOM, CRLF after every line."""
    path.write_bytes((prefix + "".join(line + end for line in lines)).encode("utf-8"))
    return path


def _with_city(lines: list[str], line_number: int, raw_city: str) -> list[str]:
    """`lines` with the city of physical line `line_number` replaced by raw text (quotes and all)."""
    values = _split_valid(lines[line_number - 1])
    values[CITY] = "\x00CITY\x00"
    changed = _line(values).replace("\x00CITY\x00", raw_city)
    return [*lines[: line_number - 1], changed, *lines[line_number:]]


def _split_valid(line: str) -> list[str]:
    return next(csv.reader([line]))


# --------------------------------------------------------------------------- assertions


def _collect(path: Path, page_size: int = 1000) -> list[list[dict[str, Any]]]:
    return list(read_csv_pages(path, page_size))


def _refused(path: Path, line: int, column: tuple[int, str] | None = None) -> str:
    """Reading `path` raises naming the file, line and column, and yields no page first; returns the message."""
    yielded: list[list[dict[str, Any]]] = []
    with pytest.raises(CsvSourceError) as caught:
        for page in read_csv_pages(path, page_size=1):
            yielded.append(page)
    assert yielded == [], "no page may come from a file that does not parse whole"
    message = str(caught.value)
    assert str(path) in message
    assert re.search(rf"\bline {line}\b", message), message
    if column is not None:
        position, name = column
        assert f"column {position} ({name})" in message, message
    with pytest.raises(CsvSourceError) as checked:
        csv_export.check_csv(path)  # looked up here: the behaviour above is what a run depends on
    assert str(checked.value) == message, "the check and the read give the same answer"
    return message


def _says_what_to_do(message: str) -> None:
    assert "download the users again" in message or "fix the quote" in message, message


# --------------------------------------------------------------------------- the file


def test_unterminated_quote_on_line_382_of_400_names_line_and_column_and_yields_nothing(tmp_path: Path) -> None:
    lines = _with_city(_lines(400), 382, '"Sydney')
    path = _write(tmp_path / "users.csv", lines)

    message = _refused(path, line=382, column=(CITY + 1, "city"))

    assert "not closed" in message and "'\"Sydney" in message
    assert "fix the quote" in message


def test_malformed_file_fails_without_task_retries_a_changing_one_is_retried(tmp_path: Path) -> None:
    """Retrying reads the same bad bytes (SyncStopped: the DAG fails the task at once); a file still
    being written may be whole at the next try, so that error is left to Airflow's retries."""
    from frankli_sync.errors import SyncStopped

    bad = _write(tmp_path / "bad.csv", _with_city(_lines(10), 5, '"Sydney'))
    with pytest.raises(csv_export.CsvMalformed) as malformed:
        list(read_csv_pages(bad))
    assert isinstance(malformed.value, SyncStopped)
    assert not issubclass(csv_export.CsvFileChanged, SyncStopped)
    assert issubclass(csv_export.CsvFileChanged, CsvSourceError)


# --------------------------------------------------------------------------- one test per malformed case


def test_short_record(tmp_path: Path) -> None:
    lines = _lines(5)
    lines[3] = _line(_split_valid(lines[3])[:CITY])  # cut short before city
    message = _refused(_write(tmp_path / "short.csv", lines), line=4, column=(CITY + 1, "city"))
    assert f"{CITY} values where the header has {len(COLUMNS)}" in message
    _says_what_to_do(message)


def test_long_record(tmp_path: Path) -> None:
    lines = _lines(5)
    lines[2] += ",surplus"
    message = _refused(_write(tmp_path / "long.csv", lines), line=3)
    assert f"column {len(COLUMNS) + 1} (past the header's {len(COLUMNS)} columns)" in message
    _says_what_to_do(message)


def test_unterminated_quote_on_the_last_line(tmp_path: Path) -> None:
    lines = _with_city(_lines(5), 6, '"Sydney')
    message = _refused(_write(tmp_path / "eof.csv", lines), line=6, column=(CITY + 1, "city"))
    _says_what_to_do(message)


@pytest.mark.parametrize("line_break", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_quoted_value_spanning_lines(tmp_path: Path, line_break: str) -> None:
    # Valid RFC 4180, but the Entra export never writes a line break inside a value.
    lines = _with_city(_lines(5), 3, f'"Syd{line_break}ney"')
    message = _refused(_write(tmp_path / "multiline.csv", lines), line=3, column=(CITY + 1, "city"))
    assert "spanning lines" in message
    _says_what_to_do(message)


def test_stray_quote_inside_an_unquoted_value(tmp_path: Path) -> None:
    lines = _with_city(_lines(5), 4, 'Syd"ney')
    message = _refused(_write(tmp_path / "stray.csv", lines), line=4, column=(CITY + 1, "city"))
    assert "quote inside the unquoted value" in message
    _says_what_to_do(message)


def test_text_after_a_closing_quote(tmp_path: Path) -> None:
    lines = _with_city(_lines(5), 5, '"Syd"ney')
    message = _refused(_write(tmp_path / "after.csv", lines), line=5, column=(CITY + 1, "city"))
    assert "after the closing quote" in message


def test_nul_byte(tmp_path: Path) -> None:
    lines = _with_city(_lines(5), 2, "Syd\x00ney")
    message = _refused(_write(tmp_path / "nul.csv", lines), line=2, column=(CITY + 1, "city"))
    assert "NUL" in message


def test_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = _write(tmp_path / "latin1.csv", _with_city(_lines(5), 3, "Sydn\x00y"))
    path.write_bytes(path.read_bytes().replace(b"\x00", b"\xe9"))  # 'é' as Latin-1 saves it
    message = _refused(path, line=3, column=(CITY + 1, "city"))
    assert "0xE9" in message and "not UTF-8" in message


@pytest.mark.parametrize("content", [b"", BOM.encode()], ids=["zero-bytes", "bom-only"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(CsvSourceError, match="is empty") as caught:
        _collect(path)
    assert str(path) in str(caught.value)
    _says_what_to_do(str(caught.value))


def test_headerless_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "noheader.csv", _lines(5)[1:])
    message = _refused(path, line=1)
    assert "missing column(s) objectId, userPrincipalName, accountEnabled" in message
    assert "header row" in message


def test_duplicate_header_names(tmp_path: Path) -> None:
    lines = _lines(3)
    lines[0] = lines[0].replace("postalCode", "city")  # 'city' at columns 16 and 17
    message = _refused(_write(tmp_path / "dup.csv", lines), line=1)
    assert f"column {CITY + 2}" in message and "'city' twice" in message


def test_header_column_without_a_name(tmp_path: Path) -> None:
    lines = _lines(3)
    lines[0] = lines[0].replace("state", "")
    message = _refused(_write(tmp_path / "noname.csv", lines), line=1)
    assert f"column {COLUMNS.index('state') + 1}" in message and "no name" in message


def test_missing_required_column(tmp_path: Path) -> None:
    lines = [",".join(c for c in COLUMNS if c != "accountEnabled")]
    message = _refused(_write(tmp_path / "nocolumn.csv", lines), line=1)
    assert "missing column(s) accountEnabled" in message


def test_empty_line_between_records(tmp_path: Path) -> None:
    lines = _lines(5)
    lines.insert(3, "")
    message = _refused(_write(tmp_path / "blank.csv", lines), line=4)
    assert "empty line" in message


def test_account_enabled_must_be_true_or_false(tmp_path: Path) -> None:
    lines = _lines(5)
    values = _split_valid(lines[4])
    values[COLUMNS.index("accountEnabled")] = "yes"
    lines[4] = _line(values)
    message = _refused(_write(tmp_path / "enabled.csv", lines), line=5, column=(10, "accountEnabled"))
    assert "'yes' is neither true nor false" in message


def test_line_too_long_to_be_an_export(tmp_path: Path) -> None:
    # Memory stays bounded on a file without line ends: it is refused, never read whole.
    lines = _with_city(_lines(3), 3, "S" * csv_export.MAX_LINE_CHARS)
    message = _refused(_write(tmp_path / "long-line.csv", lines), line=3)
    assert "longer than" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CsvSourceError, match="does not exist"):
        _collect(tmp_path / "nowhere.csv")


# --------------------------------------------------------------------------- the file must not change under the read


def test_file_rewritten_during_the_read_stops_it(tmp_path: Path) -> None:
    path = _write(tmp_path / "users.csv", _lines(400))
    pages = read_csv_pages(path, page_size=10)
    first = next(pages)
    assert len(first) == 10
    # Same size, one user's city changed, mtime put back: only the write itself (ctime, digest) shows it.
    before = path.stat()
    content = path.read_bytes()
    path.write_bytes(content.replace(b"Sydney", b"Sydnex", 1))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    with pytest.raises(csv_export.CsvFileChanged, match=r"changed while it was read") as caught:
        list(pages)
    assert str(path) in str(caught.value)


def test_file_appended_to_during_the_read_stops_it(tmp_path: Path) -> None:
    lines = _lines(400)
    path = _write(tmp_path / "users.csv", lines)
    pages = read_csv_pages(path, page_size=100)
    next(pages)
    with path.open("ab") as handle:
        handle.write((_line([_user(401)[c] for c in COLUMNS]) + "\r\n").encode())
    with pytest.raises(CsvSourceError, match="changed while it was read"):
        list(pages)


# --------------------------------------------------------------------------- a valid export


def _rows_as_csv_dictreader_reads_them(path: Path) -> list[dict[str, Any]]:
    """What the source staged before the strict parser (csv.DictReader), for files that are valid."""
    renamed = csv_export.RENAMED
    rows = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for record in csv.DictReader(handle):
            row: dict[str, Any] = dict.fromkeys(ENTRA_ATTRIBUTES.values())
            for column, value in record.items():
                attribute = renamed.get(column, column)
                if attribute in ENTRA_ATTRIBUTES and attribute != "manager":
                    row[ENTRA_ATTRIBUTES[attribute]] = value or None
            row["account_enabled"] = record["accountEnabled"].strip().lower() == "true"
            rows.append(row)
    return rows


@pytest.mark.parametrize(
    ("quoting", "end", "prefix"),
    [
        (csv.QUOTE_MINIMAL, "\r\n", BOM),
        (csv.QUOTE_ALL, "\r\n", BOM),
        (csv.QUOTE_MINIMAL, "\n", ""),
    ],
    ids=["minimal-crlf-bom", "all-quoted-crlf-bom", "minimal-lf-no-bom"],
)
def test_valid_export_stages_the_same_rows_as_before(tmp_path: Path, quoting: int, end: str, prefix: str) -> None:
    lines = _lines(40, quoting)
    lines[5] = lines[5].replace("Sydney", "Zürich")  # non-ASCII survives the round trip
    path = _write(tmp_path / "users.csv", lines, end=end, prefix=prefix)

    pages = _collect(path, page_size=15)

    assert [len(page) for page in pages] == [15, 15, 10]
    rows = [row for page in pages for row in page]
    assert rows == _rows_as_csv_dictreader_reads_them(path)
    third = rows[2]  # person003: department and display name hold commas, street is set
    assert third["department"] == "R&D, Platform" and third["display_name"] == "Person 003, Jr."
    assert rows[6]["job_title"] == 'Engineer "II"'  # doubled quotes undone
    assert rows[4]["street_address"] is None and rows[0]["mobile_phone"] is None  # empty → None, as before
    assert rows[4]["city"] == "Zürich"
    assert rows[10]["account_enabled"] is False and rows[0]["account_enabled"] is True
    assert rows[0]["object_id"] == _user(1)["objectId"]
    assert rows[0]["user_principal_name"] == rows[0]["mail"] == "person001@contoso.example"


def test_last_line_without_a_line_end_and_empty_last_value(tmp_path: Path) -> None:
    lines = _lines(3)
    path = tmp_path / "users.csv"
    path.write_bytes((BOM + "\r\n".join(lines)).encode())  # no CRLF after the last record
    rows = [row for page in _collect(path) for row in page]
    assert len(rows) == 3 and rows[2]["mobile_phone"] is None


def test_header_only_export_is_valid_and_empty(tmp_path: Path) -> None:
    path = _write(tmp_path / "users.csv", _lines(0))
    assert _collect(path) == []


@pytest.mark.parametrize("records", [0, 1, 40])
def test_check_csv_counts_the_records_and_stages_nothing(tmp_path: Path, records: int) -> None:
    path = _write(tmp_path / "users.csv", _lines(records))
    assert csv_export.check_csv(path) == records
