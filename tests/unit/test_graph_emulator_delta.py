"""/users/delta as the sync would use it, driven in-process (no socket) with a controllable clock.

These pin Graph's delta contract: an initial full sync then only changes, @removed
reasons for soft and hard deletes, nulls for cleared values, `Prefer: return=minimal`,
replayable tokens, and 410 for expired or voided ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from graph_emulator.delta import DeltaService
from graph_emulator.errors import GraphError
from graph_emulator.store import Tenant
from graph_emulator.tenant import generate_tenant

pytestmark = pytest.mark.unit

ORIGIN = "http://emulator.test"
SELECT = "displayName,mobilePhone,accountEnabled,department"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tenant() -> Tenant:
    return generate_tenant(300, seed=7)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(tenant: Tenant, clock: Clock) -> DeltaService:
    return DeltaService(tenant, clock=clock)


def _page(service: DeltaService, url: str, minimal: bool = False) -> dict[str, Any]:
    parts = urlsplit(url)
    return service.page(ORIGIN, parts.path, parts.query, minimal)


def _pages(service: DeltaService, url: str, minimal: bool = False) -> Iterator[dict[str, Any]]:
    while True:
        page = _page(service, url, minimal)
        yield page
        assert ("@odata.nextLink" in page) != ("@odata.deltaLink" in page), "exactly one link per page"
        if "@odata.deltaLink" in page:
            return
        url = page["@odata.nextLink"]


def _round(service: DeltaService, url: str, minimal: bool = False) -> tuple[dict[str, dict[str, Any]], str]:
    """All users of one round by id (each must come once) and the round's deltaLink."""
    pages = list(_pages(service, url, minimal))
    values = [user for page in pages for user in page["value"]]
    by_id = {user["id"]: user for user in values}
    assert len(by_id) == len(values), "a user came twice in one round"
    return by_id, pages[-1]["@odata.deltaLink"]


def _initial(service: DeltaService, select: str = SELECT, top: int = 100) -> str:
    _, delta_link = _round(service, f"{ORIGIN}/v1.0/users/delta?$select={select}&$top={top}")
    return delta_link


def _leaf_members(
    tenant: Tenant, count: int, accept: Callable[[dict[str, Any]], Any] | None = None, exclude: Iterable[str] = ()
) -> list[str]:
    """Valid members with a manager and no reports (optionally accepted by `accept`), sorted."""
    excluded = set(exclude)
    chosen = []
    for user in tenant.users_sorted():
        if not Tenant.is_valid_member(user) or tenant.manager_of(user["id"]) is None or user["id"] in excluded:
            continue
        if tenant.direct_reports(user["id"]) or (accept is not None and not accept(user)):
            continue
        chosen.append(user["id"])
        if len(chosen) == count:
            return chosen
    raise AssertionError("tenant too small for the test")


# ------------------------------------------------------------------ initial sync


def test_initial_sync_returns_every_user_once_with_absolute_links_then_a_delta_link(
    service: DeltaService, tenant: Tenant
) -> None:
    pages = list(_pages(service, f"{ORIGIN}/v1.0/users/delta?$select={SELECT}&$top=64"))
    assert len(pages) == 5  # 300 users, 64 a page
    assert [len(page["value"]) for page in pages] == [64, 64, 64, 64, 44]
    ids = [user["id"] for page in pages for user in page["value"]]
    assert sorted(ids) == tenant.ids_sorted() and len(set(ids)) == 300
    for page in pages[:-1]:
        link = page["@odata.nextLink"]
        assert link.startswith(f"{ORIGIN}/v1.0/users/delta?$skiptoken=")
        assert "$select" not in link and "$top" not in link  # the options travel inside the token
    assert pages[-1]["@odata.deltaLink"].startswith(f"{ORIGIN}/v1.0/users/delta?$deltatoken=")
    assert pages[0]["@odata.context"] == f"{ORIGIN}/v1.0/$metadata#users(id,{SELECT})"
    for user in (user for page in pages for user in page["value"]):
        assert set(user) == {"id", *SELECT.split(",")}
        stored = tenant.get_user(user["id"])
        assert user == {key: stored[key] for key in user}


def test_delta_link_without_changes_returns_nothing_and_a_new_delta_link(service: DeltaService) -> None:
    delta_link = _initial(service)
    changes, next_link = _round(service, delta_link)
    assert changes == {}
    assert next_link.startswith(f"{ORIGIN}/v1.0/users/delta?$deltatoken=")


def test_top_is_clamped_to_999_and_defaults_to_100() -> None:
    service = DeltaService(generate_tenant(1200, seed=3))
    assert len(_page(service, f"{ORIGIN}/v1.0/users/delta?$top=5000")["value"]) == 999
    assert len(_page(service, f"{ORIGIN}/v1.0/users/delta")["value"]) == 100


# ----------------------------------------------------------------------- changes


def test_delta_link_returns_exactly_the_changes_with_removed_reasons_and_nulls(
    service: DeltaService, tenant: Tenant
) -> None:
    delta_link = _initial(service)
    (cleared,) = _leaf_members(tenant, 1, lambda user: user["mobilePhone"])
    disabled, renamed, hard, soft, untracked = _leaf_members(tenant, 5, exclude=[cleared])
    tenant.update_user(cleared, mobilePhone=None)
    tenant.update_user(disabled, accountEnabled=False)
    tenant.update_user(renamed, displayName="Renamed Person")
    tenant.delete_user(hard)
    tenant.soft_delete_user(soft)
    tenant.update_user(untracked, employeeId="999999")  # not $select-ed: Graph does not report it
    tenant.update_user(renamed, department=tenant.get_user(renamed)["department"])  # no actual change
    added = tenant.add_user({"userPrincipalName": "new.hire@contoso.example", "displayName": "New Hire"})

    changes, _ = _round(service, delta_link)
    assert set(changes) == {cleared, disabled, renamed, hard, soft, added}
    assert changes[hard] == {"id": hard, "@removed": {"reason": "deleted"}}
    assert changes[soft] == {"id": soft, "@removed": {"reason": "changed"}}
    for object_id in (cleared, disabled, renamed, added):
        stored = tenant.get_user(object_id)
        assert changes[object_id] == {"id": object_id, **{key: stored[key] for key in SELECT.split(",")}}
    assert "mobilePhone" in changes[cleared] and changes[cleared]["mobilePhone"] is None
    assert changes[disabled]["accountEnabled"] is False
    assert changes[added]["displayName"] == "New Hire" and changes[added]["accountEnabled"] is None


def test_without_select_every_property_is_tracked_but_default_properties_are_returned(
    service: DeltaService, tenant: Tenant
) -> None:
    _, delta_link = _round(service, f"{ORIGIN}/v1.0/users/delta")
    (user,) = _leaf_members(tenant, 1)
    tenant.update_user(user, accountEnabled=False)
    changes, _ = _round(service, delta_link)
    assert set(changes) == {user}
    assert "accountEnabled" not in changes[user]  # not a default property, like Graph
    assert "displayName" in changes[user] and "businessPhones" in changes[user]


def test_return_minimal_returns_only_changed_properties_nulls_included(service: DeltaService, tenant: Tenant) -> None:
    delta_link = _initial(service)
    (cleared,) = _leaf_members(tenant, 1, lambda user: user["mobilePhone"])
    twice, gone = _leaf_members(tenant, 2, exclude=[cleared])
    tenant.update_user(cleared, mobilePhone=None)
    tenant.update_user(twice, displayName="First Change")
    tenant.update_user(twice, accountEnabled=False)
    tenant.update_user(twice, displayName="Second Change")
    tenant.soft_delete_user(gone)
    added = tenant.add_user({"userPrincipalName": "minimal@contoso.example", "mobilePhone": "+1 555"})

    changes, _ = _round(service, delta_link, minimal=True)
    assert changes[cleared] == {"id": cleared, "mobilePhone": None}
    assert changes[twice] == {"id": twice, "displayName": "Second Change", "accountEnabled": False}
    assert changes[gone] == {"id": gone, "@removed": {"reason": "changed"}}
    # A user new since the token has nothing to compare with: all selected properties.
    assert changes[added] == {
        "id": added,
        "displayName": None,
        "mobilePhone": "+1 555",
        "accountEnabled": None,
        "department": None,
    }
    full, _ = _round(service, delta_link, minimal=False)
    assert set(full[twice]) == {"id", *SELECT.split(",")}


def test_replayed_token_returns_the_same_changes_again_and_newer_ones(service: DeltaService, tenant: Tenant) -> None:
    first_token = _initial(service)
    a, b = _leaf_members(tenant, 2)
    tenant.update_user(a, displayName="Changed A")
    round_one, second_token = _round(service, first_token)
    assert set(round_one) == {a}
    replay, _ = _round(service, first_token)
    assert replay == round_one

    tenant.update_user(b, accountEnabled=False)
    round_two, _ = _round(service, second_token)
    assert set(round_two) == {b}  # the token carries on from where round one ended
    everything, _ = _round(service, first_token)
    assert set(everything) == {a, b}


def test_a_change_round_pages_with_top_and_reports_each_user_once(service: DeltaService, tenant: Tenant) -> None:
    _, delta_link = _round(service, f"{ORIGIN}/v1.0/users/delta?$select=displayName&$top=7")
    targets = _leaf_members(tenant, 50)
    for n, object_id in enumerate(targets):
        tenant.update_user(object_id, displayName=f"Round {n}")
    for object_id in targets[:10]:  # changed twice: still once in the round
        tenant.update_user(object_id, displayName="Again")
    pages = list(_pages(service, delta_link))
    assert len(pages) == 8 and all(len(page["value"]) == 7 for page in pages[:-1])
    changes = {user["id"]: user for page in pages for user in page["value"]}
    assert sum(len(page["value"]) for page in pages) == len(changes) == 50
    assert set(changes) == set(targets)
    assert all(changes[i]["displayName"] == "Again" for i in targets[:10])


def test_changes_made_during_a_round_come_in_the_next_round(service: DeltaService, tenant: Tenant) -> None:
    first = _page(service, f"{ORIGIN}/v1.0/users/delta?$select=displayName&$top=100")
    served = first["value"][0]["id"]
    tenant.update_user(served, displayName="Changed Mid-Sync")
    rest, delta_link = _round(service, first["@odata.nextLink"])
    assert served not in rest
    changes, _ = _round(service, delta_link)
    assert changes == {served: {"id": served, "displayName": "Changed Mid-Sync"}}


def test_restored_user_comes_back_whole(service: DeltaService, tenant: Tenant) -> None:
    (user,) = _leaf_members(tenant, 1)
    tenant.soft_delete_user(user)
    delta_link = _initial(service)
    tenant.restore_user(user)
    changes, _ = _round(service, delta_link, minimal=True)
    stored = tenant.get_user(user)
    assert changes == {user: {"id": user, **{key: stored[key] for key in SELECT.split(",")}}}


def test_manager_is_reported_as_manager_delta_only_when_selected(service: DeltaService, tenant: Tenant) -> None:
    initial, delta_link = _round(service, f"{ORIGIN}/v1.0/users/delta?$select=displayName,manager&$top=999")
    manager_type = "#microsoft.graph.user"
    for object_id, user in initial.items():
        manager = tenant.manager_of(object_id)
        if manager is None:
            assert "manager@delta" not in user
        else:
            assert user["manager@delta"] == [{"@odata.type": manager_type, "id": manager}]
    assert all("manager@delta" not in user for user in _round(service, f"{ORIGIN}/v1.0/users/delta")[0].values())

    moved, orphan_manager = _leaf_members(tenant, 2)
    orphan = tenant.add_user({"userPrincipalName": "orphan@contoso.example"}, manager_id=orphan_manager)
    mid_delta = _round(service, delta_link)[1]
    new_manager = tenant.manager_of(orphan_manager)
    assert new_manager is not None and new_manager != tenant.manager_of(moved)
    tenant.update_user(moved, manager_id=new_manager)
    tenant.delete_user(orphan_manager)  # orphan loses its manager

    changes, _ = _round(service, mid_delta, minimal=True)
    assert changes[moved] == {"id": moved, "manager@delta": [{"@odata.type": manager_type, "id": new_manager}]}
    assert changes[orphan] == {
        "id": orphan,
        "manager@delta": [{"@odata.type": manager_type, "id": orphan_manager, "@removed": {"reason": "deleted"}}],
    }
    assert changes[orphan_manager] == {"id": orphan_manager, "@removed": {"reason": "deleted"}}


def test_latest_token_skips_the_initial_sync(service: DeltaService, tenant: Tenant) -> None:
    page = _page(service, f"{ORIGIN}/v1.0/users/delta?$deltatoken=latest&$select=displayName")
    assert page["value"] == [] and "@odata.deltaLink" in page
    (user,) = _leaf_members(tenant, 1)
    tenant.update_user(user, displayName="After Latest")
    changes, _ = _round(service, page["@odata.deltaLink"])
    assert changes == {user: {"id": user, "displayName": "After Latest"}}


# ------------------------------------------------------------------------ tokens


def test_token_older_than_max_age_is_410_and_younger_is_fine(service: DeltaService, clock: Clock) -> None:
    delta_link = _initial(service)
    clock.now += timedelta(days=7).total_seconds()
    _round(service, delta_link)  # exactly seven days: still valid
    clock.now += 1
    with pytest.raises(GraphError) as gone:
        _page(service, delta_link)
    assert gone.value.status == 410 and gone.value.code == "syncStateNotFound"

    service.max_age = timedelta(days=30)
    _round(service, delta_link)
    service.max_age = timedelta(hours=1)
    next_link = _page(service, f"{ORIGIN}/v1.0/users/delta?$top=10")["@odata.nextLink"]
    clock.now += 3601
    with pytest.raises(GraphError) as gone:  # a nextLink of an abandoned round expires too
        _page(service, next_link)
    assert gone.value.status == 410


def test_expire_all_voids_every_token_but_a_new_sync_works(service: DeltaService) -> None:
    delta_link = _initial(service)
    next_link = _page(service, f"{ORIGIN}/v1.0/users/delta?$top=10")["@odata.nextLink"]
    service.expire_all()
    for link in (delta_link, next_link):
        with pytest.raises(GraphError) as gone:
            _page(service, link)
        assert gone.value.status == 410 and gone.value.code in ("resyncRequired", "syncStateNotFound")
    _round(service, _initial(service))


def test_token_from_another_directory_is_410(service: DeltaService) -> None:
    delta_link = _initial(service)
    other = DeltaService(generate_tenant(300, seed=7))  # same seed, but a rebuilt directory
    with pytest.raises(GraphError) as gone:
        _page(other, delta_link)
    assert gone.value.status == 410


@pytest.mark.parametrize(
    "query",
    [
        "$select=shoeSize",
        "$top=0",
        "$top=abc",
        "$filter=accountEnabled eq true",
        "$expand=manager",
        "$skiptoken=garbage",
        "$deltatoken=emudelta1.bm90LWpzb24",
    ],
)
def test_bad_options_and_tokens_are_400(service: DeltaService, query: str) -> None:
    with pytest.raises(GraphError) as error:
        _page(service, f"{ORIGIN}/v1.0/users/delta?{query}")
    assert error.value.status == 400


def test_options_cannot_be_changed_once_tracking(service: DeltaService) -> None:
    delta_link = _initial(service)
    with pytest.raises(GraphError) as error:
        _page(service, f"{delta_link}&$select=displayName")
    assert error.value.status == 400
