"""Scripted failures (throttling, outages, slow answers, dropped connections, short reads) for retry testing.

Graph throttles (429, with or without Retry-After), has transient outages (503), can be
slow, and connections do drop mid-response; a sync must survive all of these. Worse,
a listing can also end early with a clean 200 (an empty last page, then no nextLink,
or a deltaLink), which no retry notices: only comparing the number of users read with
the size Graph reports ($count) does, so `ends_early` scripts that too. A
FaultPlan says which requests fail how, deterministically: rules count the requests
they match, and fire on every Nth, on listed ordinals, or with a probability drawn
from a per-rule rng seeded from the plan's seed (so one rule's draws never shift
another's). Whether a request is faulted is decided before it is served, and paging
is stateless, so a client retrying the same URL afterwards gets the very same page.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FaultRule:
    """Which requests (path prefix + selector) get which fault (status, delay, reset, ends_early).

    Selectors (at most one): `every` N-th matching request, `ordinals` (1-based positions
    among matching requests), or `probability`; none means every matching request.
    Faults: `status` (e.g. 429 or 503, optionally with `retry_after` seconds sent as the
    Retry-After header), `reset` (headers and part of the body, then the connection is
    reset), `ends_early` (a 200 page with no users that ends the listing: no nextLink,
    and on /users/delta a valid deltaLink), and/or `delay` seconds before answering
    (alone: a slow but normal answer). An `ends_early` rule only sees collection pages
    (/users, /users/delta, /groups, transitiveMembers): other requests neither count
    towards its selector nor fire it.
    """

    path_prefix: str = "/v1.0"
    status: int | None = None
    retry_after: int | None = None
    delay: float = 0.0
    reset: bool = False
    every: int | None = None
    ordinals: tuple[int, ...] = ()
    probability: float | None = None
    code: str | None = None  # Graph error code in the body; a default per status otherwise
    ends_early: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "ordinals", tuple(self.ordinals))
        if not self.path_prefix.startswith("/"):
            raise ValueError("path_prefix must start with '/'")
        if self.status is not None and not (isinstance(self.status, int) and 400 <= self.status <= 599):
            raise ValueError("status must be an HTTP error status (400-599)")
        self._check_outcome()
        if self.retry_after is not None:
            if self.status is None:
                raise ValueError("retry_after needs a status")
            if not isinstance(self.retry_after, int) or self.retry_after < 0:
                raise ValueError("retry_after must be a whole number of seconds (Retry-After is an integer)")
        if not isinstance(self.delay, int | float) or self.delay < 0:
            raise ValueError("delay must be a non-negative number of seconds")
        selectors = [self.every is not None, bool(self.ordinals), self.probability is not None]
        if sum(selectors) > 1:
            raise ValueError("use at most one of every, ordinals and probability")
        if self.every is not None and (not isinstance(self.every, int) or self.every < 1):
            raise ValueError("every must be a positive integer")
        if any(not isinstance(n, int) or n < 1 for n in self.ordinals):
            raise ValueError("ordinals are 1-based positions among matching requests")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")

    def _check_outcome(self) -> None:
        """A rule answers in one way at most: a status, a reset, or an early end (each may be delayed)."""
        if not isinstance(self.reset, bool) or not isinstance(self.ends_early, bool):
            raise ValueError("reset and ends_early must be true or false")
        outcomes = [self.status is not None, self.reset, self.ends_early]
        if sum(outcomes) > 1:
            raise ValueError("a rule answers with a status, resets the connection or ends early: only one of them")
        if not any(outcomes) and not self.delay:
            raise ValueError("a rule needs a status, reset, ends_early or delay")

    @property
    def kind(self) -> str:
        """How stats count it: status_429, status_503, reset, ends_early or delay."""
        if self.status is not None:
            return f"status_{self.status}"
        if self.ends_early:
            return "ends_early"
        return "reset" if self.reset else "delay"

    def matches(self, path: str, listing: bool = True) -> bool:
        """Whether the rule counts this request; `listing`: it reads a page of a collection."""
        if self.ends_early and not listing:
            return False  # only a collection page can end early; anything else is not this rule's business
        return path.lower().startswith(self.path_prefix.lower())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRule:
        if not isinstance(data, dict):
            raise ValueError("a fault rule must be a JSON object")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown fault rule fields: {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ordinals"] = list(self.ordinals)
        return data


@dataclass(frozen=True)
class FaultPlan:
    """An ordered list of rules (the first rule that fires wins) and the seed for probabilities."""

    rules: tuple[FaultRule, ...] = field(default_factory=tuple)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultPlan:
        """{"seed": 7, "rules": [{"path_prefix": "/v1.0/users", "status": 429, "retry_after": 2, "every": 3}]}"""
        if not isinstance(data, dict):
            raise ValueError("a fault plan must be a JSON object")
        unknown = sorted(set(data) - {"rules", "seed"})
        if unknown:
            raise ValueError(f"unknown fault plan fields: {', '.join(unknown)}")
        rules = data.get("rules", [])
        seed = data.get("seed", 0)
        if not isinstance(rules, list):
            raise ValueError("rules must be a list")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError("seed must be an integer")
        return cls(tuple(FaultRule.from_dict(rule) for rule in rules), seed)

    @classmethod
    def from_json_file(cls, path: str | Path) -> FaultPlan:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "rules": [rule.to_dict() for rule in self.rules]}


class FaultInjector:
    """Applies a plan to the stream of requests; thread-safe. Counts what it injected."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self._lock = threading.Lock()
        self._injected: Counter[str] = Counter()
        self.set_plan(plan)

    @property
    def plan(self) -> FaultPlan | None:
        with self._lock:
            return self._plan

    def set_plan(self, plan: FaultPlan | None) -> None:
        """Replace the plan (None clears it); rule counters and rngs start afresh, stats are kept."""
        with self._lock:
            self._plan = plan if plan is not None and plan.rules else None
            rules = self._plan.rules if self._plan is not None else ()
            self._seen = [0] * len(rules)
            seed = self._plan.seed if self._plan is not None else 0
            self._rngs = [random.Random(f"faults:{seed}:{index}") for index in range(len(rules))]

    def decide(self, path: str, listing: bool = True) -> FaultRule | None:
        """The rule to apply to this request, if any. Every matching rule counts the request.

        `listing` says whether the request reads a page of a collection (see FaultRule.matches).
        """
        with self._lock:
            if self._plan is None:
                return None
            chosen: FaultRule | None = None
            for index, rule in enumerate(self._plan.rules):
                if not rule.matches(path, listing):
                    continue
                self._seen[index] += 1
                fires = self._fires(index, rule, self._seen[index])
                if fires and chosen is None:
                    chosen = rule
            if chosen is not None:
                self._injected[chosen.kind] += 1
            return chosen

    def _fires(self, index: int, rule: FaultRule, ordinal: int) -> bool:
        if rule.every is not None:
            return ordinal % rule.every == 0
        if rule.ordinals:
            return ordinal in rule.ordinals
        if rule.probability is not None:
            return self._rngs[index].random() < rule.probability
        return True

    @property
    def injected(self) -> int:
        with self._lock:
            return sum(self._injected.values())

    def injected_by_kind(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._injected.items()))
