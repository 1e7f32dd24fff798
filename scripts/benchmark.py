"""`make benchmark`: wall time and peak memory of whole DAG runs for large emulated tenants.

For each size it starts the Graph emulator, runs day 1 (everything created),
applies the day-2 change set and runs day 2, each through `airflow dags test`
on embedded defaults (SQLite staging and Frankli database), and appends a row
per run to benchmarks/results.md. Task durations come from the run's own
task log lines.

    .venv/bin/python scripts/benchmark.py --users 100000
    .venv/bin/python scripts/benchmark.py --users 100000 --frankli-postgres postgresql+psycopg://127.0.0.1:5432/test

With --frankli-postgres the Frankli database is a fresh schema `frankli_benchmark` in
that PostgreSQL database (dropped and created again on every run) instead of SQLite.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import BIN, DAG_ID, REPO, demo_env, start_emulator

WORK = REPO / ".benchmark"
RESULTS = REPO / "benchmarks" / "results.md"
TASK_LINE = re.compile(r"^(\S+Z) .*\[DAG TEST\] (starting|end task) task_id=(\w+)")


def timed_run(env: dict[str, str], log: Path, conf: str = "{}") -> tuple[float, dict[str, float], int]:
    started = time.monotonic()
    marks: dict[str, float] = {}
    durations: dict[str, float] = {}
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "airflow"), "dags", "test", DAG_ID, "-c", conf],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace")
            out.write(line)
            match = TASK_LINE.search(line)
            if match:  # durations from the log's own timestamps
                stamp, kind, task = match.groups()
                at = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
                if kind == "starting":
                    marks[task] = at
                elif task in marks:
                    durations[task] = at - marks[task]
        code = process.wait()
    if code != 0:
        raise SystemExit(f"DAG run failed; see {log}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return time.monotonic() - started, durations, peak_kib


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, nargs="+", default=[100_000])
    parser.add_argument("--frankli-postgres", metavar="URL", help="SQLAlchemy URL of a PostgreSQL database")
    options = parser.parse_args()
    rows = []
    for users in options.users:
        shutil.rmtree(WORK, ignore_errors=True)
        (WORK / "airflow").mkdir(parents=True)
        emulator, base_url = start_emulator(users, seed=42)
        try:
            env = demo_env(base_url, WORK / "frankli.db")
            backend = "SQLite"
            if options.frankli_postgres:
                backend = "PostgreSQL"
                url = fresh_postgres_schema(options.frankli_postgres)
                env["AIRFLOW_CONN_FRANKLI_CONTOSO"] = json.dumps(
                    {"conn_type": "generic", "extra": {"sqlalchemy_url": url}}
                )
            env["AIRFLOW_HOME"] = str(WORK / "airflow")
            config = WORK / "tenants.yaml"
            config.write_text((REPO / "config" / "tenants.demo.yaml").read_text().replace("../reports", "reports"))
            env["FRANKLI_SYNC_CONFIG"] = str(config)
            subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, check=True)
            for day in ("day 1", "day 2"):
                if day == "day 2":
                    request = urllib.request.Request(
                        base_url.replace("/v1.0", "/_emulator/day2"), data=b"{}", method="POST"
                    )
                    urllib.request.urlopen(request, timeout=120).read()
                # Day 2 archives ~2% of the tenant: above the deletion guard's 500 at 100k users, so it is
                # run the way an admin would after reading the guard's message.
                conf = '{"allow_mass_archive": true}' if day == "day 2" else "{}"
                seconds, tasks, peak = timed_run(env, WORK / f"{day.replace(' ', '')}.log", conf)
                row = (users, backend, day, seconds, tasks, peak)
                rows.append(row)
                print(
                    json.dumps(
                        {
                            "users": users,
                            "frankli_db": backend,
                            "run": day,
                            "wall_s": round(seconds, 1),
                            "peak_rss_mib": peak // 1024,
                            "tasks_s": {k: round(v, 1) for k, v in tasks.items()},
                        }
                    )
                )
        finally:
            emulator.terminate()
            emulator.wait(timeout=30)
    write_results(rows)
    return 0


def fresh_postgres_schema(url: str, schema: str = "frankli_benchmark") -> str:
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


def write_results(rows: list[tuple]) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Benchmark results\n\n`make benchmark` (scripts/benchmark.py): whole `airflow dags test` runs on "
            "embedded defaults (SQLite staging, Frankli DB on SQLite or PostgreSQL, Graph emulator on localhost), "
            "2 cores.\n\n"
            "| date | users | Frankli DB | run | wall s | extract | validate | transform | load_upserts "
            "| load_archives | report | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        )
    tasks = ("extract", "validate", "transform", "load_upserts", "load_archives", "report")
    with RESULTS.open("a") as out:
        for users, backend, day, seconds, durations, peak in rows:
            cells = " | ".join(f"{durations.get(t, 0):.1f}" for t in tasks)
            out.write(
                f"| {datetime.now(UTC):%Y-%m-%d} | {users:,} | {backend} | {day} | {seconds:.1f} | {cells} "
                f"| {peak // 1024} |\n"
            )


if __name__ == "__main__":
    sys.exit(main())
