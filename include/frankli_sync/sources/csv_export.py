"""Entra admin center "Download users" CSV → staging rows, in pages, like the Graph source.

The export's columns are Graph attribute names, except where noted below.
It carries no manager and no hire date: tenants synced from the CSV get no
manager links and no start dates (the mapping can point those fields at
columns that exist).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from frankli_sync.entra import ENTRA_ATTRIBUTES

# Export column → Graph attribute, where the export names it differently.
RENAMED = {
    "objectId": "id",
    "physicalDeliveryOfficeName": "officeLocation",
    "telephoneNumber": "businessPhones",
    "mobile": "mobilePhone",
}
REQUIRED_COLUMNS = ("objectId", "userPrincipalName", "accountEnabled")


class CsvSourceError(ValueError):
    """The CSV file is not an Entra users export; the message names the file and the column or row."""


def read_csv_pages(path: str | Path, page_size: int = 1000) -> Iterator[list[dict[str, Any]]]:
    """Yield staging rows in pages; the file is streamed, never held whole."""
    path = Path(path)
    if not path.is_file():
        raise CsvSourceError(f"CSV source {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise CsvSourceError(f"CSV source {path}: missing column(s) {missing}; found {header}")
        page: list[dict[str, Any]] = []
        for line, record in enumerate(reader, start=2):
            page.append(_row(record, path, line))
            if len(page) >= page_size:
                yield page
                page = []
        if page:
            yield page


def _row(record: dict[str, str], path: Path, line: int) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(ENTRA_ATTRIBUTES.values())
    for column, value in record.items():
        attribute = RENAMED.get(column, column)
        staging_column = ENTRA_ATTRIBUTES.get(attribute)
        if staging_column is None or attribute == "manager":
            continue
        row[staging_column] = value if value != "" else None
    enabled = (record.get("accountEnabled") or "").strip().lower()
    if enabled not in ("true", "false"):
        raise CsvSourceError(f"CSV source {path} line {line}: accountEnabled {record.get('accountEnabled')!r}")
    row["account_enabled"] = enabled == "true"
    return row
