"""Frankli's database as a `FrankliSink`: the set-based writes of `sinks.database` behind the interface."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from frankli_sync.plan import FrankliState, Plan
from frankli_sync.sinks import database
from frankli_sync.sinks.interface import AuditEntry
from frankli_sync.sinks.schema import frankli_field_lengths, users


class DatabaseSession:
    """One organisation of the database, locked, in one transaction (`database.organisation_transaction`)."""

    def __init__(self, connection: Connection, org_id: int) -> None:
        self.connection, self.org_id = connection, org_id

    def mark(self) -> str:
        return database.frankli_mark(self.connection, self.org_id)

    def state(self) -> FrankliState:
        return database.read_state(self.connection, self.org_id)

    def state_of(self, external_ids: Iterable[str], email_keys: Iterable[str]) -> FrankliState:
        return database.read_state_of(self.connection, self.org_id, external_ids, email_keys)

    def applied_snapshot(self) -> datetime | None:
        return database.applied_snapshot(self.connection, self.org_id)

    def record_applied_snapshot(self, snapshot_at: datetime) -> None:
        database.record_applied_snapshot(self.connection, self.org_id, snapshot_at)

    def apply_upserts(
        self, plan: Plan, run_id: str, now: datetime, quarantined: Iterable[AuditEntry] = ()
    ) -> dict[str, int]:
        return database.apply_upserts(self.connection, self.org_id, plan, run_id, now, quarantined=quarantined)

    def apply_archives(self, archives: pd.DataFrame, run_id: str, now: datetime) -> int:
        return database.apply_archives(self.connection, self.org_id, archives, run_id, now)

    def synced_users(self) -> int:
        synced = (users.c.organisation_id == self.org_id, users.c.external_id.is_not(None))
        query = select(func.count()).where(*synced, users.c.status != "archived")
        return int(self.connection.execute(query).scalar_one())

    def refused_writes(self, run_id: str) -> int:
        return 0  # one transaction: the database takes the whole load or none of it

    def audit_counts(self, run_id: str) -> dict[str, int]:
        return database.audit_counts(self.connection, self.org_id, run_id)

    def audit_rows(self, run_id: str, actions: Iterable[str]) -> pd.DataFrame:
        return database.audit_rows(self.connection, self.org_id, run_id, actions)

    def people_of(self, external_ids: Iterable[str]) -> dict[str, tuple[str | None, str]]:
        return database.people_of(self.connection, self.org_id, external_ids)

    def discard(self) -> None:
        self.connection.rollback()


class DatabaseSink:
    """The Frankli database behind an Airflow connection (`conn_id`); an engine per session, closed after."""

    kind = "database"
    reads_when_nothing_changed = True

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id

    @contextmanager
    def session(self, organisation: str, source: str | None) -> Iterator[DatabaseSession]:
        from frankli_sync.connections import engine_for

        engine = engine_for(self.conn_id)
        try:
            with database.organisation_transaction(engine, organisation, source) as (connection, org_id):
                yield DatabaseSession(connection, org_id)
        finally:
            engine.dispose()

    def field_lengths(self, mapping: Mapping[str, Any]) -> dict[str, int]:
        return frankli_field_lengths(mapping)
