"""The compact record of the last synced state, per Entra user: what an incremental run plans against.

After a run whose loads both finished, staging holds one row per user of its snapshot: a
digest of the staged values, the state the run gave the user (``active``, ``disabled``,
``out_of_scope``, ``quarantined`` with the reasons, ``conflict``, ``held`` when a Frankli admin
archived it), its manager, and 64-bit hashes of its matching keys (UPN key, email key, email
fold). A delta run finds by these columns, through indexes, every user a change can touch
(`incremental.focus`) instead of reading both snapshots whole.

The record says which run it describes (`sync_states`), with a fingerprint of the tenant's
mapping, scope and validation settings; a run whose delta does not start from that run, or
whose settings changed, plans in full and replaces the record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import (
    BigInteger,
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
    func,
    insert,
    or_,
    select,
    update,
)

from frankli_sync.db_values import as_utc, chunked, one_of
from frankli_sync.schema_upgrade import add_missing_columns
from frankli_sync.staging import OBJECT_ID_MAX

metadata = MetaData()

ANALYZE_AFTER = 1_000  # rows written at once after which PostgreSQL's statistics of the record are refreshed
KEY_COLUMNS = ("upn_key", "email_key", "email_fold")
RECORD_COLUMNS = ("object_id", "digest", "state", "manager", *KEY_COLUMNS, "detail", "findings")

synced_users = Table(
    "synced_users",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("object_id", String(OBJECT_ID_MAX), primary_key=True),
    Column("digest", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("manager", String(OBJECT_ID_MAX)),
    # Hashes, not the keys: equality is all that is asked, and any length of address stays indexable.
    *(Column(name, BigInteger) for name in KEY_COLUMNS),
    Column("detail", Text),  # quarantined: the validation entry (reasons) as JSON
    Column("findings", Text),  # what the report said of the user ({kind: [entries]}), carried by incremental runs
    Index("ix_synced_users_manager", "tenant", "manager"),
    *(Index(f"ix_synced_users_{name}", "tenant", name) for name in KEY_COLUMNS),
    Index("ix_synced_users_state", "tenant", "state"),
)

sync_states = Table(
    "sync_states",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("run_id", String(250), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("snapshot_at", DateTime(timezone=True), nullable=False),
    Column("users", Integer, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    # `sinks.database.frankli_mark` after the sync's own last write to the organisation.
    Column("frankli_mark", String(64)),
)


class SyncRecord:
    """The record of one staging database (all tenants), read and written by tenant."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        with engine.begin() as connection:
            metadata.create_all(connection, checkfirst=True)
            add_missing_columns(connection, sync_states)
            add_missing_columns(connection, synced_users)

    def state(self, tenant: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(sync_states).where(sync_states.c.tenant == tenant)).first()
        return dict(row._mapping) if row else None

    def rows(self, tenant: str, object_ids: Iterable[str]) -> pd.DataFrame:
        """Record rows of these users (those the record holds), as an object-dtype frame."""
        found: list[tuple[Any, ...]] = []
        with self.engine.connect() as connection:
            ids = sorted(set(object_ids))
            for condition in one_of(synced_users.c.object_id, ids, connection.dialect.name):
                found += connection.execute(
                    select(*(synced_users.c[c] for c in RECORD_COLUMNS)).where(
                        synced_users.c.tenant == tenant, condition
                    )
                ).all()
        return _frame(found)

    def in_states(self, tenant: str, states: Iterable[str]) -> pd.DataFrame:
        with self.engine.connect() as connection:
            found = connection.execute(
                select(*(synced_users.c[c] for c in RECORD_COLUMNS)).where(
                    synced_users.c.tenant == tenant, synced_users.c.state.in_(list(states))
                )
            ).all()
        return _frame(found)

    def with_findings(self, tenant: str) -> pd.DataFrame:
        """Record rows of users the last runs reported something about (orphaned entities, manager problems)."""
        with self.engine.connect() as connection:
            found = connection.execute(
                select(*(synced_users.c[c] for c in RECORD_COLUMNS)).where(
                    synced_users.c.tenant == tenant, synced_users.c.findings.is_not(None)
                )
            ).all()
        return _frame(found)

    def touching(self, tenant: str, key_hashes: Iterable[int], managers: Iterable[str]) -> set[str]:
        """Users sharing any of these key hashes (in any key column), and users reporting to `managers`."""
        hashes = sorted({int(h) for h in key_hashes})
        found: set[str] = set()
        with self.engine.connect() as connection:
            dialect = connection.dialect.name
            by_column = [one_of(synced_users.c[c], hashes, dialect) for c in KEY_COLUMNS]  # the same chunks each
            for conditions in zip(*by_column, strict=True):
                found |= set(
                    connection.execute(
                        select(synced_users.c.object_id).where(synced_users.c.tenant == tenant, or_(*conditions))
                    ).scalars()
                )
            for condition in one_of(synced_users.c.manager, sorted(set(managers)), dialect):
                found |= set(
                    connection.execute(
                        select(synced_users.c.object_id).where(synced_users.c.tenant == tenant, condition)
                    ).scalars()
                )
        return found

    def counts(self, tenant: str) -> dict[str, int]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(synced_users.c.state, func.count())
                .where(synced_users.c.tenant == tenant)
                .group_by(synced_users.c.state)
            ).all()
        return {state: int(n) for state, n in rows}

    def save(
        self,
        tenant: str,
        run_id: str,
        fingerprint: str,
        snapshot_at: datetime,
        rows: pd.DataFrame,
        *,
        replace: bool,
        frankli_mark: str,
        dropped: Iterable[str] = (),
    ) -> bool:
        """Record a finished run: all its users (`replace`) or the ones it planned (`rows`, minus `dropped`).

        One transaction. Returns False, writing nothing, when the record already describes a
        newer snapshot (an older run's loads finishing late must not roll it back).
        """
        from frankli_sync.sinks.database import column_values, insert_columns, refresh_statistics

        with self.engine.begin() as connection:
            current = connection.execute(
                select(sync_states.c.snapshot_at).where(sync_states.c.tenant == tenant).with_for_update()
            ).scalar_one_or_none()
            if current is not None and as_utc(current) > snapshot_at:
                return False
            if replace:
                connection.execute(delete(synced_users).where(synced_users.c.tenant == tenant))
            else:
                for chunk in chunked(sorted(set(rows["object_id"]) | set(dropped))):
                    connection.execute(
                        delete(synced_users).where(synced_users.c.tenant == tenant, synced_users.c.object_id.in_(chunk))
                    )
            records = rows.assign(tenant=tenant)[["tenant", *RECORD_COLUMNS]]
            insert_columns(connection, synced_users, {c: column_values(records[c]) for c in records.columns})
            if len(records) >= ANALYZE_AFTER:
                # Without statistics PostgreSQL takes a million COPY'd rows for a few hundred and looks
                # users up through the state index, reading the whole tenant for every 2,000 ids.
                refresh_statistics(connection, [synced_users])
            connection.execute(delete(sync_states).where(sync_states.c.tenant == tenant))
            total = connection.execute(select(func.count()).where(synced_users.c.tenant == tenant)).scalar_one()
            connection.execute(
                insert(sync_states).values(
                    tenant=tenant,
                    run_id=run_id,
                    fingerprint=fingerprint,
                    snapshot_at=snapshot_at,
                    users=int(total),
                    recorded_at=datetime.now(UTC),
                    frankli_mark=frankli_mark,
                )
            )
        return True

    def advance_mark(self, tenant: str, before: str, after: str) -> bool:
        """The sync wrote to Frankli: move the recorded mark on, if it was the mark the write started from.

        A write that did not start from the recorded mark (Frankli changed behind the sync, or
        another run's write has not been recorded yet) leaves it: the next run plans in full.
        """
        with self.engine.begin() as connection:
            moved = connection.execute(
                update(sync_states)
                .where(sync_states.c.tenant == tenant, sync_states.c.frankli_mark == before)
                .values(frankli_mark=after)
            )
        return bool(moved.rowcount)

    def forget(self, tenant: str) -> None:
        """Drop the tenant's record: its next run plans in full."""
        with self.engine.begin() as connection:
            connection.execute(delete(synced_users).where(synced_users.c.tenant == tenant))
            connection.execute(delete(sync_states).where(sync_states.c.tenant == tenant))


def carried_findings(frame: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """The findings kept in the `findings` of record rows, by kind."""
    found: dict[str, list[dict[str, Any]]] = {}
    for kept in frame["findings"]:
        if isinstance(kept, str):
            for kind, entries in json.loads(kept).items():
                found.setdefault(kind, []).extend(entries)
    return found


def quarantine_entries(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The validation entries kept in the `detail` of quarantined record rows."""
    return [json.loads(d) for d in frame.loc[frame["state"] == "quarantined", "detail"] if isinstance(d, str)]


def _frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([r[i] for r in rows], dtype="object") for i, c in enumerate(RECORD_COLUMNS)})
