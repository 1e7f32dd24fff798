"""The in-memory directory the emulator serves: users as Graph JSON, manager links, groups.

Why it looks like this:
- The HTTP server reads pages from many threads while tests and the day-2 script
  mutate it, so every access goes through one lock.
- Stored user dicts are never modified in place (updates replace the dict), which
  lets readers hold on to a page of them after the lock is released without copying
  100,000 dicts per request. Public getters still return copies.
- Paging is by object id, so the ids are kept sorted (in blocks, see sortedids.py)
  instead of being re-sorted for every page.
- Every mutation is numbered in a change log (changes.py) so /users/delta answers
  from the changes since a token instead of diffing the directory.
- Soft-deleted users leave /users but are kept aside, as Entra's deleted items are,
  so delta can tell a soft delete ("changed") from a hard one ("deleted").
"""

from __future__ import annotations

import bisect
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

from graph_emulator.changes import MANAGER, ChangeLog
from graph_emulator.groups import Group, GroupDirectory
from graph_emulator.sortedids import SortedIds

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
# Properties Graph returns only when asked by $select: unset (null) unless a test sets them.
OPTIONAL_PROPERTIES: tuple[str, ...] = (
    "employeeType",
    "preferredLanguage",
    "faxNumber",
    "ageGroup",
    "onPremisesSamAccountName",
)
_PROPERTY_SET = frozenset((*USER_PROPERTIES, *OPTIONAL_PROPERTIES))
UserPredicate = Callable[[Mapping[str, Any]], bool]
_UNSET: Any = object()  # distinguishes "leave the manager alone" from manager_id=None


def _upn_key(upn: str) -> str:
    """The lower-cased UPN, reusing the string when it already is (saves ~80 MB at 1M users)."""
    return upn if upn.islower() else upn.lower()


def _copy_user(user: Mapping[str, Any]) -> User:
    """Copy deep enough that callers can't reach stored state (businessPhones is the only list)."""
    copied = dict(user)
    copied["businessPhones"] = list(copied.get("businessPhones") or [])
    return copied


class DeltaRow(NamedTuple):
    """One user in a delta round: present (user set) or removed (reason set)."""

    id: str
    user: User | None
    changed: frozenset[str] | None  # properties changed since the token; None = all (new user)
    removed_reason: str | None
    manager_id: str | None
    former_manager_id: str | None  # the manager it last lost, for manager@delta removals


class Tenant:
    """A thread-safe set of users keyed by object id, with their managers and groups."""

    def __init__(self, domain: str = "contoso.example", seed: int = 0) -> None:
        self.domain = domain
        self.seed = seed
        # Read-only for callers: mutate through the methods so the indexes stay right.
        self.managers: dict[str, str] = {}
        # Distinguishes this directory from one rebuilt with the same seed, so a delta
        # token from before an emulator restart is refused instead of answering wrongly.
        self.instance = uuid.uuid4().hex[:12]
        self._users: dict[str, User] = {}
        self._upns: dict[str, str] = {}  # lower-cased UPN -> id
        self._sorted_ids = SortedIds()
        self._reports: dict[str, set[str]] | None = None  # manager -> reports, built on first need
        self._deleted: dict[str, tuple[User, str | None]] = {}  # soft-deleted: user, its manager
        self._log = ChangeLog()
        self._groups = GroupDirectory()
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
        """A copy of the user, or None when no user has that id (soft-deleted ones included)."""
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
            return self._sorted_ids.to_list()

    def users_sorted(self) -> list[User]:
        """Copies of all users in stable paging order (by object id)."""
        with self._lock:
            return [_copy_user(self._users[i]) for i in self._sorted_ids]

    def __iter__(self) -> Iterator[User]:
        return iter(self.users_sorted())

    def stored_users(self) -> dict[str, User]:
        """id -> the stored user dicts themselves, in paging order: read-only, but no copies.

        Safe to hold after the lock is released because stored dicts are replaced, never
        modified; for bulk readers (day 2 on a million users) where copies would double memory.
        """
        with self._lock:
            users = self._users
            return {i: users[i] for i in self._sorted_ids}

    def direct_reports(self, object_id: str) -> list[str]:
        """Object ids of the user's direct reports, sorted."""
        with self._lock:
            return sorted(self._reports_index().get(object_id, ()))

    def deleted_user_ids(self) -> list[str]:
        """Soft-deleted users (Entra's deleted items), sorted."""
        with self._lock:
            return sorted(self._deleted)

    @property
    def change_sequence(self) -> int:
        """The number of the latest change (0 for a freshly generated tenant)."""
        with self._lock:
            return self._log.sequence

    def page_after(
        self, after_id: str | None, limit: int, include_managers: bool = False
    ) -> tuple[list[tuple[User, User | None]], bool]:
        """Up to `limit` users with id > after_id, each with its manager when asked, plus a has-more flag.

        Returns the stored dicts themselves (they are never mutated in place), so callers
        must treat them as read-only. Keying on the last id served rather than an offset
        keeps paging correct while users are added or deleted between pages.
        """
        rows, _, more = self.scan_after(after_id, limit, None, include_managers)
        return rows, more

    def scan_after(
        self,
        after_id: str | None,
        limit: int,
        predicate: UserPredicate | None = None,
        include_managers: bool = False,
    ) -> tuple[list[tuple[User, User | None]], str | None, bool]:
        """Like page_after, but only users matching `predicate`; also returns the last id examined.

        A filtered page resumes after the last id *examined* (not the last served), so a
        rare match never makes a client rescan the same stretch: the pages of a filtered
        read cost O(n) together.
        """
        with self._lock:
            return self._scan(self._sorted_ids.iter_after(after_id), limit, predicate, include_managers)

    def count_users(self, predicate: UserPredicate | None = None) -> int:
        """How many users /users holds (matching `predicate`): members, guests, disabled; not soft-deleted."""
        with self._lock:
            if predicate is None:
                return len(self._users)
            return sum(1 for user in self._users.values() if predicate(user))

    def user_and_manager(self, object_id: str) -> tuple[User | None, User | None]:
        """The stored user and its manager (read-only snapshots), for single-user requests."""
        with self._lock:
            user = self._users.get(object_id)
            manager_id = self.managers.get(object_id)
            manager = self._users.get(manager_id) if manager_id else None
            return user, manager

    def delta_changes(
        self, since: int, until: int, position: int, limit: int, tracked: frozenset[str]
    ) -> tuple[list[DeltaRow], int]:
        """Up to `limit` users changed in (since, until], scanning the log from sequence `position`.

        Returns the rows and the position to resume from (> until when the round is done).
        A present user counts only when a `tracked` property changed (Graph tracks only the
        $select-ed properties); new, restored and removed users always count.
        """
        with self._lock:
            rows: list[DeltaRow] = []
            log, users = self._log, self._users
            for seq, object_id in log.first_changes(since, until, position):
                if len(rows) == limit:
                    return rows, seq
                user = users.get(object_id)
                if user is None:
                    rows.append(DeltaRow(object_id, None, None, log.removal_reason(object_id), None, None))
                    continue
                changed = log.changed_since(object_id, since)
                if changed is not None and changed.isdisjoint(tracked):
                    continue
                manager = self.managers.get(object_id)
                rows.append(DeltaRow(object_id, user, changed, None, manager, log.former_manager(object_id)))
            return rows, until + 1

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
            if object_id in self._users or object_id in self._deleted:
                raise ValueError(f"user {object_id} already exists")
            if upn.lower() in self._upns:
                raise ValueError(f"userPrincipalName {upn} is already in use")
            if manager_id is not None and manager_id not in self._users:
                raise ValueError(f"manager {manager_id} does not exist")
            self._insert(stored, manager_id)
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
            changed = [prop for prop, value in props.items() if current.get(prop) != value]
            old_manager = self.managers.get(object_id)
            if manager_id is not _UNSET:
                if manager_id is not None and manager_id not in self._users:
                    raise ValueError(f"manager {manager_id} does not exist")
                if manager_id is not None and self._would_cycle(object_id, manager_id):
                    raise ValueError(f"{manager_id} reports to {object_id}; that would make a cycle")
                if manager_id != old_manager:
                    self._set_manager(object_id, manager_id)
                    changed.append(MANAGER)
            del self._upns[old_upn.lower()]
            self._upns[_upn_key(new_upn)] = object_id
            self._users[object_id] = updated
            self._log.changed(object_id, changed, former_manager=old_manager if MANAGER in changed else None)
            return _copy_user(updated)

    def delete_user(self, object_id: str) -> None:
        """Hard-delete a user (also one already soft-deleted); delta reports it as "deleted".

        Its direct reports are left without a manager, as in Entra ID, and it leaves all groups.
        """
        with self._lock:
            if object_id in self._deleted:
                del self._deleted[object_id]
            else:
                self._take_out(object_id)
            self._groups.forget_user(object_id)
            self._log.removed(object_id, "deleted")

    def soft_delete_user(self, object_id: str) -> None:
        """Move a user to deleted items: gone from /users, delta reports it as "changed".

        Its reports lose their manager (as with a hard delete); its own manager link and
        group memberships are kept for restore_user.
        """
        with self._lock:
            manager_id = self.managers.get(object_id)
            user = self._take_out(object_id)
            self._deleted[object_id] = (user, manager_id)
            self._log.removed(object_id, "changed")

    def restore_user(self, object_id: str) -> None:
        """Bring a soft-deleted user back (with its manager if that one still exists)."""
        with self._lock:
            entry = self._deleted.get(object_id)
            if entry is None:
                raise KeyError(object_id)
            user, manager_id = entry
            if user["userPrincipalName"].lower() in self._upns:
                raise ValueError(f"userPrincipalName {user['userPrincipalName']} is already in use")
            del self._deleted[object_id]
            self._insert(user, manager_id if manager_id in self._users else None)

    # ----------------------------------------------------------------- groups
    def add_group(
        self,
        display_name: str,
        member_ids: Iterable[str] = (),
        group_ids: Iterable[str] = (),
        *,
        group_id: str | None = None,
        description: str | None = None,
    ) -> str:
        """Create a security group with user members and nested groups; returns its id."""
        users, nested = set(member_ids), set(group_ids)
        nickname = "".join(ch for ch in display_name.lower() if ch.isalnum()) or "group"
        group = Group(group_id or str(uuid.uuid4()), display_name, description, nickname, users, nested)
        with self._lock:
            unknown = sorted(u for u in users if u not in self._users and u not in self._deleted)
            if unknown:
                raise ValueError(f"users do not exist: {', '.join(unknown[:5])}")
            if group.id in self._users:
                raise ValueError(f"{group.id} is a user id")
            self._groups.add(group)
        return group.id

    def add_group_member(self, group_id: str, member_id: str) -> None:
        """Add a user or a group (nesting; cycles allowed) to a group. Unknown group: KeyError."""
        with self._lock:
            is_user = member_id in self._users or member_id in self._deleted
            self._groups.add_member(group_id, member_id, is_user)

    def remove_group_member(self, group_id: str, member_id: str) -> None:
        """Remove a direct member (user or group). Unknown group or non-member: KeyError."""
        with self._lock:
            self._groups.remove_member(group_id, member_id)

    def get_group(self, group_id: str) -> dict[str, Any] | None:
        """The group as Graph JSON, or None."""
        with self._lock:
            group = self._groups.groups.get(group_id)
            return group.to_graph() if group is not None else None

    def group_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._groups.groups)

    def group_members(self, group_id: str) -> tuple[list[str], list[str]]:
        """Direct members: (user ids, nested group ids), each sorted. Unknown group: KeyError."""
        with self._lock:
            group = self._groups.get(group_id)
            return sorted(group.users), sorted(group.groups)

    def transitive_user_ids(self, group_id: str) -> list[str]:
        """Users reachable from the group through nesting (present ones only), sorted, each once."""
        with self._lock:
            return [i for i in self._groups.transitive_users(group_id) if i in self._users]

    def groups_page_after(self, after_id: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Groups with id > after_id as Graph JSON, plus a has-more flag (groups are few: sorts each time)."""
        with self._lock:
            ids = sorted(self._groups.groups)
            start = 0 if after_id is None else bisect.bisect_right(ids, after_id)
            chosen = ids[start : start + limit]
            return [self._groups.groups[i].to_graph() for i in chosen], start + limit < len(ids)

    def count_transitive_users(self, group_id: str, predicate: UserPredicate | None = None) -> int:
        """How many present users the group reaches through nesting (matching `predicate`). Unknown group: KeyError."""
        with self._lock:
            users = self._users
            members = (users.get(i) for i in self._groups.transitive_users(group_id))
            return sum(1 for user in members if user is not None and (predicate is None or predicate(user)))

    def transitive_scan_after(
        self, group_id: str, after_id: str | None, limit: int, predicate: UserPredicate | None = None
    ) -> tuple[list[tuple[User, User | None]], str | None, bool]:
        """A page of the group's transitive user members, as scan_after does for /users."""
        with self._lock:
            members = self._groups.transitive_users(group_id)
            start = 0 if after_id is None else bisect.bisect_right(members, after_id)
            # Index from `start` rather than islice, which would walk the skipped prefix every page.
            present = (members[k] for k in range(start, len(members)) if members[k] in self._users)
            return self._scan(present, limit, predicate, False)

    # -------------------------------------------------------------- internals
    def _scan(
        self, ids: Iterator[str], limit: int, predicate: UserPredicate | None, include_managers: bool
    ) -> tuple[list[tuple[User, User | None]], str | None, bool]:
        users, managers = self._users, self.managers
        rows: list[tuple[User, User | None]] = []
        last: str | None = None
        for object_id in ids:
            if len(rows) == limit:
                return rows, last, True
            last = object_id
            user = users[object_id]
            if predicate is not None and not predicate(user):
                continue
            manager = None
            if include_managers:
                manager_id = managers.get(object_id)
                manager = users.get(manager_id) if manager_id else None
            rows.append((user, manager))
        return rows, last, False

    def _insert(self, stored: User, manager_id: str | None) -> None:
        object_id = stored["id"]
        self._users[object_id] = stored
        self._upns[_upn_key(stored["userPrincipalName"])] = object_id
        self._sorted_ids.add(object_id)
        if manager_id is not None:
            self._set_manager(object_id, manager_id)
        self._log.created(object_id)

    def _take_out(self, object_id: str) -> User:
        """Remove a present user from /users, orphaning its reports (each a manager change)."""
        user = self._users.pop(object_id, None)
        if user is None:
            raise KeyError(object_id)
        del self._upns[user["userPrincipalName"].lower()]
        self._sorted_ids.remove(object_id)
        self._set_manager(object_id, None)
        for report in sorted(self._reports_index().pop(object_id, ())):
            del self.managers[report]
            self._log.changed(report, [MANAGER], former_manager=object_id)
        return user

    def _set_manager(self, object_id: str, manager_id: str | None) -> None:
        old = self.managers.pop(object_id, None)
        if manager_id is not None:
            self.managers[object_id] = manager_id
        if self._reports is not None:
            if old is not None:
                self._reports.get(old, set()).discard(object_id)
            if manager_id is not None:
                self._reports.setdefault(manager_id, set()).add(object_id)

    def _reports_index(self) -> dict[str, set[str]]:
        """manager -> direct reports; built on first use so generating and reading stay lean."""
        if self._reports is None:
            reports: dict[str, set[str]] = {}
            for report, manager in self.managers.items():
                reports.setdefault(manager, set()).add(report)
            self._reports = reports
        return self._reports

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
        """Load a freshly generated population in one go: the baseline, not changes (sequence 0)."""
        with self._lock:
            for user in users:
                self._users[user["id"]] = user
                self._upns[_upn_key(user["userPrincipalName"])] = user["id"]
            if len(self._upns) != len(self._users):
                raise ValueError("duplicate userPrincipalName in generated users")
            self._sorted_ids = SortedIds(self._users)
            self.managers.update(managers)
            self._reports = None
