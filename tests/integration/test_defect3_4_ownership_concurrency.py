"""Issue 10, defects 3 and 4: who owns an organisation, and writes that never interleave.

Defect 3: two tenants synced into one Frankli organisation each archived the other's users.
The organisation now records the Entra tenant it is synced from; a run from any other source
stops before reading or writing anything, naming both.

Defect 4: `airflow backfill create` runs several runs at once; two `load_archives` on SQLite
both archived the same users (two archive audit rows each). Each load now holds the
organisation's lock for its whole transaction and plans after taking it; extracts of one
tenant hold the tenant's extraction lock. Both are shown here on SQLite and PostgreSQL with
loads and extracts started together from threads (each opens its own connections, as two
Celery workers would); tests/topology shows the same through a real scheduler and backfill.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from frankli_sync import pipeline
from sqlalchemy import select

SHARED_ORGANISATION = "Acme Corp"  # conftest.ORGANISATION: every make_tenant targets it


def _together(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released at the same instant; re-raise the first error."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def worker(index: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    if errors:
        raise errors[0]
    return results


def _state(tenant: Any) -> dict[str, dict[str, Any]]:
    ignored = {"updated_at"}
    return {k: {c: v for c, v in u.items() if c not in ignored} for k, u in tenant.users().items()}


def _shared_url(frankli_url: str | None, tmp_path: Any) -> str:
    return frankli_url or f"sqlite:///{tmp_path / 'shared-frankli.db'}"


# --------------------------------------------------------------------------- defect 3


def test_defect3_second_entra_tenant_cannot_write_to_an_owned_organisation(
    make_tenant, frankli_url, tmp_path, monkeypatch
) -> None:
    url = _shared_url(frankli_url, tmp_path)
    acme = make_tenant(users=60, seed=3, frankli_url=url, name="acme", entra_tenant_id="11111111-aaaa")
    globex = make_tenant(users=40, seed=4, frankli_url=url, name="globex", entra_tenant_id="22222222-bbbb")

    monkeypatch.setenv("FRANKLI_SYNC_CONFIG", str(acme.config_path))
    acme.run()
    organisation = acme.table("organisations")
    assert [(o["name"], o["source"]) for o in organisation] == [(SHARED_ORGANISATION, "11111111-aaaa")]
    before = _state(acme)
    audit_before = len(acme.audit())

    # A second deployment (its own config file) pointed at the same organisation.
    monkeypatch.setenv("FRANKLI_SYNC_CONFIG", str(globex.config_path))
    globex.run(expect="failed")
    assert _state(acme) == before, "a run from another Entra tenant wrote to the organisation"
    assert len(acme.audit()) == audit_before
    assert not any(u["status"] == "archived" for u in acme.users().values())
    assert globex.report()["incomplete_tasks"][0] == "transform", "it stops before any load"

    with pytest.raises(pipeline.OwnershipConflict) as stopped:
        globex.run_task("load_upserts")
    message = str(stopped.value)
    assert "11111111-aaaa" in message and "22222222-bbbb" in message and "globex" in message
    assert SHARED_ORGANISATION in message and "allow_mass_archive" not in message
    assert isinstance(stopped.value, pipeline.SyncStopped), "retrying cannot fix it: no task retries"
    with pytest.raises(pipeline.OwnershipConflict):
        globex.run_task("load_archives")
    assert _state(acme) == before

    # The owner keeps syncing.
    monkeypatch.setenv("FRANKLI_SYNC_CONFIG", str(acme.config_path))
    acme.run()
    assert _state(acme) == before


def test_defect3_organisation_created_before_ownership_is_claimed_by_its_first_run(make_tenant, frankli_url) -> None:
    tenant = make_tenant(users=30, seed=5, frankli_url=frankli_url)
    tenant.run()
    # An organisation from before this release: no source recorded yet.
    from frankli_sync.sinks.schema import organisations

    tenant.execute(organisations.update().values(source=None))
    tenant.run()
    assert [o["source"] for o in tenant.table("organisations")] == ["test-tenant"]


# --------------------------------------------------------------------------- defect 4


def _stage_run(tenant: Any, run_id: str) -> None:
    for step in ("extract", "validate", "transform"):
        getattr(pipeline, step)(tenant.name, run_id, {})


def test_defect4_concurrent_loads_archive_each_user_once(make_tenant, frankli_url) -> None:
    tenant = make_tenant(users=300, seed=9, frankli_url=frankli_url)
    tenant.run()
    directory = tenant.directory
    members = [u["id"] for u in directory.users_sorted() if u["userType"] == "Member" and u["accountEnabled"]]
    synced = {k for k, u in tenant.users().items() if u["status"] != "archived" and not k.startswith("email:")}
    gone = [m for m in members if m in synced][:20]
    for object_id in gone:
        directory.delete_user(object_id)

    # Two runs of the tenant (a backfill), each staged and planned, then both loads at once.
    _stage_run(tenant, "backfill__r2")
    _stage_run(tenant, "backfill__r3")
    _together(
        lambda: pipeline.load_upserts(tenant.name, "backfill__r2", {}),
        lambda: pipeline.load_upserts(tenant.name, "backfill__r3", {}),
    )
    results = _together(
        lambda: pipeline.load_archives(tenant.name, "backfill__r2", {}),
        lambda: pipeline.load_archives(tenant.name, "backfill__r3", {}),
    )
    archive_rows = [r for r in tenant.audit() if r["action"] == "archive"]
    per_user = Counter(r["external_id"] for r in archive_rows)
    assert set(per_user) == set(gone), results
    assert max(per_user.values()) == 1, f"users archived twice: {[k for k, n in per_user.items() if n > 1]}"
    users = tenant.users()
    assert {k for k, u in users.items() if u["status"] == "archived"} == set(gone)

    # One clean run finds nothing left to do: the concurrent loads left the state one run leaves.
    state = _state(tenant)
    tenant.run()
    assert _state(tenant) == state
    written = [r for r in tenant.audit(tenant.runs[-1].run_id) if r["action"] != "quarantine"]
    assert written == []


def test_defect4_same_load_started_twice_writes_once(make_tenant, frankli_url) -> None:
    """Ops clear a running task, or two workers pick up the same retry: the same run's load, twice."""
    tenant = make_tenant(users=120, seed=12, frankli_url=frankli_url)
    _stage_run(tenant, "manual__first")
    _together(*(lambda: pipeline.load_upserts(tenant.name, "manual__first", {}) for _ in range(3)))
    creates = Counter(r["external_id"] for r in tenant.audit("manual__first") if r["action"] == "create")
    assert creates and max(creates.values()) == 1
    assert len(tenant.table("organisations")) == 1, "the organisation row was created once"


def test_defect4_older_snapshot_never_overwrites_a_newer_one(make_tenant, frankli_url) -> None:
    """Serialised is not ordered: the older run of a backfill may reach the lock last."""
    tenant = make_tenant(users=80, seed=13, frankli_url=frankli_url)
    tenant.run()
    mover = next(u for u in tenant.directory.users_sorted() if u["userType"] == "Member" and u["accountEnabled"])
    _stage_run(tenant, "backfill__older")
    tenant.directory.update_user(mover["id"], city="Reykjavik")
    _stage_run(tenant, "backfill__newer")
    pipeline.load_upserts(tenant.name, "backfill__newer", {})
    assert tenant.users()[mover["id"]]["city"] == "Reykjavik"
    result = pipeline.load_upserts(tenant.name, "backfill__older", {})
    assert result["superseded"] is True
    assert pipeline.load_archives(tenant.name, "backfill__older", {})["superseded"] is True
    assert tenant.users()[mover["id"]]["city"] == "Reykjavik", "the older snapshot undid a newer change"
    assert tenant.audit("backfill__older") == []


def test_defect4_extracts_of_one_tenant_do_not_interleave(make_tenant, frankli_url) -> None:
    tenant = make_tenant(
        users=200,
        seed=14,
        frankli_url=frankli_url,
        source={"kind": "graph", "conn_id": "msgraph_acme", "page_size": 20},
    )
    tenant.run()
    _together(
        lambda: pipeline.extract(tenant.name, "backfill__e1", {}),
        lambda: pipeline.extract(tenant.name, "backfill__e2", {}),
    )
    from frankli_sync.connections import staging_engine
    from frankli_sync.staging import extract_runs

    engine = staging_engine(f"staging_{tenant.name}")
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(extract_runs).where(extract_runs.c.run_id.in_(["backfill__e1", "backfill__e2"]))
            ).mappings()
            spans = sorted((r["started_at"], r["completed_at"], r["status"]) for r in rows)
    finally:
        engine.dispose()
    assert [s[2] for s in spans] == ["complete", "complete"]
    (_, first_end, _), (second_start, _, _) = spans
    assert first_end <= second_start, f"extracts interleaved: {spans}"
