"""An `only_user` run (on-demand provisioning of one user) timed end to end on the real Celery topology.

Entra ID's own on-demand provisioning answers in under 30 s; this measures ours through the same stack
as production: api-server + scheduler + dag-processor + a Celery worker (Redis broker, PostgreSQL
metadata, staging and Frankli), brought up from processes by tests/topology/topology_stack.py with one
Graph emulator tenant and no schedule (only triggered runs exist).

1. the stack comes up in a temporary directory; the tenant's DAG is parsed, unpaused and triggered once:
   the initial sync (timed as context, not the figure to compare);
2. ~1% of the directory churns (the emulator's `/_emulator/day2`, seed 7, share 0.01);
3. `{"only_user": <UPN>}` is triggered for a user whose job title changed, timed from the trigger API
   call returning to the run seen in state success (polled every 0.5 s), with the run's own
   start → end, its queued → start and every task's duration; the user's role in Frankli must then
   be the new title (and must not have been before), or the benchmark fails;
4. `--repeat K` times again for other users whose title changed.

    .venv/bin/python scripts/bench_topology.py --users 100000
    .venv/bin/python scripts/bench_topology.py --users 2000 --repeat 2 --results /tmp/topo.md --label try

Needs PostgreSQL on 127.0.0.1:5432 (trust) and Redis on 127.0.0.1:6379 (FRANKLI_TEST_PG_HOST /
FRANKLI_TEST_REDIS_HOST). Prints one JSON line per measured run and appends a row per run to the
section "only_user on the Celery topology" of benchmarks/results.md (created if missing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "topology"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import REPO, commit, machine
from topology_stack import PG_HOST, CeleryStack, Tenant, check_services

RESULTS = REPO / "benchmarks" / "results.md"
TENANT = "bench"
SEED = 1
CHURN = {"seed": 7, "share": 0.01}
POLL_SECONDS = 0.5
ENTRA = "< 30 s"
HEADING = "## only_user on the Celery topology (scripts/bench_topology.py)"
COLUMNS = ("date", "label", "commit", "machine", "load", "users", "trigger→success s", "run start→end s",
           "queued→start s", "per task s", "Entra's on-demand")  # fmt: skip
SECTION = (
    f"{HEADING}\n\n"
    "An `only_user` run (on-demand provisioning of one user whose job title changed, after ~1% churn in the\n"
    "directory) through the real topology: api-server + scheduler + dag-processor + one Celery worker\n"
    "(concurrency 2), Redis broker, PostgreSQL metadata, staging and Frankli, the Graph emulator as a process\n"
    "of its own. trigger→success = from the trigger API call returning to the run seen in state success\n"
    "(polled every 0.5 s); run start→end and queued→start are the run's own dates; per task = each task\n"
    "instance's duration (the rest of start→end is the scheduler and Celery handing over between tasks). The\n"
    "user's role in Frankli is checked to be the new title. The initial sync before it is not timed in the\n"
    'only_user rows: it has a row of its own (label "initial sync") as context. Entra ID provisions a user on\n'
    "demand in under 30 s.\n\n" + "| " + " | ".join(COLUMNS) + " |\n" + "|---" * len(COLUMNS) + "|\n"
)


# --------------------------------------------------------------------------- timeouts that scale with the tenant


def initial_sync_timeout(users: int) -> float:
    """The first run through Celery: ~10 min at 2k users is plenty, ~45 min at 100k."""
    return 600 + users * 0.02


def only_user_timeout(users: int) -> float:
    return 300 + users * 0.003


# --------------------------------------------------------------------------- the emulator and Frankli


def emulator_user(tenant: Tenant, object_id: str) -> dict[str, Any]:
    """The user's UPN and job title as the Graph emulator serves them now."""
    url = f"http://127.0.0.1:{tenant.port}/v1.0/users/{object_id}?$select=userPrincipalName,jobTitle"
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


def frankli_title(tenant: Tenant, object_id: str) -> str | None:
    """The name of the role the user has in the tenant's Frankli database (None: no role or no user)."""
    import psycopg

    with psycopg.connect(f"postgresql://postgres@{PG_HOST}/{tenant.database}") as connection:
        row = connection.execute(
            "SELECT r.name FROM users u LEFT JOIN roles r ON r.id = u.role_id WHERE u.external_id = %s",
            (object_id,),
        ).fetchone()
    return row[0] if row else None


def audit_actions(tenant: Tenant, run_id: str) -> dict[str, int]:
    """What the run wrote to Frankli's audit, by action."""
    import psycopg

    with psycopg.connect(f"postgresql://postgres@{PG_HOST}/{tenant.database}") as connection:
        rows = connection.execute(
            "SELECT action, count(*) FROM sync_audit WHERE run_id = %s GROUP BY action ORDER BY action", (run_id,)
        ).fetchall()
    return {action: count for action, count in rows}


def title_key(title: str | None) -> str | None:
    """Roles match by trimmed, case-folded name (a mangled title may reuse an existing role's spelling)."""
    return (title.strip().casefold() or None) if title else None


# --------------------------------------------------------------------------- runs


def parse_date(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def seconds(start: str | None, end: str | None) -> float | None:
    first, last = parse_date(start), parse_date(end)
    return (last - first).total_seconds() if first and last else None


def dag_run(stack: CeleryStack, dag_id: str, run_id: str) -> dict[str, Any]:
    return stack.api("GET", f"/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}")


def finished(stack: CeleryStack, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The run once it succeeded; None while it is not done; raises with the logs when it failed."""
    run = dag_run(stack, dag_id, run_id)
    if run["state"] == "failed":
        raise RuntimeError(f"{dag_id} run {run_id} failed:\n{stack.failure_details(dag_id, run)}")
    return run if run["state"] == "success" else None


def timed_run(stack: CeleryStack, dag_id: str, conf: dict[str, Any], timeout: float) -> tuple[dict[str, Any], float]:
    """Trigger a run; the run once it succeeded and the wall seconds from the trigger call returning to then."""
    run_id = stack.trigger(dag_id, conf)
    triggered = time.monotonic()
    run = stack.wait_for(
        lambda: finished(stack, dag_id, run_id), timeout=timeout, what=f"run {run_id} to succeed", interval=POLL_SECONDS
    )
    return run, time.monotonic() - triggered


def task_timings(stack: CeleryStack, dag_id: str, run: dict[str, Any]) -> list[dict[str, Any]]:
    """Each task instance in the order it started: its duration and the wait since the previous one ended."""
    instances = sorted(stack.task_instances(dag_id, run["dag_run_id"]), key=lambda ti: ti["start_date"] or "~")
    timings, previous_end = [], run["start_date"]
    for ti in instances:
        timings.append(
            {
                "task": ti["task_id"],
                "duration_s": ti["duration"],
                "wait_s": seconds(previous_end, ti["start_date"]),
                "try": ti["try_number"],
            }
        )
        previous_end = ti["end_date"] or previous_end
    return timings


def measurement(
    stack: CeleryStack, dag_id: str, kind: str, run: dict[str, Any], wall: float, users: int
) -> dict[str, Any]:
    tasks = task_timings(stack, dag_id, run)
    return {
        "kind": kind,
        "users": users,
        "run_id": run["dag_run_id"],
        "trigger_to_success_s": round(wall, 2),
        "run_start_end_s": _round(seconds(run["start_date"], run["end_date"])),
        "queued_start_s": _round(seconds(run["queued_at"], run["start_date"])),
        "tasks_s": {t["task"]: _round(t["duration_s"]) for t in tasks},
        "task_durations_sum_s": _round(sum(t["duration_s"] or 0 for t in tasks)),
        "between_tasks_s": _round(sum(t["wait_s"] or 0 for t in tasks)),
        "task_waits_s": {t["task"]: _round(t["wait_s"]) for t in tasks},
        "retried": [t["task"] for t in tasks if (t["try"] or 1) > 1],  # a retry (5 s delay here) inflates the run
        "load": round(os.getloadavg()[0], 2),
    }


def _round(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


# --------------------------------------------------------------------------- the benchmark


def bring_up_dag(stack: CeleryStack, dag_id: str) -> None:
    stack.wait_for(lambda: dag_id in stack.parsed_dags(), timeout=300, what=f"{dag_id} parsed")
    stack.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})


def initial_sync(stack: CeleryStack, tenant: Tenant) -> dict[str, Any]:
    run, wall = timed_run(stack, tenant.dag_id, {}, initial_sync_timeout(tenant.users))
    return measurement(stack, tenant.dag_id, "initial_sync", run, wall, tenant.users)


def only_user(stack: CeleryStack, tenant: Tenant, object_id: str) -> dict[str, Any]:
    """Time an only_user run of one title-changed user; fail unless Frankli then has the new title."""
    user = emulator_user(tenant, object_id)
    upn, title = user["userPrincipalName"], user["jobTitle"]
    before = frankli_title(tenant, object_id)
    if title_key(before) == title_key(title):
        raise RuntimeError(f"{upn} already has the title {title!r} in Frankli before its only_user run")
    run, wall = timed_run(stack, tenant.dag_id, {"only_user": upn}, only_user_timeout(tenant.users))
    row = measurement(stack, tenant.dag_id, "only_user", run, wall, tenant.users)
    after = frankli_title(tenant, object_id)
    if title_key(after) != title_key(title):
        raise RuntimeError(f"only_user run {run['dag_run_id']}: Frankli has {after!r} for {upn}, Entra {title!r}")
    return {
        **row,
        "upn": upn,
        "title": {"before": before, "after": after},
        "audit": audit_actions(tenant, run["dag_run_id"]),
    }


def benchmark(users: int, repeat: int, home: Path) -> list[dict[str, Any]]:
    tenant = Tenant(TENANT, users=users, seed=SEED)
    stack = CeleryStack(home=home, tenants=[tenant], schedule=None)
    rows = []
    with stack.running():
        print(f"· stack up in {time.monotonic() - stack.started:.0f} s (home {home})", flush=True)
        bring_up_dag(stack, tenant.dag_id)
        rows.append(report(initial_sync(stack, tenant)))
        changed = stack.emulator_post(tenant, "/_emulator/day2", CHURN)["title_changed"]
        if len(changed) < repeat + 1:
            raise SystemExit(f"only {len(changed)} users changed title; --repeat {repeat} needs {repeat + 1}")
        for object_id in changed[: repeat + 1]:
            rows.append(report(only_user(stack, tenant, object_id)))
    return rows


def report(row: dict[str, Any]) -> dict[str, Any]:
    print(json.dumps(row), flush=True)
    return row


@contextmanager
def stack_home(keep: bool) -> Iterator[Path]:
    """A fresh directory for the stack's AIRFLOW_HOME (it must not exist yet); removed unless `keep`."""
    work = Path(tempfile.mkdtemp(prefix="frankli-bench-topology-"))
    try:
        yield work / "airflow"
    finally:
        if keep:
            print(f"· kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- the table


def table_row(row: dict[str, Any], label: str, stamp: str, ref: str, where: str) -> str:
    initial = row["kind"] == "initial_sync"
    label = ", ".join(part for part in (label, "initial sync" if initial else "") if part)
    tasks = ", ".join(f"{task} {value:.1f}" for task, value in row["tasks_s"].items() if value is not None)
    cells = (
        stamp, label, ref, where, f"{row['load']:.2f}", f"{row['users']:,}", f"{row['trigger_to_success_s']:.1f}",
        _cell(row["run_start_end_s"]), _cell(row["queued_start_s"]), tasks, "" if initial else ENTRA,
    )  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def _cell(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else ""


def with_rows(text: str, lines: list[str]) -> str:
    """`text` with `lines` after the last row of this benchmark's table; the section added if missing.

    A new section goes before `make bench`'s (scripts/benchmark.py appends its rows at the end of the file).
    """
    if HEADING not in text:
        anchor = text.find("\n## `make bench`")
        text = (
            text.rstrip("\n") + "\n\n" + SECTION
            if anchor < 0
            else f"{text[: anchor + 1]}{SECTION}\n{text[anchor + 1 :]}"
        )
    head, _, tail = text.partition(HEADING)
    rest = tail.splitlines(keepends=True)
    table = [i for i, line in enumerate(rest) if line.startswith("|")]
    end = next(i for i in range(table[0], len(rest) + 1) if i == len(rest) or not rest[i].startswith("|"))
    if end > 0 and not rest[end - 1].endswith("\n"):
        rest[end - 1] += "\n"
    rest[end:end] = [line + "\n" for line in lines]
    return head + HEADING + "".join(rest)


def write_results(rows: list[dict[str, Any]], label: str, results: Path) -> None:
    stamp, ref, where = f"{datetime.now(UTC):%Y-%m-%d %H:%M}", commit(), machine()
    lines = [table_row(row, label, stamp, ref, where) for row in rows]
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    results.write_text(with_rows(text, lines))
    print("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000, help="the tenant's size (default 100,000)")
    parser.add_argument("--repeat", type=int, default=1, help="only_user runs of other users after the first")
    parser.add_argument("--label", default="", help="a word for the table, e.g. before / after")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the table to append to")
    parser.add_argument("--keep", action="store_true", help="keep the stack's home (logs) after the run")
    options = parser.parse_args()
    try:
        check_services()
    except pytest.skip.Exception as unavailable:  # check_services skips a test when a service is missing
        raise SystemExit(str(unavailable)) from None
    started = time.monotonic()
    with stack_home(options.keep) as home:
        rows = benchmark(options.users, options.repeat, home)
    write_results(rows, options.label, options.results)
    print(f"results appended to {options.results}; {time.monotonic() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
