"""Values Frankli cannot store are quarantined by validation, the same way on every Frankli target.

Entra allows a 1,024-character streetAddress and any character in a city; Frankli's
`users.street_address` holds 255 characters, and PostgreSQL rejects both a longer value
and a NUL character ("\\x00") by failing the whole load transaction, while SQLite stores
them. The validation gate must hold such a user back (and name the field) so that the
rest of the tenant is synced on either backend. Frankli's SCIM API stores into the same
schema, so a SCIM target quarantines by Frankli's own column sizes too (and its audit,
kept in the sync's ledger in staging, must hold a NUL just as well).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from graph_emulator import Tenant

pytestmark = pytest.mark.integration

LONG_STREET = ("Unit 7, Block C, " * 20)[:300]
NUL_CITY = "Dub\x00lin"
SCIM_WRITES = ("POST", "PUT", "PATCH", "DELETE")


def _plain_members(directory: Tenant, count: int) -> list[dict[str, Any]]:
    """`count` valid members that manage nobody (changing them changes no one else's manager link)."""
    managing = set(directory.managers.values())
    picked = [u for u in directory.users_sorted() if Tenant.is_valid_member(u) and u["id"] not in managing]
    assert len(picked) >= count, f"tenant has only {len(picked)} suitable users, need {count}"
    return picked[:count]


def _valid_members(directory: Tenant) -> set[str]:
    return {u["id"] for u in directory.users_sorted() if Tenant.is_valid_member(u)}


def _audit(tenant: Any, action: str, audit: list[dict[str, Any]] | None = None) -> dict[str | None, dict[str, Any]]:
    """The last run's audit rows of `action` (from `audit`, else the tenant's), by external id (one each)."""
    if audit is None:
        audit = tenant.audit(tenant.runs[-1].run_id)
    rows = [r for r in audit if r["action"] == action]
    by_id = {r["external_id"]: r for r in rows}
    assert len(by_id) == len(rows), f"more than one {action!r} row for a user: {rows}"
    return by_id


def _synced(tenant: Any) -> dict[str, dict[str, Any]]:
    """Frankli's synced users as either target holds them (`SyncedTenant.people`), by Entra object id."""
    return {ext: p for ext, p in tenant.people().items() if not ext.startswith("email:")}


def _scim_writes(tenant: Any, since: int = 0) -> list[Any]:
    return [r for r in tenant.scim.requests[since:] if r.method in SCIM_WRITES]


def _ledger_audit(url: str, run_id: str) -> list[dict[str, Any]]:
    """One run's rows of the SCIM sink's audit in a ledger (staging) database other than the tenant's SQLite one."""
    from frankli_sync.sinks.schema import sync_audit
    from sqlalchemy import create_engine, select

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            query = select(sync_audit).where(sync_audit.c.run_id == run_id).order_by(sync_audit.c.id)
            return [dict(r) for r in connection.execute(query).mappings()]
    finally:
        engine.dispose()


def _fit_reasons(quarantine_row: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in quarantine_row["details"]["reasons"] if r["expectation"].startswith("fits_frankli:")]


def test_unstorable_values_are_quarantined_on_every_target(make_tenant, frankli_target: dict[str, Any]) -> None:
    # The generated tenant holds a few invalid members already; keep the gate's threshold out of the way.
    tenant = make_tenant(users=80, seed=41, thresholds={"max_invalid_share": 0.2}, **frankli_target)
    database = tenant.scim is None
    directory = tenant.directory
    long_street, nul_city, at_limit, changed, nul_upn = (u["id"] for u in _plain_members(directory, 5))

    # Day 1: one new user's streetAddress is longer than Frankli holds; another's is exactly the limit.
    directory.update_user(long_street, streetAddress=LONG_STREET)
    directory.update_user(at_limit, streetAddress="S" * 255)
    # A sign-in name with a NUL: quarantined, and its audit row (which records the UPN) must still be written.
    bad_upn = "nul\x00" + directory.get_user(nul_upn)["userPrincipalName"]
    directory.update_user(nul_upn, userPrincipalName=bad_upn, mail=bad_upn)
    tenant.run()  # on PostgreSQL a 300-character value would fail the whole load

    day1, raw_day1 = _synced(tenant), tenant.stored_users()
    assert long_street not in day1, "a user whose value Frankli cannot store must not be created"
    assert set(day1) == _valid_members(directory) - {long_street, nul_upn}, "every other valid user is synced"
    nul_row = _audit(tenant, "quarantine")[nul_upn]
    assert nul_row["email"] == bad_upn.replace("\x00", "\u2400"), "NUL is shown as ␀ in the audit"
    assert _fit_reasons(nul_row)[0]["column"] == "user_principal_name"
    assert day1[at_limit]["street_address"] == "S" * 255
    (reason,) = _fit_reasons(_audit(tenant, "quarantine")[long_street])
    assert reason["column"] == "street_address"
    assert reason["expectation"] == "fits_frankli:street_address"
    assert reason["value"].startswith("300 characters; Frankli holds at most 255")
    assert long_street in {q["object_id"] for q in tenant.report()["quarantined"]}
    assert set(_audit(tenant, "create")) == set(day1)
    if not database:  # nothing of the quarantined users was sent: one POST per synced user, none with a NUL
        posts = _scim_writes(tenant)
        assert {r.method for r in posts} == {"POST"}
        assert sorted(r.body["externalId"] for r in posts) == sorted(day1)
        assert not [r for r in posts if "\x00" in json.dumps(r.body, ensure_ascii=False)]

    # Day 2: an existing user's city gets a NUL character (and a new job title that must not land).
    directory.update_user(nul_city, city=NUL_CITY, jobTitle="Title Of A Quarantined User")
    directory.update_user(changed, jobTitle="Principal Storage Engineer")
    since = len(tenant.scim.requests) if not database else 0
    tenant.run()

    day2, raw_day2 = _synced(tenant), tenant.stored_users()
    assert day2[nul_city] == day1[nul_city], "a quarantined user is neither updated nor archived"
    assert raw_day2[nul_city] == raw_day1[nul_city], "a quarantined user was written"
    assert long_street not in day2 and nul_upn not in day2
    assert set(day2) == set(day1)
    assert day2[changed]["role"] == "Principal Storage Engineer", "the rest of the run is loaded"
    roles = {p["role"] for p in tenant.people().values()}
    assert "Title Of A Quarantined User" not in roles, "a quarantined user's values create nothing"
    if database:
        assert tenant.users()[changed]["role_id"] != raw_day1[changed]["role_id"], "the rest of the run is loaded"
        role_rows = {r["name"] for r in tenant.table("roles")}
        assert "Principal Storage Engineer" in role_rows
        assert "Title Of A Quarantined User" not in role_rows, "a quarantined user's values create nothing"
    else:  # one PATCH, of the changed user's title
        [patch] = _scim_writes(tenant, since)
        assert patch.method == "PATCH" and patch.path.endswith(f"/{raw_day2[changed]['id']}")
        assert patch.body["Operations"] == [{"op": "replace", "path": "title", "value": "Principal Storage Engineer"}]

    quarantines = _audit(tenant, "quarantine")
    (street_reason,) = _fit_reasons(quarantines[long_street])
    assert street_reason["column"] == "street_address"
    (city_reason,) = _fit_reasons(quarantines[nul_city])
    assert city_reason["column"] == "city"
    assert city_reason["expectation"] == "fits_frankli:city"
    assert "NUL character" in city_reason["value"]
    assert set(_audit(tenant, "update")) == {changed}
    assert not _audit(tenant, "create") and not _audit(tenant, "archive")


@pytest.mark.parametrize("target", ["database", "scim"])
def test_postgres_staging_keeps_what_postgres_text_cannot_hold(
    make_tenant, postgres_url: str, monkeypatch, target: str
) -> None:
    """With staging on PostgreSQL a 1,500-character value and a NUL must reach validation, not fail extract.

    The Frankli database is SQLite here; over SCIM the sync's ledger (its audit) is the PostgreSQL staging.
    """
    from frankli_sync.staging import staged_users
    from sqlalchemy import create_engine, select

    tenant = make_tenant(users=60, seed=43, target=target, thresholds={"max_invalid_share": 0.3})
    monkeypatch.setenv(
        "AIRFLOW_CONN_STAGING_ACME", json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": postgres_url}})
    )
    directory = tenant.directory
    long_street, nul_city, nul_company = (u["id"] for u in _plain_members(directory, 3))
    directory.update_user(long_street, streetAddress="x" * 1500)
    directory.update_user(nul_city, city=NUL_CITY)
    directory.update_user(nul_company, companyName="Con\x00toso")  # not mapped to Frankli: harmless
    tenant.run()

    synced = _synced(tenant)
    assert long_street not in synced and nul_city not in synced
    assert nul_company in synced
    assert set(synced) == _valid_members(directory) - {long_street, nul_city}
    audit = _ledger_audit(postgres_url, tenant.runs[-1].run_id) if target == "scim" else None
    quarantines = _audit(tenant, "quarantine", audit)
    assert _fit_reasons(quarantines[long_street])[0]["value"].startswith("1500 characters")
    assert "NUL character" in _fit_reasons(quarantines[nul_city])[0]["value"]
    assert set(_audit(tenant, "create", audit)) == set(synced)
    if target == "scim":
        assert tenant.audit() == [], "the SCIM audit is in the PostgreSQL ledger, not a SQLite one"
        assert sorted(r.body["externalId"] for r in _scim_writes(tenant)) == sorted(synced)

    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            staged = dict(
                connection.execute(
                    select(staged_users.c.object_id, staged_users.c.company_name).where(
                        staged_users.c.run_id == tenant.runs[-1].run_id
                    )
                ).all()
            )
    finally:
        engine.dispose()
    assert staged[nul_company] == "Con\u2400toso", "staging records NUL as ␀"
