"""A sorted list of object ids that stays cheap to change at a million entries.

Paging is by object id, so the store keeps its ids sorted. A flat list costs a
memmove of the whole list per insert or delete (milliseconds at 1M ids, so a day of
churn took tens of seconds); splitting it into blocks of about a thousand makes each
change touch one small block while iteration and bisection stay simple.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from itertools import chain, islice

_BLOCK = 1000  # blocks split at twice this; small enough that insort within one is cheap


class SortedIds:
    """Unique strings kept in sorted order, with O(sqrt n)-ish insert and remove."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        """`ids` must not repeat (the store passes dict keys)."""
        items = sorted(ids)
        self._blocks: list[list[str]] = [items[i : i + _BLOCK] for i in range(0, len(items), _BLOCK)]
        self._maxes: list[str] = [block[-1] for block in self._blocks]
        self._len = len(items)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[str]:
        return chain.from_iterable(self._blocks)

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, str):
            return False
        k = bisect.bisect_left(self._maxes, item)
        if k == len(self._maxes):
            return False
        block = self._blocks[k]
        i = bisect.bisect_left(block, item)
        return i < len(block) and block[i] == item

    def to_list(self) -> list[str]:
        return list(chain.from_iterable(self._blocks))

    def add(self, item: str) -> None:
        """Insert item; a value already present is a ValueError (ids are unique)."""
        if not self._blocks:
            self._blocks, self._maxes, self._len = [[item]], [item], 1
            return
        k = min(bisect.bisect_left(self._maxes, item), len(self._maxes) - 1)
        block = self._blocks[k]
        i = bisect.bisect_left(block, item)
        if i < len(block) and block[i] == item:
            raise ValueError(f"{item} is already present")
        block.insert(i, item)
        self._maxes[k] = block[-1]
        self._len += 1
        if len(block) > 2 * _BLOCK:
            self._blocks[k : k + 1] = [block[:_BLOCK], block[_BLOCK:]]
            self._maxes[k : k + 1] = [block[_BLOCK - 1], block[-1]]

    def remove(self, item: str) -> None:
        """Remove item; a missing value is a KeyError."""
        k = bisect.bisect_left(self._maxes, item)
        block = self._blocks[k] if k < len(self._blocks) else []
        i = bisect.bisect_left(block, item)
        if i == len(block) or block[i] != item:
            raise KeyError(item)
        del block[i]
        self._len -= 1
        if block:
            self._maxes[k] = block[-1]
        else:
            del self._blocks[k], self._maxes[k]

    def iter_after(self, after: str | None) -> Iterator[str]:
        """Ids strictly greater than `after` (all ids when None), in order."""
        if after is None:
            return iter(self)
        k = bisect.bisect_right(self._maxes, after)
        if k == len(self._blocks):
            return iter(())
        first = self._blocks[k]
        head = islice(first, bisect.bisect_right(first, after), None)
        return chain(head, chain.from_iterable(self._blocks[k + 1 :]))
