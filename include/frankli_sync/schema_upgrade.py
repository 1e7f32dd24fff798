"""Additive schema upgrades: columns a newer release added to a table that already exists.

Neither the Frankli schema (created by the pipeline when absent) nor staging has migrations;
new columns are always nullable, so adding them to existing rows is safe on every backend.
"""

from __future__ import annotations

from sqlalchemy import Table, inspect
from sqlalchemy.engine import Connection


def add_missing_columns(connection: Connection, table: Table) -> list[str]:
    """Add the columns of `table` that its database table lacks; returns their names."""
    present = {c["name"] for c in inspect(connection).get_columns(table.name)}
    preparer = connection.dialect.identifier_preparer
    added = []
    for column in table.columns:
        if column.name in present:
            continue
        if not column.nullable:
            raise RuntimeError(f"{table.name}.{column.name} cannot be added to existing rows: it is NOT NULL")
        # Names and types come from our own metadata, never from input.
        connection.exec_driver_sql(
            f"ALTER TABLE {preparer.quote(table.name)} ADD COLUMN {preparer.quote(column.name)} "
            f"{column.type.compile(dialect=connection.dialect)}"
        )
        added.append(column.name)
    return added
