"""`make demo`: day 1 and day 2 of a generated tenant, synced by the real DAG on embedded defaults.

It starts the local Graph emulator with a demo tenant, initialises an Airflow
metadata DB (SQLite) under .demo/, runs `airflow dags test` for day 1, applies
the emulator's scripted day-2 changes, runs day 2, and prints each run's
summary. The Frankli database is a SQLite file: .demo/frankli.db.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
BIN = Path(sys.executable).parent
TENANT = "contoso"
DAG_ID = f"entra_to_frankli__{TENANT}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_env(graph_base_url: str, frankli_db: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    msgraph = {
        "conn_type": "msgraph",
        "login": "demo-client-id",
        "password": "demo-client-secret",
        "extra": {"tenant_id": "demo-tenant", "base_url": graph_base_url, "allowed_hosts": "graph.microsoft.com"},
    }
    env.update(
        {
            "AIRFLOW_HOME": str(DEMO / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "FRANKLI_SYNC_CONFIG": str(REPO / "config" / "tenants.demo.yaml"),
            "AIRFLOW_CONN_MSGRAPH_CONTOSO": json.dumps(msgraph),
            "AIRFLOW_CONN_FRANKLI_CONTOSO": json.dumps(
                {"conn_type": "generic", "extra": {"sqlalchemy_url": f"sqlite:///{frankli_db}"}}
            ),
            "FRANKLI_SYNC_TASK_RETRIES": "0",
            "GX_ANALYTICS_ENABLED": "False",
        }
    )
    return env


def start_emulator(users: int, seed: int) -> tuple[subprocess.Popen, str]:
    args = ["--users", str(users), "--seed", str(seed), "--port", str(free_port())]
    process, line = start_server("graph_emulator", args, "the Graph emulator")
    return process, line.split("listening on ", 1)[1].split(" ", 1)[0]


def start_server(module: str, args: list[str], what: str) -> tuple[subprocess.Popen, str]:
    """`python -m <module> <args>` in a process of its own; its first line, which says where it listens."""
    process = subprocess.Popen([str(BIN / "python"), "-m", module, *args], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if "listening on" not in line:
        process.kill()
        raise SystemExit(f"{what} did not start: {line!r}")
    print(f"· {line}")
    return process, line


def airflow(args: list[str], env: dict[str, str], log: Path) -> float:
    started = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run(
            [str(BIN / "airflow"), *args], env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    if result.returncode != 0:
        tail = log.read_text()[-4000:]
        raise SystemExit(f"`airflow {' '.join(args)}` failed (exit {result.returncode}); log {log}:\n{tail}")
    return time.monotonic() - started


def latest_report(known: set[Path]) -> Path:
    reports = set((REPO / "reports" / TENANT).glob("*/report.json")) - known
    if len(reports) != 1:
        raise SystemExit(f"expected one new run report, found {sorted(reports)}")
    return reports.pop()


WORDS = {  # what each count means to an admin, and what to do about it
    "create": "new Frankli users (uninvited: invite them from Frankli)",
    "update": "users whose details changed in Entra",
    "link": "Frankli users matched to their Entra account",
    "restore": "users back in Entra, restored in Frankli",
    "archive": "users disabled or deleted in Entra, archived in Frankli",
    "quarantine": "users held back: fix them in Entra (reasons below)",
}
MANAGER_PROBLEMS = {
    "not_in_source": "manager not among the synced users",
    "quarantined": "manager held back by validation",
    "disabled": "manager disabled in Entra",
    "deleted": "manager deleted in Entra",
    "out_of_scope": "manager outside the sync scope",
    "conflict": "manager in conflict",
    "archived_in_frankli": "manager archived by a Frankli admin",
}


def print_summary(day: str, report_path: Path, seconds: float) -> dict:
    report = json.loads(report_path.read_text())
    counts = report["counts"]
    print(f"\n=== {day}: run {report['run_id']} · {report['status']} in {seconds:.1f} s ===")
    for action, words in WORDS.items():
        print(f"  {counts.get(action, 0):>7}  {words}")
    reasons: dict[str, int] = {}
    for user in report["quarantined"]:
        for reason in user["reasons"]:
            reasons[reason["expectation"]] = reasons.get(reason["expectation"], 0) + 1
    if reasons:
        print("  held back because: " + ", ".join(f"{k} ({v})" for k, v in sorted(reasons.items())))
    problems: dict[str, int] = {}
    for problem in report["manager_problems"]:
        problems[problem["reason"]] = problems.get(problem["reason"], 0) + 1
    if problems:
        listed = ", ".join(f"{MANAGER_PROBLEMS.get(k, k)} ({v})" for k, v in sorted(problems.items()))
        print(f"  {sum(problems.values()):>7}  users whose Entra manager could not be set in Frankli: {listed}; "
              "fix the manager in Entra (the report lists each user)")  # fmt: skip
    print(f"  deletion guard:    {(report['deletion_guard'] or {}).get('message', 'not evaluated')}")
    print(f"  run report:        {report_path.parent / 'index.html'}")
    basis = report.get("basis") or {}
    print(f"  planned:           {basis.get('mode', 'n/a')} ({basis.get('reason', '')})")
    docs = report["validation"]["docs_index"] or "none (incremental runs validate their participants without Data Docs)"
    print(f"  validation report: {docs}")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=42)
    options = parser.parse_args()

    shutil.rmtree(DEMO, ignore_errors=True)
    shutil.rmtree(REPO / "reports" / TENANT, ignore_errors=True)
    (DEMO / "airflow").mkdir(parents=True)
    emulator, base_url = start_emulator(options.users, options.seed)
    try:
        env = demo_env(base_url, DEMO / "frankli.db")
        print("· initialising the Airflow metadata DB (SQLite) …")
        airflow(["db", "migrate"], env, DEMO / "db-migrate.log")

        print(f"· day 1: airflow dags test {DAG_ID}")
        seconds = airflow(["dags", "test", DAG_ID], env, DEMO / "day1.log")
        day1 = print_summary("day 1", latest_report(set()), seconds)

        request = urllib.request.Request(base_url.replace("/v1.0", "/_emulator/day2"), data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            changes = json.loads(response.read())
        print(
            "\n· day 2 changes in Entra: "
            + ", ".join(f"{k} {len(v)}" for k, v in changes.items() if isinstance(v, list))
        )
        known = set((REPO / "reports" / TENANT).glob("*/report.json"))
        print(f"· day 2: airflow dags test {DAG_ID}")
        seconds = airflow(["dags", "test", DAG_ID], env, DEMO / "day2.log")
        day2 = print_summary("day 2", latest_report(known), seconds)
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)

    missing = [a for a in ("create", "update", "archive", "quarantine") if not day2["counts"].get(a)]
    if missing or not day1["counts"].get("create"):
        print(f"\nday 2 should create, update, archive and quarantine users; none for: {missing}")
        return 1
    print(f"\nFrankli database: {DEMO / 'frankli.db'} · Airflow logs: {DEMO}/day1.log, day2.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
