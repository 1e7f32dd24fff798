"""The sync plan: what must change in Frankli so it matches Entra (pure pandas, no I/O).

`plan_user_changes` compares the desired users (see `transform.desired_users`)
with the current Frankli state of the organisation and returns a `Plan`:
entities to create, users to create / update / link / restore / archive, rows
in conflict, and findings for the report (orphaned entity references, manager
problems, users archived by an admin). Loading applies a plan computed inside
its own transaction, so applying it twice finds nothing left to do.

Entity fields are carried as name keys (trimmed, case-folded) and managers as
Entra object ids; the loader turns both into row ids after it has created
what the plan asks for. Emails are matched by `transform.email_key` (NFC,
A-Z lower-cased, no Unicode folding); addresses that only match under
folding are look-alikes and quarantined (`_email_lookalikes`).

Every frame of a plan keeps its columns when it is empty: the loader and the
report read them by name whatever the run found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from frankli_sync.config import FieldMapping
from frankli_sync.expression_values import IGNORE_FLOW
from frankli_sync.transform import (
    ACTIVE,
    DISABLED,
    ENTITY_FIELDS,
    OUT_OF_SCOPE,
    TEXT_FIELDS,
    clean_text,
    email_fold,
    email_key,
    email_key_of,
    email_spelling,
    email_spelling_of,
    is_missing,
    iso_date,
    name_key,
    objects,
)

SYNC = "directory_sync"
DELETED_REF = "\x00deleted"  # a reference to an entity that is deleted in Frankli
UNMANAGED_REF = "\x00frankli:"  # a manager who is a Frankli user the sync does not manage
ENTITY_TABLES = tuple(ENTITY_FIELDS.values())


@dataclass(frozen=True)
class FrankliState:
    """The organisation as it is in Frankli: users and the entity tables (roles, departments, sites)."""

    users: pd.DataFrame
    entities: Mapping[str, pd.DataFrame]

    @classmethod
    def empty(cls) -> FrankliState:
        return cls(users=empty_users(), entities={t: empty_entities() for t in ENTITY_TABLES})


USER_STATE_COLUMNS = (
    "id",
    "external_id",
    *TEXT_FIELDS,
    "role_id",
    "department_id",
    "site_id",
    "manager_id",
    "status",
    "status_before_archive",
    "archived_by",
)


def empty_users() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in USER_STATE_COLUMNS})


def empty_entities() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in ("id", "name", "deleted_at")})


@dataclass(frozen=True)
class PlanOptions:
    mapping: Mapping[str, FieldMapping]
    only_user: str | None = None
    deleted_ids: frozenset[str] = frozenset()  # object ids the source reported as deleted


@dataclass
class Plan:
    entity_creates: pd.DataFrame  # table, key, name
    creates: pd.DataFrame  # external_id, fields..., status
    updates: pd.DataFrame  # user_id, external_id, always-fields..., changes
    links: pd.DataFrame  # user_id, external_id, old_external_id, email, kind
    restores: pd.DataFrame  # user_id, external_id, email, status
    archives: pd.DataFrame  # user_id, external_id, email, reason
    conflicts: pd.DataFrame  # external_id, email, reason
    findings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    always_fields: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        return {
            "entity_create": len(self.entity_creates),
            "create": len(self.creates),
            "update": len(self.updates),
            "link": len(self.links),
            "restore": len(self.restores),
            "archive": len(self.archives),
            "conflict": len(self.conflicts),
        }

    @property
    def has_upserts(self) -> bool:
        return any(len(f) for f in (self.entity_creates, self.creates, self.updates, self.links, self.restores))


def plan_user_changes(
    desired: pd.DataFrame,
    state: FrankliState,
    options: PlanOptions,
    previous: pd.DataFrame | None = None,
) -> Plan:
    """Compare the desired users with Frankli and say what must change.

    `previous` is the desired-users frame of the last synced snapshot; it tells
    whether a user's entity value changed since then (entities deleted in
    Frankli are only created again when it did).
    """
    users = _normalised_users(state.users)
    identified = desired[desired["external_id"].notna()].drop_duplicates("external_id")
    present = identified.set_index("external_id")["status_in_source"]
    active = desired[desired["status_in_source"] == ACTIVE].copy()

    always = tuple(f for f, rule in options.mapping.items() if rule.on == "always")

    matched, links, conflicts, creates = _match_active_users(active, users, present)
    matched, admin_archived = _drop_admin_archived(matched, users)
    lookalikes = _email_lookalikes(active, matched, links, creates, users, email_synced="email" in always)
    conflicts = pd.concat([conflicts, _email_collisions(matched, creates, users), lookalikes], ignore_index=True)
    # One quarantine per user: the first reason found (a rehire conflict, then a taken email, then a look-alike).
    conflicts = conflicts.drop_duplicates("external_id")
    collided = set(conflicts["external_id"])
    matched = matched[~matched["external_id"].isin(collided)]
    creates = creates[~creates["external_id"].isin(collided)]
    links = links[~links["external_id"].isin(collided)]

    synced_ids = set(matched["external_id"]) | set(creates["external_id"])
    references = _manager_references(users)
    current_managers = dict(
        zip(matched["external_id"], references.reindex(matched["user_id"].to_numpy()).to_numpy(), strict=True)
    )
    managers, manager_findings = _resolve_managers(
        active, present, synced_ids, set(admin_archived["external_id"]), current_managers
    )

    written = pd.concat([creates.assign(_fields="all"), matched.assign(_fields="always")], ignore_index=True)
    written["manager"] = written["external_id"].map(managers).astype("object")
    written = written.where(written.notna(), None)
    ignored = _ignored_flows(written, always)
    entity_keys, entity_creates, orphans = _resolve_entities(written, state.entities, previous, always)
    for column, keys in entity_keys.items():
        written[column] = keys
    written = _keep_ignored(written, ignored, _current_references(users, state.entities))

    create_rows = written[written["_fields"] == "all"].drop(columns=["_fields", "user_id"], errors="ignore")
    create_rows = create_rows.assign(status="uninvited")
    update_rows = _changed_users(written[written["_fields"] == "always"], users, state.entities, always)
    restores = _restores(matched, users)
    archives = _archives(users, present, set(matched["user_id"]), options.deleted_ids)

    plan = Plan(
        entity_creates=entity_creates,
        creates=create_rows.reset_index(drop=True),
        updates=update_rows,
        links=links.reset_index(drop=True),
        restores=restores,
        archives=archives,
        conflicts=conflicts.reset_index(drop=True),
        findings={
            "orphaned_references": orphans,
            **manager_findings,
            "archived_in_frankli": admin_archived[["external_id", "email"]].to_dict("records"),
        },
        always_fields=always,
    )
    if options.only_user:
        plan = _only_user(plan, options.only_user, users)
    return plan


def _normalised_users(users: pd.DataFrame) -> pd.DataFrame:
    users = users.copy()
    for column in USER_STATE_COLUMNS:
        if column not in users:
            users[column] = None
    users = users.astype("object").where(users.notna(), None)
    users["start_date"] = iso_date(users["start_date"])
    users["email_key"] = email_key(users["email"])
    return users


def _match_active_users(
    active: pd.DataFrame, users: pd.DataFrame, present: pd.Series
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Match by object id, then adopt or re-link by email; the rest are creates."""
    managed = users[users["external_id"].notna()][["id", "external_id"]]
    by_id = active.merge(managed.rename(columns={"id": "user_id"}), on="external_id", how="left")
    matched = _typed_ids(by_id[by_id["user_id"].notna()])
    unmatched = by_id[by_id["user_id"].isna()].drop(columns=["user_id"])

    # Candidates for adoption / rehire: users not already matched by id, first (lowest id) per email.
    candidates = users[~users["id"].isin(matched["user_id"]) & users["email_key"].notna()]
    candidates = candidates.sort_values("id").drop_duplicates("email_key")
    candidates = candidates[["id", "external_id", "email_key"]].rename(
        columns={"id": "user_id", "external_id": "old_external_id"}
    )
    by_email = unmatched.merge(candidates, left_on="upn_key", right_on="email_key", how="left")
    found = _typed_ids(by_email[by_email["user_id"].notna()])
    creates = by_email[by_email["user_id"].isna()].drop(columns=["user_id", "old_external_id", "email_key"])

    old_still_exists = found["old_external_id"].notna() & found["old_external_id"].isin(present.index)
    conflict_rows = found[old_still_exists]
    conflicts = pd.DataFrame(
        {
            "external_id": conflict_rows["external_id"],
            "email": conflict_rows["email"],
            "reason": [
                f"rehire_conflict: Frankli user with this email is linked to object id {old}, "
                "which still exists in Entra"
                for old in conflict_rows["old_external_id"]
            ],
        }
    )
    linked = found[~old_still_exists].drop(columns=["email_key"])
    links = pd.DataFrame(
        {
            "user_id": linked["user_id"],
            "external_id": linked["external_id"],
            "old_external_id": linked["old_external_id"],
            "email": linked["email"],
            "kind": ["adopt" if old is None or pd.isna(old) else "rehire" for old in linked["old_external_id"]],
        }
    )
    matched = pd.concat([matched, linked.drop(columns=["old_external_id"])], ignore_index=True)
    return matched, links, conflicts, creates


_NUMERIC_IDS = ("integer", "floating", "mixed-integer-float")


def _typed_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """Matched rows with `user_id` as the target's ids: int64 for a database's, text as they are (SCIM ids)."""
    if len(frame) == 0 or pd.api.types.infer_dtype(frame["user_id"], skipna=True) in _NUMERIC_IDS:
        return frame.astype({"user_id": "int64"})
    return frame.astype({"user_id": "object"})


def _drop_admin_archived(matched: pd.DataFrame, users: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A user archived by a Frankli admin stays archived and untouched."""
    status = users.set_index("id")[["status", "archived_by"]]
    info = status.reindex(matched["user_id"].to_numpy())
    by_admin = (info["status"].to_numpy() == "archived") & (info["archived_by"].to_numpy() != SYNC)
    return matched[~by_admin], matched[by_admin]


def _email_collisions(matched: pd.DataFrame, creates: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """Rows whose email would duplicate the email of a Frankli user they are not."""
    taken = set(users.loc[~users["id"].isin(matched["user_id"]), "email_key"].dropna())
    incoming = pd.concat([matched, creates], ignore_index=True)
    keys = email_key(incoming["email"])
    hit = incoming[keys.isin(taken).to_numpy()]
    return pd.DataFrame(
        {
            "external_id": hit["external_id"],
            "email": hit["email"],
            "reason": "email_in_use: another Frankli user already has this email",
        }
    )


def _email_lookalikes(
    active: pd.DataFrame,
    matched: pd.DataFrame,
    links: pd.DataFrame,
    creates: pd.DataFrame,
    users: pd.DataFrame,
    email_synced: bool,
) -> pd.DataFrame:
    """Rows whose new email would pass for another user's address under Unicode folding (DESIGN §2).

    Checked: users to be created, adopted or re-linked, and matched users whose email
    changes; against every Frankli user but their own row and every other active Entra
    user. Two addresses look alike when their `email_fold_of` is equal but their
    `email_spelling_of` is not (``Kristin.straße`` with a Kelvin-sign K vs
    ``kristin.strasse``). The row is held back when its own address is the non-ASCII
    one, or when it would otherwise be adopted by the look-alike (equal `email_key`: the
    Kelvin sign is "k" after NFC). Equal spellings are `_email_collisions`' business.
    """
    linked = set(links["external_id"])
    by_id = matched[~matched["external_id"].isin(linked)]
    before = users.set_index("id")["email"].reindex(by_id["user_id"].to_numpy()).to_numpy()
    changed = np.array([email_synced and _differs(a, b) for a, b in zip(by_id["email"], before, strict=True)], bool)
    checked = pd.concat(
        [
            creates[["external_id", "email"]].assign(own=None),
            matched.loc[matched["external_id"].isin(linked), ["external_id", "email"]].assign(own=None),
            by_id.loc[changed, ["external_id", "email"]].assign(own=by_id.loc[changed, "user_id"]),
        ],
        ignore_index=True,
    )
    folds = email_fold(checked["email"])
    user_folds, active_folds = email_fold(users["email"]), email_fold(active["email"])
    # Only a fold shared by two different spellings can hide a look-alike (ASCII addresses never do).
    every = pd.DataFrame(
        {
            "fold": pd.concat([folds, user_folds, active_folds], ignore_index=True),
            "spelling": pd.concat(
                [email_spelling(checked["email"]), email_spelling(users["email"]), email_spelling(active["email"])],
                ignore_index=True,
            ),
        }
    ).dropna()
    spellings = every.groupby("fold")["spelling"].nunique()
    wanted = set(spellings.index[spellings > 1])
    # fold → (owner, shown as, address) of every address that could be looked like; "own" rows are skipped.
    others: dict[str, list[tuple[Any, str, str]]] = {}
    near = user_folds.isin(wanted).to_numpy()
    for user_id, email, fold in zip(users["id"][near], users["email"][near], user_folds[near], strict=True):
        others.setdefault(fold, []).append((("frankli", user_id), f"Frankli user {email}", email))
    near = active_folds.isin(wanted).to_numpy()
    for external_id, email, fold in zip(
        active["external_id"][near], active["email"][near], active_folds[near], strict=True
    ):
        others.setdefault(fold, []).append((("entra", external_id), f"Entra user {email} ({external_id})", email))
    checked = checked.assign(fold=folds.to_numpy())[folds.isin(wanted).to_numpy()]
    folds = checked["fold"]

    rows: list[dict[str, Any]] = []
    for external_id, email, own, fold in zip(
        checked["external_id"], checked["email"], checked["own"], folds, strict=True
    ):
        if fold is None:
            continue
        spelling, key = email_spelling_of(email), email_key_of(email)
        for owner, shown, other in others.get(fold, []):
            if owner in (("frankli", own), ("entra", external_id)) or email_spelling_of(other) == spelling:
                continue
            if email.isascii() and email_key_of(other) != key:
                continue  # the other address is the non-ASCII one; its own row answers for it
            fix = "fix the UPN in Entra or the email in Frankli" if owner[0] == "frankli" else "fix one UPN in Entra"
            reason = f"email_lookalike: {email} looks like {shown} under Unicode folding; {fix}"
            rows.append({"external_id": external_id, "email": email, "reason": reason})
            break
    return pd.DataFrame(rows, columns=["external_id", "email", "reason"])


def _manager_references(users: pd.DataFrame) -> pd.Series:
    """Per Frankli user id: its manager in plan terms (an object id, an unmanaged-user marker, or None)."""
    current = users.set_index("id")
    external = current["external_id"].to_dict()
    return objects(
        (None if r is None else (external.get(r) or f"{UNMANAGED_REF}{r}") for r in current["manager_id"]),
        current.index,
    )


def _resolve_managers(
    active: pd.DataFrame,
    present: pd.Series,
    synced_ids: set[str],
    admin_archived: set[str],
    current: Mapping[str, str | None],
) -> tuple[dict[str, str | None], dict[str, list[dict[str, Any]]]]:
    """Manager reference per synced user; unusable managers and cycles are reported.

    `current`: the manager each matched (existing) user has in Frankli now, in plan
    terms. A manager Entra holds but that cannot be one here (out of scope, disabled,
    quarantined, in conflict, archived by an admin) gives no manager. A manager that is
    not in the snapshot at all says nothing about the user (DESIGN §2 "Evidence, not
    counts": the read may have missed it), so an existing user keeps the manager it has
    and a new user gets none; both are reported.
    """
    problems: list[dict[str, Any]] = []
    managers: dict[str, str | None] = {}
    rows = active[active["external_id"].isin(synced_ids)][["external_id", "email", "manager"]]
    emails = dict(zip(rows["external_id"], rows["email"], strict=True))
    for external_id, manager in zip(rows["external_id"], rows["manager"], strict=True):
        if manager is None or manager in synced_ids:
            managers[external_id] = manager
            continue
        managers[external_id] = None
        outcome = "no manager"
        if manager in admin_archived:
            reason = "archived_in_frankli"
        elif manager in present.index:
            reason = str(present[manager]) if present[manager] != ACTIVE else "conflict"
        else:
            reason = "not_in_source"
            if external_id in current:
                managers[external_id] = current[external_id]
                outcome = "manager left unchanged"
        problems.append(
            {
                "external_id": external_id,
                "email": emails[external_id],
                "manager_id": manager,
                "reason": reason,
                "outcome": outcome,
            }
        )
    cycles = _break_cycles(managers)
    return managers, {
        "manager_problems": problems,
        "manager_cycles": [{"members": [(m, emails.get(m)) for m in cycle]} for cycle in cycles],
    }


def _break_cycles(managers: dict[str, str | None]) -> list[list[str]]:
    """Find manager cycles; break each by dropping the manager of its smallest object id."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []
    for start in managers:
        path: list[str] = []
        node: str | None = start
        while node is not None and node in managers and state.get(node) is None:
            state[node] = 1
            path.append(node)
            node = managers[node]
        if node is not None and state.get(node) == 1:
            cycle = path[path.index(node) :]
            cycles.append(sorted(cycle))
            managers[min(cycle)] = None
        for visited in path:
            state[visited] = 2
    return cycles


def _resolve_entities(
    written: pd.DataFrame,
    entities: Mapping[str, pd.DataFrame],
    previous: pd.DataFrame | None,
    always: tuple[str, ...],
) -> tuple[dict[str, pd.Series], pd.DataFrame, list[dict[str, Any]]]:
    """Per entity field: the key each written user will reference, the entities to create, orphans."""
    keys: dict[str, pd.Series] = {}
    creates: list[dict[str, str]] = []
    orphans: list[dict[str, Any]] = []
    prev = None
    if previous is not None and len(previous):
        # Unvalidated: rows without an object id, or with a repeated one, say nothing about a user.
        identified = previous[previous["external_id"].notna()].drop_duplicates("external_id", keep=False)
        prev = identified.set_index("external_id")
    for field_name, table in ENTITY_FIELDS.items():
        frame = entities.get(table, empty_entities())
        live = frame[frame["deleted_at"].isna()]
        live_keys = set(name_key(live["name"]).dropna())
        deleted_keys = set(name_key(frame.loc[frame["deleted_at"].notna(), "name"]).dropna()) - live_keys
        applies = (written["_fields"] == "all") | (field_name in always)
        key = name_key(written[field_name]).where(applies, None)
        if prev is not None and field_name in prev:
            before = name_key(prev[field_name]).reindex(written["external_id"].to_numpy()).to_numpy()
            in_prev = written["external_id"].isin(prev.index).to_numpy()
            unchanged = pd.Series(in_prev & (before == key.to_numpy()), index=written.index)
        else:
            unchanged = pd.Series(False, index=written.index)
        # A deleted entity that a changed value brings back is live again for every user: referencing
        # it from the unchanged users too keeps the next run from finding a change to make.
        revived = set(key[key.isin(deleted_keys) & ~unchanged].dropna())
        orphan = key.isin(deleted_keys) & unchanged & ~key.isin(revived)
        for row in written[orphan].itertuples():
            orphans.append(
                {
                    "external_id": row.external_id,
                    "email": row.email,
                    "field": field_name,
                    "value": getattr(row, field_name),
                    "action": f"{field_name} {getattr(row, field_name)!r} was deleted in Frankli: "
                    "set a new value in Entra",
                }
            )
        key = key.where(~orphan, None)
        keys[field_name] = key
        missing = key.notna() & ~key.isin(live_keys)
        # Built column by column: assigning a Series to an empty frame would adopt the Series' index.
        new = pd.DataFrame(
            {
                "key": key[missing],
                "name": clean_text(written.loc[missing, field_name]),
                "by": written.loc[missing, "external_id"],
            }
        )
        new = new.sort_values("by").drop_duplicates("key")
        creates += [{"table": table, "key": k, "name": v} for k, v in zip(new["key"], new["name"], strict=True)]
    entity_creates = pd.DataFrame(creates, columns=["table", "key", "name"])
    return keys, entity_creates, orphans


def _ignored_flows(written: pd.DataFrame, fields: Iterable[str]) -> dict[str, pd.Series]:
    """Per field, the rows whose expression said IgnoreFlowIfNullOrEmpty: that field is not written for them."""
    marks = {f: written[f].map(lambda v: v is IGNORE_FLOW).astype(bool) for f in fields if f in written}
    return {f: mark for f, mark in marks.items() if mark.any()}


def _keep_ignored(written: pd.DataFrame, ignored: Mapping[str, pd.Series], current: pd.DataFrame) -> pd.DataFrame:
    """A created user gets no value for an ignored field; an updated one keeps the value Frankli has."""
    if not ignored:
        return written
    written = written.copy()
    before = current.reindex(written["user_id"].to_numpy()) if "user_id" in written else None
    for name, mark in ignored.items():
        kept = [None] * len(written) if before is None else before[name].to_numpy()
        kept = [None if isinstance(v, str) and v.startswith(DELETED_REF) else v for v in kept]
        values = written[name].to_numpy(dtype=object).copy()
        for i in np.flatnonzero(mark.to_numpy()):
            values[i] = kept[i] if written["_fields"].iat[i] == "always" else None
        written[name] = pd.Series(values, index=written.index, dtype="object")
    return written


def _current_references(users: pd.DataFrame, entities: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The current value of each synced field in the plan's terms (entity keys, manager object ids)."""
    current = users.set_index("id")
    out = pd.DataFrame(index=current.index)
    for text in TEXT_FIELDS:
        out[text] = current[text]
    for field_name, table in ENTITY_FIELDS.items():
        frame = entities.get(table, empty_entities())
        live = frame[frame["deleted_at"].isna()]
        by_id = dict(zip(live["id"], name_key(live["name"]), strict=True))
        refs = current[f"{field_name}_id"]
        out[field_name] = objects((None if r is None else by_id.get(r, DELETED_REF) for r in refs), out.index)
    out["manager"] = _manager_references(users)
    return out.astype("object")


def _changed_users(
    written: pd.DataFrame, users: pd.DataFrame, entities: Mapping[str, pd.DataFrame], always: tuple[str, ...]
) -> pd.DataFrame:
    """Matched users whose always-synced fields differ from Frankli, with before → after per field."""
    columns = ["user_id", "external_id", *always, "changes"]
    if written.empty or not always:
        return pd.DataFrame(columns=columns)
    current = _current_references(users, entities).reindex(written["user_id"].to_numpy())
    differs = pd.DataFrame(index=written.index)
    for name in always:
        after = written[name].to_numpy()
        before = current[name].to_numpy()
        differs[name] = [_differs(a, b) for a, b in zip(after, before, strict=True)]
    changed = written[differs.any(axis=1).to_numpy()].copy()
    if changed.empty:
        return pd.DataFrame(columns=columns)
    # Records, not iterrows: iterrows infers a str dtype per row in pandas 3 and turns None into NaN.
    before_rows = current.reindex(changed["user_id"].to_numpy())[list(always)].to_dict("records")
    after_rows = changed[list(always)].to_dict("records")
    flags = differs.loc[changed.index].to_dict("records")
    changes = [
        {n: [_shown(before[n]), after[n]] for n in always if flag[n]}
        for after, before, flag in zip(after_rows, before_rows, flags, strict=True)
    ]
    changed["changes"] = changes
    return changed[columns].reset_index(drop=True)


def _differs(after: Any, before: Any) -> bool:
    if is_missing(after) or is_missing(before):
        return is_missing(after) != is_missing(before)
    return after != before


def _shown(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(DELETED_REF):
        return "(deleted in Frankli)"
    if isinstance(value, str) and value.startswith(UNMANAGED_REF):
        return f"(Frankli user {value[len(UNMANAGED_REF) :]})"
    return value


def _restores(matched: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """Users the sync archived that are back in Entra: restored to the status they had."""
    current = users.set_index("id")
    rows = matched.merge(
        current[["status", "status_before_archive", "archived_by"]], left_on="user_id", right_index=True
    )
    back = rows[(rows["status"] == "archived") & (rows["archived_by"] == SYNC)]
    return pd.DataFrame(
        {
            "user_id": back["user_id"],
            "external_id": back["external_id"],
            "email": back["email"],
            "status": back["status_before_archive"].map(lambda s: s or "uninvited"),
        }
    ).reset_index(drop=True)


def _archives(
    users: pd.DataFrame, present: pd.Series, matched_ids: set[Any], deleted_ids: frozenset[str]
) -> pd.DataFrame:
    """Managed, not yet archived Frankli users that Entra no longer holds as active users."""
    managed = users[users["external_id"].notna() & (users["status"] != "archived") & ~users["id"].isin(matched_ids)]
    status = managed["external_id"].map(present)
    reasons = []
    for external_id, in_source in zip(managed["external_id"], status, strict=True):
        if in_source is None or pd.isna(in_source):
            reasons.append("deleted" if external_id in deleted_ids else "not_in_source")
        elif in_source in (DISABLED, OUT_OF_SCOPE):
            reasons.append(in_source)
        else:  # active but unmatched (conflict) or quarantined: they exist in Entra, keep them
            reasons.append(None)
    archives = pd.DataFrame(
        {
            "user_id": managed["id"],
            "external_id": managed["external_id"],
            "email": managed["email"],
            "status": managed["status"],
            "reason": reasons,
        }
    )
    return archives[archives["reason"].notna()].reset_index(drop=True)


def _only_user(plan: Plan, upn: str, users: pd.DataFrame) -> Plan:
    """Keep only the actions about one user (by UPN / email), and the entities it needs.

    Rows are picked with boolean Series, never lists: an empty list selects zero
    *columns*, and the loader reads the columns of every frame, empty or not.
    """
    key = email_key_of(upn)
    ids = set(users.loc[users["email_key"] == key, "id"]) if key else set()

    def about(frame: pd.DataFrame) -> pd.DataFrame:
        keep = pd.Series(False, index=frame.index)
        if "email" in frame and key:
            keep |= email_key(frame["email"]) == key
        if "user_id" in frame:
            keep |= frame["user_id"].isin(ids)
        return frame[keep].reset_index(drop=True)

    return restricted(plan, about, {k: [f for f in v if _mentions(f, key)] for k, v in plan.findings.items()})


def restricted(
    plan: Plan, about: Callable[[pd.DataFrame], pd.DataFrame], findings: dict[str, list[dict[str, Any]]]
) -> Plan:
    """`plan` with each action frame passed through `about` (the rows to keep), the entities those
    rows need, and `findings`."""
    creates, updates = about(plan.creates), about(plan.updates)
    return Plan(
        entity_creates=entity_creates_needed(plan.entity_creates, creates, updates),
        creates=creates,
        updates=updates,
        links=about(plan.links),
        restores=about(plan.restores),
        archives=about(plan.archives),
        conflicts=about(plan.conflicts),
        findings=findings,
        always_fields=plan.always_fields,
    )


def entity_creates_needed(entity_creates: pd.DataFrame, *frames: pd.DataFrame) -> pd.DataFrame:
    """The entity creates that the users of `frames` (creates, updates) reference."""
    needed: set[tuple[str, Any]] = set()
    for field_name, table in ENTITY_FIELDS.items():
        for frame in frames:
            if field_name in frame:
                needed |= {(table, k) for k in frame[field_name].dropna()}
    needs = pd.Series(
        [(t, k) in needed for t, k in zip(entity_creates["table"], entity_creates["key"], strict=True)],
        index=entity_creates.index,
        dtype=bool,
    )
    return entity_creates[needs].reset_index(drop=True)


def _mentions(finding: dict[str, Any], key: str | None) -> bool:
    return key is not None and email_key_of(finding.get("email")) == key
