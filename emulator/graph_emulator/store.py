"""The in-memory directory the emulator serves: users as Graph JSON plus manager links.

Why it looks like this:
- The HTTP server reads pages from many threads while tests and the day-2 script
  mutate it, so every access goes through one lock.
- Stored user dicts are never modified in place (updates replace the dict), which
  lets readers hold on to a page of them after the lock is released without copying
  100,000 dicts per request. Public getters still return copies.
- Paging is by object id, so a sorted id list is kept up to date (bisect) instead of
  being re-sorted for every page.
"""

from __future__ import annotations

import bisect
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

User = dict[str, Any]

# The Graph properties each stored user has, in a stable order.
USER_PROPERTIES: tuple[str, ...] = (
    "id",
    "userPrincipalName",
    "mail",
    "displayName",
    "givenName",
    "surname",
    "jobTitle",
    "department",
    "officeLocation",
    "companyName",
    "employeeId",
    "streetAddress",
    "city",
    "state",
    "postalCode",
    "country",
    "usageLocation",
    "businessPhones",
    "mobilePhone",
    "employeeHireDate",
    "accountEnabled",
    "userType",
)
_PROPERTY_SET = frozenset(USER_PROPERTIES)
_UNSET: Any = object()  # distinguishes "leave the manager alone" from manager_id=None


def _copy_user(user: Mapping[str, Any]) -> User:
    """Copy deep enough that callers can't reach stored state (businessPhones is the only list)."""
    copied = dict(user)
    copied["businessPhones"] = list(copied.get("businessPhones") or [])
    return copied


class Tenant:
    """A thread-safe set of users keyed by object id, with their managers."""

    def __init__(self, domain: str = "contoso.example", seed: int = 0) -> None:
        self.domain = domain
        self.seed = seed
        self.managers: dict[str, str] = {}
        self._users: dict[str, User] = {}
        self._upns: dict[str, str] = {}  # lower-cased UPN -> id
        self._sorted_ids: list[str] = []
        self._lock = threading.RLock()

    @contextmanager
    def batch(self) -> Iterator[Tenant]:
        """Hold the lock across several mutations so concurrent readers see all of them or none."""
        with self._lock:
            yield self

    # ----------------------------------------------------------------- reads
    def __len__(self) -> int:
        with self._lock:
            return len(self._users)

    def __contains__(self, object_id: object) -> bool:
        with self._lock:
            return object_id in self._users

    def get_user(self, object_id: str) -> User | None:
        """A copy of the user, or None when no user has that id."""
        with self._lock:
            user = self._users.get(object_id)
            return _copy_user(user) if user is not None else None

    def resolve(self, key: str) -> str | None:
        """Map an object id or a userPrincipalName to an object id, as Graph's /users/{id|upn} does."""
        with self._lock:
            if key in self._users:
                return key
            return self._upns.get(key.lower())

    def manager_of(self, object_id: str) -> str | None:
        """The manager's object id, or None (no manager, or unknown user)."""
        with self._lock:
            return self.managers.get(object_id)

    def ids_sorted(self) -> list[str]:
        """All object ids in paging order."""
        with self._lock:
            return list(self._sorted_ids)

    def users_sorted(self) -> list[User]:
        """Copies of all users in stable paging order (by object id)."""
        with self._lock:
            return [_copy_user(self._users[i]) for i in self._sorted_ids]

    def __iter__(self) -> Iterator[User]:
        return iter(self.users_sorted())

    def direct_reports(self, object_id: str) -> list[str]:
        """Object ids of the user's direct reports, sorted (O(n): for tools and tests)."""
        with self._lock:
            return sorted(uid for uid, mid in self.managers.items() if mid == object_id)

    def page_after(
        self, after_id: str | None, limit: int, include_managers: bool = False
    ) -> tuple[list[tuple[User, User | None]], bool]:
        """Up to `limit` users with id > after_id, each with its manager when asked, plus a has-more flag.

        Returns the stored dicts themselves (they are never mutated in place), so callers
        must treat them as read-only. Keying on the last id served rather than an offset
        keeps paging correct while users are added or deleted between pages.
        """
        with self._lock:
            start = 0 if after_id is None else bisect.bisect_right(self._sorted_ids, after_id)
            ids = self._sorted_ids[start : start + limit]
            more = start + limit < len(self._sorted_ids)
            users = self._users
            if not include_managers:
                return [(users[i], None) for i in ids], more
            managers = self.managers
            rows = []
            for i in ids:
                manager_id = managers.get(i)
                rows.append((users[i], users.get(manager_id) if manager_id else None))
            return rows, more

    def user_and_manager(self, object_id: str) -> tuple[User | None, User | None]:
        """The stored user and its manager (read-only snapshots), for single-user requests."""
        with self._lock:
            user = self._users.get(object_id)
            manager_id = self.managers.get(object_id)
            manager = self._users.get(manager_id) if manager_id else None
            return user, manager

    @staticmethod
    def is_valid_member(user: Mapping[str, Any]) -> bool:
        """An enabled Member whose UPN equals its mail and with the required names present.

        These are the users a sync should handle without any special casing, so the
        day-2 script picks its change targets among them.
        """
        upn, mail = user.get("userPrincipalName"), user.get("mail")
        return bool(
            user.get("accountEnabled") is True
            and user.get("userType") == "Member"
            and upn
            and mail
            and upn.lower() == mail.lower()
            and user.get("givenName")
            and user.get("surname")
        )

    # ------------------------------------------------------------- mutations
    def add_user(self, user: Mapping[str, Any], manager_id: str | None = None) -> str:
        """Add a user (missing properties become null; a missing id gets a random one); returns its id."""
        stored: User = {prop: None for prop in USER_PROPERTIES}
        stored["businessPhones"] = []
        self._check_props(user, allow_id=True)
        stored.update(_copy_user(user))
        if not stored.get("id"):
            stored["id"] = str(uuid.uuid4())
        object_id = stored["id"]
        upn = stored.get("userPrincipalName")
        if not upn:
            raise ValueError("userPrincipalName is required")
        with self._lock:
            if object_id in self._users:
                raise ValueError(f"user {object_id} already exists")
            if upn.lower() in self._upns:
                raise ValueError(f"userPrincipalName {upn} is already in use")
            if manager_id is not None and manager_id not in self._users:
                raise ValueError(f"manager {manager_id} does not exist")
            self._users[object_id] = stored
            self._upns[upn.lower()] = object_id
            bisect.insort(self._sorted_ids, object_id)
            if manager_id is not None:
                self.managers[object_id] = manager_id
        return object_id

    def update_user(self, object_id: str, manager_id: Any = _UNSET, **props: Any) -> User:
        """Change Graph properties (and the manager with manager_id=, None clears it); returns a copy."""
        self._check_props(props, allow_id=False)
        with self._lock:
            current = self._users.get(object_id)
            if current is None:
                raise KeyError(object_id)
            updated = _copy_user(current)
            updated.update(props)
            old_upn, new_upn = current["userPrincipalName"], updated.get("userPrincipalName")
            if not new_upn:
                raise ValueError("userPrincipalName is required")
            if new_upn.lower() != old_upn.lower() and new_upn.lower() in self._upns:
                raise ValueError(f"userPrincipalName {new_upn} is already in use")
            if manager_id is not _UNSET:
                if manager_id is not None and manager_id not in self._users:
                    raise ValueError(f"manager {manager_id} does not exist")
                if manager_id is not None and self._would_cycle(object_id, manager_id):
                    raise ValueError(f"{manager_id} reports to {object_id}; that would make a cycle")
                if manager_id is None:
                    self.managers.pop(object_id, None)
                else:
                    self.managers[object_id] = manager_id
            del self._upns[old_upn.lower()]
            self._upns[new_upn.lower()] = object_id
            self._users[object_id] = updated
            return _copy_user(updated)

    def delete_user(self, object_id: str) -> None:
        """Remove a user; its direct reports are left without a manager, as in Entra ID."""
        with self._lock:
            user = self._users.pop(object_id, None)
            if user is None:
                raise KeyError(object_id)
            del self._upns[user["userPrincipalName"].lower()]
            index = bisect.bisect_left(self._sorted_ids, object_id)
            del self._sorted_ids[index]
            self.managers.pop(object_id, None)
            orphans = [uid for uid, mid in self.managers.items() if mid == object_id]
            for uid in orphans:
                del self.managers[uid]

    # -------------------------------------------------------------- internals
    @staticmethod
    def _check_props(props: Mapping[str, Any], allow_id: bool) -> None:
        unknown = sorted(set(props) - _PROPERTY_SET)
        if unknown:
            raise ValueError(f"unknown user properties: {', '.join(unknown)}")
        if not allow_id and "id" in props:
            raise ValueError("the object id cannot be changed")

    def _would_cycle(self, object_id: str, manager_id: str) -> bool:
        current: str | None = manager_id
        seen: set[str] = set()
        while current is not None and current not in seen:
            if current == object_id:
                return True
            seen.add(current)
            current = self.managers.get(current)
        return False

    def _bulk_load(self, users: list[User], managers: dict[str, str]) -> None:
        """Load a freshly generated population in one go (no per-user insort)."""
        with self._lock:
            for user in users:
                self._users[user["id"]] = user
                self._upns[user["userPrincipalName"].lower()] = user["id"]
            if len(self._upns) != len(self._users):
                raise ValueError("duplicate userPrincipalName in generated users")
            self._sorted_ids = sorted(self._users)
            self.managers.update(managers)
