"""Microsoft Graph source: pages of users through the Azure provider's KiotaRequestAdapterHook.

Pages are yielded one at a time so the caller can write each to staging and
memory stays bounded by one page, whatever the tenant's size. The nextLink is
followed as Graph returns it (never ``$skip``, which ``/users`` rejects), and
checked against the connection's allowed hosts before the token could travel.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from frankli_sync.entra import GRAPH_SELECT, graph_user_to_row

# Graph caps pages at 100 whenever $expand is used, whatever $top says.
EXPAND_PAGE_CAP = 100


class GraphExtractError(RuntimeError):
    """The Graph read could not complete; nothing it read may be used as a snapshot."""


def users_query(page_size: int = 999, with_manager: bool = True) -> dict[str, str]:
    query = {"$select": ",".join(GRAPH_SELECT), "$top": str(page_size)}
    if with_manager:
        query["$expand"] = "manager($select=id)"
        query["$top"] = str(min(page_size, EXPAND_PAGE_CAP))
    return query


async def iter_user_pages(conn_id: str, page_size: int = 999) -> AsyncIterator[list[dict[str, Any]]]:
    """Yield staging rows page by page from ``GET /users`` (with each user's manager id)."""
    from airflow.providers.microsoft.azure.hooks.msgraph import KiotaRequestAdapterHook

    hook = KiotaRequestAdapterHook(conn_id=conn_id, timeout=120)
    try:
        response = await hook.run(url="users", query_parameters=users_query(page_size))
        while True:
            if not isinstance(response, dict) or "value" not in response:
                raise GraphExtractError(f"unexpected Graph response for /users on {conn_id!r}: {str(response)[:200]}")
            yield [graph_user_to_row(user) for user in response["value"]]
            next_link = response.get("@odata.nextLink")
            if not next_link:
                return
            await hook.assert_allowed_host(next_link)
            response = await hook.run(url=next_link)
    finally:
        await hook.close()


def read_users(conn_id: str, on_page: Callable[[list[dict[str, Any]]], None], page_size: int = 999) -> int:
    """Read every user, handing each page to `on_page`; returns the number of users read."""

    async def consume() -> int:
        total = 0
        async for page in iter_user_pages(conn_id, page_size):
            on_page(page)
            total += len(page)
        return total

    return asyncio.run(consume())
