"""Incremental runs: a delta run validates, plans and loads only the users a change can touch.

A delta read stages the whole directory (the base snapshot plus the changes), but only its
changed rows can need anything new in Frankli. An incremental run works on **participants**:

- every user the delta delivered whose staged values differ from the record (`sync_record`),
  and every user it reported removed;
- every user the record holds in conflict or held by a Frankli admin (their outcome depends
  on Frankli, which the delta does not show);
- closed under what links users in the plan: users sharing a matching key (UPN key, email
  key, email fold: uniqueness, adoption, collisions, look-alikes) and users reporting to a
  participant (their manager may become unusable).

Their outcome is computed by the same `plan.plan_user_changes` as a full run, over the
participants plus **context**: the management chain above them (manager checks, cycles) and
the Entra users behind every Frankli user the plan reads. Only actions about participants
are kept. Context users take their quarantine from the record.

A run plans in full instead (`why_full`) when it read the directory in full (first run,
`full_sync`, the periodic reconciliation, an expired delta link), when its delta does not
start from the snapshot the record describes (the last run did not finish both loads), when
the tenant's mapping, scope or validation settings changed, when it is scoped by groups, or
when the participants exceed a quarter of the tenant; and it replans in full when the subset
finds something whose effects reach users outside it (`reaches_outside`): a manager cycle
through a non-participant, an entity deleted in Frankli brought back.

What Frankli tells an incremental run: its mark (`FrankliSession.mark`), read before planning.
When it differs from the one the record holds (an admin edited a synced field, another tool
wrote), the run plans in full and undoes the edit. Over SCIM, a run with no participant
(nothing changed in Entra) does not read Frankli at all (`Basis.quiet`: not one request reaches
the endpoint), so there an edit made in Frankli is undone by the next run with a change in
Entra, or by the next full read (``full_resync_days``), as Entra's own incremental cycles do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from frankli_sync.config import TenantConfig
from frankli_sync.entra import STAGED_COLUMNS
from frankli_sync.plan import Plan, restricted
from frankli_sync.staging import Staging
from frankli_sync.sync_record import KEY_COLUMNS, SyncRecord
from frankli_sync.text_columns import as_arrow
from frankli_sync.transform import (
    QUARANTINED,
    desired_users,
    email_fold,
    email_key,
    email_key_of,
    is_missing,
    name_key,
    objects,
)

REPLANNED_STATES = ("conflict", "held")
# Findings about one user that stand until the user changes: an incremental run reports the record's.
CARRIED_FINDINGS = ("orphaned_references", "manager_problems", "manager_cycles")
MAX_SHARE = 0.25
MAX_CHAIN = 256


@dataclass(frozen=True)
class Basis:
    """How a run plans: ``incremental`` against the record of `record_run`, or ``full`` (and why)."""

    mode: str
    reason: str = ""
    record_run: str | None = None
    frankli_read: bool = True  # False: nothing changed in Entra, so Frankli was not read (`quiet`)

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {"mode": self.mode, "reason": self.reason, "record_run": self.record_run}
        if not self.frankli_read:
            document["frankli_read"] = False
        return document

    def quiet(self) -> Basis:
        """This basis for a run nothing changed for: Frankli is not read, so not a request reaches it."""
        return dataclasses.replace(
            self, reason="nothing changed in Entra since the recorded run: Frankli was not read", frankli_read=False
        )


@dataclass(frozen=True)
class Focus:
    """The participants of an incremental run and what is known of them."""

    participants: frozenset[str]
    staged: pd.DataFrame  # the participants' staged rows (those still in Entra), snapshot order
    desired: pd.DataFrame  # `transform.desired_users` of `staged` (before validation's quarantine)
    record: pd.DataFrame  # their record rows (the state the last run gave them)
    removed: Mapping[str, str]
    context: frozenset[str]  # the management chain above them


def fingerprint(tenant: TenantConfig) -> str:
    """What the record's states depend on besides Entra: mapping, scope and validation settings."""
    settings = [dataclasses.asdict(tenant.scope), dataclasses.asdict(tenant.validation)]
    settings.append({field: dataclasses.asdict(rule) for field, rule in tenant.mapping.items()})
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def basis(staging: Staging, record: SyncRecord, tenant: TenantConfig, run_id: str, full_sync: bool) -> Basis:
    """Whether this run may plan incrementally, and against which record."""
    reason = why_full(staging, record, tenant, run_id, full_sync)
    if reason:
        return Basis("full", reason)
    state = record.state(tenant.name) or {}
    return Basis("incremental", "delta read from the recorded run", state.get("run_id"))


def why_full(staging: Staging, record: SyncRecord, tenant: TenantConfig, run_id: str, full_sync: bool) -> str | None:
    if full_sync:
        return "full_sync was asked"
    extraction = staging.extraction(tenant.name, run_id) or {}
    if extraction.get("mode") != "delta":
        return "the directory was read in full"
    if tenant.scope.groups:
        return "the tenant is scoped by groups (membership changes are not in the users' delta)"
    state = record.state(tenant.name)
    if state is None:
        return "no record of a finished run yet"
    if delta_chain(staging, tenant.name, run_id, state["run_id"]) is None:
        return f"this run's deltas do not lead back to the recorded run {state['run_id']} (read in full since)"
    if state["fingerprint"] != fingerprint(tenant):
        return "the tenant's mapping, scope or validation settings changed since the recorded run"
    return None


def delta_chain(staging: Staging, tenant: str, run_id: str, record_run: str) -> list[str] | None:
    """The runs whose deltas lie between the recorded run and this one (this one first); None: no such chain.

    Usually just this run. An only_user run, or a run whose archives were blocked, also moved
    the delta link on without being recorded: their changes are changes since the record too.
    """
    chain: list[str] = []
    current = run_id
    while current != record_run:
        extraction = staging.extraction(tenant, current) or {}
        if extraction.get("mode") != "delta" or extraction.get("status") != "complete" or len(chain) >= MAX_CHAIN:
            return None
        chain.append(current)
        current = extraction.get("base_run_id")
    return chain


def focus(
    staging: Staging, record: SyncRecord, tenant: TenantConfig, run_id: str, only_user: str | None = None
) -> Focus | None:
    """The participants of this delta run; None when they are too many to be worth it (plan in full).

    An `only_user` run takes the same participants plus the users that UPN / address names (in
    this run's changes or in the record): its plan of that user is then the one a full plan
    restricted to them gives, at the cost of the change, not of the directory.
    """
    name = tenant.name
    state = record.state(name) or {}
    limit = max(1000, int(MAX_SHARE * int(state.get("users") or 0)))
    deltas = delta_chain(staging, name, run_id, str(state.get("run_id"))) or [run_id]
    changed = staging.changed_rows(name, run_id)
    removed = staging.removed_ids(name, run_id)
    earlier: set[str] = set()  # changed by the runs between the record and this one
    for between in deltas[1:]:
        earlier |= staging.changed_ids(name, between)
        earlier |= set(staging.removed_ids(name, between))
    earlier -= set(changed["object_id"])
    if earlier:
        changed = pd.concat([changed, staging.rows_of(name, run_id, earlier)], ignore_index=True)
    gone_since = earlier - set(changed["object_id"])  # removed by an earlier run: participants, like `removed`
    known = record.rows(name, changed["object_id"].dropna())
    before = dict(zip(known["object_id"], known["digest"], strict=True))
    digests = row_digests(changed)
    # A boolean array, never a list: an empty list would select zero columns.
    differs = np.array([before.get(o) != d for o, d in zip(changed["object_id"], digests, strict=True)], dtype=bool)
    dirty = changed[differs]
    participants = set(dirty["object_id"].dropna()) | set(removed) | gone_since
    participants |= set(record.in_states(name, REPLANNED_STATES)["object_id"])
    if only_user:
        participants |= _named(record, tenant, changed, only_user)
    frontier = set(participants)
    while frontier:
        missing = frontier - set(dirty["object_id"])
        current = staging.rows_of(name, run_id, missing) if missing else changed.iloc[0:0]
        fresh = pd.concat([current, dirty[dirty["object_id"].isin(frontier)]], ignore_index=True)
        hashes = set(_key_frame(fresh, tenant)[list(KEY_COLUMNS)].stack().dropna())
        hashes |= set(record.rows(name, frontier)[list(KEY_COLUMNS)].stack().dropna())
        frontier = record.touching(name, hashes, frontier) - participants
        participants |= frontier
        if len(participants) > limit:
            return None
    return _focus_of(staging, record, tenant, run_id, participants, removed, None)


def kept_focus(focus: Focus, basis: Basis) -> dict[str, Any]:
    """What `refocus` needs to give the same focus again (validate keeps it for transform)."""
    return {
        "record_run": basis.record_run,
        "participants": sorted(focus.participants),
        "context": sorted(focus.context),
    }


def refocus(staging: Staging, record: SyncRecord, tenant: TenantConfig, run_id: str, kept: Mapping[str, Any]) -> Focus:
    """The focus `focus` gave (`kept_focus`), without walking the shared keys again.

    The participants depend only on the run's staged rows and the record, which transform checks
    is still the one validation planned against (`kept["record_run"]`).
    """
    removed = staging.removed_ids(tenant.name, run_id)
    return _focus_of(staging, record, tenant, run_id, set(kept["participants"]), removed, set(kept["context"]))


def _focus_of(
    staging: Staging,
    record: SyncRecord,
    tenant: TenantConfig,
    run_id: str,
    participants: set[str],
    removed: Mapping[str, str],
    context: set[str] | None,
) -> Focus:
    name = tenant.name
    staged = staging.rows_of(name, run_id, participants)  # those still in Entra, in snapshot order
    desired = desired_users(staged, tenant.mapping, tenant.scope)
    if context is None:
        in_mapping = "manager" in desired
        context = _management_chain(record, name, desired["manager"], participants) if in_mapping else set()
    return Focus(
        participants=frozenset(participants),
        staged=staged,
        desired=desired,
        record=record.rows(name, participants),
        removed=removed,
        context=frozenset(context),
    )


def _named(record: SyncRecord, tenant: TenantConfig, changed: pd.DataFrame, upn: str) -> set[str]:
    """The users whose UPN or address has the key of `upn`: among `changed` rows, and in the record."""
    key = email_key_of(upn)
    if key is None:
        return set()
    desired = desired_users(changed, tenant.mapping, tenant.scope)
    emails = desired["email"] if "email" in desired else desired["upn_key"]
    matches = (desired["upn_key"] == key) | (email_key(emails) == key)
    named = set(desired.loc[matches.to_numpy(dtype=bool), "external_id"].dropna())
    return named | record.touching(tenant.name, key_hashes(pd.Series([key])).dropna(), ())


def _management_chain(record: SyncRecord, tenant: str, managers: pd.Series, participants: set[str]) -> set[str]:
    """Every manager above the participants (`managers`: theirs), up to the top or a loop."""
    chain: set[str] = set()
    level = {m for m in managers if isinstance(m, str)} - participants
    for _ in range(MAX_CHAIN):
        level -= chain
        if not level:
            break
        chain |= level
        above = record.rows(tenant, level)["manager"]
        level = {m for m in above if isinstance(m, str)} - participants
    return chain


def reaches_outside(plan: Plan, participants: frozenset[str], entities: Mapping[str, pd.DataFrame]) -> str | None:
    """Why the subset's plan cannot stand for the whole directory; None when it can."""
    for cycle in plan.findings.get("manager_cycles", []):
        if any(member not in participants for member, _ in cycle["members"]):
            return "a manager cycle runs through users this run did not plan"
    for table, group in plan.entity_creates.groupby("table"):
        frame = entities[str(table)]
        deleted = set(name_key(frame.loc[frame["deleted_at"].notna(), "name"]).dropna())
        if deleted & set(group["key"]):
            return f"a {table[:-1]} deleted in Frankli is brought back; every user naming it is updated"
    return None


def restrict(plan: Plan, participants: frozenset[str], carried: Mapping[str, list[dict[str, Any]]]) -> Plan:
    """The actions and findings of `plan` about participants, and the entities they need.

    `carried`: findings the record holds about other users (they stand: nothing about those users changed).
    """

    def about(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["external_id"].isin(participants)].reset_index(drop=True)

    findings = {
        kind: [f for f in found if f.get("external_id") in participants or "members" in f]
        for kind, found in plan.findings.items()
    }
    for kind, entries in carried.items():
        findings.setdefault(kind, []).extend(e for e in entries if not _about(e, participants))
    return restricted(plan, about, findings)


def _about(finding: Mapping[str, Any], users: frozenset[str]) -> bool:
    if "members" in finding:
        return any(member in users for member, _ in finding["members"])
    return finding.get("external_id") in users


def record_rows(
    staged: pd.DataFrame,
    desired: pd.DataFrame,
    plan: Plan,
    quarantined: Iterable[Mapping[str, Any]],
    tenant: TenantConfig,
) -> pd.DataFrame:
    """The record of `staged` (aligned with `desired`) after a run that planned `plan`."""
    entries = {q["object_id"]: q for q in quarantined if q.get("object_id")}
    frame = _key_frame(staged, tenant, desired)
    frame["object_id"] = desired["external_id"].to_numpy()
    frame["digest"] = row_digests(staged)
    state = desired["status_in_source"].to_numpy(dtype=object).copy()
    state[desired["external_id"].isin(set(plan.conflicts["external_id"])).to_numpy()] = "conflict"
    held = {f["external_id"] for f in plan.findings.get("archived_in_frankli", [])}
    state[desired["external_id"].isin(held).to_numpy()] = "held"
    frame["state"] = state
    frame["manager"] = desired["manager"].to_numpy() if "manager" in desired else None
    frame["detail"] = objects(
        (
            (json.dumps(entries[o], default=str) if s == QUARANTINED and o in entries else None)
            for o, s in zip(frame["object_id"], state, strict=True)
        ),
        frame.index,
    )
    per_user: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for kind in CARRIED_FINDINGS:
        for entry in plan.findings.get(kind, []):
            owner = entry.get("external_id") or min(m for m, _ in entry["members"])  # a cycle: its first member
            per_user.setdefault(owner, {}).setdefault(kind, []).append(entry)
    frame["findings"] = objects(
        ((json.dumps(per_user[o], default=str) if o in per_user else None) for o in frame["object_id"]), frame.index
    )
    frame = frame[frame["object_id"].notna()].drop_duplicates("object_id")
    return frame[["object_id", "digest", "state", "manager", *KEY_COLUMNS, "detail", "findings"]].reset_index(drop=True)


def row_digests(staged: pd.DataFrame) -> np.ndarray:
    """A 64-bit digest of each staged row's values (what the record compares a delta's rows with).

    Each row's values become one text, hashed once: every value as "v" + its text, a missing one
    as "n", joined by NUL, which staged text never holds (staging records it as ␀), so two rows
    give the same text only when their values are the same.
    """
    if staged.empty:
        return np.zeros(0, dtype="int64")
    texts = [_digest_text(staged[column]) for column in STAGED_COLUMNS]
    rows = pc.binary_join_element_wise(*texts, "\x00")
    return pd.util.hash_array(rows.to_numpy(zero_copy_only=False), categorize=False).view("int64")


def _digest_text(values: pd.Series) -> pa.Array:
    array = as_arrow(values)
    if array is None:
        try:
            array = pa.array(values.to_numpy(dtype=object, na_value=None), from_pandas=True).cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):  # mixed types: their text
            array = pa.array([None if is_missing(v) else str(v) for v in values], type=pa.string())
    return pc.fill_null(pc.binary_join_element_wise("v", array, ""), "n")


def key_hashes(values: pd.Series) -> pd.Series:
    """64-bit hashes of matching keys (None stays None): what the record indexes instead of the keys."""
    present = values.notna().to_numpy()
    out = pd.Series([None] * len(values), index=values.index, dtype="object")
    if present.any():
        texts = values[present].astype(str).to_numpy(dtype=object)
        out[present] = pd.util.hash_array(texts, categorize=False).view("int64")  # same hashes, no factorising
    return out


def _key_frame(staged: pd.DataFrame, tenant: TenantConfig, desired: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per staged row: the hashes of its UPN key, email key and email fold."""
    if desired is None:
        desired = desired_users(staged, tenant.mapping, tenant.scope)
    email = desired["email"] if "email" in desired else pd.Series([None] * len(desired), dtype="object")
    return pd.DataFrame(
        {
            "upn_key": key_hashes(desired["upn_key"]).to_numpy(),
            "email_key": key_hashes(email_key(email)).to_numpy(),
            "email_fold": key_hashes(email_fold(email)).to_numpy(),
        }
    )
