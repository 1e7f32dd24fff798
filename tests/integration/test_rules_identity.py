"""DESIGN.md §2 sync rules about identity and user lifecycle, one scenario per rule, through real DAG runs.

Each test builds a small generated tenant in the Graph emulator, runs the real DAG (`dag.test()`)
against each Frankli target (the database on SQLite and on PostgreSQL, and the SCIM API: a real
scim2-server over HTTP), changes Entra or Frankli the way people do, runs again, and checks what
Frankli then holds and what the run wrote to the audit.

The rule is checked through the target-neutral view (`people`, `frankli_ids`, `statuses`, the audit)
on every target; what only one target can hold is checked there too: the database's status and
archive columns and its entity tables, the SCIM server's resources and the requests the sink sent.
SCIM knows `active` only: a user the database creates `uninvited` is created `active: true`, so
the status an archive keeps (in the audit's details) and a restore puts back is ``active`` there.
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
WRITES = ("POST", "PATCH", "PUT", "DELETE")
ARCHIVE_OPERATION = [{"op": "replace", "path": "active", "value": False}]


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
    """A Frankli admin changes a user (invites it, archives it, ...) in the database."""
    tenant.execute(update(users_table).where(users_table.c.external_id == external_id).values(**values))


def _entity_names(tenant: Any, table: str) -> dict[int, str]:
    return {row["id"]: row["name"] for row in tenant.table(table)}


def _run_id(tenant: Any) -> str:
    return tenant.runs[-1].run_id


def _is_scim(tenant: Any) -> bool:
    return tenant.scim is not None


def _created_status(tenant: Any) -> str:
    """The status the sync creates users with: Frankli's uninvited (over SCIM: `active: true`)."""
    return "active" if _is_scim(tenant) else "uninvited"


def _sent(tenant: Any) -> int:
    """Where the SCIM sink's request log stands (0 on a database target)."""
    return len(tenant.scim.requests) if _is_scim(tenant) else 0


def _writes(tenant: Any, since: int) -> list[Any]:
    """The SCIM sink's writes since `since`."""
    return [r for r in tenant.scim.requests[since:] if r.method in WRITES]


def _addressed(request: Any) -> str:
    """The SCIM id a request's path names (`/v2/Users/<id>`; '' for the collection)."""
    parts = request.path.rstrip("/").split("/")
    return parts[-1] if len(parts) >= 2 and parts[-2] == "Users" else ""


# --------------------------------------------------------------------------- 1. matching by object id


def test_upn_rename_updates_email_of_same_user(make_tenant, frankli_target) -> None:
    tenant = make_tenant(users=80, seed=11, **frankli_target)
    directory = tenant.directory
    (renamed,) = _plain_members(directory, 1)
    object_id, old_upn = renamed["id"], renamed["userPrincipalName"]
    tenant.run()
    before, ids_before, stored_before = tenant.people(), tenant.frankli_ids(), tenant.stored_users()
    assert before[object_id]["email"] == old_upn

    new_upn = f"{renamed['givenName'].lower()}.married@{directory.domain}"
    directory.update_user(object_id, userPrincipalName=new_upn, mail=new_upn)
    since = _sent(tenant)
    tenant.run()
    after, ids_after, stored_after = tenant.people(), tenant.frankli_ids(), tenant.stored_users()

    assert set(after) == set(before), "a UPN rename must not create or drop a Frankli user"
    assert ids_after == ids_before, "the same Frankli users, the renamed one included"
    assert after[object_id]["email"] == new_upn
    unchanged = {k: v for k, v in after[object_id].items() if k != "email"}
    assert unchanged == {k: v for k, v in before[object_id].items() if k != "email"}
    assert not [u for key, u in after.items() if key != object_id and u["email"].casefold() == old_upn.casefold()]
    if _is_scim(tenant):
        # SCIM's key is the userName: it moved with the email, on the same resource.
        resource = stored_after[object_id]
        assert resource["userName"] == new_upn
        assert [e["value"] for e in resource["emails"] if e.get("type") == "work"] == [new_upn]
        assert old_upn not in tenant.scim.users()
        writes = _writes(tenant, since)
        assert [(r.method, _addressed(r)) for r in writes] == [("PATCH", ids_before[object_id])], writes
    else:
        ignored = ("email", "updated_at")
        assert {k: v for k, v in stored_after[object_id].items() if k not in ignored} == {
            k: v for k, v in stored_before[object_id].items() if k not in ignored
        }

    actions = _user_actions(tenant, _run_id(tenant))
    assert list(actions) == [object_id], f"only the renamed user changes, got {actions}"
    update_row = _only_action(actions, object_id, "update")
    assert update_row["email"] == new_upn
    assert update_row["details"] == {"changes": {"email": [old_upn, new_upn]}}


# --------------------------------------------------------------------------- 2. adoption


def test_unlinked_frankli_user_with_matching_upn_is_adopted(make_tenant, frankli_target) -> None:
    tenant = make_tenant(users=80, seed=12, **frankli_target)
    (entra_user,) = _plain_members(tenant.directory, 1)
    object_id, upn = entra_user["id"], entra_user["userPrincipalName"]
    shouted = upn.upper()  # the same address in another letter case
    assert shouted != upn
    frankli_id = tenant.seed_frankli_user(shouted, first_name="Typed By HR", status="active")

    since = _sent(tenant)
    tenant.run()
    after = tenant.people()

    assert f"email:{shouted}" not in after, "the unlinked user must be linked, not left beside a duplicate"
    assert tenant.frankli_ids()[object_id] == frankli_id
    adopted = after[object_id]
    assert tenant.statuses()[object_id] == "active", "adoption keeps the Frankli status"
    assert adopted["archived"] is False
    assert adopted["email"] == upn
    assert adopted["first_name"] == entra_user["givenName"], "after adoption Entra wins for synced attributes"
    assert adopted["last_name"] == entra_user["surname"]
    assert sum(1 for u in after.values() if u["email"].casefold() == upn.casefold()) == 1
    stored = tenant.stored_users()[object_id]
    if _is_scim(tenant):
        assert (stored["externalId"], stored["userName"], stored["active"]) == (object_id, upn, True)
        posted = [r.body["userName"].casefold() for r in _writes(tenant, since) if r.method == "POST"]
        assert upn.casefold() not in posted, "linked by a PATCH, never created"
    else:
        assert stored["external_id"] == object_id

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


def test_rehire_relinks_frankli_user_to_new_object_id(make_tenant, frankli_target) -> None:
    tenant = make_tenant(users=80, seed=13, **frankli_target)
    directory = tenant.directory
    seeded_entra, leaver = _plain_members(directory, 2)

    # A Frankli user linked to an Entra account that is gone (deleted before this sync existed).
    gone_id = "0badc0de-0000-4000-8000-000000000001"
    assert gone_id not in directory
    seeded_id = tenant.seed_frankli_user(
        seeded_entra["userPrincipalName"], external_id=gone_id, first_name="Old", status="active"
    )
    tenant.run()
    first = tenant.people()
    assert gone_id not in first
    assert tenant.frankli_ids()[seeded_entra["id"]] == seeded_id, "the rehire keeps the Frankli user (and its history)"
    assert tenant.statuses()[seeded_entra["id"]] == "active"
    assert first[seeded_entra["id"]]["first_name"] == seeded_entra["givenName"]
    actions = _user_actions(tenant, _run_id(tenant))
    link = _only_action(actions, seeded_entra["id"], "link")
    assert link["details"] == {"kind": "rehire", "old_external_id": gone_id}
    assert not [r for r in actions[seeded_entra["id"]] if r["action"] == "create"]
    assert gone_id not in actions, "the old object id is re-linked, not archived"

    # The usual path: a leaver is deleted (archived), then rehired with a new account and the same UPN.
    directory.delete_user(leaver["id"])
    tenant.run()
    assert tenant.people()[leaver["id"]]["archived"] is True
    assert tenant.statuses()[leaver["id"]] == "archived"
    archived_id = tenant.frankli_ids()[leaver["id"]]
    archive = _only_action(_user_actions(tenant, _run_id(tenant)), leaver["id"], "archive")
    assert archive["details"] == {"reason": "deleted", "status_before": _created_status(tenant)}
    if not _is_scim(tenant):
        archived = tenant.users()[leaver["id"]]
        assert archived["status"] == "archived"
        assert archived["archived_reason"] == "deleted"

    new_id = directory.add_user({**leaver, "id": None, "jobTitle": "Returning Engineer"})
    assert new_id != leaver["id"]
    since = _sent(tenant)
    tenant.run()
    after = tenant.people()
    assert leaver["id"] not in after
    assert tenant.frankli_ids()[new_id] == archived_id
    back = after[new_id]
    assert back["archived"] is False
    assert tenant.statuses()[new_id] == _created_status(tenant), (
        "a rehired user archived by the sync is restored to its old status"
    )
    assert back["role"] == "Returning Engineer"
    if _is_scim(tenant):
        stored = tenant.stored_users()[new_id]
        assert (stored["id"], stored["externalId"], stored["active"]) == (archived_id, new_id, True)
        assert "POST" not in {r.method for r in _writes(tenant, since)}, "re-linked, not created"
    else:
        row = tenant.users()[new_id]
        assert row["status"] == "uninvited"
        assert all(row[c] is None for c in ARCHIVE_COLUMNS)
        assert _entity_names(tenant, "roles")[row["role_id"]] == "Returning Engineer"
    actions = _user_actions(tenant, _run_id(tenant))
    assert _only_action(actions, new_id, "link")["details"] == {"kind": "rehire", "old_external_id": leaver["id"]}
    assert _only_action(actions, new_id, "restore")["details"] == {"status": _created_status(tenant)}
    assert not [r for r in actions[new_id] if r["action"] == "create"]


def test_rehire_conflict_when_old_object_id_still_exists_is_quarantined(
    make_tenant, frankli_target: dict[str, Any]
) -> None:
    tenant = make_tenant(users=80, seed=14, **frankli_target)
    directory = tenant.directory
    (leaver,) = _plain_members(directory, 1)
    upn = leaver["userPrincipalName"]
    tenant.run()
    frankli_id = tenant.frankli_ids()[leaver["id"]]
    users_before = len(tenant.people())

    # The leaver's old account is disabled and renamed but NOT deleted; a new account takes the UPN.
    old_upn = f"left.{upn}"
    directory.update_user(leaver["id"], accountEnabled=False, userPrincipalName=old_upn, mail=old_upn)
    new_id = directory.add_user({**leaver, "id": None})
    since = _sent(tenant)
    tenant.run()
    after = tenant.people()
    run_id = _run_id(tenant)

    assert new_id not in after, "a rehire conflict must not create a user"
    assert len(after) == users_before
    assert tenant.frankli_ids()[leaver["id"]] == frankli_id, "the Frankli user stays linked to the old object id"
    kept = after[leaver["id"]]
    assert kept["email"] == upn
    assert kept["archived"] is True
    if _is_scim(tenant):
        stored = tenant.scim.users()[upn]
        assert (stored["id"], stored["externalId"], stored["active"]) == (frankli_id, leaver["id"], False)
        writes = _writes(tenant, since)
        assert [(r.method, _addressed(r), r.body["Operations"]) for r in writes] == [
            ("PATCH", frankli_id, ARCHIVE_OPERATION)
        ], "no create, no link: only the disabled archive"
    else:
        row = tenant.users()[leaver["id"]]
        assert row["status"] == "archived" and row["archived_reason"] == "disabled"

    quarantines = [a for a in tenant.audit(run_id) if a["action"] == "quarantine" and a["external_id"] == new_id]
    assert len(quarantines) == 1
    reasons = quarantines[0]["details"]["reasons"]
    assert any("rehire_conflict" in r["expectation"] and leaver["id"] in r["expectation"] for r in reasons)
    assert quarantines[0]["email"] == upn
    actions = _user_actions(tenant, run_id)
    assert new_id not in actions
    assert [r["action"] for r in actions[leaver["id"]]] == ["archive"], "no link, only the disabled archive"
    assert actions[leaver["id"]][0]["details"]["reason"] == "disabled"
    assert not [a for rows in actions.values() for a in rows if a["action"] == "link"]

    listed = [q for q in tenant.report()["quarantined"] if q["object_id"] == new_id]
    assert len(listed) == 1 and listed[0]["user_principal_name"] == upn
    assert any("rehire_conflict" in r["expectation"] for r in listed[0]["reasons"])


# --------------------------------------------------------------------------- 4. statuses


def test_sync_creates_uninvited_and_only_ever_archives_invited_or_active(
    make_tenant, frankli_target: dict[str, Any]
) -> None:
    """Over SCIM: every create is `active: true` (Frankli's uninvited), and only a leaver's archive sets `active`."""
    tenant = make_tenant(users=80, seed=15, **frankli_target)
    scim = _is_scim(tenant)
    directory = tenant.directory
    invited, active, leaving = _plain_members(directory, 3)
    tenant.run()
    first = tenant.statuses()
    assert set(first.values()) == {_created_status(tenant)}, "the sync never invites"
    assert {a["action"] for a in tenant.audit(_run_id(tenant))} <= {"create", "quarantine"}
    if scim:
        posts = _writes(tenant, 0)
        assert {r.method for r in posts} == {"POST"} and len(posts) == len(first)
        assert all(r.body["active"] is True for r in posts)

    if not scim:  # an admin invites and activates users (SCIM has no such status: a user is active or not)
        _set_status(tenant, invited["id"], status="invited")
        _set_status(tenant, active["id"], status="active")
        _set_status(tenant, leaving["id"], status="active")
    directory.update_user(invited["id"], jobTitle="Staff Engineer", city="Cork", mobilePhone="+353 1 555 1111")
    directory.update_user(active["id"], surname="Renamed", department="Finance")
    directory.update_user(leaving["id"], accountEnabled=False)
    hired = directory.add_user(_new_member(directory, "nina.newhire"), manager_id=directory.manager_of(active["id"]))
    kept = tenant.statuses()
    since = _sent(tenant)
    tenant.run()
    after = tenant.people()
    statuses = tenant.statuses()
    actions = _user_actions(tenant, _run_id(tenant))

    assert statuses[invited["id"]] == ("active" if scim else "invited")
    assert after[invited["id"]]["city"] == "Cork"
    assert after[invited["id"]]["mobile_phone"] == "+353 1 555 1111"
    assert after[invited["id"]]["role"] == "Staff Engineer"
    assert statuses[active["id"]] == "active"
    assert after[active["id"]]["last_name"] == "Renamed"
    assert after[active["id"]]["department"].casefold() == "finance"
    for user in (invited, active):
        assert after[user["id"]]["archived"] is False
        if not scim:
            assert tenant.users()[user["id"]][ARCHIVE_COLUMNS[0]] is None
        changes = _only_action(actions, user["id"], "update")["details"]["changes"]
        assert "status" not in changes
    assert set(_only_action(actions, invited["id"], "update")["details"]["changes"]) == {"city", "mobile_phone", "role"}
    assert set(_only_action(actions, active["id"], "update")["details"]["changes"]) == {"last_name", "department"}

    assert after[leaving["id"]]["archived"] is True
    assert statuses[leaving["id"]] == "archived"
    archive = _only_action(actions, leaving["id"], "archive")
    assert archive["details"] == {"reason": "disabled", "status_before": "active"}
    if scim:
        # `active` is written twice, by the hire's create (true) and the leaver's archive (false), nowhere else.
        writes = _writes(tenant, since)
        posts = [r.body for r in writes if r.method == "POST"]
        assert [(b["userName"], b["active"]) for b in posts] == [(f"nina.newhire@{directory.domain}", True)]
        setting_active = [
            (_addressed(r), r.body["Operations"])
            for r in writes
            if r.method != "POST" and any(o.get("path") == "active" for o in r.body["Operations"])
        ]
        assert setting_active == [(tenant.frankli_ids()[leaving["id"]], ARCHIVE_OPERATION)], setting_active
    else:
        gone = tenant.users()[leaving["id"]]
        assert gone["status"] == "archived"
        assert gone["status_before_archive"] == "active"
        assert gone["archived_reason"] == "disabled"
        assert gone["archived_by"] == "directory_sync"
        assert gone["archived_at"] is not None

    assert statuses[hired] == _created_status(tenant)
    assert _only_action(actions, hired, "create")["details"]["fields"]["email"] == f"nina.newhire@{directory.domain}"
    assert set(actions) == {invited["id"], active["id"], leaving["id"], hired}
    # Everyone else keeps the status they had.
    for key, status in statuses.items():
        if key not in actions:
            assert status == kept[key]


# --------------------------------------------------------------------------- 5. archive reasons, restore


def test_archive_reason_is_disabled_deleted_or_out_of_scope(make_tenant, frankli_target) -> None:
    tenant = make_tenant(users=80, seed=16, **frankli_target)
    scim = _is_scim(tenant)
    directory = tenant.directory
    disabled, deleted, guest = _plain_members(directory, 3)
    tenant.run()
    first, first_ids, first_stored = tenant.people(), tenant.frankli_ids(), tenant.stored_users()

    directory.update_user(disabled["id"], accountEnabled=False)
    directory.delete_user(deleted["id"])
    directory.update_user(guest["id"], userType="Guest")  # exclude_guests: true in the harness config
    since = _sent(tenant)
    tenant.run()
    after, ids, stored, statuses = tenant.people(), tenant.frankli_ids(), tenant.stored_users(), tenant.statuses()
    actions = _user_actions(tenant, _run_id(tenant))

    expected = {disabled["id"]: "disabled", deleted["id"]: "deleted", guest["id"]: "out_of_scope"}
    assert set(actions) == set(expected), "only the three leavers change"
    for object_id, reason in expected.items():
        assert ids[object_id] == first_ids[object_id]
        assert after[object_id]["archived"] is True
        assert statuses[object_id] == "archived"
        # Archiving is a status change only: the user's data stays as it was.
        assert {k: v for k, v in after[object_id].items() if k != "archived"} == {
            k: v for k, v in first[object_id].items() if k != "archived"
        }
        if scim:
            ignored = ("active", "meta")
        else:
            user = stored[object_id]
            assert user["status"] == "archived"
            assert user["archived_reason"] == reason
            assert user["archived_by"] == "directory_sync"
            assert user["status_before_archive"] == "uninvited"
            assert user["archived_at"] is not None
            ignored = ("status", *ARCHIVE_COLUMNS, "updated_at")
        same = {k: v for k, v in stored[object_id].items() if k not in ignored}
        assert same == {k: v for k, v in first_stored[object_id].items() if k not in ignored}
        row = _only_action(actions, object_id, "archive")
        assert row["details"] == {"reason": reason, "status_before": _created_status(tenant)}
        assert [r["action"] for r in actions[object_id]] == ["archive"]
    if scim:
        writes = _writes(tenant, since)
        assert len(writes) == len(expected), "one write per leaver: its archive"
        assert {_addressed(r): (r.method, r.body["Operations"]) for r in writes} == {
            ids[o]: ("PATCH", ARCHIVE_OPERATION) for o in expected
        }
    assert tenant.report()["counts"]["archive"] == 3

    since = _sent(tenant)
    tenant.run()
    assert tenant.people() == after, "archived users are archived once"
    assert tenant.stored_users() == stored
    assert _user_actions(tenant, _run_id(tenant)) == {}
    if scim:
        assert _writes(tenant, since) == []


def test_reenabled_user_archived_by_sync_is_restored_to_status_before_archive(
    make_tenant, frankli_target: dict[str, Any]
) -> None:
    tenant = make_tenant(users=80, seed=17, **frankli_target)
    scim = _is_scim(tenant)
    directory = tenant.directory
    (user,) = _plain_members(directory, 1)
    object_id = user["id"]
    tenant.run()
    if not scim:  # an admin invites the user (SCIM has no invited: the user is active there)
        _set_status(tenant, object_id, status="invited")
    status_before = "active" if scim else "invited"

    directory.update_user(object_id, accountEnabled=False)
    tenant.run()
    assert tenant.people()[object_id]["archived"] is True
    assert tenant.statuses()[object_id] == "archived"
    archived_id = tenant.frankli_ids()[object_id]
    archive = _only_action(_user_actions(tenant, _run_id(tenant)), object_id, "archive")
    assert archive["details"] == {"reason": "disabled", "status_before": status_before}
    if not scim:
        archived = tenant.users()[object_id]
        assert archived["status_before_archive"] == "invited"
        assert archived["archived_by"] == "directory_sync"

    directory.update_user(object_id, accountEnabled=True, city="Galway")
    since = _sent(tenant)
    tenant.run()
    restored = tenant.people()[object_id]
    assert tenant.frankli_ids()[object_id] == archived_id
    assert restored["archived"] is False
    assert tenant.statuses()[object_id] == status_before
    assert restored["city"] == "Galway", "a restored user is also brought up to date"
    if scim:
        stored = tenant.stored_users()[object_id]
        assert stored["active"] is True
        assert [a["locality"] for a in stored["addresses"] if a.get("type") == "work"] == ["Galway"]
        assert {_addressed(r) for r in _writes(tenant, since)} == {archived_id}
    else:
        row = tenant.users()[object_id]
        assert all(row[c] is None for c in ARCHIVE_COLUMNS), {c: row[c] for c in ARCHIVE_COLUMNS}

    actions = _user_actions(tenant, _run_id(tenant))
    assert set(actions) == {object_id}
    assert _only_action(actions, object_id, "restore")["details"] == {"status": status_before}
    assert _only_action(actions, object_id, "update")["details"] == {"changes": {"city": [user["city"], "Galway"]}}
    assert tenant.report()["counts"]["restore"] == 1


def test_user_archived_in_frankli_is_never_restored(make_tenant, frankli_target) -> None:
    tenant = make_tenant(users=80, seed=18, **frankli_target)
    scim = _is_scim(tenant)
    directory = tenant.directory
    (user,) = _plain_members(directory, 1)
    object_id = user["id"]
    tenant.run()
    if scim:  # an admin deactivates the user (the sync's audit shows no archive of it)
        tenant.deactivate_in_frankli(object_id)
    else:
        _set_status(
            tenant,
            object_id,
            status="archived",
            status_before_archive="active",
            archived_reason="left",
            archived_by="frankli",
            archived_at=datetime.now(UTC),
        )
    by_admin, seen = tenant.stored_users()[object_id], tenant.people()[object_id]
    assert seen["archived"] is True
    frankli_id = tenant.frankli_ids()[object_id]
    since = _sent(tenant)

    # Entra disables the account: the user is already archived, by the admin; nothing to do.
    directory.update_user(object_id, accountEnabled=False)
    tenant.run()
    assert tenant.stored_users()[object_id] == by_admin
    assert tenant.people()[object_id] == seen
    assert object_id not in _user_actions(tenant, _run_id(tenant))

    # Entra re-enables and changes it: the admin's archive wins, synced attributes included.
    directory.update_user(object_id, accountEnabled=True, jobTitle="Principal Engineer", city="Paris")
    tenant.run()
    assert tenant.stored_users()[object_id] == by_admin
    assert tenant.people()[object_id] == seen
    assert tenant.statuses()[object_id] == "archived"
    if scim:
        assert [r for r in _writes(tenant, since) if _addressed(r) == frankli_id] == []
    else:
        assert tenant.users()[object_id]["archived_by"] == "frankli"
    assert not [a for a in tenant.audit(_run_id(tenant)) if a["external_id"] == object_id]
    listed = tenant.report()["archived_in_frankli"]
    assert {"external_id": object_id, "email": user["userPrincipalName"]} in listed
    assert len(listed) == 1


# --------------------------------------------------------------------------- 6. unmanaged users


def test_frankli_users_not_managed_by_sync_are_never_touched(make_tenant, frankli_target) -> None:
    from graph_emulator import apply_day2

    tenant = make_tenant(users=120, seed=19, **frankli_target)
    scim = _is_scim(tenant)
    directory = tenant.directory
    if not scim:  # Frankli's own entities (SCIM has none: a role or site is text on the user)
        (contractor_role,) = tenant.seed("roles", [{"name": "Contractor", "grade": "C1"}])
        (berlin,) = tenant.seed("sites", [{"name": "Berlin"}])  # also an Entra office: shared, never changed
    someone = _plain_members(directory, 1)[0]
    unmanaged = [
        {"email": "freelancer@agency.example", "first_name": "Frida", "last_name": "Lance", "role": "Contractor"},
        {
            # Same name as an Entra user, different address: no match.
            "email": f"{someone['givenName'].lower()}.{someone['surname'].lower()}@contoso-old.example",
            "first_name": someone["givenName"],
            "last_name": someone["surname"],
            "site": "Berlin",
            "city": "  ",
            "status": "invited",
        },
        {"email": "board.member@contoso.example", "first_name": "Bo", "status": "archived"},
    ]
    for seeded_user in unmanaged:
        tenant.seed_frankli_user(**seeded_user)
    upns = {u["userPrincipalName"].casefold() for u in directory.users_sorted()}
    assert not upns & {u["email"].casefold() for u in unmanaged}
    emails = {u["email"] for u in unmanaged}

    def unmanaged_of(users: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in users.items() if k.startswith("email:")}

    seeded, seeded_stored = unmanaged_of(tenant.people()), unmanaged_of(tenant.stored_users())
    assert set(seeded) == {f"email:{e}" for e in emails}
    assert seeded["email:freelancer@agency.example"]["role"] == "Contractor"
    assert {k: p["archived"] for k, p in seeded.items()} == {
        f"email:{u['email']}": u.get("status") == "archived" for u in unmanaged
    }
    their_ids = {tenant.frankli_ids()[k] for k in seeded}
    if not scim:
        roles_before = [r for r in tenant.table("roles") if r["id"] == contractor_role]

    tenant.run()
    apply_day2(directory, seed=4)  # hires, leavers, renames, clears: none of them about these users
    tenant.run()
    tenant.run(conf={"full_sync": True})

    assert unmanaged_of(tenant.people()) == seeded
    assert unmanaged_of(tenant.stored_users()) == seeded_stored
    if scim:
        assert [r for r in tenant.scim.requests if _addressed(r) in their_ids] == [], "no request about them"
        assert _writes(tenant, 0), "the runs did write (to the synced users)"
    else:
        assert [r for r in tenant.table("roles") if r["id"] == contractor_role] == roles_before
        assert next(s for s in tenant.table("sites") if s["id"] == berlin)["created_by"] == "frankli"
    about_them = [a for a in tenant.audit() if a["external_id"] is None or a["email"] in emails]
    assert about_them == [], f"audit rows about unmanaged users: {about_them}"
    synced = [u for k, u in tenant.stored_users().items() if not k.startswith("email:")]
    assert synced and all(u["externalId" if scim else "external_id"] for u in synced)


# --------------------------------------------------------------------------- 7. cleared attributes


def test_attribute_cleared_or_whitespace_in_entra_is_cleared_in_frankli(
    make_tenant, frankli_target: dict[str, Any]
) -> None:
    """Over SCIM the start date is not synced (no attribute for it): clearing it changes nothing there."""
    tenant = make_tenant(users=80, seed=20, **frankli_target)
    scim = _is_scim(tenant)
    directory = tenant.directory

    def complete(u: dict[str, Any]) -> bool:
        return bool(u["mobilePhone"] and u["businessPhones"] and u["officeLocation"] and u["employeeHireDate"])

    cleared, blanked = _plain_members(directory, 2, where=complete)
    tenant.run()
    first, first_ids = tenant.people(), tenant.frankli_ids()
    if not scim:
        first_rows = tenant.users()
        sites = _entity_names(tenant, "sites")
        roles = _entity_names(tenant, "roles")

    directory.update_user(
        cleared["id"], mobilePhone=None, businessPhones=[], streetAddress=None, jobTitle=None, employeeHireDate=None
    )
    directory.update_user(blanked["id"], mobilePhone="   ", city="   ", officeLocation=" ", postalCode="\t")
    tenant.run()
    after = tenant.people()
    actions = _user_actions(tenant, _run_id(tenant))
    assert set(actions) == {cleared["id"], blanked["id"]}

    expected = {
        cleared["id"]: {
            "mobile_phone": first[cleared["id"]]["mobile_phone"],
            "phone": first[cleared["id"]]["phone"],
            "street_address": first[cleared["id"]]["street_address"],
            "role": first[cleared["id"]]["role"],
        },
        blanked["id"]: {
            "mobile_phone": first[blanked["id"]]["mobile_phone"],
            "city": first[blanked["id"]]["city"],
            "postal_code": first[blanked["id"]]["postal_code"],
            "site": first[blanked["id"]]["site"],
        },
    }
    if not scim:  # SCIM has no start date
        expected[cleared["id"]]["start_date"] = first_rows[cleared["id"]]["start_date"].isoformat()
    rows = {} if scim else tenant.users()
    for object_id, old_values in expected.items():
        changes = _only_action(actions, object_id, "update")["details"]["changes"]
        assert set(changes) == set(old_values), changes
        for name, old in old_values.items():
            assert old is not None, f"{name} should be set before the clear"
            if name != "start_date":
                assert after[object_id][name] is None, f"{name} cleared in Entra must be cleared in Frankli"
            if not scim:
                column = f"{name}_id" if name in ("role", "site") else name
                assert rows[object_id][column] is None, f"{name} cleared in Entra must be cleared in Frankli"
            before, now = changes[name]
            assert now is None
            assert str(before).casefold() == str(old).casefold(), (name, before, old)
        assert after[object_id]["archived"] is False and tenant.frankli_ids()[object_id] == first_ids[object_id]
        assert tenant.statuses()[object_id] == _created_status(tenant)

    if scim:
        # Removed, not written empty: the attributes are gone from the resources.
        stored = tenant.stored_users()
        gone = stored[cleared["id"]]
        assert "title" not in gone
        assert not gone.get("phoneNumbers"), gone.get("phoneNumbers")
        assert all("streetAddress" not in a for a in gone.get("addresses") or ())
        blank = stored[blanked["id"]]
        assert [p["type"] for p in blank["phoneNumbers"]] == ["work"]
        (work,) = [a for a in blank["addresses"] if a.get("type") == "work"]
        assert not {"locality", "postalCode", "formatted"} & set(work), work
    else:
        # Entities lose a user, not their existence: the sync never deletes them.
        assert set(_entity_names(tenant, "roles").values()) >= set(roles.values())
        assert set(_entity_names(tenant, "sites").values()) >= set(sites.values())
    tenant.run()
    assert _user_actions(tenant, _run_id(tenant)) == {}, "a cleared value stays cleared: nothing to do next time"


# --------------------------------------------------------------------------- 8. per-tenant mapping


def test_per_tenant_attribute_mapping_always_and_on_create(make_tenant, frankli_target) -> None:
    mapping = {"site": {"from": "city", "on": "always"}, "role": {"from": "jobTitle", "on": "create"}}
    tenant = make_tenant(users=80, seed=21, mapping=mapping, **frankli_target)
    scim = _is_scim(tenant)
    directory = tenant.directory
    promoted, moved = _plain_members(directory, 2, where=lambda u: u["city"] and u["officeLocation"])
    tenant.run()
    first, first_stored = tenant.people(), tenant.stored_users()

    entra = {u["id"]: u for u in directory.users_sorted()}
    for object_id, user in first.items():
        city = (entra[object_id]["city"] or "").strip()
        if city:
            assert user["site"].casefold() == city.casefold(), "site comes from city"
        else:
            assert user["site"] is None
    offices_only = {(u["officeLocation"] or "").strip().casefold() for u in entra.values()} - {
        (u["city"] or "").strip().casefold() for u in entra.values()
    }
    assert offices_only, "the tenant should have an office name that is no city (e.g. 'Seattle HQ')"
    site_names = {p["site"] for p in first.values() if p["site"]}
    if not scim:
        site_names |= set(_entity_names(tenant, "sites").values())
    assert not {n.casefold() for n in site_names} & offices_only, "officeLocation is not mapped any more"
    assert first[promoted["id"]]["role"] == promoted["jobTitle"]

    directory.update_user(promoted["id"], jobTitle="Head of Vibes", officeLocation="Somewhere Else")
    directory.update_user(moved["id"], city="Lisbon")
    hired = directory.add_user(
        _new_member(directory, "rosa.recruit", jobTitle="Chief Happiness Officer", city="Valencia"),
        manager_id=directory.manager_of(moved["id"]),
    )
    tenant.run()
    after = tenant.people()
    actions = _user_actions(tenant, _run_id(tenant))

    assert after[promoted["id"]] == first[promoted["id"]], "role is on create only; officeLocation is unmapped"
    assert tenant.stored_users()[promoted["id"]] == first_stored[promoted["id"]], "nothing written to the user"
    assert promoted["id"] not in actions
    assert "Head of Vibes" not in {p["role"] for p in after.values()}
    if not scim:
        roles = _entity_names(tenant, "roles")
        assert "Head of Vibes" not in roles.values(), "a role only an existing user's on-create title needs is not made"

    assert after[moved["id"]]["site"] == "Lisbon"
    assert after[moved["id"]]["city"] == "Lisbon"
    changes = _only_action(actions, moved["id"], "update")["details"]["changes"]
    assert set(changes) == {"city", "site"}
    assert changes["city"] == [moved["city"], "Lisbon"]
    assert changes["site"][0].casefold() == moved["city"].casefold() and changes["site"][1].casefold() == "lisbon"

    assert tenant.statuses()[hired] == _created_status(tenant)
    assert after[hired]["role"] == "Chief Happiness Officer", "a new hire gets its role on create"
    assert after[hired]["site"] == "Valencia"
    if scim:
        stored = tenant.stored_users()[hired]
        assert stored["title"] == "Chief Happiness Officer"
        assert [a["formatted"] for a in stored["addresses"] if a.get("type") == "work"] == ["Valencia"]
    else:
        row = tenant.users()[hired]
        assert roles[row["role_id"]] == "Chief Happiness Officer"
        assert _entity_names(tenant, "sites")[row["site_id"]] == "Valencia"
    fields = _only_action(actions, hired, "create")["details"]["fields"]
    assert fields["role"].casefold() == "chief happiness officer"
    assert fields["site"].casefold() == "valencia"
    assert set(actions) == {moved["id"], hired}


def test_invalid_attribute_mapping_fails_naming_the_field(make_tenant, frankli_target) -> None:
    tenant = make_tenant(users=60, seed=22, mapping={"site": {"from": "nonsense"}}, **frankli_target)
    with pytest.raises(ConfigError, match=r"mapping\.site\.from") as failure:
        tenant.run()
    assert "nonsense" in str(failure.value)
    assert tenant.runs == [], "no DAG run starts on an invalid config"
    if _is_scim(tenant):
        assert tenant.scim.requests == [], "nothing is asked of Frankli"
