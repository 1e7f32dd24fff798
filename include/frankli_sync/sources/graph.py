"""Microsoft Graph source: user pages through the Azure provider's KiotaRequestAdapterHook.

Pages are yielded one at a time so the caller writes each to staging and
memory stays bounded by one page whatever the tenant's size. Links are
followed as Graph returns them (never ``$skip``, which ``/users`` rejects) and
checked against the connection's allowed hosts before a token could travel.

Users are read with ``/users/delta``: its first round returns every user in
pages of up to 999 *with* the manager (``$select=manager`` →
``manager@delta``), where ``/users?$expand=manager`` is capped at 100 per
page; its last page carries the ``@odata.deltaLink`` that the next run uses
to fetch only the changes. Every request is retried here on throttling
(429, honouring ``Retry-After``), 5xx and dropped connections with
exponential backoff (Kiota's retry middleware is switched off per request so
waits don't compound); a stale delta token (HTTP 410) raises
`DeltaTokenExpired` so the caller falls back to a full read.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from frankli_sync.entra import GRAPH_SELECT, graph_user_to_row

log = logging.getLogger(__name__)

DELTA_SELECT = ",".join((*GRAPH_SELECT, "manager"))
RETRY_STATUSES = {429, 500, 502, 503, 504}


class GraphExtractError(RuntimeError):
    """The Graph read could not complete; nothing it read may be used as a snapshot."""


class DeltaTokenExpired(GraphExtractError):
    """Graph answered 410 Gone to a delta link: the token is too old, read everything again."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 1.0
    max_delay: float = 60.0


@dataclass
class GraphPage:
    rows: list[dict[str, Any]]  # staging rows of users present (new or changed)
    removed: dict[str, str] = field(default_factory=dict)  # object id -> "deleted" | "changed"
    next_link: str | None = None
    delta_link: str | None = None


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: Any


class _RawHandler:
    """A Kiota response handler that returns status, headers and JSON instead of raising."""

    async def handle_response_async(self, response: Any, error_map: Any) -> RawResponse:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        return RawResponse(response.status_code, {k.lower(): v for k, v in response.headers.items()}, body)


class GraphClient:
    """GET requests through the hook with retries; one client per extraction."""

    def __init__(self, conn_id: str, retry: RetryPolicy = RetryPolicy(), timeout: float = 120) -> None:
        from airflow.providers.microsoft.azure.hooks.msgraph import KiotaRequestAdapterHook

        self.conn_id = conn_id
        self.retry = retry
        self.hook = KiotaRequestAdapterHook(conn_id=conn_id, timeout=timeout)
        self.requests = 0
        self.retries = 0

    async def get(self, url: str, query: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> Any:
        from kiota_http.middleware.options import ResponseHandlerOption, RetryHandlerOption

        await self.hook.assert_allowed_host(url)
        for attempt in range(1, self.retry.max_attempts + 1):
            info = self.hook.request_information(url=url, query_parameters=query, headers=headers)
            info.request_options[ResponseHandlerOption.get_key()] = ResponseHandlerOption(
                response_handler=_RawHandler()
            )
            # One retry policy, ours: Kiota's own retry middleware would multiply attempts and waits.
            info.request_options[RetryHandlerOption.get_key()] = RetryHandlerOption(max_retries=0)
            self.requests += 1
            try:
                response: RawResponse = await self.hook.send_request(info)
            except Exception as error:  # a reset or timeout: the same URL gives the same page again
                if attempt == self.retry.max_attempts or not _transient(error):
                    raise GraphExtractError(f"GET {_short(url)} failed on {self.conn_id!r}: {error}") from error
                await self._wait(attempt, None, f"{type(error).__name__}: {error}")
                continue
            if response.status == 200:
                return response.body
            if response.status == 410:
                raise DeltaTokenExpired(f"Graph answered 410 to the delta link of {self.conn_id!r}: {response.body}")
            if response.status in RETRY_STATUSES and attempt < self.retry.max_attempts:
                await self._wait(attempt, response.headers.get("retry-after"), f"HTTP {response.status}")
                continue
            raise GraphExtractError(
                f"GET {_short(url)} on {self.conn_id!r} answered HTTP {response.status} after {attempt} attempt(s): "
                f"{str(response.body)[:300]}"
            )
        raise AssertionError("unreachable")

    async def _wait(self, attempt: int, retry_after: str | None, why: str) -> None:
        self.retries += 1
        if retry_after and retry_after.strip().isdigit():
            delay = float(retry_after)
        else:  # exponential backoff with full jitter when Graph gives no Retry-After
            delay = random.uniform(0, min(self.retry.max_delay, self.retry.base_delay * 2 ** (attempt - 1)))
        log.warning("Graph %s; retry %d in %.1f s", why, attempt, delay)
        await asyncio.sleep(delay)

    async def close(self) -> None:
        await self.hook.close()


def _transient(error: Exception) -> bool:
    import httpx

    return isinstance(error, httpx.TransportError | asyncio.TimeoutError | ConnectionError)


def _short(url: str) -> str:
    return url.split("?", 1)[0][-120:]


def delta_query(page_size: int) -> dict[str, str]:
    return {"$select": DELTA_SELECT, "$top": str(page_size)}


async def iter_user_pages(
    client: GraphClient, start: str | None = None, page_size: int = 999
) -> AsyncIterator[GraphPage]:
    """Pages of ``/users/delta`` from `start` (a nextLink or deltaLink) or from the beginning."""
    if start:
        body = await client.get(start)
    else:
        body = await client.get("users/delta", query=delta_query(page_size))
    while True:
        if not isinstance(body, dict) or "value" not in body:
            raise GraphExtractError(f"unexpected Graph response on {client.conn_id!r}: {str(body)[:200]}")
        page = GraphPage(rows=[], next_link=body.get("@odata.nextLink"), delta_link=body.get("@odata.deltaLink"))
        for user in body["value"]:
            removed = user.get("@removed")
            if removed is not None:
                page.removed[user["id"]] = str(removed.get("reason", "deleted"))
            else:
                page.rows.append(graph_user_to_row(_with_manager(user)))
        yield page
        if not page.next_link:
            if not page.delta_link:
                raise GraphExtractError(f"the last delta page on {client.conn_id!r} has no @odata.deltaLink")
            return
        body = await client.get(page.next_link)


def _with_manager(user: dict[str, Any]) -> dict[str, Any]:
    """Delta returns the manager as ``manager@delta``: a list holding it (or an @removed entry)."""
    delta = user.get("manager@delta")
    if delta is None:
        return user
    current = [m for m in delta if "@removed" not in m]
    return {**user, "manager": current[0] if current else None}


async def iter_group_member_ids(client: GraphClient, group_id: str, page_size: int = 999) -> AsyncIterator[str]:
    """Object ids of the users in a group, nested groups included (transitive membership)."""
    url = f"groups/{group_id}/transitiveMembers/microsoft.graph.user"
    body = await client.get(url, query={"$select": "id", "$top": str(page_size)})
    while True:
        for member in body.get("value", []):
            yield member["id"]
        next_link = body.get("@odata.nextLink")
        if not next_link:
            return
        body = await client.get(next_link)
