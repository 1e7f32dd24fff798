"""DESIGN.md §2 sync rules about identity and user lifecycle, one scenario per rule, through real DAG runs.

Each test builds a small generated tenant in the Graph emulator, runs the real DAG
(`dag.test()`) against a Frankli database on SQLite and on PostgreSQL, changes Entra
or Frankli the way people do, runs again, and checks both the resulting Frankli rows
and what the run wrote to `sync_audit`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from frankli_sync.config import ConfigError
from frankli_sync.sinks.schema import users as users_table
from graph_emulator import Tenant
from sqlalchemy import update

pytestmark = pytest.mark.integration

ARCHIVE_COLUMNS = ("status_before_archive", "archived_reason", "archived_by", "archived_at")


# --------------------------------------------------------------------------- helpers


def _plain_members(directory: Tenant, count: int, where: Any = None, exclude: set[str] | frozenset = frozenset()):
    """`count` valid members (enabled, UPN == mail, names set) that have a manager and manage nobody.

    Changing such a user changes nothing else (no report's manager link, no quarantine).
    """
    managing = set(directory.managers.values())
    picked = [
        u
        for u in directory.users_sorted()
        if Tenant.is_valid_member(u)
        and directory.manager_of(u["id"])
        and u["id"] not in managing
        and u["id"] not in exclude
        and (where is None or where(u))
    ]
    assert len(picked) >= count, f"tenant has only {len(picked)} suitable users, need {count}"
    return picked[:count]


def _new_member(directory: Tenant, local: str, **overrides: Any) -> dict[str, Any]:
    """A well-formed Entra member (UPN == mail) as an admin would create it."""
    upn = f"{local}@{directory.domain}"
    return {
        "userPrincipalName": upn,
        "mail": upn,
        "displayName": local.replace(".", " ").title(),
        "givenName": local.split(".")[0].title(),
        "surname": local.split(".")[-1].title(),
        "jobTitle": "Software Engineer",
        "department": "Engineering",
        "officeLocation": "Dublin",
        "streetAddress": "1 Grand Canal Square",
        "city": "Dublin",
        "country": "Ireland",
        "mobilePhone": "+353 1 555 0000",
        "employeeHireDate": "2025-07-07T00:00:00Z",
        "accountEnabled": True,
        "userType": "Member",
        **overrides,
    }


def _user_actions(tenant: Any, run_id: str) -> dict[str | None, list[dict[str, Any]]]:
    """The run's non-quarantine audit rows grouped by external id."""
    grouped: dict[str | None, list[dict[str, Any]]] = {}
    for row in tenant.audit(run_id):
        if row["action"] != "quarantine":
            grouped.setdefault(row["external_id"], []).append(row)
    return grouped


def _only_action(actions: dict[str | None, list[dict[str, Any]]], external_id: str, action: str) -> dict[str, Any]:
    """The single audit row of `action` about `external_id` (and assert it is the only one of that kind)."""
    rows = [r for r in actions.get(external_id, []) if r["action"] == action]
    assert len(rows) == 1, f"expected one {action!r} audit row for {external_id}, got {actions.get(external_id)}"
    return rows[0]


def _set_status(tenant: Any, external_id: str, **values: Any) -> None:
    """A Frankli admin changes a user (invites it, archives it, ...)."""
    tenant.execute(update(users_table).where(users_table.c.external_id == external_id).values(**values))


def _entity_names(tenant: Any, table: str) -> dict[int, str]:
    return {row["id"]: row["name"] for row in tenant.table(table)}


def _run_id(tenant: Any) -> str:
    return tenant.runs[-1].run_id


# --------------------------------------------------------------------------- 1. matching by object id


def test_upn_rename_updates_email_of_same_user(make_tenant, frankli_url: str | None) -> None:
    tenant = make_tenant(users=80, seed=11, frankli_url=frankli_url)
    directory = tenant.directory
    (renamed,) = _plain_members(directory, 1)
    object_id, old_upn = renamed["id"], renamed["userPrincipalName"]
    tenant.run()
    before = tenant.users()
    assert before[object_id]["email"] == old_upn

    new_upn = f"{renamed['givenName'].lower()}.married@{directory.domain}"
    directory.update_user(object_id, userPrincipalName=new_upn, mail=new_upn)
    tenant.run()
    after = tenant.users()

    assert set(after) == set(before), "a UPN rename must not create or drop a Frankli user"
    assert after[object_id]["id"] == before[object_id]["id"]
    assert after[object_id]["email"] == new_upn
    unchanged = {k: v for k, v in after[object_id].items() if k not in ("email", "updated_at")}
    assert unchanged == {k: v for k, v in before[object_id].items() if k not in ("email", "updated_at")}
    assert not [u for key, u in after.items() if key != object_id and u["email"].casefold() == old_upn.casefold()]

    actions = _user_actions(tenant, _run_id(tenant))
    assert list(actions) == [object_id], f"only the renamed user changes, got {actions}"
    update_row = _only_action(actions, object_id, "update")
    assert update_row["email"] == new_upn
    assert update_row["details"] == {"changes": {"email": [old_upn, new_upn]}}


# --------------------------------------------------------------------------- 2. adoption


def test_unlinked_frankli_user_with_matching_upn_is_adopted(make_tenant, frankli_url: str | None) -> None:
    tenant = make_tenant(users=80, seed=12, frankli_url=frankli_url)
    (entra_user,) = _plain_members(tenant.directory, 1)
    object_id, upn = entra_user["id"], entra_user["userPrincipalName"]
    shouted = upn.upper()  # the same address in another letter case
    assert shouted != upn
    (frankli_id,) = tenant.seed("users", [{"email": shouted, "first_name": "Typed By HR", "status": "active"}])

    tenant.run()
    after = tenant.users()

    assert f"email:{shouted}" not in after, "the unlinked user must be linked, not left beside a duplicate"
    adopted = after[object_id]
    assert adopted["id"] == frankli_id
    assert adopted["external_id"] == object_id
    assert adopted["status"] == "active", "adoption keeps the Frankli status"
    assert adopted["email"] == upn
    assert adopted["first_name"] == entra_user["givenName"], "after adoption Entra wins for synced attributes"
    assert adopted["last_name"] == entra_user["surname"]
    assert sum(1 for u in after.values() if u["email"].casefold() == upn.casefold()) == 1

    actions = _user_actions(tenant, _run_id(tenant))
    link = _only_action(actions, object_id, "link")
    assert link["details"] == {"kind": "adopt", "old_external_id": None}
    assert link["email"] == upn
    assert not [r for r in actions[object_id] if r["action"] == "create"]
    changes = _only_action(actions, object_id, "update")["details"]["changes"]
    assert changes["email"] == [shouted, upn]
    assert changes["first_name"] == ["Typed By HR", entra_user["givenName"]]
    assert tenant.report()["counts"]["link"] == 1


# --------------------------------------------------------------------------- 3. rehire


def test_rehire_relinks_frankli_user_to_new_object_id(make_tenant, frankli_url: str | None) -> None:
    tenant = make_tenant(users=80, seed=13, frankli_url=frankli_url)
    directory = tenant.directory
    seeded_entra, leaver = _plain_members(directory, 2)

    # A Frankli user linked to an Entra account that is gone (deleted before this sync existed).
    gone_id = "0badc0de-0000-4000-8000-000000000001"
    assert gone_id not in directory
    (seeded_id,) = tenant.seed(
        "users",
        [{"external_id": gone_id, "email": seeded_entra["userPrincipalName"], "first_name": "Old", "status": "active"}],
    )
    tenant.run()
    first = tenant.users()
    relinked = first[seeded_entra["id"]]
    assert gone_id not in first
    assert relinked["id"] == seeded_id, "the rehire keeps the Frankli user (and its history)"
    assert relinked["status"] == "active"
    assert relinked["first_name"] == seeded_entra["givenName"]
    actions = _user_actions(tenant, _run_id(tenant))
    link = _only_action(actions, seeded_entra["id"], "link")
    assert link["details"] == {"kind": "rehire", "old_external_id": gone_id}
    assert not [r for r in actions[seeded_entra["id"]] if r["action"] == "create"]
    assert gone_id not in actions, "the old object id is re-linked, not archived"

    # The usual path: a leaver is deleted (archived), then rehired with a new account and the same UPN.
    directory.delete_user(leaver["id"])
    tenant.run()
    archived = tenant.users()[leaver["id"]]
    assert archived["status"] == "archived"
    assert archived["archived_reason"] == "deleted"

    new_id = directory.add_user({**leaver, "id": None, "jobTitle": "Returning Engineer"})
    assert new_id != leaver["id"]
    tenant.run()
    after = tenant.users()
    assert leaver["id"] not in after
    back = after[new_id]
    assert back["id"] == archived["id"]
    assert back["status"] == "uninvited", "a rehired user archived by the sync is restored to its old status"
    assert all(back[c] is None for c in ARCHIVE_COLUMNS)
    roles = _entity_names(tenant, "roles")
    assert roles[back["role_id"]] == "Returning Engineer"
    actions = _user_actions(tenant, _run_id(tenant))
    assert _only_action(actions, new_id, "link")["details"] == {"kind": "rehire", "old_external_id": leaver["id"]}
    assert _only_action(actions, new_id, "restore")["details"] == {"status": "uninvited"}
    assert not [r for r in actions[new_id] if r["action"] == "create"]


def test_rehire_conflict_when_old_object_id_still_exists_is_quarantined(make_tenant, frankli_url: str | None) -> None:
    tenant = make_tenant(users=80, seed=14, frankli_url=frankli_url)
    directory = tenant.directory
    (leaver,) = _plain_members(directory, 1)
    upn = leaver["userPrincipalName"]
    tenant.run()
    frankli_user = tenant.users()[leaver["id"]]
    users_before = len(tenant.users())

    # The leaver's old account is disabled and renamed but NOT deleted; a new account takes the UPN.
    old_upn = f"left.{upn}"
    directory.update_user(leaver["id"], accountEnabled=False, userPrincipalName=old_upn, mail=old_upn)
    new_id = directory.add_user({**leaver, "id": None})
    tenant.run()
    after = tenant.users()
    run_id = _run_id(tenant)

    assert new_id not in after, "a rehire conflict must not create a user"
    assert len(after) == users_before
    kept = after[leaver["id"]]
    assert kept["id"] == frankli_user["id"], "the Frankli user stays linked to the old object id"
    assert kept["email"] == upn
    assert kept["status"] == "archived" and kept["archived_reason"] == "disabled"

    quarantines = [a for a in tenant.audit(run_id) if a["action"] == "quarantine" and a["external_id"] == new_id]
    assert len(quarantines) == 1
    reasons = quarantines[0]["details"]["reasons"]
    assert any("rehire_conflict" in r["expectation"] and leaver["id"] in r["expectation"] for r in reasons)
    assert quarantines[0]["email"] == upn
    actions = _user_actions(tenant, run_id)
    assert new_id not in actions
    assert [r["action"] for r in actions[leaver["id"]]] == ["archive"], "no link, only the disabled archive"
    assert not [a for rows in actions.values() for a in rows if a["action"] == "link"]

    listed = [q for q in tenant.report()["quarantined"] if q["object_id"] == new_id]
    assert len(listed) == 1 and listed[0]["user_principal_name"] == upn
    assert any("rehire_conflict" in r["expectation"] for r in listed[0]["reasons"])


# --------------------------------------------------------------------------- 4. statuses


def test_sync_creates_uninvited_and_only_ever_archives_invited_or_active(make_tenant, frankli_url: str | None) -> None:
    tenant = make_tenant(users=80, seed=15, frankli_url=frankli_url)
    directory = tenant.directory
    invited, active, leaving = _plain_members(directory, 3)
    tenant.run()
    first = tenant.users()
    assert {u["status"] for u in first.values()} == {"uninvited"}, "the sync never invites"
    assert {a["action"] for a in tenant.audit(_run_id(tenant))} <= {"create", "quarantine"}

    _set_status(tenant, invited["id"], status="invited")
    _set_status(tenant, active["id"], status="active")
    _set_status(tenant, leaving["id"], status="active")
    directory.update_user(invited["id"], jobTitle="Staff Engineer", city="Cork", mobilePhone="+353 1 555 1111")
    directory.update_user(active["id"], surname="Renamed", department="Finance")
    directory.update_user(leaving["id"], accountEnabled=False)
    hired = directory.add_user(_new_member(directory, "nina.newhire"), manager_id=directory.manager_of(active["id"]))
    tenant.run()
    after = tenant.users()
    actions = _user_actions(tenant, _run_id(tenant))

    assert after[invited["id"]]["status"] == "invited"
    assert after[invited["id"]]["city"] == "Cork"
    assert after[invited["id"]]["mobile_phone"] == "+353 1 555 1111"
    assert _entity_names(tenant, "roles")[after[invited["id"]]["role_id"]] == "Staff Engineer"
    assert after[active["id"]]["status"] == "active"
    assert after[active["id"]]["last_name"] == "Renamed"
    assert _entity_names(tenant, "departments")[after[active["id"]]["department_id"]].casefold() == "finance"
    for user in (invited, active):
        assert after[user["id"]][ARCHIVE_COLUMNS[0]] is None
        changes = _only_action(actions, user["id"], "update")["details"]["changes"]
        assert "status" not in changes
    assert set(_only_action(actions, invited["id"], "update")["details"]["changes"]) == {"city", "mobile_phone", "role"}
    assert set(_only_action(actions, active["id"], "update")["details"]["changes"]) == {"last_name", "department"}

    gone = after[leaving["id"]]
    assert gone["status"] == "archived"
    assert gone["status_before_archive"] == "active"
    assert gone["archived_reason"] == "disabled"
    assert gone["archived_by"] == "directory_sync"
    assert gone["archived_at"] is not None
    archive = _only_action(actions, leaving["id"], "archive")
    assert archive["details"] == {"reason": "disabled", "status_before": "active"}

    assert after[hired]["status"] == "uninvited"
    assert _only_action(actions, hired, "create")["details"]["fields"]["email"] == f"nina.newhire@{directory.domain}"
    assert set(actions) == {invited["id"], active["id"], leaving["id"], hired}
    # Everyone else keeps the status they had.
    for key, user in after.items():
        if key not in actions:
            assert user["status"] == first[key]["status"]


# --------------------------------------------------------------------------- 5. archive reasons, restore


def test_archive_reason_is_disabled_deleted_or_out_of_scope(make_tenant, frankli_url: str | None) -> None:
    tenant = make_tenant(users=80, seed=16, frankli_url=frankli_url)
    directory = tenant.directory
    disabled, deleted, guest = _plain_members(directory, 3)
    tenant.run()
    first = tenant.users()

    directory.update_user(disabled["id"], accountEnabled=False)
    directory.delete_user(deleted["id"])
    directory.update_user(guest["id"], userType="Guest")  # exclude_guests: true in the harness config
    tenant.run()
    after = tenant.users()
    actions = _user_actions(tenant, _run_id(tenant))

    expected = {disabled["id"]: "disabled", deleted["id"]: "deleted", guest["id"]: "out_of_scope"}
    assert set(actions) == set(expected), "only the three leavers change"
    for object_id, reason in expected.items():
        user = after[object_id]
        assert user["id"] == first[object_id]["id"]
        assert user["status"] == "archived"
        assert user["archived_reason"] == reason
        assert user["archived_by"] == "directory_sync"
        assert user["status_before_archive"] == "uninvited"
        assert user["archived_at"] is not None
        # Archiving is a status change only: the user's data stays as it was.
        same = {k: v for k, v in user.items() if k not in ("status", *ARCHIVE_COLUMNS, "updated_at")}
        assert same == {
            k: v for k, v in first[object_id].items() if k not in ("status", *ARCHIVE_COLUMNS, "updated_at")
        }
        row = _only_action(actions, object_id, "archive")
        assert row["details"] == {"reason": reason, "status_before": "uninvited"}
        assert [r["action"] for r in actions[object_id]] == ["archive"]
    assert tenant.report()["counts"]["archive"] == 3

    tenant.run()
    assert tenant.users() == after, "archived users are archived once"
    assert _user_actions(tenant, _run_id(tenant)) == {}


def test_reenabled_user_archived_by_sync_is_restored_to_status_before_archive(
    make_tenant, frankli_url: str | None
) -> None:
    tenant = make_tenant(users=80, seed=17, frankli_url=frankli_url)
    directory = tenant.directory
    (user,) = _plain_members(directory, 1)
    object_id = user["id"]
    tenant.run()
    _set_status(tenant, object_id, status="invited")

    directory.update_user(object_id, accountEnabled=False)
    tenant.run()
    archived = tenant.users()[object_id]
    assert archived["status"] == "archived"
    assert archived["status_before_archive"] == "invited"
    assert archived["archived_by"] == "directory_sync"

    directory.update_user(object_id, accountEnabled=True, city="Galway")
    tenant.run()
    restored = tenant.users()[object_id]
    assert restored["id"] == archived["id"]
    assert restored["status"] == "invited"
    assert all(restored[c] is None for c in ARCHIVE_COLUMNS), {c: restored[c] for c in ARCHIVE_COLUMNS}
    assert restored["city"] == "Galway", "a restored user is also brought up to date"

    actions = _user_actions(tenant, _run_id(tenant))
    assert set(actions) == {object_id}
    assert _only_action(actions, object_id, "restore")["details"] == {"status": "invited"}
    assert _only_action(actions, object_id, "update")["details"] == {"changes": {"city": [user["city"], "Galway"]}}
    assert tenant.report()["counts"]["restore"] == 1


def test_user_archived_in_frankli_is_never_restored(make_tenant, frankli_url: str | None) -> None:
    tenant = make_tenant(users=80, seed=18, frankli_url=frankli_url)
    directory = tenant.directory
    (user,) = _plain_members(directory, 1)
    object_id = user["id"]
    tenant.run()
    _set_status(
        tenant,
        object_id,
        status="archived",
        status_before_archive="active",
        archived_reason="left",
        archived_by="frankli",
        archived_at=datetime.now(UTC),
    )
    by_admin = tenant.users()[object_id]

    # Entra disables the account: the user is already archived, by the admin; nothing to do.
    directory.update_user(object_id, accountEnabled=False)
    tenant.run()
    assert tenant.users()[object_id] == by_admin
    assert object_id not in _user_actions(tenant, _run_id(tenant))

    # Entra re-enables and changes it: the admin's archive wins, synced attributes included.
    directory.update_user(object_id, accountEnabled=True, jobTitle="Principal Engineer", city="Paris")
    tenant.run()
    assert tenant.users()[object_id] == by_admin
    assert tenant.users()[object_id]["archived_by"] == "frankli"
    assert not [a for a in tenant.audit(_run_id(tenant)) if a["external_id"] == object_id]
    listed = tenant.report()["archived_in_frankli"]
    assert {"external_id": object_id, "email": user["userPrincipalName"]} in listed
    assert len(listed) == 1


# --------------------------------------------------------------------------- 6. unmanaged users


def test_frankli_users_not_managed_by_sync_are_never_touched(make_tenant, frankli_url: str | None) -> None:
    from graph_emulator import apply_day2

    tenant = make_tenant(users=120, seed=19, frankli_url=frankli_url)
    directory = tenant.directory
    (contractor_role,) = tenant.seed("roles", [{"name": "Contractor", "grade": "C1"}])
    (berlin,) = tenant.seed("sites", [{"name": "Berlin"}])  # also an Entra office: shared, never changed
    someone = _plain_members(directory, 1)[0]
    unmanaged = [
        {"email": "freelancer@agency.example", "first_name": "Frida", "last_name": "Lance", "role_id": contractor_role},
        {
            # Same name as an Entra user, different address: no match.
            "email": f"{someone['givenName'].lower()}.{someone['surname'].lower()}@contoso-old.example",
            "first_name": someone["givenName"],
            "last_name": someone["surname"],
            "site_id": berlin,
            "city": "  ",
            "status": "invited",
        },
        {"email": "board.member@contoso.example", "first_name": "Bo", "status": "archived", "archived_by": "frankli"},
    ]
    tenant.seed("users", unmanaged)
    upns = {u["userPrincipalName"].casefold() for u in directory.users_sorted()}
    assert not upns & {u["email"].casefold() for u in unmanaged}
    emails = {u["email"] for u in unmanaged}

    def unmanaged_rows() -> dict[str, dict[str, Any]]:
        return {k: v for k, v in tenant.users().items() if k.startswith("email:")}

    seeded = unmanaged_rows()
    assert set(seeded) == {f"email:{e}" for e in emails}
    roles_before = [r for r in tenant.table("roles") if r["id"] == contractor_role]

    tenant.run()
    apply_day2(directory, seed=4)  # hires, leavers, renames, clears: none of them about these users
    tenant.run()
    tenant.run(conf={"full_sync": True})

    assert unmanaged_rows() == seeded
    assert [r for r in tenant.table("roles") if r["id"] == contractor_role] == roles_before
    assert next(s for s in tenant.table("sites") if s["id"] == berlin)["created_by"] == "frankli"
    about_them = [a for a in tenant.audit() if a["external_id"] is None or a["email"] in emails]
    assert about_them == [], f"audit rows about unmanaged users: {about_them}"
    synced = [u for k, u in tenant.users().items() if not k.startswith("email:")]
    assert synced and all(u["external_id"] for u in synced)


# --------------------------------------------------------------------------- 7. cleared attributes


def test_attribute_cleared_or_whitespace_in_entra_is_cleared_in_frankli(make_tenant, frankli_url: str | None) -> None:
    tenant = make_tenant(users=80, seed=20, frankli_url=frankli_url)
    directory = tenant.directory

    def complete(u: dict[str, Any]) -> bool:
        return bool(u["mobilePhone"] and u["businessPhones"] and u["officeLocation"] and u["employeeHireDate"])

    cleared, blanked = _plain_members(directory, 2, where=complete)
    tenant.run()
    first = tenant.users()
    sites = _entity_names(tenant, "sites")
    roles = _entity_names(tenant, "roles")

    directory.update_user(
        cleared["id"], mobilePhone=None, businessPhones=[], streetAddress=None, jobTitle=None, employeeHireDate=None
    )
    directory.update_user(blanked["id"], mobilePhone="   ", city="   ", officeLocation=" ", postalCode="\t")
    tenant.run()
    after = tenant.users()
    actions = _user_actions(tenant, _run_id(tenant))
    assert set(actions) == {cleared["id"], blanked["id"]}

    expected = {
        cleared["id"]: {
            "mobile_phone": first[cleared["id"]]["mobile_phone"],
            "phone": first[cleared["id"]]["phone"],
            "street_address": first[cleared["id"]]["street_address"],
            "start_date": first[cleared["id"]]["start_date"].isoformat(),
            "role": roles[first[cleared["id"]]["role_id"]],
        },
        blanked["id"]: {
            "mobile_phone": first[blanked["id"]]["mobile_phone"],
            "city": first[blanked["id"]]["city"],
            "postal_code": first[blanked["id"]]["postal_code"],
            "site": sites[first[blanked["id"]]["site_id"]],
        },
    }
    for object_id, old_values in expected.items():
        user = after[object_id]
        changes = _only_action(actions, object_id, "update")["details"]["changes"]
        assert set(changes) == set(old_values), changes
        for name, old in old_values.items():
            column = f"{name}_id" if name in ("role", "site") else name
            assert old is not None, f"{name} should be set before the clear"
            assert user[column] is None, f"{name} cleared in Entra must be cleared in Frankli"
            before, now = changes[name]
            assert now is None
            assert str(before).casefold() == str(old).casefold(), (name, before, old)
        assert user["status"] == "uninvited" and user["id"] == first[object_id]["id"]

    # Entities lose a user, not their existence: the sync never deletes them.
    assert set(_entity_names(tenant, "roles").values()) >= set(roles.values())
    assert set(_entity_names(tenant, "sites").values()) >= set(sites.values())
    tenant.run()
    assert _user_actions(tenant, _run_id(tenant)) == {}, "a cleared value stays cleared: nothing to do next time"


# --------------------------------------------------------------------------- 8. per-tenant mapping


def test_per_tenant_attribute_mapping_always_and_on_create(make_tenant, frankli_url: str | None) -> None:
    mapping = {"site": {"from": "city", "on": "always"}, "role": {"from": "jobTitle", "on": "create"}}
    tenant = make_tenant(users=80, seed=21, frankli_url=frankli_url, mapping=mapping)
    directory = tenant.directory
    promoted, moved = _plain_members(directory, 2, where=lambda u: u["city"] and u["officeLocation"])
    tenant.run()
    first = tenant.users()
    sites = _entity_names(tenant, "sites")
    roles = _entity_names(tenant, "roles")

    entra = {u["id"]: u for u in directory.users_sorted()}
    for object_id, user in first.items():
        city = (entra[object_id]["city"] or "").strip()
        if city:
            assert sites[user["site_id"]].casefold() == city.casefold(), "site comes from city"
        else:
            assert user["site_id"] is None
    offices_only = {(u["officeLocation"] or "").strip().casefold() for u in entra.values()} - {
        (u["city"] or "").strip().casefold() for u in entra.values()
    }
    assert offices_only, "the tenant should have an office name that is no city (e.g. 'Seattle HQ')"
    assert not {n.casefold() for n in sites.values()} & offices_only, "officeLocation is not mapped any more"
    assert roles[first[promoted["id"]]["role_id"]] == promoted["jobTitle"]

    directory.update_user(promoted["id"], jobTitle="Head of Vibes", officeLocation="Somewhere Else")
    directory.update_user(moved["id"], city="Lisbon")
    hired = directory.add_user(
        _new_member(directory, "rosa.recruit", jobTitle="Chief Happiness Officer", city="Valencia"),
        manager_id=directory.manager_of(moved["id"]),
    )
    tenant.run()
    after = tenant.users()
    sites = _entity_names(tenant, "sites")
    roles = _entity_names(tenant, "roles")
    actions = _user_actions(tenant, _run_id(tenant))

    assert after[promoted["id"]] == first[promoted["id"]], "role is on create only; officeLocation is unmapped"
    assert promoted["id"] not in actions
    assert "Head of Vibes" not in roles.values(), "a role only an existing user's on-create title needs is not made"

    assert sites[after[moved["id"]]["site_id"]] == "Lisbon"
    assert after[moved["id"]]["city"] == "Lisbon"
    changes = _only_action(actions, moved["id"], "update")["details"]["changes"]
    assert set(changes) == {"city", "site"}
    assert changes["city"] == [moved["city"], "Lisbon"]
    assert changes["site"][0].casefold() == moved["city"].casefold() and changes["site"][1].casefold() == "lisbon"

    assert after[hired]["status"] == "uninvited"
    assert roles[after[hired]["role_id"]] == "Chief Happiness Officer", "a new hire gets its role on create"
    assert sites[after[hired]["site_id"]] == "Valencia"
    fields = _only_action(actions, hired, "create")["details"]["fields"]
    assert fields["role"].casefold() == "chief happiness officer"
    assert fields["site"].casefold() == "valencia"
    assert set(actions) == {moved["id"], hired}


def test_invalid_attribute_mapping_fails_naming_the_field(make_tenant, frankli_url: str | None) -> None:
    tenant = make_tenant(users=60, seed=22, frankli_url=frankli_url, mapping={"site": {"from": "nonsense"}})
    with pytest.raises(ConfigError, match=r"mapping\.site\.from") as failure:
        tenant.run()
    assert "nonsense" in str(failure.value)
    assert tenant.runs == [], "no DAG run starts on an invalid config"
