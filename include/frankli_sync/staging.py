"""Staging: each run's snapshot of Entra users, keyed by tenant and run id.

A snapshot is written page by page while extracting and only marked
``complete`` at the end, so a failed extraction never leaves a partial
snapshot that later tasks could mistake for the directory. Re-running the
extract of a run replaces that run's snapshot. Small JSON documents (the
validation outcome, the plan summary) are kept beside it for the report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)

from frankli_sync.entra import STAGED_COLUMNS
from frankli_sync.transform import json_ready

metadata = MetaData()

extract_runs = Table(
    "extract_runs",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("run_id", String(250), primary_key=True),
    Column("status", String(16), nullable=False),  # extracting | complete
    Column("source", String(16)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("completed_at", DateTime(timezone=True)),
    Column("user_count", Integer),
    Column("synced_at", DateTime(timezone=True)),  # set once the run's upserts landed
)

staged_users = Table(
    "staged_users",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("seq", Integer, nullable=False),
    *(Column(name, Boolean if name == "account_enabled" else String(1024)) for name in STAGED_COLUMNS),
    Index("ix_staged_users_run", "tenant", "run_id", "seq"),
)

run_documents = Table(
    "run_documents",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("run_id", String(250), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("payload", Text, nullable=False),
)


class SnapshotMissing(RuntimeError):
    """The run has no complete staged snapshot (the extract task did not finish)."""


class Staging:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine, checkfirst=True)

    def begin_snapshot(self, tenant: str, run_id: str, source: str) -> None:
        """Start (or restart) the run's snapshot: any rows of an earlier attempt are dropped."""
        with self.engine.begin() as connection:
            connection.execute(
                delete(staged_users).where(staged_users.c.tenant == tenant, staged_users.c.run_id == run_id)
            )
            connection.execute(
                delete(extract_runs).where(extract_runs.c.tenant == tenant, extract_runs.c.run_id == run_id)
            )
            connection.execute(
                insert(extract_runs).values(
                    tenant=tenant, run_id=run_id, status="extracting", source=source, started_at=_now()
                )
            )

    def append_users(self, tenant: str, run_id: str, first_seq: int, rows: list[dict[str, Any]]) -> None:
        """Write one page of users (one multi-row INSERT)."""
        if not rows:
            return
        with self.engine.begin() as connection:
            connection.execute(
                insert(staged_users),
                [{"tenant": tenant, "run_id": run_id, "seq": first_seq + i, **row} for i, row in enumerate(rows)],
            )

    def complete_snapshot(self, tenant: str, run_id: str, user_count: int) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(extract_runs)
                .where(extract_runs.c.tenant == tenant, extract_runs.c.run_id == run_id)
                .values(status="complete", completed_at=_now(), user_count=user_count)
            )

    def snapshot(self, tenant: str, run_id: str) -> pd.DataFrame:
        """The run's complete snapshot as a DataFrame of `STAGED_COLUMNS` (object dtype, None for NULL)."""
        with self.engine.connect() as connection:
            status = connection.execute(
                select(extract_runs.c.status).where(extract_runs.c.tenant == tenant, extract_runs.c.run_id == run_id)
            ).scalar_one_or_none()
            if status != "complete":
                raise SnapshotMissing(
                    f"tenant {tenant!r} run {run_id!r} has no complete staged snapshot "
                    f"(status: {status or 'none'}); clear and re-run its extract task"
                )
            rows = connection.execute(
                select(*(staged_users.c[c] for c in STAGED_COLUMNS))
                .where(staged_users.c.tenant == tenant, staged_users.c.run_id == run_id)
                .order_by(staged_users.c.seq)
            ).all()
        return pd.DataFrame({c: pd.Series([r[i] for r in rows], dtype="object") for i, c in enumerate(STAGED_COLUMNS)})

    def mark_synced(self, tenant: str, run_id: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(extract_runs)
                .where(extract_runs.c.tenant == tenant, extract_runs.c.run_id == run_id)
                .values(synced_at=_now())
            )

    def last_synced(self, tenant: str, except_run: str) -> tuple[str, int] | None:
        """The most recently synced other run of the tenant and its user count.

        Empty snapshots are skipped: an extract that returned nothing (a Graph outage, a
        broken scope) is no baseline. Taken as one, it would disarm the shrink check of the
        deletion guard and make every user look changed, so entities deleted in Frankli
        would be created again on the next run.
        """
        with self.engine.connect() as connection:
            row = connection.execute(
                select(extract_runs.c.run_id, extract_runs.c.user_count)
                .where(
                    extract_runs.c.tenant == tenant,
                    extract_runs.c.run_id != except_run,
                    extract_runs.c.synced_at.is_not(None),
                    extract_runs.c.status == "complete",
                    extract_runs.c.user_count > 0,
                )
                .order_by(extract_runs.c.synced_at.desc())
                .limit(1)
            ).first()
        return (row.run_id, int(row.user_count or 0)) if row else None

    def save_document(self, tenant: str, run_id: str, kind: str, payload: Any) -> None:
        text = json.dumps(json_ready(payload), default=str, sort_keys=True, allow_nan=False)
        with self.engine.begin() as connection:
            key = (
                run_documents.c.tenant == tenant,
                run_documents.c.run_id == run_id,
                run_documents.c.kind == kind,
            )
            connection.execute(delete(run_documents).where(*key))
            connection.execute(insert(run_documents).values(tenant=tenant, run_id=run_id, kind=kind, payload=text))

    def load_document(self, tenant: str, run_id: str, kind: str) -> Any:
        with self.engine.connect() as connection:
            text = connection.execute(
                select(run_documents.c.payload).where(
                    run_documents.c.tenant == tenant, run_documents.c.run_id == run_id, run_documents.c.kind == kind
                )
            ).scalar_one_or_none()
        if text is None:
            raise SnapshotMissing(f"tenant {tenant!r} run {run_id!r} has no {kind!r} document; re-run its task")
        return json.loads(text)

    def prune(self, tenant: str, keep_runs: Iterable[str], keep_last: int = 3) -> int:
        """Drop staged rows of older runs, keeping the `keep_last` most recent and `keep_runs`."""
        with self.engine.begin() as connection:
            recent = connection.execute(
                select(extract_runs.c.run_id)
                .where(extract_runs.c.tenant == tenant)
                .order_by(extract_runs.c.started_at.desc())
                .limit(keep_last)
            ).scalars()
            keep = set(recent) | set(keep_runs)
            old = [
                r
                for r in connection.execute(
                    select(extract_runs.c.run_id).where(extract_runs.c.tenant == tenant)
                ).scalars()
                if r not in keep
            ]
            for run_id in old:
                connection.execute(
                    delete(staged_users).where(staged_users.c.tenant == tenant, staged_users.c.run_id == run_id)
                )
                connection.execute(
                    update(extract_runs)
                    .where(extract_runs.c.tenant == tenant, extract_runs.c.run_id == run_id)
                    .values(status="pruned")
                )
        return len(old)


def _now() -> datetime:
    return datetime.now(UTC)
