"""The sync rules through real DAG runs, once per Frankli target: the database and the SCIM API.

The SCIM side is a real, independent SCIM 2.0 server (`scim2-server`, in-memory storage) served
over HTTP on localhost (`scim_test_server`). Both targets are checked through one view of Frankli
(`SyncedTenant.people`) and the audit, so a rule holds over the interface, not in one sink.
"""

from __future__ import annotations

from typing import Any

import pytest
from synced_tenant import valid_leaves

pytestmark = pytest.mark.integration

SINKS = ["database", "scim"]
WRITES = ("POST", "PATCH", "PUT", "DELETE")


@pytest.fixture(params=SINKS)
def sink(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _members(tenant: Any, count: int) -> list[dict[str, Any]]:
    leaves = valid_leaves(tenant.directory)
    assert len(leaves) >= count
    return [tenant.directory.get_user(i) for i in leaves[:count]]


def _actions(tenant: Any, run_index: int = -1) -> list[tuple[str, str]]:
    run_id = tenant.runs[run_index].run_id
    return [(r["action"], r["external_id"]) for r in tenant.audit(run_id) if r["action"] != "quarantine"]


def _writes(tenant: Any, since: int) -> list[Any]:
    return [r for r in tenant.scim.requests[since:] if r.method in WRITES]


def test_initial_sync_then_a_rerun_writes_nothing(make_tenant, sink: str) -> None:
    tenant = make_tenant(users=60, seed=21, target=sink)
    tenant.run()
    people = tenant.people()
    created = [a for a in _actions(tenant) if a[0] == "create"]
    assert len(created) == len(people) >= 50
    one = _members(tenant, 1)[0]
    assert people[one["id"]]["email"] == one["userPrincipalName"]
    assert people[one["id"]]["department"] == one["department"]
    assert people[one["id"]]["manager"] == tenant.directory.manager_of(one["id"])
    if sink == "scim":
        posts = _writes(tenant, 0)
        assert len(posts) == len(people) and {r.method for r in posts} == {"POST"}

    since = len(tenant.scim.requests) if sink == "scim" else 0
    tenant.run()
    assert tenant.people() == people
    assert _actions(tenant) == [], "a re-run with nothing changed in Entra writes nothing"
    basis = tenant.report()["basis"]
    assert basis["mode"] == "incremental", basis
    # The database's mark (one query) is still read; a SCIM endpoint is asked nothing at all.
    assert basis.get("frankli_read", True) is (sink == "database"), basis
    if sink == "scim":
        assert tenant.scim.requests[since:] == [], "a re-run sends no request at all: nothing to plan, nothing read"


def test_a_cleared_entra_attribute_is_cleared_in_frankli(make_tenant, sink: str) -> None:
    tenant = make_tenant(users=60, seed=22, target=sink)
    (user,) = _members(tenant, 1)
    assert user.get("mobilePhone") and user.get("city")
    tenant.run()
    assert tenant.people()[user["id"]]["mobile_phone"] == user["mobilePhone"]

    tenant.directory.update_user(user["id"], mobilePhone=None, city=None)
    since = len(tenant.scim.requests) if sink == "scim" else 0
    tenant.run()
    after = tenant.people()[user["id"]]
    assert after["mobile_phone"] is None and after["city"] is None
    assert after["street_address"] == user["streetAddress"], "the rest of the address stays"
    (update,) = [r for r in tenant.audit(tenant.runs[-1].run_id) if r["action"] == "update"]
    assert update["details"]["changes"] == {
        "city": [user["city"], None],
        "mobile_phone": [user["mobilePhone"], None],
    }
    if sink == "scim":
        (patch,) = _writes(tenant, since)
        assert patch.method == "PATCH"
        assert sorted((o["op"], o["path"]) for o in patch.body["Operations"]) == [
            ("remove", 'addresses[type eq "work"].locality'),
            ("remove", 'phoneNumbers[type eq "mobile"]'),
        ]
        stored = tenant.scim.users()[user["userPrincipalName"]]
        assert [p["type"] for p in stored["phoneNumbers"]] == ["work"]
        assert "locality" not in stored["addresses"][0]
        # No task lists Frankli's users again: each uses the listing the last one kept while the mark holds.
        assert [r.query for r in tenant.scim.requests[since:] if "startIndex" in r.query] == []
        (changed,) = tenant.report()["changes"]["shown"]
        assert (changed["action"], changed["object_id"]) == ("update", user["id"])
        assert changed["name"] == f"{user['givenName']} {user['surname']}", "the report names who changed"


def test_disabled_user_is_archived_and_restored_when_enabled(make_tenant, sink: str) -> None:
    tenant = make_tenant(users=60, seed=23, target=sink)
    (user,) = _members(tenant, 1)
    tenant.run()
    tenant.directory.update_user(user["id"], accountEnabled=False)
    tenant.run()
    assert tenant.people()[user["id"]]["archived"] is True
    (archive,) = [r for r in tenant.audit(tenant.runs[-1].run_id) if r["action"] == "archive"]
    assert (archive["external_id"], archive["details"]["reason"]) == (user["id"], "disabled")

    tenant.directory.update_user(user["id"], accountEnabled=True)
    tenant.run()
    assert tenant.people()[user["id"]]["archived"] is False
    assert _actions(tenant) == [("restore", user["id"])]


def test_deletion_guard_stops_a_mass_archive(make_tenant, sink: str) -> None:
    tenant = make_tenant(users=60, seed=24, target=sink)
    tenant.run()
    leaving = _members(tenant, 12)  # more than max_archive_share (10%) of ~55 synced users
    for user in leaving:
        tenant.directory.delete_user(user["id"])
    since = len(tenant.scim.requests) if sink == "scim" else 0
    tenant.run(expect="failed")
    assert not any(p["archived"] for p in tenant.people().values()), "the guard archived nobody"
    assert "deletion guard" in tenant.report()["deletion_guard"]["message"]
    if sink == "scim":
        assert _writes(tenant, since) == []

    tenant.run(conf={"allow_mass_archive": True})
    people = tenant.people()
    assert all(people[u["id"]]["archived"] for u in leaving)
    archived = [r for r in tenant.audit(tenant.runs[-1].run_id) if r["action"] == "archive"]
    assert sorted(r["external_id"] for r in archived) == sorted(u["id"] for u in leaving)
    # The delta that reported the deletions was read by the stopped run: this one finds them missing.
    assert {r["details"]["reason"] for r in archived} <= {"deleted", "not_in_source"}


def test_a_frankli_user_with_the_same_address_is_linked_not_duplicated(make_tenant, sink: str) -> None:
    tenant = make_tenant(users=60, seed=25, target=sink)
    (user,) = _members(tenant, 1)
    tenant.add_frankli_user(user["userPrincipalName"], "Typed", "By HR")
    tenant.run()
    people = tenant.people()
    assert f"email:{user['userPrincipalName']}" not in people
    assert people[user["id"]]["first_name"] == user["givenName"]
    assert sum(1 for p in people.values() if p["email"] == user["userPrincipalName"]) == 1
    mine = [a for a, who in _actions(tenant) if who == user["id"]]
    assert mine == ["link", "update"]


def test_a_user_deactivated_in_frankli_stays_so(make_tenant, sink: str) -> None:
    tenant = make_tenant(users=60, seed=26, target=sink)
    (user,) = _members(tenant, 1)
    tenant.run()
    tenant.deactivate_in_frankli(user["id"])
    tenant.directory.update_user(user["id"], jobTitle="Promoted")
    tenant.run()
    assert tenant.people()[user["id"]]["archived"] is True, "an admin's archive is not undone by the sync"
    assert user["id"] not in {who for _, who in _actions(tenant)}
    findings = tenant.report()["archived_in_frankli"]
    assert [f["external_id"] for f in findings] == [user["id"]]


def test_dry_run_writes_nothing_and_only_user_changes_one_user(make_tenant, sink: str) -> None:
    tenant = make_tenant(users=60, seed=27, target=sink)
    first, second = _members(tenant, 2)
    tenant.run()
    before = tenant.people()
    tenant.directory.update_user(first["id"], jobTitle="Head of Things")
    tenant.directory.update_user(second["id"], jobTitle="Deputy Head of Things")
    since = len(tenant.scim.requests) if sink == "scim" else 0
    tenant.run(conf={"dry_run": True})
    assert tenant.people() == before and _actions(tenant) == []
    assert tenant.report()["counts"]["update"] == 2
    if sink == "scim":
        assert _writes(tenant, since) == []

    tenant.run(conf={"only_user": first["userPrincipalName"]})
    after = tenant.people()
    assert after[first["id"]]["role"] == "Head of Things"
    assert after[second["id"]]["role"] == second["jobTitle"]
    assert _actions(tenant) == [("update", first["id"])]


def test_a_new_manager_is_set_by_reference(make_tenant, sink: str) -> None:
    tenant = make_tenant(users=60, seed=28, target=sink)
    user, *others = _members(tenant, 20)
    tenant.run()
    managers = {tenant.directory.manager_of(o["id"]) for o in others} - {tenant.directory.manager_of(user["id"])}
    new_manager = sorted(managers)[0]
    tenant.directory.update_user(user["id"], manager_id=new_manager)
    tenant.run()
    assert tenant.people()[user["id"]]["manager"] == new_manager
    assert _actions(tenant) == [("update", user["id"])]


def test_an_edit_in_frankli_behind_the_sync_is_seen_and_undone(make_tenant, sink: str) -> None:
    """A synced value changed in Frankli behind the sync. The database's mark shows it to the next run, which
    plans in full and writes Entra's value back. Over SCIM a run with nothing changed in Entra asks the endpoint
    nothing (so does not see it); the next run with a change in Entra reads the mark, sees it moved, plans in
    full and undoes the edit (as Entra's own incremental cycles, and every full read, do)."""
    tenant = make_tenant(users=60, seed=29, target=sink)
    user, other = _members(tenant, 2)
    tenant.run()
    tenant.rename_in_frankli(user["id"], "Edited In Frankli")
    if sink == "scim":
        since = len(tenant.scim.requests)
        tenant.run()
        assert tenant.report()["basis"]["frankli_read"] is False
        assert tenant.people()[user["id"]]["first_name"] == "Edited In Frankli", "a quiet run writes nothing"
        assert tenant.scim.requests[since:] == []
        tenant.directory.update_user(other["id"], jobTitle="Changed In Entra")
    tenant.run()
    basis = tenant.report()["basis"]
    assert basis["mode"] == "full" and "changed behind the sync" in basis["reason"], basis
    assert tenant.people()[user["id"]]["first_name"] == user["givenName"], "Entra's value is written back"
    updates = {r["external_id"]: r for r in tenant.audit(tenant.runs[-1].run_id) if r["action"] == "update"}
    assert set(updates) == ({user["id"], other["id"]} if sink == "scim" else {user["id"]})
    assert updates[user["id"]]["details"]["changes"] == {"first_name": ["Edited In Frankli", user["givenName"]]}
