"""Issue 10, defect 2: a listing that ends early cleared managers and was recorded as synced.

A full read whose second page came back empty with the delta link (100 of 400 users seen):
archives were blocked, but `load_upserts` cleared the manager of every user whose manager
was not among the 100, the run was recorded as synced, and every later delta run built on
the short snapshot. Now a full read is only complete when what it received matches
`GET /users/$count`; a short one fails the extract with nothing written and the delta link
kept. And even a short read that gets through (a tolerance set far too wide) clears no
manager: a field is cleared only when the user's own Entra record says so.
"""

from __future__ import annotations

from typing import Any

import pytest
from frankli_sync import pipeline
from graph_emulator import FaultPlan, FaultRule

ENDS_EARLY = FaultPlan([FaultRule(path_prefix="/v1.0/users/delta", ends_early=True, ordinals=[2])])


def _graph_source(tenant_name: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "graph", "conn_id": f"msgraph_{tenant_name}", "page_size": 100, **extra}


def _frankli(tenant: Any) -> dict[str, Any]:
    return {"users": tenant.users(), "audit": len(tenant.audit())}


def _cursor(tenant: Any) -> dict[str, Any] | None:
    from frankli_sync.connections import staging_engine
    from frankli_sync.staging import Staging

    engine = staging_engine(f"staging_{tenant.name}")
    try:
        return Staging(engine).cursor(tenant.name)
    finally:
        engine.dispose()


def test_defect2_listing_ending_early_fails_the_extract_and_writes_nothing(make_tenant, frankli_url) -> None:
    tenant = make_tenant(users=400, seed=21, frankli_url=frankli_url, source=_graph_source("acme"))
    tenant.run()
    with_manager = {k for k, u in tenant.users().items() if u["manager_id"] is not None}
    assert len(with_manager) > 100
    before, cursor = _frankli(tenant), _cursor(tenant)

    tenant.emulator.faults = ENDS_EARLY
    tenant.run(conf={"full_sync": True}, expect="failed")
    assert tenant.emulator.fault_stats()["faults_by_kind"].get("ends_early") == 1
    assert _frankli(tenant) == before, "a read that ended early wrote to Frankli"
    assert _cursor(tenant) == cursor, "the delta link advanced past a short read"
    report = tenant.report()
    assert report["incomplete_tasks"][0] == "extract"

    # The message says what happened and what to do; it never invites the override.
    tenant.emulator.faults = ENDS_EARLY
    with pytest.raises(Exception, match=r"returned 100 users but Graph reports \d+") as failed:
        tenant.run_task("extract", conf={"full_sync": True})
    assert "full_sync" in str(failed.value) and "allow_mass_archive" not in str(failed.value)
    with pytest.raises(Exception, match="no complete staged snapshot"):
        tenant.run_task("transform")

    # Graph healthy again: the next (delta) run continues from the last good link and changes nothing.
    tenant.emulator.faults = None
    tenant.run()
    assert _frankli(tenant)["users"] == before["users"]
    written = [r for r in tenant.audit(tenant.runs[-1].run_id) if r["action"] != "quarantine"]
    assert written == []


def test_defect2_short_read_let_through_clears_no_manager(make_tenant, frankli_url) -> None:
    """Defence in depth: with a tolerance that accepts anything, managers still stay."""
    tenant = make_tenant(
        users=400,
        seed=22,
        frankli_url=frankli_url,
        source=_graph_source("acme", count_tolerance_share=1.0),
    )
    tenant.run()
    before = tenant.users()
    with_manager = {k: u["manager_id"] for k, u in before.items() if u["manager_id"] is not None}

    tenant.emulator.faults = ENDS_EARLY
    tenant.run(conf={"full_sync": True}, expect="failed")  # the deletion guard stops the archives
    after = tenant.users()
    assert {k: after[k]["manager_id"] for k in with_manager} == with_manager, "managers were cleared"
    updates = [r for r in tenant.audit(tenant.runs[-1].run_id) if r["action"] == "update"]
    assert not [u for u in updates if "manager" in (u["details"] or {}).get("changes", {})]
    assert not [u for u in after.values() if u["status"] == "archived"]
    guard = tenant.report()["deletion_guard"]
    assert guard["blocked"] is True


def test_defect2_guard_on_an_unproven_read_suggests_a_full_read_not_the_override(make_tenant, frankli_url) -> None:
    """A snapshot staged before completeness was recorded is unproven: the override is never offered."""
    from frankli_sync.connections import staging_engine
    from frankli_sync.staging import extract_runs
    from sqlalchemy import update

    tenant = make_tenant(users=200, seed=23, frankli_url=frankli_url)
    tenant.run()
    members = [u["id"] for u in tenant.directory.users_sorted() if u["userType"] == "Member"]
    for object_id in members[:60]:
        tenant.directory.delete_user(object_id)
    for step in ("extract", "validate", "transform", "load_upserts"):
        getattr(pipeline, step)(tenant.name, "manual__legacy", {})
    engine = staging_engine(f"staging_{tenant.name}")
    try:
        with engine.begin() as connection:
            connection.execute(
                update(extract_runs).where(extract_runs.c.run_id == "manual__legacy").values(completeness=None)
            )
    finally:
        engine.dispose()
    with pytest.raises(pipeline.DeletionGuardTriggered) as blocked:
        pipeline.load_archives(tenant.name, "manual__legacy", {"allow_mass_archive": True})
    message = str(blocked.value)
    assert "not proven complete" in message and '{"full_sync": true}' in message
    assert "allow_mass_archive" not in message
    assert not [u for u in tenant.users().values() if u["status"] == "archived"]
