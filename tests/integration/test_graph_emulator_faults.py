"""Injected faults over real HTTP, seen through urllib as the sync's client would see them.

Pins what retry code depends on: 429 with and without Retry-After, 503, slow answers,
connections reset mid-response, that a retry after a fault gets the page it asked
for, that rules fire deterministically, and that the stats count what was injected.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from graph_emulator import FaultPlan, FaultRule, GraphEmulator
from graph_emulator.tenant import generate_tenant
from graph_http import call as _call

pytestmark = pytest.mark.integration

N = 700


def _dropped(url: str) -> BaseException:
    """The error urllib raises for a connection reset mid-response (fails if the call succeeds)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
    except (http.client.IncompleteRead, ConnectionError) as error:
        return error
    except urllib.error.URLError as error:  # urllib wraps errors raised before the body is read
        assert isinstance(error.reason, ConnectionError | http.client.HTTPException), error.reason
        return error
    raise AssertionError("the request succeeded although its connection should have been reset")


def _plan(*rules: FaultRule, seed: int = 0) -> FaultPlan:
    return FaultPlan(rules, seed=seed)


@pytest.fixture
def emulator() -> Iterator[GraphEmulator]:
    with GraphEmulator(generate_tenant(N, seed=13)) as running:
        yield running


def _admin(emulator: GraphEmulator, name: str) -> str:
    return f"http://127.0.0.1:{emulator.port}/_emulator/{name}"


def test_429_with_retry_after_then_the_retry_gets_the_page(emulator: GraphEmulator) -> None:
    url = f"{emulator.base_url}/users?$top=100"
    expected = _call(url)[2]
    emulator.faults = _plan(FaultRule(path_prefix="/v1.0/users", status=429, retry_after=7, ordinals=(1,)))
    status, headers, body = _call(url)
    assert status == 429 and headers["Retry-After"] == "7"
    assert headers["Content-Type"].startswith("application/json") and body["error"]["code"] == "TooManyRequests"
    assert _call(url) == (200, _call(url)[1], expected)  # the same page: the fault consumed nothing


def test_429_without_retry_after_and_503_with_it(emulator: GraphEmulator) -> None:
    url = f"{emulator.base_url}/users?$top=5"
    emulator.faults = _plan(
        FaultRule(path_prefix="/v1.0/users", status=429, ordinals=(1,)),
        FaultRule(path_prefix="/v1.0/users", status=503, retry_after=2, ordinals=(2,)),
        FaultRule(path_prefix="/v1.0/users", status=503, ordinals=(3,)),
    )
    status, headers, body = _call(url)
    assert status == 429 and "Retry-After" not in headers
    status, headers, body = _call(url)
    assert status == 503 and headers["Retry-After"] == "2" and body["error"]["code"] == "ServiceUnavailable"
    status, headers, _ = _call(url)
    assert status == 503 and "Retry-After" not in headers
    assert _call(url)[0] == 200
    stats = _call(_admin(emulator, "stats"))[2]
    assert stats["faults_injected"] == 3
    assert stats["faults_by_kind"] == {"status_429": 1, "status_503": 2}


def test_delay_slows_the_answer_but_serves_it(emulator: GraphEmulator) -> None:
    url = f"{emulator.base_url}/users?$top=3"
    emulator.faults = _plan(FaultRule(path_prefix="/v1.0/users", delay=0.4, ordinals=(1,)))
    start = time.monotonic()
    status, _, body = _call(url)
    assert status == 200 and len(body["value"]) == 3
    assert time.monotonic() - start >= 0.4
    start = time.monotonic()
    _call(url)
    assert time.monotonic() - start < 0.4
    assert emulator.fault_stats()["faults_by_kind"] == {"delay": 1}


def test_reset_drops_the_connection_mid_response_and_a_retry_gets_the_correct_page(
    emulator: GraphEmulator,
) -> None:
    first = _call(f"{emulator.base_url}/users?$top=200&$select=displayName")[2]
    second_url = first["@odata.nextLink"]
    expected = _call(second_url)[2]
    emulator.faults = _plan(FaultRule(path_prefix="/v1.0/users", reset=True, ordinals=(1, 2)))
    _dropped(second_url)
    _dropped(second_url)
    status, _, retried = _call(second_url)
    assert status == 200 and retried == expected
    assert _call(_admin(emulator, "stats"))[2]["faults_injected"] == 2


def test_reset_sends_headers_and_part_of_the_body_first(emulator: GraphEmulator) -> None:
    emulator.faults = _plan(FaultRule(path_prefix="/v1.0/users", reset=True))
    connection = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=30)
    try:
        connection.request("GET", "/v1.0/users?$top=500")
        try:
            response = connection.getresponse()
        except (ConnectionError, http.client.HTTPException):
            pytest.skip("the reset overtook the headers on this machine")
        assert response.status == 200 and int(response.headers["Content-Length"]) > 1000
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            response.read()
    finally:
        connection.close()


def test_every_nth_and_path_prefix_select_the_requests(emulator: GraphEmulator) -> None:
    emulator.faults = _plan(FaultRule(path_prefix="/v1.0/users/delta", status=429, retry_after=1, every=3))
    statuses = [_call(f"{emulator.base_url}/users/delta?$top=1")[0] for _ in range(7)]
    assert statuses == [200, 200, 429, 200, 200, 429, 200]
    assert all(_call(f"{emulator.base_url}/users?$top=1")[0] == 200 for _ in range(4))  # other paths untouched
    assert _call(_admin(emulator, "stats"))[2]["faults_injected"] == 2


def test_probability_rules_are_deterministic_for_a_seed(emulator: GraphEmulator) -> None:
    def pattern(seed: int) -> list[int]:
        emulator.faults = _plan(FaultRule(path_prefix="/v1.0", status=503, probability=0.5), seed=seed)
        return [_call(f"{emulator.base_url}/users?$top=1")[0] for _ in range(24)]

    first = pattern(4)
    assert pattern(4) == first
    assert 0 < first.count(503) < 24
    assert pattern(5) != first


def test_faults_are_set_cleared_and_read_over_http_and_never_hit_admin_endpoints(emulator: GraphEmulator) -> None:
    plan = {"seed": 3, "rules": [{"path_prefix": "/", "status": 429, "retry_after": 1}]}
    status, _, body = _call(_admin(emulator, "faults"), method="POST", body=json.dumps(plan).encode())
    assert status == 200 and body["plan"]["rules"][0]["status"] == 429
    assert _call(f"{emulator.base_url}/users?$top=1")[0] == 429
    assert _call(f"{emulator.base_url}/groups")[0] == 429
    assert _call(_admin(emulator, "stats"))[0] == 200  # "/" matches everything but the admin endpoints
    assert _call(_admin(emulator, "faults"))[2]["faults_injected"] == 2

    status, _, body = _call(_admin(emulator, "faults"), method="DELETE")
    assert status == 200 and body["plan"] is None and emulator.faults is None
    assert _call(f"{emulator.base_url}/users?$top=1")[0] == 200
    assert _call(_admin(emulator, "stats"))[2]["faults_injected"] == 2  # cleared plans keep their count

    for bad in ({"rules": [{"status": 200}]}, {"rules": [{"path_prefix": "/v1.0", "reset": True, "status": 429}]},
                {"rules": [{"path_prefix": "/v1.0", "status": 429, "every": 2, "ordinals": [1]}]},
                {"rules": [{"status": 429, "shoe": 1}]}, {"rulez": []}):  # fmt: skip
        status, _, body = _call(_admin(emulator, "faults"), method="POST", body=json.dumps(bad).encode())
        assert status == 400 and "Invalid fault plan" in body["error"]["message"], bad


def test_constructor_plan_applies_from_the_first_request() -> None:
    plan = _plan(FaultRule(path_prefix="/v1.0/groups", status=503, ordinals=(1,)))
    with GraphEmulator(generate_tenant(50, seed=1), faults=plan) as emulator:
        assert _call(f"{emulator.base_url}/groups")[0] == 503
        assert _call(f"{emulator.base_url}/groups")[0] == 200
        assert emulator.stats()["faults_injected"] == 1


def test_cli_takes_a_fault_file_and_a_delta_token_max_age(tmp_path: Path) -> None:
    plan = tmp_path / "faults.json"
    plan.write_text(json.dumps({"rules": [{"path_prefix": "/v1.0/users", "status": 429, "ordinals": [1]}]}))
    process = subprocess.Popen(
        [sys.executable, "-m", "graph_emulator", "--users", "60", "--port", "0", "--faults", str(plan),
         "--delta-token-max-age", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        match = re.fullmatch(r"graph emulator listening on (http://127\.0\.0\.1:\d+/v1\.0) \(60 users, .*\)\n", line)
        assert match, line
        base = match.group(1)
        assert _call(f"{base}/users")[0] == 429
        page = _call(f"{base}/users/delta?$top=999")[2]
        assert _call(page["@odata.deltaLink"])[0] == 200
        time.sleep(0.3)
        assert _call(page["@odata.deltaLink"])[0] == 410
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    bad = subprocess.run(
        [sys.executable, "-m", "graph_emulator", "--faults", str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--faults" in bad.stderr
