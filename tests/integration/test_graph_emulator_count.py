"""$count and the ends_early fault over real HTTP, read with urllib as the sync's client would.

The sync proves a full read is complete by comparing the users it got with the size
Graph reports (/users/$count or @odata.count). These pin what that check relies on:
the ConsistencyLevel header Graph requires, text/plain for /$count, what is and is
not counted, and a listing that ends early with a clean 200 (the fault the check
exists to catch), including a delta round whose deltaLink keeps working afterwards.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from graph_emulator import FaultPlan, FaultRule, GraphEmulator
from graph_emulator.store import Tenant
from graph_emulator.tenant import generate_tenant
from graph_http import call as _call

pytestmark = pytest.mark.integration

N = 400
EVENTUAL = {"ConsistencyLevel": "eventual"}


def _request(url: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> tuple[int, str, bytes]:
    """Status, Content-Type and raw body (HTTP errors included, not raised)."""
    method = "POST" if body is not None else "GET"
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def _json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, content_type, body = _request(url, headers)
    assert content_type == "application/json", (content_type, body)
    return status, json.loads(body)


def _ok(url: str, headers: dict[str, str] | None = None) -> Any:
    status, body = _json(url, headers)
    assert status == 200, body
    return body


def _count(url: str, headers: dict[str, str] | None = EVENTUAL) -> int:
    status, content_type, body = _request(url, headers)
    assert status == 200, body
    assert content_type == "text/plain; charset=utf-8"
    return int(body.decode("utf-8"))


def _pages(url: str, headers: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """Every page of a listing or delta round, following nextLinks (a deltaLink ends it)."""
    while url:
        page = _ok(url, headers)
        yield page
        url = page.get("@odata.nextLink")


def _set_plan(emulator: GraphEmulator, plan: dict[str, Any]) -> None:
    """Install a fault plan through the admin endpoint, as a demo or an external test would."""
    status, _, body = _request(f"http://127.0.0.1:{emulator.port}/_emulator/faults", body=json.dumps(plan).encode())
    assert status == 200, body


def _stats(emulator: GraphEmulator) -> dict[str, Any]:
    status, _, stats = _call(f"http://127.0.0.1:{emulator.port}/_emulator/stats")
    assert status == 200
    return stats


@pytest.fixture(scope="module")
def tenant() -> Tenant:
    return generate_tenant(N, seed=21)


@pytest.fixture(scope="module")
def emulator(tenant: Tenant) -> Iterator[GraphEmulator]:
    """Read-only tests share this one; tests that mutate or fault use `fresh`."""
    with GraphEmulator(tenant) as running:
        yield running


@pytest.fixture
def fresh() -> Iterator[GraphEmulator]:
    with GraphEmulator(generate_tenant(N, seed=22)) as running:
        yield running


def _all_staff(tenant: Tenant) -> str:
    return next(i for i in tenant.group_ids() if (tenant.get_group(i) or {}).get("displayName") == "All Staff")


# ------------------------------------------------------------------ /users/$count


def test_count_needs_consistency_level_eventual_like_graph(emulator: GraphEmulator) -> None:
    status, error = _json(f"{emulator.base_url}/users/$count")
    assert status == 400
    assert error["error"]["code"] == "Request_BadRequest"
    assert error["error"]["message"] == "$count is not currently supported."
    status, error = _json(f"{emulator.base_url}/users/$count", {"ConsistencyLevel": "session"})
    assert status == 400 and error["error"]["code"] == "Request_BadRequest"


@pytest.mark.parametrize("segment", ["$count", "%24count", "%24COUNT"])
@pytest.mark.parametrize("value", ["eventual", "Eventual", " EVENTUAL "])
def test_count_is_text_plain_for_any_spelling(emulator: GraphEmulator, segment: str, value: str) -> None:
    assert _count(f"{emulator.base_url}/users/{segment}", {"ConsistencyLevel": value}) == N


def test_count_includes_guests_and_disabled_users(emulator: GraphEmulator, tenant: Tenant) -> None:
    users = tenant.users_sorted()
    guests = sum(1 for user in users if user["userType"] == "Guest")
    disabled = sum(1 for user in users if user["accountEnabled"] is False)
    assert guests and disabled, "the generated tenant should have guests and disabled users"
    assert _count(f"{emulator.base_url}/users/$count") == len(users) == N


def test_count_with_filter_counts_what_the_listing_returns(emulator: GraphEmulator, tenant: Tenant) -> None:
    for expression in (
        "accountEnabled eq false",
        "userType eq 'Guest'",
        "(accountEnabled eq true) and userType eq 'member'",
    ):
        quoted = urllib.request.quote(expression)
        listed = [u for p in _pages(f"{emulator.base_url}/users?$top=999&$filter={quoted}") for u in p["value"]]
        assert _count(f"{emulator.base_url}/users/$count?$filter={quoted}") == len(listed) > 0, expression


def test_count_rejects_unsupported_filters_and_options(emulator: GraphEmulator) -> None:
    status, error = _json(f"{emulator.base_url}/users/$count?$filter=startswith(displayName,'A')", EVENTUAL)
    assert status == 400 and error["error"]["code"] == "Request_UnsupportedQuery"
    status, error = _json(f"{emulator.base_url}/users/$count?$top=5", EVENTUAL)
    assert status == 400 and error["error"]["code"] == "Request_UnsupportedQuery"


def test_count_follows_deletes_soft_deletes_and_restores(fresh: GraphEmulator) -> None:
    directory = fresh.tenant
    url = f"{fresh.base_url}/users/$count"
    hard, soft = directory.ids_sorted()[:2]
    directory.delete_user(hard)
    assert _count(url) == N - 1
    directory.soft_delete_user(soft)  # in deleted items: gone from /users, so not counted
    assert _count(url) == N - 2 == len(directory)
    directory.restore_user(soft)
    assert _count(url) == N - 1
    directory.add_user({"userPrincipalName": "new.hire@contoso.example", "userType": "Guest"})
    assert _count(url) == N


def test_faults_apply_to_count_like_any_graph_path(fresh: GraphEmulator) -> None:
    fresh.faults = FaultPlan((FaultRule(path_prefix="/v1.0/users/$count", status=503, retry_after=1, ordinals=(1,)),))
    status, _, _ = _request(f"{fresh.base_url}/users/%24count", EVENTUAL)  # the rule matches the decoded path
    assert status == 503
    assert _count(f"{fresh.base_url}/users/$count") == N
    assert _stats(fresh)["faults_by_kind"] == {"status_503": 1}


def test_a_reset_cuts_the_count_mid_answer(fresh: GraphEmulator) -> None:
    fresh.faults = FaultPlan((FaultRule(path_prefix="/v1.0/users/$count", reset=True, ordinals=(1,)),))
    request = urllib.request.Request(f"{fresh.base_url}/users/$count", headers=EVENTUAL)
    dropped = (http.client.HTTPException, ConnectionError, urllib.error.URLError)
    with pytest.raises(dropped), urllib.request.urlopen(request, timeout=30) as response:
        response.read()
    assert _count(f"{fresh.base_url}/users/$count") == N
    assert _stats(fresh)["faults_by_kind"] == {"reset": 1}


# ------------------------------------------------------------------ $count=true on listings


def test_count_true_puts_the_total_on_the_first_page_only(emulator: GraphEmulator) -> None:
    pages = list(_pages(f"{emulator.base_url}/users?$count=true&$top=150&$select=id", EVENTUAL))
    assert [len(p["value"]) for p in pages] == [150, 150, 100]
    assert pages[0]["@odata.count"] == N
    assert list(pages[0])[:3] == ["@odata.context", "@odata.count", "@odata.nextLink"]  # Graph's order
    assert all("@odata.count" not in p for p in pages[1:])
    assert "$count=true" in pages[0]["@odata.nextLink"]  # so later pages need the header as well


def test_count_true_needs_the_header_and_false_does_not(emulator: GraphEmulator) -> None:
    status, error = _json(f"{emulator.base_url}/users?$count=true")
    assert status == 400 and error["error"]["code"] == "Request_BadRequest"
    page = _ok(f"{emulator.base_url}/users?$count=false&$top=5")
    assert "@odata.count" not in page and len(page["value"]) == 5
    status, error = _json(f"{emulator.base_url}/users?$count=maybe", EVENTUAL)
    assert status == 400 and error["error"]["code"] == "Request_BadRequest"


def test_count_true_with_filter_counts_the_filtered_users(emulator: GraphEmulator, tenant: Tenant) -> None:
    page = _ok(f"{emulator.base_url}/users?$count=TRUE&$filter=userType%20eq%20'Guest'&$top=1", EVENTUAL)
    assert page["@odata.count"] == sum(1 for user in tenant.users_sorted() if user["userType"] == "Guest")


def test_transitive_members_count_true_and_count_segment(emulator: GraphEmulator, tenant: Tenant) -> None:
    group = _all_staff(tenant)
    members = f"{emulator.base_url}/groups/{group}/transitiveMembers/microsoft.graph.user"
    expected = len(tenant.transitive_user_ids(group))
    page = _ok(f"{members}?$count=true&$top=10", EVENTUAL)
    assert page["@odata.count"] == expected and len(page["value"]) == 10
    assert _count(f"{members}/$count") == expected
    enabled = urllib.request.quote("accountEnabled eq true")
    assert _count(f"{members}/$count?$filter={enabled}") == sum(
        1 for i in tenant.transitive_user_ids(group) if (tenant.get_user(i) or {})["accountEnabled"]
    )
    assert _json(f"{members}?$count=true")[0] == 400
    missing = f"{emulator.base_url}/groups/no-such-group/transitiveMembers/microsoft.graph.user/$count"
    assert _request(missing, EVENTUAL)[0] == 404


@pytest.mark.parametrize("query", ["$count=true", "$count=false", "$select=id&$count=true"])
def test_count_on_delta_is_unsupported(emulator: GraphEmulator, query: str) -> None:
    status, error = _json(f"{emulator.base_url}/users/delta?{query}", EVENTUAL)
    assert status == 400 and error["error"]["code"] == "Request_UnsupportedQuery"
    delta_link = list(_pages(f"{emulator.base_url}/users/delta?$top=999"))[-1]["@odata.deltaLink"]
    status, error = _json(f"{delta_link}&$count=true", EVENTUAL)
    assert status == 400 and error["error"]["code"] == "Request_UnsupportedQuery"


# ------------------------------------------------------------------ ends_early


def test_delta_ending_early_on_page_two_reads_100_of_400_then_its_delta_link_reports_only_later_changes(
    fresh: GraphEmulator,
) -> None:
    directory = fresh.tenant
    _set_plan(fresh, {"rules": [{"path_prefix": "/v1.0/users/delta", "ends_early": True, "ordinals": [2]}]})
    pages = list(_pages(f"{fresh.base_url}/users/delta?$top=100&$select=displayName,jobTitle"))
    assert [len(p["value"]) for p in pages] == [100, 0]
    assert "@odata.nextLink" in pages[0] and "@odata.nextLink" not in pages[1]
    delta_link = pages[1]["@odata.deltaLink"]
    assert delta_link.startswith(f"{fresh.base_url}/users/delta?$deltatoken=")
    read = {user["id"] for user in pages[0]["value"]}
    assert len(read) == 100 < _count(f"{fresh.base_url}/users/$count") == N  # what the completeness check sees
    assert _stats(fresh)["faults_by_kind"] == {"ends_early": 1}
    _set_plan(fresh, {"rules": []})

    # Nothing changed yet: the link works and the 300 missed users do not come back.
    quiet = list(_pages(delta_link))
    assert [p["value"] for p in quiet] == [[]] and "@odata.deltaLink" in quiet[-1]

    missed = sorted(set(directory.ids_sorted()) - read)
    assert len(missed) == N - 100
    directory.update_user(missed[0], jobTitle="Promoted after the short read")
    gone = sorted(read)[0]
    directory.delete_user(gone)
    hired = directory.add_user({"userPrincipalName": "late.hire@contoso.example", "displayName": "Late Hire"})
    changes = {user["id"]: user for p in _pages(delta_link) for user in p["value"]}
    # Exactly the later changes (the manager is not selected, so orphaned reports are not among them):
    # the other 299 missed users stay missed, as after the real truncated read.
    assert set(changes) == {missed[0], gone, hired}
    assert changes[missed[0]]["jobTitle"] == "Promoted after the short read"
    assert changes[gone]["@removed"] == {"reason": "deleted"}
    assert changes[hired]["displayName"] == "Late Hire"


def test_delta_change_round_can_end_early_too(fresh: GraphEmulator) -> None:
    directory = fresh.tenant
    delta_link = list(_pages(f"{fresh.base_url}/users/delta?$top=10&$select=jobTitle"))[-1]["@odata.deltaLink"]
    for index, object_id in enumerate(directory.ids_sorted()[:30]):
        directory.update_user(object_id, jobTitle=f"Title {index}")
    fresh.faults = FaultPlan((FaultRule(path_prefix="/v1.0/users/delta", ends_early=True, ordinals=(2,)),))
    pages = list(_pages(delta_link))  # $top=10 travels in the token: 3 pages of changes, cut after the first
    assert [len(p["value"]) for p in pages] == [10, 0] and "@odata.deltaLink" in pages[1]
    fresh.faults = None
    assert [p["value"] for p in _pages(pages[1]["@odata.deltaLink"])] == [[]]  # the other 20 stay missed
    late = directory.ids_sorted()[-1]
    directory.update_user(late, jobTitle="Later")
    assert [u["id"] for p in _pages(pages[1]["@odata.deltaLink"]) for u in p["value"]] == [late]


def test_users_listing_ends_early_with_no_next_link_while_count_says_more(fresh: GraphEmulator) -> None:
    fresh.faults = FaultPlan((FaultRule(path_prefix="/v1.0/users", ends_early=True, ordinals=(2,)),))
    first = _ok(f"{fresh.base_url}/users?$count=true&$top=100", EVENTUAL)
    assert first["@odata.count"] == N and len(first["value"]) == 100
    # Neither a single user, a manager nor /$count is a listing: they do not count towards the ordinal.
    user_id = first["value"][0]["id"]
    assert _ok(f"{fresh.base_url}/users/{user_id}")["id"] == user_id
    assert _count(f"{fresh.base_url}/users/$count") == N
    second = _ok(first["@odata.nextLink"], EVENTUAL)
    assert second["value"] == [] and "@odata.nextLink" not in second and "@odata.count" not in second
    assert _stats(fresh)["faults_by_kind"] == {"ends_early": 1}
    assert len(_ok(first["@odata.nextLink"], EVENTUAL)["value"]) == 100  # paging is stateless: the retry is whole


def test_transitive_members_end_early(fresh: GraphEmulator) -> None:
    group = _all_staff(fresh.tenant)
    fresh.faults = FaultPlan((FaultRule(path_prefix="/v1.0/groups", ends_early=True, probability=1.0),))
    page = _ok(f"{fresh.base_url}/groups/{group}/transitiveMembers/microsoft.graph.user?$count=true", EVENTUAL)
    assert page["value"] == [] and "@odata.nextLink" not in page
    assert page["@odata.count"] == len(fresh.tenant.transitive_user_ids(group)) > 0
    assert _ok(f"{fresh.base_url}/groups/{group}")["id"] == group  # a single group is not cut short
    assert _stats(fresh)["faults_by_kind"] == {"ends_early": 1}


def test_ends_early_plans_are_validated_by_the_admin_endpoint(fresh: GraphEmulator) -> None:
    url = f"http://127.0.0.1:{fresh.port}/_emulator/faults"
    for rule in ({"ends_early": True, "status": 503}, {"ends_early": True, "reset": True}, {"ends_early": "yes"}):
        status, _, body = _request(url, body=json.dumps({"rules": [rule]}).encode())
        assert status == 400, (rule, body)
    _set_plan(fresh, {"seed": 3, "rules": [{"path_prefix": "/v1.0/users/delta", "ends_early": True, "every": 5}]})
    status, _, plan = _call(url)
    rule = plan["plan"]["rules"][0]
    assert status == 200 and rule["ends_early"] is True and rule["every"] == 5
