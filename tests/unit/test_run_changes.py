"""Issue #12: who changed in a run, as an admin reads, searches and downloads it (`run_changes`)."""

from __future__ import annotations

import csv
import io
from html import unescape

import pandas as pd
import pytest
from frankli_sync import run_changes
from frankli_sync.run_changes import (
    CHANGE_COLUMNS,
    Person,
    change_rows,
    csv_text,
    planned_audit,
    quarantine_rows,
    read_changes,
    referenced_ids,
    render_changes_page,
    select_page,
)

pytestmark = pytest.mark.unit

ANN, BOB, CAROL = "id-ann", "id-bob", "id-carol"
PEOPLE = {
    ANN: Person("Ann Lee", "ann@contoso.example"),
    BOB: Person("Bob Roe", "bob@contoso.example"),
    CAROL: Person("Carol Poe", "carol@contoso.example"),
}


def audit(*entries: tuple[str | None, str | None, str, dict]) -> pd.DataFrame:
    return pd.DataFrame(list(entries), columns=["external_id", "email", "action", "details"], dtype=object)


def test_an_update_reads_field_by_field_with_managers_by_name_and_address() -> None:
    rows = change_rows(
        audit(
            (
                ANN,
                "ann@contoso.example",
                "update",
                {"changes": {"job_title": ["Engineer", "Lead"], "manager": [BOB, CAROL], "mobile_phone": ["+1", None]}},
            )
        ),
        PEOPLE,
    )
    assert list(rows.columns) == list(CHANGE_COLUMNS)
    row = rows.iloc[0]
    assert row["name"] == "Ann Lee" and row["user_principal_name"] == "ann@contoso.example"
    assert row["details"] == (
        "job title: Engineer → Lead; manager: Bob Roe <bob@contoso.example> → Carol Poe <carol@contoso.example>; "
        "mobile phone: +1 → (empty)"
    )
    assert row["entra_url"].endswith("/UserProfileMenuBlade/~/overview/userId/id-ann")
    assert referenced_ids(audit((ANN, None, "update", {"changes": {"manager": [BOB, None]}}))) == {ANN, BOB}


def test_every_action_says_what_happened() -> None:
    rows = change_rows(
        audit(
            (ANN, "ann@contoso.example", "create", {"fields": {"first_name": "Ann", "department": "Sales"}}),
            (BOB, "bob@contoso.example", "archive", {"reason": "disabled", "status_before": "uninvited"}),
            (CAROL, "carol@contoso.example", "restore", {"status": "invited"}),
            ("id-dan", "dan@contoso.example", "link", {"kind": "email", "old_external_id": None}),
            (
                "id-eve",
                "eve@contoso.example",
                "quarantine",
                {"reasons": [{"expectation": "upn_equals_mail", "column": "mail", "value": "x@y"}]},
            ),
        ),
        PEOPLE,
    )
    assert list(rows["details"]) == [
        "first name: Ann; department: Sales",
        "reason: disabled (was uninvited)",
        "restored to invited",
        "linked by email",
        "upn_equals_mail (mail): x@y",
    ]
    assert rows.loc[3, "name"] == "", "a user Frankli does not know by that id has no name, not a wrong one"


def test_a_dry_runs_plan_reads_like_the_audit_it_would_write() -> None:
    actions = {
        "update": [{"user_id": 1, "external_id": ANN, "email": "ann@contoso.example", "job_title": "Lead",
                    "changes": {"job_title": ["Engineer", "Lead"]}}],
        "archive": [{"user_id": 2, "external_id": BOB, "email": "bob@contoso.example", "reason": "deleted",
                     "status": "invited"}],
        "entity_create": [{"table": "sites", "name": "Cork"}],
    }  # fmt: skip
    rows = change_rows(planned_audit(actions), PEOPLE)
    assert list(rows["action"]) == ["update", "archive"]
    assert list(rows["details"]) == ["job title: Engineer → Lead", "reason: deleted (was invited)"]


def test_the_csv_keeps_directory_values_as_text_in_a_spreadsheet() -> None:
    rows = change_rows(
        audit((ANN, "ann@contoso.example", "update", {"changes": {"job_title": ["x", '=HYPERLINK("http://evil")']}})),
        PEOPLE,
    )
    rows.loc[0, "name"] = "@SUM(A1)"
    text = csv_text(rows)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert parsed[0]["name"] == "'@SUM(A1)", "a value that starts a formula is prefixed with '"
    assert parsed[0]["details"].startswith("job title: x → =HYPERLINK"), "only a cell's start matters"
    back = read_changes(text)
    assert list(back.columns) == list(CHANGE_COLUMNS) and back.loc[0, "object_id"] == ANN


def test_quarantine_rows_list_each_failed_expectation() -> None:
    rows = quarantine_rows(
        [{"object_id": ANN, "user_principal_name": "ann@contoso.example",
          "reasons": [{"expectation": "required", "column": "surname", "value": None},
                      {"expectation": "upn_equals_mail", "column": "mail", "value": "a@b"}]}]
    )  # fmt: skip
    assert list(rows["expectation"]) == ["required", "upn_equals_mail"]
    assert list(rows["value"]) == ["", "a@b"]


def many(n: int) -> pd.DataFrame:
    entries = [
        (f"id-{i:05d}", f"user{i}@contoso.example", "update" if i % 3 else "archive",
         {"changes": {"city": ["Cork", f"City {i}"]}} if i % 3 else {"reason": "deleted"})
        for i in range(n)
    ]  # fmt: skip
    return change_rows(audit(*entries), {})


def test_a_large_run_is_read_a_page_at_a_time_filtered_and_searched() -> None:
    rows = many(100_000)
    first = select_page(rows)
    assert (first.total, first.pages, len(first.rows)) == (100_000, 1000, 100)
    assert first.counts == {"update": 66_666, "archive": 33_334}
    last = select_page(rows, page=5000)
    assert last.page == 1000 and last.rows.loc[0, "object_id"] == "id-99900", "past the end: the last page"
    archived = select_page(rows, action="archive", page=2)
    assert archived.total == 33_334 and set(archived.rows["action"]) == {"archive"}
    assert archived.rows.loc[0, "object_id"] == "id-00300"
    found = select_page(rows, query="CITY 99998")
    assert list(found.rows["object_id"]) == ["id-99998"], "search is case-insensitive, on the words shown"
    assert select_page(rows, query="user77777@").total == 1
    assert select_page(rows, query="(").total == 0, "the query is text, not a pattern"


def test_the_changes_page_escapes_directory_data_and_links_its_pages() -> None:
    rows = change_rows(
        audit(("id-x", "<script>alert(1)</script>@contoso.example", "update",
               {"changes": {"job_title": ["a", "<img src=x onerror=alert(2)>"]}})),
        {},
    )  # fmt: skip
    rows = pd.concat([rows] * 150, ignore_index=True)
    html = render_changes_page(
        select_page(rows, query="alert", page=1), tenant="acme", run_id="manual__1", dry_run=False, query='"><b>'
    )
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert 'value="&#34;&gt;&lt;b&gt;"' in html, "the query is echoed escaped"
    assert "page 1 of 2" in html and 'href="changes?q=%22%3E%3Cb%3E&amp;action=&amp;page=2"' in html
    assert "form-action 'self'" in unescape(html) and "script-src" not in html


def _one_by_one(entries: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """`change_rows` with the bulk description of creates switched off: the per-row `describe` path."""
    with monkeypatch.context() as patch:
        patch.setattr(run_changes, "_described_creates", lambda *_: {})
        return [tuple(r) for r in change_rows(entries, PEOPLE).itertuples(index=False)]


def test_creates_described_in_bulk_read_as_each_described_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first sync's million creates are described a field at a time; each row must read as `describe` has it."""
    hostile = ["Ann", "O'Brien; Lee", "=HYPERLINK(1)", "Ŝtraße", "a: b", "tab\there"]
    creates = []
    for n in range(60):
        fields = {
            "email": f"user{n}@contoso.example",
            "first_name": hostile[n % 6] if n % 5 else None,
            "last_name": hostile[(n + 1) % 6] if n % 7 else None,
            "city": "Cork" if n % 2 else None,
            "department": hostile[n % 6] if n % 3 else None,
        }
        creates.append((f"new-{n}", fields["email"], "create", {"fields": {k: v for k, v in fields.items() if v}}))
    entries = audit(
        *creates[:30],
        (ANN, "ann@contoso.example", "update", {"changes": {"job_title": ["A", "B"]}}),
        (BOB, "bob@contoso.example", "create", {"fields": {"email": "bob@contoso.example"}}),  # named in Frankli
        *creates[30:],
    )
    bulk = [tuple(r) for r in change_rows(entries, PEOPLE).itertuples(index=False)]
    assert bulk == _one_by_one(entries, monkeypatch)
    assert bulk[0][4].startswith("email: user0@contoso.example")
    assert bulk[31][2] == "Bob Roe"  # a create of a user Frankli already names keeps that name


def test_creates_that_bulk_cannot_show_fall_back_to_describe(monkeypatch: pytest.MonkeyPatch) -> None:
    odd = audit(
        ("n1", "a@contoso.example", "create", {"fields": {"email": "a@contoso.example", "grade": "7"}}),
        ("n2", "b@contoso.example", "create", {"fields": {"last_name": "Roe", "email": "b@contoso.example"}}),
        ("n3", "c@contoso.example", "create", {"fields": {"email": "c@contoso.example", "city": 5}}),
    )
    rows = change_rows(odd, PEOPLE)
    assert [tuple(r) for r in rows.itertuples(index=False)] == _one_by_one(odd, monkeypatch)
    assert rows.loc[0, "details"] == "email: a@contoso.example; grade: 7"
    assert rows.loc[1, "details"] == "last name: Roe; email: b@contoso.example"
    assert rows.loc[2, "details"] == "email: c@contoso.example; city: 5"
