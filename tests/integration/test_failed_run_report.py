"""Issue #12: a failed run's page says why, task by task, and shows "not evaluated" instead of zeros.

Before, a failed run's page said "These tasks did not succeed: extract, validate, …" without the
cause, counted tasks that never ran as failed and showed 0 applied actions. A run whose Graph
listing ends early (the extract refuses the short read) and one stopped by the deletion guard
are run through the real DAG; their report must carry the failing task's own message.
"""

from __future__ import annotations

from html import unescape

import pytest
from frankli_sync.report import run_directory
from graph_emulator import FaultPlan, FaultRule

pytestmark = pytest.mark.integration

ENDS_EARLY = FaultPlan([FaultRule(path_prefix="/v1.0/users/delta", ends_early=True, ordinals=[2])])


def page_of(tenant) -> str:
    return unescape((run_directory(tenant.reports_dir, tenant.name, tenant.runs[-1].run_id) / "index.html").read_text())


def test_a_failed_extract_is_the_cause_and_the_rest_did_not_run(make_tenant) -> None:
    tenant = make_tenant(users=300, seed=3, source={"kind": "graph", "conn_id": "msgraph_acme", "page_size": 100})
    tenant.emulator.faults = ENDS_EARLY
    tenant.run(expect="failed")

    report = tenant.report()
    assert report["failure"]["task"] == "extract"
    assert "returned 100 users but Graph reports" in report["failure"]["message"]
    assert [(t["task"], t["state"]) for t in report["tasks"]] == [
        ("extract", "failed"),
        ("validate", "upstream_failed"),
        ("transform", "upstream_failed"),
        ("load_upserts", "upstream_failed"),
        ("load_archives", "upstream_failed"),
    ]
    page = page_of(tenant)
    assert "extract failed:" in page and "returned 100 users but Graph reports" in page
    assert page.count("not run: an earlier task failed") == 4
    assert "not evaluated" in page and "Not evaluated: the validate task did not run" in page


def test_a_tripped_deletion_guard_is_shown_as_a_safety_stop_with_its_message(make_tenant) -> None:
    tenant = make_tenant(users=200, seed=8, thresholds={"max_archive_count": 2, "max_archive_share": 0.5})
    tenant.run()
    for user in tenant.directory.users_sorted()[:40]:
        tenant.directory.update_user(user["id"], accountEnabled=False)
    tenant.run(expect="failed")

    failure = tenant.report()["failure"]
    assert failure["task"] == "load_archives" and failure["stopped"] is True
    assert "deletion guard: this run would archive" in failure["message"]
    page = page_of(tenant)
    assert "load_archives failed (a safety stop):" in page and "more than the limit of 2" in page
    states = {t["task"]: t["state"] for t in tenant.report()["tasks"]}
    assert states["load_upserts"] == "success" and states["load_archives"] == "failed"
