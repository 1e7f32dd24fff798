"""Issue #11: the transform plans once and the loads apply that plan, only while it provably still holds.

The task bodies are called one by one with a run id of the test's own, so a Frankli admin can
act between two tasks of one run: between the transform and ``load_upserts`` (the kept plan
must not be applied over the edit) and between the two loads (``load_archives`` must not
archive by a plan that no longer describes Frankli).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import update

pytestmark = pytest.mark.integration

TASKS = ("extract", "validate", "transform", "load_upserts", "load_archives", "report")


def members(tenant: Any, count: int) -> list[dict[str, Any]]:
    from graph_emulator import Tenant

    directory = tenant.directory
    found = [u for u in directory.users_sorted() if Tenant.is_valid_member(u) and u.get("jobTitle")]
    return found[:count]


def run_tasks(tenant: Any, run_id: str, tasks: tuple[str, ...] = TASKS) -> dict[str, Any]:
    from frankli_sync import pipeline

    return {task: getattr(pipeline, task)(tenant.name, run_id, {}) for task in tasks}


def frankli_user(tenant: Any, object_id: str) -> dict[str, Any]:
    return tenant.users()[object_id]


def role_name(tenant: Any, role_id: int | None) -> str | None:
    return next((r["name"] for r in tenant.table("roles") if r["id"] == role_id), None)


@pytest.fixture
def planned_again(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tasks that computed a plan themselves (instead of reading the transform's back)."""
    from frankli_sync import pipeline

    computed: list[str] = []
    original = pipeline.compute_plan

    def counting(ctx: Any, *args: Any, **kwargs: Any) -> Any:
        import inspect

        caller = next(f.function for f in inspect.stack()[1:] if f.function in TASKS)
        computed.append(caller)
        return original(ctx, *args, **kwargs)

    monkeypatch.setattr(pipeline, "compute_plan", counting)
    return computed


def test_the_loads_apply_the_transforms_plan(make_tenant, frankli_url, planned_again) -> None:
    tenant = make_tenant(users=120, seed=31, frankli_url=frankli_url)
    tenant.run()
    planned_again.clear()
    moved, leaving = members(tenant, 2)
    tenant.directory.update_user(moved["id"], jobTitle="Chief Kept Plan Officer")
    tenant.directory.update_user(leaving["id"], accountEnabled=False)

    summary = run_tasks(tenant, "manual__kept_plan")

    assert planned_again == ["transform"], planned_again  # planned once; both loads read it back
    assert summary["load_upserts"].get("update", 0) >= 1
    assert summary["load_archives"] == {"archive": 1}
    assert role_name(tenant, frankli_user(tenant, moved["id"])["role_id"]) == "Chief Kept Plan Officer"
    assert frankli_user(tenant, leaving["id"])["status"] == "archived"
    # The record the run left is the one a computed plan leaves: the next run has nothing to do.
    again = run_tasks(tenant, "manual__after")
    assert {k: v for k, v in again["load_upserts"].items() if k != "quarantine"} == {}


def test_an_admins_edit_after_the_transform_makes_the_load_plan_again(make_tenant, frankli_url, planned_again) -> None:
    tenant = make_tenant(users=120, seed=32, frankli_url=frankli_url)
    tenant.run()
    planned_again.clear()
    (user,) = members(tenant, 1)
    tenant.directory.update_user(user["id"], jobTitle="Title Entra Gave")
    run_tasks(tenant, "manual__edited", ("extract", "validate", "transform"))
    before = frankli_user(tenant, user["id"])

    # A Frankli admin archives the user after the plan was made: the plan's update must not land on them.
    from frankli_sync.sinks.schema import users

    tenant.execute(
        update(users)
        .where(users.c.external_id == user["id"])
        .values(status="archived", archived_by="frankli", archived_at=datetime.now(UTC), updated_at=datetime.now(UTC))
    )
    run_tasks(tenant, "manual__edited", ("load_upserts", "load_archives", "report"))

    after = frankli_user(tenant, user["id"])
    assert planned_again == ["transform", "load_upserts", "load_archives"], planned_again
    assert after["status"] == "archived" and after["archived_by"] == "frankli"
    assert after["role_id"] == before["role_id"]  # untouched: an admin's archive wins


def test_an_unlink_between_the_loads_makes_the_archive_plan_again(make_tenant, frankli_url, planned_again) -> None:
    tenant = make_tenant(users=120, seed=33, frankli_url=frankli_url)
    tenant.run()
    planned_again.clear()
    (user,) = members(tenant, 1)
    tenant.directory.update_user(user["id"], accountEnabled=False)
    run_tasks(tenant, "manual__unlinked", ("extract", "validate", "transform", "load_upserts"))

    # Between the loads, a Frankli admin takes the user out of the sync: it is no longer ours to archive.
    from frankli_sync.sinks.schema import users

    tenant.execute(
        update(users).where(users.c.external_id == user["id"]).values(external_id=None, updated_at=datetime.now(UTC))
    )
    summary = run_tasks(tenant, "manual__unlinked", ("load_archives", "report"))

    assert planned_again == ["transform", "load_archives"], planned_again
    assert summary["load_archives"] == {"archive": 0}
    assert tenant.users()[f"email:{user['mail']}"]["status"] != "archived"


def test_a_cleared_load_plans_again_and_writes_nothing_twice(make_tenant, planned_again) -> None:
    tenant = make_tenant(users=120, seed=34)
    tenant.run()
    planned_again.clear()
    (user,) = members(tenant, 1)
    tenant.directory.update_user(user["id"], jobTitle="Cleared Twice")
    first = run_tasks(tenant, "manual__cleared")
    audit = len(tenant.audit("manual__cleared"))

    again = run_tasks(tenant, "manual__cleared", ("load_upserts", "load_archives"))

    assert first["load_upserts"].get("update", 0) >= 1
    assert {k: v for k, v in again["load_upserts"].items() if k != "quarantine"} == {}
    assert again["load_archives"] == {"archive": 0}
    assert planned_again == ["transform", "load_upserts", "load_archives"], planned_again
    assert len(tenant.audit("manual__cleared")) == audit


def test_kept_frames_come_back_with_their_values_and_dtypes(monkeypatch: pytest.MonkeyPatch) -> None:
    from frankli_sync import plan_store

    monkeypatch.setattr(plan_store, "PART_ROWS", 2)  # several parts
    frame = pd.DataFrame(
        {
            "user_id": pd.Series([1, 2, 3, 4, 5], dtype="int64"),
            "external_id": ["a", None, "ß\u212a", "  ", "<b>&"],
            "email": pd.Series(["x@y.z", None, "q@r.s", "", "t@u.v"], dtype="str"),
            "reason": pd.Series([float("nan")] * 5, dtype="float64"),
            "changes": [["role"], [], ["email", "site"], ["city"], None],
            "flag": [True, False, None, True, False],
        }
    )
    texts = list(plan_store.frame_parts(frame))
    assert len(texts) == 3
    back = plan_store.frame_from_parts(texts)
    pd.testing.assert_frame_equal(back, frame)
    empty = plan_store.frame_from_parts(list(plan_store.frame_parts(frame.iloc[0:0])))
    assert list(empty.columns) == list(frame.columns) and (empty.dtypes == frame.dtypes).all()
    with pytest.raises(TypeError, match="cannot be kept"):
        list(plan_store.frame_parts(pd.DataFrame({"when": [datetime.now(UTC)]}, dtype=object)))


def test_each_load_reads_back_only_the_frames_it_applies(tmp_path) -> None:
    """load_upserts gets creates to conflicts; load_archives the archives and the record (others: empty, typed)."""
    import json

    from frankli_sync.plan import Plan
    from frankli_sync.plan_store import PlanKey, PlanStore, run_plans
    from sqlalchemy import create_engine, select

    def frame(**columns: list[Any]) -> pd.DataFrame:
        return pd.DataFrame(
            {k: pd.Series(v, dtype="int64" if k == "user_id" else "object") for k, v in columns.items()}
        )

    plan = Plan(
        entity_creates=frame(table=["sites"], key=["dub"], name=["Dublin"]),
        creates=frame(external_id=["n1", "n2"], email=["a@x", "b@x"], status=["uninvited"] * 2),
        updates=frame(user_id=[7], external_id=["u1"], changes=[["role"]]),
        links=frame(user_id=[8], external_id=["l1"]),
        restores=frame(user_id=[9], external_id=["r1"]),
        archives=frame(user_id=[3, 4], external_id=["g1", "g2"], reason=["disabled", "deleted"]),
        conflicts=frame(external_id=["c1"], email=["c@x"], reason=["rehire_conflict"]),
        always_fields=("role",),
    )
    record = frame(object_id=["n1", "n2", "g1"], state=["active", "active", "disabled"])
    key = PlanKey("m1", "complete|3|t", "v", None, None, "s")
    store = PlanStore(create_engine(f"sqlite:///{tmp_path / 'staging.db'}"))
    store.save("t", "r", key, plan, {"mode": "full"}, None, record)

    upserts = store.load("t", "r", key, after_upserts=False)
    assert upserts is not None and upserts.record is None
    for name in ("entity_creates", "creates", "updates", "links", "restores", "conflicts"):
        pd.testing.assert_frame_equal(getattr(upserts.plan, name), getattr(plan, name))
    assert len(upserts.plan.archives) == 0
    assert list(upserts.plan.archives.columns) == list(plan.archives.columns)
    assert (upserts.plan.archives.dtypes == plan.archives.dtypes).all()

    store.applied("t", "r", "m2")
    archives = store.load("t", "r", PlanKey(**{**key.__dict__, "frankli_mark": "m2"}), after_upserts=True)
    assert archives is not None
    pd.testing.assert_frame_equal(archives.plan.archives, plan.archives)
    pd.testing.assert_frame_equal(archives.record, record)
    assert len(archives.plan.creates) == 0 and list(archives.plan.creates.columns) == list(plan.creates.columns)

    # A plan kept before the frames' heads were stored is read whole, as it always was.
    with store.engine.begin() as connection:
        meta = json.loads(connection.execute(select(run_plans.c.payload).where(run_plans.c.part == "key")).scalar_one())
        del meta["frames"]
        connection.execute(run_plans.update().where(run_plans.c.part == "key").values(payload=json.dumps(meta)))
    whole = store.load("t", "r", PlanKey(**{**key.__dict__, "frankli_mark": "m2"}), after_upserts=True)
    assert whole is not None
    pd.testing.assert_frame_equal(whole.plan.creates, plan.creates)
    pd.testing.assert_frame_equal(whole.plan.archives, plan.archives)
