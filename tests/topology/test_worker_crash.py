"""Issue #6: a Celery worker killed (SIGKILL) in the middle of load_upserts loses and duplicates nothing.

One big tenant (load_upserts takes long enough to catch), unscheduled; the test waits until
load_upserts is writing in its open transaction, SIGKILLs the worker and every process under
it (the task runner included, as losing the machine would), checks nothing was committed,
starts a new worker, lets the scheduler detect the dead task (short heartbeat timeout) and
retry it, then checks that the run succeeded with one create per user and every planned
user present.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from topology_stack import CeleryStack, Tenant, check_services, frankli_rows, load_writing

pytestmark = pytest.mark.integration

USERS = 30_000


@pytest.fixture
def stack(tmp_path: Path):
    check_services()
    celery = CeleryStack(
        home=tmp_path / "airflow",
        tenants=[Tenant("bigcorp", users=USERS, seed=5)],
        schedule=None,
        extra_env={
            # notice the killed task within seconds, not the default 5 minutes
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        },
    )
    with celery.running():
        yield celery


def test_worker_killed_during_load_upserts_converges(stack: CeleryStack) -> None:
    tenant = stack.tenants[0]
    stack.wait_for(lambda: tenant.dag_id in stack.parsed_dags(), timeout=180, what="DAG parsed")
    stack.airflow("dags", "unpause", tenant.dag_id)
    run_id = stack.trigger(tenant.dag_id)

    def task_state(task_id: str) -> dict:
        return next(ti for ti in stack.task_instances(tenant.dag_id, run_id) if ti["task_id"] == task_id)

    # Polled straight on PostgreSQL: the REST API reports task states too late to catch a load
    # that commits a couple of seconds after it starts writing.
    stack.wait_for(lambda: load_writing(tenant), timeout=600, what="a load writing", interval=0.05)
    print(f"\n[crash] load_upserts writing after {time.monotonic() - stack.started:.0f}s; killing the worker")
    stack.stopped.add("worker")
    killed = stack.kill_tree(stack.processes["worker"])
    assert len(killed) >= 3, f"expected worker, pool process, supervisor and task runner; killed {killed}"
    users_at_kill = len(frankli_rows(tenant, "users")) if _has_users_table(tenant) else 0
    assert users_at_kill == 0, f"the killed load committed {users_at_kill} users before the kill"
    assert task_state("load_upserts")["state"] in ("running", "failed", "up_for_retry"), stack.all_log_tails()
    stack.start_worker("worker2")

    stack.wait_for_runs(tenant.dag_id, 1, timeout=900)
    upserts = task_state("load_upserts")
    print(
        f"[crash] run succeeded after {time.monotonic() - stack.started:.0f}s; "
        f"load_upserts try {upserts['try_number']}, users at kill {users_at_kill}"
    )
    assert upserts["try_number"] >= 2, upserts

    users = frankli_rows(tenant, "users")
    audit = frankli_rows(tenant, "sync_audit")
    creates = Counter(r["external_id"] for r in audit if r["action"] == "create")
    assert creates and max(creates.values()) == 1, [k for k, v in creates.items() if v > 1][:10]
    external_ids = [u["external_id"] for u in users if u["external_id"]]
    assert len(external_ids) == len(set(external_ids))
    assert set(external_ids) == set(creates)
    report = next((stack.home / "reports" / tenant.name).rglob("report.json"))
    planned_creates = json.loads(report.read_text())["counts"]["create"]
    assert len(users) == planned_creates > USERS * 0.8, (len(users), planned_creates)


def _has_users_table(tenant: Tenant) -> bool:
    try:
        frankli_rows(tenant, "users")
    except Exception:
        return False
    return True
