"""Frankli database sink: read an organisation's state, apply a plan in one transaction.

Every write is set-based, never a statement per user:

- new rows (entities, users, audit) go in with one bulk load: ``COPY … FROM STDIN``
  on PostgreSQL, one executemany ``INSERT`` elsewhere (SQLite, in process);
- changes to existing users are staged in a temporary table with the same bulk
  load, then applied by one ``UPDATE users … FROM <temp> WHERE users.id = <temp>.id``.

The same statements run on SQLite (the embedded default) and PostgreSQL, with the
same run clock, so both hold the same rows for the same input (tests compare dumps).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    JSON,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection

from frankli_sync import json_text
from frankli_sync.db_values import as_utc, chunked, one_of
from frankli_sync.entra import NUL, NUL_MARK
from frankli_sync.json_text import dumps, loads_many
from frankli_sync.plan import SYNC, USER_STATE_COLUMNS, FrankliState, Plan
from frankli_sync.sinks.copy_text import copy_payload
from frankli_sync.sinks.interface import AuditEntry, OrganisationOwnedElsewhere
from frankli_sync.sinks.schema import ENTITY_TABLES, create_schema, organisations, sync_audit, users
from frankli_sync.transform import ENTITY_FIELDS, TEXT_FIELDS, name_key


@dataclass(frozen=True)
class AuditColumns:
    """Audit rows as columns, their details as JSON text: a first sync's million creates without an object each."""

    actions: list[str]
    external_ids: list[str | None]
    emails: list[str | None]
    details: list[str]

    def __len__(self) -> int:
        return len(self.details)

    @classmethod
    def of(cls, entries: list[AuditEntry]) -> AuditColumns:
        return cls(
            [e.action for e in entries],
            [e.external_id for e in entries],
            [e.email for e in entries],
            [dumps(e.details) for e in entries],
        )


@contextmanager
def organisation_transaction(
    engine: Engine, organisation: str, source: str | None = None
) -> Iterator[tuple[Connection, int]]:
    """One transaction on the organisation, holding its lock: loads of one organisation never interleave.

    The lock is taken before anything is read, so whatever the caller plans inside sees every
    write of the load before it (a backfill may run several runs at once): PostgreSQL takes a
    transaction-level advisory lock on the organisation's name, then its row; SQLite starts
    the transaction with ``BEGIN IMMEDIATE`` (the database's write lock).

    `source` (an Entra tenant id or ``csv:<tenant>``) is checked against the source the
    organisation records: an organisation without one is claimed (kept if the transaction
    commits), one synced from another source raises `OrganisationOwnedElsewhere`.
    None skips the check (reading run results only).
    """
    with engine.begin() as connection:
        _lock_organisation(connection, organisation)
        create_schema(connection)
        yield connection, claim_organisation(connection, organisation, source)


def claim_organisation(connection: Connection, organisation: str, source: str | None) -> int:
    """The organisation's id, its row locked; created, or claimed by `source` when it records none.

    Raises `OrganisationOwnedElsewhere` when it records another source (None: not checked).
    """
    row = connection.execute(
        select(organisations.c.id, organisations.c.source).where(organisations.c.name == organisation)
    ).first()
    if row is None:
        created = connection.execute(insert(organisations).values(name=organisation, source=source))
        org_id = created.inserted_primary_key[0]
        recorded = source
    else:
        org_id, recorded = row
    connection.execute(select(organisations.c.id).where(organisations.c.id == org_id).with_for_update())
    if source is not None and recorded is None:
        connection.execute(update(organisations).where(organisations.c.id == org_id).values(source=source))
    elif source is not None and recorded != source:
        raise OrganisationOwnedElsewhere(organisation, recorded, source)
    return int(org_id)


def _lock_organisation(connection: Connection, organisation: str) -> None:
    if connection.dialect.name == "sqlite":
        # pysqlite starts transactions lazily (at the first write): two loads would both read and
        # plan before either wrote. IMMEDIATE takes the write lock now; the other waits (busy_timeout).
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif connection.dialect.name == "postgresql":
        # Before the row exists (the first load) there is nothing to lock with FOR UPDATE.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(organisation)})


def _lock_key(organisation: str) -> int:
    """A stable signed 64-bit key for PostgreSQL advisory locks."""
    digest = hashlib.blake2b(f"frankli_sync:organisation:{organisation}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def applied_snapshot(connection: Connection, org_id: int) -> datetime | None:
    """The instant of the newest Entra snapshot applied to the organisation (UTC), if any."""
    value = connection.execute(
        select(organisations.c.synced_snapshot_at).where(organisations.c.id == org_id)
    ).scalar_one_or_none()
    if value is None:
        return None
    return as_utc(value)


def record_applied_snapshot(connection: Connection, org_id: int, snapshot_at: datetime) -> None:
    connection.execute(update(organisations).where(organisations.c.id == org_id).values(synced_snapshot_at=snapshot_at))


def frankli_mark(connection: Connection, org_id: int) -> str:
    """A digest of aggregates of the organisation's users and entities: changes when anything is written.

    Counts, largest ids, latest update and deletion times, and sums over the reference columns
    and text lengths: a sync's own loads and a Frankli admin's edits (an archive, a deleted
    department, a changed manager, an edited name) all move it. An incremental run compares it
    with the one recorded after the sync's own last write (`incremental`): a difference means
    Frankli changed behind the sync, and the run plans in full. One scan of each table.
    """

    def text_length(*columns: Any) -> Any:
        return sum((func.coalesce(func.length(c), 0) for c in columns), literal(0))

    def reference_sum(*columns: Any) -> Any:
        return sum((func.coalesce(c, 0) for c in columns), literal(0))

    u = users.c
    parts: list[Any] = list(
        connection.execute(
            select(
                func.count(),
                func.max(u.id),
                func.max(u.updated_at),
                func.sum(reference_sum(u.manager_id, u.role_id, u.department_id, u.site_id)),
                func.sum(text_length(u.external_id, u.email, u.first_name, u.last_name, u.status, u.archived_by)),
            ).where(u.organisation_id == org_id)
        ).one()
    )
    for table in ENTITY_TABLES.values():
        parts += connection.execute(
            select(
                func.count(),
                func.max(table.c.id),
                func.count(table.c.deleted_at),
                func.max(table.c.deleted_at),
                func.sum(func.length(table.c.name)),
            ).where(table.c.organisation_id == org_id)
        ).one()
    text = json.dumps([_markable(p) for p in parts])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _markable(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if value is None or isinstance(value, str):
        return value
    return int(value)


def read_state(connection: Connection, org_id: int) -> FrankliState:
    """The organisation's users and entities as object-dtype frames (ints stay ints, NULL is None)."""
    user_rows = connection.execute(
        select(*(users.c[c] for c in USER_STATE_COLUMNS)).where(users.c.organisation_id == org_id).order_by(users.c.id)
    )
    return FrankliState(users=_frame(user_rows, USER_STATE_COLUMNS), entities=read_state_entities(connection, org_id))


def read_state_of(
    connection: Connection, org_id: int, external_ids: Iterable[str], email_keys: Iterable[str]
) -> FrankliState:
    """The part of the organisation an incremental plan needs (DESIGN §2: the same matches as `read_state`).

    Users linked to `external_ids`; users whose email, trimmed and A-Z lower-cased, is one of
    `email_keys`; every user whose email holds anything but printable ASCII (their keys and
    folds are only computed in Python, so none is missed); and the managers of all of these. Entities are read whole
    (they are few). On ASCII text SQL's ``lower`` is `transform.email_key`.
    """
    org = users.c.organisation_id == org_id
    ascii_keys = sorted({k for k in email_keys if k and k.isascii()})
    conditions = one_of(users.c.external_id, sorted(set(external_ids)), connection.dialect.name)
    # No index serves the keys (Frankli's schema indexes the email as stored): on PostgreSQL one scan of
    # the organisation answers every key (a hashed = ANY) and the non-ASCII emails at once, where a scan per
    # 2,000 keys cost ~1 s each at 1,000,000 users. Emails with anything but printable ASCII (non-ASCII
    # letters, tabs, line breaks) are all read.
    if connection.dialect.name == "postgresql":
        keys = bindparam("email_keys", ascii_keys, type_=ARRAY(String))
        conditions.append(
            or_(func.lower(func.trim(users.c.email)) == any_(keys), users.c.email.op("~")(r"[^\x20-\x7e]"))
        )
    else:
        conditions += [func.lower(func.trim(users.c.email)).in_(chunk) for chunk in chunked(ascii_keys)]
        conditions.append(users.c.email.op("GLOB")("*[^ -~]*"))
    columns = [users.c[c] for c in USER_STATE_COLUMNS]
    found: dict[int, tuple[Any, ...]] = {}
    for condition in conditions:
        for row in connection.execute(select(*columns).where(org, condition)):
            found[row[0]] = tuple(row)
    manager_ids = sorted({r[USER_STATE_COLUMNS.index("manager_id")] for r in found.values()} - set(found) - {None})
    for condition in one_of(users.c.id, manager_ids, connection.dialect.name):
        for row in connection.execute(select(*columns).where(org, condition)):
            found[row[0]] = tuple(row)
    rows = [found[i] for i in sorted(found)]
    return FrankliState(users=_frame(rows, USER_STATE_COLUMNS), entities=read_state_entities(connection, org_id))


def read_state_entities(connection: Connection, org_id: int) -> dict[str, pd.DataFrame]:
    entities = {}
    for name, table in ENTITY_TABLES.items():
        rows = connection.execute(
            select(table.c.id, table.c.name, table.c.deleted_at)
            .where(table.c.organisation_id == org_id)
            .order_by(table.c.id)
        )
        entities[name] = _frame(rows, ("id", "name", "deleted_at"))
    return entities


def _frame(result: Iterable[Any], columns: Iterable[str]) -> pd.DataFrame:
    columns = tuple(columns)
    rows = [tuple(r) for r in result]
    return pd.DataFrame({c: pd.Series([r[i] for r in rows], dtype="object") for i, c in enumerate(columns)})


COPY_ROWS = 50_000  # rows formatted and sent to PostgreSQL at once
ANALYZE_AFTER_CREATES = 10_000  # users created at once after which Frankli's statistics are refreshed


def apply_upserts(
    connection: Connection,
    org_id: int,
    plan: Plan,
    run_id: str,
    now: datetime,
    quarantined: Iterable[AuditEntry] = (),
) -> dict[str, int]:
    """Create entities, link, create, update and restore users, set managers; audit each user action."""
    _create_entities(connection, org_id, plan.entity_creates, now)
    keys = _entity_ids(connection, org_id)
    audit: list[AuditEntry] = []

    if len(plan.links):
        _bulk_update(
            connection, [{"id": r.user_id, "external_id": r.external_id} for r in plan.links.itertuples()], now
        )
        audit += [
            AuditEntry(
                r.external_id, r.email, "link", {"kind": r.kind, "old_external_id": none_if_missing(r.old_external_id)}
            )
            for r in plan.links.itertuples()
        ]

    # External id → user id of every synced user (after the links), extended by the creates below.
    known = _user_ids(connection, org_id, _referenced(plan))
    created = _create_users(connection, org_id, plan.creates, keys, known, now) if len(plan.creates) else None

    plain_fields = [f for f in plan.always_fields if f != "manager"]
    if len(plan.updates) and plain_fields:
        rows = [
            {"id": record["user_id"], **_user_values(record, keys, plain_fields)}
            for record in plan.updates.to_dict("records")
        ]
        _bulk_update(connection, rows, now)
    audit += [
        AuditEntry(r["external_id"], r.get("email"), "update", {"changes": r["changes"]})
        for r in plan.updates.to_dict("records")
    ]

    if len(plan.restores):
        cleared = dict.fromkeys(("status_before_archive", "archived_reason", "archived_by", "archived_at"))
        _bulk_update(
            connection, [{"id": r.user_id, "status": r.status, **cleared} for r in plan.restores.itertuples()], now
        )
        audit += [
            AuditEntry(r.external_id, r.email, "restore", {"status": r.status}) for r in plan.restores.itertuples()
        ]

    _set_managers(connection, plan, known, now)
    audit += new_quarantines(connection, org_id, run_id, quarantined)
    linked = sum(1 for entry in audit if entry.action == "link")  # links first, then creates, as applied
    write_audit(connection, org_id, run_id, now, audit[:linked], created, audit[linked:])
    if len(plan.creates) >= ANALYZE_AFTER_CREATES:
        refresh_statistics(connection, (users, sync_audit))
    return {**_count(audit), **({"create": len(created)} if created else {})}


def refresh_statistics(connection: Connection, tables: Iterable[Table]) -> None:
    """PostgreSQL: ANALYZE tables just bulk-loaded, as its docs advise after a bulk load (elsewhere: nothing).

    Until statistics exist (autovacuum may be slow, or off), PostgreSQL plans a table filled by
    COPY as a few hundred rows: a first sync's million Frankli users were then looked up by object
    id through the email index, reading the whole organisation each time (0.3 s per 2,000 ids);
    staging and the record likewise. Without the privilege to analyze, PostgreSQL skips the table
    with a warning, not an error.
    """
    if connection.dialect.name == "postgresql":
        for table in tables:
            connection.execute(text(f"ANALYZE {connection.dialect.identifier_preparer.format_table(table)}"))


def apply_archives(connection: Connection, org_id: int, archives: pd.DataFrame, run_id: str, now: datetime) -> int:
    """Archive users (status kept in `status_before_archive` so a restore can put it back)."""
    if archives.empty:
        return 0
    records = archives.to_dict("records")
    _bulk_update(
        connection,
        [{"id": r["user_id"], "status_before_archive": r["status"], "archived_reason": r["reason"]} for r in records],
        now,
        constants={"status": "archived", "archived_by": SYNC, "archived_at": now},
        only_if=users.c.status != "archived",
    )
    entries = [
        AuditEntry(r["external_id"], r["email"], "archive", {"reason": r["reason"], "status_before": r["status"]})
        for r in records
    ]
    write_audit(connection, org_id, run_id, now, entries)
    return len(records)


def _create_entities(connection: Connection, org_id: int, creates: pd.DataFrame, now: datetime) -> None:
    if creates.empty:  # an empty frame need not carry its columns
        return
    for table_name, group in creates.groupby("table"):
        bulk_insert(
            connection,
            ENTITY_TABLES[str(table_name)],
            [
                {"organisation_id": org_id, "name": name, "created_by": SYNC, "created_at": now}
                for name in group["name"]
            ],
        )


def _entity_ids(connection: Connection, org_id: int) -> dict[str, dict[str, int]]:
    """Name key → id of the live entity (the oldest when Frankli holds duplicates), per table."""
    result: dict[str, dict[str, int]] = {}
    for name, table in ENTITY_TABLES.items():
        rows = connection.execute(
            select(table.c.id, table.c.name)
            .where(table.c.organisation_id == org_id, table.c.deleted_at.is_(None))
            .order_by(table.c.id.desc())
        ).all()
        keys = name_key(pd.Series([r.name for r in rows], dtype="object"))
        result[name] = dict(zip(keys, (r.id for r in rows), strict=True))
    return result


def _column(field: str) -> str:
    return f"{field}_id" if field in ENTITY_FIELDS else field


def _written(record: Iterable[str]) -> list[str]:
    """The Frankli fields among `record`'s keys (or a frame's columns)."""
    present = set(record)
    return [f for f in (*TEXT_FIELDS, *ENTITY_FIELDS) if f in present]


def _user_values(
    record: Mapping[str, Any], keys: Mapping[str, Mapping[str, int]], fields: Iterable[str]
) -> dict[str, Any]:
    """An updated user's column values for `fields` (entity names as their ids, dates as dates)."""
    values: dict[str, Any] = {}
    for field in fields:
        value = none_if_missing(record.get(field))
        if field in ENTITY_FIELDS:
            values[_column(field)] = keys[ENTITY_FIELDS[field]].get(value) if value is not None else None
        elif field == "start_date":
            values[field] = date.fromisoformat(value) if value else None
        else:
            values[field] = value
    return values


def bulk_insert(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert `rows` into `table` in one bulk load: COPY on PostgreSQL, one executemany INSERT elsewhere.

    Rows are loaded in list order, so generated ids follow it on both backends. Values
    travel as data (COPY rows or bound parameters), never inside SQL text.
    """
    if not rows:
        return
    columns = list(dict.fromkeys(chain.from_iterable(rows)))
    whole = all(len(row) == len(columns) for row in rows)  # every row has every column: read them in C
    if whole and len(columns) > 1:
        values = [list(column) for column in zip(*map(itemgetter(*columns), rows), strict=True)]
    else:
        values = [[row.get(c) for row in rows] for c in columns]
    insert_columns(connection, table, dict(zip(columns, values, strict=True)))


def insert_columns(
    connection: Connection, table: Table, data: Mapping[str, list[Any]], encoded_json: Collection[str] = ()
) -> None:
    """Insert rows given as equally long columns (`bulk_insert`'s load, without building a dict per row).

    `encoded_json`: JSON columns whose values are JSON texts already (`json_text`), sent as they are.
    """
    columns, values = list(data), [list(v) for v in data.values()]
    if not values or not values[0]:
        return
    for position, column in enumerate(columns):
        # pandas turns integer columns with gaps into floats: 117.0 must load as 117 (only such columns are redone).
        if isinstance(table.c[column].type, Integer) and any(type(v) not in _PLAIN_INTEGER for v in values[position]):
            values[position] = [_integer(v, table, column) for v in values[position]]
    if connection.dialect.name != "postgresql":  # SQLAlchemy's JSON type encodes the values itself
        for position, column in enumerate(columns):
            if column in encoded_json:
                values[position] = loads_many(values[position])
        connection.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)])
        return
    from psycopg import sql

    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    json_columns = {c for c in columns if isinstance(table.c[c].type, JSON)} - set(encoded_json)
    driver = connection.connection.driver_connection
    assert driver is not None
    for position, column in enumerate(columns):
        if column in json_columns:
            values[position] = [None if v is None else dumps(v) for v in values[position]]
    with driver.cursor() as cursor, cursor.copy(copy_sql) as copy:
        for start in range(0, len(values[0]), COPY_ROWS):  # a slice at a time: memory stays bounded
            part = [v[start : start + COPY_ROWS] for v in values]
            payload = copy_payload(part)  # the rows as COPY text, a column at a time
            if payload is not None:
                copy.write(payload)
                continue
            for row in zip(*part, strict=True):  # values Arrow does not type: psycopg formats them
                copy.write_row(row)


_PLAIN_INTEGER = (int, type(None))


def _integer(value: Any, table: Table, column: str) -> int | None:
    value = none_if_missing(value)
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    if isinstance(value, np.integer):
        return int(value)
    raise ValueError(f"{table.name}.{column}: expected an integer id, got {value!r}")


def _bulk_update(
    connection: Connection,
    rows: list[dict[str, Any]],
    now: datetime,
    constants: Mapping[str, Any] | None = None,
    only_if: Any = None,
) -> None:
    """Set per-user values on many users with one ``UPDATE users … FROM <temp table>``.

    `rows` are ``{"id": user id, <users column>: value, …}`` with the same columns each;
    they are bulk-loaded into a temporary table first. `constants` are set on every
    matched user (as bound parameters), ``updated_at`` to `now`; `only_if` narrows the match.
    """
    if not rows:
        return
    columns = [c for c in rows[0] if c != "id"]
    changes = Table(
        "frankli_sync_user_changes",
        MetaData(),
        Column("id", users.c.id.type, primary_key=True),
        *(Column(c, users.c[c].type) for c in columns),
        prefixes=["TEMPORARY"],
    )
    # A failed load rolls the temporary table back on PostgreSQL; SQLite may keep it on the connection.
    changes.drop(connection, checkfirst=True)
    changes.create(connection)
    bulk_insert(connection, changes, rows)
    values: dict[str, Any] = {c: changes.c[c] for c in columns}
    values.update({k: literal(v, users.c[k].type) for k, v in (constants or {}).items()})
    values["updated_at"] = literal(now, users.c.updated_at.type)
    match = users.c.id == changes.c.id
    connection.execute(update(users).where(match if only_if is None else match & only_if).values(values))
    changes.drop(connection)


def _set_managers(connection: Connection, plan: Plan, ids: Mapping[str, int], now: datetime) -> None:
    """Resolve the managers of updated users (created users got theirs with their rows).

    `ids`: external id → user id of every synced user, the ones this load created included.
    Only users whose manager changed are written: an update of other fields carries the manager the
    plan left as it is (e.g. one absent from the snapshot), which need not be a synced user.
    """
    if "manager" not in plan.always_fields or not len(plan.updates):
        return
    rows = plan.updates[["external_id", "manager", "changes"]].to_dict("records")
    _bulk_update(
        connection,
        [
            {
                "id": ids[r["external_id"]],
                "manager_id": ids.get(r["manager"]) if none_if_missing(r["manager"]) else None,
            }
            for r in rows
            if r["external_id"] in ids and "manager" in r["changes"]
        ],
        now,
    )


def _create_users(
    connection: Connection,
    org_id: int,
    creates: pd.DataFrame,
    keys: Mapping[str, Mapping[str, int]],
    known: dict[str, int],
    now: datetime,
) -> AuditColumns:
    """Insert the plan's new users, managers first, a column at a time; `known` gains their ids.

    Ids are taken first, as the backend would assign them, so managers (existing users or users
    created earlier in this same list) are written with the rows instead of by a second UPDATE.
    A manager later in the list (only in a cycle) is set afterwards.
    """
    external_ids = [none_if_missing(e) for e in creates["external_id"]]
    managers = column_values(creates["manager"]) if "manager" in creates else [None] * len(creates)
    order = _managers_first_order(external_ids, managers)
    creates = creates.iloc[order].reset_index(drop=True)
    external_ids, managers = [external_ids[i] for i in order], [managers[i] for i in order]
    new_ids = _reserve_user_ids(connection, len(creates))
    fields = _written(creates.columns)
    values = {field: column_values(creates[field]) for field in fields}
    columns: dict[str, list[Any]] = {"id": new_ids}
    for field, texts in values.items():
        if field in ENTITY_FIELDS:
            ids = keys[ENTITY_FIELDS[field]]
            columns[_column(field)] = [ids.get(v) if v is not None else None for v in texts]
        elif field == "start_date":
            columns[field] = [date.fromisoformat(v) if v else None for v in texts]
        else:
            columns[field] = texts
    count = len(creates)
    columns.update(
        organisation_id=[org_id] * count,
        external_id=external_ids,
        status=column_values(creates["status"]),
        created_at=[now] * count,
        updated_at=[now] * count,
    )
    position = {external_id: n for n, external_id in enumerate(external_ids)}
    late: list[tuple[int, str]] = []
    if "manager" in creates:
        manager_ids: list[int | None] = []
        for n, (new_id, manager) in enumerate(zip(new_ids, managers, strict=True)):
            ahead = position.get(manager, -1) if manager is not None and manager not in known else -1
            if ahead >= n:  # a manager later in the list (or the user itself): only in a cycle
                late.append((new_id, manager))
                manager_ids.append(None)
            else:
                manager_ids.append(
                    new_ids[ahead] if ahead >= 0 else known.get(manager) if manager is not None else None
                )
        columns["manager_id"] = manager_ids
    insert_columns(connection, users, columns)
    known.update(zip(external_ids, new_ids, strict=True))
    _bulk_update(connection, [{"id": user, "manager_id": known[manager]} for user, manager in late], now)
    emails = values.get("email") or [None] * count
    return AuditColumns(["create"] * count, external_ids, emails, json_text.nested_rows("fields", values, count))


def column_values(column: pd.Series) -> list[Any]:
    """A column's values as a list, pandas' missing values as None."""
    return column.astype(object).where(column.notna(), None).tolist()


def _managers_first_order(external_ids: list[Any], managers: list[Any]) -> list[int]:
    """Positions of new users so that a new manager comes before the new users reporting to them.

    Foreign keys are checked row by row on SQLite; in this order every manager a row names
    already exists. Stable: users of one level keep the plan's order.
    """
    manager_of = dict(zip(external_ids, managers, strict=True))
    depth: dict[str, int] = {}
    for start in manager_of:
        chain, current = [], start
        while current in manager_of and current not in depth and current not in chain:
            chain.append(current)
            current = manager_of[current]
        base = depth.get(current, -1) if current not in chain else -1  # a cycle starts at level 0
        for offset, user in enumerate(reversed(chain), start=1):
            depth[user] = base + offset
    return sorted(range(len(external_ids)), key=lambda n: depth[external_ids[n]])


def _user_ids(connection: Connection, org_id: int, only: set[str] | None = None) -> dict[str, int]:
    """External (Entra object) id → Frankli user id, for the organisation's synced users (or `only` these)."""
    synced = (users.c.organisation_id == org_id, users.c.external_id.is_not(None))
    if only is None:
        return dict(connection.execute(select(users.c.external_id, users.c.id).where(*synced)).all())
    found: dict[str, int] = {}
    for chunk in chunked(sorted(only)):
        query = select(users.c.external_id, users.c.id).where(*synced, users.c.external_id.in_(chunk))
        found.update(connection.execute(query).all())
    return found


def _referenced(plan: Plan, limit: int = 20_000) -> set[str] | None:
    """The external ids whose user ids a load needs (managers, updated users); None when many (read all)."""
    ids: set[str] = set()
    for frame, columns in ((plan.creates, ("manager",)), (plan.updates, ("external_id", "manager"))):
        for column in columns:
            if column in frame:
                ids |= {v for v in frame[column] if isinstance(v, str)}
    return ids if len(ids) <= limit else None


def _reserve_user_ids(connection: Connection, count: int) -> list[int]:
    """`count` ids for new users, ascending, taken the way the backend assigns them.

    PostgreSQL: from the column's sequence (concurrent inserts elsewhere cannot take them).
    SQLite: the next rowids after the largest one, which is what SQLite would assign.
    """
    if connection.dialect.name == "postgresql":
        taken = connection.execute(
            text("SELECT nextval(pg_get_serial_sequence(:table, 'id')::regclass) FROM generate_series(1, :count)"),
            {"table": users.name, "count": count},
        )
        return sorted(int(i) for i in taken.scalars())
    largest = connection.execute(select(func.coalesce(func.max(users.c.id), 0))).scalar_one()
    return list(range(int(largest) + 1, int(largest) + count + 1))


def new_quarantines(
    connection: Connection, org_id: int, run_id: str, quarantined: Iterable[AuditEntry]
) -> list[AuditEntry]:
    """Quarantine entries not yet audited for this run (a cleared task must not duplicate them)."""
    done = set(
        connection.execute(
            select(sync_audit.c.external_id, sync_audit.c.email).where(
                sync_audit.c.organisation_id == org_id,
                sync_audit.c.run_id == run_id,
                sync_audit.c.action == "quarantine",
            )
        ).all()
    )
    return [q for q in quarantined if _audit_identity(q) not in done]


def write_audit(
    connection: Connection, org_id: int, run_id: str, now: datetime, *parts: list[AuditEntry] | AuditColumns | None
) -> None:
    """One bulk insert of the audit rows of `parts`, in their order (entries, or rows already as columns)."""
    batches = [part if isinstance(part, AuditColumns) else AuditColumns.of(part) for part in parts if part]
    count = sum(len(batch) for batch in batches)
    if not count:
        return
    columns = {
        "organisation_id": [org_id] * count,
        "run_id": [run_id] * count,
        "external_id": _loggable_column(chain.from_iterable(b.external_ids for b in batches), sync_audit.c.external_id),
        "email": _loggable_column(chain.from_iterable(b.emails for b in batches), sync_audit.c.email),
        "action": list(chain.from_iterable(b.actions for b in batches)),
        "details": list(chain.from_iterable(b.details for b in batches)),
        "created_at": [now] * count,
    }
    insert_columns(connection, sync_audit, columns, encoded_json={"details"})


def _audit_identity(entry: AuditEntry) -> tuple[str | None, str | None]:
    """`external_id` and `email` as the audit row stores them."""
    return (
        _loggable(entry.external_id, sync_audit.c.external_id.type.length),
        _loggable(entry.email, sync_audit.c.email.type.length),
    )


def _loggable_column(values: Iterable[str | None], column: Column[Any]) -> list[str | None]:
    """`_loggable` of each value for `column` (values that need nothing done are kept as they are)."""
    limit = column.type.length
    return [
        v if v is None or (type(v) is str and len(v) <= limit and NUL not in v) else _loggable(v, limit) for v in values
    ]


def _loggable(value: str | None, limit: int) -> str | None:
    """An identifier as the audit can store it: NUL shown as ␀, cut to the column with "…".

    Quarantined users are audited with the identifiers Entra gave, which may be what got them
    quarantined (too long, a NUL PostgreSQL cannot hold); the audit row must still be written.
    """
    if value is None:
        return None
    value = str(value).replace(NUL, NUL_MARK)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _count(entries: Iterable[AuditEntry]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.action] = counts.get(entry.action, 0) + 1
    return counts


def none_if_missing(value: Any) -> Any:
    """pandas' missing values (NaN, NA) as None, so they bind as SQL NULL (and audit as JSON null)."""
    if value is None or isinstance(value, str | int):  # the common cases, without pandas (NaT is a date)
        return value
    try:
        return None if pd.isna(value) else value
    except (TypeError, ValueError):
        return value


def audit_counts(connection: Connection, org_id: int, run_id: str) -> dict[str, int]:
    """Actions written for one run, from `sync_audit`."""
    rows = connection.execute(
        select(sync_audit.c.action, func.count())
        .where(sync_audit.c.organisation_id == org_id, sync_audit.c.run_id == run_id)
        .group_by(sync_audit.c.action)
    ).all()
    return {action: int(n) for action, n in rows}


def audit_rows(connection: Connection, org_id: int, run_id: str, actions: Iterable[str]) -> pd.DataFrame:
    """The run's audit entries of these actions, in the order written (external_id, email, action, details)."""
    rows = connection.execute(
        # The details as text, decoded together (a first sync's audit holds a million of them).
        select(sync_audit.c.external_id, sync_audit.c.email, sync_audit.c.action, cast(sync_audit.c.details, Text))
        .where(
            sync_audit.c.organisation_id == org_id,
            sync_audit.c.run_id == run_id,
            sync_audit.c.action.in_(sorted(actions)),
        )
        .order_by(sync_audit.c.id)
    ).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=["external_id", "email", "action", "details"], dtype=object)
    frame["details"] = pd.Series(loads_many(frame["details"].tolist()), index=frame.index, dtype=object)
    return frame


def people_of(connection: Connection, org_id: int, external_ids: Iterable[str]) -> dict[str, tuple[str | None, str]]:
    """Frankli's name and address of the organisation's users with these object ids."""
    ids = sorted(set(external_ids))
    found: dict[str, tuple[str | None, str]] = {}
    for condition in one_of(users.c.external_id, ids, connection.dialect.name):
        for external_id, first, last, email in connection.execute(
            select(users.c.external_id, users.c.first_name, users.c.last_name, users.c.email).where(
                users.c.organisation_id == org_id, condition
            )
        ):
            found[external_id] = (" ".join(p for p in (first, last) if p) or None, email)
    return found
