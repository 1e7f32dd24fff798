"""Day 1 and day 2 of a tenant through the real DAG: emulator → staging → GX → plan → Frankli DB.

The same test runs with the Frankli database on SQLite (the embedded default)
and on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest
from graph_emulator import apply_day2

pytestmark = pytest.mark.integration


def _invalid_ids(tenant: Any) -> set[str]:
    """Members the validation suite must quarantine (UPN ≠ mail or a required field missing)."""
    return {
        user["id"]
        for user in tenant.directory.users_sorted()
        if user["userType"] == "Member" and not tenant.directory.is_valid_member(user) and user["accountEnabled"]
    }


def test_day1_then_day2(make_tenant, frankli_url: str | None) -> None:
    tenant = make_tenant(users=400, seed=21, frankli_url=frankli_url)
    directory = tenant.directory
    quarantined_day1 = _invalid_ids(tenant)
    assert quarantined_day1, "the generated tenant should hold invalid members"

    # A valid user that turns invalid on day 2: it must then be neither updated nor archived.
    goes_invalid = next(u["id"] for u in directory.users_sorted() if directory.is_valid_member(u))

    tenant.run()
    day1 = tenant.users()
    guests = {u["id"] for u in directory.users_sorted() if u["userType"] == "Guest"}
    disabled = {u["id"] for u in directory.users_sorted() if not u["accountEnabled"]}
    loaded = set(day1)
    assert not loaded & quarantined_day1, "quarantined users were loaded"
    assert not loaded & guests, "guests are out of scope"
    assert not loaded & disabled, "a disabled Entra user with no Frankli user yet must not be created"
    assert all(u["status"] == "uninvited" for u in day1.values())
    report1 = tenant.report()
    assert report1["counts"]["create"] == len(day1)
    assert {q["object_id"] for q in report1["quarantined"]} == quarantined_day1

    # Managers are linked through object ids.
    manager_of = {u: directory.manager_of(u) for u in loaded}
    by_id = {u["id"]: ext for ext, u in day1.items()}
    linked = [ext for ext, u in day1.items() if u["manager_id"] is not None]
    assert linked
    for ext in linked:
        assert by_id[day1[ext]["manager_id"]] == manager_of[ext]

    changes = apply_day2(directory, seed=5)
    old_upn = directory.get_user(goes_invalid)["userPrincipalName"]
    directory.update_user(goes_invalid, mail="someone.else@elsewhere.example", jobTitle="Changed But Quarantined")
    tenant.run()
    day2 = tenant.users()
    run_id = tenant.runs[-1].run_id
    audit = tenant.audit(run_id)

    for hired in changes.hired:
        assert day2[hired]["status"] == "uninvited"
        assert day2[hired]["email"] == directory.get_user(hired)["userPrincipalName"]
    for gone in changes.disabled:
        assert day2[gone]["status"] == "archived"
        assert day2[gone]["archived_reason"] == "disabled"
        assert day2[gone]["archived_by"] == "directory_sync"
        assert day2[gone]["status_before_archive"] == "uninvited"
    for gone in changes.deleted:
        assert day2[gone]["status"] == "archived"
        assert day2[gone]["archived_reason"] == "deleted"  # the delta read reports the deletion
    for user_id, attributes in changes.cleared_attributes.items():
        assert "mobilePhone" in attributes
        assert day1[user_id]["mobile_phone"] is not None
        assert day2[user_id]["mobile_phone"] is None
    for user_id, attributes in changes.whitespace_attributes.items():
        for attribute in attributes:
            column = {"mobilePhone": "mobile_phone", "jobTitle": "role_id"}[attribute]
            assert day1[user_id][column] is not None
            assert day2[user_id][column] is None, f"whitespace-only {attribute} must clear {column}"
    for renamed in changes.renamed:
        assert day2[renamed]["id"] == day1[renamed]["id"], "a UPN rename must update the same Frankli user"
        assert day2[renamed]["email"] == directory.get_user(renamed)["userPrincipalName"]
        assert day2[renamed]["email"] != day1[renamed]["email"]
    departments = {d["id"]: d["name"] for d in tenant.table("departments")}
    for moved in changes.department_moved:
        assert departments[day2[moved]["department_id"]].casefold() == (
            directory.get_user(moved)["department"].strip().casefold()
        )

    # The user that turned invalid is quarantined: kept as it was, not archived, not updated.
    assert day2[goes_invalid] == day1[goes_invalid]
    assert any(a["action"] == "quarantine" and a["external_id"] == goes_invalid for a in audit)
    assert tenant.report()["quarantined"] and old_upn in {
        q["user_principal_name"] for q in tenant.report()["quarantined"]
    }

    # One audit row per user action, and counts in the report match them.
    actions = [a["action"] for a in audit]
    report2 = tenant.report()
    for action in ("create", "update", "archive", "quarantine"):
        assert report2["counts"].get(action, 0) == actions.count(action), action
    assert report2["counts"]["create"] == len(changes.hired)
    assert report2["counts"]["archive"] == len(changes.disabled) + len(changes.deleted)
    assert report2["counts"]["update"] > 0
    # Day 1 read in full (GX with Data Docs); day 2 planned incrementally (the suite in pandas, no docs).
    assert tenant.report(0)["validation"]["docs_index"].endswith("index.html")
    assert tenant.report(0)["basis"]["mode"] == "full"
    assert report2["basis"]["mode"] == "incremental", report2["basis"]
    assert report2["validation"]["docs_index"] is None


def test_second_run_without_changes_writes_nothing(make_tenant) -> None:
    tenant = make_tenant(users=250, seed=3)
    tenant.run()
    before_users = tenant.users()
    before_audit = tenant.audit()
    entity_rows = {t: tenant.table(t) for t in ("sites", "departments", "roles")}

    tenant.run()
    second = tenant.runs[-1].run_id
    assert tenant.users() == before_users, "a run with no Entra change must not touch any user"
    assert {t: tenant.table(t) for t in entity_rows} == entity_rows
    written = [a for a in tenant.audit(second) if a["action"] != "quarantine"]
    assert written == [], f"second run wrote {len(written)} audit rows"
    assert len(tenant.audit()) == len(before_audit) + len(tenant.audit(second))
    counts = tenant.report()["counts"]
    assert {k: v for k, v in counts.items() if k != "quarantine"} == {}
