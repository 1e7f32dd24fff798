"""The Graph resources served (users, a user's manager, groups, a group's transitive users).

Plain functions of (tenant, request pieces) -> JSON body (or PlainText for /$count),
kept apart from the HTTP plumbing so each resource's rules read in one place.
Collections page by object id with absolute @odata.nextLink URLs, as Graph does.

`eventual` says the request carried `ConsistencyLevel: eventual` (needed for $count);
`ends_early` is the injected fault that answers a collection page with no rows and no
nextLink, as a truncated Graph listing looks (see faults.py).
"""

from __future__ import annotations

from typing import Any

from graph_emulator.errors import GraphError, bad_request
from graph_emulator.filters import UserFilter, parse_filter
from graph_emulator.groups import GROUP_PROPERTIES
from graph_emulator.query import (
    DEFAULT_SELECT,
    UserQuery,
    collect_options,
    decode_skiptoken,
    next_link,
    parse_options,
    parse_top,
    project_manager,
    reject_unknown,
    require_eventual,
)
from graph_emulator.store import Tenant, User

_GROUP_BY_LOWER = {name.lower(): name for name in GROUP_PROPERTIES}


class PlainText(str):
    """A body the server sends as text/plain rather than JSON: Graph answers /$count with a bare number."""

    __slots__ = ()


def not_found(resource: str) -> GraphError:
    return GraphError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{resource}' does not exist or one of its queried reference-property objects are not present.",
    )


def users_context(origin: str, select: tuple[str, ...]) -> str:
    suffix = "" if select == DEFAULT_SELECT else "({})".format(",".join(select))
    return f"{origin}/v1.0/$metadata#users{suffix}"


def list_users(
    tenant: Tenant, origin: str, path: str, query: str, *, eventual: bool = False, ends_early: bool = False
) -> dict[str, Any]:
    options = parse_options(query, collection=True, eventual=eventual)
    page: dict[str, Any] = {"@odata.context": users_context(origin, options.select)}
    if options.count and options.after_id is None:  # Graph reports the total on the first page
        page["@odata.count"] = tenant.count_users(options.filter)
    if ends_early:
        return _ended(page)
    rows, last, more = tenant.scan_after(options.after_id, options.page_size, options.filter, options.expand_manager)
    link = next_link(origin, path, query, last) if more and last is not None else None
    return _users_page(page, options, rows, link)


def count_users(tenant: Tenant, query: str, *, eventual: bool = False) -> PlainText:
    """GET /users/$count: the number of users (after $filter) as text/plain."""
    user_filter = _count_filter(query, eventual)
    return PlainText(tenant.count_users(user_filter))


def _count_filter(query: str, eventual: bool) -> UserFilter | None:
    """Validate a /$count request: the header Graph requires, then $filter, the one option it takes here."""
    require_eventual(eventual)
    options = collect_options(query)
    reject_unknown(options, {"$filter"})
    return parse_filter(options["$filter"]) if "$filter" in options else None


def _ended(page: dict[str, Any]) -> dict[str, Any]:
    """The ends_early fault: no rows and no nextLink, so a client believes the listing is complete."""
    page["value"] = []
    return page


def _users_page(
    page: dict[str, Any], options: UserQuery, rows: list[tuple[User, User | None]], link: str | None
) -> dict[str, Any]:
    if link is not None:
        page["@odata.nextLink"] = link
    page["value"] = [options.project(user, manager) for user, manager in rows]
    return page


def get_user(tenant: Tenant, origin: str, key: str, query: str) -> dict[str, Any]:
    options = parse_options(query, collection=False)
    object_id = tenant.resolve(key)
    user, manager = tenant.user_and_manager(object_id) if object_id else (None, None)
    if user is None:
        raise not_found(key)
    body = {"@odata.context": users_context(origin, options.select) + "/$entity"}
    body.update(options.project(user, manager))
    return body


def get_manager(tenant: Tenant, origin: str, key: str) -> dict[str, Any]:
    object_id = tenant.resolve(key)
    user, manager = tenant.user_and_manager(object_id) if object_id else (None, None)
    if user is None:
        raise not_found(key)
    if manager is None:
        raise not_found("manager")
    body = {"@odata.context": f"{origin}/v1.0/$metadata#directoryObjects/$entity"}
    body.update(project_manager(manager, DEFAULT_SELECT))
    return body


def transitive_users(
    tenant: Tenant,
    origin: str,
    path: str,
    group_id: str,
    query: str,
    *,
    eventual: bool = False,
    ends_early: bool = False,
) -> dict[str, Any]:
    """/groups/{id}/transitiveMembers/microsoft.graph.user: each user reachable through nesting, once."""
    options = parse_options(query, collection=True, allow_expand=False, eventual=eventual)
    if tenant.get_group(group_id) is None:
        raise not_found(group_id)
    page: dict[str, Any] = {"@odata.context": users_context(origin, options.select)}
    try:  # KeyError: the group was deleted between the check and the read
        if options.count and options.after_id is None:
            page["@odata.count"] = tenant.count_transitive_users(group_id, options.filter)
        if ends_early:
            return _ended(page)
        rows, last, more = tenant.transitive_scan_after(group_id, options.after_id, options.page_size, options.filter)
    except KeyError as error:
        raise not_found(group_id) from error
    link = next_link(origin, path, query, last) if more and last is not None else None
    return _users_page(page, options, rows, link)


def count_transitive_users(tenant: Tenant, group_id: str, query: str, *, eventual: bool = False) -> PlainText:
    """GET /groups/{id}/transitiveMembers/microsoft.graph.user/$count, as text/plain."""
    user_filter = _count_filter(query, eventual)
    try:
        return PlainText(tenant.count_transitive_users(group_id, user_filter))
    except KeyError as error:
        raise not_found(group_id) from error


def _group_select(options: dict[str, str]) -> tuple[str, ...]:
    if "$select" not in options:
        return GROUP_PROPERTIES
    names = ["id"]
    for part in options["$select"].split(","):
        name = part.strip()
        if not name:
            continue
        canonical = _GROUP_BY_LOWER.get(name.lower())
        if canonical is None:
            raise bad_request(f"Could not find a property named '{name}' on type 'microsoft.graph.group'.")
        if canonical not in names:
            names.append(canonical)
    return tuple(names)


def _groups_context(origin: str, select: tuple[str, ...]) -> str:
    suffix = "" if select == GROUP_PROPERTIES else "({})".format(",".join(select))
    return f"{origin}/v1.0/$metadata#groups{suffix}"


def list_groups(tenant: Tenant, origin: str, path: str, query: str, *, ends_early: bool = False) -> dict[str, Any]:
    options = collect_options(query)
    reject_unknown(options, {"$select", "$top", "$skiptoken"})
    select = _group_select(options)
    top = parse_top(options["$top"]) if "$top" in options else 100
    after = decode_skiptoken(options["$skiptoken"]) if "$skiptoken" in options else None
    page: dict[str, Any] = {"@odata.context": _groups_context(origin, select)}
    if ends_early:
        return _ended(page)
    groups, more = tenant.groups_page_after(after, top)
    if more and groups:
        page["@odata.nextLink"] = next_link(origin, path, query, groups[-1]["id"])
    page["value"] = [{name: group[name] for name in select} for group in groups]
    return page


def get_group(tenant: Tenant, origin: str, group_id: str, query: str) -> dict[str, Any]:
    options = collect_options(query)
    reject_unknown(options, {"$select"})
    select = _group_select(options)
    group = tenant.get_group(group_id)
    if group is None:
        raise not_found(group_id)
    body: dict[str, Any] = {"@odata.context": _groups_context(origin, select) + "/$entity"}
    body.update((name, group[name]) for name in select)
    return body
