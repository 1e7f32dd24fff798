"""A real HTTP server speaking the slice of Microsoft Graph v1.0 the sync uses.

It exists so the pipeline can be run and tested end to end (paging, $select, $expand,
$filter, $count, delta, groups, error handling, throttling, dropped connections and
listings that end early, throughput) without a Microsoft tenant. It is deliberately a plain
ThreadingHTTPServer from the standard library: no dependencies, starts in
milliseconds on port 0, and is quiet (no per-request logging) so test output stays
readable. The /_emulator/* endpoints are not Graph; they drive demos and tests (see
admin.py) and are never subject to injected faults, so a test can always clear them.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from graph_emulator import admin, resources
from graph_emulator.delta import DEFAULT_MAX_AGE, DeltaService
from graph_emulator.errors import GraphError
from graph_emulator.faults import FaultInjector, FaultPlan, FaultRule
from graph_emulator.store import Tenant

REQUEST_LOG_SIZE = 10_000
_DELTA_SEGMENTS = {"delta", "delta()", "microsoft.graph.delta", "microsoft.graph.delta()"}
_USER_CAST = {"microsoft.graph.user", "graph.user"}
_COUNT = "$count"  # path segments are percent-decoded first, so %24count arrives as this too
_FAULT_CODES = {429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
_RESET_PAUSE = 0.05  # lets the client read headers and the first bytes before the reset


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    emulator: GraphEmulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: a client hanging up mid-response is not worth a traceback on stderr."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive for clients that pool connections
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request logging: the emulator must be quiet."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------- plumbing
    def _dispatch(self, method: str) -> None:
        emulator = self.server.emulator
        emulator._record(self.path)
        length_header = self.headers.get("Content-Length") or "0"
        length = int(length_header) if length_header.isdigit() else 0
        body = self.rfile.read(length) if length > 0 else b""
        split = urlsplit(self.path)
        segments = _segments(split.path)
        is_admin = bool(segments) and segments[0].lower() == "_emulator"
        # Rules match the decoded path, so one rule on /v1.0/users/$count covers %24count as well.
        fault = None if is_admin else emulator._faults.decide(unquote(split.path), _is_listing(segments))
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            self._send_fault(fault)
            return
        headers: dict[str, str] = {}
        ends_early = fault is not None and fault.ends_early
        try:
            status, payload = self._route(method, segments, split, body, headers, ends_early)
        except GraphError as error:
            status, payload = error.status, self._error_body(error.code, error.message)
            headers.update(error.headers)
        except Exception as error:  # a bug in the emulator: report it to the client, not stderr
            status, payload = 500, self._error_body("InternalServerError", repr(error))
        if fault is not None and fault.reset:
            self._send_reset(status, payload, headers)
            return
        self._send_body(status, payload, headers)

    def _route(
        self,
        method: str,
        segments: list[str],
        split: SplitResult,
        body: bytes,
        headers: dict[str, str],
        ends_early: bool,
    ) -> tuple[int, Any]:
        lowered = [s.lower() for s in segments]
        head = lowered[:2]
        if head == ["v1.0", "users"] and 2 <= len(segments) <= 4:
            self._require(method, "GET")
            return 200, self._users(segments, lowered, split, headers, ends_early)
        if head == ["v1.0", "groups"] and len(segments) in (2, 3, 5, 6):
            self._require(method, "GET")
            return 200, self._groups(segments, lowered, split, ends_early)
        if head and head[0] == "_emulator" and len(segments) == 2:
            return 200, self._admin(method, head[1], body)
        raise resources.not_found(split.path)

    def _users(
        self, segments: list[str], lowered: list[str], split: SplitResult, headers: dict[str, str], ends_early: bool
    ) -> Any:
        emulator = self.server.emulator
        tenant, origin, path, query = emulator.tenant, self._origin(), split.path, split.query
        if len(segments) == 2:
            return resources.list_users(tenant, origin, path, query, eventual=self._eventual(), ends_early=ends_early)
        if len(segments) == 3 and lowered[2] == _COUNT:
            return resources.count_users(tenant, query, eventual=self._eventual())
        if len(segments) == 3 and lowered[2] in _DELTA_SEGMENTS:
            minimal = self._prefers_minimal()
            if minimal:
                headers["Preference-Applied"] = "return=minimal"
            return emulator._delta.page(origin, path, query, minimal, ends_early=ends_early)
        if len(segments) == 3:
            return resources.get_user(tenant, origin, segments[2], query)
        if lowered[3] == "manager":
            return resources.get_manager(tenant, origin, segments[2])
        raise resources.not_found(path)

    def _groups(self, segments: list[str], lowered: list[str], split: SplitResult, ends_early: bool) -> Any:
        tenant, origin, path, query = self.server.emulator.tenant, self._origin(), split.path, split.query
        if len(segments) == 2:
            return resources.list_groups(tenant, origin, path, query, ends_early=ends_early)
        if len(segments) == 3:
            return resources.get_group(tenant, origin, segments[2], query)
        if lowered[3] != "transitivemembers" or lowered[4] not in _USER_CAST:
            raise resources.not_found(path)
        if len(segments) == 5:
            return resources.transitive_users(
                tenant, origin, path, segments[2], query, eventual=self._eventual(), ends_early=ends_early
            )
        if lowered[5] == _COUNT:
            return resources.count_transitive_users(tenant, segments[2], query, eventual=self._eventual())
        raise resources.not_found(path)

    def _admin(self, method: str, name: str, body: bytes) -> Any:
        emulator = self.server.emulator
        if name == "day2":
            self._require(method, "POST")
            return admin.day2(emulator, body)
        if name == "stats":
            self._require(method, "GET")
            return emulator.stats()
        if name == "faults":
            self._require(method, "GET", "POST", "PUT", "DELETE")
            if method == "GET":
                return admin.get_faults(emulator)
            return admin.clear_faults(emulator) if method == "DELETE" else admin.set_faults(emulator, body)
        if name == "expire-delta-tokens":
            self._require(method, "POST")
            return admin.expire_delta_tokens(emulator)
        if name == "delta-token-max-age":
            self._require(method, "GET", "POST", "PUT")
            return admin.get_max_age(emulator) if method == "GET" else admin.set_max_age(emulator, body)
        raise resources.not_found(f"/_emulator/{name}")

    @staticmethod
    def _require(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise GraphError(405, "Request_BadRequest", f"The HTTP method '{method}' is not allowed here.")

    def _eventual(self) -> bool:
        """`ConsistencyLevel: eventual` (value in any case): Graph's switch for advanced queries such as $count."""
        return (self.headers.get("ConsistencyLevel") or "").strip().lower() == "eventual"

    def _prefers_minimal(self) -> bool:
        preferences = ",".join(self.headers.get_all("Prefer") or [])
        return any(p.strip().replace(" ", "").lower() == "return=minimal" for p in preferences.split(","))

    def _origin(self) -> str:
        """scheme://host:port as the client addressed us, so nextLinks work through any hostname."""
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        return f"http://{host}"

    def _error_body(self, code: str, message: str) -> dict[str, Any]:
        inner = {
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "request-id": str(uuid.uuid4()),
            "client-request-id": self.headers.get("client-request-id") or str(uuid.uuid4()),
        }
        return {"error": {"code": code, "message": message, "innerError": inner}}

    def _encode(self, status: int, payload: Any, headers: dict[str, str]) -> bytes:
        """Send the status line and headers; returns the body still to be written.

        JSON, except a resources.PlainText payload, which goes out as text/plain (Graph's /$count).
        """
        if isinstance(payload, resources.PlainText):
            data, content_type = payload.encode("utf-8"), "text/plain; charset=utf-8"
        else:
            data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            content_type = "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("OData-Version", "4.0")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        return data

    def _send_body(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.wfile.write(self._encode(status, payload, headers or {}))

    def _send_fault(self, fault: FaultRule) -> None:
        status = fault.status or 503
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        code = fault.code or _FAULT_CODES.get(status, "FaultInjected")
        message = "Too many requests." if status == 429 else "The service is temporarily unavailable."
        self._send_body(status, self._error_body(code, message), headers)

    def _send_reset(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        """Headers and half the body, then an abortive close (RST), as a dropped connection looks."""
        data = self._encode(status, payload, headers)
        self.wfile.write(data[: max(1, len(data) // 2)])
        time.sleep(_RESET_PAUSE)
        self.close_connection = True
        # SO_LINGER with a zero timeout makes close() send RST instead of a clean FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()


def _segments(path: str) -> list[str]:
    """The path's segments, percent-decoded ("/v1.0/users/%24count" -> ["v1.0", "users", "$count"])."""
    stripped = path.strip("/")
    return [unquote(s) for s in stripped.split("/")] if stripped else []


def _is_listing(segments: list[str]) -> bool:
    """Whether the request reads a page of a collection: the only requests an ends_early fault can cut short."""
    lowered = [s.lower() for s in segments]
    if lowered in (["v1.0", "users"], ["v1.0", "groups"]):
        return True
    if len(lowered) == 3 and lowered[:2] == ["v1.0", "users"]:
        return lowered[2] in _DELTA_SEGMENTS
    return (
        len(lowered) == 5
        and lowered[:2] == ["v1.0", "groups"]
        and lowered[3] == "transitivemembers"
        and lowered[4] in _USER_CAST
    )


class GraphEmulator:
    """Serve a Tenant over HTTP as Microsoft Graph v1.0 on a background thread.

    Use as a context manager, or call start()/stop(). Port 0 picks a free port; read
    the real one from .port or .base_url after start(). `delta_token_max_age` is how
    long /users/delta tokens stay valid (Graph: 7 days for directory objects); `faults`
    scripts failures (see faults.py). Both can be changed while running.
    """

    def __init__(
        self,
        tenant: Tenant,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        delta_token_max_age: timedelta = DEFAULT_MAX_AGE,
        faults: FaultPlan | None = None,
    ) -> None:
        self.tenant = tenant
        self.host = host
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._log_lock = threading.Lock()
        self._request_count = 0
        self._requests: deque[str] = deque(maxlen=REQUEST_LOG_SIZE)
        self._delta = DeltaService(tenant, delta_token_max_age)
        self._faults = FaultInjector(faults)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> GraphEmulator:
        if self._server is not None:
            return self
        server = _Server((self.host, self._requested_port), _Handler)
        server.emulator = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="graph-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server, self._thread = None, None

    def __enter__(self) -> GraphEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------- properties
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """e.g. http://127.0.0.1:8765/v1.0 — what a Graph client should use instead of graph.microsoft.com."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host  # noqa: S104
        return f"http://{host}:{self.port}/v1.0"

    @property
    def request_count(self) -> int:
        with self._log_lock:
            return self._request_count

    @property
    def requests(self) -> list[str]:
        """Path and query of the most recent requests (at most REQUEST_LOG_SIZE), oldest first."""
        with self._log_lock:
            return list(self._requests)

    @property
    def delta_token_max_age(self) -> timedelta:
        return self._delta.max_age

    @delta_token_max_age.setter
    def delta_token_max_age(self, value: timedelta) -> None:
        self._delta.max_age = value

    def expire_delta_tokens(self) -> int:
        """Make every delta token handed out so far answer 410 Gone; returns the new token epoch."""
        return self._delta.expire_all()

    @property
    def faults(self) -> FaultPlan | None:
        return self._faults.plan

    @faults.setter
    def faults(self, plan: FaultPlan | None) -> None:
        """Install a fault plan (None clears it); its rule counters start from zero."""
        self._faults.set_plan(plan)

    def fault_stats(self) -> dict[str, Any]:
        return {"faults_injected": self._faults.injected, "faults_by_kind": self._faults.injected_by_kind()}

    def stats(self) -> dict[str, Any]:
        return {
            "users": len(self.tenant),
            "groups": len(self.tenant.group_ids()),
            "requests": self.request_count,
            **self.fault_stats(),
        }

    def _record(self, path: str) -> None:
        with self._log_lock:
            self._request_count += 1
            self._requests.append(path)
