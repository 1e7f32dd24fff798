"""Airflow connections → SQLAlchemy URLs: the forms DESIGN §4 promises to accept."""

from __future__ import annotations

import json

import pytest
from frankli_sync.connections import ConnectionSettingError, make_engine, sqlalchemy_url, staging_engine

pytestmark = pytest.mark.unit


def test_generic_connection_with_sqlalchemy_url_in_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_FRANKLI_X",
        json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": "sqlite:////tmp/frankli.db"}}),
    )
    assert sqlalchemy_url("frankli_x") == "sqlite:////tmp/frankli.db"


def test_postgres_connection_becomes_a_psycopg_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_FRANKLI_PG",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": "db.internal",
                "port": 5433,
                "login": "sync",
                "password": "s3cr/t@",
                "schema": "frankli",
            }
        ),
    )
    url = sqlalchemy_url("frankli_pg")
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port, url.username, url.password, url.database) == (
        "db.internal",
        5433,
        "sync",
        "s3cr/t@",
        "frankli",
    )
    # The password never shows in the URL's printable form.
    assert "s3cr" not in str(url)


def test_connection_without_url_names_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_FRANKLI_BAD", json.dumps({"conn_type": "http", "host": "example.com"}))
    with pytest.raises(ConnectionSettingError, match="frankli_bad"):
        sqlalchemy_url("frankli_bad")


def test_plain_postgres_urls_use_psycopg3() -> None:
    engine = make_engine("postgresql://u@127.0.0.1:1/x")
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


def test_default_staging_is_a_sqlite_file_under_airflow_home(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    engine = staging_engine(None)
    assert engine.url.database == str(tmp_path / "frankli_sync_staging.db")
    engine.dispose()
