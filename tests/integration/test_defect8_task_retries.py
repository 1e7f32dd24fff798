"""Issue 10, defect 8, through Airflow itself: a permanent error uses one try, a transient one is retried.

The README's placeholder tenant id failed after 10½ minutes of task retries. The other tests of
defect 8 show the Graph client raising a `SyncStopped`; this one runs the DAG with task retries
switched on and reads the task instance's tries from Airflow's metadata database: the extract that
fails on `<tenant id>` is tried once, while an extract that may succeed later (a CSV file not
there yet) is tried again.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest


@pytest.fixture
def retrying(dag_file, monkeypatch) -> None:
    """DAGs built with one task retry after one second (the tests otherwise run without retries)."""
    monkeypatch.setitem(dag_file.DEFAULT_ARGS, "retries", 1)
    monkeypatch.setitem(dag_file.DEFAULT_ARGS, "retry_delay", timedelta(seconds=1))
    monkeypatch.setitem(dag_file.DEFAULT_ARGS, "retry_exponential_backoff", False)


def _extract_tries(dag_run: Any) -> tuple[int, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = (
            session.query(TaskInstance).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id="extract").one()
        )
        return int(ti.try_number), str(ti.state)


def test_defect8_placeholder_tenant_id_is_tried_once(make_tenant, retrying, monkeypatch) -> None:
    tenant = make_tenant(users=20, seed=31)
    # The README's connection as copied: real Graph (no base_url) and the tenant id left as its placeholder.
    placeholder = {"conn_type": "msgraph", "login": "<client id>", "password": "<secret>"}
    placeholder["extra"] = {"tenant_id": "<tenant id>"}
    monkeypatch.setenv("AIRFLOW_CONN_MSGRAPH_ACME", json.dumps(placeholder))
    dag_run = tenant.run(expect="failed")
    assert _extract_tries(dag_run) == (1, "failed"), "a permanent error must not be retried"


def test_defect8_a_transient_failure_is_still_retried(make_tenant, retrying, tmp_path) -> None:
    tenant = make_tenant(users=20, seed=32, source={"kind": "csv", "path": str(tmp_path / "not-yet.csv")})
    dag_run = tenant.run(expect="failed")
    assert _extract_tries(dag_run) == (2, "failed"), "a file that may appear is worth the configured retry"
