"""Issue #12: a mass archive the deletion guard stopped is approved, or rejected, through Airflow's own API.

The tenant's DAG runs for real (`dag.test()`, in this process) on the session's metadata DB; a real
`airflow api-server` (simple auth, the reports plugin) serves the same DB, as the UI's
"Required actions" page does. Day 1 syncs 200 users; then 40 of them are disabled in Entra, over
the guard's limit of 2. The run must park in `approve_archives` with the count, the thresholds and
a sample of who would go; a person answers through the REST API the UI calls
(``PATCH …/taskInstances/approve_archives/-1/hitlDetails``):

- Approve: exactly those 40 are archived, the run succeeds, the report names who approved;
- Reject: nobody is archived, the run fails, and its report says who rejected it and what to do.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_reports_ui as ui
from synced_tenant import make_tenant

__all__ = ["make_tenant"]  # the fixture, shared with tests/integration
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

GUARD = {"max_archive_count": 2, "max_archive_share": 0.5, "archive_approval_hours": 1}
LEAVERS = 40


@pytest.fixture(scope="module")
def api_server(airflow_db: Path) -> Iterator[ui.ApiServer]:
    """An api-server on the metadata DB the tests' DAG runs write (the session's SQLite file)."""
    workdir = Path(tempfile.mkdtemp(prefix="frankli-approval-"))
    config = workdir / "tenants.yaml"
    config.write_text(json.dumps({"reports_dir": str(workdir / "reports"), "tenants": []}))
    server = ui.ApiServer(workdir, config)
    server.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{airflow_db / 'airflow.db'}"
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def api(server: ui.ApiServer, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"{server.base_url}/api/v2{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {ui.login_token(server.base_url)}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


class Approver(threading.Thread):
    """Waits for the run's approval request, records it, and answers `choice` the way the UI does."""

    def __init__(self, server: ui.ApiServer, dag_id: str, choice: str) -> None:
        super().__init__(daemon=True)
        self.server, self.dag_id, self.choice = server, dag_id, choice
        self.request: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                found = api(self.server, "GET", f"/dags/{self.dag_id}/dagRuns/~/hitlDetails")["hitl_details"]
                waiting = [d for d in found if not d.get("response_received")]
                if waiting:
                    self.request = waiting[0]
                    ti = self.request["task_instance"]
                    api(
                        self.server,
                        "PATCH",
                        f"/dags/{self.dag_id}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/-1/hitlDetails",
                        {"chosen_options": [self.choice]},
                    )
                    return
                time.sleep(1)
            raise TimeoutError("no approval request appeared within 300 s")
        except BaseException as error:  # re-raised by the test
            self.error = error


def guard_trips(make_tenant: Any) -> tuple[Any, set[str]]:
    tenant = make_tenant(users=200, seed=8, thresholds=GUARD)
    tenant.run()
    synced = tenant.users()
    leavers = [u["id"] for u in tenant.directory.users_sorted() if u["id"] in synced][:LEAVERS]
    for object_id in leavers:
        tenant.directory.update_user(object_id, accountEnabled=False)
    return tenant, set(leavers)


def run_answered(tenant: Any, server: ui.ApiServer, choice: str, expect: str) -> dict[str, Any]:
    """Run the DAG while a person answers its approval request with `choice`; returns the request they saw."""
    approver = Approver(server, f"entra_to_frankli__{tenant.name}", choice)
    approver.start()
    tenant.run(expect=expect)
    approver.join(timeout=60)
    if approver.error:
        raise approver.error
    return approver.request or {}


def archived_by_sync(tenant: Any) -> set[str]:
    return {k for k, u in tenant.users().items() if u["status"] == "archived" and u["archived_by"] == "directory_sync"}


def test_an_approved_mass_archive_archives_exactly_the_users_shown(make_tenant: Any, api_server: ui.ApiServer) -> None:
    tenant, leavers = guard_trips(make_tenant)
    request = run_answered(tenant, api_server, "Approve", expect="success")

    assert request["task_instance"]["task_id"] == "approve_archives"
    assert request["options"] == ["Approve", "Reject"]
    assert f"Users to archive: **{LEAVERS}**" in request["body"] and "Limit: 2" in request["body"]
    assert "(disabled)" in request["body"], "the request lists who would be archived, and why"
    assert archived_by_sync(tenant) == leavers
    guard = tenant.report()["deletion_guard"]
    assert guard["blocked"] is False and guard["approval"]["by"] == ui.USERNAME
    assert guard["message"].startswith(f"{LEAVERS} archives approved by {ui.USERNAME}")


def test_a_rejected_mass_archive_archives_nobody_and_fails_the_run_saying_who(
    make_tenant: Any, api_server: ui.ApiServer
) -> None:
    tenant, _ = guard_trips(make_tenant)
    run_answered(tenant, api_server, "Reject", expect="failed")

    assert archived_by_sync(tenant) == set(), "a rejected archive archived users"
    report = tenant.report()
    assert report["failure"]["task"] == "load_archives" and report["failure"]["stopped"] is True
    assert f"they were rejected by {ui.USERNAME}" in report["failure"]["message"]
    assert "allow_mass_archive" in report["failure"]["message"]
