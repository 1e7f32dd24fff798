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
DAG_FILE = "entra_to_frankli.py"
ERRORS_FILE = "entra_to_frankli_config_errors.py"  # broken tenants' import error; defines no DAG
TASKS = ["extract", "validate", "transform", "load_upserts", "load_archives", "report"]
# After load_archives: asked only when the deletion guard stopped archives of a proven read.
APPROVAL = ["load_archives", "needs_approval", "approve_archives", "apply_approved_archives", "report"]


def _tenant(name: str, schedule: str | None) -> dict:
    return {
        "name": name,
        "schedule": schedule,
        "source": {"kind": "graph", "conn_id": f"msgraph_{name}"},
        "target": {"kind": "database", "conn_id": f"frankli_{name}", "organisation": name.title()},
    }


def _bag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict | str):
    """The DAG folder parsed as Airflow does, under `config` (a dict, or YAML text)."""
    from airflow.dag_processing.dagbag import DagBag

    text = config if isinstance(config, str) else yaml.safe_dump(config)
    (tmp_path / "tenants.yaml").write_text(text)
    monkeypatch.setenv("FRANKLI_SYNC_CONFIG", str(tmp_path / "tenants.yaml"))
    monkeypatch.delenv("FRANKLI_SYNC_TASK_RETRIES", raising=False)
    return DagBag(dag_folder=str(REPO / "dags"))


def _errors_by_file(bag) -> dict[str, str]:
    return {Path(path).name: error for path, error in bag.import_errors.items()}


@pytest.fixture
def dagbag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    return _bag(tmp_path, monkeypatch, {"tenants": [_tenant("contoso", "@daily"), _tenant("fabrikam", "0 3 * * *")]})


def test_dags_import_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dags) == ["entra_to_frankli__contoso", "entra_to_frankli__fabrikam"]


@pytest.mark.parametrize("dag_id", ["entra_to_frankli__contoso", "entra_to_frankli__fabrikam"])
def test_tasks_edges_and_house_rules(dagbag, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert sorted(t.task_id for t in dag.tasks) == sorted({*TASKS, *APPROVAL})
    edges = {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}
    assert edges == set(itertools.pairwise(TASKS[:-1])) | set(itertools.pairwise(APPROVAL))
    approve = dag.get_task("approve_archives")
    assert "ApprovalOperator" in {c.__name__ for c in type(approve).__mro__}, "Airflow's own approval"
    assert approve.defaults == ["Reject"], "no answer: nobody archived"
    assert dag.get_task("needs_approval").ignore_downstream_trigger_rules is False, "the report must still run"
    assert dag.max_active_runs == 1, "runs of one tenant must never overlap"
    assert dag.catchup is False
    assert {"frankli", "entra-id", "directory-sync", f"tenant:{dag_id.split('__')[1]}"} <= set(dag.tags)
    assert set(dag.params.keys()) == {"dry_run", "full_sync", "allow_mass_archive", "only_user"}
    assert dag.params["dry_run"] is False and dag.params["only_user"] is None
    assert all(dag.params.get_param(name).schema.get("title") for name in dag.params), "params carry titles"
    assert dag.params.get_param("only_user").schema["format"] == "email"
    assert dag.doc_md and "Entra ID" in dag.doc_md
    for task in dag.tasks:
        if task.task_id == "report":
            assert task.trigger_rule == "all_done", "the report must run even when a step failed"
            assert task.retries == 0
        elif task.task_id in ("approve_archives", "apply_approved_archives"):
            assert task.retries == 0, "a person's answer is not retried"
        else:
            assert task.retries == 2, f"{task.task_id} must retry transient errors"


def test_schedules_come_from_the_config(dagbag) -> None:
    assert dagbag.dags["entra_to_frankli__fabrikam"].timetable.expression == "0 3 * * *"
    assert dagbag.dags["entra_to_frankli__contoso"].timetable.expression in ("@daily", "0 0 * * *")


def test_bad_config_is_an_import_error_naming_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = _tenant("contoso", "@daily")
    tenant["thresholds"] = {"max_archive_share": 3}
    bag = _bag(tmp_path, monkeypatch, {"tenants": [tenant]})
    assert bag.dags == {}
    (error,) = bag.import_errors.values()
    assert "tenant 'contoso': tenants[0].thresholds.max_archive_share" in error


def test_defect7_bad_tenant_is_an_import_error_others_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unknown_key = {**_tenant("fabrikam", "@daily"), "colour": "blue"}
    bad_schedule = _tenant("tailspin", "@daliy")
    bad_name = _tenant("Wingtip Toys", "@daily")
    config = {"tenants": [_tenant("contoso", "@daily"), unknown_key, bad_schedule, bad_name]}
    bag = _bag(tmp_path, monkeypatch, config)

    assert sorted(bag.dags) == ["entra_to_frankli__contoso"]
    errors = _errors_by_file(bag)
    assert list(errors) == [ERRORS_FILE], "one import error, naming every broken tenant"
    error = errors[ERRORS_FILE]
    assert "3 broken tenant(s)" in error
    assert "tenant 'fabrikam': tenants[1]: unknown key(s) ['colour']" in error
    assert "tenant 'tailspin': tenants[2].schedule: '@daliy' is not an Airflow schedule" in error
    assert "tenants[3].name: 'Wingtip Toys' must be lower-case" in error
    # Airflow's dag-processor marks every DAG of a file with an import error stale (never scheduled):
    # the broken tenants' error must come from a file without DAGs.
    assert {Path(dag.fileloc).name for dag in bag.dags.values()} == {DAG_FILE}


def test_defect7_file_level_error_fails_the_dag_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = yaml.safe_dump({"tenants": [_tenant("contoso", "@daily")]}) + "tenants: []\n"
    bag = _bag(tmp_path, monkeypatch, config)
    assert bag.dags == {}
    errors = _errors_by_file(bag)
    assert list(errors) == [DAG_FILE], "a problem of the whole file is reported once, by the DAG file"
    assert "duplicate key 'tenants'" in errors[DAG_FILE]


def test_defect7_broken_tenants_file_defines_no_dag_and_is_parsed() -> None:
    from airflow.utils.file import might_contain_dag_via_default_heuristic

    path = REPO / "dags" / ERRORS_FILE
    assert might_contain_dag_via_default_heuristic(str(path)), "safe mode would skip it, and its errors"
    assert "@dag" not in path.read_text() and "DAG(" not in path.read_text()


SCHEDULES = [
    "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly", "@midnight", "@annually", "@reboot",
    "@daliy", "@every 5m", "0 3 * * *", "61 * * * *", "0 0 * * 8", "*/15 6-18 * * MON-FRI", "0 0 L * *",
    "30 2 * * * 0", "0 0 1 1 * 2030", "H * * * *", "* * *", "*/0 * * * *", "MON * * * *",
]  # fmt: skip


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_defect7_schedule_check_agrees_with_airflow(schedule: str) -> None:
    """The config accepts a cron string exactly when Airflow's own cron timetable validates it."""
    from airflow.sdk import CronTriggerTimetable
    from airflow.sdk.exceptions import AirflowTimetableInvalid
    from frankli_sync.config import ConfigError, _schedule

    try:
        CronTriggerTimetable(schedule, timezone="UTC").validate()
        airflow_accepts = True
    except AirflowTimetableInvalid:
        airflow_accepts = False
    try:
        _schedule(schedule, "schedule")
        config_accepts = True
    except ConfigError:
        config_accepts = False
    assert config_accepts == airflow_accepts


def test_defect7_schedule_presets_are_airflows() -> None:
    from airflow.sdk.definitions.timetables._cron import CRON_PRESETS as AIRFLOW_PRESETS
    from frankli_sync.config import CRON_PRESETS

    assert CRON_PRESETS == AIRFLOW_PRESETS
