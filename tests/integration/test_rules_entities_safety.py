"""DESIGN.md §2, rule by rule, through real DAG runs: entities, managers and the safety rules.

Each test drives one small generated tenant through the Graph emulator and the
real DAG (`dag.test()`), changes Entra (or Frankli) between runs, and checks the
resulting Frankli rows together with what the run recorded (`sync_audit`,
`report.json`). Every test runs once on SQLite and once on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import update

pytestmark = pytest.mark.integration

SYNC = "directory_sync"
FRANKLI_TABLES = ("organisations", "sites", "departments", "roles", "users", "sync_audit")
STEPS = ("extract", "validate", "transform", "load_upserts", "load_archives", "report")
# Frankli user column -> (entity table, Entra attribute it comes from).
ENTITY_COLUMNS = {
    "role_id": ("roles", "jobTitle"),
    "department_id": ("departments", "department"),
    "site_id": ("sites", "officeLocation"),
}


# --------------------------------------------------------------------------- helpers


def _key(value: Any) -> str | None:
    """The entity / email matching key: trimmed and case-folded; blank means no value."""
    return (value.strip().casefold() or None) if isinstance(value, str) else None


def _frankli(tenant: Any) -> dict[str, list[dict[str, Any]]]:
    """Every row of every Frankli table, but `organisations.synced_snapshot_at`.

    Each load records there the instant of the snapshot it applied (so an older run's load can
    never undo a newer one's), whether it changed anything or not; a re-extracted run is newer.
    """
    tables = {name: tenant.table(name) for name in FRANKLI_TABLES}
    tables["organisations"] = [
        {k: v for k, v in o.items() if k != "synced_snapshot_at"} for o in tables["organisations"]
    ]
    return tables


def _valid(directory: Any) -> list[str]:
    """Valid, enabled members with a manager (never the CEO), in paging order."""
    return [u["id"] for u in directory.users_sorted() if directory.is_valid_member(u) and directory.manager_of(u["id"])]


def _valid_leaves(directory: Any) -> list[str]:
    """Valid members who manage nobody (changing them leaves the rest of the tree alone)."""
    managing = set(directory.managers.values())
    return [i for i in _valid(directory) if i not in managing]


def _hire(directory: Any, local: str, manager_id: str | None = None, **props: Any) -> str:
    """Add a valid member (UPN = mail) to Entra; returns the object id."""
    upn = f"{local}@{directory.domain}"
    given, _, surname = local.partition(".")
    user = {
        "userPrincipalName": upn,
        "mail": upn,
        "displayName": f"{given.title()} {surname.title()}",
        "givenName": given.title(),
        "surname": surname.title(),
        "jobTitle": "Software Engineer",
        "department": "Engineering",
        "officeLocation": "Dublin",
        "city": "Dublin",
        "country": "Ireland",
        "businessPhones": ["+353 1 555 0100"],
        "employeeHireDate": "2025-07-01T00:00:00Z",
        "accountEnabled": True,
        "userType": "Member",
        **props,
    }
    return directory.add_user(user, manager_id=manager_id)


def _upn(directory: Any, object_id: str) -> str:
    return directory.get_user(object_id)["userPrincipalName"]


def _by_action(audit: list[dict[str, Any]], action: str) -> dict[str, dict[str, Any]]:
    rows = [a for a in audit if a["action"] == action]
    by_id = {a["external_id"]: a for a in rows}
    assert len(by_id) == len(rows), f"duplicate {action} audit rows for one user"
    return by_id


def _written(audit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Audit rows that record a change (quarantine rows are re-recorded by every run)."""
    return [a for a in audit if a["action"] != "quarantine"]


def _entity(tenant: Any, table: str, key: str) -> list[dict[str, Any]]:
    """All rows of an entity table whose name has this key (deleted ones included)."""
    return [r for r in tenant.table(table) if _key(r["name"]) == key]


def _restore(directory: Any, saved: list[dict[str, Any]], managers: dict[str, str]) -> None:
    """Put deleted users back into Entra with their object ids and managers (managers first)."""

    def depth(object_id: str) -> int:
        return 0 if object_id not in managers else 1 + depth(managers[object_id])

    for user in sorted(saved, key=lambda u: depth(u["id"])):
        directory.add_user(user, manager_id=managers.get(user["id"]))


def _force_manager(directory: Any, object_id: str, manager_id: str) -> None:
    """Set a manager link even when it closes a cycle.

    The emulator's `update_user` refuses cycles, but a directory fed by HR imports or scripts
    can come to hold one, and the sync must cope. This goes through the emulator's own
    internals so its reports index and its delta change log stay consistent.
    """
    from graph_emulator.changes import MANAGER

    with directory.batch():
        former = directory.manager_of(object_id)
        directory._set_manager(object_id, manager_id)
        directory._log.changed(object_id, [MANAGER], former_manager=former)


def _assert_no_duplicate_live_entities(tenant: Any) -> None:
    for table in ("sites", "departments", "roles"):
        keys = [_key(r["name"]) for r in tenant.table(table) if r["deleted_at"] is None]
        assert len(keys) == len(set(keys)), f"{table} holds two live rows with the same name: {sorted(keys)}"


def _assert_entities_match_entra(tenant: Any) -> None:
    """Every synced user references the live entity named (trimmed, case-insensitively) as in Entra."""
    names = {
        table: {r["id"]: r["name"] for r in tenant.table(table) if r["deleted_at"] is None}
        for table in ("sites", "departments", "roles")
    }
    for external_id, user in tenant.users().items():
        entra = tenant.directory.get_user(external_id)
        if entra is None or user["status"] == "archived":
            continue
        for column, (table, attribute) in ENTITY_COLUMNS.items():
            expected = _key(entra[attribute])
            actual = _key(names[table].get(user[column])) if user[column] is not None else None
            assert actual == expected, f"{external_id}.{column}: {actual!r}, Entra {attribute} is {entra[attribute]!r}"


def _assert_no_manager_cycle(users: dict[str, dict[str, Any]]) -> None:
    manager = {u["id"]: u["manager_id"] for u in users.values()}
    for start in manager:
        seen, node = set(), start
        while node is not None:
            assert node not in seen, f"manager cycle through Frankli user {node}"
            seen.add(node)
            node = manager.get(node)


# --------------------------------------------------------------------------- rule 1


def test_entities_created_trimmed_case_insensitively_once_and_never_updated(make_tenant, frankli_url) -> None:
    """Sites, departments, roles: matched trimmed + case-insensitively, created once, never updated."""
    tenant = make_tenant(users=100, seed=11, frankli_url=frankli_url)
    directory = tenant.directory
    sales = _valid_leaves(directory)[:3]
    for object_id, spelling in zip(sales, ("Sales", " sales", "SALES "), strict=True):
        directory.update_user(object_id, department=spelling)
    # Frankli already has these, created by an admin in another case: the sync must reuse them.
    [legal] = tenant.seed("departments", [{"name": "LEGAL"}])
    [director] = tenant.seed("roles", [{"name": "director", "grade": "D1"}])
    [berlin] = tenant.seed("sites", [{"name": " berlin"}])

    tenant.run()
    users = tenant.users()
    run1 = tenant.runs[-1].run_id
    departments = tenant.table("departments")
    [sales_row] = [d for d in departments if _key(d["name"]) == "sales"]
    assert sales_row["created_by"] == SYNC and sales_row["deleted_at"] is None
    assert sales_row["name"] in ("Sales", "sales", "SALES"), "the created name is the trimmed Entra value"
    for object_id in sales:
        assert users[object_id]["department_id"] == sales_row["id"]
    # Every "sales" user (generated ones with mangled spellings too) shares that single row.
    in_sales = [u for ext, u in users.items() if _key(directory.get_user(ext)["department"]) == "sales"]
    assert {u["department_id"] for u in in_sales} == {sales_row["id"]}
    # The Frankli-created entities are reused, not duplicated, and keep their spelling and owner.
    for table, key, seeded_id, name in (
        ("departments", "legal", legal, "LEGAL"),
        ("roles", "director", director, "director"),
        ("sites", "berlin", berlin, " berlin"),
    ):
        [row] = _entity(tenant, table, key)
        assert (row["id"], row["name"], row["created_by"]) == (seeded_id, name, "frankli"), table
    column_of = {"departments": "department_id", "roles": "role_id", "sites": "site_id"}
    for table, seeded_id in (("departments", legal), ("roles", director), ("sites", berlin)):
        referencing = [u for u in users.values() if u[column_of[table]] == seeded_id]
        assert referencing, f"no user references the seeded {table} row"
    _assert_entities_match_entra(tenant)
    _assert_no_duplicate_live_entities(tenant)
    created_by_sync = sum(
        1 for table in ("sites", "departments", "roles") for r in tenant.table(table) if r["created_by"] == SYNC
    )
    report = tenant.report()
    assert report["planned"]["entity_create"] == created_by_sync
    assert report["counts"]["create"] == len(users) == len(_by_action(tenant.audit(run1), "create"))
    created = _by_action(tenant.audit(run1), "create")
    assert {_key(created[o]["details"]["fields"]["department"]) for o in sales} == {"sales"}

    # Frankli owns entities after creation: an admin sets grades on a synced and on a seeded role.
    vp = next(r for r in tenant.table("roles") if _key(r["name"]) == "vice president")
    assert vp["created_by"] == SYNC and vp["grade"] is None
    from frankli_sync.sinks.schema import roles

    tenant.execute(update(roles).where(roles.c.id == vp["id"]).values(grade="VP-1"))
    tenant.execute(update(roles).where(roles.c.id == director).values(grade="D2"))
    entities = {t: tenant.table(t) for t in ("sites", "departments", "roles")}

    # Entra re-spells values it already has: that is no change, and nothing is renamed or re-created.
    respelled = [ext for ext in _valid(directory) if users[ext]["role_id"] == vp["id"]][:2]
    assert respelled
    for object_id in respelled:
        directory.update_user(object_id, jobTitle="  VICE president ")
    directory.update_user(sales[0], department="sAlEs")
    for _ in range(2):
        tenant.run()
        assert {t: tenant.table(t) for t in entities} == entities, "an entity was updated or duplicated"
        assert _written(tenant.audit(tenant.runs[-1].run_id)) == []
        assert tenant.report()["planned"]["entity_create"] == 0
    after = tenant.users()
    assert [after[o]["role_id"] for o in respelled] == [vp["id"]] * len(respelled)
    assert after[sales[0]]["department_id"] == sales_row["id"]
    assert next(r for r in tenant.table("roles") if r["id"] == director)["grade"] == "D2"


# --------------------------------------------------------------------------- rule 2


def test_entity_deleted_in_frankli_is_not_resurrected_until_the_entra_value_changes(make_tenant, frankli_url) -> None:
    tenant = make_tenant(users=100, seed=11, frankli_url=frankli_url)
    directory = tenant.directory
    tenant.run()
    [legal] = _entity(tenant, "departments", "legal")
    affected = {ext for ext, u in tenant.users().items() if u["department_id"] == legal["id"]}
    assert len(affected) >= 5

    from frankli_sync.sinks.schema import departments

    deleted_at = datetime.now(UTC)
    tenant.execute(update(departments).where(departments.c.id == legal["id"]).values(deleted_at=deleted_at))

    # Entra unchanged: no "legal" department is created; its users keep no reference and are reported.
    tenant.run()
    run2 = tenant.runs[-1].run_id
    [still_deleted] = _entity(tenant, "departments", "legal")
    assert still_deleted["id"] == legal["id"] and still_deleted["deleted_at"] is not None
    users = tenant.users()
    assert {ext: users[ext]["department_id"] for ext in affected} == dict.fromkeys(affected)
    updates = _by_action(tenant.audit(run2), "update")
    assert set(updates) == affected
    for ext in affected:
        assert updates[ext]["details"]["changes"] == {"department": ["(deleted in Frankli)", None]}
    orphans = tenant.report()["orphaned_references"]
    assert {o["external_id"] for o in orphans} == affected
    assert {(o["field"], _key(o["value"])) for o in orphans} == {("department", "legal")}
    assert all("set a new value in Entra" in o["action"] for o in orphans)

    # A Graph outage (an empty extract) in between changes nothing: no one is archived, and once the
    # users are back their department is still not "changed", so it is still not created again.
    saved, managers = directory.users_sorted(), dict(directory.managers)
    for user in saved:
        directory.delete_user(user["id"])
    tenant.run(expect="failed")
    assert tenant.report()["deletion_guard"]["blocked"] is True
    _restore(directory, saved, managers)
    before = _frankli(tenant)
    tenant.run()
    assert _frankli(tenant)["users"] == before["users"] and _entity(tenant, "departments", "legal") == [still_deleted]
    assert _written(tenant.audit(tenant.runs[-1].run_id)) == []
    assert {o["external_id"] for o in tenant.report()["orphaned_references"]} == affected
    assert tenant.report()["deletion_guard"]["last_synced_users"] == len(saved), "an empty extract is no baseline"

    # One user moves to another department, then back to the old name: that is a change, so the
    # department is created again (a new row) and every user carrying that name references it.
    mover = sorted(affected)[0]
    directory.update_user(mover, department="Finance")
    tenant.run()
    assert _entity(tenant, "departments", "legal") == [still_deleted]
    [finance] = [d for d in _entity(tenant, "departments", "finance") if d["deleted_at"] is None]
    assert tenant.users()[mover]["department_id"] == finance["id"]
    assert {o["external_id"] for o in tenant.report()["orphaned_references"]} == affected - {mover}

    directory.update_user(mover, department="Legal")
    tenant.run()
    run4 = tenant.runs[-1].run_id
    rows = _entity(tenant, "departments", "legal")
    [recreated] = [r for r in rows if r["deleted_at"] is None]
    assert len(rows) == 2 and recreated["id"] != legal["id"]
    assert (recreated["name"], recreated["created_by"]) == ("Legal", SYNC)
    users = tenant.users()
    assert {ext: users[ext]["department_id"] for ext in affected} == dict.fromkeys(affected, recreated["id"])
    assert set(_by_action(tenant.audit(run4), "update")) == affected
    assert tenant.report()["orphaned_references"] == []
    _assert_no_duplicate_live_entities(tenant)


# --------------------------------------------------------------------------- rule 3


def test_managers_resolved_by_object_id_problems_reported_and_cycles_broken(make_tenant, frankli_url) -> None:
    tenant = make_tenant(users=100, seed=11, frankli_url=frankli_url)
    directory = tenant.directory
    tenant.run()
    users = tenant.users()
    by_frankli_id = {u["id"]: ext for ext, u in users.items()}
    linked = 0
    for ext, user in users.items():
        manager = directory.manager_of(ext)
        expected = users[manager]["id"] if manager in users else None
        assert user["manager_id"] == expected, ext
        linked += expected is not None
    assert linked > 0.8 * len(users)
    baseline_problems = {p["external_id"]: p["reason"] for p in tenant.report()["manager_problems"]}

    # Two managers whose reports are all synced: one turns Guest (out of scope), one gets mail ≠ UPN.
    valid = set(_valid(directory))
    leaves = _valid_leaves(directory)
    managers = [
        m for m in sorted(set(directory.managers.values()) & valid) if set(directory.direct_reports(m)) <= set(users)
    ]
    out_of_scope, quarantined = managers[0], managers[1]
    reports = {m: set(directory.direct_reports(m)) for m in (out_of_scope, quarantined)}
    directory.update_user(out_of_scope, userType="Guest")
    directory.update_user(quarantined, mail="someone.else@legacy.contoso.example")
    # A cycle A → B → A: the first link through update_user, the closing one forced (see _force_manager).
    a, b = [u for u in leaves if not any(u in r for r in reports.values())][:2]
    # What Frankli holds as their managers now (None when that manager is not synced).
    old_managers = {u: m if (m := directory.manager_of(u)) in users else None for u in (a, b)}
    directory.update_user(a, manager_id=b)
    with pytest.raises(ValueError, match="cycle"):
        directory.update_user(b, manager_id=a)
    _force_manager(directory, b, a)
    assert directory.manager_of(directory.manager_of(a)) == a
    # Two new hires, one managing the other: resolved once both exist.
    lead = _hire(directory, "nova.lead")
    hire = _hire(directory, "nova.hire", manager_id=lead)

    tenant.run()
    run2 = tenant.runs[-1].run_id
    users = tenant.users()
    assert users[out_of_scope]["status"] == "archived" and users[out_of_scope]["archived_reason"] == "out_of_scope"
    assert users[quarantined]["status"] == "uninvited", "a quarantined manager stays as it was"
    assert users[hire]["manager_id"] == users[lead]["id"]
    report = tenant.report()
    problems = {p["external_id"]: p for p in report["manager_problems"]}
    expected_reasons = (
        baseline_problems
        | {r: "out_of_scope" for r in reports[out_of_scope]}
        | {r: "quarantined" for r in reports[quarantined]}
    )
    assert {ext: p["reason"] for ext, p in problems.items()} == expected_reasons
    updates = _by_action(tenant.audit(run2), "update")
    for manager, reported in reports.items():
        for ext in reported:
            assert problems[ext]["manager_id"] == manager
            assert problems[ext]["email"] == users[ext]["email"]
            assert users[ext]["manager_id"] is None
            assert updates[ext]["details"]["changes"]["manager"] == [manager, None]

    # The cycle is reported and broken: exactly one of the two links is loaded.
    [cycle] = report["manager_cycles"]
    assert {m[0] for m in cycle["members"]} == {a, b}
    assert {m[1] for m in cycle["members"]} == {users[a]["email"], users[b]["email"]}
    links = {a: users[a]["manager_id"], b: users[b]["manager_id"]}
    kept = [ext for ext, manager in links.items() if manager is not None]
    assert len(kept) == 1, f"cycle not broken exactly once: {links}"
    [keeper] = kept
    other = b if keeper == a else a
    assert by_frankli_id[links[keeper]] == other
    assert updates[keeper]["details"]["changes"]["manager"] == [old_managers[keeper], other]
    assert updates[other]["details"]["changes"]["manager"] == [old_managers[other], None]
    _assert_no_manager_cycle(users)

    # Stable: the next run with no Entra change keeps the same link and writes nothing.
    tenant.run()
    assert tenant.users() == users
    assert _written(tenant.audit(tenant.runs[-1].run_id)) == []
    assert len(tenant.report()["manager_cycles"]) == 1


# --------------------------------------------------------------------------- rule 4


def test_deletion_guard_blocks_mass_archive_but_not_upserts(make_tenant, frankli_url) -> None:
    tenant = make_tenant(users=100, seed=11, frankli_url=frankli_url)
    directory = tenant.directory
    tenant.run()
    synced = {ext for ext, u in tenant.users().items() if u["status"] != "archived"}

    # 15 deletions > min(500, 10% of 94 synced users) = 9; plus a hire and a change in the same run.
    deleted = _valid_leaves(directory)[:15]
    changed = _valid_leaves(directory)[15]
    for object_id in deleted:
        directory.delete_user(object_id)
    directory.update_user(changed, jobTitle="Principal Engineer", city="Galway")
    hire = _hire(directory, "grace.guard", manager_id=directory.manager_of(changed))

    tenant.run(expect="failed")
    run2 = tenant.runs[-1].run_id
    users = tenant.users()
    guard = tenant.report()["deletion_guard"]
    limit = (len(synced) + 1) // 10  # the hire counts as synced by the time archives are decided
    assert limit < 15 and guard["synced_users"] == len(synced) + 1
    assert guard["blocked"] is True and guard["to_archive"] == 15 and guard["limit"] == limit
    assert "archive 15 users" in guard["message"] and "allow_mass_archive" in guard["message"]
    assert tenant.report()["incomplete_tasks"] == ["load_archives"]
    assert [u for u in users.values() if u["status"] == "archived"] == []
    assert _by_action(tenant.audit(run2), "archive") == {}
    # The upserts of the same run landed.
    assert users[hire]["status"] == "uninvited" and users[hire]["email"] == _upn(directory, hire)
    assert users[changed]["city"] == "Galway"
    [role] = [r for r in tenant.table("roles") if r["id"] == users[changed]["role_id"]]
    assert _key(role["name"]) == "principal engineer"
    assert set(_by_action(tenant.audit(run2), "create")) == {hire}
    assert set(_by_action(tenant.audit(run2), "update")) == {changed}

    # Re-triggered with the override, the same deletions go through.
    tenant.run(conf={"allow_mass_archive": True})
    run3 = tenant.runs[-1].run_id
    users = tenant.users()
    assert {ext for ext, u in users.items() if u["status"] == "archived"} == set(deleted)
    assert {users[ext]["archived_reason"] for ext in deleted} == {"not_in_source"}
    archives = _by_action(tenant.audit(run3), "archive")
    assert set(archives) == set(deleted) and {a["details"]["reason"] for a in archives.values()} == {"not_in_source"}
    assert [a for a in _written(tenant.audit(run3)) if a["action"] != "archive"] == []
    report = tenant.report()
    assert report["counts"]["archive"] == 15
    assert report["deletion_guard"]["blocked"] is False and report["deletion_guard"]["allow_mass_archive"] is True
    archived = set(deleted)

    # An extract sharply shrunken (36 users, under 50% of the 86 of the last synced run) archives nobody.
    # Invalid members go first so that the 36 left pass validation and the guard is what stops the run.
    assert len(directory) == 86
    ceo = next(u["id"] for u in directory.users_sorted() if directory.manager_of(u["id"]) is None)
    others = [u for u in directory.users_sorted() if u["id"] != ceo]
    doomed = [u["id"] for u in others if not directory.is_valid_member(u)]
    doomed += [u["id"] for u in others if directory.is_valid_member(u)][: 50 - len(doomed)]
    for object_id in doomed:
        directory.delete_user(object_id)
    assert len(directory) == 36
    tenant.run(expect="failed")
    guard = tenant.report()["deletion_guard"]
    assert guard["blocked"] is True and guard["staged_users"] == 36 and guard["last_synced_users"] == 86
    assert "under 50%" in guard["message"] and "allow_mass_archive" in guard["message"]
    assert {ext for ext, u in tenant.users().items() if u["status"] == "archived"} == archived
    assert _by_action(tenant.audit(tenant.runs[-1].run_id), "archive") == {}

    # An empty extract never archives anyone, not even with the override.
    for user in directory.users_sorted():
        directory.delete_user(user["id"])
    tenant.run(conf={"allow_mass_archive": True}, expect="failed")
    guard = tenant.report()["deletion_guard"]
    assert guard["blocked"] is True and guard["staged_users"] == 0
    assert "no users" in guard["message"]
    assert {ext for ext, u in tenant.users().items() if u["status"] == "archived"} == archived
    assert _by_action(tenant.audit(tenant.runs[-1].run_id), "archive") == {}


# --------------------------------------------------------------------------- rule 5


def test_validation_threshold_stops_the_run_before_loading(make_tenant, frankli_url) -> None:
    tenant = make_tenant(users=100, seed=11, frankli_url=frankli_url)
    directory = tenant.directory
    tenant.run()
    day1 = tenant.users()

    # 2 generated invalid members + 6 more = 8 of 99 checked users (> 5%); other changes wait behind them.
    leaves = _valid_leaves(directory)
    broken = leaves[:6]
    for object_id in broken:
        directory.update_user(object_id, mail=f"alias.{object_id[:8]}@legacy.contoso.example", city="Nowhere")
    changed = leaves[6]
    directory.update_user(changed, jobTitle="Principal Engineer")
    hire = _hire(directory, "vera.valid", manager_id=directory.manager_of(changed))
    before = _frankli(tenant)

    tenant.run(expect="failed")
    assert _frankli(tenant) == before, "a run stopped by validation must not write to Frankli"
    report = tenant.report()
    assert report["validation"]["threshold_exceeded"] is True
    members = sum(1 for u in directory.users_sorted() if u["userType"] == "Member")
    assert report["validation"]["failed_share"] > 0.05 and report["validation"]["in_scope"] == members
    # An incremental run: it validated the users that changed, and counts the share over the whole tenant.
    assert report["basis"]["mode"] == "incremental" and report["validation"]["checked"] < members
    assert set(broken) <= {q["object_id"] for q in report["quarantined"]}
    assert report["incomplete_tasks"][0] == "validate"
    assert report["status"] == "failed"

    # With the threshold raised for this tenant, the same data goes through and the rows are quarantined.
    tenant.tenant_extra["thresholds"] = {"max_invalid_share": 0.5}
    tenant.run()
    run3 = tenant.runs[-1].run_id
    users = tenant.users()
    for object_id in broken:
        assert users[object_id] == day1[object_id], "a quarantined user is neither updated nor archived"
    assert users[changed]["updated_at"] != day1[changed]["updated_at"]
    assert users[hire]["status"] == "uninvited"
    quarantines = _by_action(tenant.audit(run3), "quarantine")
    assert set(broken) <= set(quarantines)
    for object_id in broken:
        reasons = quarantines[object_id]["details"]["reasons"]
        assert "upn_equals_mail" in {r["expectation"] for r in reasons}
    assert set(_by_action(tenant.audit(run3), "create")) == {hire}
    assert set(_by_action(tenant.audit(run3), "update")) == {changed}
    assert _by_action(tenant.audit(run3), "archive") == {}
    report = tenant.report()
    assert report["validation"]["threshold_exceeded"] is False
    assert report["counts"]["quarantine"] == len(report["quarantined"]) == len(quarantines)


# --------------------------------------------------------------------------- rule 6


def test_dry_run_plans_and_reports_but_writes_nothing(make_tenant, frankli_url) -> None:
    tenant = make_tenant(users=100, seed=11, frankli_url=frankli_url)
    directory = tenant.directory
    tenant.run()
    leaves = _valid_leaves(directory)
    disabled, changed = leaves[0], leaves[1]
    directory.update_user(disabled, accountEnabled=False)
    directory.update_user(changed, jobTitle="Staff Cartographer", city="Cork")
    colleague = directory.get_user(changed)  # the hire joins an existing department and site
    hire = _hire(
        directory,
        "dora.dry",
        manager_id=directory.manager_of(changed),
        jobTitle="Quantum Wrangler",
        department=colleague["department"],
        officeLocation=colleague["officeLocation"],
    )
    before = _frankli(tenant)

    tenant.run(conf={"dry_run": True})
    assert _frankli(tenant) == before, "a dry run wrote to Frankli"
    report = tenant.report()
    assert report["dry_run"] is True and report["params"]["dry_run"] is True
    plan = report["plan"]
    assert [c["external_id"] for c in plan["create"]] == [hire]
    assert plan["create"][0]["email"] == _upn(directory, hire) and plan["create"][0]["status"] == "uninvited"
    assert [(a["external_id"], a["reason"]) for a in plan["archive"]] == [(disabled, "disabled")]
    [change] = plan["update"]
    assert change["external_id"] == changed
    assert change["changes"]["city"][1] == "Cork" and change["changes"]["role"][1] == "staff cartographer"
    assert {(e["table"], e["key"]) for e in plan["entity_create"]} == {
        ("roles", "staff cartographer"),
        ("roles", "quantum wrangler"),
    }
    assert {k: report["counts"][k] for k in ("create", "update", "archive")} == {"create": 1, "update": 1, "archive": 1}

    # The dry run left nothing behind: the next real run applies exactly that plan.
    tenant.run()
    audit = tenant.audit(tenant.runs[-1].run_id)
    assert set(_by_action(audit, "create")) == {hire}
    assert set(_by_action(audit, "update")) == {changed}
    assert set(_by_action(audit, "archive")) == {disabled}
    assert len(_written(audit)) == 3
    assert tenant.users()[disabled]["archived_reason"] == "disabled"


# --------------------------------------------------------------------------- rule 7


def test_only_user_provisions_that_user_alone(make_tenant, frankli_url) -> None:
    tenant = make_tenant(users=100, seed=11, frankli_url=frankli_url)
    directory = tenant.directory
    tenant.run()
    leaves = _valid_leaves(directory)
    manager = directory.manager_of(leaves[0])
    disable, disable_other, change, change_other = leaves[:4]
    hire = _hire(directory, "olive.only", manager_id=manager, department="Skunkworks")
    hire_other = _hire(directory, "otto.other", manager_id=manager, department="Moonshots")
    directory.update_user(disable, accountEnabled=False)
    directory.update_user(disable_other, accountEnabled=False)
    directory.update_user(change, jobTitle="Chief Cartographer", mobilePhone=None, city="Cork")
    directory.update_user(change_other, jobTitle="Chief Navigator", city="Limerick")

    def provision(object_id: str, upn: str, action: str) -> dict[str, Any]:
        before = _frankli(tenant)
        tenant.run(conf={"only_user": upn})
        after = _frankli(tenant)
        users_before = {u["external_id"]: u for u in before["users"]}
        users_after = {u["external_id"]: u for u in after["users"]}
        assert {k: v for k, v in users_after.items() if k != object_id} == {
            k: v for k, v in users_before.items() if k != object_id
        }, "only_user touched another user"
        assert users_after.get(object_id) != users_before.get(object_id)
        assert after["sync_audit"][: len(before["sync_audit"])] == before["sync_audit"]
        new_audit = after["sync_audit"][len(before["sync_audit"]) :]
        assert [(a["external_id"], a["action"]) for a in new_audit] == [(object_id, action)]
        assert tenant.report()["params"]["only_user"] == upn.strip()
        assert {k: v for k, v in tenant.report()["counts"].items() if v and k != "quarantine"} == {action: 1}
        return users_after[object_id]

    created = provision(hire, f"  {_upn(directory, hire).upper()}", "create")
    assert created["status"] == "uninvited"
    assert [_key(d["name"]) for d in tenant.table("departments") if d["id"] == created["department_id"]] == [
        "skunkworks"
    ]
    assert not _entity(tenant, "departments", "moonshots"), "an entity only another user needs was created"

    archived = provision(disable, _upn(directory, disable), "archive")
    assert (archived["status"], archived["archived_reason"]) == ("archived", "disabled")

    updated = provision(change, _upn(directory, change), "update")
    assert (updated["city"], updated["mobile_phone"]) == ("Cork", None)
    assert _entity(tenant, "roles", "chief cartographer") and not _entity(tenant, "roles", "chief navigator")

    # A normal run then catches up with everything else, and only that.
    tenant.run()
    audit = tenant.audit(tenant.runs[-1].run_id)
    assert {(a["external_id"], a["action"]) for a in _written(audit)} == {
        (hire_other, "create"),
        (disable_other, "archive"),
        (change_other, "update"),
    }


# --------------------------------------------------------------------------- rule 8


def test_every_task_and_the_whole_run_are_idempotent(make_tenant, frankli_url) -> None:
    tenant = make_tenant(users=100, seed=11, frankli_url=frankli_url)
    directory = tenant.directory
    tenant.run()
    leaves = _valid_leaves(directory)
    directory.delete_user(leaves[0])
    directory.update_user(leaves[1], accountEnabled=False)
    directory.update_user(leaves[2], jobTitle="Idempotency Officer", department="Reliability", mobilePhone="   ")
    directory.update_user(leaves[3], manager_id=leaves[4])
    _hire(directory, "ida.idem", manager_id=directory.manager_of(leaves[5]), officeLocation="Cork")
    tenant.run()
    run2 = tenant.runs[-1].run_id
    state = _frankli(tenant)
    written = _written(tenant.audit(run2))
    assert {a["action"] for a in written} == {"create", "update", "archive"}
    counts = tenant.report()["counts"]

    for step in STEPS:
        tenant.run_task(step)
        assert _frankli(tenant) == state, f"re-running {step} alone changed Frankli"
    for step in STEPS:
        tenant.run_task(step)
    assert _frankli(tenant) == state, "re-running the whole sequence changed Frankli"
    assert tenant.report()["counts"] == counts
    assert tenant.report()["run_id"] == run2

    # A new run with no Entra change writes nothing either.
    tenant.run()
    after = _frankli(tenant)
    assert {t: rows for t, rows in after.items() if t != "sync_audit"} == {
        t: rows for t, rows in state.items() if t != "sync_audit"
    }
    assert after["sync_audit"][: len(state["sync_audit"])] == state["sync_audit"]
    assert _written(tenant.audit(tenant.runs[-1].run_id)) == []
    assert {k: v for k, v in tenant.report()["counts"].items() if k != "quarantine"} == {}
