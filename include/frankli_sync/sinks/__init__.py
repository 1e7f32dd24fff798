"""Frankli targets behind one interface (`interface.FrankliSink`); `open_sink` gives a tenant's."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from frankli_sync.config import TargetSettings
    from frankli_sync.sinks.interface import FrankliSink


def open_sink(target: TargetSettings, ledger: Engine) -> FrankliSink:
    """The sink of a tenant's `target`; `ledger` (staging) keeps what a target cannot (a SCIM endpoint's audit)."""
    if target.kind == "database":
        from frankli_sync.sinks.database_sink import DatabaseSink

        return DatabaseSink(target.conn_id)
    if target.kind == "scim":
        from frankli_sync.sinks.scim_sink import ScimSink

        return ScimSink(target, ledger)
    raise ValueError(f"target kind {target.kind!r} has no sink")
