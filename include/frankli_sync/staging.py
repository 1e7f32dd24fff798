"""Staging: each run's snapshot of Entra users, keyed by tenant and run id.

A snapshot is written page by page while extracting and only marked
``complete`` at the end, so a failed extraction never leaves a partial
snapshot that later tasks could mistake for the directory. Re-running the
extract of a run replaces that run's snapshot. Small JSON documents (the
validation outcome, the plan summary) are kept beside it for the report.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
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
    func,
    insert,
    literal,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.engine import Connection

from frankli_sync import json_text
from frankli_sync.db_values import chunked, one_of
from frankli_sync.entra import NUL, NUL_MARK, STAGED_COLUMNS
from frankli_sync.schema_upgrade import add_missing_columns
from frankli_sync.sinks.copy_text import copied_rows
from frankli_sync.sinks.database import bulk_insert, refresh_statistics

OBJECT_ID_MAX = 1024
# A delta snapshot is staged whole again (a new root) once the changes carried since its root reach this share
# of the root's users: a snapshot then costs at most a quarter of a copy to start, and reads stay near one.
LAYER_SHARE_LIMIT = 0.25
_LOCK_POLL_SECONDS = 1.0
_ANALYZE_AT = frozenset({1, 5_000, 50_000})  # staged rows of the run when PostgreSQL's statistics are refreshed

log = logging.getLogger(__name__)

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
    Column("mode", String(8)),  # full | delta
    Column("base_run_id", String(250)),  # delta: the snapshot the changes were applied to
    # A layered delta snapshot: the complete run whose rows lie under this run's own (see `Staging`).
    # NULL: the run's own rows are its whole snapshot.
    Column("root_run_id", String(250)),
    Column("resume_link", Text),  # the next Graph page to read if the task is retried
    Column("pages", Integer),
    # Evidence the read was complete, recorded when it is marked complete (DESIGN §2 Safety):
    Column("source_id", String(255)),  # what was read: the Entra tenant id, or csv:<tenant>
    Column("completeness", String(32)),  # graph_count (received vs /users/$count) | csv_parse (every record)
    Column("reported_count", Integer),  # the size the source reported (Graph) or the records parsed (CSV)
)

# Object ids a delta read reported as removed from Entra (reason: deleted | changed). Rows marked
# `inherited` were carried over from the base snapshot: they hide the root's row of a user removed since
# the root was read, and are no removal this run's read reported.
removed_users = Table(
    "removed_users",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("run_id", String(250), primary_key=True),
    Column("object_id", String(64), primary_key=True),
    Column("reason", String(16), nullable=False),
    Column("inherited", Boolean),
)

# Members (transitive) of the tenant's scope groups, per run.
scope_members = Table(
    "scope_members",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("run_id", String(250), primary_key=True),
    Column("object_id", String(64), primary_key=True),
)

# Where the next incremental read starts: the delta link and the snapshot it continues.
sync_cursors = Table(
    "sync_cursors",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("delta_link", Text, nullable=False),
    Column("snapshot_run_id", String(250), nullable=False),
    Column("full_read_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The attributes the delta link reads (its $select, comma-separated); NULL: `entra.GRAPH_SELECT`.
    Column("selected", Text, nullable=True),
)


def _staged_type(column: str) -> Any:
    """Staged values are kept whole (Text), so any length reaches validation on every backend;
    the indexed object id is bounded (Entra object ids are 36-character GUIDs)."""
    if column == "account_enabled":
        return Boolean
    return String(OBJECT_ID_MAX) if column == "object_id" else Text


staged_users = Table(
    "staged_users",
    metadata,
    Column("tenant", String(64), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("seq", Integer, nullable=False),
    *(Column(name, _staged_type(name)) for name in STAGED_COLUMNS),
    # True for rows this run's read delivered, False for rows a delta run copied from its base snapshot:
    # what an incremental run looks at (NULL: staged before this column existed, read as changed).
    Column("changed", Boolean),
    Index("ix_staged_users_run", "tenant", "run_id", "seq"),
    # Pages upsert by object id: without this every page's DELETE would scan the whole snapshot.
    Index("ix_staged_users_object", "tenant", "run_id", "object_id"),
    Index("ix_staged_users_changed", "tenant", "run_id", "changed"),
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
    """Snapshots of Entra users per tenant and run.

    A full read stages the whole directory as the run's own rows. A delta read stages only what
    changed: its own rows (the users its read delivered, and those changed since the root, carried
    over from its base) lie over the rows of its *root*, the last run whose own rows are a whole
    snapshot; a root row is hidden by an own row of the same user, or by a removal. Every read
    (`snapshot`, `rows_of`, `staged_count`) sees the union, so a delta snapshot reads as the copy
    it stands for, while staging it costs the change, not the directory. A run's rows are never
    rewritten while another run lies over them (`_detach_dependents`), and a root is kept as long
    as a run lying over it is (`prune`).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        with engine.begin() as connection:
            metadata.create_all(connection, checkfirst=True)
            add_missing_columns(connection, extract_runs)
            add_missing_columns(connection, staged_users)
            add_missing_columns(connection, removed_users)
            add_missing_columns(connection, sync_cursors)

    @contextmanager
    def extract_lock(self, tenant: str, wait_seconds: float = 3600.0) -> Iterator[None]:
        """Hold the tenant's extraction lock: extracts of one tenant never interleave.

        The delta link is per tenant: two runs reading from it at once would each apply the
        same changes to a different base and race to store the next link. PostgreSQL staging
        takes a session advisory lock on a connection held for the extract; SQLite staging
        (one machine) an exclusive lock on a file beside the database. Both are released when
        the process dies, so a killed worker never leaves the tenant locked.
        """
        if self.engine.dialect.name == "postgresql":
            with _postgres_lock(self.engine, f"frankli_sync:extract:{tenant}", tenant, wait_seconds):
                yield
        elif self.engine.url.database and self.engine.url.database != ":memory:":
            with _file_lock(Path(f"{self.engine.url.database}.extract-{tenant}.lock"), tenant, wait_seconds):
                yield
        else:  # an in-memory database lives in one process: nothing else can extract into it
            yield

    def begin_snapshot(self, tenant: str, run_id: str, source: str, base_run_id: str | None = None) -> None:
        """Start (or restart) the run's snapshot: rows of an earlier attempt are dropped.

        With `base_run_id` (a delta read) the new snapshot continues that run's: it lies over the
        base's root and starts with the base's own rows and removals (see the class). Once those
        reach `LAYER_SHARE_LIMIT` of the root, the base's snapshot is copied whole instead, by one
        INSERT … SELECT, and the new run is a root itself. The delta's changes are applied after.
        """
        with self.engine.begin() as connection:
            _detach_dependents(connection, tenant, run_id)
            root: str | None = None
            if base_run_id == run_id:
                # Re-extracting the run the delta link continues from (a cleared task): what it holds is the
                # base, so it is kept, as rows and removals this read did not deliver.
                root = (_record(connection, tenant, run_id) or {}).get("root_run_id")
                connection.execute(
                    update(staged_users).where(*_own(staged_users, tenant, run_id)).values(changed=False)
                )
                connection.execute(
                    update(removed_users).where(*_own(removed_users, tenant, run_id)).values(inherited=True)
                )
                connection.execute(delete(scope_members).where(*_own(scope_members, tenant, run_id)))
            else:
                for table in (staged_users, removed_users, scope_members):
                    connection.execute(delete(table).where(*_own(table, tenant, run_id)))
                if base_run_id:
                    root = _continue(connection, tenant, run_id, base_run_id)
            connection.execute(
                delete(extract_runs).where(extract_runs.c.tenant == tenant, extract_runs.c.run_id == run_id)
            )
            connection.execute(
                insert(extract_runs).values(
                    tenant=tenant,
                    run_id=run_id,
                    status="extracting",
                    source=source,
                    started_at=_now(),
                    mode="delta" if base_run_id else "full",
                    base_run_id=base_run_id,
                    root_run_id=root,
                    pages=0,
                )
            )

    def extraction(self, tenant: str, run_id: str) -> dict[str, Any] | None:
        """The run's extraction record (status, mode, resume link …), if any."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(extract_runs).where(extract_runs.c.tenant == tenant, extract_runs.c.run_id == run_id)
            ).first()
        return dict(row._mapping) if row else None

    def apply_page(
        self,
        tenant: str,
        run_id: str,
        rows: list[dict[str, Any]],
        removed: dict[str, str],
        next_link: str | None,
    ) -> None:
        """Upsert one page of users by object id, record removals, remember where to resume.

        One transaction per page: a retried page replaces what it wrote, so replaying a page
        after a failure neither duplicates nor loses a user.
        """
        rows = [_stageable(tenant, row) for row in rows]
        ids = [r["object_id"] for r in rows if r.get("object_id")] + list(removed)
        with self.engine.begin() as connection:
            key = _own(staged_users, tenant, run_id)
            for condition in one_of(staged_users.c.object_id, ids, connection.dialect.name):
                connection.execute(delete(staged_users).where(*key, condition))
            first_seq = _next_seq(connection, tenant, run_id)
            # One bulk load per page (COPY on PostgreSQL, one executemany INSERT on SQLite).
            bulk_insert(
                connection,
                staged_users,
                [
                    {"tenant": tenant, "run_id": run_id, "seq": first_seq + i, **r, "changed": True}
                    for i, r in enumerate(rows)
                ],
            )
            if any(first_seq < n <= first_seq + len(rows) for n in _ANALYZE_AT):
                # A table PostgreSQL has no statistics for is planned as tiny: every page's DELETE … IN (…)
                # then scans the whole snapshot, comparing each row with the whole list (quadratic: 494 s
                # for 100,000 users). Statistics taken early make it use the (tenant, run_id, object_id) index.
                refresh_statistics(connection, [staged_users])
            if removed:
                gone = _own(removed_users, tenant, run_id)
                for chunk in chunked(list(removed), 500):
                    connection.execute(delete(removed_users).where(*gone, removed_users.c.object_id.in_(chunk)))
                connection.execute(
                    insert(removed_users),
                    [{"tenant": tenant, "run_id": run_id, "object_id": i, "reason": r} for i, r in removed.items()],
                )
            connection.execute(
                update(extract_runs)
                .where(extract_runs.c.tenant == tenant, extract_runs.c.run_id == run_id)
                .values(resume_link=next_link, pages=extract_runs.c.pages + 1)
            )

    def add_scope_members(self, tenant: str, run_id: str, object_ids: list[str]) -> None:
        if not object_ids:
            return
        with self.engine.begin() as connection:
            key = (scope_members.c.tenant == tenant, scope_members.c.run_id == run_id)
            known = set(
                connection.execute(
                    select(scope_members.c.object_id).where(*key, scope_members.c.object_id.in_(object_ids))
                ).scalars()
            )
            new = sorted(set(object_ids) - known)
            if new:
                connection.execute(
                    insert(scope_members), [{"tenant": tenant, "run_id": run_id, "object_id": i} for i in new]
                )

    def scope_member_ids(self, tenant: str, run_id: str) -> set[str]:
        with self.engine.connect() as connection:
            return set(
                connection.execute(
                    select(scope_members.c.object_id).where(
                        scope_members.c.tenant == tenant, scope_members.c.run_id == run_id
                    )
                ).scalars()
            )

    def removed_ids(self, tenant: str, run_id: str) -> dict[str, str]:
        """The users this run's read reported as removed (not those carried over from its base)."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(removed_users.c.object_id, removed_users.c.reason).where(
                    *_own(removed_users, tenant, run_id), removed_users.c.inherited.is_not(True)
                )
            ).all()
        return dict(rows)

    def staged_count(self, tenant: str, run_id: str) -> int:
        """The users the run's snapshot holds (its own rows and the root's it does not hide)."""
        with self.engine.connect() as connection:
            view = _snapshot_rows(tenant, run_id, _root_of(connection, tenant, run_id), lambda t: [t.c.seq])
            return connection.execute(select(func.count()).select_from(view.subquery())).scalar_one()

    def cursor(self, tenant: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(sync_cursors).where(sync_cursors.c.tenant == tenant)).first()
        return dict(row._mapping) if row else None

    def save_cursor(
        self, tenant: str, delta_link: str, snapshot_run_id: str, full_read: bool, selected: str | None = None
    ) -> None:
        now = _now()
        with self.engine.begin() as connection:
            previous = connection.execute(
                select(sync_cursors.c.full_read_at).where(sync_cursors.c.tenant == tenant)
            ).scalar_one_or_none()
            connection.execute(delete(sync_cursors).where(sync_cursors.c.tenant == tenant))
            connection.execute(
                insert(sync_cursors).values(
                    tenant=tenant,
                    delta_link=delta_link,
                    snapshot_run_id=snapshot_run_id,
                    full_read_at=now if full_read or previous is None else previous,
                    updated_at=now,
                    selected=selected,
                )
            )

    def complete_snapshot(
        self,
        tenant: str,
        run_id: str,
        user_count: int,
        *,
        source_id: str | None = None,
        completeness: str | None = None,
        reported_count: int | None = None,
    ) -> None:
        """Mark the run's snapshot complete, with the evidence that the read was (see `extract_runs`)."""
        with self.engine.begin() as connection:
            connection.execute(
                update(extract_runs)
                .where(extract_runs.c.tenant == tenant, extract_runs.c.run_id == run_id)
                .values(
                    status="complete",
                    completed_at=_now(),
                    user_count=user_count,
                    source_id=source_id,
                    completeness=completeness,
                    reported_count=reported_count,
                )
            )
            # The later tasks look rows of this run up by object id; statistics that still describe the
            # run as the handful of rows seen early (or, for a delta run's copied snapshot, not at all)
            # make PostgreSQL walk the whole run in `seq` order for each lookup instead (0.36 s per
            # 2,000 ids at 1,000,000 users).
            refresh_statistics(connection, [staged_users])

    def snapshot(self, tenant: str, run_id: str) -> pd.DataFrame:
        """The run's complete snapshot as a DataFrame of `STAGED_COLUMNS` (object dtype, None for NULL)."""
        self.require_complete(tenant, run_id)
        return self._rows(tenant, run_id, None).drop(columns="_seq")

    def require_complete(self, tenant: str, run_id: str) -> None:
        """Raise `SnapshotMissing` unless the run's snapshot is complete."""
        with self.engine.connect() as connection:
            status = connection.execute(
                select(extract_runs.c.status).where(extract_runs.c.tenant == tenant, extract_runs.c.run_id == run_id)
            ).scalar_one_or_none()
        if status != "complete":
            raise SnapshotMissing(
                f"tenant {tenant!r} run {run_id!r} has no complete staged snapshot "
                f"(status: {status or 'none'}); clear and re-run its extract task"
            )

    def changed_rows(self, tenant: str, run_id: str) -> pd.DataFrame:
        """The rows this run's own read delivered (all of a full read; a delta read's changes), in order."""
        delivered = self._rows(tenant, run_id, lambda t: t.c.changed.is_not(False), layered=False)
        return delivered.drop(columns="_seq")

    def changed_ids(self, tenant: str, run_id: str) -> set[str]:
        """The object ids of `changed_rows`."""
        with self.engine.connect() as connection:
            return set(
                connection.execute(
                    select(staged_users.c.object_id).where(
                        staged_users.c.tenant == tenant,
                        staged_users.c.run_id == run_id,
                        staged_users.c.changed.is_not(False),
                    )
                ).scalars()
            )

    def rows_of(self, tenant: str, run_id: str, object_ids: Iterable[str]) -> pd.DataFrame:
        """The run's staged rows of these users (those it holds), in snapshot order."""
        ids = sorted(set(object_ids))
        dialect = self.engine.dialect.name
        lists = [ids] if dialect == "postgresql" else chunked(ids)  # one = ANY(array), or IN lists
        # Unordered in SQL (sorted below): an ORDER BY seq invites a walk of the whole run by its seq index.
        frames = [
            self._rows(tenant, run_id, lambda t, some=some: one_of(t.c.object_id, some, dialect)[0], ordered=False)
            for some in lists
            if some
        ]
        if not frames:
            return _snapshot_frame([])
        rows = pd.concat(frames, ignore_index=True)
        return rows.sort_values("_seq", kind="stable").drop(columns="_seq").reset_index(drop=True)

    def _rows(
        self, tenant: str, run_id: str, condition: Condition | None, ordered: bool = True, layered: bool = True
    ) -> pd.DataFrame:
        """The run's rows meeting `condition` (own and, if `layered`, the root's it does not hide), with `_seq`."""
        with self.engine.connect() as connection:
            root = _root_of(connection, tenant, run_id) if layered else None
            view = _snapshot_rows(
                tenant, run_id, root, lambda t: [*(t.c[c] for c in STAGED_COLUMNS), t.c.seq], condition
            ).subquery()
            query = select(view)
            query = query.order_by(view.c.seq) if ordered else query
            if condition is None and connection.dialect.name == "postgresql":  # a whole snapshot
                return copied_rows(connection, query, [*STAGED_COLUMNS, "_seq"])
            rows = connection.execute(query).all()
        columns = list(zip(*rows, strict=True)) if rows else [()] * (len(STAGED_COLUMNS) + 1)
        frame = pd.DataFrame(
            {c: pd.Series(columns[i], dtype="object") for i, c in enumerate(STAGED_COLUMNS)},
            index=pd.RangeIndex(len(rows)),
        )
        frame["_seq"] = pd.Series(columns[-1], dtype="int64")
        return frame

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
        text = json_text.document(payload)
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
        return json_text.loads(text)

    def document_digest(self, tenant: str, run_id: str, kind: str) -> str | None:
        """A digest of the document's stored text (None: no such document): whether it was written again."""
        with self.engine.connect() as connection:
            stored = connection.execute(
                select(run_documents.c.payload).where(
                    run_documents.c.tenant == tenant, run_documents.c.run_id == run_id, run_documents.c.kind == kind
                )
            ).scalar_one_or_none()
        return hashlib.sha256(stored.encode()).hexdigest()[:32] if stored is not None else None

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
            # A kept run's root stays: the kept run's snapshot is read through it.
            roots = connection.execute(
                select(extract_runs.c.root_run_id).where(
                    extract_runs.c.tenant == tenant,
                    extract_runs.c.run_id.in_(sorted(keep)),
                    extract_runs.c.root_run_id.is_not(None),
                )
            ).scalars()
            keep |= set(roots)
            old = [
                r
                for r in connection.execute(
                    select(extract_runs.c.run_id).where(extract_runs.c.tenant == tenant)
                ).scalars()
                if r not in keep
            ]
            for run_id in old:
                for table in (staged_users, removed_users):
                    connection.execute(delete(table).where(*_own(table, tenant, run_id)))
                connection.execute(
                    update(extract_runs)
                    .where(extract_runs.c.tenant == tenant, extract_runs.c.run_id == run_id)
                    .values(status="pruned")
                )
        return len(old)


class ExtractLocked(RuntimeError):
    """Another run of the tenant kept the extraction lock for longer than we wait."""


def _waited_too_long(tenant: str, wait_seconds: float) -> ExtractLocked:
    return ExtractLocked(
        f"tenant {tenant}: another run has been extracting for over {wait_seconds:.0f} s and holds the "
        "extraction lock; this extract did not start. It is retried; look for a stuck extract task of this tenant."
    )


@contextmanager
def _postgres_lock(engine: Engine, name: str, tenant: str, wait_seconds: float) -> Iterator[None]:
    key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
    deadline = time.monotonic() + wait_seconds
    with engine.connect() as connection:
        while not connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one():
            connection.commit()
            if time.monotonic() > deadline:
                raise _waited_too_long(tenant, wait_seconds)
            log.info("tenant %s: another run is extracting; waiting for it to finish", tenant)
            time.sleep(_LOCK_POLL_SECONDS)
        connection.commit()  # a session lock outlives the transaction; don't sit idle in one
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()


@contextmanager
def _file_lock(path: Path, tenant: str, wait_seconds: float) -> Iterator[None]:
    deadline = time.monotonic() + wait_seconds
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise _waited_too_long(tenant, wait_seconds) from None
                log.info("tenant %s: another run is extracting; waiting for it to finish", tenant)
                time.sleep(_LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


Condition = Callable[[Any], Any]  # a condition on a staged_users table or alias


def _own(table: Table, tenant: str, run_id: str) -> tuple[Any, Any]:
    """The rows of `table` that belong to the run itself."""
    return (table.c.tenant == tenant, table.c.run_id == run_id)


def _record(connection: Connection, tenant: str, run_id: str) -> dict[str, Any] | None:
    row = connection.execute(select(extract_runs).where(*_own(extract_runs, tenant, run_id))).first()
    return dict(row._mapping) if row else None


def _root_of(connection: Connection, tenant: str, run_id: str) -> str | None:
    return connection.execute(
        select(extract_runs.c.root_run_id).where(*_own(extract_runs, tenant, run_id))
    ).scalar_one_or_none()


def _snapshot_rows(
    tenant: str,
    run_id: str,
    root: str | None,
    columns: Callable[[Any], list[Any]],
    condition: Condition | None = None,
) -> Any:
    """SELECT `columns` of the run's snapshot: its own rows, and the root's rows no own row or removal hides."""
    own = select(*columns(staged_users)).where(
        *_own(staged_users, tenant, run_id), *([condition(staged_users)] if condition else [])
    )
    return own if root is None else union_all(own, _uncovered(tenant, run_id, root, columns, condition))


def _uncovered(
    tenant: str, run_id: str, root: str, columns: Callable[[Any], list[Any]], condition: Condition | None = None
) -> Any:
    """SELECT `columns` of the root's rows that no own row or removal of the run hides."""
    under, mine = staged_users.alias("under"), staged_users.alias("mine")
    shadowed = select(literal(1)).where(*_own(mine, tenant, run_id), mine.c.object_id == under.c.object_id)
    gone = select(literal(1)).where(
        *_own(removed_users, tenant, run_id), removed_users.c.object_id == under.c.object_id
    )
    return select(*columns(under)).where(
        *_own(under, tenant, root), ~shadowed.exists(), ~gone.exists(), *([condition(under)] if condition else [])
    )


def _as_own_rows(tenant: str, run_id: str) -> Callable[[Any], list[Any]]:
    """Columns that copy staged rows into the run as rows its read did not deliver (`changed` false)."""
    return lambda t: [literal(tenant), literal(run_id), t.c.seq, *(t.c[c] for c in STAGED_COLUMNS), literal(False)]


_COPY_COLUMNS = ["tenant", "run_id", "seq", *STAGED_COLUMNS, "changed"]


def _next_seq(connection: Connection, tenant: str, run_id: str) -> int:
    """The seq after the run's last row: its own rows always follow the root's."""
    for run in (run_id, _root_of(connection, tenant, run_id)):
        if run is None:
            break
        last = connection.execute(select(func.max(staged_users.c.seq)).where(*_own(staged_users, tenant, run))).scalar()
        if last is not None:
            return int(last) + 1
    return 0


def _continue(connection: Connection, tenant: str, run_id: str, base_run_id: str) -> str | None:
    """Start a delta snapshot of `run_id` from `base_run_id`'s; returns the root it lies over (None: copied whole)."""
    base_root = (_record(connection, tenant, base_run_id) or {}).get("root_run_id")
    if base_root is None:
        return base_run_id  # the base is whole: lie straight over it
    carried = sum(
        connection.execute(select(func.count()).where(*_own(table, tenant, base_run_id))).scalar_one()
        for table in (staged_users, removed_users)
    )
    root_users = (_record(connection, tenant, base_root) or {}).get("user_count") or 0
    copy = _as_own_rows(tenant, run_id)
    carried_rows = select(*copy(staged_users)).where(*_own(staged_users, tenant, base_run_id))
    connection.execute(insert(staged_users).from_select(_COPY_COLUMNS, carried_rows))
    if carried >= LAYER_SHARE_LIMIT * max(root_users, 1):
        # The changes since the root have grown: copy the root's rows the base still reads too; a new root.
        connection.execute(
            insert(staged_users).from_select(_COPY_COLUMNS, _uncovered(tenant, base_run_id, base_root, copy))
        )
        return None
    carried_removals = select(
        literal(tenant), literal(run_id), removed_users.c.object_id, removed_users.c.reason, literal(True)
    ).where(*_own(removed_users, tenant, base_run_id))
    connection.execute(
        insert(removed_users).from_select(["tenant", "run_id", "object_id", "reason", "inherited"], carried_removals)
    )
    return base_root


def _detach_dependents(connection: Connection, tenant: str, run_id: str) -> None:
    """Before the run's rows are rewritten, give each snapshot lying over them the rows it reads from them."""
    dependents = connection.execute(
        select(extract_runs.c.run_id).where(
            extract_runs.c.tenant == tenant,
            extract_runs.c.root_run_id == run_id,
            extract_runs.c.run_id != run_id,
            extract_runs.c.status != "pruned",
        )
    ).scalars()
    for dependent in list(dependents):
        rows = _uncovered(tenant, dependent, run_id, _as_own_rows(tenant, dependent))
        connection.execute(insert(staged_users).from_select(_COPY_COLUMNS, rows))
        connection.execute(update(extract_runs).where(*_own(extract_runs, tenant, dependent)).values(root_run_id=None))
        log.info("tenant %s: run %s no longer lies over run %s, which is staged again", tenant, dependent, run_id)


def _stageable(tenant: str, row: dict[str, Any]) -> dict[str, Any]:
    """A source row as staging holds it: NUL recorded as ␀; an object id that is no id refused."""
    object_id = row.get("object_id")
    if isinstance(object_id, str) and len(object_id) > OBJECT_ID_MAX:
        raise ValueError(
            f"tenant {tenant}: user {row.get('user_principal_name')!r} has an object id of {len(object_id)} "
            f"characters (Entra object ids are GUIDs); fix the source"
        )
    if NUL in "".join([v for v in row.values() if isinstance(v, str)]):
        return {k: v.replace(NUL, NUL_MARK) if isinstance(v, str) else v for k, v in row.items()}
    return row


def _snapshot_frame(rows: Any) -> pd.DataFrame:
    columns = list(zip(*rows, strict=True)) if len(rows) else [()] * len(STAGED_COLUMNS)
    return pd.DataFrame({c: pd.Series(columns[i], dtype="object") for i, c in enumerate(STAGED_COLUMNS)})


def _now() -> datetime:
    return datetime.now(UTC)
