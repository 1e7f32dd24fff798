"""Frankli targets behind one interface (`interface.FrankliSink`); `open_sink` gives a tenant's."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from frankli_sync.config import TargetSettings
    from frankli_sync.sinks.interface import FrankliSink


def open_sink(target: TargetSettings) -> FrankliSink:
    """The sink of a tenant's `target` (the config refuses kinds that are not built)."""
    if target.kind == "database":
        from frankli_sync.sinks.database_sink import DatabaseSink

        return DatabaseSink(target.conn_id)
    raise ValueError(f"target kind {target.kind!r} has no sink")
