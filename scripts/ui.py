"""`make ui`: the whole Airflow stack on the embedded defaults, with the reports plugin, for a person to use.

Starts the Graph emulator (a generated tenant), then `airflow api-server`, `scheduler`,
`dag-processor` and `triggerer` on a SQLite metadata DB under .ui/ (state is kept between
starts; `make ui UI_ARGS=--fresh` starts over), with the repository's dags/ and plugins/,
examples off, the `graph_extract` pool created and Airflow's simple auth manager with one
admin whose password is generated once into .ui/passwords.json. It prints the URL and the
login, then waits; Ctrl-C stops every process. Logs: .ui/logs/<process>.log.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from demo import BIN, REPO, TENANT, demo_env, free_port, start_emulator

UI = REPO / ".ui"
USERNAME = "admin"
SIMPLE_AUTH = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
PROCESSES = ("api-server", "scheduler", "dag-processor", "triggerer")
POOL = ("graph_extract", "4", "Concurrent Microsoft Graph reads across tenants (the extract task's pool)")


def ui_env(base_url: str, port: int, passwords: Path) -> dict[str, str]:
    env = demo_env(base_url, UI / "frankli.db")
    env.update(
        {
            "AIRFLOW_HOME": str(UI / "airflow"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "FRANKLI_SYNC_TASK_RETRIES": "1",
        }
    )
    return env


def password(passwords: Path) -> str:
    if not passwords.is_file():
        passwords.write_text(json.dumps({USERNAME: secrets.token_urlsafe(12)}))
        passwords.chmod(0o600)
    return json.loads(passwords.read_text())[USERNAME]


def run(args: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("a") as out:
        done = subprocess.run([str(BIN / "airflow"), *args], env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        raise SystemExit(f"airflow {' '.join(args)} failed (exit {done.returncode}); see {log}")


def wait_healthy(url: str, processes: dict[str, subprocess.Popen], seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise SystemExit(f"airflow {name} exited {process.returncode}; see {UI / 'logs' / name}.log")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise SystemExit(f"the api-server did not answer at {url} within {seconds:.0f} s; see {UI / 'logs'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--fresh", action="store_true", help="delete .ui/ first (metadata DB, Frankli DB, logs)")
    options = parser.parse_args()
    if options.fresh:
        shutil.rmtree(UI, ignore_errors=True)
    (UI / "airflow").mkdir(parents=True, exist_ok=True)
    logs = UI / "logs"
    logs.mkdir(exist_ok=True)
    port = options.port or free_port()
    emulator, graph_url = start_emulator(options.users, seed=42)
    processes: dict[str, subprocess.Popen] = {}
    try:
        passwords = UI / "passwords.json"
        login = password(passwords)
        env = ui_env(graph_url, port, passwords)
        print("· migrating the Airflow metadata DB (SQLite, .ui/airflow/airflow.db) …")
        run(["db", "migrate"], env, logs / "db-migrate.log")
        run(["pools", "set", *POOL], env, logs / "pools.log")
        print(f"· pool {POOL[0]} ({POOL[1]} slots) created")
        for name in PROCESSES:
            with (logs / f"{name}.log").open("a") as out:
                processes[name] = subprocess.Popen(
                    [str(BIN / "airflow"), *name.split()], env=env, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            print(f"· started airflow {name} (log: .ui/logs/{name}.log)")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, processes)
        print(
            f"\nAirflow is up: {url}\n  login: {USERNAME} / {login}   (kept in .ui/passwords.json)\n"
            f"  DAG: entra_to_frankli__{TENANT} (Graph emulator at {graph_url}, Frankli DB .ui/frankli.db)\n"
            f"  reports: {url}/frankli-reports/  (also under Browse, and a tab on each DAG run)\n"
            "Ctrl-C stops everything."
        )
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(p.poll() is None for p in processes.values()):
            time.sleep(1)
        stopped = [n for n, p in processes.items() if p.poll() is not None]
        print(f"airflow {', '.join(stopped)} stopped; see .ui/logs/")
        return 1
    except KeyboardInterrupt:
        print("\nstopping …")
        return 0
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        emulator.terminate()
        emulator.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
