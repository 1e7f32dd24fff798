"""OData query options for /users (and transitiveMembers), validated the way Microsoft Graph validates them.

Kept separate from the HTTP plumbing so the rules (what $top accepts, what $select may
name, how $expand caps the page size, what a skiptoken holds) read in one place and
can be tested without a socket.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from graph_emulator.errors import GraphError, bad_request
from graph_emulator.filters import UserFilter, parse_filter
from graph_emulator.store import OPTIONAL_PROPERTIES, USER_PROPERTIES, User

__all__ = [
    "GraphError",
    "UserQuery",
    "bad_request",
    "next_link",
    "parse_count",
    "parse_options",
    "parse_select",
    "parse_top",
    "require_eventual",
]

# Properties a client may $select: every user property (the optional ones null unless a test sets them).
SELECTABLE: tuple[str, ...] = (*USER_PROPERTIES, *OPTIONAL_PROPERTIES)
_BY_LOWER = {name.lower(): name for name in SELECTABLE}

# What Graph returns for a user when no $select is given (accountEnabled is not in it).
DEFAULT_SELECT: tuple[str, ...] = (
    "id",
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
)

DEFAULT_TOP = 100
MAX_TOP = 999
EXPAND_PAGE_CAP = 100  # Graph serves at most 100 users per page when $expand is used
_EXPAND = re.compile(r"^manager(?:\(\s*\$select\s*=\s*([^)]*)\))?$", re.IGNORECASE)
_CURSOR_PREFIX = "emu1:"


@dataclass(frozen=True)
class UserQuery:
    """Validated options for a users request."""

    select: tuple[str, ...] = DEFAULT_SELECT
    top: int = DEFAULT_TOP
    expand_manager: bool = False
    manager_select: tuple[str, ...] = DEFAULT_SELECT
    after_id: str | None = None  # decoded from $skiptoken
    filter: UserFilter | None = None
    count: bool = False  # $count=true: the first page carries @odata.count

    @property
    def page_size(self) -> int:
        return min(self.top, EXPAND_PAGE_CAP) if self.expand_manager else self.top

    def project(self, user: User, manager: User | None) -> dict[str, Any]:
        """The user as Graph would serialise it for this query."""
        body = {prop: user.get(prop) for prop in self.select}
        if self.expand_manager and manager is not None:
            body["manager"] = project_manager(manager, self.manager_select)
        return body


def project_manager(manager: User, select: tuple[str, ...]) -> dict[str, Any]:
    body: dict[str, Any] = {"@odata.type": "#microsoft.graph.user"}
    body.update((prop, manager.get(prop)) for prop in select)
    return body


def parse_select(raw: str) -> tuple[str, ...]:
    """Canonical property names, id first, duplicates dropped; unknown names are a 400 as in Graph."""
    names = ["id"]
    for part in raw.split(","):
        name = part.strip()
        if not name:
            continue
        canonical = _BY_LOWER.get(name.lower())
        if canonical is None:
            raise bad_request(f"Could not find a property named '{name}' on type 'microsoft.graph.user'.")
        if canonical not in names:
            names.append(canonical)
    return tuple(names)


def parse_top(raw: str) -> int:
    top = int(raw) if raw.strip().isdigit() else -1
    if not 1 <= top <= MAX_TOP:
        raise bad_request(
            f"Invalid page size specified: '{raw}'. Must be between 1 and {MAX_TOP} inclusive.",
            code="Request_UnsupportedQuery",
        )
    return top


def parse_expand(raw: str) -> tuple[str, ...]:
    """The manager properties to expand; only `manager` (optionally with a nested $select) is supported."""
    match = _EXPAND.match(raw.strip())
    if match is None:
        raise bad_request(f"Unsupported $expand '{raw}': the emulator only expands 'manager'.")
    nested = match.group(1)
    return parse_select(nested) if nested is not None else DEFAULT_SELECT


def parse_count(raw: str) -> bool:
    """$count=true|false (any case); anything else is a 400, as Graph refuses it."""
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise bad_request(f"Invalid value '{raw}' for the $count query option; expected true or false.")
    return value == "true"


def require_eventual(eventual: bool) -> None:
    """Counting directory objects is an advanced query: Graph wants `ConsistencyLevel: eventual` for it.

    Without the header Graph answers 400 with exactly this code and message, so a client
    that forgets it fails here as it would against Microsoft.
    """
    if not eventual:
        raise bad_request("$count is not currently supported.")


def encode_skiptoken(last_id: str) -> str:
    """Opaque to clients; holds the last id served so the next page starts after it."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_skiptoken(token: str) -> str:
    try:
        decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    if not decoded.startswith(_CURSOR_PREFIX) or len(decoded) == len(_CURSOR_PREFIX):
        raise bad_request("Invalid $skiptoken.", code="Request_UnsupportedQuery")
    return decoded[len(_CURSOR_PREFIX) :]


def collect_options(query_string: str) -> dict[str, str]:
    """The $-options of a query string by lower-cased name; a repeated option is a 400 as in Graph."""
    options: dict[str, str] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        name = key.strip().lower()
        if not name.startswith("$"):
            continue  # Graph ignores unknown non-$ parameters
        if name in options:
            raise bad_request(f"Query option '{name}' was specified more than once.")
        options[name] = value
    return options


def reject_unknown(options: dict[str, str], allowed: set[str]) -> None:
    for name in options:
        if name == "$skip":
            raise bad_request("'$skip' is not supported by the service.")
        if name not in allowed:
            raise bad_request(f"'{name}' is not supported by the emulator.", code="Request_UnsupportedQuery")


def parse_options(query_string: str, collection: bool, allow_expand: bool = True, eventual: bool = False) -> UserQuery:
    """Validate the $-options of a users request; collection=False is a single-user request.

    `eventual`: the request carried `ConsistencyLevel: eventual`, which $count=true needs.
    """
    options = collect_options(query_string)
    allowed = {"$select"} | ({"$expand"} if allow_expand else set())
    reject_unknown(options, allowed | ({"$top", "$skiptoken", "$filter", "$count"} if collection else set()))

    select = parse_select(options["$select"]) if "$select" in options else DEFAULT_SELECT
    manager_select = parse_expand(options["$expand"]) if "$expand" in options else DEFAULT_SELECT
    count = parse_count(options["$count"]) if "$count" in options else False
    if count:
        require_eventual(eventual)
    return UserQuery(
        select=select,
        top=parse_top(options["$top"]) if "$top" in options else DEFAULT_TOP,
        expand_manager="$expand" in options,
        manager_select=manager_select,
        after_id=decode_skiptoken(options["$skiptoken"]) if "$skiptoken" in options else None,
        filter=parse_filter(options["$filter"]) if "$filter" in options else None,
        count=count,
    )


def next_link(base: str, path: str, query_string: str, last_id: str) -> str:
    """The request's own URL with its options kept and $skiptoken replaced."""
    kept = [
        part
        for part in query_string.split("&")
        if part and unquote_plus(part.split("=", 1)[0]).strip().lower() != "$skiptoken"
    ]
    kept.append(f"$skiptoken={encode_skiptoken(last_id)}")
    return f"{base}{path}?{'&'.join(kept)}"
