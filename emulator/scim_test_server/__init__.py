"""A real, independent SCIM 2.0 server for tests and benchmarks: `scim2-server` over HTTP on localhost.

`ScimTestServer` serves scim2-server's ASGI application with its in-memory storage through
uvicorn in a background thread. A thin ASGI layer in front of it checks the bearer token, logs
every request (method, path, status) and can answer the next requests with 429 + Retry-After,
so tests see what the sink really sent and how it behaves when throttled.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

TOKEN = "scim-test-token"  # noqa: S105 - a test server's token
# A schema extension such as a Frankli endpoint may declare for what the standard User schemas lack.
FRANKLI_EXTENSION = "urn:ietf:params:scim:schemas:extension:frankli:2.0:User"
COUNTS_PATH = "/_test/requests"  # GET: the requests answered so far, by method (not itself counted)


@dataclass
class Throttle:
    remaining: int = 0
    retry_after: str = "0"
    methods: frozenset[str] = frozenset()  # empty: every method
    after: int = 0  # requests (of these methods) let through before the throttling starts


@dataclass(frozen=True)
class Request:
    """A request the server answered: what was asked, the JSON body sent (writes), the status returned."""

    method: str
    path: str
    status: int
    body: Any = None
    query: str = ""


@dataclass
class _Front:
    """The ASGI layer in front of scim2-server: auth, request log, throttling."""

    app: Any
    token: str
    log: list[Request] = field(default_factory=list)
    throttle: Throttle = field(default_factory=Throttle)
    refused: set[str] = field(default_factory=set)  # userNames whose POST is answered 400
    listing_ends_after: int | None = None  # GET /Users pages starting later come back empty (a listing cut short)
    lost_answers: int = 0  # the next POSTs the server applies are answered 502 (the answer lost on the way back)
    minimal_answers: bool = False  # a created user is answered with its id, userName and meta only
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        headers = dict(scope["headers"])
        if path == COUNTS_PATH:  # for a benchmark in another process: the requests answered so far
            with self.lock:
                counts = Counter(r.method for r in self.log)
                throttled = sum(1 for r in self.log if r.status == 429)
            body = json.dumps({"requests": dict(counts), "throttled": throttled}).encode()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        if headers.get(b"authorization", b"").decode() != f"Bearer {self.token}":
            await self._answer(send, 401, {"status": "401", "detail": "bad token"}, method, path)
            return
        with self.lock:
            concerned = not self.throttle.methods or method in self.throttle.methods
            if concerned and self.throttle.after > 0:
                self.throttle.after -= 1
                concerned = False
            throttled = concerned and self.throttle.remaining > 0
            if throttled:
                self.throttle.remaining -= 1
        if throttled:
            await self._answer(
                send,
                429,
                {"status": "429", "detail": "slow down"},
                method,
                path,
                [(b"retry-after", self.throttle.retry_after.encode())],
            )
            return
        if method == "GET" and path.endswith("/Users") and self.listing_ends_after is not None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode()))
            if int(query.get("startIndex", "1")) > self.listing_ends_after:
                await self._cut_short(scope, receive, send, method, path)
                return
        status: list[int] = []
        sent = bytearray()
        more = True
        while more:  # the whole body first: a refusal depends on it
            message = await receive()
            sent.extend(message.get("body", b""))
            more = message.get("more_body", False)
        body = json.loads(sent) if sent else None
        if method == "POST" and isinstance(body, dict) and body.get("userName") in self.refused:
            detail = {"status": "400", "scimType": "invalidValue", "detail": "userName refused by this test"}
            await self._answer(send, 400, detail, method, path, sent=body)
            return

        async def logged_receive() -> dict[str, Any]:
            return {"type": "http.request", "body": bytes(sent), "more_body": False}

        async def logged_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        if method == "POST" and (self.lost_answers > 0 or self.minimal_answers):
            held: list[dict[str, Any]] = []

            async def hold(message: dict[str, Any]) -> None:
                held.append(message)

            await self.app(scope, logged_receive, hold)
            applied = int(held[0]["status"]) < 300 if held else False
            with self.lock:
                lose, self.lost_answers = applied and self.lost_answers > 0, self.lost_answers - applied
            if lose:  # applied by the server, the client hears a gateway error
                await self._answer(send, 502, {"status": "502", "detail": "bad gateway"}, method, path, sent=body)
                return
            if applied and self.minimal_answers:  # RFC 7644 lets a server answer less than the whole user
                created = json.loads(b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body"))
                short = {k: created[k] for k in ("schemas", "id", "userName", "meta") if k in created}
                held = [
                    {"type": "http.response.start", "status": held[0]["status"],
                     "headers": [(b"content-type", b"application/scim+json")]},
                    {"type": "http.response.body", "body": json.dumps(short).encode()},
                ]  # fmt: skip
            for message in held:  # not applied (a 409, say): answered as the server answered
                await logged_send(message)
        else:
            await self.app(scope, logged_receive, logged_send)
        if b"x-test-client" not in headers:  # the test's own reads and seeds are not the sink's requests
            with self.lock:
                query = scope.get("query_string", b"").decode()
                self.log.append(Request(method, path, status[0] if status else 0, body, query))

    async def _cut_short(self, scope: dict[str, Any], receive: Any, send: Any, method: str, path: str) -> None:
        """An empty page that still reports the whole total, as a server whose listing broke off does."""
        first: list[dict[str, Any]] = []

        async def keep(message: dict[str, Any]) -> None:
            first.append(message)

        probe = {**scope, "query_string": b"startIndex=1&count=1"}
        await self.app(probe, receive, keep)
        total = json.loads(b"".join(m.get("body", b"") for m in first if m["type"] == "http.response.body"))
        body = {**total, "Resources": [], "itemsPerPage": 0}
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/scim+json")]}
        )
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})
        with self.lock:
            self.log.append(Request(method, path, 200))

    async def _answer(
        self,
        send: Any,
        status: int,
        body: dict[str, Any],
        method: str,
        path: str,
        extra: list[tuple[bytes, bytes]] | None = None,
        sent: Any = None,
    ) -> None:
        payload = json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], **body}).encode()
        headers = [(b"content-type", b"application/scim+json"), *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        with self.lock:
            self.log.append(Request(method, path, status, sent))


class ScimTestServer:
    """scim2-server with in-memory storage on 127.0.0.1 (a free port); `base_url` ends in /v2."""

    def __init__(self, token: str = TOKEN, port: int = 0, start_date: bool = False) -> None:
        """`start_date`: the User resource type also declares `FRANKLI_EXTENSION` with a ``startDate``."""
        from scim2_server.applications.asgi import ASGIApplication
        from scim2_server.memory import AsyncInMemoryStorage

        self.token = token
        self.front = _Front(ASGIApplication(AsyncInMemoryStorage(), _provider(start_date)), token)
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2"

    def start(self) -> ScimTestServer:
        import uvicorn

        if not self.port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
        config = uvicorn.Config(
            self.front, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="scim-test-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the SCIM test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ScimTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what tests look at and do ---------------------------------------------------------------

    def connection(self) -> dict[str, Any]:
        """The Airflow connection of this server, as DESIGN §4 gives it (host = base URL, password = token)."""
        return {"conn_type": "http", "host": self.base_url, "password": self.token}

    @property
    def requests(self) -> list[Request]:
        with self.front.lock:
            return list(self.front.log)

    def counts(self, since: int = 0) -> Counter[str]:
        return Counter(r.method for r in self.requests[since:])

    def throttle(self, count: int, retry_after: str = "0", methods: tuple[str, ...] = (), after: int = 0) -> None:
        """Answer `count` requests (of these methods, after letting `after` through) with 429 and this Retry-After."""
        with self.front.lock:
            self.front.throttle = Throttle(count, retry_after, frozenset(methods), after)

    def end_listings_after(self, position: int | None) -> None:
        """Pages of GET /Users starting after `position` come back empty, the total still reported whole."""
        with self.front.lock:
            self.front.listing_ends_after = position

    def lose_answers(self, count: int) -> None:
        """Answer the next `count` POSTs the server applies with 502, as when the answer is lost on the way back."""
        with self.front.lock:
            self.front.lost_answers = count

    def answer_minimally(self, minimal: bool = True) -> None:
        """Answer each created user with its id, userName and meta only (the rest of what was sent is stored)."""
        with self.front.lock:
            self.front.minimal_answers = minimal

    def refuse(self, *user_names: str) -> None:
        """Answer a POST of these userNames with 400 (a value Frankli rejects)."""
        with self.front.lock:
            self.front.refused = set(user_names)

    def _client(self) -> Any:
        import httpx2

        headers = {"Authorization": f"Bearer {self.token}", "X-Test-Client": "1"}
        return httpx2.Client(base_url=self.base_url + "/", headers=headers)

    def users(self) -> dict[str, dict[str, Any]]:
        """Every user, keyed by userName (read over HTTP like any client; the test's requests are not logged)."""
        found: dict[str, dict[str, Any]] = {}
        with self._client() as client:
            start = 1
            while True:
                body = client.get("Users", params={"startIndex": start, "count": 1000}).json()
                page = body.get("Resources") or []
                found.update({u["userName"]: u for u in page})
                start += len(page)
                if not page or start > body["totalResults"]:
                    break
        return found

    def add_user(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a user as Frankli's own UI (or Entra's provisioning) would."""
        with self._client() as client:
            response = client.post("Users", json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], **body})
        assert response.status_code == 201, response.text
        return response.json()

    def patch_user(self, user_id: str, operations: list[dict[str, Any]]) -> None:
        """An admin's edit in Frankli."""
        with self._client() as client:
            response = client.patch(
                f"Users/{user_id}",
                json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations},
            )
        assert response.status_code in (200, 204), response.text


def _provider(start_date: bool) -> Any:
    """scim2-server's default schemas and resource types, with the Frankli extension when asked."""
    from scim2_models import ResourceType, Schema, ScimProvider
    from scim2_server.utils import (
        load_default_provider,
        load_default_resource_types,
        load_default_schemas,
        load_default_service_provider_config,
    )

    if not start_date:
        return load_default_provider()
    schemas = dict(load_default_schemas())
    schemas[FRANKLI_EXTENSION] = Schema.model_validate(
        {
            "id": FRANKLI_EXTENSION,
            "name": "FrankliUser",
            "description": "Frankli user",
            "attributes": [
                {
                    "name": "startDate",
                    "type": "dateTime",
                    "multiValued": False,
                    "required": False,
                    "mutability": "readWrite",
                    "returned": "default",
                    "uniqueness": "none",
                }
            ],
        }
    )
    types = dict(load_default_resource_types())
    user = types["User"].model_dump(by_alias=True, exclude_none=True)
    user["schemaExtensions"] = [*user.get("schemaExtensions", []), {"schema": FRANKLI_EXTENSION, "required": False}]
    types["User"] = ResourceType.model_validate(user)
    return ScimProvider.from_discovery(schemas.values(), types.values(), config=load_default_service_provider_config())
