"""How each task of a run ended, and why the run failed, in words an admin acts on.

A task that raises keeps its exception's message beside the run's snapshot (`failure_document`,
saved by `pipeline` as the ``failure:<task>`` document); the report task reads them back with
the tasks' results and Airflow's task states and tells apart a task that failed (with its
message: the root cause), one that never ran because an upstream task failed, and one that was
not run at all (`task_outcomes`). A task that succeeded after a failed try is a success: its
old failure document is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from frankli_sync.errors import SyncStopped

MESSAGE_LIMIT = 4000
SUCCESS, FAILED, UPSTREAM_FAILED, NOT_RUN = "success", "failed", "upstream_failed", "not_run"
_AIRFLOW_STATES = {"success": SUCCESS, "failed": FAILED, "upstream_failed": UPSTREAM_FAILED}


def failure_kind(task: str) -> str:
    """The staging document that holds the task's last failure."""
    return f"failure:{task}"


def failure_document(task: str, error: BaseException) -> dict[str, Any]:
    """What the report shows of a task's exception: its message (secrets Airflow knows of masked)."""
    message = str(error) if isinstance(error, SyncStopped) else f"{type(error).__name__}: {error}"
    message = _redacted(message)
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 1] + "…"
    return {
        "task": task,
        "error_type": type(error).__name__,
        "message": message,
        "stopped": isinstance(error, SyncStopped),  # a safety stop, not a fault: retrying cannot help
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def task_outcomes(
    tasks: Sequence[str],
    results: Mapping[str, Any],
    failures: Mapping[str, Mapping[str, Any] | None],
    states: Mapping[str, str | None] | None = None,
) -> list[dict[str, Any]]:
    """Each task's outcome: state (success / failed / upstream_failed / not_run) and, when failed, why.

    `results`: the tasks' return values (None: did not succeed); `failures`: their failure
    documents; `states`: Airflow's task states when the caller has them (otherwise inferred:
    after a failed task, the later ones did not run because of it).
    """
    outcomes: list[dict[str, Any]] = []
    upstream_broken = False
    for task in tasks:
        state = _state(task, results, failures, states, upstream_broken)
        failure = failures.get(task) if state == FAILED else None
        outcomes.append(
            {
                "task": task,
                "state": state,
                "message": (failure or {}).get("message")
                or ("no error was recorded: the task process ended without one (killed, or out of memory); "
                    "see the task's log in Airflow" if state == FAILED else None),
                "stopped": bool((failure or {}).get("stopped")),
            }
        )  # fmt: skip
        upstream_broken = upstream_broken or state in (FAILED, UPSTREAM_FAILED)
    return outcomes


def root_cause(outcomes: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The first failed task and its message: what the admin must act on."""
    return next((dict(o) for o in outcomes if o["state"] == FAILED), None)


def _state(
    task: str,
    results: Mapping[str, Any],
    failures: Mapping[str, Any],
    states: Mapping[str, str | None] | None,
    upstream_broken: bool,
) -> str:
    if task in results and results[task] is not None:
        return SUCCESS
    if failures.get(task):  # its own failure (or the approval's outcome, which the report maps onto it)
        return FAILED
    known = (states or {}).get(task)
    if known in _AIRFLOW_STATES:
        return _AIRFLOW_STATES[known]
    if known is not None:  # skipped, removed...: Airflow did not run it
        return NOT_RUN
    if upstream_broken:
        return UPSTREAM_FAILED
    return NOT_RUN


def _redacted(message: str) -> str:
    try:
        from airflow.sdk._shared.secrets_masker import redact
    except ImportError:  # outside Airflow (a library use): nothing registered to mask
        return message
    return str(redact(message))
