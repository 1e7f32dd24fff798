"""What only the SCIM target faces: a fair server, throttling, refused writes, a wrong token, two owners.

Every test talks HTTP to a real scim2-server (`scim_test_server`); the rule scenarios common to both
targets are in `test_rules_both_sinks.py`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from scim_test_server import ScimTestServer
from synced_tenant import valid_leaves

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"

pytestmark = pytest.mark.integration


def _failed_task(tenant: Any, task: str) -> dict[str, Any]:
    (outcome,) = [t for t in tenant.report()["tasks"] if t["task"] == task]
    assert outcome["state"] == "failed"
    return outcome


def test_the_test_server_passes_an_rfc7644_checker() -> None:
    """scim2-tester's discovery and CRUD checks: the stand-in answers as RFC 7643/7644 say a server must."""
    import httpx2
    from scim2_client.engines.httpx2 import SyncSCIMClient
    from scim2_tester import Status, check_server

    with ScimTestServer() as server:
        headers = {"Authorization": f"Bearer {server.token}"}
        with httpx2.Client(base_url=server.base_url + "/", headers=headers) as http:
            results = check_server(SyncSCIMClient(http), resource_types=["User"])
    statuses = {r.status for r in results}
    failed = [(r.title, r.reason) for r in results if r.status in (Status.ERROR, Status.CRITICAL)]
    assert len(results) >= 20 and Status.SUCCESS in statuses
    assert failed == []


def test_a_body_the_models_reject_never_leaves() -> None:
    """The sink's writes are validated by scim2-models before they are sent."""
    from frankli_sync.sinks.scim_http import ScimEndpoint
    from frankli_sync.sources.graph import RetryPolicy
    from pydantic import ValidationError

    with ScimTestServer() as server:
        endpoint = ScimEndpoint("frankli_test", server.base_url, server.token, RetryPolicy(), concurrency=2)
        try:
            with pytest.raises(ValidationError):
                endpoint.create({"userName": "a@contoso.example", "emails": [{"value": {"not": "text"}}]})
            with pytest.raises(ValidationError):
                endpoint.patch("some-id", [{"op": "explode", "path": "title", "value": "x"}])
        finally:
            endpoint.close()
        assert [r.method for r in server.requests if r.method != "GET"] == []


def test_throttling_is_waited_out_and_a_day_long_retry_after_stops_the_load(make_tenant) -> None:
    tenant = make_tenant(users=40, seed=31, target="scim")
    tenant.scim.throttle(5, retry_after="1", methods=("POST",))
    tenant.run()
    refused = [r for r in tenant.scim.requests if r.status == 429]
    assert len(refused) == 5
    assert len(tenant.people()) == len([a for a in tenant.audit() if a["action"] == "create"])

    moved = [tenant.directory.get_user(i) for i in valid_leaves(tenant.directory)[:6]]
    for user in moved:
        tenant.directory.update_user(user["id"], jobTitle="Night Shift Lead")
    tenant.scim.throttle(1, retry_after="86400", methods=("PATCH",), after=3)
    tenant.run(expect="failed")
    failure = _failed_task(tenant, "load_upserts")
    assert "Retry-After: 86400" in failure["message"]
    assert "target.max_retry_after_seconds" in failure["message"]
    written = {i for i, p in tenant.people().items() if p["role"] == "Night Shift Lead"}
    assert 3 <= len(written) < 6, "the throttled user's title was not written"
    audited = {a["external_id"] for a in tenant.audit(tenant.runs[-1].run_id) if a["action"] == "update"}
    assert audited == written, "every write that went through is audited, though the load stopped"

    tenant.run()  # the next run writes what the stopped one could not
    assert all(tenant.people()[u["id"]]["role"] == "Night Shift Lead" for u in moved)


def test_a_create_whose_answer_was_lost_is_not_made_twice_nor_reported_failed(make_tenant) -> None:
    """The server applied three POSTs but the answers came back 502: the retries meet 409 (the userName is
    taken) and find the user carrying the very Entra object id they sent, so each counts as created once."""
    tenant = make_tenant(users=40, seed=36, target="scim")
    tenant.scim.lose_answers(3)
    tenant.run()
    posts = [r for r in tenant.scim.requests if r.method == "POST"]
    lost = [r.body["userName"] for r in posts if r.status == 502]
    assert len(lost) == 3
    assert sorted(r.body["userName"] for r in posts if r.status == 409) == sorted(lost)
    assert [a for a in tenant.audit() if a["action"] == "failed"] == []
    created = [a["external_id"] for a in tenant.audit() if a["action"] == "create"]
    assert len(created) == len(set(created)) == len(tenant.people()) == len(tenant.scim.users())
    assert tenant.report()["counts"].get("failed") is None


def test_a_server_answering_creates_with_less_than_it_was_sent_is_listed_again(make_tenant) -> None:
    """A create answered with id and userName only: the load's copy of the users is not kept, so the next run
    lists what Frankli really holds instead of taking the missing attributes for cleared ones."""
    tenant = make_tenant(users=40, seed=40, target="scim")
    tenant.scim.answer_minimally()
    tenant.run()
    people = tenant.people()
    since = len(tenant.scim.requests)
    (user,) = [tenant.directory.get_user(i) for i in valid_leaves(tenant.directory)[:1]]
    tenant.directory.update_user(user["id"], jobTitle="Listed Again")
    tenant.run()
    assert [r for r in tenant.scim.requests[since:] if "startIndex" in r.query], "the endpoint was listed"
    (patch,) = [r for r in tenant.scim.requests[since:] if r.method in ("POST", "PATCH")]
    assert patch.body["Operations"] == [{"op": "replace", "path": "title", "value": "Listed Again"}]
    assert tenant.people() == {**people, user["id"]: {**people[user["id"]], "role": "Listed Again"}}


def test_a_409_for_someone_else_holding_the_username_stays_a_conflict() -> None:
    from frankli_sync.sinks.scim_http import ScimEndpoint, WriteFailure
    from frankli_sync.sources.graph import RetryPolicy

    with ScimTestServer() as server:
        server.add_user({"userName": "taken@contoso.example", "externalId": "another-object", "active": True})
        endpoint = ScimEndpoint("frankli_test", server.base_url, server.token, RetryPolicy(), concurrency=1)
        try:
            body = {"schemas": [CORE], "userName": "taken@contoso.example", "externalId": "this-object"}
            result = endpoint.create(body)
        finally:
            endpoint.close()
        assert isinstance(result, WriteFailure) and result.status == 409, result
        assert [u["externalId"] for u in server.users().values()] == ["another-object"]


def test_a_refused_create_is_tried_again_by_the_next_run_though_nothing_changed(make_tenant) -> None:
    """A run after refusals is never quiet: it reads the endpoint, plans in full and sends the refused user."""
    tenant = make_tenant(users=40, seed=39, target="scim", target_settings={"max_failure_share": 0.05})
    (leaver,) = [tenant.directory.get_user(i) for i in valid_leaves(tenant.directory)[:1]]
    tenant.scim.refuse(leaver["userPrincipalName"])
    tenant.run()
    assert leaver["id"] not in tenant.people()
    tenant.scim.refuse()  # Frankli accepts it now; nothing changed in Entra
    tenant.run()
    basis = tenant.report()["basis"]
    assert basis["mode"] == "full" and basis.get("frankli_read", True), basis
    assert [a["action"] for a in tenant.audit(tenant.runs[-1].run_id) if a["external_id"] == leaver["id"]] == ["create"]
    assert leaver["id"] in tenant.people()
    since = len(tenant.scim.requests)
    tenant.run()
    assert tenant.scim.requests[since:] == [], "once nothing is refused, a run with no change is quiet again"


def test_refused_writes_are_audited_and_a_high_share_fails_the_load(make_tenant) -> None:
    tenant = make_tenant(users=60, seed=32, target="scim", target_settings={"max_failure_share": 0.05})
    leaves = [tenant.directory.get_user(i) for i in valid_leaves(tenant.directory)]
    tenant.scim.refuse(leaves[0]["userPrincipalName"])
    tenant.run()  # one refusal of ~55 writes: under 5%
    failed = [a for a in tenant.audit() if a["action"] == "failed"]
    assert [(a["external_id"], a["details"]["action"], a["details"]["status"]) for a in failed] == [
        (leaves[0]["id"], "create", 400)
    ]
    assert tenant.report()["counts"]["failed"] == 1
    assert leaves[0]["id"] not in tenant.people()

    tenant.scim.refuse(*(u["userPrincipalName"] for u in leaves[1:8]))
    for user in leaves[1:8]:
        tenant.directory.update_user(user["id"], jobTitle="Refused Title")
    addresses = [f"x{n}{u['userPrincipalName']}" for n, u in enumerate(leaves[1:4])]
    for address, user in zip(addresses, leaves[1:4], strict=True):
        tenant.directory.add_user({**user, "id": None, "userPrincipalName": address, "mail": address})
    tenant.scim.refuse(leaves[0]["userPrincipalName"], *addresses)
    tenant.run(expect="failed")  # 4 refused creates (the first one again) + 7 updates: far over 5%
    failure = _failed_task(tenant, "load_upserts")
    assert "target.max_failure_share" in failure["message"] and "refused 4 of 11" in failure["message"]
    people = tenant.people()
    assert all(people[u["id"]]["role"] == "Refused Title" for u in leaves[1:8]), "accepted writes stay"


def test_a_wrong_token_stops_at_once_without_showing_it(make_tenant, monkeypatch) -> None:
    tenant = make_tenant(users=30, seed=33, target="scim")
    secret = "not-the-token-" + "s3cr3t"
    wrong = {"conn_type": "http", "host": tenant.scim.base_url, "password": secret}
    monkeypatch.setenv("AIRFLOW_CONN_FRANKLI_ACME", json.dumps(wrong))
    tenant.run(expect="failed")
    failure = _failed_task(tenant, "transform")
    assert "HTTP 401" in failure["message"] and "token" in failure["message"]
    assert secret not in failure["message"]
    assert [r.method for r in tenant.scim.requests if r.method != "GET"] == []


def test_two_sources_on_one_endpoint_the_second_stops(make_tenant, monkeypatch) -> None:
    first = make_tenant(users=30, seed=34, target="scim", name="first")
    first.run()
    second = make_tenant(users=30, seed=35, name="second", entra_tenant_id="other-tenant", target="scim")
    second.scim.stop()
    second.scim = first.scim  # the same Frankli organisation (endpoint) behind both tenants
    # One Airflow deployment: one staging database (the SCIM ledger) for every tenant.
    shared_staging = {"conn_type": "generic", "extra": {"sqlalchemy_url": f"sqlite:///{first.workdir / 'staging.db'}"}}
    monkeypatch.setenv("AIRFLOW_CONN_FRANKLI_SECOND", json.dumps(first.scim.connection()))
    monkeypatch.setenv("AIRFLOW_CONN_STAGING_SECOND", json.dumps(shared_staging))
    before = first.people()
    since = len(first.scim.requests)
    second.run(expect="failed")
    message = _failed_task(second, "transform")["message"]
    assert "is synced from 'test-tenant'" in message and "tenant second" in message
    assert "the sync's ledger in the staging database" in message, "where the owner is recorded, for SCIM"
    assert first.people() == before
    assert [r for r in first.scim.requests[since:] if r.method != "GET"] == []


def test_a_listing_that_ends_early_plans_nothing(make_tenant) -> None:
    """Frankli's listing stops short of its own total: the sync must not take the missing users for absent ones."""
    tenant = make_tenant(users=60, seed=36, target="scim", target_settings={"page_size": 20})
    tenant.run()
    before = tenant.people()
    tenant.scim.end_listings_after(20)  # 20 of ~55 users listed, totalResults still ~55
    since = len(tenant.scim.requests)
    tenant.run(conf={"full_sync": True}, expect="failed")  # a full plan reads every Frankli user
    message = _failed_task(tenant, "transform")["message"]
    assert "not complete" in message and "nothing is planned" in message
    assert [r for r in tenant.scim.requests[since:] if r.method != "GET"] == [], "no create for the unlisted users"
    tenant.scim.end_listings_after(None)
    tenant.run()
    assert tenant.people() == before


@pytest.mark.parametrize("ledger", ["sqlite", "postgres"])
def test_one_session_per_endpoint_at_a_time(ledger: str, tmp_path, request) -> None:
    """Loads of one endpoint never interleave (a backfill runs several): the second waits for the first."""
    import threading
    import time

    from frankli_sync.connections import make_engine
    from frankli_sync.sinks.scim_sink import endpoint_lock

    url = request.getfixturevalue("postgres_url") if ledger == "postgres" else f"sqlite:///{tmp_path / 'staging.db'}"
    engine = make_engine(url)
    events: list[str] = []
    held = threading.Event()

    def first() -> None:
        with endpoint_lock(engine, "scim:http://frankli.example/v2"):
            events.append("first in")
            held.set()
            time.sleep(0.5)
            events.append("first out")

    def second() -> None:
        held.wait(10)
        with endpoint_lock(engine, "scim:http://frankli.example/v2"):
            events.append("second in")
        with endpoint_lock(engine, "scim:http://other.example/v2"):
            events.append("other endpoint")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    engine.dispose()
    assert events == ["first in", "first out", "second in", "other endpoint"]


START_DATE = "urn:ietf:params:scim:schemas:extension:frankli:2.0:User:startDate"


def _own_server(tenant: Any, monkeypatch: pytest.MonkeyPatch, server: ScimTestServer) -> None:
    """Point the tenant at `server` instead of the one `make_tenant` started."""
    tenant.scim.stop()
    tenant.scim = server
    monkeypatch.setenv(f"AIRFLOW_CONN_FRANKLI_{tenant.name.upper()}", json.dumps(server.connection()))


def test_the_start_date_goes_into_the_extension_attribute_the_endpoint_declares(make_tenant, monkeypatch) -> None:
    from scim_test_server import FRANKLI_EXTENSION

    settings = {"start_date_attribute": START_DATE}
    tenant = make_tenant(users=40, seed=37, target="scim", target_settings=settings)
    with ScimTestServer(start_date=True) as server:
        _own_server(tenant, monkeypatch, server)
        one, two = (tenant.directory.get_user(i) for i in valid_leaves(tenant.directory)[:2])
        assert one.get("employeeHireDate") and two.get("employeeHireDate")
        tenant.run()
        stored = server.users()
        assert stored[one["userPrincipalName"]][FRANKLI_EXTENSION]["startDate"][:10] == one["employeeHireDate"][:10]
        posts = [r.body for r in server.requests if r.method == "POST"]
        assert all(FRANKLI_EXTENSION in b["schemas"] for b in posts if FRANKLI_EXTENSION in b)
        assert sum(FRANKLI_EXTENSION in b for b in posts) >= len(posts) - 5, "nearly everyone has a hire date"

        tenant.directory.update_user(one["id"], employeeHireDate=None)
        tenant.directory.update_user(two["id"], employeeHireDate="2024-02-29T00:00:00Z")
        since = len(server.requests)
        tenant.run()
        operations = [r.body["Operations"] for r in server.requests[since:] if r.method == "PATCH"]
        assert sorted(operations, key=str) == [
            [{"op": "remove", "path": START_DATE}],
            [{"op": "replace", "path": START_DATE, "value": "2024-02-29T00:00:00Z"}],
        ]
        stored = server.users()
        assert "startDate" not in (stored[one["userPrincipalName"]].get(FRANKLI_EXTENSION) or {})
        assert stored[two["userPrincipalName"]][FRANKLI_EXTENSION]["startDate"].startswith("2024-02-29")

        since = len(server.requests)
        tenant.run()
        assert server.requests[since:] == [], "a start date written is read back equal: no request"


def test_a_start_date_attribute_the_endpoint_does_not_declare_stops_before_writing(make_tenant) -> None:
    settings = {"start_date_attribute": START_DATE}
    tenant = make_tenant(users=30, seed=38, target="scim", target_settings=settings)  # standard schemas only
    tenant.run(expect="failed")
    message = _failed_task(tenant, "load_upserts")["message"]
    assert "target.start_date_attribute" in message and START_DATE in message and "nothing was written" in message
    assert [r for r in tenant.scim.requests if r.method != "GET"] == []
    assert tenant.scim.users() == {}


def test_a_user_changed_in_frankli_since_it_was_read_is_not_written_over() -> None:
    """Writes carry the version they were planned against (If-Match): an admin's deactivation in between
    is answered 412 and kept, not undone by a restore planned before it."""
    from frankli_sync.sinks.scim_http import ScimEndpoint, WriteFailure
    from frankli_sync.sources.graph import RetryPolicy

    with ScimTestServer() as server:
        read = server.add_user({"userName": "ann@contoso.example", "externalId": "obj-ann", "active": True})
        server.patch_user(read["id"], [{"op": "replace", "path": "active", "value": False}])  # the admin
        endpoint = ScimEndpoint("frankli_test", server.base_url, server.token, RetryPolicy(), concurrency=1)
        try:
            restore = [{"op": "replace", "path": "active", "value": True}]
            refused = endpoint.patch(read["id"], restore, version=read["meta"]["version"])
            current = server.users()["ann@contoso.example"]
            applied = endpoint.patch(read["id"], restore, version=current["meta"]["version"])
        finally:
            endpoint.close()
        assert isinstance(refused, WriteFailure) and refused.status == 412 and "changed in Frankli" in refused.detail
        patches = [r for r in server.requests if r.method == "PATCH"]
        assert [r.status for r in patches] == [412, 204] and patches[0].body["Operations"] == restore
        assert isinstance(applied, dict) and applied["active"] is True, "the version read now is written"
