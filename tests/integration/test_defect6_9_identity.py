"""Issue 10, defects 6 and 9, end to end: real DAG runs (`dag.test()`) on SQLite and PostgreSQL.

6. "Unicode folding adopts the wrong person": an Entra UPN that only matches a Frankli
   user under Unicode folding (Kelvin-sign K, ß for ss) is quarantined, never adopted;
   a UPN that is no valid address (a <script> tag) is quarantined by validation.
9. "`only_user` fails when nothing new is created": an on-demand run for a user whose
   site, department and role already exist succeeds and applies that user's change.
"""

from __future__ import annotations

from typing import Any

import pytest
from graph_emulator import Tenant

pytestmark = pytest.mark.integration

KELVIN = "\u212a"  # KELVIN SIGN: looks like K, case-folds to k


def _new_member(directory: Tenant, upn: str, given: str, surname: str) -> dict[str, Any]:
    """A well-formed Entra member (UPN == mail) as an admin would create it."""
    return {
        "userPrincipalName": upn,
        "mail": upn,
        "displayName": f"{given} {surname}",
        "givenName": given,
        "surname": surname,
        "jobTitle": "Software Engineer",
        "department": "Engineering",
        "officeLocation": "Dublin",
        "city": "Dublin",
        "country": "Ireland",
        "accountEnabled": True,
        "userType": "Member",
    }


def _quarantine_reasons(tenant: Any, run_id: str, external_id: str) -> list[str]:
    rows = [a for a in tenant.audit(run_id) if a["action"] == "quarantine" and a["external_id"] == external_id]
    assert len(rows) == 1, f"expected one quarantine audit row for {external_id}, got {rows}"
    return [reason["expectation"] for reason in rows[0]["details"]["reasons"]]


def test_defect6_lookalike_upn_is_quarantined_and_script_upn_is_invalid(make_tenant, frankli_url: str | None) -> None:
    tenant = make_tenant(users=80, seed=61, frankli_url=frankli_url)
    directory = tenant.directory
    domain = directory.domain
    strasse = f"kristin.strasse@{domain}"
    (frankli_id,) = tenant.seed(
        "users", [{"email": strasse, "first_name": "Kristin", "last_name": "Strasse", "status": "active"}]
    )
    lookalike_upn = f"{KELVIN}ristin.straße@{domain}"
    lookalike = directory.add_user(_new_member(directory, lookalike_upn, "Kris", "Lookalike"))
    script_upn = f"<script>alert(9)</script>@{domain}"
    script = directory.add_user(_new_member(directory, script_upn, "Script", "Kiddie"))

    tenant.run()
    run_id = tenant.runs[-1].run_id
    users = tenant.users()

    kept = users[f"email:{strasse}"]
    assert kept["id"] == frankli_id
    assert kept["external_id"] is None, "the unmanaged Frankli user was adopted by a look-alike UPN"
    assert (kept["first_name"], kept["last_name"], kept["email"]) == ("Kristin", "Strasse", strasse)
    assert lookalike not in users and script not in users
    assert not [u for u in users.values() if u["email"] in (lookalike_upn, script_upn)]

    (reason,) = _quarantine_reasons(tenant, run_id, lookalike)
    assert reason == (
        f"email_lookalike: {lookalike_upn} looks like Frankli user {strasse} under Unicode folding; "
        "fix the UPN in Entra or the email in Frankli"
    )
    assert set(_quarantine_reasons(tenant, run_id, script)) == {"upn_format", "mail_format"}
    actions = [a for a in tenant.audit(run_id) if a["external_id"] in (lookalike, script)]
    assert {a["action"] for a in actions} == {"quarantine"}
    assert not [a for a in tenant.audit(run_id) if a["action"] == "link"], "nobody is adopted"
    listed = {q["object_id"] for q in tenant.report()["quarantined"]}
    assert {lookalike, script} <= listed


def test_defect9_only_user_whose_entities_already_exist(make_tenant, frankli_url: str | None) -> None:
    tenant = make_tenant(users=80, seed=62, frankli_url=frankli_url)
    directory = tenant.directory
    tenant.run()
    synced = tenant.users()
    roles = {row["id"]: row["name"] for row in tenant.table("roles")}

    def plain(user: dict[str, Any]) -> bool:
        return Tenant.is_valid_member(user) and user["id"] in synced and synced[user["id"]]["role_id"] is not None

    members = [u for u in directory.users_sorted() if plain(u)]
    target = members[0]
    # Another synced user's title and city: the role exists in Frankli already, so nothing is created.
    source = next(
        u for u in members if roles[synced[u["id"]]["role_id"]] != target["jobTitle"] and u["city"] != target["city"]
    )
    new_role_id = synced[source["id"]]["role_id"]
    directory.update_user(target["id"], jobTitle=roles[new_role_id], city=source["city"])
    before_audit = len(tenant.audit())
    entities_before = {t: tenant.table(t) for t in ("roles", "departments", "sites")}

    tenant.run(conf={"only_user": target["userPrincipalName"]})
    after = tenant.users()

    assert (after[target["id"]]["role_id"], after[target["id"]]["city"]) == (new_role_id, source["city"])
    unchanged = {k: v for k, v in after.items() if k != target["id"]}
    assert unchanged == {k: v for k, v in synced.items() if k != target["id"]}, "only_user touched another user"
    assert {t: tenant.table(t) for t in entities_before} == entities_before, "no entity is created"
    new_audit = tenant.audit()[before_audit:]
    assert [(a["external_id"], a["action"]) for a in new_audit] == [(target["id"], "update")]
    assert set(new_audit[0]["details"]["changes"]) == {"role", "city"}
