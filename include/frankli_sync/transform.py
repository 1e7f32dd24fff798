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
import string
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from frankli_sync import text_columns
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
    return text_columns.stripped(values, _clean_text_of)


def _clean_text_of(value: object) -> object:
    if isinstance(value, str):
        return value.strip() or None
    return None if is_missing(value) else value


def iso_date(values: pd.Series) -> pd.Series:
    """Graph dates (``2021-03-01T00:00:00Z``) or dates → ``2021-03-01``; missing stays None."""
    return text_columns.leading(values, 10, _iso_date_of)


def _iso_date_of(value: object) -> str | None:
    text = value.isoformat() if hasattr(value, "isoformat") else value
    return (text.strip()[:10] or None) if isinstance(text, str) else None


def name_key(values: pd.Series) -> pd.Series:
    """The matching key of entity names (sites, departments, roles): trimmed, case-folded; None when cleared.

    Not for addresses: see `email_key`.
    """
    return text_columns.lowered_keys(values, name_key_of)


def name_key_of(value: object) -> str | None:
    """`name_key` of one value."""
    return (value.strip().casefold() or None) if isinstance(value, str) else None


# A-Z → a-z and nothing else: `casefold()` would also turn ß into "ss", and it and `lower()` the Kelvin sign into "k".
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def email_key_of(value: str | None) -> str | None:
    """The matching key of one address (DESIGN §2): trimmed, NFC-normalised, A-Z lower-cased; None when blank.

    Two addresses are the same address exactly when their keys are equal. There is no
    Unicode case folding: ``Kristin.straße`` and ``kristin.strasse`` are different
    addresses (whether they are dangerously alike is `email_fold_of`'s question).
    """
    if not isinstance(value, str):
        return None
    return unicodedata.normalize("NFC", value).strip().translate(_ASCII_LOWER) or None


def email_key(values: pd.Series) -> pd.Series:
    """`email_key_of` for each value (emails, UPNs); None when missing or blank. Keeps the index."""
    return text_columns.lowered_keys(values, email_key_of)


def email_fold_of(value: str | None) -> str | None:
    """The look-alike key of an address: ``NFKC(casefold(NFKC(value.strip())))``; None when blank.

    This is the fold under which two addresses that are not equal (`email_key_of`) can
    still pass for each other: ß ~ ss, the Kelvin sign ~ k, ﬁ ~ fi, full-width letters ~
    ASCII. (Unicode's NFKC_Casefold also drops default-ignorable characters; those are no
    address characters and fail validation anyway.) On ASCII text it is plain
    lower-casing, so two ASCII addresses never look alike without being equal. It does
    not catch cross-script homoglyphs (Cyrillic U+0430 vs Latin a): no fold does.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.isascii():
        return text.lower() or None
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold()) or None


def email_fold(values: pd.Series) -> pd.Series:
    """`email_fold_of` for each value; None when missing or blank. Keeps the index."""
    return text_columns.lowered_keys(values, email_fold_of)


def email_spelling(values: pd.Series) -> pd.Series:
    """`email_spelling_of` for each value; None when missing or blank. Keeps the index."""
    return text_columns.lowered_keys(values, email_spelling_of)


def email_spelling_of(value: str | None) -> str | None:
    """`email_key_of`, except that canonical singletons are kept as they are; None when blank.

    NFC replaces a few characters by a different one (canonical singletons: the Kelvin
    sign → K, the Ohm sign → Ω, the Ångström sign → Å, CJK compatibility ideographs), so
    under `email_key_of` the Kelvin sign equals "k". DESIGN §2 says it does not: an
    address spelt with one is only a look-alike of the plain one. Two addresses with the
    same fold but different spellings are look-alikes; ordinary NFC composition (e + ◌́ →
    é) still counts as the same spelling.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.isascii():
        return text.translate(_ASCII_LOWER) or None
    parts: list[str] = []
    run: list[str] = []
    for char in text:
        if _is_canonical_singleton(char):
            parts += [unicodedata.normalize("NFC", "".join(run)), char]
            run = []
        else:
            run.append(char)
    parts.append(unicodedata.normalize("NFC", "".join(run)))
    return "".join(parts).translate(_ASCII_LOWER) or None


def _is_canonical_singleton(char: str) -> bool:
    # A canonical (untagged) decomposition to exactly one other code point.
    decomposition = unicodedata.decomposition(char)
    return bool(decomposition) and not decomposition.startswith("<") and " " not in decomposition


def desired_users(
    staged: pd.DataFrame,
    mapping: Mapping[str, FieldMapping],
    scope: ScopeSettings,
    quarantined_ids: Iterable[str] = (),
    now: datetime | None = None,
) -> pd.DataFrame:
    """One row per staged Entra user: its Frankli field values and whether it is synced.

    Columns: ``external_id``, ``upn_key`` (the UPN's `email_key`, the adoption key),
    ``status_in_source``, then every field of `SYNCED_FIELDS` (``manager``
    holds the manager's object id). A field mapped by an expression has its value
    (`mapped_fields`; `now` is the run's clock for ``Now()``); a user whose value cannot
    be stored has None there and is quarantined by validation, which names the reason.
    """
    out = pd.DataFrame(index=staged.index)
    out["external_id"] = clean_text(staged["object_id"])
    out["upn_key"] = email_key(staged["user_principal_name"])
    for field, rule in mapping.items():
        if rule.expression is not None:
            from frankli_sync.mapped_fields import mapped_field

            out[field] = mapped_field(field, rule, staged, now).values
            continue
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
    if scope.filters:
        from frankli_sync.scope_filters import in_scope

        status[~in_scope(staged, scope.filters).to_numpy(dtype=bool)] = OUT_OF_SCOPE
    return status


def _status_in_source(staged: pd.DataFrame, scope: ScopeSettings, quarantined: set[str]) -> pd.Series:
    status = scope_status(staged, scope)
    # A blank object id is no id: it would be created unlinked (unmanaged) and again on every run.
    no_id = clean_text(staged["object_id"]).isna()
    status[staged["object_id"].isin(quarantined) | no_id] = QUARANTINED
    return status
