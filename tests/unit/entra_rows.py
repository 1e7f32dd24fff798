"""Builders of staged Entra rows shared by the unit tests (rows as the staging table returns them)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from frankli_sync.entra import STAGED_COLUMNS


def entra(object_id: str | None, upn: str | None, **columns: Any) -> dict[str, Any]:
    """One staged Entra row with every STAGED_COLUMNS key: an enabled member "Ann Lee" unless overridden."""
    row: dict[str, Any] = dict.fromkeys(STAGED_COLUMNS)
    row.update(
        object_id=object_id,
        user_principal_name=upn,
        mail=upn,
        given_name="Ann",
        surname="Lee",
        account_enabled=True,
        user_type="Member",
    )
    row.update(columns)
    return row


def staged(*rows: dict[str, Any]) -> pd.DataFrame:
    """Staged rows as the staging table returns them: object columns, None for NULL."""
    return pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype="object") for c in STAGED_COLUMNS})
