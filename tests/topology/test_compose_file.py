"""Issue #6: docker-compose.yaml, docker/Dockerfile and .env.example stay consistent with the repo."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
}
# ${NAME}, ${NAME:-default}, ${NAME:?error}; `$${NAME}` is an escaped literal for the container shell.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture(scope="module")
def compose_text() -> str:
    return (REPO / "docker-compose.yaml").read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict:
    return yaml.safe_load(compose_text)


@pytest.fixture(scope="module")
def common(compose: dict) -> dict:
    return compose["x-airflow-common"]


def env_example() -> dict[str, str]:
    values = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_services_exist(compose: dict) -> None:
    assert {"postgres", "redis", "frankli-db", *AIRFLOW_SERVICES} <= set(compose["services"])
    assert "8080:8080" in compose["services"]["airflow-apiserver"]["ports"]


def test_airflow_services_share_image_build_and_env(compose: dict, common: dict) -> None:
    assert common["build"]["dockerfile"] == "docker/Dockerfile"
    assert (REPO / common["build"]["context"] / common["build"]["dockerfile"]).is_file()
    for name in AIRFLOW_SERVICES:
        service = compose["services"][name]
        assert service["image"] == common["image"], name
        assert service["build"] == common["build"], name
        # every common variable reaches the service unchanged (a service may add its own)
        for key, value in common["environment"].items():
            assert service["environment"].get(key) == value, (name, key)
        assert service["volumes"] == common["volumes"], name


def test_mounts_point_at_repo_folders(common: dict) -> None:
    targets = {}
    for volume in common["volumes"]:
        source, target = volume.replace("${AIRFLOW_PROJ_DIR:-.}", ".").split(":")[:2]
        targets[target] = source
    for folder in ("dags", "plugins", "config"):
        assert targets[f"/opt/airflow/{folder}"] == f"./{folder}"
        assert (REPO / folder).is_dir(), folder
    assert targets["/opt/airflow/logs"] == "./logs"
    assert targets["/opt/airflow/reports"] == "./reports"


def test_frankli_database_and_its_init_sql(compose: dict) -> None:
    frankli = compose["services"]["frankli-db"]
    assert frankli["image"].startswith("postgres:")
    init = [v for v in frankli["volumes"] if "docker-entrypoint-initdb.d" in v]
    assert init and (REPO / init[0].split(":")[0]).is_file()
    init_sql = (REPO / init[0].split(":")[0]).read_text()
    created = set(re.findall(r"^CREATE DATABASE (\w+);", init_sql, re.M))
    env = compose["x-airflow-common"]["environment"]
    # Every postgres connection to frankli-db names a database that exists: POSTGRES_DB or one the SQL creates.
    databases = {
        json.loads(value)["schema"]
        for name, value in env.items()
        if name.startswith("AIRFLOW_CONN_") and '"host": "frankli-db"' in value
    }
    default_db = frankli["environment"]["POSTGRES_DB"]
    assert databases == {default_db, *created}, (databases, created)


def test_dockerfile_installs_requirements_and_package() -> None:
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.2-python3\.11\s*$", dockerfile, re.M)
    assert re.search(r"^COPY .*\brequirements\.txt\b", dockerfile, re.M)
    assert re.search(r"^RUN pip install .*-r \S*requirements\.txt", dockerfile, re.M)
    for path in ("pyproject.toml", "include", "emulator"):
        assert re.search(rf"^COPY .*\b{re.escape(path)}\s", dockerfile, re.M), path
        assert (REPO / path).exists()
    assert re.search(r"^RUN pip install --no-cache-dir --no-deps /opt/frankli-sync\s*$", dockerfile, re.M)
    for source in re.findall(r"^COPY (?:--\S+ )*(\S+) ", dockerfile, re.M):
        assert (REPO / source).exists(), source


def test_every_variable_is_documented_in_env_example(compose_text: str) -> None:
    used = set(VARIABLE.findall(compose_text))
    assert used, "no ${VAR} found"
    missing = used - set(env_example())
    assert not missing, f"used in docker-compose.yaml, not in .env.example: {sorted(missing)}"


def test_env_example_holds_no_real_secrets() -> None:
    for name, value in env_example().items():
        if any(word in name for word in ("PASSWORD", "SECRET", "KEY")):
            assert value == "" or "change-me" in value, name


def test_celery_executor_with_redis_broker_and_postgres_backend(common: dict) -> None:
    env = common["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert "@redis:6379" in env["AIRFLOW__CELERY__BROKER_URL"]
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert "@postgres/" in env["AIRFLOW__CELERY__RESULT_BACKEND"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["FRANKLI_SYNC_CONFIG"]
    assert env["AIRFLOW_CONN_FRANKLI_STAGING"].startswith('{"conn_type": "postgres"')


def test_compose_tenant_config_is_valid_and_uses_shared_staging() -> None:
    from frankli_sync.config import load_config

    config = load_config(REPO / "docker" / "tenants.compose.yaml")
    assert config.staging_conn_id == "frankli_staging"
    assert [t.dag_id for t in config.tenants] == ["entra_to_frankli__contoso", "entra_to_frankli__fabrikam"]


def test_every_compose_tenant_has_its_own_connections(common: dict) -> None:
    from frankli_sync.config import load_config

    env = common["environment"]
    config = load_config(REPO / "docker" / "tenants.compose.yaml")
    seen: dict[str, str] = {}
    for tenant in config.tenants:
        for kind, conn_id in (("source", tenant.source.conn_id), ("target", tenant.target.conn_id)):
            variable = f"AIRFLOW_CONN_{str(conn_id).upper()}"
            assert variable in env, f"tenant {tenant.name}: {kind} connection {conn_id} has no {variable}"
            assert seen.setdefault(variable, tenant.name) == tenant.name, f"{variable} shared by two tenants"
            conn = json.loads(re.sub(r"\$\{[^}]*\}", "x", env[variable]))
            assert conn["conn_type"] == ("msgraph" if kind == "source" else "postgres"), variable
    targets = {
        json.loads(re.sub(r"\$\{[^}]*\}", "x", env[f"AIRFLOW_CONN_{t.target.conn_id.upper()}"]))["schema"]
        for t in config.tenants
    }
    assert len(targets) == len(config.tenants), "two tenants write into the same Frankli database"
    assert f"AIRFLOW_CONN_{config.staging_conn_id.upper()}" in env
