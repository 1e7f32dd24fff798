"""The Frankli database schema (DESIGN.md §4): column names are part of the public contract."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.engine import Connection

from frankli_sync.schema_upgrade import add_missing_columns
from frankli_sync.transform import ENTITY_FIELDS, TEXT_FIELDS

if TYPE_CHECKING:
    from frankli_sync.config import FieldMapping

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets BIGINT identities.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

organisations = Table(
    "organisations",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    # The one source the organisation is synced from: an Entra tenant id, or csv:<config tenant>.
    Column("source", String(255)),
    # The instant of the newest Entra snapshot applied: an older run's load is superseded.
    Column("synced_snapshot_at", DateTime(timezone=True)),
)


def _entity_table(name: str, *extra: Column) -> Table:
    return Table(
        name,
        metadata,
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("organisation_id", Id, ForeignKey("organisations.id"), nullable=False),
        Column("name", String(255), nullable=False),
        Column("created_by", String(32), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("deleted_at", DateTime(timezone=True)),
        *extra,
        Index(f"ix_{name}_organisation_id", "organisation_id"),
    )


sites = _entity_table("sites")
departments = _entity_table("departments")
roles = _entity_table("roles", Column("grade", String(64)))
ENTITY_TABLES = {"sites": sites, "departments": departments, "roles": roles}

users = Table(
    "users",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("organisation_id", Id, ForeignKey("organisations.id"), nullable=False),
    Column("external_id", String(64)),
    Column("email", String(320)),
    Column("first_name", String(255)),
    Column("last_name", String(255)),
    Column("role_id", Id, ForeignKey("roles.id")),
    Column("department_id", Id, ForeignKey("departments.id")),
    Column("site_id", Id, ForeignKey("sites.id")),
    Column("manager_id", Id, ForeignKey("users.id")),
    Column("street_address", String(255)),
    Column("city", String(255)),
    Column("postal_code", String(64)),
    Column("country", String(255)),
    Column("phone", String(64)),
    Column("mobile_phone", String(64)),
    Column("start_date", Date),
    Column("status", String(16), nullable=False),
    Column("status_before_archive", String(16)),
    Column("archived_reason", String(32)),
    Column("archived_by", String(32)),
    Column("archived_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("organisation_id", "external_id", name="uq_users_organisation_external_id"),
    Index("ix_users_organisation_email", "organisation_id", "email"),
)

sync_audit = Table(
    "sync_audit",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("organisation_id", Id, ForeignKey("organisations.id"), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("external_id", String(64)),
    Column("email", String(320)),
    Column("action", String(16), nullable=False),
    Column("details", JSON),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_sync_audit_run", "organisation_id", "run_id"),
)

AUDIT_ACTIONS = ("create", "update", "archive", "restore", "link", "quarantine", "failed")  # failed: SCIM only
USER_STATUSES = ("uninvited", "invited", "active", "archived")


def create_schema(connection: Connection) -> None:
    """Create the Frankli tables that are missing (the pipeline owns the schema when it is absent).

    An `organisations` table created before it recorded its source gets the new, nullable
    columns added: the first run after the upgrade claims the organisation.
    """
    metadata.create_all(connection, checkfirst=True)
    add_missing_columns(connection, organisations)


def frankli_field_lengths(mapping: Mapping[str, FieldMapping]) -> dict[str, int]:
    """Staged column -> the most characters the Frankli column(s) it feeds can hold.

    Text fields are limited by their `users` column (non-text ones such as `start_date`
    have no limit here); role / department / site by the entity table's `name`. When one
    staged column feeds several fields, the smallest limit wins. The validation gate
    quarantines longer values: PostgreSQL would reject them (failing the whole load),
    SQLite would store them. A field mapped by an expression is named ``mapping.<field>``: its
    value is measured after evaluation (`mapped_fields.failures`).
    """
    lengths: dict[str, int] = {}
    for field, rule in mapping.items():
        if field in ENTITY_FIELDS:
            column_type = ENTITY_TABLES[ENTITY_FIELDS[field]].c.name.type
        elif field in TEXT_FIELDS:
            column_type = users.c[field].type
        else:
            continue
        length = getattr(column_type, "length", None) if isinstance(column_type, String) else None
        column = rule.column or f"mapping.{field}"  # an expression's value: `mapped_fields.key`
        if length:
            lengths[column] = min(length, lengths.get(column, length))
    return lengths
