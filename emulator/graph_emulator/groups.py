"""Security groups with direct and nested membership, and their flattened user members.

The sync scopes users by group, and real directories nest groups (sometimes in
cycles), so /groups/{id}/transitiveMembers must return every user reachable through
nesting exactly once. Flattening a 1,000,000-member group for each page would be
quadratic, so the sorted flattened list is cached per group and rebuilt only after
membership changes (one version counter for all groups keeps invalidation trivial).
The tenant owns one GroupDirectory and calls it with its lock held.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

# Graph group properties the emulator serves, in a stable order.
GROUP_PROPERTIES: tuple[str, ...] = (
    "id",
    "displayName",
    "description",
    "mail",
    "mailEnabled",
    "mailNickname",
    "securityEnabled",
    "groupTypes",
    "visibility",
)


@dataclass
class Group:
    id: str
    display_name: str
    description: str | None
    mail_nickname: str
    users: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)

    def to_graph(self) -> dict[str, Any]:
        """A security group as Graph serialises it."""
        return {
            "id": self.id,
            "displayName": self.display_name,
            "description": self.description,
            "mail": None,
            "mailEnabled": False,
            "mailNickname": self.mail_nickname,
            "securityEnabled": True,
            "groupTypes": [],
            "visibility": None,
        }


class GroupDirectory:
    """Groups by id; not thread-safe on its own (the tenant's lock guards it)."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self._version = 0
        self._flattened: dict[str, tuple[int, list[str]]] = {}

    def add(self, group: Group) -> None:
        if group.id in self.groups:
            raise ValueError(f"group {group.id} already exists")
        missing = sorted(g for g in group.groups if g not in self.groups and g != group.id)
        if missing:
            raise ValueError(f"nested groups do not exist: {', '.join(missing)}")
        self.groups[group.id] = group
        self._version += 1

    def get(self, group_id: str) -> Group:
        group = self.groups.get(group_id)
        if group is None:
            raise KeyError(group_id)
        return group

    def add_member(self, group_id: str, member_id: str, is_user: bool) -> None:
        group = self.get(group_id)
        if is_user:
            group.users.add(member_id)
        elif member_id in self.groups:
            group.groups.add(member_id)  # cycles are allowed: flattening tolerates them
        else:
            raise ValueError(f"no user or group has id {member_id}")
        self._version += 1

    def remove_member(self, group_id: str, member_id: str) -> None:
        group = self.get(group_id)
        if member_id in group.users:
            group.users.discard(member_id)
        elif member_id in group.groups:
            group.groups.discard(member_id)
        else:
            raise KeyError(member_id)
        self._version += 1

    def forget_user(self, user_id: str) -> None:
        """A hard-deleted user leaves every group (O(number of groups), not O(members))."""
        touched = False
        for group in self.groups.values():
            if user_id in group.users:
                group.users.discard(user_id)
                touched = True
        if touched:
            self._version += 1

    def transitive_users(self, group_id: str) -> list[str]:
        """Sorted ids of every user reachable from the group through nesting, each once.

        The returned list is shared with the cache: callers must not modify it.
        """
        cached = self._flattened.get(group_id)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        seen_groups = {group_id}
        queue = deque([group_id])
        users: set[str] = set()
        while queue:  # breadth-first with a visited set, so cycles end
            group = self.get(queue.popleft())
            users |= group.users
            for nested in group.groups:
                if nested not in seen_groups:
                    seen_groups.add(nested)
                    queue.append(nested)
        flattened = sorted(users)
        self._flattened[group_id] = (self._version, flattened)
        return flattened
