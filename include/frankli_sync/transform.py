"""Entra rows → the Frankli users they should become (pure pandas, no I/O).

The output of `desired_users` is one row per staged Entra user with the Frankli
field values the tenant's mapping asks for, already normalised: strings
trimmed, whitespace-only values turned into "cleared" (None), dates as ISO
``YYYY-MM-DD``. It also says, per row, whether the user is to be synced
(`status_in_source`): ``active``, ``disabled``, ``out_of_scope`` or
``quarantined``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from frankli_sync.config import FieldMapping, ScopeSettings

# Frankli user fields that are plain text columns of `users`.
TEXT_FIELDS: tuple[str, ...] = (
    "email",
    "first_name",
    "last_name",
    "street_address",
    "city",
    "postal_code",
    "country",
    "phone",
    "mobile_phone",
    "start_date",
)
# Frankli fields that reference an organisation entity, and the entity table behind each.
ENTITY_FIELDS: dict[str, str] = {"role": "roles", "department": "departments", "site": "sites"}
SYNCED_FIELDS: tuple[str, ...] = (*TEXT_FIELDS, *ENTITY_FIELDS, "manager")

ACTIVE, DISABLED, OUT_OF_SCOPE, QUARANTINED = "active", "disabled", "out_of_scope", "quarantined"


def is_missing(value: object) -> bool:
    """None, NaN and pandas' NA all mean "no value"."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT


def json_ready(value: Any) -> Any:
    """A copy of nested dicts / lists with every missing value as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if is_missing(value):
        return None
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return value.item()
    return value


def objects(values: Iterable[object], index: pd.Index) -> pd.Series:
    """An object Series that keeps None as None (``Series.map`` would turn it into NaN)."""
    return pd.Series([None if is_missing(v) else v for v in values], index=index, dtype="object")


def clean_text(values: pd.Series) -> pd.Series:
    """Trim strings; empty or whitespace-only means cleared (None)."""
    return objects(((v.strip() or None) if isinstance(v, str) else v for v in values), values.index)


def iso_date(values: pd.Series) -> pd.Series:
    """Graph dates (``2021-03-01T00:00:00Z``) or dates → ``2021-03-01``; missing stays None."""
    texts = (v.isoformat() if hasattr(v, "isoformat") else v for v in values)
    return objects(((v.strip()[:10] or None) if isinstance(v, str) else None for v in texts), values.index)


def name_key(values: pd.Series) -> pd.Series:
    """The matching key of entity names and emails: trimmed, case-folded; None when cleared."""
    return objects(((v.strip().casefold() or None) if isinstance(v, str) else None for v in values), values.index)


def desired_users(
    staged: pd.DataFrame,
    mapping: Mapping[str, FieldMapping],
    scope: ScopeSettings,
    quarantined_ids: Iterable[str] = (),
) -> pd.DataFrame:
    """One row per staged Entra user: its Frankli field values and whether it is synced.

    Columns: ``external_id``, ``upn_key`` (case-folded UPN, the adoption key),
    ``status_in_source``, then every field of `SYNCED_FIELDS` (``manager``
    holds the manager's object id).
    """
    out = pd.DataFrame(index=staged.index)
    out["external_id"] = clean_text(staged["object_id"])
    out["upn_key"] = name_key(staged["user_principal_name"])
    for field, rule in mapping.items():
        source = staged[rule.column]
        out[field] = iso_date(source) if field == "start_date" else clean_text(source)
    out["status_in_source"] = _status_in_source(staged, scope, set(quarantined_ids))
    return out.reset_index(drop=True)


def scope_status(staged: pd.DataFrame, scope: ScopeSettings) -> pd.Series:
    """Per staged row: ``active``, ``disabled`` or ``out_of_scope`` (before validation)."""
    enabled = staged["account_enabled"].map(lambda v: v is True or v == 1 or v == "true")
    guest = staged["user_type"].astype("object").map(lambda v: isinstance(v, str) and v.lower() == "guest")
    status = pd.Series(ACTIVE, index=staged.index, dtype="object")
    status[~enabled] = DISABLED
    if scope.exclude_guests:
        status[guest] = OUT_OF_SCOPE
    if scope.only_enabled:
        status[~enabled] = OUT_OF_SCOPE
    if scope.groups:  # `group_member` is added from the groups' transitive members at extraction
        status[~staged["group_member"].astype(bool)] = OUT_OF_SCOPE
    return status


def _status_in_source(staged: pd.DataFrame, scope: ScopeSettings, quarantined: set[str]) -> pd.Series:
    status = scope_status(staged, scope)
    # A blank object id is no id: it would be created unlinked (unmanaged) and again on every run.
    no_id = clean_text(staged["object_id"]).isna()
    status[staged["object_id"].isin(quarantined) | no_id] = QUARANTINED
    return status
