"""Issue #6: the PostgreSQL sink (COPY + UPDATE … FROM) writes exactly what the SQLite sink writes.

One tenant, one staging database, three days of Entra changes. Each day's DAG run
loads into SQLite; the same run's load tasks are then run again against a
PostgreSQL Frankli database (as a cleared task would be). Both start from the same
seeded Frankli rows, so after every day a canonical dump of every Frankli table
(rows by id, timestamps in UTC) must be byte-for-byte the same.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from graph_emulator import apply_day2
from sqlalchemy import create_engine, select

pytestmark = pytest.mark.integration

SEEDED_AT = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return aware.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def dump(url: str) -> bytes:
    """Every Frankli table, rows ordered by id, one canonical JSON line per row."""
    from frankli_sync.sinks.schema import metadata

    engine = create_engine(url)
    lines = []
    try:
        with engine.connect() as connection:
            for table in metadata.sorted_tables:
                for row in connection.execute(select(table).order_by(table.c.id)).mappings():
                    record = {key: canonical(value) for key, value in row.items()}
                    lines.append(json.dumps([table.name, record], sort_keys=True, ensure_ascii=False))
    finally:
        engine.dispose()
    return "\n".join(lines).encode()


def test_sqlite_and_postgres_hold_identical_rows(make_tenant, postgres_url: str, monkeypatch) -> None:
    tenant = make_tenant(users=250, seed=41)
    sqlite_url = tenant.frankli_url
    directory = tenant.directory

    def target(url: str) -> None:
        tenant.frankli_url = url
        monkeypatch.setenv(
            "AIRFLOW_CONN_FRANKLI_ACME", json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": url}})
        )

    def replay_loads_on_postgres() -> None:
        target(postgres_url)
        tenant.run_task("load_upserts")
        tenant.run_task("load_archives")
        target(sqlite_url)

    # The same Frankli rows on both sides before the first sync: a department HR made by hand
    # (matched by name, never renamed) and an unmanaged user the sync links by e-mail.
    linked = next(u for u in directory.users_sorted() if directory.is_valid_member(u) and u["accountEnabled"])
    for url in (sqlite_url, postgres_url):
        target(url)
        tenant.seed("departments", [{"name": f"  {linked['department'].upper()} ", "created_at": SEEDED_AT}])
        tenant.seed(
            "users",
            [
                {
                    "email": linked["userPrincipalName"],
                    "first_name": "Hand",
                    "created_at": SEEDED_AT,
                    "updated_at": SEEDED_AT,
                }
            ],
        )
    target(sqlite_url)

    tenant.run()  # day 1: creates, the link, quarantines
    replay_loads_on_postgres()
    assert dump(postgres_url) == dump(sqlite_url)

    changes = apply_day2(directory, seed=9)  # hires, disables, deletes, moves, cleared attributes
    tenant.run()
    replay_loads_on_postgres()
    assert dump(postgres_url) == dump(sqlite_url)

    for user_id in changes.disabled:  # day 3: re-enabled users are restored
        directory.update_user(user_id, accountEnabled=True)
    tenant.run()
    replay_loads_on_postgres()
    final = dump(sqlite_url)
    assert dump(postgres_url) == final

    actions = {json.loads(line)[1].get("action") for line in final.decode().splitlines() if '"sync_audit"' in line}
    assert {"create", "update", "archive", "restore", "link", "quarantine"} <= actions, actions
    # The replay wrote everything itself: the PostgreSQL side holds all users and entities of the run.
    assert final.count(b'["users"') == len(tenant.users()) > 200
    users = [json.loads(line)[1] for line in final.decode().splitlines() if line.startswith('["users"')]
    assert sum(u["manager_id"] is not None for u in users) > 100
