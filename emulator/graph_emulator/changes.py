"""Which user changed when, so /users/delta can answer "what changed since token X" cheaply.

Every mutation of a user gets the next number of one tenant-wide sequence; a delta
token is just such a number (a watermark). Answering a delta round therefore walks
only the log entries after the watermark, never the whole directory, which keeps
a day of churn in a 1,000,000-user tenant cheap.

Sequence number s is stored at index s - 1 of the log, so "entries after w" is a
slice, not a search. Each entry also holds the previous sequence number of the same
user, which lets a round report each user exactly once (at its first change after the
watermark) without per-round bookkeeping. For `Prefer: return=minimal`, each user
keeps the sequence number at which each of its properties last changed.
The generated population is the baseline (sequence 0) and costs nothing here.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

CREATED = "@created"  # marks "every property is new" (added or restored after the watermark)
MANAGER = "manager"  # the manager navigation property, tracked like a property


class ChangeLog:
    """Append-only change sequence; callers hold the tenant lock."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._previous = array("q")  # per entry: the same user's previous sequence number (0 = none)
        self._latest: dict[str, int] = {}
        self._property_seq: dict[str, dict[str, int]] = {}
        self._removed: dict[str, str] = {}  # currently absent user -> @removed reason
        self._former_manager: dict[str, str] = {}  # last manager a user lost, for manager@delta

    @property
    def sequence(self) -> int:
        """The latest sequence number handed out (0 before any change)."""
        return len(self._ids)

    def _append(self, object_id: str) -> int:
        self._ids.append(object_id)
        self._previous.append(self._latest.get(object_id, 0))
        seq = len(self._ids)
        self._latest[object_id] = seq
        return seq

    def created(self, object_id: str) -> None:
        """A user was added (or restored): all its properties count as changed."""
        seq = self._append(object_id)
        self._property_seq[object_id] = {CREATED: seq}
        self._removed.pop(object_id, None)

    def changed(self, object_id: str, properties: Iterable[str], former_manager: str | None = None) -> None:
        """Some properties of a present user changed (MANAGER for its manager link)."""
        names = list(properties)
        if not names:
            return
        seq = self._append(object_id)
        stamps = self._property_seq.setdefault(object_id, {})
        for name in names:
            stamps[name] = seq
        if former_manager is not None:
            self._former_manager[object_id] = former_manager

    def removed(self, object_id: str, reason: str) -> None:
        """A user left /users: reason "changed" (soft delete) or "deleted" (hard delete)."""
        self._append(object_id)
        self._removed[object_id] = reason

    def removal_reason(self, object_id: str) -> str:
        return self._removed.get(object_id, "deleted")

    def former_manager(self, object_id: str) -> str | None:
        return self._former_manager.get(object_id)

    def changed_since(self, object_id: str, since: int) -> frozenset[str] | None:
        """Properties changed after `since`; None means all of them (the user is new since then)."""
        stamps = self._property_seq.get(object_id, {})
        if stamps.get(CREATED, 0) > since:
            return None
        return frozenset(name for name, seq in stamps.items() if seq > since)

    def first_changes(self, since: int, until: int, position: int) -> Iterator[tuple[int, str]]:
        """(seq, id) for each user's first change in (since, until], from sequence `position` on.

        A user changed several times in the window appears once, at its first change, so
        a round can page through the log with a plain position as its cursor.
        """
        ids, previous = self._ids, self._previous
        for seq in range(max(position, since + 1), min(until, len(ids)) + 1):
            if previous[seq - 1] <= since:
                yield seq, ids[seq - 1]
