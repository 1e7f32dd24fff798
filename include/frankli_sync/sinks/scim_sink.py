"""Frankli's SCIM 2.0 API as a `FrankliSink`: the same plan, applied user by user over HTTP.

SCIM has no transactions, locks or audit, so the sink keeps what it needs beside staging, in the
sync's own ledger (the staging database: the `organisations` and `sync_audit` tables of
`sinks.schema`, one row per SCIM endpoint):

- **one writer per endpoint**: a session holds a lock on the endpoint for its whole life (a
  PostgreSQL session advisory lock, or a file lock beside a SQLite ledger), so a backfill's loads
  of one organisation never interleave;
- **ownership**: the endpoint records the one source it is synced from, as a database organisation
  does; another source's run stops before reading;
- **evidence**: every write the API accepted is audited as it is in the database, every write it
  refused as ``failed`` with the API's answer; a user the audit shows the sync archived is the
  sync's to restore, any other inactive user was deactivated in Frankli and stays so.

What the API accepted stays written whatever happens next (no rollback over HTTP); a retried or
cleared load reads the users again and plans only what is still missing, so it is idempotent.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, Text, delete, func, insert, select, text

from frankli_sync.config import TargetSettings
from frankli_sync.errors import SyncStopped
from frankli_sync.plan import UNMANAGED_REF, FrankliState, Plan
from frankli_sync.sinks import database
from frankli_sync.sinks.database import claim_organisation, new_quarantines, none_if_missing, write_audit
from frankli_sync.sinks.interface import AuditEntry, OrganisationOwnedElsewhere
from frankli_sync.sinks.schema import frankli_field_lengths, organisations, sync_audit
from frankli_sync.sinks.scim_http import ScimEndpoint, WriteFailure, raise_first
from frankli_sync.sinks.scim_users import (
    Attribute,
    attributes_with,
    create_body,
    listing_mark,
    newest_mark,
    part_of_state,
    patch_operations,
    person,
    state_of_listing,
)
from frankli_sync.sources.graph import RetryPolicy
from frankli_sync.transform import ENTITY_FIELDS, TEXT_FIELDS, is_missing, name_key

FAILED = "failed"  # the audit action of a write the API refused
KEEP_LISTING_MAX = 100_000  # users; a bigger endpoint is listed by each task that needs it

ledger_metadata = MetaData()
# The endpoint's users as the last task that read or wrote them left them, and the mark they were kept at:
# the next task uses them while the endpoint's mark is unchanged (the same evidence a kept plan needs).
scim_listings = Table(
    "scim_listings",
    ledger_metadata,
    Column("organisation_id", Integer, primary_key=True),
    Column("mark", String(64), nullable=False),
    Column("users", Text, nullable=False),
)


class ScimWritesFailed(RuntimeError):
    """More of one load's writes were refused than `target.max_failure_share` allows."""


class ScimSchemaMismatch(SyncStopped):
    """The endpoint does not declare the attribute the tenant's target names (`start_date_attribute`)."""


@dataclass
class Outcome:
    """The audit of one batch of writes: what was applied, what was refused."""

    applied: list[AuditEntry]
    failed: list[AuditEntry]


class ScimSession:
    """One SCIM endpoint, locked for this session; users read once per state of the endpoint."""

    def __init__(self, endpoint: ScimEndpoint, ledger: Engine, org_id: int, target: TargetSettings) -> None:
        self.endpoint, self.ledger, self.org_id, self.target = endpoint, ledger, org_id, target
        self._listing: dict[str, dict[str, Any]] | None = None
        self._stale = False  # a write's outcome is unknown (the load stopped): read again before answering
        self._mark: str | None = None  # the endpoint's mark until this session writes
        self._listing_new = False  # the listing was read or written by this session (not the kept one)
        self._partial = False  # a write was answered with a partial user: the listing is not kept
        self.discarded = False
        self.snapshot_at: datetime | None = None
        self.attempted = 0
        self.failures = 0
        self.attributes = attributes_with(target.start_date_attribute)  # what is read; `_written_attributes` writes
        self._writing: Mapping[str, Attribute] | None = None

    # --- reading ------------------------------------------------------------------------------

    def users(self) -> dict[str, dict[str, Any]]:
        """SCIM id -> user, as the endpoint holds them: the listing, with each user this session wrote as the
        server answered the write (so the mark after a load costs no second listing). The listing an earlier
        task kept stands in for it while the endpoint's mark is still the one it was kept at."""
        if self._listing is None or self._stale:
            kept = self._kept_listing()
            if kept is not None:
                self._listing, self._stale = kept, False
            elif self._listing is None or self._stale:
                self._list()
        assert self._listing is not None
        return self._listing

    def _list(self) -> None:
        self._listing = {str(r["id"]): r for r in self.endpoint.list_users(self.target.page_size)}
        self._stale, self._listing_new = False, True

    def mark(self) -> str:
        """Probed in two requests where the server can sort and filter by `meta.lastModified`, else listed."""
        if self._mark is None:
            newest = self.endpoint.newest()
            if newest is None:
                if self._listing is None or self._stale:
                    self._list()
                assert self._listing is not None
                self._mark = f"listing:{listing_mark(self._listing.values())}"
            else:
                self._mark = newest_mark(*newest)
        return self._mark

    def _kept_listing(self) -> dict[str, dict[str, Any]] | None:
        """The listing kept by the last task that read or wrote the endpoint, if its mark is the mark now."""
        query = select(scim_listings.c.mark, scim_listings.c.users).where(
            scim_listings.c.organisation_id == self.org_id
        )
        with self.ledger.connect() as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        mark = self.mark()
        if (self._listing is not None and not self._stale) or mark != row.mark:  # listed to mark, or moved on
            return None
        return {str(r["id"]): r for r in json.loads(row.users)}

    def keep_listing(self) -> None:
        """Keep the users as this session leaves them, with the endpoint's mark, for the run's next task."""
        listing, mark = self._listing, self._mark
        if not self._listing_new or listing is None or self._stale or self._partial:
            return
        if mark is None or mark.startswith("listing:"):
            return
        if len(listing) > KEEP_LISTING_MAX:
            return
        payload = json.dumps(list(listing.values()), separators=(",", ":"))
        with self.ledger.begin() as connection:
            connection.execute(delete(scim_listings).where(scim_listings.c.organisation_id == self.org_id))
            connection.execute(insert(scim_listings).values(organisation_id=self.org_id, mark=mark, users=payload))

    def refused_writes(self, run_id: str) -> int:
        query = select(func.count()).where(
            sync_audit.c.organisation_id == self.org_id, sync_audit.c.run_id == run_id, sync_audit.c.action == FAILED
        )
        with self.ledger.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def state(self) -> FrankliState:
        """The whole endpoint, listed by this session: a full plan never stands on a kept listing."""
        if not self._listing_new or self._stale:
            self._list()
        return self._state()

    def _state(self) -> FrankliState:
        return state_of_listing(self.users().values(), self._archived_by_sync(), self.attributes)

    def state_of(self, external_ids: Iterable[str], email_keys: Iterable[str]) -> FrankliState:
        external_ids, email_keys = set(external_ids), set(email_keys)
        if not external_ids and not email_keys:  # a run nothing changed for: no user to read
            return FrankliState.empty()
        return part_of_state(self._state(), external_ids, email_keys)

    def _archived_by_sync(self) -> dict[str, str | None]:
        """External id -> status before archive, for users whose last archive or restore was the sync's archive."""
        query = (
            select(sync_audit.c.external_id, sync_audit.c.action, sync_audit.c.details)
            .where(sync_audit.c.organisation_id == self.org_id, sync_audit.c.action.in_(("archive", "restore")))
            .order_by(sync_audit.c.id)
        )
        last: dict[str, str | None] = {}
        with self.ledger.connect() as connection:
            for external_id, action, details in connection.execute(query):
                if action == "archive":
                    last[external_id] = (details or {}).get("status_before") or "active"
                else:
                    last.pop(external_id, None)
        return last

    def applied_snapshot(self) -> datetime | None:
        with self.ledger.connect() as connection:
            return database.applied_snapshot(connection, self.org_id)

    def record_applied_snapshot(self, snapshot_at: datetime) -> None:
        self.snapshot_at = snapshot_at  # kept when the session ends well (`ScimSink.session`)

    def synced_users(self) -> int:
        if self._listing is None or self._stale:
            counted = self.endpoint.synced_count()
            if counted is not None:
                return counted
        return sum(1 for r in self.users().values() if r.get("externalId") and r.get("active") is not False)

    def audit_counts(self, run_id: str) -> dict[str, int]:
        with self.ledger.connect() as connection:
            return database.audit_counts(connection, self.org_id, run_id)

    def audit_rows(self, run_id: str, actions: Iterable[str]) -> pd.DataFrame:
        with self.ledger.connect() as connection:
            return database.audit_rows(connection, self.org_id, run_id, actions)

    def people_of(self, external_ids: Iterable[str]) -> dict[str, tuple[str | None, str]]:
        wanted = set(external_ids)
        if not wanted:
            return {}  # no listing just to name nobody
        return {r["externalId"]: person(r) for r in self.users().values() if r.get("externalId") in wanted}

    def discard(self) -> None:
        self.discarded = True

    # --- writing ------------------------------------------------------------------------------

    def apply_upserts(
        self, plan: Plan, run_id: str, now: datetime, quarantined: Iterable[AuditEntry] = ()
    ) -> dict[str, int]:
        """Links, creates (managers first), updates and restores, each user's write on its own."""
        outcome = Outcome([], [])
        try:
            if any(len(f) for f in (plan.links, plan.creates, plan.updates, plan.restores)):
                attributes = self._written_attributes()
                current = self.users()
                known = {r["externalId"]: sid for sid, r in current.items() if r.get("externalId")}
                names = self._entity_names(plan)
                self._apply_links(plan, outcome)
                self._apply_creates(plan, names, known, outcome, attributes)
                self._apply_updates(plan, names, known, current, outcome, attributes)
                self._apply_restores(plan, outcome)
        finally:
            self._audit(run_id, now, outcome, quarantined)
        self._check_failures(outcome)
        counts: dict[str, int] = {}
        for entry in outcome.applied:
            counts[entry.action] = counts.get(entry.action, 0) + 1
        if outcome.failed:
            counts[FAILED] = len(outcome.failed)
        return counts

    def apply_archives(self, archives: pd.DataFrame, run_id: str, now: datetime) -> int:
        """PATCH active=false per user; audited with the status a restore puts back."""
        outcome = Outcome([], [])
        records = archives.to_dict("records")
        if records:
            self.users()  # the versions each PATCH is sent against (the kept listing, while the mark holds)
        try:
            self._write(
                "archive",
                records,
                lambda r: self._patch(r["user_id"], [{"op": "replace", "path": "active", "value": False}]),
                lambda r: AuditEntry(
                    r["external_id"], r["email"], "archive", {"reason": r["reason"], "status_before": r["status"]}
                ),
                outcome,
            )
        finally:
            self._audit(run_id, now, outcome)
        self._check_failures(outcome)
        return len(outcome.applied)

    def _apply_links(self, plan: Plan, outcome: Outcome) -> None:
        self._write(
            "link",
            plan.links.to_dict("records"),
            lambda r: self._patch(r["user_id"], [{"op": "replace", "path": "externalId", "value": r["external_id"]}]),
            lambda r: AuditEntry(
                r["external_id"],
                r["email"],
                "link",
                {"kind": r["kind"], "old_external_id": none_if_missing(r.get("old_external_id"))},
            ),
            outcome,
        )

    def _apply_creates(
        self,
        plan: Plan,
        names: Mapping[str, Mapping[str, str]],
        known: dict[str, str],
        outcome: Outcome,
        attributes: Mapping[str, Attribute],
    ) -> None:
        """POST the new users a management level at a time, so each names its manager by SCIM id."""
        remaining = plan.creates.to_dict("records")
        creating = {r["external_id"] for r in remaining}
        late: list[dict[str, Any]] = []
        while remaining:
            ready = [r for r in remaining if none_if_missing(r.get("manager")) not in creating or r["manager"] in known]
            if not ready:  # a cycle of new users: create them without those managers, set them after
                ready, late = remaining, [r for r in remaining if none_if_missing(r.get("manager")) in creating]
            ready_ids = {id(r) for r in ready}
            remaining = [r for r in remaining if id(r) not in ready_ids]
            bodies = [create_body(r, names, _manager_id(r.get("manager"), known), attributes) for r in ready]
            results = self.endpoint.each(self.endpoint.create, bodies)
            for record, body, result in zip(ready, bodies, results, strict=True):
                if isinstance(result, Exception):
                    self._stale, self._mark = True, None
                    continue
                self.attempted += 1
                if isinstance(result, WriteFailure):
                    outcome.failed.append(_failure(record, "create", result))
                    creating.discard(record["external_id"])  # its reports are created without it
                    continue
                known[record["external_id"]] = str(result["id"])
                self._written(result)
                if any(key not in result for key in body if key != "schemas"):
                    self._partial = True  # answered with less than it was sent: not a listing to keep
                fields = {f: none_if_missing(record[f]) for f in (*TEXT_FIELDS, *ENTITY_FIELDS) if f in record}
                outcome.applied.append(
                    AuditEntry(record["external_id"], record.get("email"), "create", {"fields": fields})
                )
            raise_first(results)
        late = [r for r in late if r["external_id"] in known and _manager_id(r.get("manager"), known)]
        self._write(
            "manager",
            late,
            lambda r: self._patch(
                known[r["external_id"]],
                patch_operations({"manager": None}, r, {}, names, _manager_id(r.get("manager"), known)),
            ),
            None,
            outcome,
        )

    def _apply_updates(
        self,
        plan: Plan,
        names: Mapping[str, Mapping[str, str]],
        known: Mapping[str, str],
        current: Mapping[str, Mapping[str, Any]],
        outcome: Outcome,
        attributes: Mapping[str, Attribute],
    ) -> None:
        work = []
        for record in plan.updates.to_dict("records"):
            manager = _manager_id(record.get("manager"), known)
            resource = current.get(str(record["user_id"]), {})
            operations = patch_operations(record["changes"], record, resource, names, manager, attributes)
            if operations:
                work.append((record, operations))
        self._write(
            "update",
            work,
            lambda item: self._patch(str(item[0]["user_id"]), item[1]),
            lambda item: AuditEntry(
                item[0]["external_id"], item[0].get("email"), "update", {"changes": item[0]["changes"]}
            ),
            outcome,
            record_of=lambda item: item[0],
        )

    def _apply_restores(self, plan: Plan, outcome: Outcome) -> None:
        self._write(
            "restore",
            plan.restores.to_dict("records"),
            lambda r: self._patch(str(r["user_id"]), [{"op": "replace", "path": "active", "value": True}]),
            lambda r: AuditEntry(r["external_id"], r["email"], "restore", {"status": r["status"]}),
            outcome,
        )

    def _write(
        self, action: str, items: list[Any], send: Any, audited: Any, outcome: Outcome, record_of: Any = None
    ) -> None:
        """`send` each item (concurrently); the accepted ones audited by `audited`, refused ones as failed."""
        if not items:
            return
        results = self.endpoint.each(send, items)
        for item, result in zip(items, results, strict=True):
            if isinstance(result, Exception):  # not answered (the load stops): neither applied nor refused
                self._stale, self._mark = True, None
                continue
            self.attempted += 1
            if isinstance(result, WriteFailure):
                outcome.failed.append(_failure(record_of(item) if record_of else item, action, result))
                self._stale, self._mark = True, None  # a refused PATCH may have applied part of its operations
                continue
            self._written(result)
            if audited is not None:
                outcome.applied.append(audited(item))
        raise_first(results)

    def _patch(self, user_id: Any, operations: list[dict[str, Any]]) -> dict[str, Any] | WriteFailure:
        """PATCH a user if it is still the version this session read (`If-Match`; unknown: unconditional)."""
        known = (self._listing or {}).get(str(user_id)) or {}
        version = (known.get("meta") or {}).get("version")
        return self.endpoint.patch(str(user_id), operations, version if isinstance(version, str) else None)

    def _written(self, resource: Mapping[str, Any]) -> None:
        """Keep a user as the server answered this session's write (one not read back: list again)."""
        self._mark = None
        if not resource.get("id"):
            self._stale = True
        elif self._listing is not None:
            self._listing[str(resource["id"])] = dict(resource)
            self._listing_new = True

    def _entity_names(self, plan: Plan) -> dict[str, dict[str, str]]:
        """Entity field -> key -> the name to write: Frankli's spelling where a user has it, else the plan's."""
        names: dict[str, dict[str, str]] = {field: {} for field in ENTITY_FIELDS}
        table_field = {table: field for field, table in ENTITY_FIELDS.items()}
        for row in plan.entity_creates.to_dict("records"):
            names[table_field[row["table"]]][row["key"]] = row["name"]
        state = state_of_listing(self.users().values(), {}, self.attributes)
        for field, table in ENTITY_FIELDS.items():
            frame = state.entities[table]
            names[field].update(zip(name_key(frame["name"]), frame["name"], strict=True))
        return names

    def _written_attributes(self) -> Mapping[str, Attribute]:
        """What a write sends; the start date only into an attribute the endpoint declares (asked once)."""
        if self._writing is None:
            wanted = self.target.start_date_attribute
            declared = self.endpoint.declared_type(wanted) if wanted else None
            if wanted and declared not in ("dateTime", "string"):
                found = f"declares it as {declared!r}" if declared else "does not declare it for its users"
                raise ScimSchemaMismatch(
                    f"target.start_date_attribute (connection {self.target.conn_id!r}) names {wanted!r}, but the "
                    f"endpoint {found} (GET /ResourceTypes/User, /Schemas): a start date needs a dateTime or "
                    "string attribute of a User extension. Correct the setting to the attribute the endpoint "
                    "lists, or remove it and mapping.start_date; nothing was written."
                )
            self._writing = attributes_with(wanted, date_time=declared == "dateTime")
        return self._writing

    def _audit(self, run_id: str, now: datetime, outcome: Outcome, quarantined: Iterable[AuditEntry] = ()) -> None:
        with self.ledger.begin() as connection:
            fresh = new_quarantines(connection, self.org_id, run_id, quarantined)
            write_audit(connection, self.org_id, run_id, now, outcome.applied, outcome.failed, fresh)

    def _check_failures(self, outcome: Outcome) -> None:
        self.failures += len(outcome.failed)
        if not self.failures:
            return
        share = self.failures / max(self.attempted, 1)
        if share > self.target.max_failure_share:
            first = outcome.failed[0] if outcome.failed else None
            example = f" (first: {first.email or first.external_id}: {first.details.get('detail')})" if first else ""
            raise ScimWritesFailed(
                f"Frankli's SCIM API refused {self.failures} of {self.attempted} writes ({share:.1%}), more than "
                f"target.max_failure_share ({self.target.max_failure_share:.1%}){example}. The accepted writes are "
                "applied and audited; each refused one is in the run report under 'failed'. Fix what the API "
                "objects to, then clear the task: it writes only what is still missing."
            )


class ScimSink:
    """A tenant's SCIM target; its ledger is the staging database (`ledger`)."""

    kind = "scim"
    reads_when_nothing_changed = False  # a run with nothing changed in Entra sends no request

    def __init__(self, target: TargetSettings, ledger: Engine) -> None:
        self.target, self.ledger = target, ledger

    @contextmanager
    def session(self, organisation: str, source: str | None) -> Iterator[ScimSession]:
        from frankli_sync.connections import scim_endpoint

        base_url, token = scim_endpoint(self.target.conn_id)
        key = f"scim:{base_url}"
        retry = RetryPolicy(
            max_retry_after=float(self.target.max_retry_after_seconds),
            max_total_wait=float(self.target.max_retry_seconds),
        )
        with endpoint_lock(self.ledger, key):
            org_id = self._check_owner(key, source)
            endpoint = ScimEndpoint(self.target.conn_id, base_url, token, retry, self.target.concurrency)
            try:
                session = ScimSession(endpoint, self.ledger, org_id, self.target)
                yield session
                session.keep_listing()  # a read is kept whether or not the session writes
                if not session.discarded:
                    self._commit(key, org_id, source, session)
            finally:
                endpoint.close()

    def _check_owner(self, key: str, source: str | None) -> int:
        """The endpoint's ledger id; raises `OrganisationOwnedElsewhere` when another source owns it."""
        with self.ledger.begin() as connection:
            create_ledger(connection)
            row = connection.execute(
                select(organisations.c.id, organisations.c.source).where(organisations.c.name == key)
            ).first()
            if row is None:
                return claim_organisation(connection, key, None)
            if source is not None and row.source is not None and row.source != source:
                where = (
                    f"the sync's ledger in the staging database (table organisations, the row named {key!r}: "
                    "SCIM keeps no owner of its own)"
                )
                raise OrganisationOwnedElsewhere(key, row.source, source, where)
            return int(row.id)

    def _commit(self, key: str, org_id: int, source: str | None, session: ScimSession) -> None:
        with self.ledger.begin() as connection:
            claim_organisation(connection, key, source)
            if session.snapshot_at is not None:
                database.record_applied_snapshot(connection, org_id, session.snapshot_at)

    def field_lengths(self, mapping: Mapping[str, Any]) -> dict[str, int]:
        """Frankli's own column sizes: its SCIM API stores into the same schema."""
        return frankli_field_lengths(mapping)


def create_ledger(connection: Any) -> None:
    """The ledger's tables in the staging database (created when missing; Frankli's user tables are not)."""
    organisations.metadata.create_all(connection, tables=[organisations, sync_audit], checkfirst=True)
    ledger_metadata.create_all(connection, checkfirst=True)


_LOCAL_LOCKS: dict[str, threading.Lock] = {}


@contextmanager
def endpoint_lock(ledger: Engine, key: str) -> Iterator[None]:
    """Hold the endpoint against every other session of any process using this ledger, until the block ends.

    PostgreSQL: a session advisory lock on its own connection (released if the worker dies); SQLite:
    an exclusive ``flock`` on a file beside the database (likewise released by the kernel).
    """
    number = int.from_bytes(hashlib.blake2b(f"frankli_sync:{key}".encode(), digest_size=8).digest(), "big", signed=True)
    if ledger.dialect.name == "postgresql":
        with ledger.connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": number})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": number})
        return
    database_file = ledger.url.database
    if not database_file or database_file == ":memory:":
        with _LOCAL_LOCKS.setdefault(key, threading.Lock()):
            yield
        return
    lock_path = Path(f"{database_file}.scim-{number & 0xFFFFFFFF:08x}.lock")
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _manager_id(value: Any, known: Mapping[str, str]) -> str | None:
    """A planned manager (an object id, or an unmanaged Frankli user) as the manager's SCIM id."""
    if is_missing(value):
        return None
    if isinstance(value, str) and value.startswith(UNMANAGED_REF):
        return value[len(UNMANAGED_REF) :]
    return known.get(value)


def _failure(record: Mapping[str, Any], action: str, failure: WriteFailure) -> AuditEntry:
    return AuditEntry(
        none_if_missing(record.get("external_id")),
        none_if_missing(record.get("email")),
        FAILED,
        {"action": action, "status": failure.status, "detail": failure.detail},
    )
