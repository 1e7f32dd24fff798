"""The organisation's "Frankli users changed" asset, as Airflow records it in its metadata DB after real runs.

Only loads that wrote users emit it: a dry run (which would have created users), a load with nothing to
write and a failed load emit nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from synced_tenant import valid_leaves

pytestmark = pytest.mark.integration

ASSET_URI = "frankli://frankli_acme/Acme%20Corp/users"  # what a downstream DAG schedules on (assets.py)


def _events(run_id: str) -> list[dict[str, Any]]:
    """The asset events of ASSET_URI a run produced, in the order Airflow recorded them."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.source_dag_id, AssetEvent.source_task_id, AssetEvent.extra, AssetModel.name)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == ASSET_URI, AssetEvent.source_run_id == run_id)
            .order_by(AssetEvent.id)
        ).all()
    return [{"dag": r[0], "task": r[1], "extra": r[2], "asset_name": r[3]} for r in rows]


def _written(counts: dict[str, int]) -> dict[str, int]:
    return {action: n for action, n in counts.items() if action != "quarantine" and n}


def test_loads_that_write_users_emit_the_organisation_asset_a_dry_run_none(make_tenant) -> None:
    from frankli_sync.assets import users_asset_of

    tenant = make_tenant(users=100, seed=11)
    assert users_asset_of("acme").uri == ASSET_URI

    dry = tenant.run(conf={"dry_run": True})
    assert tenant.report()["planned"]["create"] > 0, "the dry run would have created users"
    assert _events(dry.run_id) == []

    first = tenant.run()
    created = _written(tenant.report()["counts"])
    assert created.get("create") == len(tenant.users()) > 0
    assert _events(first.run_id) == [
        {
            "dag": "entra_to_frankli__acme",
            "task": "load_upserts",
            "asset_name": ASSET_URI,
            "extra": {
                "tenant": "acme",
                "organisation": "Acme Corp",
                "run_id": first.run_id,
                "step": "load_upserts",
                "counts": created,
            },
        }
    ], "load_archives archived nobody: no event of its own"

    # Three leavers, under the deletion guard's limit: only load_archives wrote, only it emits.
    leavers = valid_leaves(tenant.directory)[:3]
    for object_id in leavers:
        tenant.directory.delete_user(object_id)
    third = tenant.run()
    assert {ext for ext, u in tenant.users().items() if u["status"] == "archived"} == set(leavers)
    events = _events(third.run_id)
    assert [(e["task"], e["extra"]["step"], e["extra"]["counts"]) for e in events] == [
        ("load_archives", "load_archives", {"archive": 3})
    ]

    # Nothing changed in Entra: nothing written, no event.
    fourth = tenant.run()
    assert _written(tenant.report()["counts"]) == {}
    assert _events(fourth.run_id) == []


def test_failed_load_emits_nothing(make_tenant) -> None:
    """The deletion guard fails load_archives: the run's upserts emit, its archives do not."""
    tenant = make_tenant(users=100, seed=11)
    tenant.run()
    leaves = valid_leaves(tenant.directory)
    changed = leaves[15]
    for object_id in leaves[:15]:
        tenant.directory.delete_user(object_id)
    tenant.directory.update_user(changed, jobTitle="Principal Engineer")
    run = tenant.run(expect="failed")
    assert tenant.report()["deletion_guard"]["blocked"] is True
    assert [(e["task"], e["extra"]["counts"]) for e in _events(run.run_id)] == [("load_upserts", {"update": 1})]
