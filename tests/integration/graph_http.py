"""A plain urllib client for the Graph emulator tests: what any HTTP client would see."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def call(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body of one request (HTTP errors included, not raised)."""
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())
