"""The ends_early fault and $count validation, in-process: rule validation, selectors, and the delta watermark.

ends_early is the one fault a retry cannot notice (a clean 200 that ends a listing), so
its rules must validate like the others, fire under every selector, leave requests that
are not listings alone, and end a delta round with a deltaLink that keeps the directory
consistent: later changes come, the users the round never served do not.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from graph_emulator.delta import DeltaService
from graph_emulator.errors import GraphError
from graph_emulator.faults import FaultInjector, FaultPlan, FaultRule
from graph_emulator.query import parse_count, parse_options
from graph_emulator.store import Tenant
from graph_emulator.tenant import generate_tenant

pytestmark = pytest.mark.unit

ORIGIN = "http://emulator.test"
DELTA = "/v1.0/users/delta"


def _page(service: DeltaService, url: str, ends_early: bool = False) -> dict[str, Any]:
    parts = urlsplit(url)
    return service.page(ORIGIN, parts.path, parts.query, False, ends_early=ends_early)


def _round(service: DeltaService, url: str) -> tuple[list[str], str]:
    """Ids of a whole round (no faults) and its deltaLink."""
    ids: list[str] = []
    while True:
        page = _page(service, url)
        ids += [user["id"] for user in page["value"]]
        if "@odata.deltaLink" in page:
            return ids, page["@odata.deltaLink"]
        url = page["@odata.nextLink"]


# ------------------------------------------------------------------ rules


@pytest.mark.parametrize(
    "fields",
    [
        {"ends_early": True, "status": 503},
        {"ends_early": True, "reset": True},
        {"ends_early": True, "retry_after": 2},
        {"ends_early": "yes"},
        {"ends_early": 1},
        {"ends_early": True, "every": 2, "ordinals": (1,)},
        {"ends_early": False},
    ],
)
def test_invalid_ends_early_rules_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FaultRule(**fields)


def test_ends_early_rule_round_trips_as_json_and_counts_as_its_own_kind() -> None:
    data = {"seed": 4, "rules": [{"path_prefix": DELTA, "ends_early": True, "ordinals": [2], "delay": 0.5}]}
    plan = FaultPlan.from_dict(data)
    (rule,) = plan.rules
    assert rule.ends_early and rule.kind == "ends_early" and rule.delay == 0.5
    assert FaultPlan.from_dict(plan.to_dict()) == plan
    assert FaultRule(status=429).kind == "status_429" and FaultRule(reset=True).kind == "reset"


@pytest.mark.parametrize(
    ("selector", "fired"),
    [
        ({"every": 3}, [3, 6]),
        ({"ordinals": (2, 5)}, [2, 5]),
        ({"probability": 1.0}, [1, 2, 3, 4, 5, 6]),
        ({"probability": 0.0}, []),
        ({}, [1, 2, 3, 4, 5, 6]),
    ],
)
def test_ends_early_fires_under_every_selector(selector: dict[str, Any], fired: list[int]) -> None:
    injector = FaultInjector(FaultPlan((FaultRule(path_prefix=DELTA, ends_early=True, **selector),)))
    assert [n for n in range(1, 7) if injector.decide(DELTA) is not None] == fired
    assert injector.injected_by_kind() == ({"ends_early": len(fired)} if fired else {})


def test_seeded_probability_is_reproducible() -> None:
    def run() -> list[bool]:
        plan = FaultPlan((FaultRule(path_prefix=DELTA, ends_early=True, probability=0.5),), seed=9)
        injector = FaultInjector(plan)
        return [injector.decide(DELTA) is not None for _ in range(40)]

    draws = run()
    assert draws == run() and 0 < sum(draws) < 40


def test_requests_that_are_not_listings_neither_count_nor_fire_ends_early() -> None:
    plan = FaultPlan(
        (
            FaultRule(path_prefix="/v1.0/users", ends_early=True, ordinals=(2,)),
            FaultRule(path_prefix="/v1.0/users", status=503, ordinals=(2,)),
        )
    )
    injector = FaultInjector(plan)
    assert injector.decide("/v1.0/users") is None  # both rules: 1st
    status_rule = injector.decide("/v1.0/users/$count", listing=False)  # the status rule's 2nd; not ends_early's
    assert status_rule is not None and status_rule.status == 503
    early = injector.decide("/v1.0/users")  # ends_early's 2nd
    assert early is not None and early.ends_early
    assert injector.injected_by_kind() == {"ends_early": 1, "status_503": 1}


# ------------------------------------------------------------------ the delta watermark


@pytest.fixture
def tenant() -> Tenant:
    return generate_tenant(400, seed=17)


@pytest.fixture
def service(tenant: Tenant) -> DeltaService:
    return DeltaService(tenant)


def test_an_early_end_hands_out_the_watermark_a_complete_round_would(service: DeltaService, tenant: Tenant) -> None:
    first = _page(service, f"{ORIGIN}{DELTA}?$top=100&$select=jobTitle")
    served = {user["id"] for user in first["value"]}
    missed = sorted(set(tenant.ids_sorted()) - served)
    # Changes made while the round is being read, after its first page: a complete round
    # would report them in the next one, so an early end must not lose them either.
    during = missed[0]
    tenant.update_user(during, jobTitle="Changed during the round")
    ended = _page(service, first["@odata.nextLink"], ends_early=True)
    assert ended["value"] == [] and "@odata.nextLink" not in ended
    delta_link = ended["@odata.deltaLink"]
    assert delta_link.startswith(f"{ORIGIN}{DELTA}?$deltatoken=")

    changes, next_delta = _round(service, delta_link)
    assert changes == [during]  # the change during the round; the other 299 missed users stay missed
    after = missed[1]
    tenant.update_user(after, jobTitle="Changed later")
    assert _round(service, delta_link)[0] == [during, after]  # tokens replay
    assert _round(service, next_delta)[0] == [after]


def test_an_early_end_on_the_first_page_reads_nothing_and_still_works(service: DeltaService, tenant: Tenant) -> None:
    ended = _page(service, f"{ORIGIN}{DELTA}?$select=displayName", ends_early=True)
    assert ended["value"] == []
    assert ended["@odata.context"] == f"{ORIGIN}/v1.0/$metadata#users(id,displayName)"
    assert _round(service, ended["@odata.deltaLink"])[0] == []
    (object_id,) = tenant.ids_sorted()[:1]
    tenant.update_user(object_id, displayName="Renamed")
    assert _round(service, ended["@odata.deltaLink"])[0] == [object_id]


def test_an_early_end_of_a_change_round_skips_the_rest_of_that_round(service: DeltaService, tenant: Tenant) -> None:
    _, delta_link = _round(service, f"{ORIGIN}{DELTA}?$top=5&$select=jobTitle")
    changed = tenant.ids_sorted()[:12]
    for object_id in changed:
        tenant.update_user(object_id, jobTitle="New")
    first = _page(service, delta_link)
    assert [user["id"] for user in first["value"]] == changed[:5]
    ended = _page(service, first["@odata.nextLink"], ends_early=True)
    assert ended["value"] == []
    assert _round(service, ended["@odata.deltaLink"])[0] == []


def test_early_end_still_validates_the_token(service: DeltaService) -> None:
    first = _page(service, f"{ORIGIN}{DELTA}?$top=100")
    service.expire_all()
    with pytest.raises(GraphError) as error:
        _page(service, first["@odata.nextLink"], ends_early=True)
    assert error.value.status == 410


# ------------------------------------------------------------------ $count validation


@pytest.mark.parametrize("query", ["$count=true", "$count=false", "$deltatoken=latest&$count=true"])
def test_count_on_delta_is_an_unsupported_query(service: DeltaService, query: str) -> None:
    with pytest.raises(GraphError) as error:
        _page(service, f"{ORIGIN}{DELTA}?{query}")
    assert error.value.status == 400 and error.value.code == "Request_UnsupportedQuery"


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("TRUE", True), (" false ", False), ("False", False)])
def test_parse_count(raw: str, value: bool) -> None:
    assert parse_count(raw) is value


@pytest.mark.parametrize("raw", ["", "1", "yes", "truee"])
def test_parse_count_refuses_anything_but_true_or_false(raw: str) -> None:
    with pytest.raises(GraphError) as error:
        parse_count(raw)
    assert error.value.status == 400


def test_count_true_needs_eventual_and_count_false_does_not() -> None:
    with pytest.raises(GraphError) as error:
        parse_options("$count=true", collection=True)
    assert (error.value.status, error.value.code) == (400, "Request_BadRequest")
    assert error.value.message == "$count is not currently supported."
    assert parse_options("$count=true", collection=True, eventual=True).count is True
    assert parse_options("$count=false", collection=True).count is False
    with pytest.raises(GraphError):
        parse_options("$count=true", collection=False, eventual=True)  # not on a single user
