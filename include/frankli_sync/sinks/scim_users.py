"""Frankli users as SCIM 2.0 resources and back (pure: dicts and frames in, dicts and frames out).

The attribute table below is Frankli's SCIM contract for Entra (`userName` is the key, the
work email, work address, title, enterprise department and manager). Reading turns a listing
into the `FrankliState` the planner compares against; writing turns a planned create into a
`POST /Users` body and a planned update into the PATCH operations of the changed attributes only,
with an explicit ``remove`` for each attribute cleared in Entra (RFC 7644 §3.5.2).

SCIM has no entity tables: a user's role, department and site are text on the user. The state
therefore presents each distinct value as an entity whose id is the value itself, so the planner's
entity rules (a value's spelling is kept once created) hold over SCIM too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from frankli_sync.json_text import dumps
from frankli_sync.plan import SYNC, USER_STATE_COLUMNS, FrankliState
from frankli_sync.transform import ENTITY_FIELDS, email_fold_of, email_key, is_missing, objects

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@dataclass(frozen=True)
class Attribute:
    """Where one Frankli field lives on a SCIM user.

    `multi`/`kind`: a sub-attribute of the multi-valued entry of that type (``addresses`` of type
    ``work``); `parent`: a sub-attribute of a complex attribute (``name``) or of an extension.
    """

    sub: str
    multi: str | None = None
    kind: str | None = None
    parent: str | None = None  # a complex attribute, or a schema extension's URN
    date_time: bool = False  # a SCIM dateTime holding a date: written as that day's midnight, UTC

    @property
    def path(self) -> str:
        if self.multi:
            return f'{self.multi}[type eq "{self.kind}"].{self.sub}'
        if self.extension:
            return f"{self.parent}:{self.sub}"
        return f"{self.parent}.{self.sub}" if self.parent else self.sub

    @property
    def extension(self) -> bool:
        return bool(self.parent and self.parent.startswith("urn:"))

    @property
    def entry(self) -> str:
        """The multi-valued entry's own path (``phoneNumbers[type eq "mobile"]``)."""
        return f'{self.multi}[type eq "{self.kind}"]'


# Frankli field -> SCIM attribute. `email` is also the `userName` (the key Frankli matches on).
ATTRIBUTES: dict[str, Attribute] = {
    "email": Attribute("value", "emails", "work"),
    "first_name": Attribute("givenName", parent="name"),
    "last_name": Attribute("familyName", parent="name"),
    "street_address": Attribute("streetAddress", "addresses", "work"),
    "city": Attribute("locality", "addresses", "work"),
    "postal_code": Attribute("postalCode", "addresses", "work"),
    "country": Attribute("country", "addresses", "work"),
    "site": Attribute("formatted", "addresses", "work"),  # Entra maps officeLocation here
    "phone": Attribute("value", "phoneNumbers", "work"),
    "mobile_phone": Attribute("value", "phoneNumbers", "mobile"),
    "role": Attribute("title"),
    "department": Attribute("department", parent=ENTERPRISE),
}
MANAGER = Attribute("manager", parent=ENTERPRISE)
# Entries whose only Frankli value is `value`: clearing it removes the whole entry (a phone number
# without a number is not a phone number); address entries keep their other parts.
WHOLE_ENTRY = {"emails", "phoneNumbers"}


def attributes_with(start_date: str | None, date_time: bool = False) -> dict[str, Attribute]:
    """`ATTRIBUTES`, plus the start date in the extension attribute an endpoint declares for it (its full
    name, ``urn:…:startDate``; `target.start_date_attribute`). Without one the start date is not synced."""
    if not start_date:
        return ATTRIBUTES
    schema, _, name = start_date.rpartition(":")
    return {**ATTRIBUTES, "start_date": Attribute(name, parent=schema, date_time=date_time)}


def _read(resource: Mapping[str, Any], attribute: Attribute) -> Any:
    if attribute.multi:
        for entry in resource.get(attribute.multi) or ():
            if isinstance(entry, Mapping) and entry.get("type") == attribute.kind:
                return entry.get(attribute.sub)
        return None
    holder = resource.get(attribute.parent) if attribute.parent else resource
    if not isinstance(holder, Mapping):
        return None
    return holder.get(attribute.sub)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def user_row(
    resource: Mapping[str, Any],
    archived_by_sync: Mapping[str, str | None],
    attributes: Mapping[str, Attribute] = ATTRIBUTES,
) -> dict[str, Any]:
    """One SCIM user as a row of `USER_STATE_COLUMNS` (its SCIM id as `id`, entity values as their ids).

    `archived_by_sync`: external id -> status before archive, for users the sync's audit shows it
    archived last. Any other inactive user was deactivated in Frankli (by an admin) and stays so.
    """
    row: dict[str, Any] = dict.fromkeys(USER_STATE_COLUMNS)
    row["id"] = resource.get("id")
    row["external_id"] = _text(resource.get("externalId"))
    row["email"] = _text(resource.get("userName"))
    for field, attribute in attributes.items():
        if field == "email":
            continue
        value = _text(_read(resource, attribute))
        row[f"{field}_id" if field in ENTITY_FIELDS else field] = value
    manager = _read(resource, MANAGER)
    row["manager_id"] = _text(manager.get("value")) if isinstance(manager, Mapping) else None
    active = resource.get("active")
    if active is False:
        row["status"] = "archived"
        external_id = row["external_id"]
        if external_id is not None and external_id in archived_by_sync:
            row["archived_by"] = SYNC
            row["status_before_archive"] = archived_by_sync[external_id]
    else:  # active, or not said (RFC 7643: active is optional): a user Frankli lets in
        row["status"] = "active"
    return row


def state_of_listing(
    resources: Iterable[Mapping[str, Any]],
    archived_by_sync: Mapping[str, str | None],
    attributes: Mapping[str, Attribute] = ATTRIBUTES,
) -> FrankliState:
    rows = [user_row(r, archived_by_sync, attributes) for r in resources]
    users = pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype="object") for c in USER_STATE_COLUMNS})
    entities = {}
    for field, table in ENTITY_FIELDS.items():
        names = sorted({v for v in users[f"{field}_id"] if v is not None})
        entities[table] = pd.DataFrame(
            {
                "id": pd.Series(names, dtype="object"),
                "name": pd.Series(names, dtype="object"),
                "deleted_at": pd.Series([None] * len(names), dtype="object"),
            }
        )
    return FrankliState(users=users, entities=entities)


def part_of_state(state: FrankliState, external_ids: Iterable[str], email_keys: Iterable[str]) -> FrankliState:
    """What `database.read_state_of` reads, out of a whole listing: the same users, by the same rules."""
    users = state.users
    ids, keys = set(external_ids), set(email_keys)
    emails = users["email"]
    non_ascii = emails.map(lambda e: isinstance(e, str) and not all(" " <= c <= "~" for c in e))
    folded = objects((email_fold_of(e) for e in emails), users.index)
    picked = users["external_id"].isin(ids) | email_key(emails).isin(keys) | folded.isin(keys) | non_ascii
    managers = set(users.loc[picked, "manager_id"].dropna())
    picked |= users["id"].isin(managers)
    return FrankliState(users=users[picked].reset_index(drop=True), entities=state.entities)


def listing_mark(resources: Iterable[Mapping[str, Any]]) -> str:
    """A digest of every user's every attribute (their `meta.location` aside): any write moves it."""
    digest = hashlib.sha256()
    for resource in sorted(resources, key=lambda r: str(r.get("id"))):
        meta = {k: v for k, v in (resource.get("meta") or {}).items() if k != "location"}
        digest.update(dumps({**resource, "meta": meta}).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:32]


def newest_mark(total: int, newest: Iterable[Mapping[str, Any]]) -> str:
    """A digest of the number of users and the users modified last (id, lastModified, version).

    Any write sets its user's `meta.lastModified` to now, making it the newest (or one of the newest,
    on a clock coarser than the writes); a deletion changes the number. So the digest moves with every
    write, read in two small requests instead of a listing of every user (`ScimEndpoint.newest`).
    """
    seen = sorted(
        (str(r.get("id")), str((r.get("meta") or {}).get("lastModified")), str((r.get("meta") or {}).get("version")))
        for r in newest
    )
    return hashlib.sha256(dumps({"total": total, "newest": seen}).encode()).hexdigest()[:32]


def create_body(
    record: Mapping[str, Any],
    names: Mapping[str, Mapping[str, str]],
    manager: str | None,
    attributes: Mapping[str, Attribute] = ATTRIBUTES,
) -> dict:
    """The `POST /Users` body of a planned create (`names`: entity field -> key -> the name to write)."""
    body: dict[str, Any] = {"schemas": [CORE], "userName": record.get("email"), "active": True}
    if not is_missing(record.get("external_id")):
        body["externalId"] = record["external_id"]
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for field, attribute in attributes.items():
        if field not in record:
            continue
        value = written_value(field, record.get(field), names, attribute)
        if value is None:
            continue
        if attribute.multi:
            entry = entries.setdefault((attribute.multi, str(attribute.kind)), {"type": attribute.kind})
            entry[attribute.sub] = value
            if attribute.multi == "emails":
                entry["primary"] = True
        elif attribute.parent:  # a complex attribute (name) or an extension (its URN)
            body.setdefault(attribute.parent, {})[attribute.sub] = value
        else:
            body[attribute.sub] = value
    for (multi, _), entry in entries.items():
        body.setdefault(multi, []).append(entry)
    if manager is not None:
        body.setdefault(ENTERPRISE, {})["manager"] = {"value": manager}
    body["schemas"] = [CORE, *sorted(key for key in body if key.startswith("urn:"))]
    return body


def written_value(
    field: str, value: Any, names: Mapping[str, Mapping[str, str]], attribute: Attribute | None = None
) -> Any:
    """The text a planned value becomes on the SCIM user (an entity key becomes its name)."""
    if is_missing(value):
        return None
    if field in ENTITY_FIELDS:
        return names.get(field, {}).get(value, value)
    if attribute is not None and attribute.date_time:
        return f"{value}T00:00:00Z"
    return value


def patch_operations(
    changes: Mapping[str, Any],
    after: Mapping[str, Any],
    current: Mapping[str, Any],
    names: Mapping[str, Mapping[str, str]],
    manager: str | None,
    attributes: Mapping[str, Attribute] = ATTRIBUTES,
) -> list[dict[str, Any]]:
    """The PATCH operations of one planned update: the changed attributes only, a ``remove`` per clear.

    `changes`: field -> [before, after] (the plan's); `after`: the planned row; `current`: the user
    as the server holds it (whether its typed entries exist decides between a sub-attribute
    ``replace`` and an ``add`` of the entry); `manager`: the new manager's SCIM id.
    """
    operations: list[dict[str, Any]] = []
    added: dict[tuple[str, str], dict[str, Any]] = {}
    for field in changes:
        if field == "manager":
            if manager is None:
                operations.append({"op": "remove", "path": MANAGER.path})
            else:
                operations.append({"op": "replace", "path": MANAGER.path, "value": {"value": manager}})
            continue
        attribute = attributes.get(field)
        if attribute is None:
            continue
        value = written_value(field, after.get(field), names, attribute)
        if field == "email" and value is not None:
            operations.append({"op": "replace", "path": "userName", "value": value})
        if attribute.multi and not _has_entry(current, attribute):
            if value is not None:
                entry = added.setdefault((attribute.multi, str(attribute.kind)), {"type": attribute.kind})
                entry[attribute.sub] = value
            continue
        if value is None:
            path = attribute.entry if attribute.multi in WHOLE_ENTRY else attribute.path
            operations.append({"op": "remove", "path": path})
        else:
            operations.append({"op": "replace", "path": attribute.path, "value": value})
    for (multi, _), entry in added.items():
        operations.append({"op": "add", "path": multi, "value": [entry]})
    return operations


def _has_entry(resource: Mapping[str, Any], attribute: Attribute) -> bool:
    return any(
        isinstance(e, Mapping) and e.get("type") == attribute.kind for e in resource.get(str(attribute.multi)) or ()
    )


def person(resource: Mapping[str, Any]) -> tuple[str | None, str]:
    """Name and address of a SCIM user, as `FrankliSession.people_of` gives them."""
    name = resource.get("name") if isinstance(resource.get("name"), Mapping) else {}
    full = " ".join(p for p in (name.get("givenName"), name.get("familyName")) if isinstance(p, str) and p)
    return (full or None, str(resource.get("userName") or ""))
