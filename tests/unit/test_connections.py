"""Airflow connections → SQLAlchemy URLs: the forms DESIGN §4 promises to accept."""

from __future__ import annotations

import json

import pytest
from frankli_sync.connections import ConnectionSettingError, engine_for, make_engine, sqlalchemy_url, staging_engine
from frankli_sync.errors import SyncStopped

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
    with pytest.raises(ConnectionSettingError, match="frankli_bad") as caught:
        sqlalchemy_url("frankli_bad")
    # Retrying finds the same connection: the task must fail at once, saying what to set.
    assert isinstance(caught.value, SyncStopped) and isinstance(caught.value, ValueError)
    assert "extra.sqlalchemy_url" in str(caught.value)


def test_missing_connection_is_a_sync_stop_naming_how_to_add_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_FRANKLI_ABSENT", raising=False)
    with pytest.raises(ConnectionSettingError) as caught:
        sqlalchemy_url("frankli_absent")
    message = str(caught.value)
    assert isinstance(caught.value, SyncStopped)
    assert "'frankli_absent'" in message and "AIRFLOW_CONN_FRANKLI_ABSENT" in message
    assert "Admin > Connections" in message and "extra.sqlalchemy_url" in message


def test_unusable_url_is_a_sync_stop_that_never_shows_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_FRANKLI_ODD",
        json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": "nosuchdb://sync:pa55w0rd@db/frankli"}}),
    )
    with pytest.raises(ConnectionSettingError) as caught:
        engine_for("frankli_odd")
    assert isinstance(caught.value, SyncStopped)
    assert "frankli_odd" in str(caught.value) and "pa55w0rd" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_plain_postgres_urls_use_psycopg3() -> None:
    engine = make_engine("postgresql://u@127.0.0.1:1/x")
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


def test_default_staging_is_a_sqlite_file_under_airflow_home(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    engine = staging_engine(None)
    assert engine.url.database == str(tmp_path / "frankli_sync_staging.db")
    engine.dispose()
