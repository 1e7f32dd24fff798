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

Waiting is bounded (DESIGN §2 "Faults"): a Retry-After longer than
`RetryPolicy.max_retry_after`, or a wait that would take this client's waits
past `RetryPolicy.max_total_wait`, fails at once with `GraphThrottled` instead
of holding a worker slot for hours. Errors retrying cannot fix fail at once
too, naming the connection field to fix: a missing connection or one the
credential cannot be built from (`GraphAccessError`, before any request), a
token endpoint answering 400/401/403 (`GraphAccessError`), Graph answering
401/403 again after one token refresh (`GraphAccessError`), and Graph
answering 400 (`GraphRequestRejected`). All three are `SyncStopped`, so the
DAG fails the task without task retries.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from frankli_sync.entra import GRAPH_SELECT, graph_user_to_row
from frankli_sync.errors import SyncStopped
from frankli_sync.sources import UserPage

log = logging.getLogger(__name__)

RETRY_STATUSES = {429, 500, 502, 503, 504}
REFUSED_STATUSES = {401, 403}
# Status codes of the token endpoint that mean the connection's settings are wrong (5xx stays transient).
TOKEN_REFUSED_STATUSES = {400, 401, 403}
GRAPH_PERMISSIONS = "User.Read.All and GroupMember.Read.All"
RETRY_AFTER_SETTING = "source.max_retry_after_seconds"
RETRY_BUDGET_SETTING = "source.max_retry_seconds"
THROTTLED_NEXT = "The next scheduled run tries again; clear the extract task once Graph allows it."
FIX_NEXT = (
    "Retrying cannot fix this, so the task fails without retries; fix the connection, then clear the extract "
    "task (or let the next scheduled run pick it up)."
)

# What each field of an msgraph connection must hold, for messages that name the field to fix.
FIELD_HELP = {
    "extra.tenant_id": (
        "the directory (tenant) id of the Entra tenant: the GUID shown as Tenant ID in the Entra admin center "
        "(Overview), or its primary domain such as contoso.onmicrosoft.com"
    ),
    "login": "the Application (client) ID of the app registration (a GUID, on its Overview page)",
    "password": (
        "a client secret of the app registration: the secret's Value (not its Secret ID) from Certificates & "
        "secrets, not expired"
    ),
    "extra.authority": "the Entra sign-in host, an https URL such as https://login.microsoftonline.com",
    "permissions": (
        f"the Microsoft Graph application permissions {GRAPH_PERMISSIONS}, with admin consent granted "
        "(Entra admin center > App registrations > API permissions > Grant admin consent)"
    ),
}

# azure-identity validates the credential's inputs locally when the hook builds it (before any request),
# raising ValueError: azure/identity/_internal/utils.py validate_tenant_id ("Invalid tenant ID provided") and
# the checks in azure/identity/aio/_credentials/client_secret.py ClientSecretCredential.__init__.
_BUILD_ERRORS = (
    ("invalid tenant id", "extra.tenant_id"),
    ("tenant_id should be", "extra.tenant_id"),
    ("client_id should be", "login"),
    ("secret should be", "password"),
    ("invalid authority", "extra.authority"),
)
# Entra ID's AADSTS error codes from the token endpoint → the connection field to fix.
_AADSTS_FIELDS = {
    "90002": "extra.tenant_id",  # tenant not found
    "900023": "extra.tenant_id",  # tenant identifier is neither a GUID nor a domain
    "90013": "extra.tenant_id",  # invalid input (typically the tenant segment)
    "700016": "login",  # application (client) id not found in the directory
    "7000215": "password",  # invalid client secret
    "7000222": "password",  # client secret expired
    "7000218": "password",  # no client secret or assertion sent
    "65001": "permissions",  # admin consent missing
    "500011": "permissions",  # the resource (Graph) principal is not in the tenant
}


class GraphExtractError(RuntimeError):
    """The Graph read could not complete; nothing it read may be used as a snapshot."""


class DeltaTokenExpired(GraphExtractError):
    """Graph answered 410 Gone to a delta link: the token is too old, read everything again."""


class GraphThrottled(GraphExtractError, SyncStopped):
    """Graph asked to wait longer than the sync may: a task retry minutes later cannot beat it either."""


class GraphAccessError(GraphExtractError, SyncStopped):
    """The msgraph connection is missing, malformed or refused: the message names the field to fix."""


class GraphRequestRejected(GraphExtractError, SyncStopped):
    """Graph answered 400 to a request the sync built: sending the same request again cannot help."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 1.0
    max_delay: float = 60.0
    # The longest Retry-After honoured (tenant config source.max_retry_after_seconds); longer fails at once.
    max_retry_after: float = 300.0
    # All waits of one client together (tenant config source.max_retry_seconds): the extract's retry budget.
    max_total_wait: float = 1800.0


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
        self.waited = 0.0  # seconds slept between attempts, all requests together (against max_total_wait)
        self.token_refreshes = 0

    async def get(self, url: str, query: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> Any:
        from kiota_http.middleware.options import ResponseHandlerOption, RetryHandlerOption

        await self._connect()
        await self.hook.assert_allowed_host(url)
        attempt = 1
        refreshed = False
        while True:
            await self._connect()  # after a token refresh the adapter is built again
            info = self.hook.request_information(url=url, query_parameters=query, headers=headers)
            info.request_options[ResponseHandlerOption.get_key()] = ResponseHandlerOption(
                response_handler=_RawHandler()
            )
            # One retry policy, ours: Kiota's own retry middleware would multiply attempts and waits. Switched
            # off entirely (should_retry=False), as with max_retries=0 it still parses Retry-After and raises
            # ValueError on a value that is neither a number nor a date, losing the response.
            info.request_options[RetryHandlerOption.get_key()] = RetryHandlerOption(max_retries=0, should_retry=False)
            self.requests += 1
            try:
                response: RawResponse = await self.hook.send_request(info)
            except Exception as error:  # a reset or timeout: the same URL gives the same page again
                refused = await self._token_refused(error)
                if refused is not None:
                    raise refused from None  # the azure error's text repeats Entra's whole answer; ours names the field
                if attempt >= self.retry.max_attempts or not _transient(error):
                    raise GraphExtractError(f"GET {_short(url)} failed on {self.conn_id!r}: {error}") from error
                await self._wait(attempt, None, f"{type(error).__name__}: {error}", url)
                attempt += 1
                continue
            if response.status == 200:
                return response.body
            if response.status == 410:
                raise DeltaTokenExpired(f"Graph answered 410 to the delta link of {self.conn_id!r}: {response.body}")
            if response.status in REFUSED_STATUSES:
                if not refreshed:
                    # A token revoked or expired early is refused once; a fresh credential fetches a new one.
                    refreshed = True
                    await self._refresh_token(response.status, url)
                    continue
                raise await self._graph_refused(response, url)
            if response.status == 400:
                raise GraphRequestRejected(self._rejected(response, url))
            if response.status in RETRY_STATUSES and attempt < self.retry.max_attempts:
                await self._wait(
                    attempt,
                    response.headers.get("retry-after"),
                    f"HTTP {response.status}",
                    url,
                    server_date=response.headers.get("date"),
                )
                attempt += 1
                continue
            raise GraphExtractError(
                f"GET {_short(url)} on {self.conn_id!r} answered HTTP {response.status} after {attempt} attempt(s): "
                f"{str(response.body)[:300]}"
            )

    async def _connect(self) -> None:
        """Build (or reuse) the hook's request adapter, turning configuration errors into `GraphAccessError`.

        Building it reads the connection and constructs the azure-identity credential, which validates the
        tenant id, client id and secret locally: these errors happen before any request and are permanent.
        """
        from airflow.exceptions import AirflowConfigException
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            await self.hook.get_async_conn()
        except AirflowNotFoundException as error:
            raise GraphAccessError(_missing_connection(self.conn_id)) from error
        except (ValueError, AirflowConfigException) as error:
            text = str(error)
            field_name = next((f for marker, f in _BUILD_ERRORS if marker in text.lower()), None)
            facts = await self._facts()
            if field_name is None:
                fix = (
                    "check its login (client id), password (client secret) and extra (tenant_id, authority, "
                    "proxies, scopes)"
                )
            else:
                fix = f"set {field_name} to {FIELD_HELP[field_name]}"
            shown = facts.get("tenant_id") if field_name == "extra.tenant_id" else None
            value = f" (it holds {shown!r})" if shown is not None else ""
            message = (
                f"Microsoft Graph connection {self.conn_id!r} cannot be used{value}: {text.split('. ')[0]}. "
                f"In that connection, {fix}. {FIX_NEXT}"
            )
            raise GraphAccessError(_scrub(message, facts.get("secret"))) from error

    async def _facts(self) -> dict[str, str | None]:
        """The connection's tenant id, client id and secret, for naming values and scrubbing the secret."""
        from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson

        try:
            connection = await get_async_connection(conn_id=self.conn_id)
            extra = await get_async_extra_dejson(connection)
        except Exception:  # only used to word a message: never hide the error being reported
            return {}
        tenant = extra.get("tenant_id") or extra.get("tenantId")
        return {
            "tenant_id": None if tenant is None else str(tenant),
            "client_id": connection.login,
            "secret": connection.password,
        }

    async def _token_refused(self, error: Exception) -> GraphAccessError | None:
        """A `GraphAccessError` when Entra ID's token endpoint refused the connection's credentials (400/401/403).

        azure-identity raises ``azure.core.exceptions.ClientAuthenticationError`` with the HTTP status and
        Entra's ``error_description`` ("AADSTS7000215: Invalid client secret provided. …"). A 5xx or a
        network error there is not a settings problem and stays retryable.
        """
        from azure.core.exceptions import ClientAuthenticationError

        if not isinstance(error, ClientAuthenticationError) or error.status_code not in TOKEN_REFUSED_STATUSES:
            return None
        text = str(error.message or error)
        # Entra's first line ("Microsoft Entra ID error '(invalid_client) AADSTS7000215: …"), without the
        # trace and correlation ids that follow it.
        said = text.splitlines()[0].strip().removeprefix("Microsoft Entra ID error '").rstrip("'")[:300]
        code = re.search(r"AADSTS(\d+)", text)
        oauth = re.search(r"\((\w+)\)", text)  # Entra's OAuth error: invalid_request, invalid_client, …
        field_name = _AADSTS_FIELDS.get(code.group(1)) if code else None
        if field_name is None and oauth is not None:
            field_name = {"invalid_client": "password", "unauthorized_client": "login"}.get(oauth.group(1))
        if field_name is None:
            fix = (
                f"check extra.tenant_id ({FIELD_HELP['extra.tenant_id']}), login ({FIELD_HELP['login']}) and "
                f"password ({FIELD_HELP['password']})"
            )
        elif field_name == "permissions":
            fix = f"grant the app registration (login) {FIELD_HELP['permissions']}"
        else:
            fix = f"set {field_name} to {FIELD_HELP[field_name]}"
        facts = await self._facts()
        message = (
            f"Microsoft Entra ID refused a token to Microsoft Graph connection {self.conn_id!r} "
            f"(HTTP {error.status_code}: {said}). In that connection, {fix}. {FIX_NEXT}"
        )
        return GraphAccessError(_scrub(message, facts.get("secret")))

    async def _refresh_token(self, status: int, url: str) -> None:
        """Drop the hook's cached adapter, and with it the credential and its cached token.

        The hook caches one adapter per conn id (class-level ``cached_request_adapters``); ``close()``
        evicts it and closes its HTTP client and credential, so the next request builds a new credential
        that asks Entra ID for a new token.
        """
        self.token_refreshes += 1
        self.retries += 1
        log.warning(
            "Graph answered HTTP %d to GET %s on %r; fetching a new token and trying once more",
            status,
            _short(url),
            self.conn_id,
        )
        await self.hook.close()

    async def _graph_refused(self, response: RawResponse, url: str) -> GraphAccessError:
        said = _graph_error(response.body)
        facts = await self._facts()
        client = f" {facts['client_id']!r}" if facts.get("client_id") else ""
        if response.status == 403:
            # The token is valid but the app may not read users / group members: an admin must grant it.
            fix = f"the app registration with client id{client} (login) needs {FIELD_HELP['permissions']}"
        else:
            fix = (
                f"the token was refused: check extra.tenant_id ({FIELD_HELP['extra.tenant_id']}), login (client "
                f"id{client}) and password (client secret) of that connection, and that extra.scopes, if set, is "
                "https://graph.microsoft.com/.default"
            )
        message = (
            f"Microsoft Graph answered HTTP {response.status} ({said}) to GET {_short(url)} on connection "
            f"{self.conn_id!r}, again after fetching a new token: {fix}. {FIX_NEXT}"
        )
        return GraphAccessError(_scrub(message, facts.get("secret")))

    def _rejected(self, response: RawResponse, url: str) -> str:
        hint = ""
        if "/delta" in url.split("?", 1)[0]:
            hint = " If it was the stored delta link, trigger a run with full_sync=true."
        return (
            f"Microsoft Graph answered HTTP 400 ({_graph_error(response.body)}) to GET {_short(url)} on connection "
            f"{self.conn_id!r}: it rejects the request itself, so sending it again cannot help. Check "
            f"source.page_size (1-999) and the group ids under scope.groups.{hint} The task fails without retries."
        )

    async def _wait(
        self, attempt: int, retry_after: str | None, why: str, url: str, server_date: str | None = None
    ) -> None:
        """Sleep before the next attempt, or raise `GraphThrottled` when the wait is not allowed."""
        raw = (retry_after or "").strip()  # Graph's own value, quoted in messages
        asked = retry_after_seconds(retry_after, _parse_http_date(server_date))
        if asked is not None and asked > self.retry.max_retry_after:
            raise GraphThrottled(
                f"Microsoft Graph answered {why} with Retry-After: {raw} (about {asked:.0f} s) "
                f"to GET {_short(url)} on connection {self.conn_id!r}; that is longer than "
                f"{RETRY_AFTER_SETTING} ({self.retry.max_retry_after:g} s), so the extract stops instead of "
                f"sleeping. {THROTTLED_NEXT} To wait longer, raise {RETRY_AFTER_SETTING}."
            )
        if asked is not None:
            delay = asked
        else:  # exponential backoff with full jitter when Graph gives no (usable) Retry-After
            delay = random.uniform(0, min(self.retry.max_delay, self.retry.base_delay * 2 ** (attempt - 1)))
        if self.waited + delay > self.retry.max_total_wait:
            graph_said = f" with Retry-After: {raw}" if raw else ""
            raise GraphThrottled(
                f"Microsoft Graph answered {why}{graph_said} to GET {_short(url)} on connection {self.conn_id!r}; "
                f"waiting {delay:.1f} s more would take this extract's retry waits to "
                f"{self.waited + delay:.1f} s, past {RETRY_BUDGET_SETTING} ({self.retry.max_total_wait:g} s), "
                f"so the extract stops. {THROTTLED_NEXT} To allow longer, raise {RETRY_BUDGET_SETTING}."
            )
        self.retries += 1
        self.waited += delay
        log.warning("Graph %s on %s; retry %d in %.1f s", why, _short(url), attempt, delay)
        await asyncio.sleep(delay)

    async def close(self) -> None:
        await self.hook.close()


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """The wait a Retry-After header asks for, in seconds; None when absent or unusable (then back off).

    RFC 9110 §10.2.3 allows delay-seconds or an HTTP date. A date is measured from `now` (best the
    response's own Date header, so the two clocks agree); one in the past means "retry now". Negative,
    non-finite or unparsable values are ignored rather than trusted.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        when = _parse_http_date(text)
        if when is None:
            return None
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _parse_http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)  # HTTP dates are GMT


def _missing_connection(conn_id: str) -> str:
    template = (
        '{"conn_type": "msgraph", "login": CLIENT_ID, "password": CLIENT_SECRET, "extra": {"tenant_id": TENANT_ID}}'
    )
    return (
        f"Airflow connection {conn_id!r} (the tenant's source.conn_id) does not exist. Add it as an msgraph "
        f"connection with login = the app's client id, password = its client secret and extra.tenant_id = the "
        f"directory (tenant) id: as the environment variable AIRFLOW_CONN_{conn_id.upper()} holding its JSON "
        f"({template}), or in the Airflow UI under Admin > Connections. {FIX_NEXT}"
    )


def _graph_error(body: Any) -> str:
    """Graph's error code and message from an error body (never headers, which could carry a token)."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return f"{error.get('code', '?')}: {str(error.get('message', ''))[:200]}"
    return str(body)[:200]


def _scrub(text: str, secret: str | None) -> str:
    """Never let the client secret reach a message (e.g. one pasted into the wrong field)."""
    return text.replace(secret, "***") if secret and len(secret) >= 4 else text


def _transient(error: Exception) -> bool:
    import httpx

    return isinstance(error, httpx.TransportError | asyncio.TimeoutError | ConnectionError)


def _short(url: str) -> str:
    return url.split("?", 1)[0][-120:]


def delta_query(page_size: int, select: Sequence[str] = GRAPH_SELECT) -> dict[str, str]:
    """A delta read's first query: `select` (the tenant's `entra.graph_select`) and the manager."""
    return {"$select": ",".join((*select, "manager")), "$top": str(page_size)}


async def iter_user_pages(
    client: GraphClient, start: str | None = None, page_size: int = 999, select: Sequence[str] = GRAPH_SELECT
) -> AsyncIterator[UserPage]:
    """Pages of ``/users/delta`` from `start` (a nextLink or deltaLink, which carry their own `$select`) or
    from the beginning."""
    if start:
        body = await client.get(start)
    else:
        body = await client.get("users/delta", query=delta_query(page_size, select))
    while True:
        if not isinstance(body, dict) or "value" not in body:
            raise GraphExtractError(f"unexpected Graph response on {client.conn_id!r}: {str(body)[:200]}")
        page = UserPage(rows=[], next_link=body.get("@odata.nextLink"), delta_link=body.get("@odata.deltaLink"))
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
