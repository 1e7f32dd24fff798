"""Issue #11: after a bulk write, the next task's lookups have PostgreSQL statistics to plan with.

At 1,000,000 users, tables filled by COPY and not yet analyzed (autovacuum is slow, or off as on
this machine) were planned as a few hundred rows: every lookup of 2,000 ids walked the whole
tenant through the wrong index (0.25-0.36 s each; a 1% delta run spent 30 s of its 45 s validate
waiting on them). Each writer now refreshes the statistics of what it bulk-loaded; these tests
check that PostgreSQL holds statistics for each table right after its write, and that lookups by
id use the id index.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.integration


def has_statistics(engine, table: str) -> bool:
    with engine.connect() as connection:
        return bool(
            connection.execute(
                text("SELECT count(*) FROM pg_stats WHERE schemaname = current_schema() AND tablename = :t"),
                {"t": table},
            ).scalar_one()
        )


def plan_of(engine, query: str, values: dict) -> str:
    with engine.connect() as connection:
        return "\n".join(connection.execute(text(f"EXPLAIN {query}"), values).scalars())


def test_a_saved_record_is_analyzed_and_looked_up_by_its_key(postgres_url: str) -> None:
    from frankli_sync.sync_record import SyncRecord

    engine = create_engine(postgres_url)
    try:
        record = SyncRecord(engine)
        count = 5_000
        rows = pd.DataFrame(
            {
                "object_id": [f"id-{i:06d}" for i in range(count)],
                "digest": range(count),
                "state": ["active"] * count,
                "manager": [None] * count,
                "upn_key": range(count),
                "email_key": range(count),
                "email_fold": range(count),
                "detail": [None] * count,
                "findings": [None] * count,
            }
        )
        assert not has_statistics(engine, "synced_users")
        record.save("acme", "run-1", "fp", datetime.now(UTC), rows, replace=True, frankli_mark="m")
        assert has_statistics(engine, "synced_users")
        found = plan_of(
            engine,
            "SELECT digest FROM synced_users WHERE tenant = 'acme' AND object_id IN ('id-000001', 'id-004000')",
            {},
        )
        assert "synced_users_pkey" in found, found
    finally:
        engine.dispose()


def test_a_completed_snapshot_is_analyzed(postgres_url: str) -> None:
    from frankli_sync.staging import Staging

    engine = create_engine(postgres_url)
    try:
        staging = Staging(engine)
        staging.begin_snapshot("acme", "run-1", source="graph")
        staging.complete_snapshot("acme", "run-1", 0)
        with engine.connect() as connection:
            analyzed = connection.execute(
                text(
                    "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables "
                    "WHERE schemaname = current_schema() AND relname = 'staged_users'"
                )
            ).scalar_one()
        assert analyzed
    finally:
        engine.dispose()


def test_a_first_sync_leaves_frankli_analyzed(make_tenant, postgres_url: str, monkeypatch) -> None:
    from frankli_sync.sinks import database

    monkeypatch.setattr(database, "ANALYZE_AFTER_CREATES", 50)  # the real threshold: 10,000 creates
    tenant = make_tenant(users=120, seed=41, frankli_url=postgres_url)
    tenant.run()
    engine = create_engine(postgres_url)
    try:
        assert has_statistics(engine, "users") and has_statistics(engine, "sync_audit")
    finally:
        engine.dispose()
