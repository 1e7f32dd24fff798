"""`make bench`: what a sync costs, per task and end to end, against the floor and Airflow's own start-up.

For each tenant size it starts the Graph emulator (a separate process) and measures, on each
Frankli backend (SQLite: staging and Frankli on SQLite files; PostgreSQL: both in fresh schemas):

- initial: the first sync of the tenant (everything created);
- no_change: the next run, nothing changed in Entra (a delta read);
- only_user: on-demand provisioning of one user whose title changed in Entra;
- delta_1pct: a run after ~1% of the tenant changed (hires, moves, clears, disables, deletes).

Each task (extract, validate, transform, load_upserts, load_archives, report) runs through the DAG's
task functions in a process of its own, as an Airflow worker runs it, so every figure includes the
project's imports (pandas, SQLAlchemy, GX where a task loads it); each row's peak RSS is the largest of
its own task processes. Airflow's part (scheduling, the task runner and its import, ~1.7 s a task
here, which a worker has paid before it runs a task) is not in these rows: it is measured once as
`airflow dags test` of a one-task DAG, so the project's share is visible. The floor is what no sync
can beat: every page of ``/users/delta`` fetched from the emulator and its raw rows COPY'd into
PostgreSQL, nothing else.

    .venv/bin/python scripts/benchmark.py                          # 10k, 100k, 1M; SQLite and PostgreSQL
    .venv/bin/python scripts/benchmark.py --users 10000 --backends postgres --label after
    .venv/bin/python scripts/benchmark.py --users 10000 --backends scim --scenarios initial delta_1pct --no-airflow

Rows are appended to benchmarks/results.md with the date, the commit, the machine, its cores and its
load average when the row was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import BIN, REPO, start_emulator, start_server

RESULTS = REPO / "benchmarks" / "results.md"
TENANT = "bench"
ORGANISATION = "Bench Ltd"
TASKS = ("extract", "validate", "transform", "load_upserts", "load_archives", "report")
SCENARIOS = ("initial", "no_change", "only_user", "delta_1pct")
POSTGRES = os.environ.get("FRANKLI_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


# --------------------------------------------------------------------------- child processes


def run_task(task: str, run_id: str, params: str) -> None:
    """In a child: one task function, as a worker runs it; prints seconds and this process's peak RSS.

    The clock starts after Airflow's task runner is imported: a worker's task process has it loaded
    (with Airflow's settings and secrets masking) before it runs a task; that share is Airflow's start-up.
    """
    airflow_started = time.monotonic()
    import airflow.sdk.execution_time.task_runner  # noqa: F401

    started = time.monotonic()
    from frankli_sync import pipeline

    profile_dir = os.environ.get("BENCH_PROFILE_DIR")
    if profile_dir:  # --profile: where each task's time goes (cProfile slows the task; these rows say so)
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(getattr(pipeline, task), TENANT, run_id, json.loads(params))
        profiler.dump_stats(Path(profile_dir) / f"{run_id}.{task}.prof")
    else:
        result = getattr(pipeline, task)(TENANT, run_id, json.loads(params))
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    airflow_seconds = started - airflow_started
    print(json.dumps({"task": task, "seconds": seconds, "airflow_import_s": airflow_seconds, "peak_rss_mib": peak,
                      "result": _small(result)}))  # fmt: skip


def run_floor(base_url: str, postgres_url: str) -> None:
    """In a child: fetch every /users/delta page and COPY the raw rows into PostgreSQL, nothing else."""
    import httpx
    import psycopg
    from frankli_sync.sources.graph import delta_query

    started = time.monotonic()
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    users = 0
    with psycopg.connect(dsn) as connection, httpx.Client(timeout=300) as client:
        connection.execute("CREATE TEMPORARY TABLE floor_users (id text, body text)")
        url: str | None = f"{base_url}/users/delta"
        params: dict[str, str] | None = delta_query(999)
        with connection.cursor() as cursor, cursor.copy("COPY floor_users (id, body) FROM STDIN") as copy:
            while url:
                page = client.get(url, params=params).json()
                params = None
                for user in page["value"]:
                    copy.write_row((user["id"], json.dumps(user)))
                users += len(page["value"])
                url = page.get("@odata.nextLink")
        connection.commit()
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps({"task": "floor", "seconds": seconds, "peak_rss_mib": peak, "result": {"users": users}}))


def _small(result: Any) -> Any:
    return (
        {k: v for k, v in result.items() if isinstance(v, int | float | str | bool)}
        if isinstance(result, dict)
        else None
    )


def child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    completed = subprocess.run(
        [str(BIN / "python"), __file__, "--child", *args], env=env, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise SystemExit(f"benchmark child {args[:2]} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- one backend of one size


class Bench:
    def __init__(self, users: int, backend: str, base_url: str, work: Path, scim: dict[str, Any] | None = None) -> None:
        self.users, self.backend, self.base_url, self.work = users, backend, base_url, work
        self.runs = 0
        self.scim = scim  # the SCIM target's server: {"url", "token", "concurrency"}
        # Schemas of this process only (two benchmarks may run at once), dropped by `close`.
        self.schemas = [f"bench_frankli_{os.getpid()}", f"bench_staging_{os.getpid()}"]
        if backend in ("postgres", "scim"):  # a SCIM target's ledger is staging: on PostgreSQL here
            frankli = fresh_postgres_schema(POSTGRES, self.schemas[0])
            staging = fresh_postgres_schema(POSTGRES, self.schemas[1])
        else:
            frankli, staging = f"sqlite:///{work / 'frankli.db'}", f"sqlite:///{work / 'staging.db'}"
        config = {
            "reports_dir": str(work / "reports"),
            "staging_conn_id": "bench_staging",
            "tenants": [
                {
                    "name": TENANT,
                    "schedule": None,
                    "source": {"kind": "graph", "conn_id": "msgraph_bench"},
                    "target": {"kind": "database", "conn_id": "frankli_bench", "organisation": ORGANISATION},
                    "scope": {"exclude_guests": True},
                    # The 1% churn archives ~0.2% of the tenant; keep the guard out of the measurement.
                    "thresholds": {"max_archive_count": 100_000_000, "max_archive_share": 1.0},
                }
            ],
        }
        if scim:
            config["tenants"][0]["target"] = {"kind": "scim", "conn_id": "frankli_bench", "organisation": ORGANISATION,
                                              "concurrency": scim["concurrency"]}  # fmt: skip
        (work / "tenants.yaml").write_text(json.dumps(config))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FRANKLI_"))}
        self.env.update(
            {
                "AIRFLOW_HOME": str(work / "airflow"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "FRANKLI_SYNC_CONFIG": str(work / "tenants.yaml"),
                "GX_ANALYTICS_ENABLED": "False",
                "AIRFLOW_CONN_MSGRAPH_BENCH": json.dumps(
                    {
                        "conn_type": "msgraph",
                        "login": "bench-client",
                        "password": "bench-secret",
                        "extra": {
                            "tenant_id": "bench-tenant",
                            "base_url": base_url,
                            "allowed_hosts": "graph.microsoft.com",
                        },
                    }
                ),
                "AIRFLOW_CONN_FRANKLI_BENCH": json.dumps(
                    {"conn_type": "generic", "extra": {"sqlalchemy_url": frankli}}
                ),
                "AIRFLOW_CONN_BENCH_STAGING": json.dumps(
                    {"conn_type": "generic", "extra": {"sqlalchemy_url": staging}}
                ),
            }
        )
        if scim:
            connection = {"conn_type": "http", "host": scim["url"], "password": scim["token"]}
            self.env["AIRFLOW_CONN_FRANKLI_BENCH"] = json.dumps(connection)

    def run(self, scenario: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.runs += 1
        run_id = f"bench__{self.runs}_{scenario}"
        tasks: dict[str, float] = {}
        rss: dict[str, int] = {}  # each task's own peak, printed (the table keeps the largest)
        peak, airflow = 0, 0.0
        sent = self.scim_requests()
        for task in TASKS:
            measured = child(["task", task, run_id, json.dumps(params or {})], self.env)
            tasks[task] = measured["seconds"]
            airflow += measured["airflow_import_s"]
            peak = max(peak, measured["peak_rss_mib"])
            rss[task] = measured["peak_rss_mib"]
        wall = sum(tasks.values())  # the tasks one after the other, without Airflow's import before each
        row = {"users": self.users, "backend": self.backend, "scenario": scenario, "wall_s": wall, "tasks_s": tasks,
               "airflow_import_s": round(airflow, 1)}  # fmt: skip
        row.update(peak_rss_mib=peak, load=os.getloadavg()[0])
        if self.scim:
            after = self.scim_requests()
            row["requests"] = {m: n - sent.get(m, 0) for m, n in sorted(after.items()) if n - sent.get(m, 0)}
            row["concurrency"] = self.scim["concurrency"]
        print(json.dumps({**row, "tasks_s": {k: round(v, 1) for k, v in tasks.items()}, "wall_s": round(wall, 1),
                          "rss_mib": rss}))  # fmt: skip
        return row

    def scim_requests(self) -> dict[str, int]:
        """Requests the SCIM server answered so far, by method (its own counter, over HTTP)."""
        if not self.scim:
            return {}
        from scim_test_server import COUNTS_PATH

        url = self.scim["url"].rsplit("/v2", 1)[0] + COUNTS_PATH
        with urllib.request.urlopen(url, timeout=60) as response:
            return dict(json.load(response)["requests"])

    def churn(self, share: float, seed: int) -> dict[str, list[str]]:
        request = urllib.request.Request(
            self.base_url.replace("/v1.0", "/_emulator/day2"),
            data=json.dumps({"seed": seed, "share": share}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.load(response)

    def close(self) -> None:
        if self.backend in ("postgres", "scim"):
            from sqlalchemy import create_engine, text

            engine = create_engine(POSTGRES)
            with engine.begin() as connection:
                for schema in self.schemas:
                    connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            engine.dispose()

    def upn(self, object_id: str) -> str:
        with urllib.request.urlopen(f"{self.base_url}/users/{object_id}?$select=userPrincipalName", timeout=60) as r:
            return json.load(r)["userPrincipalName"]


def start_scim_server() -> tuple[subprocess.Popen, dict[str, Any]]:
    """The test SCIM server (scim2-server over uvicorn) in a process of its own; its URL and token."""
    process, line = start_server("scim_test_server", [], "the SCIM test server")
    url = line.split("listening on ", 1)[1].split(" ", 1)[0]
    return process, {"url": url, "token": line.rsplit("(token ", 1)[1].rstrip(")")}


def measure_size(
    users: int, backends: list[str], scenarios: list[str], seed: int, concurrency: int = 8
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for backend in backends:
        emulator, base_url = start_emulator(users, seed=seed)  # a fresh directory per backend
        closing: list[Bench] = []
        server, scim = start_scim_server() if backend == "scim" else (None, None)
        try:
            with tempfile.TemporaryDirectory(prefix="frankli-bench-") as work:
                scim = {**scim, "concurrency": concurrency} if scim else None
                bench = Bench(users, backend, base_url, Path(work), scim)
                closing.append(bench)
                if backend == backends[0]:
                    floor = child(["floor", base_url, POSTGRES], bench.env)
                    rows.append(
                        {"users": users, "backend": "PostgreSQL", "scenario": "floor", "wall_s": floor["seconds"],
                         "tasks_s": {}, "peak_rss_mib": floor["peak_rss_mib"], "load": os.getloadavg()[0]}
                    )  # fmt: skip
                    print(json.dumps({"floor": rows[-1]}))
                rows.append(bench.run("initial"))
                if "no_change" in scenarios:
                    rows.append(bench.run("no_change"))
                if {"only_user", "delta_1pct"} & set(scenarios):
                    changes = bench.churn(0.01, seed=7)
                    if "only_user" in scenarios:
                        rows.append(bench.run("only_user", {"only_user": bench.upn(changes["title_changed"][0])}))
                    if "delta_1pct" in scenarios:
                        row = bench.run("delta_1pct")
                        row["changed"] = sum(len(v) for v in changes.values() if isinstance(v, list))
                        rows.append(row)
        finally:
            for bench in closing:
                bench.close()
            for process in (emulator, server):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=60)
    return rows


def airflow_startup(work: Path) -> float:
    """Median wall time of `airflow dags test` of a one-task DAG: what Airflow costs before any project code."""
    dags = work / "dags"
    dags.mkdir(parents=True)
    (dags / "noop.py").write_text(
        "from datetime import datetime\nfrom airflow.sdk import dag, task\n\n\n"
        "@dag(schedule=None, start_date=datetime(2026, 1, 1))\ndef bench_noop():\n"
        "    @task\n    def noop():\n        return 1\n\n    noop()\n\n\nbench_noop()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(work / "airflow"), AIRFLOW__CORE__DAGS_FOLDER=str(dags),
               AIRFLOW__CORE__LOAD_EXAMPLES="False")  # fmt: skip
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, check=True)
    times = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run([str(BIN / "airflow"), "dags", "test", "bench_noop"], env=env, capture_output=True, check=True)
        times.append(time.monotonic() - started)
    return sorted(times)[1]


def fresh_postgres_schema(url: str, schema: str) -> str:
    """Drop and create `schema` in the database at `url`; the URL of a connection that uses it."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            connection.execute(text(f"CREATE SCHEMA {schema}"))
    finally:
        engine.dispose()
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


# --------------------------------------------------------------------------- the table


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def commit(code: Path = REPO) -> str:
    git = shutil.which("git") or "git"
    result = subprocess.run([git, "rev-parse", "--short", "HEAD"], cwd=code, capture_output=True, text=True)
    dirty = subprocess.run([git, "status", "--porcelain", "--", "include", "dags"], cwd=code, capture_output=True,
                           text=True).stdout.strip()  # fmt: skip
    return result.stdout.strip() + ("+changes" if dirty else "")


COLUMNS = ("date", "label", "commit", "machine", "load", "users", "backend", "scenario", *TASKS, "wall s",
           "users/s", "x floor", "peak RSS MiB")  # fmt: skip
HEADER = (
    "\n## `make bench` (scripts/benchmark.py)\n\n"
    "Task functions in their own processes (the project's imports included; Airflow's task runner and its\n"
    "import not, a worker has them loaded); wall = the six\n"
    "tasks one after the other; users/s = tenant size / wall; x floor = wall / the floor of the same run\n"
    "(every `/users/delta` page fetched + raw rows COPY'd into PostgreSQL); peak RSS = the largest task\n"
    "process. `airflow dags test` of a one-task DAG is Airflow's own start-up per run, not in these rows.\n\n"
    + "| "
    + " | ".join(COLUMNS)
    + " |\n"
    + "|---" * len(COLUMNS)
    + "|\n"
)


def write_results(
    rows: list[dict[str, Any]], label: str, startup: float | None, results: Path = RESULTS, code: Path = REPO
) -> None:
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    if "## `make bench`" not in text:
        text += HEADER
    floors = {r["users"]: r["wall_s"] for r in rows if r["scenario"] == "floor"}
    stamp, where, ref = f"{datetime.now(UTC):%Y-%m-%d %H:%M}", machine(), commit(code)
    lines = []
    for r in rows:
        cells = " | ".join(f"{r['tasks_s'][t]:.1f}" if t in r["tasks_s"] else "" for t in TASKS)
        ratio = f"{r['wall_s'] / floors[r['users']]:.1f}" if r["users"] in floors and r["scenario"] != "floor" else ""
        scenario = r["scenario"]
        if "requests" in r:  # a SCIM target's run: what it sent, at what concurrency
            sent = ", ".join(f"{n:,} {m}" for m, n in r["requests"].items()) or "no request"
            scenario = f"{scenario} ({sent}; concurrency {r['concurrency']})"
        lines.append(
            f"| {stamp} | {label} | {ref} | {where} | {r['load']:.2f} | {r['users']:,} | {r['backend']} | "
            f"{scenario} | {cells} | {r['wall_s']:.1f} | {r['users'] / r['wall_s']:,.0f} | {ratio} | "
            f"{r['peak_rss_mib']} |"
        )
    if startup is not None:
        what = "`airflow dags test` of a one-task DAG (median of 3)"
        lines.append(
            f"| {stamp} | {label} | {ref} | {where} | {os.getloadavg()[0]:.2f} | | Airflow | {what} "
            f"|{' |' * len(TASKS)} {startup:.1f} | | | |"
        )
    results.write_text(text.rstrip("\n") + "\n" + "\n".join(lines) + "\n")


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, *args = sys.argv[2:]
        run_task(*args) if kind == "task" else run_floor(*args)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgres", "scim"], default=["sqlite", "postgres"],
        help="scim: Frankli's SCIM API (the test server, scim2-server) as the target, staging on PostgreSQL",
    )  # fmt: skip
    parser.add_argument("--scim-concurrency", type=int, default=8, help="target.concurrency of the scim backend")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--label", default="", help="a word for the table, e.g. before / after")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-airflow", action="store_true", help="skip measuring Airflow's own start-up")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the table to append to")
    parser.add_argument(
        "--code", type=Path, default=REPO,
        help="measure another checkout's task functions (its include/ first on the path), e.g. a worktree of "
        "the commit before a change: `git worktree add /tmp/before f33e87f`. Measure the 'after' side from a "
        "worktree too when you keep editing: the children import the code as it is when each task starts",
    )  # fmt: skip
    parser.add_argument(
        "--profile", type=Path, default=None,
        help="write a cProfile of each task to DIR/<run>.<task>.prof (read with `python -m pstats`); the "
        "rows are labelled 'profiled', as cProfile slows the tasks",
    )  # fmt: skip
    options = parser.parse_args()
    if options.profile:
        options.profile.mkdir(parents=True, exist_ok=True)
        os.environ["BENCH_PROFILE_DIR"] = str(options.profile.resolve())
        options.label = f"{options.label} profiled".strip()
    if options.code.resolve() != REPO:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(options.code / "include"),
                                                                 os.environ.get("PYTHONPATH")]))  # fmt: skip
    for users in options.users:  # each size's rows are written as soon as they are measured
        rows = measure_size(users, options.backends, options.scenarios, options.seed, options.scim_concurrency)
        write_results(rows, options.label, None, options.results, options.code)
    if not options.no_airflow:
        with tempfile.TemporaryDirectory(prefix="frankli-bench-airflow-") as work:
            write_results([], options.label, airflow_startup(Path(work)), options.results, options.code)
    print(f"results appended to {options.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
