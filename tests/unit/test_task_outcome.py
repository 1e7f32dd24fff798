"""Issue #12: why a run failed, task by task (`task_outcome`)."""

from __future__ import annotations

import pytest
from frankli_sync.errors import SyncStopped
from frankli_sync.task_outcome import MESSAGE_LIMIT, failure_document, root_cause, task_outcomes

pytestmark = pytest.mark.unit

TASKS = ("extract", "validate", "transform", "load_upserts", "load_archives")


def test_the_failed_task_gives_the_cause_and_the_later_ones_did_not_run_because_of_it() -> None:
    failure = failure_document("extract", ConnectionError("graph.example: connection refused"))
    outcomes = task_outcomes(TASKS, dict.fromkeys(TASKS), {"extract": failure})
    assert [o["state"] for o in outcomes] == ["failed"] + ["upstream_failed"] * 4
    cause = root_cause(outcomes)
    assert cause is not None and cause["task"] == "extract"
    assert cause["message"] == "ConnectionError: graph.example: connection refused"


def test_a_safety_stop_reads_as_its_own_message() -> None:
    stop = failure_document("load_archives", SyncStopped("deletion guard: this run would archive 900 users"))
    assert stop["message"] == "deletion guard: this run would archive 900 users" and stop["stopped"] is True
    results = {"extract": {}, "validate": {}, "transform": {}, "load_upserts": {}, "load_archives": None}
    outcomes = task_outcomes(TASKS, results, {"load_archives": stop})
    assert [o["state"] for o in outcomes] == ["success"] * 4 + ["failed"]
    assert root_cause(outcomes)["stopped"] is True


def test_a_task_that_succeeded_on_a_later_try_is_a_success_despite_its_old_failure() -> None:
    old = failure_document("extract", TimeoutError("read timed out"))
    outcomes = task_outcomes(TASKS, {task: {} for task in TASKS}, {"extract": old})
    assert {o["state"] for o in outcomes} == {"success"} and root_cause(outcomes) is None


def test_airflow_states_tell_upstream_failed_from_not_run_and_a_killed_task_says_so() -> None:
    states = {"extract": "success", "validate": "failed", "transform": "upstream_failed", "load_upserts": "skipped",
              "load_archives": None}  # fmt: skip
    results = {"extract": {"users": 3}, "validate": None, "transform": None, "load_upserts": None,
               "load_archives": None}  # fmt: skip
    outcomes = task_outcomes(TASKS, results, {}, states)
    assert [o["state"] for o in outcomes] == ["success", "failed", "upstream_failed", "not_run", "upstream_failed"]
    assert "no error was recorded" in outcomes[1]["message"] and "task's log" in outcomes[1]["message"]


def test_nothing_failed_nothing_ran() -> None:
    outcomes = task_outcomes(TASKS, dict.fromkeys(TASKS), {})
    assert [o["state"] for o in outcomes] == ["not_run"] * 5 and root_cause(outcomes) is None


def test_a_long_message_is_cut() -> None:
    document = failure_document("transform", ValueError("x" * 10_000))
    assert len(document["message"]) == MESSAGE_LIMIT and document["message"].endswith("…")
