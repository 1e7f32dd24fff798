"""Expression mappings as Frankli values (issue 14): what is stored, who fails and why, and the plan's
IgnoreFlowIfNullOrEmpty (leave Frankli's value)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from entra_rows import entra, staged
from frankli_sync import mapped_fields
from frankli_sync.config import DEFAULT_MAPPING, FieldMapping, ScopeSettings
from frankli_sync.expression_values import IGNORE_FLOW
from frankli_sync.plan import USER_STATE_COLUMNS, FrankliState, PlanOptions, plan_user_changes
from frankli_sync.transform import desired_users

pytestmark = pytest.mark.unit

MAPPING = {name: FieldMapping(source, on) for name, (source, on) in DEFAULT_MAPPING.items()}
CLOCK = datetime(2026, 12, 2, 6, 30, tzinfo=UTC)


def rule(text: str, on: str = "always") -> FieldMapping:
    return FieldMapping(None, on, text)


def test_values_are_text_as_frankli_stores_them_and_blank_is_cleared() -> None:
    frame = staged(
        entra("1", "a@x.com", given_name="  Zoë ", surname="Lee"),
        entra("2", "b@x.com", given_name=None, surname=None),
        entra("3", "c@x.com", account_enabled=False),
    )
    joined = mapped_fields.mapped_field("first_name", rule('Join(" ", [givenName], [surname])'), frame)
    # Join skips the empty and, as in Entra, does not trim its inputs: only the result is trimmed; "" is cleared.
    assert joined.values.tolist() == ["Zoë  Lee", None, "Ann Lee"]
    flag = mapped_fields.mapped_field("city", rule("CStr([accountEnabled])"), frame)
    assert flag.values.tolist() == ["True", "True", "False"]
    assert joined.failures.empty and flag.failures.empty


def test_a_value_frankli_cannot_hold_fails_that_user_naming_the_field_and_the_fix() -> None:
    frame = staged(
        entra("1", "a@x.com", display_name="Ann Lee", employee_hire_date="2021-03-01T00:00:00Z"),
        entra("2", "b@x.com", display_name="Bo", employee_hire_date="not a date"),
    )
    several = mapped_fields.mapped_field("last_name", rule('Split([displayName], " ")'), frame)
    assert several.values.tolist() == [None, "Bo"]
    assert list(several.failures.index) == [0]
    assert "mapping.last_name gives 2 values ('Ann, Lee')" in several.failures[0] and "Item(" in several.failures[0]

    dated = mapped_fields.mapped_field("start_date", rule("CDate([employeeHireDate])"), frame)
    assert dated.values.tolist() == [None, None]
    assert "not a date as YYYY-MM-DD" in dated.failures[0] and "FormatDateTime" in dated.failures[0]
    assert dated.failures[1].startswith("mapping.start_date: ") and "not a date" in dated.failures[1]

    iso = mapped_fields.mapped_field(
        "start_date", rule('FormatDateTime([employeeHireDate], , "yyyy-MM-ddTHH:mm:ssZ", "yyyy-MM-dd")'), frame[:1]
    )
    assert iso.values.tolist() == ["2021-03-01"] and iso.failures.empty
    blank = mapped_fields.mapped_field("start_date", rule('Append("  ", "")'), frame)
    assert blank.values.tolist() == [None, None] and blank.failures.empty, "blank is cleared, not a failure"

    long = mapped_fields.mapped_field("city", rule('Append([displayName], "xxxxxxxx")'), frame, max_length=10)
    assert long.values.tolist() == [None, "Boxxxxxxxx"]
    assert "gives 15 characters" in long.failures[0] and "holds at most 10" in long.failures[0]


def test_validation_entries_merge_with_the_suite_s_one_per_user() -> None:
    frame = staged(entra("1", "a@x.com", display_name="Ann Lee"), entra("2", "b@x.com", display_name="Bo"))
    mapping = {"last_name": rule('Split([displayName], " ")'), "first_name": FieldMapping("givenName", "always")}
    found = mapped_fields.failures(frame, mapping, {})
    assert [(f["object_id"], f["user_principal_name"]) for f in found] == [("1", "a@x.com")]
    assert found[0]["reasons"][0]["column"] == "mapping.last_name"
    suite = [{"object_id": "1", "user_principal_name": "a@x.com", "reasons": [{"expectation": "x"}]}]
    merged = mapped_fields.merged(suite, found)
    assert len(merged) == 1 and [r["expectation"] for r in merged[0]["reasons"]] == ["x", "expression:last_name"]


def test_now_is_the_run_s_clock() -> None:
    frame = staged(entra("1", "a@x.com"))
    mapped = mapped_fields.mapped_field(
        "start_date", rule('FormatDateTime(Now(), , "M/d/yyyy h:mm:ss tt", "yyyy-MM-dd")'), frame, CLOCK
    )
    assert mapped.values.tolist() == ["2026-12-02"]
    without = mapped_fields.mapped_field("start_date", rule("Now()"), frame)
    assert "Now needs the run's clock" in without.failures[0]


def _state(*users: dict[str, Any]) -> FrankliState:
    import pandas as pd

    frame = pd.DataFrame({c: pd.Series([u.get(c) for u in users], dtype="object") for c in USER_STATE_COLUMNS})
    empty = pd.DataFrame({c: pd.Series(dtype="object") for c in ("id", "name", "deleted_at")})
    return FrankliState(users=frame, entities={"roles": empty, "departments": empty, "sites": empty})


def test_ignore_flow_leaves_frankli_s_value_on_update_and_sets_nothing_on_create() -> None:
    mapping = {**MAPPING, "mobile_phone": rule("IgnoreFlowIfNullOrEmpty([mobilePhone])")}
    frame = staged(
        entra("old", "ann@x.com", mobile_phone=None),
        entra("new", "bo@x.com", mobile_phone=None),
        entra("set", "cy@x.com", mobile_phone="+353 1"),
    )
    wanted = desired_users(frame, mapping, ScopeSettings())
    assert wanted["mobile_phone"].tolist() == [IGNORE_FLOW, IGNORE_FLOW, "+353 1"]
    base = {"first_name": "Ann", "last_name": "Lee", "status": "active"}
    state = _state(
        {"id": 1, "external_id": "old", "email": "ann@x.com", "mobile_phone": "+1 555", **base},
        {"id": 3, "external_id": "set", "email": "cy@x.com", "mobile_phone": None, **base},
    )
    plan = plan_user_changes(wanted, state, PlanOptions(mapping=mapping))
    assert plan.updates["external_id"].tolist() == ["set"]  # "old" keeps +1 555: nothing to write
    assert plan.updates["changes"].tolist() == [{"mobile_phone": [None, "+353 1"]}]
    [created] = plan.creates.to_dict("records")
    assert created["external_id"] == "new" and created["mobile_phone"] is None

    # A change of another field writes the ignored one as Frankli has it, not cleared.
    frame.loc[0, "given_name"] = "Anna"
    plan = plan_user_changes(desired_users(frame, mapping, ScopeSettings()), state, PlanOptions(mapping=mapping))
    [update] = plan.updates[plan.updates["external_id"] == "old"].to_dict("records")
    assert update["mobile_phone"] == "+1 555" and update["changes"] == {"first_name": ["Ann", "Anna"]}


def test_the_trace_names_each_field_s_mapping_inputs_and_value() -> None:
    row = staged(entra("1", "a@x.com", given_name="Zoë", surname="Lee", city="Cork")).iloc[0].to_dict()
    mapping = {**MAPPING, "first_name": rule('Join(" ", [givenName], [surname])'), "last_name": rule("[nope]")}
    mapping = {k: v for k, v in mapping.items() if k != "last_name"}
    lines = {t["field"]: t for t in mapped_fields.trace(row, mapping, CLOCK)}
    assert lines["first_name"] == {
        "field": "first_name",
        "mapping": 'expression: Join(" ", [givenName], [surname])',
        "on": "always",
        "inputs": {"givenName": "Zoë", "surname": "Lee"},
        "value": "Zoë Lee",
        "failure": None,
    }
    assert lines["city"]["mapping"] == "from: city" and lines["city"]["value"] == "Cork"
    assert "manager" not in lines
