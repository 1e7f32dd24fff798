"""Issue #12: a real run's report lists who changed, from Frankli's audit trail, and offers it as CSV.

Day 1 creates the tenant; on day 2 one user gets a new title, loses the mobile number and moves
to another manager, and one is disabled. The run page and ``changes.csv`` must name each of
them with what changed (before → after, the managers by name and address) and link the user's
Entra page; ``quarantine.csv`` lists the users held back; a dry run lists what it would change.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from frankli_sync.report import run_directory

pytestmark = pytest.mark.integration


def changes_of(tenant: Any, run_index: int = -1) -> list[dict[str, str]]:
    run_dir = run_directory(tenant.reports_dir, tenant.name, tenant.runs[run_index].run_id)
    return list(csv.DictReader(io.StringIO((run_dir / "changes.csv").read_text())))


def test_the_report_says_who_changed_and_how(make_tenant, frankli_url: str | None) -> None:
    tenant = make_tenant(users=120, seed=4, frankli_url=frankli_url)
    directory = tenant.directory
    tenant.run()
    day1 = tenant.users()
    created = [c for c in changes_of(tenant) if c["action"] == "create"]
    assert len(created) == len(day1), "every created user is listed, not a sample"

    members = [u for u in directory.users_sorted() if u["id"] in day1]
    mover, old_manager = next(
        (u, day1[directory.manager_of(u["id"])])
        for u in members
        if directory.manager_of(u["id"]) in day1 and u.get("mobilePhone")
    )
    new_manager = next(u for u in members if u["id"] not in {mover["id"], old_manager["external_id"]})
    leaver = next(u for u in members if u["id"] not in {mover["id"], new_manager["id"], old_manager["external_id"]})
    old_title = mover.get("jobTitle")
    directory.update_user(mover["id"], manager_id=new_manager["id"], jobTitle="Head of Widgets", mobilePhone=None)
    directory.update_user(leaver["id"], accountEnabled=False)
    tenant.run()

    rows = {(c["action"], c["object_id"]): c for c in changes_of(tenant)}
    update = rows[("update", mover["id"])]
    frankli_mover = tenant.users()[mover["id"]]
    assert update["user_principal_name"] == frankli_mover["email"]
    assert update["name"] == f"{frankli_mover['first_name']} {frankli_mover['last_name']}"
    old_name = f"{old_manager['first_name']} {old_manager['last_name']} <{old_manager['email']}>"
    new_frankli = tenant.users()[new_manager["id"]]
    new_name = f"{new_frankli['first_name']} {new_frankli['last_name']} <{new_frankli['email']}>"
    # The title is the user's Frankli role: entity references compare (and read) by their name key.
    assert f"role: {(old_title or '(empty)').casefold()} → head of widgets" in update["details"]
    assert f"manager: {old_name} → {new_name}" in update["details"]
    assert f"mobile phone: {mover['mobilePhone']} → (empty)" in update["details"]
    assert update["entra_url"].endswith(f"/userId/{mover['id']}")
    assert rows[("archive", leaver["id"])]["details"].startswith("reason: disabled")

    report = tenant.report()
    assert report["changes"]["total"] == len(changes_of(tenant))
    assert report["quarantined"] and not any(c["action"] == "quarantine" for c in changes_of(tenant)), (
        "the quarantine is no change: it is listed in quarantine.csv, not repeated in who changed"
    )
    run_dir = run_directory(tenant.reports_dir, tenant.name, tenant.runs[-1].run_id)
    page = (run_dir / "index.html").read_text()
    assert "Who changed" in page and "head of widgets" in page and "changes.csv" in page
    quarantined = list(csv.DictReader(io.StringIO((run_dir / "quarantine.csv").read_text())))
    assert {q["object_id"] for q in quarantined} == {q["object_id"] for q in report["quarantined"]}

    # A dry run lists what it would change, and writes nothing.
    directory.update_user(mover["id"], jobTitle="Chief Widget Officer")
    tenant.run(conf={"dry_run": True})
    planned = [c for c in changes_of(tenant) if c["object_id"] == mover["id"]]
    assert [c["action"] for c in planned] == ["update"]
    assert "role: head of widgets → chief widget officer" in planned[0]["details"]
    assert tenant.users()[mover["id"]]["role_id"] == frankli_mover["role_id"], "a dry run writes nothing"
