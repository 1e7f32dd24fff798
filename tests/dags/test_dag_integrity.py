"""DAG integrity: every DAG file imports, one DAG per tenant, house rules hold.

Parsing needs no connection, secret or service: the DAG file only wires.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
TASKS = ["extract", "validate", "transform", "load_upserts", "load_archives", "report"]


def _tenant(name: str, schedule: str | None) -> dict:
    return {
        "name": name,
        "schedule": schedule,
        "source": {"kind": "graph", "conn_id": f"msgraph_{name}"},
        "target": {"kind": "database", "conn_id": f"frankli_{name}", "organisation": name.title()},
    }


@pytest.fixture
def dagbag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from airflow.dag_processing.dagbag import DagBag

    config = {"tenants": [_tenant("contoso", "@daily"), _tenant("fabrikam", "0 3 * * *")]}
    (tmp_path / "tenants.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("FRANKLI_SYNC_CONFIG", str(tmp_path / "tenants.yaml"))
    monkeypatch.delenv("FRANKLI_SYNC_TASK_RETRIES", raising=False)
    return DagBag(dag_folder=str(REPO / "dags"))


def test_dags_import_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dags) == ["entra_to_frankli__contoso", "entra_to_frankli__fabrikam"]


@pytest.mark.parametrize("dag_id", ["entra_to_frankli__contoso", "entra_to_frankli__fabrikam"])
def test_tasks_edges_and_house_rules(dagbag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert sorted(t.task_id for t in dag.tasks) == sorted(TASKS)
    edges = {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}
    assert edges == set(itertools.pairwise(TASKS))
    assert dag.max_active_runs == 1, "runs of one tenant must never overlap"
    assert dag.catchup is False
    assert {"frankli", "entra-id", "directory-sync", f"tenant:{dag_id.split('__')[1]}"} <= set(dag.tags)
    assert set(dag.params.keys()) == {"dry_run", "full_sync", "allow_mass_archive", "only_user"}
    assert dag.params["dry_run"] is False and dag.params["only_user"] is None
    assert dag.doc_md and "Entra ID" in dag.doc_md
    for task in dag.tasks:
        if task.task_id == "report":
            assert task.trigger_rule == "all_done", "the report must run even when a step failed"
            assert task.retries == 0
        else:
            assert task.retries == 2, f"{task.task_id} must retry transient errors"


def test_schedules_come_from_the_config(dagbag) -> None:
    assert dagbag.dags["entra_to_frankli__fabrikam"].timetable.expression == "0 3 * * *"
    assert dagbag.dags["entra_to_frankli__contoso"].timetable.expression in ("@daily", "0 0 * * *")


def test_bad_config_is_an_import_error_naming_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    tenant = _tenant("contoso", "@daily")
    tenant["thresholds"] = {"max_archive_share": 3}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"tenants": [tenant]}))
    monkeypatch.setenv("FRANKLI_SYNC_CONFIG", str(tmp_path / "bad.yaml"))
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.dags == {}
    (error,) = bag.import_errors.values()
    assert "tenants[0].thresholds.max_archive_share" in error
