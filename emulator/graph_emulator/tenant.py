"""A seedable, realistic Entra ID tenant and a scripted "day 2" change set.

The sync pipeline has to cope with the untidy data real directories hold (disabled
accounts, guests, aliases, missing names, stray whitespace, inconsistent casing), so the
generator produces a controlled share of each. Everything is drawn from one
`random.Random(seed)` in a fixed order (never iterating sets) so a seed always yields
the same tenant, and tests can rely on exact ids.
"""

from __future__ import annotations

import functools
import gc
import random
import re
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

from graph_emulator._data import (
    ALL_TITLES,
    CEO_TITLE,
    COMPANY_NAME,
    DEPARTMENT_TITLES,
    DEPARTMENTS,
    EXECUTIVE,
    FIRST_NAMES,
    GUEST_DOMAINS,
    INTERN_TITLE,
    LAST_NAMES,
    MANAGER_TITLES,
    OFFICES,
    Office,
)
from graph_emulator.store import USER_PROPERTIES, Tenant, User

__all__ = ["ChangeSet", "Tenant", "apply_day2", "generate_tenant"]

# Shares of the anomalies the sync must handle (of all users).
DISABLED_SHARE = 0.03
GUEST_SHARE = 0.02
MAIL_DIFFERS_SHARE = 0.01
MISSING_REQUIRED_SHARE = 0.01
MANGLED_SHARE = 0.01  # per attribute: department, jobTitle
NO_MOBILE_SHARE = 0.30
NO_BUSINESS_PHONE_SHARE = 0.15
NO_HIRE_DATE_SHARE = 0.05
NO_OFFICE_SHARE = 0.04
MAX_DEPTH = 6  # levels below the CEO
ALL_STAFF_GROUP = "All Staff"

_HIRE_START = date(2005, 1, 3)
_HIRE_SPAN_DAYS = (date(2025, 3, 31) - _HIRE_START).days
_DAY2_START = date(2025, 7, 1)
_REQUIRED = ("givenName", "surname", "mail")


# Version-4 bits as uuid.UUID(int=..., version=4) sets them; done by hand because building a
# UUID object per user was about a tenth of the time to generate a 1,000,000-user tenant.
_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (4 << 76)


class _Random(random.Random):
    """random.Random with choice/randrange inlined: the same draws, fewer Python calls.

    Generating a million users makes ~10 million of these calls, and the stock versions
    go through two extra Python frames each. Both replicate CPython's
    _randbelow_with_getrandbits exactly, so a seed yields the same tenant as before.
    """

    def choice(self, seq: Sequence[Any]) -> Any:
        n = len(seq)
        if not n:
            raise IndexError("Cannot choose from an empty sequence")
        k = n.bit_length()
        r = self.getrandbits(k)
        while r >= n:
            r = self.getrandbits(k)
        return seq[r]

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        low, high = (0, start) if stop is None else (start, stop)
        if step != 1 or high <= low:
            return super().randrange(start, stop, step)
        n = high - low
        k = n.bit_length()
        r = self.getrandbits(k)
        while r >= n:
            r = self.getrandbits(k)
        return low + r

    def randint(self, a: int, b: int) -> int:
        return self.randrange(a, b + 1)


def _new_id(rng: random.Random) -> str:
    """The same string as str(uuid.UUID(int=rng.getrandbits(128), version=4)), faster."""
    h = f"{(rng.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@functools.cache
def _ascii_local(name: str) -> str:
    """Fold a display name to an address part: 'Núñez' -> 'nunez', "O'Connor" -> 'oconnor'.

    Cached: names come from short lists, and folding is otherwise redone for every user.
    """
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", folded.lower())


def _graph_date(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def _mangle(value: str, rng: random.Random) -> str:
    """The same value as a careless admin might type it: stray spaces or other casing."""
    return rng.choice((f" {value}", f"{value} ", value.lower(), value.upper(), f"  {value.lower()} "))


def _canonical(value: str | None, choices: Iterable[str]) -> str | None:
    """Map a possibly mangled value back to its canonical spelling (trimmed, case-insensitive)."""
    if value is None:
        return None
    key = value.strip().casefold()
    return next((c for c in choices if c.casefold() == key), None)


class _Addresses:
    """Hands out unique addresses; a numeric suffix disambiguates repeated names (jane.doe2)."""

    def __init__(self, used: Iterable[str] = ()) -> None:
        self._used = {address.lower() for address in used}
        self._next: dict[str, int] = {}

    def claim(self, address: str) -> bool:
        key = address.lower()
        if key in self._used:
            return False
        self._used.add(key)
        return True

    def unique(self, local: str, domain: str) -> str:
        if self.claim(f"{local}@{domain}"):
            return f"{local}@{domain}"
        suffix = self._next.get(local, 2)
        while not self.claim(f"{local}{suffix}@{domain}"):
            suffix += 1
        self._next[local] = suffix + 1
        return f"{local}{suffix}@{domain}"


def _phone(office: Office, rng: random.Random) -> str:
    # Interned, like display names: a few thousand distinct values shared by a million users.
    return sys.intern(f"{office.phone_prefix} {rng.randint(1000, 9999)}")


def _member(
    rng: random.Random,
    addresses: _Addresses,
    domain: str,
    *,
    department: str,
    title: str,
    office: Office,
    employee_id: str,
    hire_date: str | None,
) -> User:
    """A well-formed Member: mail == UPN, all required names set; optional fields vary."""
    given, surname = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    upn = addresses.unique(f"{_ascii_local(given)}.{_ascii_local(surname)}", domain)
    return {
        "id": _new_id(rng),
        "userPrincipalName": upn,
        "mail": upn,
        "displayName": sys.intern(f"{given} {surname}"),
        "givenName": given,
        "surname": surname,
        "jobTitle": title,
        "department": department,
        "officeLocation": None if rng.random() < NO_OFFICE_SHARE else office.name,
        "companyName": COMPANY_NAME,
        "employeeId": employee_id,
        "streetAddress": office.street_address,
        "city": office.city,
        "state": office.state,
        "postalCode": office.postal_code,
        "country": office.country,
        "usageLocation": office.usage_location,
        "businessPhones": [] if rng.random() < NO_BUSINESS_PHONE_SHARE else [_phone(office, rng)],
        "mobilePhone": None if rng.random() < NO_MOBILE_SHARE else _phone(office, rng),
        "employeeHireDate": hire_date,
        "accountEnabled": True,
        "userType": "Member",
    }


def _guest(rng: random.Random, addresses: _Addresses, domain: str) -> User:
    """An invited B2B guest: external mail, #EXT# UPN, and hardly any HR attributes."""
    given, surname = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    external = rng.choice(GUEST_DOMAINS)
    mail = addresses.unique(f"{_ascii_local(given)}.{_ascii_local(surname)}", external)
    upn = f"{mail.replace('@', '_')}#EXT#@{domain}"
    addresses.claim(upn)
    user: User = {prop: None for prop in USER_PROPERTIES}
    user.update(
        id=_new_id(rng),
        userPrincipalName=upn,
        mail=mail,
        displayName=f"{given} {surname} (Guest)",
        givenName=given,
        surname=surname,
        businessPhones=[],
        accountEnabled=True,
        userType="Guest",
    )
    return user


def _hierarchy(n_users: int, rng: random.Random) -> tuple[list[int | None], list[int]]:
    """Parent index and depth for each user index; index 0 is the CEO.

    One VP per department reports to the CEO, then each level is a roughly constant
    factor wider, so the tree is MAX_DEPTH deep for anything from ~1,000 to 100,000+
    users. Each user reports to a random member of the level above.
    """
    parent: list[int | None] = [None] * n_users
    depth = [0] * n_users
    first = min(len(DEPARTMENTS) - 1, n_users - 1)
    growth = max(2.0, (n_users / max(first, 1)) ** (1 / (MAX_DEPTH - 1)))
    above, index, level = [0], 1, 1
    while index < n_users:
        planned = round(first * growth ** (level - 1))
        count = n_users - index if level == MAX_DEPTH else min(planned, n_users - index)
        current = list(range(index, index + count))
        for i in current:
            parent[i] = rng.choice(above)
            depth[i] = level
        above, index, level = current, index + count, level + 1
    return parent, depth


def generate_tenant(n_users: int, seed: int = 42, domain: str = "contoso.example") -> Tenant:
    """Build a tenant of n_users with a CEO-rooted manager tree and the anomaly mix above.

    Also creates the demo groups (see _add_demo_groups); they draw from their own rng so
    the users are the same as before groups existed.
    """
    if n_users < 1:
        raise ValueError("n_users must be at least 1")
    with _gc_paused():
        tenant, departments = _generate(n_users, seed, domain)
        _add_demo_groups(tenant, departments, seed)
    return tenant


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cycle collector during bulk work on the directory.

    Users are millions of acyclic dicts and strings: while they are built or churned,
    full collections rescan all of them over and over (~20% of generating 1M users,
    more of day 2) and can never free anything.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _add_demo_groups(tenant: Tenant, departments: dict[str, list[str]], seed: int) -> None:
    """One group per department (its members, by canonical department) inside an "All Staff" group.

    Gives transitiveMembers a realistic two-level nesting out of the box. Guests belong
    to no group. Ids come from a separate seeded rng, so they are stable per seed.
    """
    rng = random.Random(f"groups:{seed}")
    nested = []
    for department in DEPARTMENTS:
        nested.append(
            tenant.add_group(
                department,
                departments.get(department, ()),
                group_id=_new_id(rng),
                description=f"Everyone in {department}",
            )
        )
    tenant.add_group(ALL_STAFF_GROUP, group_ids=nested, group_id=_new_id(rng), description="Every department group")


def _generate(n_users: int, seed: int, domain: str) -> tuple[Tenant, dict[str, list[str]]]:
    """The users and manager tree, plus the member ids of each canonical department."""
    rng = _Random(seed)
    parent, depth = _hierarchy(n_users, rng)
    has_reports = [False] * n_users
    for p in parent:
        if p is not None:
            has_reports[p] = True

    # Pick the anomalous users up front, disjoint, never the CEO; guests manage nobody.
    leaves = [i for i in range(1, n_users) if not has_reports[i]]
    guests = set(rng.sample(leaves, min(round(n_users * GUEST_SHARE), len(leaves))))
    others = [i for i in range(1, n_users) if i not in guests]
    rng.shuffle(others)
    n_disabled, n_alias = round(n_users * DISABLED_SHARE), round(n_users * MAIL_DIFFERS_SHARE)
    n_missing = round(n_users * MISSING_REQUIRED_SHARE)
    disabled = set(others[:n_disabled])
    aliased = set(others[n_disabled : n_disabled + n_alias])
    missing = set(others[n_disabled + n_alias : n_disabled + n_alias + n_missing])
    members = sorted(set(range(n_users)) - guests)
    mangled_dept = set(rng.sample(members, min(round(n_users * MANGLED_SHARE), len(members))))
    mangled_title = set(rng.sample(members, min(round(n_users * MANGLED_SHARE), len(members))))
    employee_ids = rng.sample(range(100_000, 100_000 + 5 * n_users), n_users)

    # Formatted once: a million users share ~7,400 distinct hire dates.
    hire_dates = [_graph_date(_HIRE_START + timedelta(days=k)) for k in range(_HIRE_SPAN_DAYS)]
    addresses = _Addresses()
    users: list[User] = []
    departments: list[str] = []
    offices: list[Office] = []
    for i in range(n_users):
        p = parent[i]
        if p is None:
            department, office = EXECUTIVE, OFFICES[0]
        elif depth[i] == 1:
            department, office = DEPARTMENTS[1 + (i - 1) % (len(DEPARTMENTS) - 1)], rng.choice(OFFICES)
        else:
            inherit = rng.random() < 0.9
            department = departments[p] if inherit else rng.choice(DEPARTMENTS)
            office = offices[p] if rng.random() < 0.7 else rng.choice(OFFICES)
        departments.append(department)
        offices.append(office)
        if i in guests:
            users.append(_guest(rng, addresses, domain))
            continue

        if p is None:
            title = CEO_TITLE
        elif has_reports[i]:
            title = MANAGER_TITLES[min(depth[i], len(MANAGER_TITLES)) - 1]
        elif rng.random() < 0.02:
            title = INTERN_TITLE
        else:
            title = rng.choice(DEPARTMENT_TITLES[department])
        hired = None
        if p is None or rng.random() >= NO_HIRE_DATE_SHARE:
            hired = hire_dates[rng.randrange(_HIRE_SPAN_DAYS)]
        user = _member(
            rng,
            addresses,
            domain,
            department=department,
            title=title,
            office=office,
            employee_id=str(employee_ids[i]),
            hire_date=hired,
        )
        if i in disabled:
            user["accountEnabled"] = False
        if i in aliased:
            local, at_domain = user["userPrincipalName"].split("@")
            if rng.random() < 0.5:
                initial = _ascii_local(user["givenName"])[:1]
                user["mail"] = addresses.unique(f"{initial}.{_ascii_local(user['surname'])}", at_domain)
            else:
                user["mail"] = addresses.unique(local, f"legacy.{at_domain}")
        if i in missing:
            user[rng.choice(_REQUIRED)] = None
        if i in mangled_dept:
            user["department"] = _mangle(department, rng)
        if i in mangled_title:
            user["jobTitle"] = _mangle(title, rng)
        users.append(user)

    tenant = Tenant(domain=domain, seed=seed)
    managers = {users[i]["id"]: users[p]["id"] for i, p in enumerate(parent) if p is not None}
    tenant._bulk_load(users, managers)
    members: dict[str, list[str]] = {}
    for i, user in enumerate(users):
        if i not in guests:
            members.setdefault(departments[i], []).append(user["id"])
    return tenant, members


# --------------------------------------------------------------------------- day 2


@dataclass
class ChangeSet:
    """What apply_day2 did, as object ids per category (disjoint), so tests can assert each outcome."""

    hired: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    department_moved: list[str] = field(default_factory=list)
    title_changed: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    whitespace_cleared: list[str] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)
    cleared_attributes: dict[str, list[str]] = field(default_factory=dict)
    whitespace_attributes: dict[str, list[str]] = field(default_factory=dict)

    CATEGORIES = (
        "hired",
        "disabled",
        "deleted",
        "department_moved",
        "title_changed",
        "cleared",
        "whitespace_cleared",
        "renamed",
    )

    def categories(self) -> dict[str, list[str]]:
        """The id lists by category name (excludes the attribute maps)."""
        return {name: getattr(self, name) for name in self.CATEGORIES}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return asdict(self)


class _Pool:
    """A shuffled list of candidate ids that hands each out at most once."""

    def __init__(self, ids: list[str], rng: random.Random) -> None:
        self._ids = list(ids)
        rng.shuffle(self._ids)

    def take(self, count: int, what: str, accept: Any = None) -> list[str]:
        chosen = [i for i in self._ids if accept is None or accept(i)][:count]
        if len(chosen) < count:
            raise ValueError(f"tenant too small for day 2: need {count} users for {what}")
        taken = set(chosen)
        self._ids = [i for i in self._ids if i not in taken]
        return sorted(chosen)

    @property
    def remaining(self) -> list[str]:
        return list(self._ids)


# Day 2's share of the tenant per category; together ~6.9% of the users change.
DAY2_SHARES = {
    "deleted": 0.01,
    "cleared": 0.005,
    "disabled": 0.01,
    "department_moved": 0.01,
    "title_changed": 0.01,
    "whitespace_cleared": 0.002,
    "renamed": 0.002,
    "hired": 0.02,
}
DAY2_TOTAL_SHARE = sum(DAY2_SHARES.values())


def apply_day2(tenant: Tenant, seed: int = 2, share: float | None = None) -> ChangeSet:
    """Apply a scripted day of directory churn and report exactly which users changed how.

    `share`: the part of the tenant to change in all (e.g. 0.01 for a 1% churn), split across the
    categories in day 2's proportions, at least one user each; None is day 2 as scripted
    (~6.9%, at least two users per category).

    Targets are valid members only (so each change is the only thing special about them),
    never the CEO, and disjoint across categories. Deleted users manage nobody so the
    tree stays intact; new hires report to untouched valid members. The whole batch is
    applied under the tenant lock, so a concurrent reader sees all of it or none.
    """
    rng = random.Random(f"day2:{tenant.seed}:{seed}")
    with tenant.batch(), _gc_paused():
        users = tenant.stored_users()  # read-only snapshot: copying a million users would double memory
        n = len(users)
        scale = 1.0 if share is None else share / DAY2_TOTAL_SHARE

        def count(category: str, minimum: int = 2) -> int:
            return max(minimum if share is None else 1, round(n * DAY2_SHARES[category] * scale))

        managing = set(tenant.managers.values())
        valid = [i for i, u in users.items() if Tenant.is_valid_member(u) and tenant.manager_of(i)]
        changes = ChangeSet()

        pool = _Pool([i for i in valid if i not in managing], rng)
        changes.deleted = pool.take(count("deleted"), "deleted")
        deleted = set(changes.deleted)  # hoisted: built per candidate it made day 2 quadratic
        pool = _Pool([i for i in valid if i not in deleted], rng)
        changes.cleared = pool.take(count("cleared"), "cleared", lambda i: bool(users[i]["mobilePhone"]))
        changes.disabled = pool.take(count("disabled"), "disabled")
        changes.department_moved = pool.take(count("department_moved", 3), "department_moved")
        changes.title_changed = pool.take(count("title_changed", 3), "title_changed")
        changes.whitespace_cleared = pool.take(count("whitespace_cleared", 1), "whitespace_cleared")
        changes.renamed = pool.take(count("renamed", 1), "renamed")
        hiring_managers = pool.remaining
        if not hiring_managers:
            raise ValueError("tenant too small for day 2: no untouched valid member to hire under")

        for object_id in changes.deleted:
            tenant.delete_user(object_id)
        for object_id in changes.disabled:
            tenant.update_user(object_id, accountEnabled=False)
        for object_id in changes.cleared:
            tenant.update_user(object_id, mobilePhone=None)
            changes.cleared_attributes[object_id] = ["mobilePhone"]
        for n_done, object_id in enumerate(changes.whitespace_cleared):
            attribute = "jobTitle" if n_done % 2 == 0 else "mobilePhone"
            tenant.update_user(object_id, **{attribute: "   "})
            changes.whitespace_attributes[object_id] = [attribute]
        for object_id in changes.department_moved:
            current = (users[object_id]["department"] or "").strip().casefold()
            departments = [d for d in DEPARTMENTS if d.casefold() != current]
            tenant.update_user(object_id, department=rng.choice(departments))
        for object_id in changes.title_changed:
            current = (users[object_id]["jobTitle"] or "").strip().casefold()
            titles = [t for t in ALL_TITLES if t.casefold() != current and t != CEO_TITLE]
            tenant.update_user(object_id, jobTitle=rng.choice(titles))

        addresses = _Addresses(a for u in users.values() for a in (u["userPrincipalName"], u["mail"]) if a)
        for object_id in changes.renamed:
            user = users[object_id]
            surname = rng.choice([s for s in LAST_NAMES if s != user["surname"]])
            local = f"{_ascii_local(user['givenName'])}.{_ascii_local(surname)}"
            address = addresses.unique(local, user["userPrincipalName"].split("@")[1])
            tenant.update_user(
                object_id,
                surname=surname,
                displayName=f"{user['givenName']} {surname}",
                userPrincipalName=address,
                mail=address,
            )

        changes.hired = _hire(tenant, rng, addresses, users, hiring_managers, count("hired"))
    return changes


def _hire(
    tenant: Tenant,
    rng: random.Random,
    addresses: _Addresses,
    users: dict[str, User],
    managers: list[str],
    count: int,
) -> list[str]:
    """Add `count` valid members, each in their manager's department and office."""
    numeric_ids = [int(u["employeeId"]) for u in users.values() if (u["employeeId"] or "").isdigit()]
    next_employee_id = max(numeric_ids, default=100_000) + 1
    offices = {office.name: office for office in OFFICES}
    hired = []
    for k in range(count):
        manager = users[rng.choice(managers)]
        department = _canonical(manager["department"], DEPARTMENTS) or EXECUTIVE
        office = offices.get(manager["officeLocation"] or "") or rng.choice(OFFICES)
        user = _member(
            rng,
            addresses,
            tenant.domain,
            department=department,
            title=rng.choice(DEPARTMENT_TITLES[department]),
            office=office,
            employee_id=str(next_employee_id + k),
            hire_date=_graph_date(_DAY2_START + timedelta(days=rng.randrange(14))),
        )
        while user["id"] in tenant:
            user["id"] = _new_id(rng)
        hired.append(tenant.add_user(user, manager_id=manager["id"]))
    return sorted(hired)
