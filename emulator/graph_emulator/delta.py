"""GET /users/delta: an initial full sync, then only what changed, as Microsoft Graph serves it.

What Graph does and this mirrors:
- A round is followed through absolute @odata.nextLink URLs ($skiptoken) until a page
  carries @odata.deltaLink ($deltatoken); the query options of the first request
  travel inside the tokens, so later requests must not add any.
- Only $select-ed properties are tracked (all properties without $select); `manager`
  may be selected and comes back as "manager@delta".
- Deleted users come back as {"id", "@removed": {"reason": "changed"}} when soft-deleted
  and "deleted" when gone for good.
- `Prefer: return=minimal` returns only the properties that changed (nulls included).
- Tokens can be replayed (the same changes come back) but expire: directory tokens live
  seven days, and an expired or unknown one is HTTP 410, meaning "resync from scratch".
- `$deltatoken=latest` skips the initial sync and hands out a token for "from now on".
- `$count` is not supported on delta (400).

The `ends_early` fault (faults.py) cuts a round short: an empty page with a valid
deltaLink, as a truncated Graph delta read looks. The client misses the rest of the
round and, as in the real incident, does not get it back from the next round.

Tokens are stateless (a watermark in the change log, the options and the issue time,
base64-encoded JSON), so a retried request always gets the same page and nothing is
held per client.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from graph_emulator.changes import MANAGER
from graph_emulator.errors import GraphError, bad_request
from graph_emulator.query import DEFAULT_SELECT, MAX_TOP, SELECTABLE, collect_options, reject_unknown
from graph_emulator.store import USER_PROPERTIES, DeltaRow, Tenant, User

DEFAULT_MAX_AGE = timedelta(days=7)  # Graph's lifetime for directory-object delta tokens
DEFAULT_DELTA_TOP = 100
_TOKEN_PREFIX = "emudelta1."  # noqa: S105 - a format marker, not a secret
_DELTA_SELECTABLE = {name.lower(): name for name in (*SELECTABLE, MANAGER)}
_SELECTABLE_NAMES = frozenset(_DELTA_SELECTABLE.values())
_USER_TYPE = "#microsoft.graph.user"


@dataclass(frozen=True)
class _State:
    """What a $skiptoken or $deltatoken carries."""

    tenant: str  # Tenant.instance: a token from another directory (or before a restart) is void
    epoch: int  # bumped by "expire all tokens"
    issued: float  # time.time() when handed out
    select: list[str] | None  # None: no $select (default properties, every property tracked)
    top: int
    since: int | None  # watermark the round reports changes after; None during the initial sync
    until: int  # watermark the round runs up to, fixed at its first page
    cursor: str | int | None = None  # initial sync: last id served; change round: next log position


def _encode(state: _State) -> str:
    raw = json.dumps(asdict(state), separators=(",", ":")).encode()
    return _TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str, name: str) -> _State:
    try:
        if not token.startswith(_TOKEN_PREFIX):
            raise ValueError(token)
        body = token[len(_TOKEN_PREFIX) :]
        state = _State(**json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))
        if not _well_formed(state):
            raise ValueError(token)
        return state
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as error:
        raise bad_request(f"Invalid {name}.", code="Request_UnsupportedQuery") from error


def _well_formed(state: _State) -> bool:
    """Field types as _encode writes them, so a tampered token is a 400 rather than a crash."""
    return (
        isinstance(state.tenant, str)
        and isinstance(state.epoch, int)
        and isinstance(state.issued, int | float)
        and (state.select is None or (isinstance(state.select, list) and set(state.select) <= _SELECTABLE_NAMES))
        and isinstance(state.top, int)
        and 1 <= state.top <= MAX_TOP
        and (state.since is None or isinstance(state.since, int))
        and isinstance(state.until, int)
        and (state.cursor is None or isinstance(state.cursor, str | int))
    )


def _gone(code: str, message: str) -> GraphError:
    return GraphError(410, code, message)


def _parse_select(raw: str) -> list[str]:
    names = ["id"]
    for part in raw.split(","):
        name = part.strip()
        if not name:
            continue
        canonical = _DELTA_SELECTABLE.get(name.lower())
        if canonical is None:
            raise bad_request(f"Could not find a property named '{name}' on type 'microsoft.graph.user'.")
        if canonical not in names:
            names.append(canonical)
    return names


def _parse_top(raw: str) -> int:
    """1 or more; Graph serves at most 999 per delta page, so larger values are clamped."""
    top = int(raw) if raw.strip().isdigit() else 0
    if top < 1:
        raise bad_request(f"Invalid page size specified: '{raw}'.", code="Request_UnsupportedQuery")
    return min(top, MAX_TOP)


class DeltaService:
    """Answers /users/delta for one tenant; holds only the token lifetime settings."""

    def __init__(
        self, tenant: Tenant, max_age: timedelta = DEFAULT_MAX_AGE, clock: Callable[[], float] = time.time
    ) -> None:
        self.tenant = tenant
        self._clock = clock
        self._lock = threading.Lock()
        self._max_age = max_age
        self._epoch = 0

    @property
    def max_age(self) -> timedelta:
        with self._lock:
            return self._max_age

    @max_age.setter
    def max_age(self, value: timedelta) -> None:
        if value < timedelta(0):
            raise ValueError("the delta token max age cannot be negative")
        with self._lock:
            self._max_age = value

    def expire_all(self) -> int:
        """Void every token handed out so far (the next use answers 410); returns the new epoch."""
        with self._lock:
            self._epoch += 1
            return self._epoch

    # ----------------------------------------------------------------- paging
    def page(self, origin: str, path: str, query: str, minimal: bool, ends_early: bool = False) -> dict[str, Any]:
        """One page of a delta round for the request `path?query` (path as the client sent it).

        `ends_early` (an injected fault) answers the page with no rows and the deltaLink
        that ends the round, however much of the round is left.
        """
        state = self._state_for(query)
        page: dict[str, Any] = {"@odata.context": _context(origin, state.select)}
        if ends_early:
            page["value"] = []
            page["@odata.deltaLink"] = self._end_link(origin, path, state)
            return page
        if state.since is None:
            return self._initial_page(page, origin, path, state)
        return self._change_page(page, origin, path, state, state.since, minimal)

    def _initial_page(self, page: dict[str, Any], origin: str, path: str, state: _State) -> dict[str, Any]:
        select = tuple(state.select) if state.select is not None else DEFAULT_SELECT
        properties = tuple(name for name in select if name != MANAGER)
        with_manager = MANAGER in select
        after = state.cursor if isinstance(state.cursor, str) else None
        rows, last, more = self.tenant.scan_after(after, state.top, None, with_manager)
        page["value"] = [self._initial_row(user, manager, properties, with_manager) for user, manager in rows]
        if more and last is not None:
            page["@odata.nextLink"] = self._link(origin, path, "$skiptoken", state, cursor=last)
        else:
            page["@odata.deltaLink"] = self._end_link(origin, path, state)
        return page

    def _change_page(
        self, page: dict[str, Any], origin: str, path: str, state: _State, since: int, minimal: bool
    ) -> dict[str, Any]:
        select = tuple(state.select) if state.select is not None else DEFAULT_SELECT
        properties = tuple(name for name in select if name != MANAGER)
        with_manager = MANAGER in select
        tracked = frozenset(USER_PROPERTIES) if state.select is None else frozenset(select) - {"id"}
        position = state.cursor if isinstance(state.cursor, int) else since + 1
        changes, resume = self.tenant.delta_changes(since, state.until, position, state.top, tracked)
        page["value"] = [_change_row(row, properties, with_manager, minimal) for row in changes]
        if resume <= state.until:
            page["@odata.nextLink"] = self._link(origin, path, "$skiptoken", state, cursor=resume)
        else:
            page["@odata.deltaLink"] = self._end_link(origin, path, state)
        return page

    def _end_link(self, origin: str, path: str, state: _State) -> str:
        """The deltaLink that ends a round: the next round reports changes after the round's watermark.

        `until` was fixed at the round's first page, so a complete round and one cut short
        by the ends_early fault hand out the very same watermark. That is what makes an
        early end faithful to a truncated Graph read: the next round reports every change
        made since the round began (none is lost), while the users the round never got to
        and that have not changed since stay missed. The current sequence would instead
        also drop changes made while the round was being read.
        """
        return self._link(origin, path, "$deltatoken", state, since=state.until)

    def _state_for(self, query: str) -> _State:
        options = collect_options(query)
        if "$count" in options:
            raise bad_request("$count is not supported on delta queries.", code="Request_UnsupportedQuery")
        tokens = [name for name in ("$skiptoken", "$deltatoken") if name in options]
        if len(tokens) == 2:
            raise bad_request("Specify either $skiptoken or $deltatoken, not both.")
        if options.get("$deltatoken", "").lower() == "latest":
            # "Sync from now": no data, just a token; the first request may still carry options.
            reject_unknown(options, {"$select", "$top", "$deltatoken"})
            current = self.tenant.change_sequence
            fresh = self._fresh(options, since=current, until=current)
            return _State(**{**asdict(fresh), "cursor": current + 1})
        if not tokens:
            reject_unknown(options, {"$select", "$top"})
            return self._fresh(options, since=None, until=self.tenant.change_sequence)
        extra = sorted(set(options) - set(tokens))
        if extra:
            # The options of the first request are inside the token; Graph does not let later ones change them.
            raise bad_request(
                f"Query options cannot be changed during change tracking; remove {', '.join(extra)}.",
                code="Request_UnsupportedQuery",
            )
        name = tokens[0]
        state = _decode(options[name], name)
        self._check(state)
        if name == "$deltatoken":  # a new round: report changes after the token's watermark
            return _State(**{**asdict(state), "until": self.tenant.change_sequence, "cursor": None})
        return state

    def _fresh(self, options: dict[str, str], since: int | None, until: int) -> _State:
        with self._lock:
            epoch = self._epoch
        return _State(
            tenant=self.tenant.instance,
            epoch=epoch,
            issued=self._clock(),
            select=_parse_select(options["$select"]) if "$select" in options else None,
            top=_parse_top(options["$top"]) if "$top" in options else DEFAULT_DELTA_TOP,
            since=since,
            until=until,
        )

    def _check(self, state: _State) -> None:
        with self._lock:
            epoch, max_age = self._epoch, self._max_age
        if state.tenant != self.tenant.instance or state.epoch != epoch:
            raise _gone("resyncRequired", "The delta token is no longer valid; a full resync is required.")
        if self._clock() - state.issued > max_age.total_seconds() or state.until > self.tenant.change_sequence:
            raise _gone(
                "syncStateNotFound",
                "The sync state generation is not found. The delta token is expired and data must be "
                "synchronized again.",
            )

    def _link(self, origin: str, path: str, name: str, state: _State, **changes: Any) -> str:
        """An absolute link whose token carries the round's options and a fresh issue time."""
        if name == "$deltatoken":
            changes.setdefault("until", changes["since"])
            changes.setdefault("cursor", None)
        with self._lock:
            epoch = self._epoch
        token = _encode(_State(**{**asdict(state), "issued": self._clock(), "epoch": epoch, **changes}))
        return f"{origin}{path}?{name}={token}"

    @staticmethod
    def _initial_row(
        user: User, manager: User | None, properties: tuple[str, ...], with_manager: bool
    ) -> dict[str, Any]:
        body = {name: user.get(name) for name in properties}
        if with_manager and manager is not None:
            body["manager@delta"] = [{"@odata.type": _USER_TYPE, "id": manager["id"]}]
        return body


def _change_row(row: DeltaRow, properties: tuple[str, ...], with_manager: bool, minimal: bool) -> dict[str, Any]:
    if row.user is None:
        return {"id": row.id, "@removed": {"reason": row.removed_reason}}
    changed = row.changed  # None: new since the token, so everything counts as changed
    if minimal and changed is not None:
        body = {"id": row.id}
        body.update((name, row.user.get(name)) for name in properties if name in changed)
    else:
        body = {name: row.user.get(name) for name in properties}
    if with_manager:
        manager_changed = changed is None or MANAGER in changed
        if row.manager_id is not None and (manager_changed or not minimal):
            body["manager@delta"] = [{"@odata.type": _USER_TYPE, "id": row.manager_id}]
        elif row.manager_id is None and changed is not None and MANAGER in changed and row.former_manager_id:
            removed = {"reason": "deleted"}
            body["manager@delta"] = [{"@odata.type": _USER_TYPE, "id": row.former_manager_id, "@removed": removed}]
    return body


def _context(origin: str, select: list[str] | None) -> str:
    suffix = "" if select is None else "({})".format(",".join(select))
    return f"{origin}/v1.0/$metadata#users{suffix}"
