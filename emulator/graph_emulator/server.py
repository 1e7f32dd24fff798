"""A real HTTP server speaking the slice of Microsoft Graph v1.0 the sync uses.

It exists so the pipeline can be run and tested end to end (paging, $select, $expand,
error handling, throughput) without a Microsoft tenant. It is deliberately a plain
ThreadingHTTPServer from the standard library: no dependencies, starts in
milliseconds on port 0, and is quiet (no per-request logging) so test output stays
readable. The /_emulator/* endpoints are not Graph; they drive demos and tests.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from graph_emulator.query import (
    DEFAULT_SELECT,
    GraphError,
    bad_request,
    next_link,
    parse_options,
    project_manager,
)
from graph_emulator.store import Tenant
from graph_emulator.tenant import apply_day2

REQUEST_LOG_SIZE = 10_000


def _not_found(resource: str) -> GraphError:
    return GraphError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{resource}' does not exist or one of its queried reference-property objects are not present.",
    )


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
        try:
            status, payload = self._route(method, split.path, split.query, body)
        except GraphError as error:
            status, payload = error.status, self._error_body(error.code, error.message)
        except Exception as error:  # a bug in the emulator: report it to the client, not stderr
            status, payload = 500, self._error_body("InternalServerError", repr(error))
        self._send_json(status, payload)

    def _route(self, method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
        segments = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
        head = [s.lower() for s in segments[:2]]
        emulator = self.server.emulator
        if head == ["v1.0", "users"] and 2 <= len(segments) <= 4:
            self._require(method, "GET")
            if len(segments) == 2:
                return 200, emulator._list_users(self._origin(), path, query)
            if len(segments) == 3:
                return 200, emulator._get_user(self._origin(), segments[2], query)
            if segments[3].lower() == "manager":
                return 200, emulator._get_manager(self._origin(), segments[2])
        elif head == ["_emulator", "day2"] and len(segments) == 2:
            self._require(method, "POST")
            return 200, emulator._day2(body)
        elif head == ["_emulator", "stats"] and len(segments) == 2:
            self._require(method, "GET")
            return 200, emulator.stats()
        raise _not_found(path)

    @staticmethod
    def _require(method: str, allowed: str) -> None:
        if method != allowed:
            raise GraphError(405, "Request_BadRequest", f"The HTTP method '{method}' is not allowed here.")

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

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("OData-Version", "4.0")
        self.end_headers()
        self.wfile.write(data)


class GraphEmulator:
    """Serve a Tenant over HTTP as Microsoft Graph v1.0 on a background thread.

    Use as a context manager, or call start()/stop(). Port 0 picks a free port; read
    the real one from .port or .base_url after start().
    """

    def __init__(self, tenant: Tenant, host: str = "127.0.0.1", port: int = 0) -> None:
        self.tenant = tenant
        self.host = host
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._log_lock = threading.Lock()
        self._request_count = 0
        self._requests: deque[str] = deque(maxlen=REQUEST_LOG_SIZE)

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

    def stats(self) -> dict[str, int]:
        return {"users": len(self.tenant), "requests": self.request_count}

    def _record(self, path: str) -> None:
        with self._log_lock:
            self._request_count += 1
            self._requests.append(path)

    # ------------------------------------------------------------ endpoints
    def _list_users(self, origin: str, path: str, query: str) -> dict[str, Any]:
        options = parse_options(query, collection=True)
        rows, more = self.tenant.page_after(options.after_id, options.page_size, options.expand_manager)
        page: dict[str, Any] = {"@odata.context": self._context(origin, options.select)}
        if more and rows:
            page["@odata.nextLink"] = next_link(origin, path, query, rows[-1][0]["id"])
        page["value"] = [options.project(user, manager) for user, manager in rows]
        return page

    def _get_user(self, origin: str, key: str, query: str) -> dict[str, Any]:
        options = parse_options(query, collection=False)
        object_id = self.tenant.resolve(key)
        user, manager = self.tenant.user_and_manager(object_id) if object_id else (None, None)
        if user is None:
            raise _not_found(key)
        body = {"@odata.context": self._context(origin, options.select) + "/$entity"}
        body.update(options.project(user, manager))
        return body

    def _get_manager(self, origin: str, key: str) -> dict[str, Any]:
        object_id = self.tenant.resolve(key)
        user, manager = self.tenant.user_and_manager(object_id) if object_id else (None, None)
        if user is None:
            raise _not_found(key)
        if manager is None:
            raise _not_found("manager")
        body = {"@odata.context": f"{origin}/v1.0/$metadata#directoryObjects/$entity"}
        body.update(project_manager(manager, DEFAULT_SELECT))
        return body

    def _day2(self, body: bytes) -> dict[str, Any]:
        try:
            options = json.loads(body) if body.strip() else {}
        except json.JSONDecodeError as error:
            raise bad_request(f"Body is not JSON: {error}") from error
        seed = options.get("seed", 2) if isinstance(options, dict) else None
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise bad_request('Body must be {"seed": <integer>} or empty.')
        try:
            return apply_day2(self.tenant, seed=seed).to_dict()
        except ValueError as error:
            raise bad_request(str(error)) from error

    @staticmethod
    def _context(origin: str, select: tuple[str, ...]) -> str:
        suffix = "" if select == DEFAULT_SELECT else "({})".format(",".join(select))
        return f"{origin}/v1.0/$metadata#users{suffix}"
