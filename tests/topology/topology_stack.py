"""A real CeleryExecutor Airflow stack on this machine, for the topology tests.

`CeleryStack` creates fresh PostgreSQL databases (Airflow metadata + Celery result
backend, staging, one Frankli database per tenant), picks an unused Redis database
index as the broker, starts one Graph emulator process per tenant, writes a
two-tenant `FRANKLI_SYNC_CONFIG`, runs `airflow db migrate` and starts
`airflow api-server`, `scheduler`, `dag-processor`, `triggerer` and `celery worker` as separate
process groups (logs under the stack's home). It talks to Airflow through the CLI
and the REST API (token from SimpleAuthManager's `POST /auth/token`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
IN_CI = os.environ.get("CI", "").lower() == "true"
PG_HOST = os.environ.get("FRANKLI_TEST_PG_HOST", "127.0.0.1:5432")
REDIS_HOST = os.environ.get("FRANKLI_TEST_REDIS_HOST", "127.0.0.1:6379")
ORGANISATION = "Topology Test Ltd"


def service_unavailable(what: str, error: Exception) -> None:
    """Skip with the reason on a machine without the service; under CI=true it is a failure."""
    message = f"{what} is not reachable ({error.__class__.__name__}: {error})"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_admin():
    import psycopg

    return psycopg.connect(f"postgresql://postgres@{PG_HOST}/postgres", autocommit=True, connect_timeout=5)


def redis_client(index: int = 0):
    import redis

    host, port = REDIS_HOST.split(":")
    return redis.Redis(host=host, port=int(port), db=index, socket_connect_timeout=5)


def check_services() -> None:
    try:
        pg_admin().close()
    except Exception as error:
        service_unavailable(f"PostgreSQL at {PG_HOST}", error)
    try:
        redis_client().ping()
    except Exception as error:
        service_unavailable(f"Redis at {REDIS_HOST}", error)


@dataclass
class Tenant:
    name: str
    users: int
    seed: int
    port: int = 0
    database: str = ""
    process: subprocess.Popen | None = None

    @property
    def dag_id(self) -> str:
        return f"entra_to_frankli__{self.name}"

    @property
    def frankli_url(self) -> str:
        return f"postgresql+psycopg://postgres@{PG_HOST}/{self.database}"


@dataclass
class CeleryStack:
    home: Path
    tenants: list[Tenant]
    worker_concurrency: int = 2
    schedule: str | None = "@daily"
    extra_env: dict[str, str] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: f"topo_{uuid.uuid4().hex[:10]}")
    api_port: int = field(default_factory=free_port)
    redis_index: int = -1
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    databases: list[str] = field(default_factory=list)
    stopped: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    _token: str | None = None

    # ---------------------------------------------------------------- setup / teardown
    @property
    def metadata_db(self) -> str:
        return f"{self.prefix}_airflow"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def logs(self) -> Path:
        return self.home / "process-logs"

    def create_databases(self) -> None:
        for tenant in self.tenants:
            tenant.database = f"{self.prefix}_frankli_{tenant.name}"
        names = [self.metadata_db, f"{self.prefix}_staging", *(t.database for t in self.tenants)]
        with pg_admin() as connection:
            for name in names:
                connection.execute(f'CREATE DATABASE "{name}"')
                self.databases.append(name)

    def pick_redis_index(self) -> None:
        for index in range(15, 0, -1):
            if redis_client(index).dbsize() == 0:
                self.redis_index = index
                return
        raise RuntimeError("no empty Redis database index (1-15) for the Celery broker")

    def start_emulators(self) -> None:
        for tenant in self.tenants:
            tenant.port = free_port()
            log = (self.logs / f"emulator-{tenant.name}.log").open("w")
            tenant.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "graph_emulator",
                    "--users",
                    str(tenant.users),
                    "--seed",
                    str(tenant.seed),
                    "--port",
                    str(tenant.port),
                    "--domain",
                    f"{tenant.name}.example",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=REPO,
            )
        for tenant in self.tenants:
            self.wait_for(
                lambda t=tenant: "listening" in (self.logs / f"emulator-{t.name}.log").read_text(),
                timeout=60,
                what=f"Graph emulator for {tenant.name}",
            )

    def write_config(self) -> Path:
        config = {
            "reports_dir": str(self.home / "reports"),
            "staging_conn_id": "frankli_staging",
            "tenants": [
                {
                    "name": t.name,
                    "schedule": self.schedule,
                    "source": {"kind": "graph", "conn_id": f"msgraph_{t.name}"},
                    "target": {"kind": "database", "conn_id": f"frankli_{t.name}", "organisation": ORGANISATION},
                    "scope": {"exclude_guests": True},
                }
                for t in self.tenants
            ],
        }
        path = self.home / "tenants.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FRANKLI_", "PYTEST"))}
        pg = f"postgres@{PG_HOST}/{self.metadata_db}"
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{pg}",
                "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}/{self.redis_index}",
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{pg}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__SECRET_KEY": "topology-test-secret-key",
                "AIRFLOW__API_AUTH__JWT_SECRET": "topology-test-jwt-secret-" + "0123456789abcdef" * 4,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "FRANKLI_SYNC_CONFIG": str(self.home / "tenants.yaml"),
                "FRANKLI_SYNC_TASK_RETRIES": "1",
                "FRANKLI_SYNC_RETRY_DELAY_SECONDS": "5",  # the crash test waits for the retry
                "GX_ANALYTICS_ENABLED": "False",
                "AIRFLOW_CONN_FRANKLI_STAGING": json.dumps(
                    {
                        "conn_type": "generic",
                        "extra": {"sqlalchemy_url": f"postgresql+psycopg://postgres@{PG_HOST}/{self.prefix}_staging"},
                    }
                ),
            }
        )
        for t in self.tenants:
            env[f"AIRFLOW_CONN_MSGRAPH_{t.name.upper()}"] = json.dumps(
                {
                    "conn_type": "msgraph",
                    "login": "topology-client",
                    "password": "topology-secret",
                    "extra": {
                        "tenant_id": f"{t.name}-tenant",
                        "base_url": f"http://127.0.0.1:{t.port}/v1.0",
                        "allowed_hosts": "graph.microsoft.com",
                    },
                }
            )
            env[f"AIRFLOW_CONN_FRANKLI_{t.name.upper()}"] = json.dumps(
                {"conn_type": "generic", "extra": {"sqlalchemy_url": t.frankli_url}}
            )
        env.update(self.extra_env)
        return env

    @contextlib.contextmanager
    def running(self) -> Iterator[CeleryStack]:
        """The stack up (databases, emulators, migrated metadata DB, Airflow processes), torn down after."""
        self.home.mkdir()
        try:
            self.setup()
            self.start_airflow()
            yield self
        finally:
            self.teardown()

    def setup(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.home / "passwords.json").write_text(json.dumps({"admin": self.password}))
        self.create_databases()
        self.pick_redis_index()
        self.start_emulators()
        self.write_config()
        self.airflow("db", "migrate", timeout=300)
        self.airflow("pools", "set", "graph_extract", "2", "Concurrent Graph extractions")

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("a")
        process = subprocess.Popen(
            [AIRFLOW, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=self.home,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def start_airflow(self) -> None:
        self.start("api-server", "api-server", "--port", str(self.api_port), "--host", "127.0.0.1", "--workers", "1")
        self.start("scheduler", "scheduler")
        self.start("dag-processor", "dag-processor")
        self.start("triggerer", "triggerer")  # deferred tasks; a waiting approval needs none in Airflow 3.3
        self.start_worker()
        self.wait_for(self._api_up, timeout=120, what="the API server")

    def start_worker(self, name: str = "worker") -> subprocess.Popen:
        self.stopped.discard(name)
        return self.start(
            name,
            "celery", "worker", "--concurrency", str(self.worker_concurrency),
            "--celery-hostname", f"{name}@%h", "--pid", str(self.home / f"{name}.pid"),
        )  # fmt: skip

    @staticmethod
    def kill_group(process: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 20) -> None:
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    @staticmethod
    def kill_tree(process: subprocess.Popen) -> list[int]:
        """SIGKILL a process and every descendant, as losing the machine or an OOM kill would.

        Airflow's task supervisor puts each task runner in its own process group, so killing
        the worker's group alone leaves the running task alive (and it would commit).
        """
        import psutil

        try:
            root = psutil.Process(process.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for member in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        psutil.wait_procs(tree, timeout=20)
        process.wait(10)
        return [member.pid for member in tree]

    def teardown(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            self.kill_group(process, signal.SIGTERM, wait=20)
        for tenant in self.tenants:
            if tenant.process is not None:
                self.kill_group(tenant.process)
        if self.redis_index > 0:
            redis_client(self.redis_index).flushdb()
        with pg_admin() as connection:
            for name in self.databases:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # ---------------------------------------------------------------- talking to Airflow
    def airflow(self, *args: str, timeout: float = 180) -> str:
        result = subprocess.run(
            [AIRFLOW, *args],
            capture_output=True,
            text=True,
            env=self.env(),
            cwd=self.home,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, (
            f"airflow {' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
        return result.stdout

    def _api_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/api/v2/monitor/health", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def token(self) -> str:
        if self._token is None:
            body = json.dumps({"username": "admin", "password": self.password}).encode()
            request = urllib.request.Request(
                f"{self.api_url}/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                self._token = json.load(response)["access_token"]
        return self._token

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.api_url}/api/v2{path}",
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"},
            method=method,
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    def emulator_post(self, tenant: Tenant, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST to a tenant's Graph emulator admin endpoint (e.g. ``/_emulator/day2``)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{tenant.port}{path}",
            data=json.dumps(body or {}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.load(response)

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns?limit=100&order_by=start_date")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        quoted = urllib.request.quote(run_id, safe="")
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{quoted}/taskInstances")["task_instances"]

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def parsed_dags(self) -> set[str]:
        try:
            dags = self.api("GET", "/dags?dag_id_pattern=entra_to_frankli&limit=100")["dags"]
        except (urllib.error.URLError, OSError):
            return set()
        return {d["dag_id"] for d in dags}

    def wait_for(self, condition, timeout: float, what: str, interval: float = 2.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None and name not in self.stopped:
                    raise AssertionError(f"{name} exited with {process.returncode}\n{self.log_tail(name)}")
            value = condition()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{self.all_log_tails()}")

    def wait_for_runs(self, dag_id: str, count: int, timeout: float, run_type: str | None = None) -> list[dict]:
        """Wait until `count` runs (of `run_type`, if given) ended; fail at once when one failed."""

        def done() -> list[dict] | None:
            runs = [r for r in self.dag_runs(dag_id) if run_type is None or r["run_type"] == run_type]
            failed = [r for r in runs if r["state"] == "failed"]
            if failed:
                raise AssertionError(f"{dag_id} run failed: {failed[0]}\n{self.failure_details(dag_id, failed[0])}")
            finished = [r for r in runs if r["state"] == "success"]
            return runs if len(runs) >= count and len(finished) == len(runs) else None

        return self.wait_for(done, timeout=timeout, what=f"{count} successful {run_type or ''} runs of {dag_id}")

    # ---------------------------------------------------------------- diagnostics
    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.logs / f"{name}.log"
        return f"--- {name} ---\n{path.read_text(errors='replace')[-chars:]}" if path.exists() else ""

    def all_log_tails(self) -> str:
        return "\n".join(self.log_tail(name, 2500) for name in self.processes)

    def failure_details(self, dag_id: str, run: dict) -> str:
        lines = []
        for ti in self.task_instances(dag_id, run["dag_run_id"]):
            lines.append(f"{ti['task_id']}: {ti['state']} (try {ti.get('try_number')})")
        for path in sorted((self.home / "logs").rglob("*.log")):
            if run["dag_run_id"] in str(path) and "attempt" in path.name:
                lines.append(f"--- {path.relative_to(self.home)} ---\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(lines) + "\n" + self.all_log_tails()


def frankli_rows(tenant: Tenant, table: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(f"postgresql://postgres@{PG_HOST}/{tenant.database}", row_factory=dict_row) as connection:
        return list(connection.execute(f"SELECT * FROM {table} ORDER BY id"))


def load_writing(tenant: Tenant) -> bool:
    """Whether a sync load is writing in an open, uncommitted transaction on the tenant's Frankli DB.

    Only the load tasks COPY or UPDATE through the temporary table (transform only reads);
    `xact_start` is set until the transaction commits or rolls back.
    """
    import psycopg

    with psycopg.connect(f"postgresql://postgres@{PG_HOST}/{tenant.database}") as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL "
            "AND (query LIKE 'COPY %' OR query LIKE '%frankli_sync_user_changes%')"
        ).fetchone()
    return bool(row and row[0])


def users_state(tenant: Tenant) -> dict[str, dict[str, Any]]:
    """Frankli users of a tenant keyed by external id (or email), every column (timestamps too)."""
    return {row["external_id"] or f"email:{row['email']}": row for row in frankli_rows(tenant, "users")}


def entities_state(tenant: Tenant) -> dict[str, list[dict[str, Any]]]:
    """The tenant's organisations, sites, departments and roles, every column.

    Except `organisations.synced_snapshot_at`: every load records the instant of the snapshot it
    applied there (so an older run's load cannot undo a newer one), changed or not.
    """
    state = {table: frankli_rows(tenant, table) for table in ("organisations", "sites", "departments", "roles")}
    for row in state["organisations"]:
        row.pop("synced_snapshot_at", None)
    return state
