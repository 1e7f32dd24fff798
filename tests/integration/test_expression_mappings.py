"""Entra expressions and scoping filters through real DAG runs (issue 14).

Each test drives a generated tenant through the Graph emulator and the real DAG (`dag.test()`), with
the tenant's mapping written as Entra expressions or its scope as Entra scoping filters, and checks
what Frankli holds afterwards (the target-neutral `people` view: the database on SQLite and
PostgreSQL, and Frankli's SCIM API) and what the run recorded (audit, report).
"""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration

SWITCH_COUNTRY = 'Switch([country], [country], "Germany", "Deutschland", "United States", "USA", "Ireland", "Éire")'
JOIN_NAME = 'Join(" ", [givenName], [surname])'
COALESCE_SITE = 'Coalesce([officeLocation], [city], "Remote")'


def _members(tenant: Any) -> list[dict[str, Any]]:
    """Entra's users the sync keeps (members with an object id and a valid address)."""
    return [u for u in tenant.directory.users_sorted() if tenant.directory.is_valid_member(u)]


def _by_action(audit: list[dict[str, Any]], action: str) -> dict[str, dict[str, Any]]:
    return {row["external_id"]: row for row in audit if row["action"] == action}


def test_a_switch_on_country_a_join_name_and_a_coalesce_site_reach_frankli(make_tenant, frankli_target) -> None:
    mapping = {
        "country": {"expression": SWITCH_COUNTRY},
        "first_name": {"expression": JOIN_NAME},
        "site": {"expression": COALESCE_SITE},
    }
    tenant = make_tenant(users=100, seed=11, mapping=mapping, scope={"exclude_guests": True}, **frankli_target)
    directory = tenant.directory
    # Users without an office: Coalesce falls back to their city, and to "Remote" without either.
    officeless = [u for u in _members(tenant) if not u.get("officeLocation")]
    assert len(officeless) >= 2
    directory.update_user(officeless[0]["id"], city=None)
    tenant.run()

    people = tenant.people()
    switched = {"Germany": "Deutschland", "United States": "USA", "Ireland": "Éire"}
    for user in _members(tenant):
        person = people[user["id"]]
        assert person["country"] == switched.get(user.get("country"), user.get("country")), user["id"]
        parts = [p for p in (user.get("givenName"), user.get("surname")) if p]
        assert person["first_name"] == (" ".join(parts) or None), user["id"]
        site = user.get("officeLocation") or user.get("city") or "Remote"
        assert person["site"] == site, user["id"]
    assert people[officeless[0]["id"]]["site"] == "Remote"
    assert people[officeless[1]["id"]]["site"] == officeless[1]["city"]
    assert {p["country"] for p in people.values()} >= {"Deutschland", "USA", "Éire", "Canada"}

    # A change in Entra flows through the expression; a re-run with no change writes nothing.
    moved = next(u for u in _members(tenant) if u.get("country") == "Canada" and u.get("officeLocation"))
    directory.update_user(moved["id"], country="Germany", officeLocation=None, city="Munich", givenName="Zoë")
    tenant.run()
    person = tenant.people()[moved["id"]]
    assert (person["country"], person["site"]) == ("Deutschland", "Munich")
    assert person["first_name"] == f"Zoë {moved['surname']}"
    updates = _by_action(tenant.audit(tenant.runs[-1].run_id), "update")
    assert set(updates) == {moved["id"]}

    before = tenant.stored_users()
    tenant.run()
    assert tenant.stored_users() == before
    assert [a for a in tenant.audit(tenant.runs[-1].run_id) if a["action"] != "quarantine"] == []


def test_an_expression_on_create_sets_the_value_once(make_tenant) -> None:
    mapping = {"last_name": {"expression": "ToUpper([surname])", "on": "create"}}
    tenant = make_tenant(users=40, seed=5, mapping=mapping, scope={"exclude_guests": True})
    tenant.run()
    user = _members(tenant)[0]
    assert tenant.people()[user["id"]]["last_name"] == user["surname"].upper()
    tenant.directory.update_user(user["id"], surname="Renamed")
    tenant.run()
    assert tenant.people()[user["id"]]["last_name"] == user["surname"].upper(), "on: create never updates"


def test_a_value_an_expression_cannot_store_quarantines_that_user_naming_the_field(make_tenant) -> None:
    """A list where Frankli holds one value fails the users it is given for, with the reason; the rest sync."""
    mapping = {"last_name": {"expression": 'IIF([country]="Australia", Split([displayName], " "), [surname])'}}
    tenant = make_tenant(users=100, seed=11, mapping=mapping, scope={"exclude_guests": True},
                         thresholds={"max_invalid_share": 0.5})  # fmt: skip
    tenant.run()
    australians = {u["id"] for u in _members(tenant) if u.get("country") == "Australia"}
    report = tenant.report()
    held = {q["object_id"]: q for q in report["quarantined"]}
    assert australians and australians <= set(held)
    reason = held[next(iter(australians))]["reasons"][-1]
    assert reason["column"] == "mapping.last_name"
    assert "gives 2 values" in reason["value"] and "Item(" in reason["value"]
    people = tenant.people()
    assert not australians & set(people)
    other = next(u for u in _members(tenant) if u.get("country") == "Canada")
    assert people[other["id"]]["last_name"] == other["surname"]


def test_a_scoping_filter_takes_a_department_out_and_archives_its_users_out_of_scope(
    make_tenant, frankli_target
) -> None:
    tenant = make_tenant(users=100, seed=11, **frankli_target)
    tenant.run()
    members = _members(tenant)
    legal = {u["id"] for u in members if u.get("department") == "Executive"}
    assert 0 < len(legal) <= 5

    # Entra's filter: in scope when department is not Executive (AND within a filter).
    clause = {"attribute": "department", "operator": "NOT EQUALS", "value": "Executive"}
    tenant.tenant_extra["scope"] = {"exclude_guests": True, "filters": [[clause]]}
    tenant.run()
    people = tenant.people()
    assert {ext for ext, p in people.items() if p["archived"]} == legal
    archives = _by_action(tenant.audit(tenant.runs[-1].run_id), "archive")
    assert set(archives) == legal and {a["details"]["reason"] for a in archives.values()} == {"out_of_scope"}

    # OR across filters: a second filter takes one of them back in (by its employee id).
    back = next(iter(sorted(legal)))
    employee_id = tenant.directory.get_user(back)["employeeId"]
    again = {"attribute": "employeeId", "operator": "EQUALS", "value": employee_id}
    tenant.tenant_extra["scope"] = {"exclude_guests": True, "filters": [[clause], [again]]}
    tenant.run()
    people = tenant.people()
    assert {ext for ext, p in people.items() if p["archived"]} == legal - {back}
    assert _by_action(tenant.audit(tenant.runs[-1].run_id), "restore").keys() == {back}


def test_a_scoping_filter_that_takes_a_large_department_out_meets_the_deletion_guard(make_tenant) -> None:
    tenant = make_tenant(users=100, seed=11)
    tenant.run()
    sales = {u["id"] for u in _members(tenant) if u.get("department") == "Sales"}
    clause = {"attribute": "department", "operator": "NOT EQUALS", "value": "Sales"}
    tenant.tenant_extra["scope"] = {"exclude_guests": True, "filters": [[clause]]}
    tenant.run(expect="failed")
    guard = tenant.report()["deletion_guard"]
    assert guard["blocked"] is True and guard["to_archive"] == len(sales)
    assert not any(p["archived"] for p in tenant.people().values())
    tenant.run(conf={"allow_mass_archive": True})
    assert {ext for ext, p in tenant.people().items() if p["archived"]} == sales


def test_an_only_user_run_reports_which_mapping_gave_each_value(make_tenant) -> None:
    mapping = {"first_name": {"expression": JOIN_NAME}, "site": {"expression": COALESCE_SITE}}
    tenant = make_tenant(users=40, seed=5, mapping=mapping, scope={"exclude_guests": True})
    tenant.run()
    user = next(u for u in _members(tenant) if u.get("officeLocation"))
    tenant.run(conf={"only_user": user["userPrincipalName"]})
    trace = {t["field"]: t for t in tenant.report()["mapping_trace"]}
    assert trace["first_name"]["mapping"] == f"expression: {JOIN_NAME}"
    assert trace["first_name"]["inputs"] == {"givenName": user["givenName"], "surname": user["surname"]}
    assert trace["first_name"]["value"] == f"{user['givenName']} {user['surname']}"
    assert trace["site"]["value"] == user["officeLocation"]
    assert trace["city"]["mapping"] == "from: city" and trace["city"]["value"] == user.get("city")
    html = (tenant.reports_dir / tenant.name).rglob("index.html")
    page = max(html, key=lambda p: p.stat().st_mtime).read_text()
    assert "How " in page and "Join(&#34; &#34;, [givenName], [surname])" in page


def test_a_mistake_in_an_expression_is_an_import_error_naming_tenant_field_and_position(tmp_path) -> None:
    import yaml
    from frankli_sync.config import parse_config

    raw = {
        "tenants": [
            {
                "name": "acme",
                "source": {"kind": "graph", "conn_id": "g"},
                "target": {"kind": "database", "conn_id": "f", "organisation": "acme"},
                "mapping": {"first_name": {"expression": 'Join(" ", [givenName], [surnam])'}},
            }
        ]
    }
    config = parse_config(yaml.safe_load(yaml.safe_dump(raw)))
    assert config.tenants == ()
    message = config.errors["acme"]
    assert "tenant 'acme'" in message and "tenants[0].mapping.first_name.expression" in message
    assert "[surnam] is not an Entra attribute" in message and "at character 25" in message


def test_an_attribute_only_a_filter_reads_is_added_to_the_graph_select_and_a_delta_link_without_it_is_dropped(
    make_tenant,
) -> None:
    """employeeType is not read by default; a filter on it adds it to `$select`, and since the tenant's delta
    link was begun without it, that run reads in full (a delta would not say who became a contractor)."""
    from urllib.parse import parse_qs, urlsplit

    tenant = make_tenant(users=60, seed=5)
    contractors = [u["id"] for u in _members(tenant)[:3]]
    for object_id in contractors:
        tenant.directory.update_user(object_id, employeeType="Contractor")
    tenant.run()

    def selects() -> list[set[str]]:
        found = []
        for path in tenant.emulator.requests:
            query = parse_qs(urlsplit(path).query)
            if path.startswith("/v1.0/users/delta") and "$select" in query:
                found.append(set(query["$select"][0].split(",")))
        return found

    assert selects() and all("employeeType" not in s for s in selects())
    assert not any(p["archived"] for p in tenant.people().values())

    # Entra's null rule: NOT EQUALS fails on an empty attribute, so the unset ones are a filter of their own (OR).
    unset = {"attribute": "employeeType", "operator": "IS NULL"}
    clause = {"attribute": "employeeType", "operator": "NOT EQUALS", "value": "Contractor"}
    tenant.tenant_extra["scope"] = {"exclude_guests": True, "filters": [[unset], [clause]]}
    tenant.run()
    assert "employeeType" in selects()[-1]
    assert tenant.report()["basis"]["mode"] == "full"
    assert {ext for ext, p in tenant.people().items() if p["archived"]} == set(contractors)

    # The next delta read carries employeeType: a user who becomes a contractor leaves scope.
    tenant.directory.update_user(_members(tenant)[5]["id"], employeeType="Contractor")
    tenant.run()
    assert tenant.runs and {ext for ext, p in tenant.people().items() if p["archived"]} == {
        *contractors,
        _members(tenant)[5]["id"],
    }
