"""DESIGN.md §2, rule by rule, through real DAG runs: entities, managers and the safety rules.

Each test drives one small generated tenant through the Graph emulator and the
real DAG (`dag.test()`), changes Entra (or Frankli) between runs, and checks the
resulting Frankli state together with what the run recorded (`sync_audit`,
`report.json`). Every test runs once per Frankli target (`frankli_target`): the
database on SQLite and on PostgreSQL, and Frankli's SCIM API (a real scim2-server
over HTTP). What a rule means for every target is checked through the
target-neutral view (`SyncedTenant.people`, the audit, the report); what only a
database holds (entity rows, statuses, `archived_*` columns) only there, and the
SCIM equivalent (the requests the sink sent, the server's users) only over SCIM.

A deleted entity has no meaning over SCIM (no entity tables: a role, department or
site is text on the user), so that test runs on the databases only.
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
# `SyncedTenant.people` field -> the Entra attribute it comes from.
ENTITY_FIELDS = {"role": "jobTitle", "department": "department", "site": "officeLocation"}
SCIM_WRITES = ("POST", "PUT", "PATCH", "DELETE")
SCIM_ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


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


def _state(tenant: Any) -> dict[str, Any]:
    """All a target holds: every Frankli table (database), or (SCIM) every user as the server holds
    it (`meta.lastModified` and `meta.version` included, so any write shows) and the sync's ledger."""
    if tenant.scim is None:
        return _frankli(tenant)
    organisations = [
        {k: v for k, v in o.items() if k != "synced_snapshot_at"} for o in tenant.ledger_table("organisations")
    ]
    return {"users": tenant.scim.users(), "sync_audit": tenant.audit(), "organisations": organisations}


def _since(tenant: Any) -> int:
    """The position in the SCIM server's request log from which the next requests are the sink's next ones."""
    return len(tenant.scim.requests) if tenant.scim is not None else 0


def _scim_writes(tenant: Any, since: int) -> list[Any]:
    """The write requests the SCIM sink sent since `since` (none on a database target)."""
    if tenant.scim is None:
        return []
    return [r for r in tenant.scim.requests[since:] if r.method in SCIM_WRITES]


def _scim_archives(tenant: Any, since: int) -> list[Any]:
    """The SCIM writes since `since` that deactivate a user (`active` replaced by False)."""
    return [
        r
        for r in _scim_writes(tenant, since)
        if r.method == "PATCH"
        and any(o.get("path") == "active" and o.get("value") is False for o in (r.body or {}).get("Operations") or ())
    ]


def _scim_id(tenant: Any, external_id: str) -> str:
    return next(u["id"] for u in tenant.scim.users().values() if u.get("externalId") == external_id)


def _synced(people: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The synced users of `people()` (those with an Entra object id)."""
    return {ext: p for ext, p in people.items() if not ext.startswith("email:")}


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


def _holding(people: dict[str, dict[str, Any]], field: str, key: str) -> dict[str, dict[str, Any]]:
    """The users whose `field` (role, department, site) has this key."""
    return {ext: p for ext, p in people.items() if _key(p[field]) == key}


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


def _assert_one_spelling_per_value(people: dict[str, dict[str, Any]]) -> None:
    """Every user with the same role / department / site (trimmed, case-insensitively) holds one spelling of it."""
    for field in ENTITY_FIELDS:
        spellings: dict[str | None, set[str]] = {}
        for person in people.values():
            if person[field] is not None:
                spellings.setdefault(_key(person[field]), set()).add(person[field])
        mixed = {key: names for key, names in spellings.items() if len(names) > 1}
        assert mixed == {}, f"{field}: one value held in several spellings: {mixed}"


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


def _assert_people_match_entra(tenant: Any) -> None:
    """Every active synced user holds the role, department and site named (trimmed, case-insensitively) as in Entra."""
    for external_id, person in _synced(tenant.people()).items():
        entra = tenant.directory.get_user(external_id)
        if entra is None or person["archived"]:
            continue
        for field, attribute in ENTITY_FIELDS.items():
            actual, expected = _key(person[field]), _key(entra[attribute])
            assert actual == expected, (
                f"{external_id}.{field}: {person[field]!r}, Entra {attribute} is {entra[attribute]!r}"
            )


def _assert_no_manager_cycle(manager: dict[Any, Any]) -> None:
    """`manager`: user -> its manager (None: none), by any one kind of id."""
    for start in manager:
        seen, node = set(), start
        while node is not None:
            assert node not in seen, f"manager cycle through Frankli user {node}"
            seen.add(node)
            node = manager.get(node)


# --------------------------------------------------------------------------- rule 1


def test_entities_created_trimmed_case_insensitively_once_and_never_updated(make_tenant, frankli_target) -> None:
    """Sites, departments, roles: matched trimmed + case-insensitively, created once, never updated.

    Over SCIM a value is text on the user and the first spelling Frankli holds is kept for every
    user with the same value; grades (Frankli's, on a role) have no SCIM attribute.
    """
    tenant = make_tenant(users=100, seed=11, **frankli_target)
    database = tenant.scim is None
    directory = tenant.directory
    sales = _valid_leaves(directory)[:3]
    for object_id, spelling in zip(sales, ("Sales", " sales", "SALES "), strict=True):
        directory.update_user(object_id, department=spelling)
    # Frankli already has these, created by an admin in another case: the sync must reuse them.
    seeded = {"department": "LEGAL", "role": "director", "site": " berlin"}
    if database:
        [legal] = tenant.seed("departments", [{"name": "LEGAL"}])
        [director] = tenant.seed("roles", [{"name": "director", "grade": "D1"}])
        [berlin] = tenant.seed("sites", [{"name": " berlin"}])
    else:  # no entity tables: Frankli holds them as text on a user of its own
        tenant.seed_frankli_user(f"hilda.seed@{directory.domain}", first_name="Hilda", last_name="Seed", **seeded)

    tenant.run()
    run1 = tenant.runs[-1].run_id
    people = tenant.people()
    synced = _synced(people)
    # Every "sales" user (generated ones with mangled spellings too) holds one spelling: the trimmed Entra value.
    in_sales = {ext for ext in synced if _key(directory.get_user(ext)["department"]) == "sales"}
    assert set(sales) <= in_sales and set(_holding(people, "department", "sales")) == in_sales
    spellings = {synced[ext]["department"] for ext in in_sales}
    assert len(spellings) == 1 and spellings <= {"Sales", "sales", "SALES"}, spellings
    # The values Frankli already holds are reused in Frankli's spelling, not re-spelled.
    for field, name in seeded.items():
        holding = _holding(synced, field, _key(name))
        assert holding, f"no synced user holds the seeded {field}"
        assert {p[field] for p in holding.values()} == {name}, f"the seeded {field} was re-spelled"
    _assert_people_match_entra(tenant)
    _assert_one_spelling_per_value(people)
    held = {(field, _key(p[field])) for p in people.values() for field in ENTITY_FIELDS if p[field] is not None}
    new_values = held - {(field, _key(name)) for field, name in seeded.items()}
    report = tenant.report()
    assert report["planned"]["entity_create"] == len(new_values)
    created = _by_action(tenant.audit(run1), "create")
    assert report["counts"]["create"] == len(synced) == len(created)
    assert {_key(created[o]["details"]["fields"]["department"]) for o in sales} == {"sales"}
    if database:
        users = tenant.users()
        departments = tenant.table("departments")
        [sales_row] = [d for d in departments if _key(d["name"]) == "sales"]
        assert sales_row["created_by"] == SYNC and sales_row["deleted_at"] is None
        assert sales_row["name"] in ("Sales", "sales", "SALES"), "the created name is the trimmed Entra value"
        for object_id in sales:
            assert users[object_id]["department_id"] == sales_row["id"]
        # Every "sales" user shares that single row.
        in_sales_rows = [u for ext, u in users.items() if _key(directory.get_user(ext)["department"]) == "sales"]
        assert {u["department_id"] for u in in_sales_rows} == {sales_row["id"]}
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
        assert report["planned"]["entity_create"] == created_by_sync
        assert report["counts"]["create"] == len(users)

        # Frankli owns entities after creation: an admin sets grades on a synced and on a seeded role.
        vp = next(r for r in tenant.table("roles") if _key(r["name"]) == "vice president")
        assert vp["created_by"] == SYNC and vp["grade"] is None
        from frankli_sync.sinks.schema import roles

        tenant.execute(update(roles).where(roles.c.id == vp["id"]).values(grade="VP-1"))
        tenant.execute(update(roles).where(roles.c.id == director).values(grade="D2"))
        entities = {t: tenant.table(t) for t in ("sites", "departments", "roles")}
    else:  # every user was POSTed once, with the names above
        posts = _scim_writes(tenant, 0)
        assert len(posts) == len(synced) and {r.method for r in posts} == {"POST"}

    # Entra re-spells values it already has: that is no change, and nothing is renamed or re-created.
    [vp_name] = {p["role"] for p in _holding(synced, "role", "vice president").values()}
    respelled = [ext for ext in _valid(directory) if _key(synced[ext]["role"]) == "vice president"][:2]
    assert respelled
    for object_id in respelled:
        directory.update_user(object_id, jobTitle="  VICE president ")
    directory.update_user(sales[0], department="sAlEs")
    for _ in range(2):
        since = _since(tenant)
        tenant.run()
        assert tenant.people() == people, "a re-spelled value changed a user"
        assert _written(tenant.audit(tenant.runs[-1].run_id)) == []
        assert tenant.report()["planned"]["entity_create"] == 0
        assert _scim_writes(tenant, since) == [], "a re-spelled value was written over SCIM"
        if database:
            assert {t: tenant.table(t) for t in entities} == entities, "an entity was updated or duplicated"
    after = tenant.people()
    assert [after[o]["role"] for o in respelled] == [vp_name] * len(respelled)
    assert after[sales[0]]["department"] == next(iter(spellings))
    if database:
        users_after = tenant.users()
        assert [users_after[o]["role_id"] for o in respelled] == [vp["id"]] * len(respelled)
        assert users_after[sales[0]]["department_id"] == sales_row["id"]
        assert next(r for r in tenant.table("roles") if r["id"] == director)["grade"] == "D2"


# --------------------------------------------------------------------------- rule 2


def test_entity_deleted_in_frankli_is_not_resurrected_until_the_entra_value_changes(make_tenant, frankli_url) -> None:
    """Database targets only: over SCIM there are no entity tables, so no entity can be deleted (README)."""
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


def test_managers_resolved_by_object_id_problems_reported_and_cycles_broken(make_tenant, frankli_target) -> None:
    tenant = make_tenant(users=100, seed=11, **frankli_target)
    database = tenant.scim is None
    directory = tenant.directory
    tenant.run()
    people = tenant.people()
    linked = 0
    for ext, person in people.items():
        manager = directory.manager_of(ext)
        expected = manager if manager in people else None
        assert person["manager"] == expected, ext
        linked += expected is not None
    assert linked > 0.8 * len(people)
    if database:
        users = tenant.users()
        for ext, user in users.items():
            manager = directory.manager_of(ext)
            assert user["manager_id"] == (users[manager]["id"] if manager in users else None), ext
    baseline_problems = {p["external_id"]: p["reason"] for p in tenant.report()["manager_problems"]}

    # Two managers whose reports are all synced: one turns Guest (out of scope), one gets mail ≠ UPN.
    valid = set(_valid(directory))
    leaves = _valid_leaves(directory)
    managers = [
        m for m in sorted(set(directory.managers.values()) & valid) if set(directory.direct_reports(m)) <= set(people)
    ]
    out_of_scope, quarantined = managers[0], managers[1]
    reports = {m: set(directory.direct_reports(m)) for m in (out_of_scope, quarantined)}
    directory.update_user(out_of_scope, userType="Guest")
    directory.update_user(quarantined, mail="someone.else@legacy.contoso.example")
    # A cycle A → B → A: the first link through update_user, the closing one forced (see _force_manager).
    a, b = [u for u in leaves if not any(u in r for r in reports.values())][:2]
    # What Frankli holds as their managers now (None when that manager is not synced).
    old_managers = {u: m if (m := directory.manager_of(u)) in people else None for u in (a, b)}
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
    before, people = people, tenant.people()
    assert people[out_of_scope]["archived"] is True
    assert _by_action(tenant.audit(run2), "archive")[out_of_scope]["details"]["reason"] == "out_of_scope"
    assert people[quarantined] == before[quarantined], "a quarantined manager stays as it was"
    assert people[hire]["manager"] == lead
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
            assert problems[ext]["email"] == people[ext]["email"]
            assert people[ext]["manager"] is None
            assert updates[ext]["details"]["changes"]["manager"] == [manager, None]

    # The cycle is reported and broken: exactly one of the two links is loaded.
    [cycle] = report["manager_cycles"]
    assert {m[0] for m in cycle["members"]} == {a, b}
    assert {m[1] for m in cycle["members"]} == {people[a]["email"], people[b]["email"]}
    links = {a: people[a]["manager"], b: people[b]["manager"]}
    kept = [ext for ext, manager in links.items() if manager is not None]
    assert len(kept) == 1, f"cycle not broken exactly once: {links}"
    [keeper] = kept
    other = b if keeper == a else a
    assert links[keeper] == other
    assert updates[keeper]["details"]["changes"]["manager"] == [old_managers[keeper], other]
    assert updates[other]["details"]["changes"]["manager"] == [old_managers[other], None]
    _assert_no_manager_cycle({ext: p["manager"] for ext, p in people.items()})
    if database:
        users = tenant.users()
        by_frankli_id = {u["id"]: ext for ext, u in users.items()}
        assert users[out_of_scope]["status"] == "archived" and users[out_of_scope]["archived_reason"] == "out_of_scope"
        assert users[quarantined]["status"] == "uninvited", "a quarantined manager stays as it was"
        assert users[hire]["manager_id"] == users[lead]["id"]
        for reported in reports.values():
            assert {users[ext]["manager_id"] for ext in reported} == {None}
        assert by_frankli_id[users[keeper]["manager_id"]] == other and users[other]["manager_id"] is None
        _assert_no_manager_cycle({u["id"]: u["manager_id"] for u in users.values()})
    else:  # the managers are set by the manager's SCIM id
        manager_of = {
            r.get("externalId"): (r.get(SCIM_ENTERPRISE) or {}).get("manager") for r in tenant.scim.users().values()
        }
        assert (manager_of[keeper] or {}).get("value") == _scim_id(tenant, other)
        assert not (manager_of[other] or {}).get("value")
        assert (manager_of[hire] or {}).get("value") == _scim_id(tenant, lead)

    # Stable: the next run with no Entra change keeps the same link and writes nothing.
    state = _state(tenant)
    since = _since(tenant)
    tenant.run()
    assert tenant.people() == people
    assert _state(tenant)["users"] == state["users"]
    assert _written(tenant.audit(tenant.runs[-1].run_id)) == []
    assert _scim_writes(tenant, since) == []
    assert len(tenant.report()["manager_cycles"]) == 1


# --------------------------------------------------------------------------- rule 4


def test_deletion_guard_blocks_mass_archive_but_not_upserts(make_tenant, frankli_target) -> None:
    tenant = make_tenant(users=100, seed=11, **frankli_target)
    database = tenant.scim is None
    directory = tenant.directory
    tenant.run()
    synced = {ext for ext, p in tenant.people().items() if not p["archived"]}

    # 15 deletions > min(500, 10% of 94 synced users) = 9; plus a hire and a change in the same run.
    deleted = _valid_leaves(directory)[:15]
    changed = _valid_leaves(directory)[15]
    for object_id in deleted:
        directory.delete_user(object_id)
    directory.update_user(changed, jobTitle="Principal Engineer", city="Galway")
    hire = _hire(directory, "grace.guard", manager_id=directory.manager_of(changed))

    since = _since(tenant)
    tenant.run(expect="failed")
    run2 = tenant.runs[-1].run_id
    people = tenant.people()
    guard = tenant.report()["deletion_guard"]
    limit = (len(synced) + 1) // 10  # the hire counts as synced by the time archives are decided
    assert limit < 15 and guard["synced_users"] == len(synced) + 1
    assert guard["blocked"] is True and guard["to_archive"] == 15 and guard["limit"] == limit
    assert "archive 15 users" in guard["message"] and "allow_mass_archive" in guard["message"]
    assert tenant.report()["incomplete_tasks"] == ["load_archives"]
    assert [ext for ext, p in people.items() if p["archived"]] == []
    assert _by_action(tenant.audit(run2), "archive") == {}
    assert _scim_archives(tenant, since) == [], "the guard deactivated a user over SCIM"
    # The upserts of the same run landed.
    assert people[hire]["email"] == _upn(directory, hire) and people[hire]["archived"] is False
    assert people[changed]["city"] == "Galway"
    assert _key(people[changed]["role"]) == "principal engineer"
    assert set(_by_action(tenant.audit(run2), "create")) == {hire}
    assert set(_by_action(tenant.audit(run2), "update")) == {changed}
    if database:
        users = tenant.users()
        assert [u for u in users.values() if u["status"] == "archived"] == []
        assert users[hire]["status"] == "uninvited" and users[hire]["email"] == _upn(directory, hire)
        assert users[changed]["city"] == "Galway"
        [role] = [r for r in tenant.table("roles") if r["id"] == users[changed]["role_id"]]
        assert _key(role["name"]) == "principal engineer"
    else:
        assert sorted(r.method for r in _scim_writes(tenant, since)) == ["PATCH", "POST"]

    # Re-triggered with the override, the same deletions go through.
    since = _since(tenant)
    tenant.run(conf={"allow_mass_archive": True})
    run3 = tenant.runs[-1].run_id
    people = tenant.people()
    assert {ext for ext, p in people.items() if p["archived"]} == set(deleted)
    archives = _by_action(tenant.audit(run3), "archive")
    assert set(archives) == set(deleted) and {a["details"]["reason"] for a in archives.values()} == {"not_in_source"}
    assert [a for a in _written(tenant.audit(run3)) if a["action"] != "archive"] == []
    report = tenant.report()
    assert report["counts"]["archive"] == 15
    assert report["deletion_guard"]["blocked"] is False and report["deletion_guard"]["allow_mass_archive"] is True
    if database:
        users = tenant.users()
        assert {ext for ext, u in users.items() if u["status"] == "archived"} == set(deleted)
        assert {users[ext]["archived_reason"] for ext in deleted} == {"not_in_source"}
    else:  # one deactivation per deleted user, and nothing else
        deactivated = {r.path.rsplit("/", 1)[-1] for r in _scim_archives(tenant, since)}
        assert deactivated == {_scim_id(tenant, ext) for ext in deleted}
        assert len(_scim_writes(tenant, since)) == 15
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
    since = _since(tenant)
    tenant.run(expect="failed")
    guard = tenant.report()["deletion_guard"]
    assert guard["blocked"] is True and guard["staged_users"] == 36 and guard["last_synced_users"] == 86
    assert "under 50%" in guard["message"] and "allow_mass_archive" in guard["message"]
    assert {ext for ext, p in tenant.people().items() if p["archived"]} == archived
    assert _by_action(tenant.audit(tenant.runs[-1].run_id), "archive") == {}
    assert _scim_archives(tenant, since) == []

    # An empty extract never archives anyone, not even with the override.
    for user in directory.users_sorted():
        directory.delete_user(user["id"])
    since = _since(tenant)
    tenant.run(conf={"allow_mass_archive": True}, expect="failed")
    guard = tenant.report()["deletion_guard"]
    assert guard["blocked"] is True and guard["staged_users"] == 0
    assert "no users" in guard["message"]
    assert {ext for ext, p in tenant.people().items() if p["archived"]} == archived
    assert _by_action(tenant.audit(tenant.runs[-1].run_id), "archive") == {}
    assert _scim_archives(tenant, since) == []
    if database:
        assert {ext for ext, u in tenant.users().items() if u["status"] == "archived"} == archived


# --------------------------------------------------------------------------- rule 5


def test_validation_threshold_stops_the_run_before_loading(make_tenant, frankli_target) -> None:
    tenant = make_tenant(users=100, seed=11, **frankli_target)
    database = tenant.scim is None
    directory = tenant.directory
    tenant.run()
    day1 = tenant.people()
    raw_day1 = tenant.stored_users()

    # 2 generated invalid members + 6 more = 8 of 99 checked users (> 5%); other changes wait behind them.
    leaves = _valid_leaves(directory)
    broken = leaves[:6]
    for object_id in broken:
        directory.update_user(object_id, mail=f"alias.{object_id[:8]}@legacy.contoso.example", city="Nowhere")
    changed = leaves[6]
    directory.update_user(changed, jobTitle="Principal Engineer")
    hire = _hire(directory, "vera.valid", manager_id=directory.manager_of(changed))
    before = _state(tenant)
    since = _since(tenant)

    tenant.run(expect="failed")
    assert _state(tenant) == before, "a run stopped by validation must not write to Frankli"
    assert _scim_writes(tenant, since) == [], "a run stopped by validation sent a write over SCIM"
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
    since = _since(tenant)
    tenant.run()
    run3 = tenant.runs[-1].run_id
    people, raw = tenant.people(), tenant.stored_users()
    for object_id in broken:
        assert people[object_id] == day1[object_id], "a quarantined user is neither updated nor archived"
        assert raw[object_id] == raw_day1[object_id], "a quarantined user was written"
    assert raw[changed] != raw_day1[changed]
    assert _key(people[changed]["role"]) == "principal engineer"
    assert people[hire]["archived"] is False
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
    if database:
        users = tenant.users()
        assert users[changed]["updated_at"] != raw_day1[changed]["updated_at"]
        assert users[hire]["status"] == "uninvited"
    else:  # a POST for the hire and a PATCH for the changed user: nothing for a quarantined one
        written = sorted((r.method, r.path.rsplit("/", 1)[-1]) for r in _scim_writes(tenant, since))
        assert written == [("PATCH", _scim_id(tenant, changed)), ("POST", "Users")]


# --------------------------------------------------------------------------- rule 6


def test_dry_run_plans_and_reports_but_writes_nothing(make_tenant, frankli_target) -> None:
    tenant = make_tenant(users=100, seed=11, **frankli_target)
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
    before = _state(tenant)
    since = _since(tenant)

    tenant.run(conf={"dry_run": True})
    assert _state(tenant) == before, "a dry run wrote to Frankli"
    assert _scim_writes(tenant, since) == [], "a dry run sent a write over SCIM"
    assert tenant.audit(tenant.runs[-1].run_id) == []
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
    since = _since(tenant)
    tenant.run()
    audit = tenant.audit(tenant.runs[-1].run_id)
    assert set(_by_action(audit, "create")) == {hire}
    assert set(_by_action(audit, "update")) == {changed}
    assert set(_by_action(audit, "archive")) == {disabled}
    assert _by_action(audit, "archive")[disabled]["details"]["reason"] == "disabled"
    assert len(_written(audit)) == 3
    people = tenant.people()
    assert people[disabled]["archived"] is True and people[hire]["archived"] is False
    assert (people[changed]["city"], _key(people[changed]["role"])) == ("Cork", "staff cartographer")
    if tenant.scim is None:
        assert tenant.users()[disabled]["archived_reason"] == "disabled"
    else:
        assert sorted(r.method for r in _scim_writes(tenant, since)) == ["PATCH", "PATCH", "POST"]


# --------------------------------------------------------------------------- rule 7


def test_only_user_provisions_that_user_alone(make_tenant, frankli_target) -> None:
    tenant = make_tenant(users=100, seed=11, **frankli_target)
    database = tenant.scim is None
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

    def provision(object_id: str, upn: str, action: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run with only_user; returns the user as `people()` gives it and its one audit row."""
        before, raw_before, audit_before = tenant.people(), tenant.stored_users(), tenant.audit()
        since = _since(tenant)
        tenant.run(conf={"only_user": upn})
        after, raw_after, audit_after = tenant.people(), tenant.stored_users(), tenant.audit()
        assert {k: v for k, v in after.items() if k != object_id} == {
            k: v for k, v in before.items() if k != object_id
        }, "only_user touched another user"
        assert {k: v for k, v in raw_after.items() if k != object_id} == {
            k: v for k, v in raw_before.items() if k != object_id
        }, "only_user wrote another user"
        assert after.get(object_id) != before.get(object_id)
        assert audit_after[: len(audit_before)] == audit_before
        new_audit = audit_after[len(audit_before) :]
        assert [(a["external_id"], a["action"]) for a in new_audit] == [(object_id, action)]
        assert tenant.report()["params"]["only_user"] == upn.strip()
        assert {k: v for k, v in tenant.report()["counts"].items() if v and k != "quarantine"} == {action: 1}
        if not database:  # one write, for that user alone
            [write] = _scim_writes(tenant, since)
            if action == "create":
                assert (write.method, write.body["externalId"]) == ("POST", object_id)
            else:
                assert (write.method, write.path.rsplit("/", 1)[-1]) == ("PATCH", _scim_id(tenant, object_id))
        return after[object_id], new_audit[0]

    created, _ = provision(hire, f"  {_upn(directory, hire).upper()}", "create")
    assert created["archived"] is False and _key(created["department"]) == "skunkworks"
    people = tenant.people()
    assert not _holding(people, "department", "moonshots"), "a value only another user needs was written"
    if database:
        created_row = tenant.users()[hire]
        assert created_row["status"] == "uninvited"
        assert [_key(d["name"]) for d in tenant.table("departments") if d["id"] == created_row["department_id"]] == [
            "skunkworks"
        ]
        assert not _entity(tenant, "departments", "moonshots"), "an entity only another user needs was created"

    archived, audited = provision(disable, _upn(directory, disable), "archive")
    assert archived["archived"] is True and audited["details"]["reason"] == "disabled"
    if database:
        archived_row = tenant.users()[disable]
        assert (archived_row["status"], archived_row["archived_reason"]) == ("archived", "disabled")

    updated, _ = provision(change, _upn(directory, change), "update")
    assert (updated["city"], updated["mobile_phone"]) == ("Cork", None)
    assert _key(updated["role"]) == "chief cartographer"
    assert not _holding(tenant.people(), "role", "chief navigator")
    if database:
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


def test_every_task_and_the_whole_run_are_idempotent(make_tenant, frankli_target) -> None:
    """Re-running any task of a run (as clearing it does) changes nothing: over SCIM it sends no write."""
    tenant = make_tenant(users=100, seed=11, **frankli_target)
    directory = tenant.directory
    tenant.run()
    leaves = _valid_leaves(directory)
    directory.delete_user(leaves[0])
    directory.update_user(leaves[1], accountEnabled=False)
    directory.update_user(leaves[2], jobTitle="Idempotency Officer", department="Reliability", mobilePhone="   ")
    directory.update_user(leaves[3], manager_id=leaves[4])
    _hire(directory, "ida.idem", manager_id=directory.manager_of(leaves[5]), officeLocation="Cork")
    since = _since(tenant)
    tenant.run()
    run2 = tenant.runs[-1].run_id
    state = _state(tenant)
    people = tenant.people()
    written = _written(tenant.audit(run2))
    assert {a["action"] for a in written} == {"create", "update", "archive"}
    if tenant.scim is not None:
        assert len(_scim_writes(tenant, since)) == len(written), "one SCIM write per audited change"
    counts = tenant.report()["counts"]

    for step in STEPS:
        since = _since(tenant)
        tenant.run_task(step)
        assert _state(tenant) == state, f"re-running {step} alone changed Frankli"
        assert _scim_writes(tenant, since) == [], f"re-running {step} alone sent a write over SCIM"
    since = _since(tenant)
    for step in STEPS:
        tenant.run_task(step)
    assert _state(tenant) == state, "re-running the whole sequence changed Frankli"
    assert _scim_writes(tenant, since) == [], "re-running the whole sequence sent a write over SCIM"
    assert tenant.people() == people
    assert tenant.report()["counts"] == counts
    assert tenant.report()["run_id"] == run2

    # A new run with no Entra change writes nothing either (over SCIM: it sends no request at all).
    since = _since(tenant)
    tenant.run()
    after = _state(tenant)
    assert {t: rows for t, rows in after.items() if t != "sync_audit"} == {
        t: rows for t, rows in state.items() if t != "sync_audit"
    }
    assert after["sync_audit"][: len(state["sync_audit"])] == state["sync_audit"]
    assert _written(tenant.audit(tenant.runs[-1].run_id)) == []
    assert {k: v for k, v in tenant.report()["counts"].items() if k != "quarantine"} == {}
    if tenant.scim is not None:
        assert tenant.scim.requests[since:] == [], "a run with nothing changed in Entra sent a request"
