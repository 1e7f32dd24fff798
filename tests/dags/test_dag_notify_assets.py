"""DAG wiring of issue 12 items 6 and 7, parsed as Airflow parses the DAG folder.

The loads have the tenant's asset alias as their outlet (and no plain asset, whose event Airflow would
record on every success); a tenant's notify settings become its tasks' and DAG's callbacks; a broken
notify block is the tenant's import error, naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
TASKS = ["extract", "validate", "transform", "load_upserts", "load_archives", "report"]


def _tenant(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": None,
        "source": {"kind": "graph", "conn_id": f"msgraph_{name}"},
        "target": {"kind": "database", "conn_id": f"frankli_{name}", "organisation": f"{name.title()} Ltd"},
        **extra,
    }


def _bag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tenants: list[dict[str, Any]]):
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "tenants.yaml").write_text(yaml.safe_dump({"tenants": tenants}))
    monkeypatch.setenv("FRANKLI_SYNC_CONFIG", str(tmp_path / "tenants.yaml"))
    return DagBag(dag_folder=str(REPO / "dags"))


def _callbacks(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def test_loads_emit_through_the_tenant_alias_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import Asset, AssetAlias

    bag = _bag(tmp_path, monkeypatch, [_tenant("contoso")])
    assert bag.import_errors == {}
    dag = bag.dags["entra_to_frankli__contoso"]
    outlets = {task.task_id: list(task.outlets) for task in dag.tasks}
    alias = AssetAlias(name="frankli_users_changed__contoso")
    writers = ("load_upserts", "load_archives", "apply_approved_archives")
    assert outlets == {task.task_id: ([alias] if task.task_id in writers else []) for task in dag.tasks}
    assert not any(isinstance(o, Asset) for task_outlets in outlets.values() for o in task_outlets)


def test_notify_settings_become_callbacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from frankli_sync.notifications import (
        GuardNotifier,
        QuarantineNotifier,
        RunFailureNotifier,
        StepFailureNotifier,
    )

    notify = {"conn_id": "smtp_ops", "to": ["ops@contoso.example"], "quarantine_warn_share": 0.02}
    bag = _bag(tmp_path, monkeypatch, [_tenant("contoso", notify=notify), _tenant("fabrikam")])
    assert bag.import_errors == {}
    contoso, fabrikam = bag.dags["entra_to_frankli__contoso"], bag.dags["entra_to_frankli__fabrikam"]

    for task in contoso.tasks:
        [on_failure] = _callbacks(task.on_failure_callback)
        assert isinstance(on_failure, StepFailureNotifier) and on_failure.tenant.name == "contoso"
        on_success = [type(c) for c in _callbacks(task.on_success_callback)]
        expected = {"validate": [QuarantineNotifier], "load_archives": [GuardNotifier]}.get(task.task_id, [])
        assert on_success == expected, task.task_id
    [run_failed] = _callbacks(contoso.on_failure_callback)
    assert isinstance(run_failed, RunFailureNotifier)
    assert run_failed.settings.to == ("ops@contoso.example",) and run_failed.settings.conn_id == "smtp_ops"

    assert _callbacks(fabrikam.on_failure_callback) == []
    for task in fabrikam.tasks:
        assert _callbacks(task.on_failure_callback) == [] and _callbacks(task.on_success_callback) == []


def test_broken_notify_block_is_the_tenants_import_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notify = {"to": ["ops@contoso.example"], "on": ["failure", "quarantine"], "quarantine_warn_share": 0.2}
    bag = _bag(tmp_path, monkeypatch, [_tenant("contoso", notify=notify), _tenant("fabrikam")])
    assert sorted(bag.dags) == ["entra_to_frankli__fabrikam"]
    [error] = bag.import_errors.values()
    assert "tenant 'contoso': tenants[0].notify.quarantine_warn_share: 0.2 must be below " in error
    assert "thresholds.max_invalid_share (0.05)" in error
