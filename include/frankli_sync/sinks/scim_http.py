"""Frankli's SCIM 2.0 API over HTTP: a listing proven complete, and writes validated by `scim2-models`.

`ScimEndpoint` sends every request through `scim2-client` (httpx2), retrying throttling (429,
honouring ``Retry-After`` up to the same cap as Graph's, `RetryPolicy.max_retry_after`), 5xx and
dropped connections with backoff, within one retry budget for the whole load. A ``Retry-After``
beyond the cap, or a budget spent, stops the load (`ScimThrottled`) instead of holding a worker for
hours; 401/403 stop it at once (`ScimAccessError`): the token is wrong, retrying cannot help. Other
answers to a write are that user's failure (`WriteFailure`), for the sink to audit.

The bearer token travels in the Authorization header only; messages name the connection, never it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from frankli_sync.errors import SyncStopped
from frankli_sync.sources.graph import RetryPolicy, retry_after_seconds

log = logging.getLogger(__name__)

RETRIED = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_SETTING = "target.max_retry_after_seconds"
RETRY_BUDGET_SETTING = "target.max_retry_seconds"
T = TypeVar("T")
R = TypeVar("R")


class ScimThrottled(SyncStopped):
    """Frankli's SCIM API asked to wait longer than the sync may."""


class ScimAccessError(SyncStopped):
    """The SCIM API refused the token (401/403), or the connection is not a SCIM endpoint."""


class ScimListingIncomplete(RuntimeError):
    """The listing of users did not add up to the total the server reported: nothing may be planned on it."""


@dataclass(frozen=True)
class WriteFailure:
    """A write the server refused (or answered with something that is not SCIM)."""

    status: int | None
    detail: str


class ScimEndpoint:
    """One SCIM endpoint for one session: a pooled HTTP client, request counts per method, retries."""

    def __init__(
        self, conn_id: str, base_url: str, token: str, retry: RetryPolicy, concurrency: int, timeout: float = 60
    ) -> None:
        import httpx2

        logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per request would bury the task log
        self.conn_id, self.base_url, self.retry, self.concurrency = conn_id, base_url, retry, concurrency
        self.http = httpx2.Client(
            base_url=base_url + "/",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/scim+json"},
            timeout=timeout,
            limits=httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.client = _retrying_client(self)
        self.requests: Counter[str] = Counter()  # method -> requests sent (retries included)
        self.retries = 0
        self.waited = 0.0
        self._lock = threading.Lock()
        self._user_model: Any = None
        self._patch_model: Any = None
        self._model_lock = threading.Lock()
        self._capabilities: dict[str, Any] | None = None

    def close(self) -> None:
        self.http.close()

    # --- discovery and reading ----------------------------------------------------------------

    def user_model(self) -> Any:
        """The server's User model (core + the extensions it declares), from its /Schemas and /ResourceTypes.

        Built once, under a lock: pydantic parses class sources while it builds models, and CPython's
        parser is not safe to run from several threads at once (the writes run on `concurrency` threads).
        """
        with self._model_lock:
            if self._user_model is None:
                from scim2_models import PatchOp

                self.client.discover()
                model = self.client.get_resource_model("User")
                if model is None:
                    raise ScimAccessError(
                        f"connection {self.conn_id!r}: the server at {self.base_url} declares no User resource type "
                        "(GET /ResourceTypes): host must be Frankli's SCIM base URL"
                    )
                self._patch_model = PatchOp[model]
                self._user_model = model
        return self._user_model

    def declared_type(self, full_name: str) -> str | None:
        """The type the server declares for an extension attribute (``urn:…:startDate``) of its users.

        None unless the User resource type carries that extension (GET /ResourceTypes/User) and the
        extension's schema (GET /Schemas/{urn}) has the attribute (names compare case-insensitively).
        """
        schema, _, name = full_name.rpartition(":")
        user_type = _json_of(self.client.request("GET", "ResourceTypes/User"))
        extensions = user_type.get("schemaExtensions") if isinstance(user_type, dict) else None
        if schema not in {e.get("schema") for e in extensions or () if isinstance(e, dict)}:
            return None
        declared = _json_of(self.client.request("GET", f"Schemas/{quote(schema, safe=':')}"))
        for attribute in declared.get("attributes") or () if isinstance(declared, dict) else ():
            if isinstance(attribute, dict) and str(attribute.get("name", "")).lower() == name.lower():
                return str(attribute.get("type") or "string")
        return None

    def capabilities(self) -> dict[str, Any]:
        """The server's /ServiceProviderConfig as JSON (one request, kept for the session)."""
        if self._capabilities is None:
            response = self.client.request("GET", "ServiceProviderConfig")
            body = _json_of(response)
            self._capabilities = body if response.status_code == 200 and isinstance(body, dict) else {}
        return self._capabilities

    def supports(self, feature: str) -> bool:
        """Whether /ServiceProviderConfig declares ``<feature>.supported`` (filter, sort, etag, …)."""
        return bool((self.capabilities().get(feature) or {}).get("supported"))

    def newest(self) -> tuple[int, list[dict[str, Any]]] | None:
        """The number of users and every user modified at the newest `meta.lastModified`; None if unknowable.

        Two requests: the newest user (``sortBy=meta.lastModified``), then all users modified at or after
        that instant (ties of a coarse clock). Any write moves the newest instant, a deletion the number.
        None when the server does not declare sorting and filtering, or its users carry no lastModified.
        """
        if not self.supports("sort") or not self.supports("filter"):
            return None
        query = {"sortBy": "meta.lastModified", "sortOrder": "descending", "count": 1, "attributes": "id,meta"}
        first = self._json(self.client.request("GET", "Users", params=query), "GET Users (newest)")
        total = int(first.get("totalResults", 0))
        top = [r for r in first.get("Resources") or [] if isinstance(r, dict)]
        if not top:
            return (total, []) if total == 0 else None
        instant = (top[0].get("meta") or {}).get("lastModified")
        if not instant:
            return None
        ties = {"filter": f'meta.lastModified ge "{instant}"', "attributes": "id,meta", "count": self.page_limit()}
        body = self._json(self.client.request("GET", "Users", params=ties), "GET Users (modified last)")
        tied = [r for r in body.get("Resources") or [] if isinstance(r, dict)]
        if int(body.get("totalResults", 0)) != len(tied) or top[0].get("id") not in {r.get("id") for r in tied}:
            return None  # more ties than one page, or a server whose sort and filter disagree: list instead
        return total, tied

    def synced_count(self) -> int | None:
        """Active users linked to an Entra object, counted by the server (None: it cannot filter so)."""
        if not self.supports("filter"):
            return None
        query = {"filter": "active eq true and externalId pr", "count": 0}
        body = self._json(self.client.request("GET", "Users", params=query), "GET Users (synced count)")
        return int(body["totalResults"]) if "totalResults" in body else None

    def page_limit(self) -> int:
        limit = (self.capabilities().get("filter") or {}).get("maxResults")
        return int(limit) if isinstance(limit, int) and limit > 0 else 100

    def list_users(self, page_size: int) -> list[dict[str, Any]]:
        """Every user, paged with startIndex/count (RFC 7644 §3.4.2.4), proven complete.

        The listing is complete when the distinct ids read equal the `totalResults` every page
        reported; a total that moves, a page that comes back empty early or an id seen twice (an
        offset shifted by a concurrent write) raise `ScimListingIncomplete`.
        """
        count = max(1, min(page_size, self.page_limit()))
        users: dict[str, dict[str, Any]] = {}
        start, total = 1, None
        while total is None or start <= total:
            response = self.client.request("GET", "Users", params={"startIndex": start, "count": count})
            body = self._json(response, "GET Users")
            page = [r for r in body.get("Resources") or [] if isinstance(r, dict)]
            reported = int(body.get("totalResults", 0))
            if total is not None and reported != total:
                raise ScimListingIncomplete(self._incomplete(f"the total moved from {total} to {reported}"))
            total = reported
            if not page and start <= total:
                raise ScimListingIncomplete(self._incomplete(f"page at {start} came back empty of {total}"))
            for resource in page:
                if resource.get("id") in users:
                    raise ScimListingIncomplete(self._incomplete(f"user {resource.get('id')} was listed twice"))
                users[str(resource.get("id"))] = resource
            start += len(page)
        if len(users) != total:
            raise ScimListingIncomplete(self._incomplete(f"{len(users)} users read of {total}"))
        return list(users.values())

    def _incomplete(self, why: str) -> str:
        return (
            f"connection {self.conn_id!r}: the listing of Frankli's SCIM users is not complete ({why}), so "
            "nothing is planned on it; the task's retry reads it again. Users changing in Frankli during the "
            "read (an admin, or another writer on the same endpoint) cause this."
        )

    def _json(self, response: Any, what: str) -> dict[str, Any]:
        if response.status_code in (401, 403):
            raise ScimAccessError(self._refused(response.status_code, what))
        body = _json_of(response)
        if response.status_code != 200 or not isinstance(body, dict):
            raise RuntimeError(
                f"connection {self.conn_id!r}: {what} answered HTTP {response.status_code}, not a SCIM "
                f"ListResponse ({_error_detail(body)}); the task's retry reads again"
            )
        return body

    def _refused(self, status: int, what: str) -> str:
        return (
            f"Frankli's SCIM API answered HTTP {status} to {what} on connection {self.conn_id!r}: the bearer token "
            "(the connection's password) is wrong, expired or lacks the rights. Generate a new token in Frankli's "
            "SCIM settings and store it in the connection; nothing more was written."
        )

    # --- writes ----------------------------------------------------------------------------------

    def create(self, body: Mapping[str, Any]) -> dict[str, Any] | WriteFailure:
        """POST /Users with a body `scim2-models` validated first; the created user, or the failure."""
        model = self.user_model()
        resource = model.model_validate(dict(body))  # a body the models reject never leaves
        result = self.client.create(
            resource, check_response_payload=False, raise_scim_errors=False, expected_status_codes=None
        )
        failure = _failure(result)
        if failure is not None and failure.status == 409:
            return self._landed(body) or failure
        if failure is not None:
            return failure
        if not isinstance(result, dict) or "id" not in result:
            return WriteFailure(None, f"the server answered no user: {_error_detail(result)}")
        return result

    def _landed(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """The user an earlier attempt of this very POST created, when its answer was lost and the retry met it.

        Evidence, not a guess: the user holding the userName carries the Entra object id this create sent
        (the plan read the endpoint under its lock, so no other writer gave a new user that id). Anyone
        else holding the userName is a real conflict, reported as the server's 409.
        """
        user_name, external_id = body.get("userName"), body.get("externalId")
        if not user_name or not external_id or not self.supports("filter"):
            return None
        escaped = str(user_name).replace("\\", "\\\\").replace('"', '\\"')
        query = {"filter": f'userName eq "{escaped}"', "count": 2}
        found = self._json(self.client.request("GET", "Users", params=query), "GET Users (after a 409)")
        matches = [r for r in found.get("Resources") or [] if isinstance(r, dict)]
        if len(matches) == 1 and matches[0].get("externalId") == external_id and matches[0].get("id"):
            return matches[0]
        return None

    def patch(
        self, user_id: str, operations: list[dict[str, Any]], version: str | None = None
    ) -> dict[str, Any] | WriteFailure:
        """PATCH /Users/{id} with operations `scim2-models` validated first; the user as the server now holds it.

        `version`: the user's `meta.version` when it was read; sent as `If-Match` where the server declares
        ETags, so a user changed in Frankli since (an admin deactivated it, say) is not written over: the
        server answers 412, reported as a refused write. A server answering 204 (no body, as RFC 7644
        §3.5.2 allows) is asked for the user with a GET.
        """
        model = self.user_model()
        patch = self._patch_model.model_validate({"schemas": [PATCH_SCHEMA], "Operations": operations})
        headers = {"If-Match": version} if version and self.supports("etag") else {}
        result = self.client.modify(
            model,
            user_id,
            patch,
            check_response_payload=False,
            raise_scim_errors=False,
            expected_status_codes=None,
            headers=headers,
        )
        failure = _failure(result)
        if failure is not None and failure.status == 412:
            return WriteFailure(412, "changed in Frankli since the sync read it: not written over; the next run "
                                     "plans against what Frankli then holds")  # fmt: skip
        if failure is not None:
            return failure
        if isinstance(result, dict) and result.get("id") == user_id:
            return result
        current = self.read_user(user_id)
        return current if isinstance(current, dict) else {}  # applied; {}: not read back (the caller lists again)

    def read_user(self, user_id: str) -> dict[str, Any] | WriteFailure:
        """GET /Users/{id}: the user as the server holds it."""
        response = self.client.request("GET", f"Users/{quote(user_id, safe='')}")
        body = _json_of(response)
        if response.status_code != 200 or not isinstance(body, dict) or body.get("id") != user_id:
            return WriteFailure(response.status_code, f"the user could not be read back: {_error_detail(body)}")
        return body

    def each(self, work: Callable[[T], R], items: Iterable[T]) -> list[R | Exception]:
        """`work` over `items` with at most `concurrency` requests in flight; results in `items`' order.

        An item whose work raised has the exception as its result, so the writes that went through
        beside it are still audited before the caller raises it (`raise_first`).
        """

        def guarded(item: T) -> R | Exception:
            try:
                return work(item)
            except Exception as error:
                return error

        items = list(items)
        if items:
            self.user_model()  # discovered before the threads start (see `user_model`)
        if len(items) <= 1 or self.concurrency == 1:
            return [guarded(item) for item in items]
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="scim") as pool:
            return list(pool.map(guarded, items))

    # --- retries ----------------------------------------------------------------------------------

    def send(self, method: str, url: str, send: Callable[[], Any]) -> Any:
        """One request with the retry policy: `send` is called again after throttling, 5xx or a dropped link."""
        from scim2_client.errors import RequestNetworkException

        attempt = 1
        while True:
            with self._lock:
                self.requests[method] += 1
            try:
                response = send()
            except RequestNetworkException as error:
                if attempt >= self.retry.max_attempts:
                    raise
                self._wait(attempt, None, f"a dropped connection ({error})", method, url)
            else:
                if response.status_code in (401, 403):
                    raise ScimAccessError(self._refused(response.status_code, f"{method} {_path(url)}"))
                if response.status_code not in RETRIED or attempt >= self.retry.max_attempts:
                    return response
                why = "429 Too Many Requests" if response.status_code == 429 else f"HTTP {response.status_code}"
                self._wait(attempt, response.headers.get("retry-after"), why, method, url)
            attempt += 1

    def _wait(self, attempt: int, retry_after: str | None, why: str, method: str, url: str) -> None:
        raw = (retry_after or "").strip()
        asked = retry_after_seconds(retry_after)
        target = f"{method} {_path(url)} on connection {self.conn_id!r}"
        if asked is not None and asked > self.retry.max_retry_after:
            raise ScimThrottled(
                f"Frankli's SCIM API answered {why} with Retry-After: {raw} (about {asked:.0f} s) to {target}; "
                f"that is longer than {RETRY_AFTER_SETTING} ({self.retry.max_retry_after:g} s), so the load stops "
                "instead of sleeping. What was written before is applied and audited; the next run continues "
                f"from Frankli's state. To wait longer, raise {RETRY_AFTER_SETTING}."
            )
        delay = (
            asked
            if asked is not None
            else random.uniform(0, min(self.retry.max_delay, self.retry.base_delay * 2 ** (attempt - 1)))
        )
        with self._lock:
            if self.waited + delay > self.retry.max_total_wait:
                raise ScimThrottled(
                    f"Frankli's SCIM API answered {why} to {target}; waiting {delay:.1f} s more would take this "
                    f"load's retry waits past {RETRY_BUDGET_SETTING} ({self.retry.max_total_wait:g} s), so it "
                    "stops. What was written before is applied and audited; the next run continues from "
                    f"Frankli's state. To allow longer, raise {RETRY_BUDGET_SETTING}."
                )
            self.retries += 1
            self.waited += delay
        log.warning("SCIM %s on %s; retry %d in %.1f s", why, _path(url), attempt, delay)
        time.sleep(delay)


PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _retrying_client(endpoint: ScimEndpoint) -> Any:
    """scim2-client's httpx2 client, its every request sent through `endpoint.send` (retries, counts)."""
    from scim2_client.engines.httpx2 import SyncSCIMClient

    class RetryingClient(SyncSCIMClient):
        def request(self, method: str, url: str, **kwargs: Any) -> Any:
            parent = super().request
            return endpoint.send(method, url, lambda: parent(method, url, **kwargs))

    return RetryingClient(endpoint.http)


def _failure(result: Any) -> WriteFailure | None:
    """The refusal in a write's answer (a SCIM Error, as a model or as JSON), or None."""
    from scim2_models import Error

    if isinstance(result, Error):
        return WriteFailure(_int(result.status), result.detail or str(result.scim_type or "error"))
    if isinstance(result, dict) and any(str(s).endswith(":Error") for s in result.get("schemas") or ()):
        return WriteFailure(_int(result.get("status")), _error_detail(result))
    return None


def raise_first(results: Iterable[object]) -> None:
    """Raise the first exception among `each`'s results (after the caller audited the rest)."""
    for result in results:
        if isinstance(result, Exception):
            raise result


def _json_of(response: Any) -> Any:
    """A response's JSON body, or None when it holds none."""
    try:
        return response.json()
    except ValueError:
        return None


def _path(url: str) -> str:
    return urlsplit(str(url)).path or str(url)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _error_detail(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("scimType") or body)[:300]
    return str(body)[:300]
