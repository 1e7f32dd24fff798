"""Issue 10, defect 1: a malformed CSV export silently archived people.

A tenant synced from the Entra admin center's "Download users" file: one
unterminated quote (`"Sydney` in the city of line 382) swallowed the rest of the
file into one field, the run staged 381 rows, ended `success`, and archived the
users after line 382 as `not_in_source`. Now a file source is complete only when
every record parsed against the header (DESIGN.md §2, "Evidence, not counts"):
the extract fails naming the file, line and column, nothing is staged, and
Frankli is left exactly as the last good run left it. Runs the real DAG once per
Frankli backend.
"""

from __future__ import annotations

import csv
import uuid
from pathlib import Path
from typing import Any

import pytest
from frankli_sync.sources.csv_export import EXPORT_COLUMNS, CsvSourceError

USERS = 400
BROKEN_LINE = 382  # physical line: the header is line 1
# The admin center's "Download users" columns (FIELD_NOTES), in its order.
COLUMNS = list(EXPORT_COLUMNS)
FRANKLI_TABLES = ("organisations", "sites", "departments", "roles", "users", "sync_audit")


def _user(n: int) -> list[str]:
    upn = f"person{n:03d}@contoso.example"
    values = {
        "userPrincipalName": upn,
        "displayName": f"Given{n:03d} Surname{n:03d}",
        "surname": f"Surname{n:03d}",
        "mail": upn,
        "givenName": f"Given{n:03d}",
        "objectId": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"person{n}.contoso.example")),
        "userType": "Member",
        "jobTitle": ("Engineer", "Analyst", "Designer")[n % 3],
        # Quoted by the export (a comma), but only early in the file: after line 382 no quote follows, so
        # csv.DictReader swallowed the rest of the file into that one city, as in the issue.
        "department": ("R&D, Platform" if n < 300 else "Platform", "Finance", "Design")[n % 3],
        "accountEnabled": "True",
        "usageLocation": "AU",
        "streetAddress": f"{n} George St",
        "state": "NSW",
        "country": "Australia",
        "physicalDeliveryOfficeName": "Sydney HQ",
        "city": "Sydney",
        "postalCode": "2000",
        "telephoneNumber": f"+61 2 9000 {n:04d}",
        "mobile": "",
    }
    return [values[column] for column in COLUMNS]


def _write_export(path: Path, broken_line: int | None = None) -> None:
    """The export as the admin center writes it (UTF-8 with BOM, CRLF); optionally one city's closing quote lost."""
    with path.open("w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.writer(handle)  # QUOTE_MINIMAL, "\r\n"
        writer.writerow(COLUMNS)
        writer.writerows(_user(n) for n in range(1, USERS + 1))
    if broken_line is not None:
        lines = path.read_bytes().split(b"\r\n")
        record = lines[broken_line - 1]
        assert record.count(b",Sydney,") == 1
        lines[broken_line - 1] = record.replace(b",Sydney,", b',"Sydney,')
        path.write_bytes(b"\r\n".join(lines))


def _frankli(tenant: Any) -> dict[str, list[dict[str, Any]]]:
    """Every row of every Frankli table."""
    return {name: tenant.table(name) for name in FRANKLI_TABLES}


def _staged_rows(tenant: Any, run_id: str) -> int:
    """Rows staged for the run, complete snapshot or not (the staging table itself, not the snapshot API)."""
    from frankli_sync.connections import staging_engine
    from frankli_sync.staging import staged_users
    from sqlalchemy import func, select

    engine = staging_engine(f"staging_{tenant.name}")
    try:
        with engine.connect() as connection:
            query = select(func.count()).where(staged_users.c.tenant == tenant.name, staged_users.c.run_id == run_id)
            return int(connection.execute(query).scalar_one())
    finally:
        engine.dispose()


def test_defect1_malformed_csv_export_fails_the_extract_and_archives_nobody(
    make_tenant, frankli_url, tmp_path_factory
) -> None:
    export = tmp_path_factory.mktemp("export") / "users.csv"
    _write_export(export)
    tenant = make_tenant(users=5, frankli_url=frankli_url, source={"kind": "csv", "path": str(export)})

    # Day 1: a whole export.
    tenant.run()
    after_day1 = _frankli(tenant)
    users = tenant.users()
    assert len(users) == USERS and all(u["status"] == "uninvited" for u in users.values())
    assert tenant.report()["counts"]["create"] == USERS

    # Day 2: the same export with an unterminated quote in the city of line 382.
    _write_export(export, broken_line=BROKEN_LINE)
    tenant.run(expect="failed")
    day2 = tenant.runs[-1].run_id
    report = tenant.report()
    assert report["status"] == "failed" and report["incomplete_tasks"][0] == "extract"
    assert _staged_rows(tenant, day2) == 0, "a page of a file that did not parse whole was staged"
    assert [a for a in tenant.audit() if a["action"] == "archive"] == []
    assert tenant.audit(day2) == []
    assert [u for u in tenant.users().values() if u["status"] == "archived"] == []
    assert _frankli(tenant) == after_day1, "a run on a malformed export changed Frankli"

    # The extract's error names the file, the line and the column, and says what to do.
    with pytest.raises(CsvSourceError) as failed:
        tenant.run_task("extract")
    message = str(failed.value)
    assert str(export) in message
    assert f"line {BROKEN_LINE}, column {COLUMNS.index('city') + 1} (city)" in message
    assert "download the users again" in message

    # Day 3: the export downloaded again: the run succeeds and changes nothing.
    _write_export(export)
    tenant.run()
    assert [a for a in tenant.audit(tenant.runs[-1].run_id) if a["action"] != "quarantine"] == []
    assert tenant.users() == {u["external_id"]: u for u in after_day1["users"]}
