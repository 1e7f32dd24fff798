"""Issue #6: the pipeline on a real CeleryExecutor topology (PostgreSQL + Redis, separate processes).

Two tenants, each with its own Graph emulator process and its own Frankli database,
run through api-server + scheduler + dag-processor + a Celery worker (concurrency 2):
unpause, trigger, then backfill three past daily intervals of one tenant. Checks that
runs of a tenant never overlap, that later runs converge to the state of the first
clean run, and that nothing was written twice.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from topology_stack import CeleryStack, Tenant, check_services, entities_state, frankli_rows, users_state

pytestmark = pytest.mark.integration

USERS = 200


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def assert_no_overlap(runs: list[dict]) -> None:
    spans = sorted((_parse(r["start_date"]), _parse(r["end_date"]), r["dag_run_id"]) for r in runs)
    for (_, end, run_id), (start, _, next_id) in itertools.pairwise(spans):
        assert end <= start, f"{run_id} (ended {end}) overlaps {next_id} (started {start})"


@pytest.fixture
def stack(tmp_path: Path):
    check_services()
    celery = CeleryStack(
        home=tmp_path / "airflow",
        tenants=[Tenant("northwind", users=USERS, seed=11), Tenant("fabrikam", users=USERS, seed=23)],
    )
    with celery.running():
        yield celery


def test_two_tenants_trigger_and_backfill_on_celery(stack: CeleryStack) -> None:
    started = stack.started
    print(f"\n[topology] stack (databases, emulators, migrate, 4 processes) up after {time.monotonic() - started:.0f}s")
    dag_ids = {t.dag_id for t in stack.tenants}
    stack.wait_for(lambda: stack.parsed_dags() >= dag_ids, timeout=180, what="both DAGs parsed")
    print(f"[topology] DAGs parsed after {time.monotonic() - started:.0f}s")

    # Unpausing a periodic DAG (catchup off) makes the scheduler create the latest interval's run;
    # the manual trigger queues behind it (max_active_runs=1).
    stack.airflow("dags", "unpause", "--treat-dag-id-as-regex", "-y", "^entra_to_frankli__")
    triggered = {t.dag_id: stack.trigger(t.dag_id) for t in stack.tenants}

    first_state: dict[str, dict] = {}
    first_entities: dict[str, dict] = {}
    for tenant in stack.tenants:
        first = stack.wait_for(
            lambda t=tenant: next((r for r in stack.dag_runs(t.dag_id) if r["state"] == "success"), None),
            timeout=300,
            what=f"first successful run of {tenant.dag_id}",
        )
        first_state[tenant.name] = users_state(tenant)
        first_entities[tenant.name] = entities_state(tenant)
        print(f"[topology] {tenant.dag_id}: first run {first['dag_run_id']} ok at {time.monotonic() - started:.0f}s")
    for tenant in stack.tenants:
        runs = stack.wait_for_runs(tenant.dag_id, 2, timeout=300)
        assert triggered[tenant.dag_id] in {r["dag_run_id"] for r in runs}
    print(f"[topology] scheduled + triggered runs of both tenants ok at {time.monotonic() - started:.0f}s")

    # A day of churn in one tenant's directory (hires, moves, clears, disables, deletes), then a
    # backfill of three past daily intervals with up to three runs at once (the CLI's default is 10;
    # the DAG's max_active_runs does not bound a backfill). The first load to get the organisation's
    # lock applies the churn; the others find nothing left, or a newer snapshot already applied.
    tenant = stack.tenants[0]
    churn = stack.emulator_post(tenant, "/_emulator/day2")
    left = set(churn["deleted"]) | set(churn["disabled"])
    assert left and churn["hired"]
    today = datetime.now(UTC).date()
    stack.airflow(
        "backfill", "create", "--dag-id", tenant.dag_id,
        "--from-date", (today - timedelta(days=10)).isoformat(),
        "--to-date", (today - timedelta(days=8)).isoformat(),
        "--reprocess-behavior", "completed", "--max-active-runs", "3",
    )  # fmt: skip
    backfill_runs = stack.wait_for_runs(tenant.dag_id, 3, timeout=420, run_type="backfill")
    assert len(backfill_runs) == 3, backfill_runs
    overlapping = _overlapping(backfill_runs)
    print(f"[topology] backfill of {tenant.dag_id} (3 runs, {overlapping} overlapping pairs) ok at "
          f"{time.monotonic() - started:.0f}s")  # fmt: skip
    after_backfill = users_state(tenant)
    # One clean run after the backfill finds nothing to change: the concurrent runs left the state one run leaves.
    final_run = stack.trigger(tenant.dag_id)
    stack.wait_for(
        lambda: next((r for r in stack.dag_runs(tenant.dag_id) if r["dag_run_id"] == final_run
                      and r["state"] in ("success", "failed")), None),
        timeout=300, what="the run after the backfill",
    )  # fmt: skip

    for t in stack.tenants:
        runs = stack.dag_runs(t.dag_id)
        assert all(r["state"] == "success" for r in runs), runs
        # (a) runs of one tenant never overlap, except the backfill's (its loads are serialised by the sink)
        assert_no_overlap([r for r in runs if r["run_type"] != "backfill"])
        audit = frankli_rows(t, "sync_audit")
        creates = Counter(r["external_id"] for r in audit if r["action"] == "create")
        archives = Counter(r["external_id"] for r in audit if r["action"] == "archive")
        assert creates, "the first run created nobody"
        assert max(creates.values()) == 1, [k for k, v in creates.items() if v > 1]
        state = users_state(t)
        assert len(state) > USERS * 0.8, len(state)
        assert set(creates) == {k for k in state if not k.startswith("email:")}
        # extractions ran in the graph_extract pool (created by the stack's setup)
        extract = next(ti for ti in stack.task_instances(t.dag_id, runs[0]["dag_run_id"]) if ti["task_id"] == "extract")
        assert extract["pool"] == "graph_extract", extract
        if t is tenant:
            # (b) every user who left was archived exactly once, whatever run got there first
            assert set(archives) == left and max(archives.values()) == 1, archives
            assert {k for k, u in state.items() if u["status"] == "archived"} == left
            assert state == after_backfill, "the run after the backfill changed Frankli"
            assert {r["action"] for r in audit if r["run_id"] == final_run} <= {"quarantine"}
            continue
        # (c) the other tenant's later runs converged to the state of its first clean run: same rows,
        # same timestamps (nothing was rewritten), same entities; no audit rows but quarantines
        assert not archives
        assert state == first_state[t.name]
        assert entities_state(t) == first_entities[t.name]
        later = {r["dag_run_id"] for r in runs} - {runs[0]["dag_run_id"]}
        assert {r["action"] for r in audit if r["run_id"] in later} <= {"quarantine"}
    print(f"[topology] total {time.monotonic() - started:.0f}s")


def _overlapping(runs: list[dict]) -> int:
    spans = [(_parse(r["start_date"]), _parse(r["end_date"])) for r in runs]
    return sum(1 for (s1, e1), (s2, e2) in itertools.combinations(spans, 2) if s1 < e2 and s2 < e1)
