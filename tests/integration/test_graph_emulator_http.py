"""The Graph emulator over real HTTP, read with urllib like any client would.

These pin the Graph behaviours the sync depends on: nextLink paging that survives
concurrent changes, $select, $top limits, $expand=manager page capping, error bodies,
and the admin endpoints that drive day 2.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from graph_emulator.query import DEFAULT_SELECT
from graph_emulator.server import GraphEmulator
from graph_emulator.store import Tenant
from graph_emulator.tenant import generate_tenant
from graph_http import call as _call

pytestmark = pytest.mark.integration

N = 3000


def _get(url: str) -> Any:
    status, _, body = _call(url)
    assert status == 200, body
    return body


def _pages(url: str) -> Iterator[dict]:
    while url:
        page = _get(url)
        yield page
        url = page.get("@odata.nextLink")


@pytest.fixture(scope="module")
def tenant() -> Tenant:
    return generate_tenant(N, seed=11)


@pytest.fixture(scope="module")
def emulator(tenant: Tenant) -> Iterator[GraphEmulator]:
    """Read-only tests share this one; tests that mutate use `fresh`."""
    with GraphEmulator(tenant) as running:
        yield running


@pytest.fixture
def fresh() -> Iterator[GraphEmulator]:
    with GraphEmulator(generate_tenant(1500, seed=3)) as running:
        yield running


def test_paging_with_top_999_returns_every_user_once_via_absolute_next_links(
    emulator: GraphEmulator, tenant: Tenant
) -> None:
    status, headers, _ = _call(f"{emulator.base_url}/users?$top=1")
    assert status == 200 and headers["Content-Type"].startswith("application/json")

    pages = list(_pages(f"{emulator.base_url}/users?$top=999"))
    ids = [user["id"] for page in pages for user in page["value"]]
    assert len(ids) == len(set(ids)) == N
    assert set(ids) == set(tenant.ids_sorted())
    assert len(pages) == math.ceil(N / 999)
    assert all(len(page["value"]) == 999 for page in pages[:-1])
    assert "@odata.nextLink" not in pages[-1]
    for page in pages[:-1]:
        link = page["@odata.nextLink"]
        assert link.startswith(f"http://127.0.0.1:{emulator.port}/v1.0/users?")
        assert "$top=999" in link and "$skiptoken=" in link


def test_default_properties_exclude_account_enabled(emulator: GraphEmulator) -> None:
    users = _get(f"{emulator.base_url}/users?$top=50")["value"]
    assert len(users) == 50
    assert all(set(user) == set(DEFAULT_SELECT) for user in users)
    assert all("accountEnabled" not in user for user in users)
    assert all(user["preferredLanguage"] is None for user in users)


def test_select_limits_properties_and_returns_tenant_values(emulator: GraphEmulator, tenant: Tenant) -> None:
    users = _get(f"{emulator.base_url}/users?$select=displayName,accountEnabled,department&$top=999")["value"]
    assert all(set(user) == {"id", "displayName", "accountEnabled", "department"} for user in users)
    for user in users:
        stored = tenant.get_user(user["id"])
        assert (user["displayName"], user["accountEnabled"], user["department"]) == (
            stored["displayName"],
            stored["accountEnabled"],
            stored["department"],
        )
    assert any(user["accountEnabled"] is False for user in users)

    status, _, body = _call(f"{emulator.base_url}/users?$select=displayName,shoeSize")
    assert status == 400 and "shoeSize" in body["error"]["message"]


@pytest.mark.parametrize("top", ["1000", "0", "-1", "abc", ""])
def test_top_outside_1_to_999_is_a_400(emulator: GraphEmulator, top: str) -> None:
    status, headers, body = _call(f"{emulator.base_url}/users?$top={top}")
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert "between 1 and 999" in body["error"]["message"]


def test_skip_is_rejected_like_graph(emulator: GraphEmulator) -> None:
    status, _, body = _call(f"{emulator.base_url}/users?$top=10&$skip=10")
    assert status == 400
    assert body["error"]["code"] == "Request_BadRequest"
    assert "'$skip' is not supported" in body["error"]["message"]


def test_bad_skiptoken_is_a_400(emulator: GraphEmulator) -> None:
    status, _, body = _call(f"{emulator.base_url}/users?$skiptoken=not-a-token")
    assert status == 400 and "error" in body


def test_expand_manager_caps_pages_at_100_and_matches_tenant(emulator: GraphEmulator, tenant: Tenant) -> None:
    url = f"{emulator.base_url}/users?$top=999&$select=displayName&$expand=manager($select=id,displayName)"
    pages = list(_pages(url))
    assert len(pages) == math.ceil(N / 100)
    assert all(len(page["value"]) == 100 for page in pages[:-1])
    assert all("$expand=manager" in page["@odata.nextLink"] for page in pages[:-1])
    users = [user for page in pages for user in page["value"]]
    assert len({user["id"] for user in users}) == N
    without_manager = 0
    for user in users:
        expected = tenant.manager_of(user["id"])
        if expected is None:
            assert "manager" not in user
            without_manager += 1
            continue
        manager = user["manager"]
        assert manager["id"] == expected
        assert manager["@odata.type"] == "#microsoft.graph.user"
        assert set(manager) == {"@odata.type", "id", "displayName"}
        assert manager["displayName"] == tenant.get_user(expected)["displayName"]
    assert without_manager == 1  # only the CEO


def test_expand_manager_without_nested_select_uses_default_properties(emulator: GraphEmulator) -> None:
    users = _get(f"{emulator.base_url}/users?$expand=manager")["value"]
    assert len(users) == 100  # the default $top
    managed = [user for user in users if "manager" in user]
    assert managed
    assert set(managed[0]["manager"]) == {"@odata.type", *DEFAULT_SELECT}


def test_single_user_and_manager_endpoints(emulator: GraphEmulator, tenant: Tenant) -> None:
    ceo = next(i for i in tenant.ids_sorted() if tenant.manager_of(i) is None)
    report = next(i for i in tenant.ids_sorted() if tenant.manager_of(i) is not None)
    stored = tenant.get_user(report)

    user = _get(f"{emulator.base_url}/users/{report}?$select=employeeId,accountEnabled")
    assert {k: v for k, v in user.items() if not k.startswith("@")} == {
        "id": report,
        "employeeId": stored["employeeId"],
        "accountEnabled": stored["accountEnabled"],
    }
    by_upn = _get(f"{emulator.base_url}/users/{stored['userPrincipalName']}")
    assert by_upn["id"] == report

    manager = _get(f"{emulator.base_url}/users/{report}/manager")
    assert manager["id"] == tenant.manager_of(report)

    status, _, body = _call(f"{emulator.base_url}/users/{ceo}/manager")
    assert status == 404 and body["error"]["code"] == "Request_ResourceNotFound"

    missing = "00000000-0000-4000-8000-00000000dead"
    for path in (f"users/{missing}", f"users/{missing}/manager"):
        status, headers, body = _call(f"{emulator.base_url}/{path}")
        assert status == 404
        assert headers["Content-Type"].startswith("application/json")
        assert body["error"]["code"] == "Request_ResourceNotFound"
        assert f"Resource '{missing}' does not exist" in body["error"]["message"]


@pytest.mark.parametrize(
    "path", ["/v1.0/applications", "/v1.0/users/x/memberOf", "/v1.0/groups/x/owners", "/", "/beta/users"]
)
def test_unknown_routes_are_graph_style_404s(emulator: GraphEmulator, path: str) -> None:
    status, _, body = _call(f"http://127.0.0.1:{emulator.port}{path}")
    assert status == 404 and body["error"]["code"] == "Request_ResourceNotFound"


def test_day2_endpoint_changes_what_a_fresh_read_sees(fresh: GraphEmulator) -> None:
    admin = f"http://127.0.0.1:{fresh.port}/_emulator"
    before = _get(f"{admin}/stats")["users"]
    status, _, changes = _call(f"{admin}/day2", method="POST", body=json.dumps({"seed": 7}).encode())
    assert status == 200
    assert all(changes[name] for name in ("hired", "disabled", "deleted", "renamed", "cleared"))

    select = "accountEnabled,userPrincipalName,mail,department,jobTitle,mobilePhone"
    users = {
        user["id"]: user
        for page in _pages(f"{fresh.base_url}/users?$top=999&$select={select}")
        for user in page["value"]
    }
    assert len(users) == before + len(changes["hired"]) - len(changes["deleted"])
    assert _get(f"{admin}/stats")["users"] == len(users)
    assert not set(changes["deleted"]) & set(users)
    assert set(changes["hired"]) <= set(users)
    assert all(users[i]["accountEnabled"] is False for i in changes["disabled"])
    for object_id in changes["renamed"]:
        assert users[object_id]["userPrincipalName"] == fresh.tenant.get_user(object_id)["userPrincipalName"]
    for object_id, attributes in changes["cleared_attributes"].items():
        assert all(users[object_id][attribute] is None for attribute in attributes)
    for object_id in changes["deleted"]:
        assert _call(f"{fresh.base_url}/users/{object_id}")[0] == 404
    for object_id in changes["hired"]:
        assert _get(f"{fresh.base_url}/users/{object_id}/manager")["id"]

    status, _, body = _call(f"{admin}/day2", method="POST", body=b'{"seed": "x"}')
    assert status == 400 and "error" in body


def test_users_added_and_deleted_between_pages_do_not_break_paging(fresh: GraphEmulator) -> None:
    tenant = fresh.tenant
    original = tenant.ids_sorted()
    first = _get(f"{fresh.base_url}/users?$top=500&$select=id")
    seen = [user["id"] for user in first["value"]]
    cursor = seen[-1]

    # An insert before the cursor would shift an offset-based pager back onto seen users.
    early = tenant.add_user({"id": "00000000-0000-4000-8000-000000000000", "userPrincipalName": "e@x.example"})
    late = tenant.add_user({"id": "ffffffff-ffff-4fff-bfff-ffffffffffff", "userPrincipalName": "l@x.example"})
    gone = original[len(seen) + 10]
    tenant.delete_user(gone)

    for page in _pages(first["@odata.nextLink"]):
        seen.extend(user["id"] for user in page["value"])
    assert len(seen) == len(set(seen)), "a user was served twice"
    assert late in seen and early not in seen and gone not in seen
    assert set(seen) == set(original) - {gone} | {late}
    assert cursor in seen


def test_request_accounting(fresh: GraphEmulator) -> None:
    start = fresh.request_count
    _get(f"{fresh.base_url}/users?$top=3")
    _call(f"{fresh.base_url}/users/nobody")
    assert fresh.request_count == start + 2
    assert fresh.requests[-2:] == ["/v1.0/users?$top=3", "/v1.0/users/nobody"]
    assert _get(f"http://127.0.0.1:{fresh.port}/_emulator/stats")["requests"] == start + 3


def test_server_is_quiet_on_stderr(fresh: GraphEmulator, capfd: pytest.CaptureFixture[str]) -> None:
    _get(f"{fresh.base_url}/users?$top=5")
    _call(f"{fresh.base_url}/nothing-here")
    _call(f"{fresh.base_url}/users?$top=1000")
    captured = capfd.readouterr()
    assert captured.err == ""


def test_stop_releases_the_port() -> None:
    emulator = GraphEmulator(generate_tenant(20, seed=1)).start()
    url = f"{emulator.base_url}/users"
    assert len(_get(url)["value"]) == 20
    emulator.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


def test_cli_prints_one_line_serves_and_exits_cleanly_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "graph_emulator", "--users", "120", "--seed", "9", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.fullmatch(
            r"graph emulator listening on (http://127\.0\.0\.1:\d+/v1\.0) \(120 users, seed 9\)\n", line
        )
        assert match, line
        assert len(list(_pages(f"{match.group(1)}/users?$top=50"))) == 3
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout.read() == "" and process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ------------------------------------------------------------------ $filter, delta, groups


def _enabled_member(user: dict) -> bool:
    return user["userType"] == "Member" and user["accountEnabled"] is True


def _quote(expression: str) -> str:
    return urllib.parse.quote(expression, safe="")


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("accountEnabled eq true", lambda u: u["accountEnabled"] is True),
        ("accountEnabled eq false", lambda u: u["accountEnabled"] is False),
        ("userType eq 'Guest'", lambda u: u["userType"] == "Guest"),
        ("accountEnabled eq true and userType eq 'member'", _enabled_member),
    ],
)
def test_filter_on_users_pages_through_exactly_the_matching_users(
    emulator: GraphEmulator, tenant: Tenant, expression: str, expected: Any
) -> None:
    url = f"{emulator.base_url}/users?$top=250&$select=accountEnabled,userType&$filter={_quote(expression)}"
    pages = list(_pages(url))  # no ConsistencyLevel header: Graph does not need it for these
    ids = [user["id"] for page in pages for user in page["value"]]
    assert len(ids) == len(set(ids))
    assert ids == [u["id"] for u in tenant.users_sorted() if expected(u)]
    assert all("$filter=" in page["@odata.nextLink"] for page in pages[:-1])


@pytest.mark.parametrize(
    "expression", ["accountEnabled eq true or userType eq 'Guest'", "startswith(displayName,'A')", "city eq 'Dublin'"]
)
def test_unsupported_filter_is_a_400(emulator: GraphEmulator, expression: str) -> None:
    status, _, body = _call(f"{emulator.base_url}/users?$filter={_quote(expression)}")
    assert status == 400 and body["error"]["code"] == "Request_UnsupportedQuery"


def test_delta_over_http_initial_sync_changes_minimal_and_410(fresh: GraphEmulator) -> None:
    tenant = fresh.tenant
    pages = list(_pages(f"{fresh.base_url}/users/delta?$select=displayName,mobilePhone&$top=999"))
    assert sorted(u["id"] for page in pages for u in page["value"]) == tenant.ids_sorted()
    assert all(page["@odata.nextLink"].startswith(f"{fresh.base_url}/users/delta?$skiptoken=") for page in pages[:-1])
    delta_link = pages[-1]["@odata.deltaLink"]
    assert delta_link.startswith(f"{fresh.base_url}/users/delta?$deltatoken=")

    target = next(u for u in tenant.users_sorted() if u["mobilePhone"] and not tenant.direct_reports(u["id"]))
    tenant.update_user(target["id"], mobilePhone=None)
    request = urllib.request.Request(delta_link, headers={"Prefer": "return=minimal"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Preference-Applied"] == "return=minimal"
        body = json.loads(response.read())
    assert body["value"] == [{"id": target["id"], "mobilePhone": None}]
    full = _get(delta_link)["value"]  # replay, without the header: all selected properties
    assert full == [{"id": target["id"], "displayName": target["displayName"], "mobilePhone": None}]

    # The Kiota-style path works too.
    assert _get(f"{fresh.base_url}/users/delta()?$top=1")["value"]

    admin = f"http://127.0.0.1:{fresh.port}/_emulator"
    status, _, body = _call(f"{admin}/expire-delta-tokens", method="POST", body=b"")
    assert status == 200
    status, headers, body = _call(delta_link)
    assert status == 410 and headers["Content-Type"].startswith("application/json")
    assert body["error"]["code"] in ("syncStateNotFound", "resyncRequired")

    fresh_link = list(_pages(f"{fresh.base_url}/users/delta?$top=999"))[-1]["@odata.deltaLink"]
    assert _call(fresh_link)[0] == 200
    status, _, body = _call(f"{admin}/delta-token-max-age", method="PUT", body=b'{"seconds": 0.01}')
    assert status == 200 and body == {"seconds": 0.01}
    time.sleep(0.05)
    status, _, body = _call(fresh_link)
    assert status == 410 and body["error"]["code"] == "syncStateNotFound"
    assert _call(f"{admin}/delta-token-max-age", method="PUT", body=b'{"seconds": -1}')[0] == 400
    fresh.delta_token_max_age = timedelta(days=7)
    assert _get(f"{admin}/delta-token-max-age") == {"seconds": 7 * 24 * 3600}


def test_groups_list_get_and_404(emulator: GraphEmulator, tenant: Tenant) -> None:
    page = _get(f"{emulator.base_url}/groups?$top=5&$select=displayName")
    assert len(page["value"]) == 5 and page["@odata.nextLink"].startswith(f"{emulator.base_url}/groups?")
    groups = [g for p in _pages(f"{emulator.base_url}/groups?$top=5") for g in p["value"]]
    assert [g["id"] for g in groups] == tenant.group_ids()
    all_staff = next(g for g in groups if g["displayName"] == "All Staff")
    assert all_staff["securityEnabled"] is True and all_staff["groupTypes"] == []

    single = _get(f"{emulator.base_url}/groups/{all_staff['id']}?$select=displayName")
    assert {k: v for k, v in single.items() if not k.startswith("@")} == {
        "id": all_staff["id"],
        "displayName": "All Staff",
    }
    missing = "00000000-0000-4000-8000-00000000beef"
    for path in (f"groups/{missing}", f"groups/{missing}/transitiveMembers/microsoft.graph.user"):
        status, _, body = _call(f"{emulator.base_url}/{path}")
        assert status == 404 and body["error"]["code"] == "Request_ResourceNotFound"


def test_transitive_members_page_through_nested_groups_once_with_select_and_filter(
    emulator: GraphEmulator, tenant: Tenant
) -> None:
    all_staff = next(i for i in tenant.group_ids() if tenant.get_group(i)["displayName"] == "All Staff")
    url = f"{emulator.base_url}/groups/{all_staff}/transitiveMembers/microsoft.graph.user?$top=999&$select=userType"
    pages = list(_pages(url))
    ids = [user["id"] for page in pages for user in page["value"]]
    members = [u["id"] for u in tenant.users_sorted() if u["userType"] == "Member"]
    assert ids == members and len(pages) == math.ceil(len(members) / 999)
    assert all(set(user) == {"id", "userType"} for page in pages for user in page["value"])
    assert pages[0]["@odata.nextLink"].startswith(f"{emulator.base_url}/groups/{all_staff}/transitiveMembers/")

    enabled = f"{url}&$filter={_quote('accountEnabled eq true')}"
    filtered = [user["id"] for page in _pages(enabled) for user in page["value"]]
    assert filtered == [i for i in members if tenant.get_user(i)["accountEnabled"]]
    status, _, body = _call(f"{url}&$filter={_quote('accountEnabled ne true')}")
    assert status == 400 and body["error"]["code"] == "Request_UnsupportedQuery"
    status, _, _ = _call(f"{emulator.base_url}/groups/{all_staff}/transitiveMembers/microsoft.graph.user?$top=1000")
    assert status == 400
