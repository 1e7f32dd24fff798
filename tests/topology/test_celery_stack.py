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

    # Backfill three past daily intervals of one tenant.
    tenant = stack.tenants[0]
    today = datetime.now(UTC).date()
    stack.airflow(
        "backfill", "create", "--dag-id", tenant.dag_id,
        "--from-date", (today - timedelta(days=10)).isoformat(),
        "--to-date", (today - timedelta(days=8)).isoformat(),
        "--reprocess-behavior", "completed", "--max-active-runs", "1",
    )  # fmt: skip
    backfill_runs = stack.wait_for_runs(tenant.dag_id, 3, timeout=300, run_type="backfill")
    assert len(backfill_runs) == 3, backfill_runs
    print(f"[topology] backfill of {tenant.dag_id} (3 runs) ok at {time.monotonic() - started:.0f}s")

    for t in stack.tenants:
        runs = stack.dag_runs(t.dag_id)
        assert all(r["state"] == "success" for r in runs), runs
        # (a) runs of one tenant never overlap
        assert_no_overlap(runs)
        # (b) every later run converged to the state of the first clean run: same rows, same
        # timestamps (nothing was rewritten), same entities
        state = users_state(t)
        assert len(state) > USERS * 0.8, len(state)
        assert state == first_state[t.name]
        assert entities_state(t) == first_entities[t.name]
        # (c) one create per user; no audit rows from the backfill except quarantines
        audit = frankli_rows(t, "sync_audit")
        creates = Counter(r["external_id"] for r in audit if r["action"] == "create")
        assert creates, "the first run created nobody"
        assert max(creates.values()) == 1, [k for k, v in creates.items() if v > 1]
        assert set(creates) == {k for k in state if not k.startswith("email:")}
        # extractions ran in the graph_extract pool (created by the stack's setup)
        extract = next(ti for ti in stack.task_instances(t.dag_id, runs[0]["dag_run_id"]) if ti["task_id"] == "extract")
        assert extract["pool"] == "graph_extract", extract
        backfill_ids = {r["dag_run_id"] for r in runs if r["run_type"] == "backfill"}
        assert {r["action"] for r in audit if r["run_id"] in backfill_ids} <= {"quarantine"}
    print(f"[topology] total {time.monotonic() - started:.0f}s")
