"""Issue #11: the pure parts of incremental planning (what is kept, what forces a full plan, the record)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from entra_rows import entra, staged
from frankli_sync.config import DEFAULT_MAPPING, FieldMapping, ScopeSettings, TenantConfig
from frankli_sync.incremental import reaches_outside, record_rows, restrict, row_digests
from frankli_sync.plan import FrankliState, Plan, PlanOptions, empty_entities, plan_user_changes
from frankli_sync.transform import desired_users

pytestmark = pytest.mark.unit

MAPPING = {field: FieldMapping(source, on) for field, (source, on) in DEFAULT_MAPPING.items()}


def _plan(*rows: dict) -> Plan:
    desired = desired_users(staged(*rows), MAPPING, ScopeSettings())
    return plan_user_changes(desired, FrankliState.empty(), PlanOptions(mapping=MAPPING))


def test_restrict_keeps_the_participants_actions_and_the_records_findings_about_others() -> None:
    plan = _plan(
        entra("a", "a@contoso.example", department="Sales"),
        entra("b", "b@contoso.example", department="Legal"),
    )
    carried = {
        "orphaned_references": [
            {"external_id": "c", "field": "department"},  # someone else: still stands
            {"external_id": "a", "field": "department"},  # a participant: the fresh plan decides
        ],
        "manager_cycles": [{"members": [["c", "c@x"], ["d", "d@x"]]}, {"members": [["a", "a@x"], ["e", "e@x"]]}],
    }
    kept = restrict(plan, frozenset({"a"}), carried)
    assert list(kept.creates["external_id"]) == ["a"]
    # Only the department "a" needs is created ("legal" belongs to b, who is not planned).
    assert list(kept.entity_creates["key"]) == ["sales"]
    assert kept.findings["orphaned_references"] == [{"external_id": "c", "field": "department"}]
    assert kept.findings["manager_cycles"] == [{"members": [["c", "c@x"], ["d", "d@x"]]}]


def test_a_cycle_through_an_unplanned_user_or_a_revived_entity_forces_a_full_plan() -> None:
    plan = _plan(entra("a", "a@contoso.example", department="Sales"))
    entities = {"roles": empty_entities(), "departments": empty_entities(), "sites": empty_entities()}
    assert reaches_outside(plan, frozenset({"a"}), entities) is None
    entities["departments"] = pd.DataFrame({"id": [1], "name": [" SALES "], "deleted_at": ["2026-11-01"]})
    assert "brought back" in reaches_outside(plan, frozenset({"a"}), entities)
    plan.findings["manager_cycles"] = [{"members": [("a", "a@x"), ("z", "z@x")]}]
    entities["departments"] = empty_entities()
    assert "cycle" in reaches_outside(plan, frozenset({"a"}), entities)
    assert reaches_outside(plan, frozenset({"a", "z"}), entities) is None


def test_record_rows_carry_state_keys_quarantine_and_findings() -> None:
    rows = staged(
        entra("a", "A@Contoso.example", manager_id="b"),
        entra("b", "b@contoso.example"),
        entra("q", "q@contoso.example", mail="other@contoso.example"),
        entra("  ", "noid@contoso.example"),
    )
    tenant = TenantConfig(name="t", source=None, target=None, mapping=MAPPING)  # type: ignore[arg-type]
    quarantine = [{"object_id": "q", "user_principal_name": "q@contoso.example", "reasons": [{"expectation": "x"}]}]
    desired = desired_users(rows, MAPPING, ScopeSettings(), {"q"})
    plan = plan_user_changes(desired, FrankliState.empty(), PlanOptions(mapping=MAPPING))
    plan.findings["manager_problems"] = [{"external_id": "a", "reason": "not_in_source"}]
    record = record_rows(rows, desired, plan, quarantine, tenant).set_index("object_id")
    assert list(record.index) == ["a", "b", "q"]  # no row without an object id
    assert record.loc["a", "state"] == "active" and record.loc["q", "state"] == "quarantined"
    assert record.loc["a", "manager"] == "b"
    assert json.loads(record.loc["q", "detail"]) == quarantine[0]
    assert json.loads(record.loc["a", "findings"]) == {"manager_problems": plan.findings["manager_problems"]}
    # Keys are hashed as the plan matches them: A-Z lower-cased.
    lower = record_rows(staged(entra("a", "a@contoso.example")), desired.iloc[:1], plan, [], tenant)
    assert lower.loc[0, "upn_key"] == record.loc["a", "upn_key"]


def test_row_digests_change_with_any_staged_value_and_only_then() -> None:
    base = staged(entra("a", "a@contoso.example", city="Dublin"), entra("b", "b@contoso.example"))
    again = staged(entra("a", "a@contoso.example", city="Dublin"), entra("b", "b@contoso.example"))
    moved = staged(entra("a", "a@contoso.example", city="Cork"), entra("b", "b@contoso.example"))
    cleared = staged(entra("a", "a@contoso.example", city=None), entra("b", "b@contoso.example"))
    assert np.array_equal(row_digests(base), row_digests(again))
    assert row_digests(base)[0] != row_digests(moved)[0] != row_digests(cleared)[0]
    assert row_digests(base)[1] == row_digests(moved)[1]
    assert row_digests(base.iloc[0:0]).shape == (0,)


def test_row_digests_tell_missing_blank_and_shifted_values_apart() -> None:
    """One text per row is hashed: missing, "", a value spelling the markers, or a value moved to the
    next column must each give another digest (the markers and NUL joints keep the text unambiguous)."""
    variants = [
        entra("a", "a@contoso.example", city=None, state="x"),
        entra("a", "a@contoso.example", city="", state="x"),
        entra("a", "a@contoso.example", city="n", state="x"),
        entra("a", "a@contoso.example", city="v", state="x"),
        entra("a", "a@contoso.example", city="x", state=None),
        entra("a", "a@contoso.example", city="x", state=""),
        entra("a", "a@contoso.example", city="", state=""),
    ]
    digests = row_digests(staged(*variants))
    assert len(set(digests.tolist())) == len(variants)
    enabled = staged(entra("a", "a@contoso.example", account_enabled=True))
    disabled = staged(entra("a", "a@contoso.example", account_enabled=False))
    assert row_digests(enabled)[0] != row_digests(disabled)[0]
