"""The sync plan: desired users + Frankli's current state → what must change (DESIGN §2)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import pandas as pd
import pytest
from entra_rows import entra, staged
from frankli_sync.config import DEFAULT_MAPPING, FieldMapping, ScopeSettings
from frankli_sync.plan import (
    ENTITY_TABLES,
    SYNC,
    USER_STATE_COLUMNS,
    FrankliState,
    Plan,
    PlanOptions,
    empty_entities,
    plan_user_changes,
)
from frankli_sync.transform import ENTITY_FIELDS, TEXT_FIELDS, desired_users, is_missing, name_key

pytestmark = pytest.mark.unit

# --- helpers -------------------------------------------------------------------------------------

MAPPING: dict[str, FieldMapping] = {name: FieldMapping(source, on) for name, (source, on) in DEFAULT_MAPPING.items()}
ALL_USERS = ScopeSettings()
NO_GUESTS = ScopeSettings(exclude_guests=True)
DELETED_AT = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
EMPTY_COUNTS = {
    "entity_create": 0,
    "create": 0,
    "update": 0,
    "link": 0,
    "restore": 0,
    "archive": 0,
    "conflict": 0,
}


def desired(
    *rows: dict[str, Any],
    mapping: dict[str, FieldMapping] | None = None,
    scope: ScopeSettings = ALL_USERS,
    quarantined: Iterable[str] = (),
) -> pd.DataFrame:
    return desired_users(staged(*rows), mapping or MAPPING, scope, quarantined)


def frankli_user(user_id: int, external_id: str | None, email: str | None, **columns: Any) -> dict[str, Any]:
    """One Frankli `users` row (USER_STATE_COLUMNS): active, "Ann Lee", in sync with `entra()`'s defaults."""
    user: dict[str, Any] = dict.fromkeys(USER_STATE_COLUMNS)
    user.update(id=user_id, external_id=external_id, email=email, first_name="Ann", last_name="Lee", status="active")
    user.update(columns)
    return user


def entity(entity_id: int, name: str, deleted: bool = False) -> dict[str, Any]:
    return {"id": entity_id, "name": name, "deleted_at": DELETED_AT if deleted else None}


def _frame(rows: Iterable[dict[str, Any]], columns: Iterable[str]) -> pd.DataFrame:
    rows = list(rows)
    return pd.DataFrame({c: pd.Series([r.get(c) for r in rows], dtype="object") for c in columns})


def frankli_state(
    *users: dict[str, Any],
    roles: Iterable[dict[str, Any]] = (),
    departments: Iterable[dict[str, Any]] = (),
    sites: Iterable[dict[str, Any]] = (),
) -> FrankliState:
    """A FrankliState like `read_state` builds it: object columns, ints stay ints, NULL is None."""
    tables = {"roles": roles, "departments": departments, "sites": sites}
    return FrankliState(
        users=_frame(users, USER_STATE_COLUMNS),
        entities={name: _frame(rows, ("id", "name", "deleted_at")) for name, rows in tables.items()},
    )


def plan_for(
    wanted: pd.DataFrame,
    state: FrankliState,
    *,
    mapping: dict[str, FieldMapping] | None = None,
    only_user: str | None = None,
    deleted_ids: Iterable[str] = (),
    previous: pd.DataFrame | None = None,
) -> Plan:
    options = PlanOptions(mapping=mapping or MAPPING, only_user=only_user, deleted_ids=frozenset(deleted_ids))
    return plan_user_changes(wanted, state, options, previous=previous)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Frame rows as dicts, every missing value as None."""
    return [{k: (None if is_missing(v) else v) for k, v in r.items()} for r in frame.to_dict("records")]


def only(frame: pd.DataFrame) -> dict[str, Any]:
    rows = records(frame)
    assert len(rows) == 1, f"expected exactly one row, got {rows}"
    return rows[0]


def user_ids(frame: pd.DataFrame) -> set[int]:
    return {int(v) for v in frame["user_id"]} if "user_id" in frame else set()


def touched_user_ids(plan: Plan) -> set[int]:
    """Every Frankli user id any action of the plan is about."""
    return set().union(*(user_ids(f) for f in (plan.updates, plan.links, plan.restores, plan.archives)))


def applied(state: FrankliState, plan: Plan) -> FrankliState:
    """The Frankli state after loading `plan` the way `sinks.database` does (entities, links, creates,
    updates, restores, managers, archives)."""
    users = {int(u["id"]): u for u in records(state.users)}
    entities = {t: records(state.entities.get(t, empty_entities())) for t in ENTITY_TABLES}
    next_entity = max((int(e["id"]) for rows in entities.values() for e in rows), default=0) + 1
    for create in records(plan.entity_creates):
        entities[create["table"]].append({"id": next_entity, "name": create["name"], "deleted_at": None})
        next_entity += 1
    # Name key -> id of the live entity, the oldest when Frankli holds duplicates.
    entity_ids: dict[str, dict[str, int]] = {t: {} for t in ENTITY_TABLES}
    for table, rows in entities.items():
        for row in sorted(rows, key=lambda e: e["id"], reverse=True):
            if row["deleted_at"] is None:
                entity_ids[table][name_key(pd.Series([row["name"]], dtype="object"))[0]] = row["id"]

    def values(record: dict[str, Any], fields: Iterable[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in fields:
            value = record.get(name)
            if name in ENTITY_FIELDS:
                out[f"{name}_id"] = None if value is None else entity_ids[ENTITY_FIELDS[name]].get(value)
            else:
                out[name] = value
        return out

    for link in records(plan.links):
        users[int(link["user_id"])]["external_id"] = link["external_id"]
    next_user = max(users, default=0) + 1
    for create in records(plan.creates):
        user = dict.fromkeys(USER_STATE_COLUMNS)
        user.update(id=next_user, external_id=create["external_id"], status=create["status"])
        user.update(values(create, [f for f in (*TEXT_FIELDS, *ENTITY_FIELDS) if f in create]))
        users[next_user] = user
        next_user += 1
    plain = [f for f in plan.always_fields if f != "manager"]
    for update in records(plan.updates):
        users[int(update["user_id"])].update(values(update, plain))
    for restore in records(plan.restores):
        users[int(restore["user_id"])].update(status=restore["status"], status_before_archive=None, archived_by=None)
    by_external = {u["external_id"]: uid for uid, u in users.items() if u["external_id"] is not None}
    manager_rows = [(c["external_id"], c.get("manager")) for c in records(plan.creates)]
    if "manager" in plan.always_fields:
        manager_rows += [(u["external_id"], u["manager"]) for u in records(plan.updates)]
    for external_id, manager in manager_rows:
        users[by_external[external_id]]["manager_id"] = None if manager is None else by_external.get(manager)
    for archive in records(plan.archives):
        user = users[int(archive["user_id"])]
        user.update(status="archived", status_before_archive=user["status"], archived_by=SYNC)
    return frankli_state(
        *users.values(), roles=entities["roles"], departments=entities["departments"], sites=entities["sites"]
    )


def assert_nothing_to_do(plan: Plan) -> None:
    assert plan.counts() == EMPTY_COUNTS, {
        "entity_creates": records(plan.entity_creates),
        "creates": records(plan.creates),
        "updates": records(plan.updates),
        "links": records(plan.links),
        "restores": records(plan.restores),
        "archives": records(plan.archives),
        "conflicts": records(plan.conflicts),
    }
    assert not plan.has_upserts


# --- creates and entities ------------------------------------------------------------------------


def test_new_user_in_scope_is_created_uninvited() -> None:
    wanted = desired(entra("o1", "Ann@x.com", job_title="Dev", employee_hire_date="2021-03-01T00:00:00Z"))
    plan = plan_for(wanted, FrankliState.empty())
    create = only(plan.creates)
    assert create["external_id"] == "o1"
    assert create["status"] == "uninvited"
    assert create["email"] == "Ann@x.com"
    assert (create["first_name"], create["last_name"]) == ("Ann", "Lee")
    assert create["start_date"] == "2021-03-01"
    assert plan.counts() == {**EMPTY_COUNTS, "create": 1, "entity_create": 1}
    assert plan.has_upserts


def test_create_references_entities_by_trimmed_casefolded_key() -> None:
    wanted = desired(entra("o1", "ann@x.com", job_title=" Senior Dev ", department="R&D", office_location="LONDON"))
    create = only(plan_for(wanted, FrankliState.empty()).creates)
    assert (create["role"], create["department"], create["site"]) == ("senior dev", "r&d", "london")


def test_entity_creates_are_deduplicated_case_insensitively_and_trimmed() -> None:
    wanted = desired(
        entra("o1", "ann@x.com", job_title=" Dev ", department="Ops"),
        entra("o2", "bob@x.com", job_title="DEV", department=" ops"),
        entra("o3", "cy@x.com", job_title="dev  ", department="Sales"),
    )
    plan = plan_for(wanted, FrankliState.empty())
    created = {(r["table"], r["key"]): r["name"] for r in records(plan.entity_creates)}
    # One row per name key; the name is trimmed and comes from the first user (lowest object id).
    assert created == {("roles", "dev"): "Dev", ("departments", "ops"): "Ops", ("departments", "sales"): "Sales"}
    assert list(plan.creates["role"]) == ["dev", "dev", "dev"]


def test_existing_live_entity_is_reused_matched_case_insensitively() -> None:
    state = frankli_state(
        roles=[entity(7, " DEV ")],
        departments=[entity(8, "Ops", deleted=True), entity(9, "OPS")],
        sites=[entity(10, "London")],
    )
    wanted = desired(entra("o1", "ann@x.com", job_title="dev", department="ops", office_location="london "))
    plan = plan_for(wanted, state)
    assert plan.entity_creates.empty
    create = only(plan.creates)
    assert (create["role"], create["department"], create["site"]) == ("dev", "ops", "london")


def test_entity_only_deleted_in_frankli_is_created_for_a_new_user() -> None:
    state = frankli_state(sites=[entity(4, "London", deleted=True)])
    plan = plan_for(desired(entra("o1", "ann@x.com", office_location="London")), state)
    assert records(plan.entity_creates) == [{"table": "sites", "key": "london", "name": "London"}]
    assert only(plan.creates)["site"] == "london"
    assert plan.findings["orphaned_references"] == []


def test_cleared_entity_values_create_no_entity() -> None:
    wanted = desired(entra("o1", "ann@x.com", job_title="  ", department=None))
    plan = plan_for(wanted, FrankliState.empty())
    assert plan.entity_creates.empty
    create = only(plan.creates)
    assert create["role"] is None
    assert create["department"] is None


# --- matching: object id, adoption, rehire ------------------------------------------------------


def test_upn_change_is_an_email_update_on_the_same_user_not_a_create() -> None:
    state = frankli_state(frankli_user(1, "o1", "ann.smith@x.com"))
    plan = plan_for(desired(entra("o1", "ann.lee@x.com")), state)
    update = only(plan.updates)
    assert update["user_id"] == 1
    assert update["email"] == "ann.lee@x.com"
    assert update["changes"] == {"email": ["ann.smith@x.com", "ann.lee@x.com"]}
    assert plan.creates.empty
    assert plan.links.empty
    assert plan.archives.empty


def test_unlinked_frankli_user_with_same_email_in_other_case_is_adopted() -> None:
    state = frankli_state(frankli_user(5, None, "ANN@X.com"))
    plan = plan_for(desired(entra("o1", "ann@x.com")), state)
    link = only(plan.links)
    assert (link["user_id"], link["external_id"], link["kind"]) == (5, "o1", "adopt")
    assert link["old_external_id"] is None
    assert plan.creates.empty
    assert plan.conflicts.empty
    # Adopted users are kept in sync from then on: Entra's spelling wins.
    assert only(plan.updates)["user_id"] == 5
    assert only(plan.updates)["email"] == "ann@x.com"


def test_rehire_relinks_user_whose_object_id_is_gone_from_entra() -> None:
    state = frankli_state(frankli_user(3, "old-id", "ann@x.com"))
    plan = plan_for(desired(entra("new-id", "Ann@x.com"), entra("o2", "bob@x.com")), state)
    link = only(plan.links)
    assert link == {
        "user_id": 3,
        "external_id": "new-id",
        "old_external_id": "old-id",
        "email": "Ann@x.com",
        "kind": "rehire",
    }
    assert set(plan.creates["external_id"]) == {"o2"}
    assert plan.archives.empty  # the old object id is gone, but the user is the rehire's


def test_rehire_of_sync_archived_leaver_restores_previous_status() -> None:
    leaver = frankli_user(3, "old-id", "ann@x.com", status="archived", status_before_archive="active", archived_by=SYNC)
    plan = plan_for(desired(entra("new-id", "ann@x.com")), frankli_state(leaver))
    assert only(plan.links)["kind"] == "rehire"
    restore = only(plan.restores)
    assert (restore["user_id"], restore["status"]) == (3, "active")


@pytest.mark.parametrize(
    ("old_row", "quarantined"),
    [
        pytest.param(entra("old-id", "ann.old@x.com", account_enabled=False), (), id="old-id-disabled"),
        pytest.param(entra("old-id", "ann.old@x.com"), ("old-id",), id="old-id-quarantined"),
        pytest.param(entra("old-id", "ann.old@x.com", user_type="Guest"), (), id="old-id-out-of-scope"),
    ],
)
def test_rehire_conflict_when_old_object_id_still_exists(old_row: dict[str, Any], quarantined: tuple[str]) -> None:
    state = frankli_state(frankli_user(3, "old-id", "ann@x.com"))
    wanted = desired(entra("new-id", "ann@x.com"), old_row, scope=NO_GUESTS, quarantined=quarantined)
    plan = plan_for(wanted, state)
    conflict = only(plan.conflicts)
    assert conflict["external_id"] == "new-id"
    assert conflict["reason"].startswith("rehire_conflict")
    assert "old-id" in conflict["reason"]
    assert plan.links.empty
    assert plan.creates.empty
    assert 3 not in user_ids(plan.updates) | user_ids(plan.restores)


# --- archives --------------------------------------------------------------------------------------


def test_disabled_entra_user_is_archived_with_reason_disabled() -> None:
    state = frankli_state(frankli_user(1, "o1", "ann@x.com", status="invited"))
    plan = plan_for(desired(entra("o1", "ann@x.com", account_enabled=False, city="Changed")), state)
    archive = only(plan.archives)
    assert (archive["user_id"], archive["reason"], archive["status"]) == (1, "disabled", "invited")
    assert plan.updates.empty
    assert plan.creates.empty


def test_disabled_entra_user_without_frankli_user_is_not_created() -> None:
    plan = plan_for(desired(entra("o1", "ann@x.com", account_enabled=False)), FrankliState.empty())
    assert_nothing_to_do(plan)


def test_user_gone_from_entra_is_archived_not_in_source() -> None:
    state = frankli_state(frankli_user(1, "o1", "ann@x.com"), frankli_user(2, "o2", "bob@x.com"))
    plan = plan_for(desired(entra("o2", "bob@x.com")), state)
    archive = only(plan.archives)
    assert (archive["user_id"], archive["external_id"], archive["reason"]) == (1, "o1", "not_in_source")


def test_user_reported_deleted_by_the_source_is_archived_deleted() -> None:
    state = frankli_state(frankli_user(1, "o1", "ann@x.com"), frankli_user(2, "o9", "cy@x.com"))
    plan = plan_for(desired(entra("o2", "bob@x.com")), state, deleted_ids={"o1"})
    reasons = {r["external_id"]: r["reason"] for r in records(plan.archives)}
    assert reasons == {"o1": "deleted", "o9": "not_in_source"}


def test_user_out_of_scope_is_archived_out_of_scope() -> None:
    state = frankli_state(frankli_user(1, "g1", "jane@x.com"))
    wanted = desired(entra("g1", "jane@x.com", user_type="Guest"), scope=NO_GUESTS)
    plan = plan_for(wanted, state)
    assert only(plan.archives)["reason"] == "out_of_scope"
    assert plan.creates.empty


def test_already_archived_user_is_not_archived_again() -> None:
    state = frankli_state(frankli_user(1, "o1", "ann@x.com", status="archived", archived_by=SYNC))
    assert plan_for(desired(entra("o2", "bob@x.com")), state).archives.empty


def test_quarantined_user_is_neither_updated_nor_archived() -> None:
    state = frankli_state(frankli_user(1, "o1", "ann@x.com", city="Paris"))
    wanted = desired(entra("o1", "ann.new@x.com", city="Leeds"), quarantined={"o1"})
    plan = plan_for(wanted, state)
    assert_nothing_to_do(plan)


def test_quarantined_sync_archived_user_is_not_restored() -> None:
    state = frankli_state(frankli_user(1, "o1", "ann@x.com", status="archived", archived_by=SYNC))
    plan = plan_for(desired(entra("o1", "ann@x.com"), quarantined={"o1"}), state)
    assert_nothing_to_do(plan)


# --- restores and admin archives ---------------------------------------------------------------


@pytest.mark.parametrize(("before", "restored"), [("invited", "invited"), ("active", "active"), (None, "uninvited")])
def test_sync_archived_user_back_in_entra_is_restored_to_status_before_archive(
    before: str | None, restored: str
) -> None:
    state = frankli_state(
        frankli_user(1, "o1", "ann@x.com", status="archived", status_before_archive=before, archived_by=SYNC)
    )
    plan = plan_for(desired(entra("o1", "ann@x.com")), state)
    restore = only(plan.restores)
    assert (restore["user_id"], restore["external_id"], restore["status"]) == (1, "o1", restored)
    assert plan.archives.empty
    assert plan.creates.empty


def test_admin_archived_user_is_never_restored_nor_updated() -> None:
    state = frankli_state(
        frankli_user(1, "o1", "ann@x.com", city="Paris", status="archived", archived_by="frankli"),
    )
    plan = plan_for(desired(entra("o1", "ann@x.com", city="Leeds", job_title="Dev")), state)
    assert_nothing_to_do(plan)
    assert plan.findings["archived_in_frankli"] == [{"external_id": "o1", "email": "ann@x.com"}]


def test_unmanaged_frankli_users_never_appear_in_any_action() -> None:
    state = frankli_state(
        frankli_user(9, None, "hr.admin@x.com", city="Paris"),
        frankli_user(10, None, None),
        frankli_user(1, "o1", "ann@x.com"),
        frankli_user(2, "o2", "gone@x.com"),
    )
    wanted = desired(
        entra("o1", "ann.lee@x.com", city="Leeds"),
        entra("o3", "new@x.com"),
        entra("o4", "off@x.com", account_enabled=False),
    )
    plan = plan_for(wanted, state)
    assert touched_user_ids(plan) == {1, 2}
    assert "hr.admin@x.com" not in set(plan.creates["email"])
    assert plan.conflicts.empty


# --- attribute updates -----------------------------------------------------------------------------


def test_attribute_cleared_in_entra_is_cleared_in_frankli() -> None:
    state = frankli_state(
        frankli_user(1, "o1", "ann@x.com", city="Paris", role_id=7, start_date=dt.date(2020, 1, 2)),
        roles=[entity(7, "Dev")],
    )
    plan = plan_for(desired(entra("o1", "ann@x.com", city="   ", job_title=None)), state)
    update = only(plan.updates)
    assert update["user_id"] == 1
    assert update["city"] is None
    assert update["role"] is None
    assert update["changes"] == {"city": ["Paris", None], "role": ["dev", None], "start_date": ["2020-01-02", None]}


def test_whitespace_value_in_frankli_for_a_field_empty_in_entra_is_updated() -> None:
    state = frankli_state(frankli_user(1, "o1", "ann@x.com", mobile_phone="  "))
    update = only(plan_for(desired(entra("o1", "ann@x.com")), state).updates)
    assert update["mobile_phone"] is None
    assert update["changes"] == {"mobile_phone": ["  ", None]}


def test_user_in_sync_needs_no_update() -> None:
    state = frankli_state(
        frankli_user(1, "o1", "ann@x.com", city="Leeds", role_id=7, site_id=8, start_date=dt.date(2021, 3, 1)),
        roles=[entity(7, "Dev")],
        sites=[entity(8, "LONDON")],
    )
    wanted = desired(
        entra(
            "o1",
            "ann@x.com",
            city=" Leeds",
            job_title="dev",
            office_location="London",
            employee_hire_date="2021-03-01T00:00:00Z",
        )
    )
    assert_nothing_to_do(plan_for(wanted, state))


def test_entity_change_references_the_new_entity_by_key() -> None:
    state = frankli_state(frankli_user(1, "o1", "ann@x.com", role_id=7), roles=[entity(7, "Dev"), entity(8, "Lead")])
    plan = plan_for(desired(entra("o1", "ann@x.com", job_title="LEAD")), state)
    update = only(plan.updates)
    assert update["role"] == "lead"
    assert update["changes"] == {"role": ["dev", "lead"]}
    assert plan.entity_creates.empty


def test_on_create_fields_are_set_on_create_but_never_updated() -> None:
    mapping = {
        **MAPPING,
        "site": FieldMapping("officeLocation", "create"),
        "city": FieldMapping("city", "create"),
        "manager": FieldMapping("manager", "create"),
    }
    state = frankli_state(
        frankli_user(1, "o1", "ann@x.com", city="Paris", site_id=4), sites=[entity(4, "Paris"), entity(5, "Old")]
    )
    wanted = desired(
        entra("o1", "ann@x.com", city="Leeds", office_location="Leeds HQ", manager_id="o2"),
        entra("o2", "bob@x.com", city="York", office_location="York HQ"),
        mapping=mapping,
    )
    plan = plan_for(wanted, state, mapping=mapping)
    assert plan.updates.empty
    assert {"site", "city", "manager"}.isdisjoint(plan.always_fields)
    create = only(plan.creates)
    assert (create["external_id"], create["city"], create["site"]) == ("o2", "York", "york hq")
    # Only the new user's site is created: the existing user's on-create site is not referenced.
    assert records(plan.entity_creates) == [{"table": "sites", "key": "york hq", "name": "York HQ"}]


# --- entities deleted in Frankli ---------------------------------------------------------------


def test_deleted_entity_with_unchanged_user_value_is_not_recreated_and_reported() -> None:
    state = frankli_state(frankli_user(1, "o1", "ann@x.com", site_id=4), sites=[entity(4, "London", deleted=True)])
    row = entra("o1", "ann@x.com", office_location="London")
    plan = plan_for(desired(row), state, previous=desired(row))
    assert plan.entity_creates.empty
    (orphan,) = plan.findings["orphaned_references"]
    assert (orphan["external_id"], orphan["field"], orphan["value"]) == ("o1", "site", "London")
    assert "set a new value in Entra" in orphan["action"]
    # The user keeps no reference to the deleted site.
    update = only(plan.updates)
    assert update["site"] is None
    assert update["changes"] == {"site": ["(deleted in Frankli)", None]}


def test_deleted_entity_orphan_is_stable_on_the_next_run() -> None:
    state = frankli_state(frankli_user(1, "o1", "ann@x.com"), sites=[entity(4, "london", deleted=True)])
    row = entra("o1", "ann@x.com", office_location="London")
    plan = plan_for(desired(row), state, previous=desired(row))
    assert_nothing_to_do(plan)
    assert len(plan.findings["orphaned_references"]) == 1


@pytest.mark.parametrize(
    ("previous_value", "current_site"),
    [
        pytest.param("Paris", 5, id="changed-from-another-value"),
        pytest.param("London ", 5, id="back-to-the-deleted-name-after-a-move"),
        pytest.param(None, None, id="set-after-being-empty"),
    ],
)
def test_deleted_entity_is_created_again_when_the_user_value_changed(
    previous_value: str | None, current_site: int | None
) -> None:
    # "back-to-the-deleted-name": London → Paris (synced: previous snapshot and Frankli say Paris) → London.
    if previous_value == "London ":
        previous_value = "Paris"
    state = frankli_state(
        frankli_user(1, "o1", "ann@x.com", site_id=current_site),
        sites=[entity(4, "London", deleted=True), entity(5, "Paris")],
    )
    previous = desired(entra("o1", "ann@x.com", office_location=previous_value))
    plan = plan_for(desired(entra("o1", "ann@x.com", office_location="London")), state, previous=previous)
    assert records(plan.entity_creates) == [{"table": "sites", "key": "london", "name": "London"}]
    assert only(plan.updates)["site"] == "london"
    assert plan.findings["orphaned_references"] == []


def test_deleted_entity_back_after_user_returned_to_its_old_name() -> None:
    # Day 1: London (then deleted in Frankli); day 2: Paris; day 3: London again → created again.
    state = frankli_state(
        frankli_user(1, "o1", "ann@x.com", site_id=5), sites=[entity(4, "London", deleted=True), entity(5, "Paris")]
    )
    day2 = desired(entra("o1", "ann@x.com", office_location="Paris"))
    day3 = desired(entra("o1", "ann@x.com", office_location="london"))
    plan = plan_for(day3, state, previous=day2)
    assert [(r["table"], r["key"]) for r in records(plan.entity_creates)] == [("sites", "london")]
    assert only(plan.updates)["changes"] == {"site": ["paris", "london"]}


def test_deleted_entity_revived_by_a_changed_user_is_referenced_by_unchanged_users_too() -> None:
    # Once re-created, the entity is live for everyone: an unchanged user must not be left orphaned,
    # else the next run would find a change to make.
    state = frankli_state(
        frankli_user(1, "o1", "ann@x.com", site_id=4),
        frankli_user(2, "o2", "bob@x.com", site_id=5),
        sites=[entity(4, "London", deleted=True), entity(5, "Paris")],
    )
    previous = desired(
        entra("o1", "ann@x.com", office_location="London"), entra("o2", "bob@x.com", office_location="Paris")
    )
    wanted = desired(
        entra("o1", "ann@x.com", office_location="London"), entra("o2", "bob@x.com", office_location="London")
    )
    plan = plan_for(wanted, state, previous=previous)
    assert [(r["table"], r["key"]) for r in records(plan.entity_creates)] == [("sites", "london")]
    assert {r["user_id"]: r["site"] for r in records(plan.updates)} == {1: "london", 2: "london"}
    assert plan.findings["orphaned_references"] == []
    assert_nothing_to_do(plan_for(wanted, applied(state, plan), previous=wanted))


def test_previous_snapshot_with_missing_or_repeated_object_ids_is_tolerated() -> None:
    state = frankli_state(frankli_user(1, "o1", "ann@x.com", site_id=4), sites=[entity(4, "London", deleted=True)])
    row = entra("o1", "ann@x.com", office_location="London")
    previous = desired(
        entra(None, "a@x.com"), entra("  ", "b@x.com"), entra("o7", "c@x.com"), entra("o7", "d@x.com"), row
    )
    plan = plan_for(desired(row), state, previous=previous)
    assert plan.entity_creates.empty
    assert [o["external_id"] for o in plan.findings["orphaned_references"]] == ["o1"]


# --- managers --------------------------------------------------------------------------------------


def test_manager_is_carried_as_the_managers_object_id() -> None:
    wanted = desired(entra("o1", "ann@x.com", manager_id="o2"), entra("o2", "bob@x.com"))
    managers = {r["external_id"]: r["manager"] for r in records(plan_for(wanted, FrankliState.empty()).creates)}
    assert managers == {"o1": "o2", "o2": None}


def test_manager_change_of_existing_user_is_an_update() -> None:
    state = frankli_state(
        frankli_user(1, "o1", "ann@x.com", manager_id=3),
        frankli_user(2, "o2", "bob@x.com"),
        frankli_user(3, "o3", "cy@x.com"),
    )
    wanted = desired(entra("o1", "ann@x.com", manager_id="o2"), entra("o2", "bob@x.com"), entra("o3", "cy@x.com"))
    update = only(plan_for(wanted, state).updates)
    assert (update["user_id"], update["manager"]) == (1, "o2")
    assert update["changes"] == {"manager": ["o3", "o2"]}


@pytest.mark.parametrize(
    ("manager_row", "quarantined", "reason"),
    [
        pytest.param(entra("m1", "boss@x.com", user_type="Guest"), (), "out_of_scope", id="out-of-scope"),
        pytest.param(entra("m1", "boss@x.com"), ("m1",), "quarantined", id="quarantined"),
        pytest.param(entra("m1", "boss@x.com", account_enabled=False), (), "disabled", id="disabled"),
        pytest.param(None, (), "not_in_source", id="not-in-source"),
    ],
)
def test_unresolvable_manager_gives_no_manager_and_is_reported(
    manager_row: dict[str, Any] | None, quarantined: tuple[str, ...], reason: str
) -> None:
    rows = [entra("o1", "ann@x.com", manager_id="m1"), *([manager_row] if manager_row else [])]
    plan = plan_for(desired(*rows, scope=NO_GUESTS, quarantined=quarantined), FrankliState.empty())
    assert only(plan.creates)["manager"] is None
    assert plan.findings["manager_problems"] == [
        {"external_id": "o1", "email": "ann@x.com", "manager_id": "m1", "reason": reason, "outcome": "no manager"}
    ]


def test_unresolvable_manager_clears_the_existing_manager_link() -> None:
    state = frankli_state(frankli_user(1, "o1", "ann@x.com", manager_id=2), frankli_user(2, "m1", "boss@x.com"))
    wanted = desired(entra("o1", "ann@x.com", manager_id="m1"), entra("m1", "boss@x.com"), quarantined={"m1"})
    plan = plan_for(wanted, state)
    update = only(plan.updates)
    assert (update["user_id"], update["manager"]) == (1, None)
    assert plan.findings["manager_problems"][0]["reason"] == "quarantined"
    assert plan.archives.empty  # the quarantined manager exists in Entra


def test_manager_cycle_is_reported_and_broken_by_dropping_one_link() -> None:
    wanted = desired(
        entra("a", "a@x.com", manager_id="b"),
        entra("b", "b@x.com", manager_id="c"),
        entra("c", "c@x.com", manager_id="a"),
        entra("d", "d@x.com", manager_id="a"),
    )
    plan = plan_for(wanted, FrankliState.empty())
    managers = {r["external_id"]: r["manager"] for r in records(plan.creates)}
    cycle = {"a": "b", "b": "c", "c": "a"}
    dropped = [user for user, manager in cycle.items() if managers[user] != manager]
    assert len(dropped) == 1
    assert managers[dropped[0]] is None
    assert managers["d"] == "a"
    assert plan.findings["manager_cycles"] == [{"members": [("a", "a@x.com"), ("b", "b@x.com"), ("c", "c@x.com")]}]


def test_self_managed_user_is_a_cycle() -> None:
    plan = plan_for(desired(entra("a", "a@x.com", manager_id="a")), FrankliState.empty())
    assert only(plan.creates)["manager"] is None
    assert plan.findings["manager_cycles"] == [{"members": [("a", "a@x.com")]}]


def test_manager_chain_without_cycle_is_not_reported() -> None:
    wanted = desired(
        entra("a", "a@x.com", manager_id="b"), entra("b", "b@x.com", manager_id="c"), entra("c", "c@x.com")
    )
    plan = plan_for(wanted, FrankliState.empty())
    assert plan.findings["manager_cycles"] == []
    assert {r["external_id"]: r["manager"] for r in records(plan.creates)} == {"a": "b", "b": "c", "c": None}


# --- only_user ------------------------------------------------------------------------------------


def test_only_user_keeps_only_that_users_actions_and_entities() -> None:
    state = frankli_state(
        frankli_user(1, "o8", "gone@x.com"),
        frankli_user(2, "o9", "rename@x.com"),
        departments=[entity(5, "Ops")],
    )
    wanted = desired(
        entra("o1", "ann@x.com", job_title="Dev", department="Ops", office_location="London"),
        entra("o2", "bob@x.com", job_title="Sales", department="Field", office_location="Paris"),
        entra("o9", "renamed@x.com"),
    )
    full = plan_for(wanted, state)
    assert full.counts()["create"] == 2 and full.counts()["archive"] == 1 and full.counts()["update"] == 1

    plan = plan_for(wanted, state, only_user=" ANN@x.com ")
    assert list(plan.creates["external_id"]) == ["o1"]
    assert {(r["table"], r["key"]) for r in records(plan.entity_creates)} == {("roles", "dev"), ("sites", "london")}
    assert plan.updates.empty
    assert plan.archives.empty
    assert plan.links.empty


def test_only_user_matches_the_frankli_email_of_a_renamed_user() -> None:
    state = frankli_state(frankli_user(2, "o9", "rename@x.com"), frankli_user(3, "o3", "other@x.com"))
    wanted = desired(entra("o9", "renamed@x.com", job_title="Lead"), entra("o4", "new@x.com"))
    for upn in ("renamed@x.com", "RENAME@x.com"):
        plan = plan_for(wanted, state, only_user=upn)
        assert list(plan.updates["user_id"]) == [2], upn
        assert plan.creates.empty
        assert plan.archives.empty  # o3 is gone from Entra, but not the user asked for
        assert records(plan.entity_creates) == [{"table": "roles", "key": "lead", "name": "Lead"}]


def test_only_user_keeps_only_that_users_findings() -> None:
    wanted = desired(entra("o1", "ann@x.com", manager_id="m1"), entra("o2", "bob@x.com", manager_id="m2"))
    plan = plan_for(wanted, FrankliState.empty(), only_user="bob@x.com")
    assert [p["external_id"] for p in plan.findings["manager_problems"]] == ["o2"]


# --- email collisions ----------------------------------------------------------------------------


def test_new_email_already_used_by_an_unmanaged_user_is_a_conflict() -> None:
    state = frankli_state(frankli_user(9, None, "New@x.com"), frankli_user(1, "o1", "old@x.com"))
    plan = plan_for(desired(entra("o1", "new@x.com", city="Leeds")), state)
    conflict = only(plan.conflicts)
    assert conflict["external_id"] == "o1"
    assert conflict["reason"].startswith("email_in_use")
    assert plan.updates.empty
    assert plan.links.empty
    assert plan.archives.empty  # the user exists in Entra: kept, not archived
    assert 9 not in touched_user_ids(plan)


def test_adoption_is_a_conflict_when_frankli_holds_the_email_twice() -> None:
    state = frankli_state(frankli_user(4, None, "ann@x.com"), frankli_user(6, None, "ANN@x.com"))
    plan = plan_for(desired(entra("o1", "ann@x.com")), state)
    assert only(plan.conflicts)["reason"].startswith("email_in_use")
    assert plan.links.empty
    assert plan.creates.empty


# --- idempotency ---------------------------------------------------------------------------------


def test_replan_after_create_by_hand_is_empty() -> None:
    wanted = desired(
        entra("o1", "Ann@x.com", job_title=" Dev ", department="Ops", office_location="London", manager_id="o2"),
        entra("o2", "bob@x.com", given_name="Bob", surname="Ray", job_title="DEV", city=" Leeds "),
    )
    plan = plan_for(wanted, FrankliState.empty())
    assert plan.counts() == {**EMPTY_COUNTS, "create": 2, "entity_create": 3}

    # What loading that plan writes, spelled out by hand.
    loaded = frankli_state(
        frankli_user(1, "o1", "Ann@x.com", role_id=10, department_id=20, site_id=30, manager_id=2, status="uninvited"),
        frankli_user(2, "o2", "bob@x.com", first_name="Bob", last_name="Ray", role_id=10, city="Leeds"),
        roles=[entity(10, "Dev")],
        departments=[entity(20, "Ops")],
        sites=[entity(30, "London")],
    )
    assert_nothing_to_do(plan_for(wanted, loaded, previous=wanted))
    assert applied(FrankliState.empty(), plan).users["manager_id"].tolist() == [2, None]


def test_replan_after_applying_a_mixed_plan_is_empty() -> None:
    state = frankli_state(
        frankli_user(1, "o1", "ann.smith@x.com", city="Paris", site_id=4, manager_id=5),  # renamed, moved
        frankli_user(2, None, "BOB@x.com"),  # adopted
        frankli_user(3, "old-id", "cy@x.com", status="archived", status_before_archive="invited", archived_by=SYNC),
        frankli_user(4, "o4", "dee@x.com"),  # disabled
        frankli_user(5, "o5", "eve@x.com"),  # gone
        frankli_user(6, "o6", "fay@x.com", status="archived", archived_by="frankli"),
        frankli_user(7, None, "hr@x.com"),  # unmanaged
        frankli_user(8, "o8", "gus@x.com", status="archived", status_before_archive="active", archived_by=SYNC),
        sites=[entity(4, "Paris"), entity(5, "London", deleted=True)],
        roles=[entity(6, "dev")],
    )
    wanted = desired(
        entra("o1", "ann.lee@x.com", city="  ", office_location="London", manager_id="o2", job_title="Lead"),
        entra("o2", "bob@x.com", office_location="London", manager_id="o9", job_title="DEV"),
        entra("new-id", "cy@x.com", manager_id="o6"),
        entra("o4", "dee@x.com", account_enabled=False),
        entra("o6", "fay@x.com"),
        entra("o8", "gus@x.com", manager_id="o9"),
        entra("o9", "hal@x.com", manager_id="o8", employee_hire_date="2022-02-02T00:00:00Z"),
    )
    plan = plan_for(wanted, state)
    assert plan.counts() == {
        "entity_create": 2,  # London (deleted, no previous snapshot) and Lead
        "create": 1,
        "update": 2,
        "link": 2,
        "restore": 2,
        "archive": 2,
        "conflict": 0,
    }
    assert len(plan.findings["manager_cycles"]) == 1
    loaded = applied(state, plan)
    replan = plan_for(wanted, loaded, previous=wanted)
    assert_nothing_to_do(replan)
    assert replan.findings["manager_cycles"] == plan.findings["manager_cycles"]
    assert loaded.users.set_index("id").loc[7].to_dict() == state.users.set_index("id").loc[7].to_dict()


def test_empty_plan_on_empty_inputs() -> None:
    plan = plan_for(desired(entra("o1", "ann@x.com", account_enabled=False)).iloc[0:0], FrankliState.empty())
    assert_nothing_to_do(plan)
    assert plan.findings == {
        "orphaned_references": [],
        "manager_problems": [],
        "manager_cycles": [],
        "archived_in_frankli": [],
    }


# --- issue 10, defect 2: a manager missing from the snapshot never clears a manager ---------------


def test_defect2_manager_absent_from_snapshot_is_kept() -> None:
    # The read missed m1 (a listing that ended early): o1's own record still names m1 as its manager.
    state = frankli_state(
        frankli_user(1, "o1", "ann@x.com", manager_id=2, city="Paris"), frankli_user(2, "m1", "boss@x.com")
    )
    plan = plan_for(desired(entra("o1", "ann@x.com", manager_id="m1", city="Leeds")), state)
    update = only(plan.updates)
    assert update["changes"] == {"city": ["Paris", "Leeds"]}, "no change entry for the manager"
    assert update["manager"] == "m1", "the update carries the manager o1 already has"
    assert applied(state, plan).users.set_index("id").loc[1, "manager_id"] == 2
    assert plan.findings["manager_problems"] == [
        {
            "external_id": "o1",
            "email": "ann@x.com",
            "manager_id": "m1",
            "reason": "not_in_source",
            "outcome": "manager left unchanged",
        }
    ]


def test_defect2_manager_absent_from_snapshot_is_no_update_at_all() -> None:
    state = frankli_state(frankli_user(1, "o1", "ann@x.com", manager_id=2), frankli_user(2, "m1", "boss@x.com"))
    plan = plan_for(desired(entra("o1", "ann@x.com", manager_id="m1")), state)
    assert plan.updates.empty
    assert [p["outcome"] for p in plan.findings["manager_problems"]] == ["manager left unchanged"]


@pytest.mark.parametrize("current", [None, 3], ids=["no-manager-now", "another-manager-now"])
def test_defect2_absent_manager_leaves_whatever_frankli_has(current: int | None) -> None:
    # Entra moved o1 to m9, which this snapshot lacks: nothing proves the move, so Frankli keeps its value.
    state = frankli_state(frankli_user(1, "o1", "ann@x.com", manager_id=current), frankli_user(3, "o3", "cy@x.com"))
    wanted = desired(entra("o1", "ann@x.com", manager_id="m9"), entra("o3", "cy@x.com"))
    plan = plan_for(wanted, state)
    assert plan.updates.empty
    assert plan.findings["manager_problems"][0]["reason"] == "not_in_source"
    assert_nothing_to_do(plan_for(wanted, applied(state, plan), previous=wanted))


def test_defect2_kept_manager_may_be_a_frankli_user_the_sync_does_not_manage() -> None:
    # An admin set an unmanaged manager (user 9) in Frankli; Entra's m1 is missing from the snapshot.
    state = frankli_state(
        frankli_user(1, "o1", "ann@x.com", manager_id=9, city="Paris"), frankli_user(9, None, "hr@x.com")
    )
    plan = plan_for(desired(entra("o1", "ann@x.com", manager_id="m1", city="Leeds")), state)
    update = only(plan.updates)
    assert update["changes"] == {"city": ["Paris", "Leeds"]}, "the manager is not among the changes to write"
    assert plan.findings["manager_problems"][0]["outcome"] == "manager left unchanged"


def test_defect2_new_user_with_absent_manager_gets_no_manager_and_is_reported() -> None:
    plan = plan_for(desired(entra("o1", "ann@x.com", manager_id="m9")), FrankliState.empty())
    assert only(plan.creates)["manager"] is None
    (problem,) = plan.findings["manager_problems"]
    assert (problem["reason"], problem["outcome"]) == ("not_in_source", "no manager")


def test_defect2_manager_removed_in_entra_is_still_cleared() -> None:
    # The user's own record says "no manager": that is evidence, so the manager is cleared.
    state = frankli_state(frankli_user(1, "o1", "ann@x.com", manager_id=2), frankli_user(2, "m1", "boss@x.com"))
    plan = plan_for(desired(entra("o1", "ann@x.com", manager_id=None), entra("m1", "boss@x.com")), state)
    update = only(plan.updates)
    assert (update["manager"], update["changes"]) == (None, {"manager": ["m1", None]})
    assert plan.findings["manager_problems"] == []


@pytest.mark.parametrize(
    ("manager_row", "quarantined", "reason"),
    [
        pytest.param(entra("m1", "boss@x.com", user_type="Guest"), (), "out_of_scope", id="out-of-scope"),
        pytest.param(entra("m1", "boss@x.com", account_enabled=False), (), "disabled", id="disabled"),
        pytest.param(entra("m1", "boss@x.com"), ("m1",), "quarantined", id="quarantined"),
    ],
)
def test_defect2_manager_in_snapshot_but_unusable_is_still_cleared(
    manager_row: dict[str, Any], quarantined: tuple[str, ...], reason: str
) -> None:
    state = frankli_state(frankli_user(1, "o1", "ann@x.com", manager_id=2), frankli_user(2, "m1", "boss@x.com"))
    wanted = desired(entra("o1", "ann@x.com", manager_id="m1"), manager_row, scope=NO_GUESTS, quarantined=quarantined)
    plan = plan_for(wanted, state)
    update = only(plan.updates)
    assert (update["user_id"], update["manager"]) == (1, None)
    (problem,) = plan.findings["manager_problems"]
    assert (problem["reason"], problem["outcome"]) == (reason, "no manager")


def test_defect2_manager_archived_by_admin_is_still_cleared() -> None:
    state = frankli_state(
        frankli_user(1, "o1", "ann@x.com", manager_id=2),
        frankli_user(2, "m1", "boss@x.com", status="archived", archived_by="frankli"),
    )
    plan = plan_for(desired(entra("o1", "ann@x.com", manager_id="m1"), entra("m1", "boss@x.com")), state)
    assert only(plan.updates)["manager"] is None
    assert plan.findings["manager_problems"][0]["reason"] == "archived_in_frankli"


def test_defect2_kept_manager_still_takes_part_in_cycle_breaking() -> None:
    # o1 keeps o2 (its Entra manager m9 is missing) while o2 reports to o1 in Entra: never load a cycle.
    state = frankli_state(frankli_user(1, "o1", "a@x.com", manager_id=2), frankli_user(2, "o2", "b@x.com"))
    wanted = desired(entra("o1", "a@x.com", manager_id="m9"), entra("o2", "b@x.com", manager_id="o1"))
    plan = plan_for(wanted, state)
    assert plan.findings["manager_cycles"] == [{"members": [("o1", "a@x.com"), ("o2", "b@x.com")]}]
    loaded = applied(state, plan).users.set_index("id")["manager_id"].to_dict()
    assert None in loaded.values(), loaded


# --- issue 10, defect 6: emails are equal by NFC + A-Z lower-casing; look-alikes are quarantined ---

KELVIN = "\u212a"  # KELVIN SIGN: looks like K, folds to k


def test_defect6_kelvin_eszett_upn_does_not_adopt_strasse() -> None:
    state = frankli_state(frankli_user(5, None, "kristin.strasse@x.com", first_name="Kristin", last_name="Strasse"))
    upn = f"{KELVIN}ristin.straße@x.com"
    plan = plan_for(desired(entra("o1", upn, given_name="Kris", surname="Straße")), state)
    assert plan.links.empty, "a look-alike address must never adopt a Frankli user"
    assert plan.creates.empty
    assert plan.updates.empty
    conflict = only(plan.conflicts)
    assert conflict["external_id"] == "o1"
    assert conflict["reason"] == (
        f"email_lookalike: {upn} looks like Frankli user kristin.strasse@x.com under Unicode folding; "
        "fix the UPN in Entra or the email in Frankli"
    )
    assert 5 not in touched_user_ids(plan)


def test_defect6_kelvin_sign_alone_does_not_adopt() -> None:
    # NFC turns the Kelvin sign into K, so the email keys are equal; DESIGN §2 still says Kelvin sign ≠ k.
    state = frankli_state(frankli_user(5, None, "kristin@x.com"))
    plan = plan_for(desired(entra("o1", f"{KELVIN}ristin@x.com")), state)
    assert plan.links.empty
    assert plan.creates.empty
    assert only(plan.conflicts)["reason"].startswith("email_lookalike:")


def test_defect6_eszett_is_not_ss() -> None:
    # Different addresses: no adoption, no email_in_use; the non-ASCII one is a look-alike.
    state = frankli_state(frankli_user(5, None, "strasse@x.com"), frankli_user(1, "o1", "ann@x.com"))
    plan = plan_for(desired(entra("o1", "straße@x.com")), state)
    conflict = only(plan.conflicts)
    assert conflict["reason"].startswith("email_lookalike: straße@x.com looks like Frankli user strasse@x.com")
    assert plan.updates.empty
    assert plan.archives.empty, "the user exists in Entra: kept, not archived"


def test_defect6_same_address_in_nfc_and_ascii_case_is_adopted() -> None:
    state = frankli_state(frankli_user(5, None, "José.Díaz@X.com"))
    plan = plan_for(desired(entra("o1", "jose\u0301.di\u0301az@x.com")), state)  # decomposed accents
    assert (only(plan.links)["user_id"], only(plan.links)["kind"]) == (5, "adopt")
    assert plan.conflicts.empty


def test_defect6_non_ascii_capitals_are_not_lowercased() -> None:
    # A-Z only: "É" and "é" differ, so this is no adoption, and the pair is a look-alike.
    state = frankli_state(frankli_user(5, None, "émile@x.com"))
    plan = plan_for(desired(entra("o1", "ÉMILE@x.com")), state)
    assert plan.links.empty
    assert only(plan.conflicts)["reason"].startswith("email_lookalike:")


def test_defect6_two_new_lookalike_users_hold_back_the_non_ascii_one() -> None:
    plan = plan_for(desired(entra("o1", "strasse@x.com"), entra("o2", "straße@x.com")), FrankliState.empty())
    assert list(plan.creates["external_id"]) == ["o1"]
    conflict = only(plan.conflicts)
    assert conflict["external_id"] == "o2"
    assert "looks like Entra user strasse@x.com (o1)" in conflict["reason"]


def test_defect6_ascii_address_beside_a_non_ascii_frankli_user_is_created() -> None:
    # Not the same address and not itself the look-alike: created (the Frankli one is the odd one out).
    state = frankli_state(frankli_user(5, None, "straße@x.com"))
    plan = plan_for(desired(entra("o1", "strasse@x.com")), state)
    assert only(plan.creates)["external_id"] == "o1"
    assert plan.links.empty
    assert plan.conflicts.empty


def test_defect6_email_change_to_a_lookalike_is_quarantined() -> None:
    state = frankli_state(frankli_user(1, "o1", "kris@x.com"), frankli_user(5, None, "kristin.strasse@x.com"))
    plan = plan_for(desired(entra("o1", "kristin.straße@x.com", city="Leeds")), state)
    assert only(plan.conflicts)["external_id"] == "o1"
    assert plan.updates.empty
    assert plan.archives.empty


def test_defect6_synced_user_with_unchanged_lookalike_email_is_left_alone() -> None:
    # Only new addresses are checked: an existing pair is no reason to stop syncing a user.
    state = frankli_state(frankli_user(1, "o1", "straße@x.com", city="Paris"), frankli_user(5, None, "strasse@x.com"))
    plan = plan_for(desired(entra("o1", "straße@x.com", city="Leeds")), state)
    assert plan.conflicts.empty
    assert only(plan.updates)["changes"] == {"city": ["Paris", "Leeds"]}


def test_defect6_rehire_by_lookalike_is_quarantined() -> None:
    state = frankli_state(frankli_user(3, "gone-id", "kristin@x.com"))
    plan = plan_for(desired(entra("new-id", f"{KELVIN}ristin@x.com")), state)
    assert plan.links.empty
    assert only(plan.conflicts)["external_id"] == "new-id"


def test_defect6_only_user_matches_by_email_key_not_casefold() -> None:
    wanted = desired(entra("o1", "straße@x.com"), entra("o2", "ann@x.com"))
    assert plan_for(wanted, FrankliState.empty(), only_user="STRASSE@x.com").counts() == EMPTY_COUNTS
    plan = plan_for(wanted, FrankliState.empty(), only_user=" STRAßE@X.com ")
    assert list(plan.creates["external_id"]) == ["o1"]


def test_defect6_only_user_keeps_findings_by_email_key() -> None:
    wanted = desired(entra("o1", "straße@x.com", manager_id="m1"), entra("o2", "strasse@x.com", manager_id="m2"))
    plan = plan_for(wanted, FrankliState.empty(), only_user="strasse@x.com")
    assert [p["external_id"] for p in plan.findings["manager_problems"]] == ["o2"]


# --- issue 10, defect 9: only_user and empty frames keep their columns ---------------------------

PLAN_COLUMNS = {
    "entity_creates": ["table", "key", "name"],
    "links": ["user_id", "external_id", "old_external_id", "email", "kind"],
    "restores": ["user_id", "external_id", "email", "status"],
    "archives": ["user_id", "external_id", "email", "status", "reason"],
    "conflicts": ["external_id", "email", "reason"],
}


def assert_plan_columns(plan: Plan) -> None:
    for name, columns in PLAN_COLUMNS.items():
        assert list(getattr(plan, name).columns) == columns, name
    assert {"external_id", "email", "manager", "status", *ENTITY_FIELDS} <= set(plan.creates.columns)
    assert ["user_id", "external_id", *plan.always_fields, "changes"] == list(plan.updates.columns)


def test_defect9_only_user_without_entity_creates() -> None:
    # Nobody needs a new site, department or role: the full plan's entity_creates is empty.
    state = frankli_state(
        frankli_user(1, "o1", "ann@x.com", role_id=7),
        frankli_user(2, "o2", "bob@x.com"),
        roles=[entity(7, "Dev"), entity(8, "Lead")],
    )
    wanted = desired(entra("o1", "ann@x.com", job_title="Lead"), entra("o2", "bob@x.com", job_title="Dev"))
    assert plan_for(wanted, state).entity_creates.empty
    plan = plan_for(wanted, state, only_user="ann@x.com")
    assert plan.entity_creates.empty
    assert list(plan.entity_creates.columns) == ["table", "key", "name"], "an empty list picked zero columns"
    assert only(plan.updates)["changes"] == {"role": ["dev", "lead"]}
    assert_plan_columns(plan)


def test_defect9_only_user_keeps_only_the_entities_it_needs() -> None:
    state = frankli_state(frankli_user(1, "o1", "ann@x.com", role_id=7), roles=[entity(7, "Dev"), entity(8, "Lead")])
    wanted = desired(entra("o1", "ann@x.com", job_title="Lead"), entra("o2", "bob@x.com", job_title="Brand new"))
    plan = plan_for(wanted, state, only_user="ann@x.com")
    assert plan.entity_creates.empty
    assert_plan_columns(plan)


def test_defect9_only_user_with_nothing_to_create_at_all() -> None:
    state = frankli_state(frankli_user(1, "o1", "ann@x.com", city="Paris"))
    plan = plan_for(desired(entra("o1", "ann@x.com", city="Leeds")), state, only_user="ann@x.com")
    assert only(plan.updates)["city"] == "Leeds"
    assert_plan_columns(plan)


@pytest.mark.parametrize("only_user", [None, "nobody@x.com"])
def test_defect9_every_plan_frame_keeps_its_columns_when_empty(only_user: str | None) -> None:
    plan = plan_for(desired(entra("o1", "ann@x.com")).iloc[0:0], FrankliState.empty(), only_user=only_user)
    assert_nothing_to_do(plan)
    assert_plan_columns(plan)
