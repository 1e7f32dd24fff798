"""Test environment: a private AIRFLOW_HOME with a migrated SQLite metadata DB, and service URLs.

Airflow reads its configuration when first imported, so the environment is
set here, before any test module imports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="frankli-sync-airflow-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "FRANKLI_SYNC_TASK_RETRIES": "0",
        "GX_ANALYTICS_ENABLED": "False",
    }
)
os.environ.setdefault("FRANKLI_SYNC_CONFIG", str(REPO / "config" / "tenants.demo.yaml"))

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get("FRANKLI_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FRANKLI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def service_unavailable(what: str, error: Exception) -> None:
    """Skip with the reason on a machine without the service; under CI=true it is a failure."""
    message = f"{what} is not reachable ({error.__class__.__name__}: {error})"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """`airflow db migrate` once per test session (SQLite under the private AIRFLOW_HOME)."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=False,
    )
    assert result.returncode == 0, f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return _HOME


@pytest.fixture
def postgres_schemas() -> Iterator[Callable[[], str]]:
    """Factory: each call makes a fresh PostgreSQL schema (all dropped after the test), as a SQLAlchemy URL."""
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_URL)
    made: list[str] = []

    def make() -> str:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        try:
            with admin.begin() as connection:
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        except Exception as error:
            service_unavailable(f"PostgreSQL at {POSTGRES_URL}", error)
        made.append(schema)
        separator = "&" if "?" in POSTGRES_URL else "?"
        return f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"

    try:
        yield make
    finally:
        if made:
            with admin.begin() as connection:
                for schema in made:
                    connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_schemas: Callable[[], str]) -> str:
    """A fresh PostgreSQL schema for one test (dropped afterwards), as a SQLAlchemy URL."""
    return postgres_schemas()
