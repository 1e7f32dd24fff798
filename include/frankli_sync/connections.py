"""Airflow connections → SQLAlchemy engines (secrets come only from connections / env)."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.exc import ArgumentError

from frankli_sync.errors import SyncStopped

STAGING_FILE = "frankli_sync_staging.db"
# What a database connection may hold, for messages that say what to set.
ACCEPTED_FORMS = (
    "extra.sqlalchemy_url holding a SQLAlchemy URL (any conn type), a postgres connection (host, port, login, "
    "password, schema = database) or a sqlite connection (host = the database file)"
)
FIX_NEXT = "Retrying cannot fix this, so the task fails without retries; fix the connection, then clear the task."


class ConnectionSettingError(ValueError, SyncStopped):
    """An Airflow connection is missing or cannot be turned into a database URL; the message names it.

    A `SyncStopped`: a task retry minutes later finds the same connection, so the task fails at once.
    """


def sqlalchemy_url(conn_id: str) -> str | URL:
    """The SQLAlchemy URL held by an Airflow connection.

    Accepts a connection whose extra holds ``sqlalchemy_url`` (any conn type),
    a ``postgres`` connection (host, port, login, password, schema = database)
    and a ``sqlite`` connection (host = file path).
    """
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as error:
        raise ConnectionSettingError(
            f"Airflow connection {conn_id!r} (target.conn_id or staging_conn_id in the tenant config) does not "
            f"exist. Add it with {ACCEPTED_FORMS}: as the environment variable AIRFLOW_CONN_{conn_id.upper()} "
            '(JSON, e.g. {"conn_type": "generic", "extra": {"sqlalchemy_url": "postgresql+psycopg://..."}}) '
            f"or in the Airflow UI under Admin > Connections. {FIX_NEXT}"
        ) from error
    extra = connection.extra_dejson
    if extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    if connection.conn_type in ("postgres", "postgresql"):
        return URL.create(
            "postgresql+psycopg",
            username=connection.login or None,
            password=connection.password or None,
            host=connection.host or None,
            port=connection.port or None,
            database=connection.schema or None,
        )
    if connection.conn_type == "sqlite" and connection.host:
        return f"sqlite:///{connection.host}"
    raise ConnectionSettingError(
        f"connection {conn_id!r} (type {connection.conn_type!r}) has no extra.sqlalchemy_url and is not "
        f"a postgres or sqlite connection: set {ACCEPTED_FORMS}. {FIX_NEXT}"
    )


def make_engine(url: str | URL) -> Engine:
    """An engine with the settings the sync relies on (psycopg 3 for PostgreSQL, FKs on for SQLite)."""
    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
    if text.startswith(("postgresql://", "postgres://")):
        text = "postgresql+psycopg://" + text.split("://", 1)[1]
    engine = create_engine(text, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def engine_for(conn_id: str) -> Engine:
    url = sqlalchemy_url(conn_id)
    try:
        return make_engine(url)
    except ArgumentError as error:  # a malformed URL or an unknown dialect/driver: the connection is wrong
        # `from None` and no URL in the text: SQLAlchemy's message quotes the URL, password included.
        raise ConnectionSettingError(
            f"connection {conn_id!r} holds a database URL SQLAlchemy cannot use ({type(error).__name__}: a "
            f"malformed URL or an unknown dialect or driver): set {ACCEPTED_FORMS}. {FIX_NEXT}"
        ) from None


def staging_engine(conn_id: str | None) -> Engine:
    """The staging database: the configured connection, else a SQLite file under $AIRFLOW_HOME."""
    if conn_id:
        return engine_for(conn_id)
    home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
    home.mkdir(parents=True, exist_ok=True)
    return make_engine(f"sqlite:///{home / STAGING_FILE}")


def scim_endpoint(conn_id: str) -> tuple[str, str]:
    """The SCIM base URL (`host`, scheme included) and bearer token (`password`) of a SCIM target's connection.

    The token is returned to be sent, never logged: messages name the connection and its fields only.
    """
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    example = '{"conn_type": "http", "host": "https://frankli.example/scim/v2", "password": "<token>"}'
    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as error:
        raise ConnectionSettingError(
            f"Airflow connection {conn_id!r} (target.conn_id of a SCIM target) does not exist. Add it as the "
            f"environment variable AIRFLOW_CONN_{conn_id.upper()} ({example}) or under Admin > Connections, "
            "with host = the SCIM base URL Frankli shows and password = its token."
        ) from error
    host = (connection.host or "").strip().rstrip("/")
    if connection.port and host.count(":") < 2:  # a URI-form connection splits the port off the host
        scheme, _, rest = host.partition("://")
        head, slash, path = rest.partition("/")
        host = f"{scheme}://{head}:{connection.port}{slash}{path}"
    if not host.startswith(("https://", "http://")):
        raise ConnectionSettingError(
            f"connection {conn_id!r}: host must be the SCIM base URL with its scheme (https://…/scim/v2), "
            f"got {host or 'nothing'!r}: set it as in {example}"
        )
    if not connection.password:
        raise ConnectionSettingError(
            f"connection {conn_id!r}: password must hold the SCIM bearer token Frankli gave (it is empty)"
        )
    return host, connection.password
