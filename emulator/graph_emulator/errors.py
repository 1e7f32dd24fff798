"""Graph's error shape, shared by every module that validates a request."""

from __future__ import annotations


class GraphError(Exception):
    """An error to return to the client as Graph's {"error": {...}} body."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def bad_request(message: str, code: str = "Request_BadRequest") -> GraphError:
    return GraphError(400, code, message)
