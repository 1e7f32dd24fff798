"""Entra staged rows → desired Frankli users: normalising values, scoping, and the attribute mapping."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest
from entra_rows import entra, staged
from frankli_sync import transform
from frankli_sync.config import DEFAULT_MAPPING, FieldMapping, ScopeSettings
from frankli_sync.transform import (
    ACTIVE,
    DISABLED,
    OUT_OF_SCOPE,
    QUARANTINED,
    SYNCED_FIELDS,
    clean_text,
    desired_users,
    iso_date,
    json_ready,
    name_key,
    scope_status,
)

pytestmark = pytest.mark.unit

MAPPING = {name: FieldMapping(source, on) for name, (source, on) in DEFAULT_MAPPING.items()}
ALL_USERS = ScopeSettings()
NO_GUESTS = ScopeSettings(exclude_guests=True)


def desired(
    *rows: dict[str, Any],
    mapping: dict[str, FieldMapping] | None = None,
    scope: ScopeSettings = ALL_USERS,
    quarantined: tuple[str, ...] = (),
) -> pd.DataFrame:
    return desired_users(staged(*rows), mapping or MAPPING, scope, quarantined)


def one(frame: pd.DataFrame) -> dict[str, Any]:
    (record,) = frame.to_dict("records")
    return record


# --- normalising values ------------------------------------------------------------------------


def test_output_has_identity_status_and_every_synced_field() -> None:
    out = desired(entra("o1", "ann@x.com"))
    assert list(out.columns[:2]) == ["external_id", "upn_key"]
    assert set(SYNCED_FIELDS) | {"status_in_source"} <= set(out.columns)


def test_whitespace_only_value_is_cleared_to_none() -> None:
    user = one(desired(entra("o1", "ann@x.com", city="   ", job_title="\t", department="", mobile_phone=" \n ")))
    assert user["city"] is None
    assert user["role"] is None
    assert user["department"] is None
    assert user["mobile_phone"] is None


def test_values_are_trimmed() -> None:
    user = one(desired(entra("o1", " ann@x.com ", given_name="  Ann ", office_location=" London  ", city="Paris\t")))
    assert user["first_name"] == "Ann"
    assert user["site"] == "London"
    assert user["city"] == "Paris"
    assert user["email"] == "ann@x.com"


def test_missing_values_are_none_not_nan() -> None:
    user = one(desired(entra("o1", "ann@x.com", street_address=float("nan"), postal_code=pd.NA)))
    assert user["street_address"] is None
    assert user["postal_code"] is None
    assert user["country"] is None


def test_default_dtype_frame_with_nan_gives_none_values() -> None:
    # pandas 3 gives str columns with NaN for missing values when built the ordinary way.
    frame = pd.DataFrame([entra("o1", "ann@x.com", city="Paris"), entra("o2", "bob@x.com", city=None)])
    out = desired_users(frame, MAPPING, ALL_USERS)
    assert out.loc[1, "city"] is None
    assert out.loc[0, "city"] == "Paris"
    assert list(out["status_in_source"]) == [ACTIVE, ACTIVE]


def test_upn_key_is_trimmed_and_casefolded_but_email_keeps_its_case() -> None:
    user = one(desired(entra("o1", " Ann.Lee@Contoso.Example ")))
    assert user["upn_key"] == "ann.lee@contoso.example"
    assert user["email"] == "Ann.Lee@Contoso.Example"


def test_object_id_is_trimmed_into_external_id() -> None:
    assert one(desired(entra(" o1 ", "ann@x.com")))["external_id"] == "o1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2021-03-01T00:00:00Z", "2021-03-01"),
        (" 2021-03-01T08:30:00.000Z ", "2021-03-01"),
        ("2021-03-01", "2021-03-01"),
        (dt.datetime(2021, 3, 1, 9, 0, tzinfo=dt.UTC), "2021-03-01"),
        (dt.date(2021, 3, 1), "2021-03-01"),
        (pd.Timestamp("2021-03-01T00:00:00Z"), "2021-03-01"),
        ("  ", None),
        (None, None),
    ],
)
def test_start_date_is_iso_date_from_graph_datetime(value: Any, expected: str | None) -> None:
    assert one(desired(entra("o1", "ann@x.com", employee_hire_date=value)))["start_date"] == expected


def test_iso_date_keeps_index_and_none() -> None:
    series = pd.Series(["2020-01-02T00:00:00Z", None], index=[7, 9], dtype="object")
    result = iso_date(series)
    assert list(result.index) == [7, 9]
    assert result[7] == "2020-01-02"
    assert result[9] is None


def test_clean_text_keeps_index_and_turns_blank_into_none() -> None:
    result = clean_text(pd.Series([" a ", " ", None], index=["x", "y", "z"], dtype="object"))
    assert result.to_dict() == {"x": "a", "y": None, "z": None}


def test_name_key_is_trimmed_and_casefolded() -> None:
    assert list(name_key(pd.Series([" Straße ", "DEV", "  "], dtype="object"))) == ["strasse", "dev", None]


def test_json_ready_replaces_nan_with_none_in_nested_values() -> None:
    assert json_ready({"a": [float("nan"), pd.NA, 1], "b": {"c": None}}) == {"a": [None, None, 1], "b": {"c": None}}


def test_output_index_is_reset_whatever_the_staged_index() -> None:
    frame = staged(entra("o1", "ann@x.com"), entra("o2", "bob@x.com"))
    frame.index = [10, 20]
    out = desired_users(frame, MAPPING, ALL_USERS)
    assert list(out.index) == [0, 1]
    assert list(out["external_id"]) == ["o1", "o2"]


# --- scope / status_in_source ------------------------------------------------------------------


def test_enabled_member_is_active() -> None:
    assert one(desired(entra("o1", "ann@x.com")))["status_in_source"] == ACTIVE


@pytest.mark.parametrize("enabled", [False, None, 0, "false"])
def test_not_enabled_account_is_disabled(enabled: Any) -> None:
    assert one(desired(entra("o1", "ann@x.com", account_enabled=enabled)))["status_in_source"] == DISABLED


@pytest.mark.parametrize("enabled", [True, 1, "true"])
def test_enabled_flag_spellings_are_active(enabled: Any) -> None:
    assert one(desired(entra("o1", "ann@x.com", account_enabled=enabled)))["status_in_source"] == ACTIVE


def test_guest_is_out_of_scope_only_with_exclude_guests() -> None:
    guest = entra("o1", "jane_gmail.com#EXT#@x.com", user_type="Guest")
    assert one(desired(guest, scope=NO_GUESTS))["status_in_source"] == OUT_OF_SCOPE
    assert one(desired(guest, scope=ALL_USERS))["status_in_source"] == ACTIVE


def test_guest_user_type_match_is_case_insensitive() -> None:
    assert one(desired(entra("o1", "j@x.com", user_type="guest"), scope=NO_GUESTS))["status_in_source"] == OUT_OF_SCOPE


def test_member_is_not_excluded_by_exclude_guests() -> None:
    assert one(desired(entra("o1", "ann@x.com"), scope=NO_GUESTS))["status_in_source"] == ACTIVE


def test_only_enabled_scope_makes_disabled_users_out_of_scope() -> None:
    scope = ScopeSettings(only_enabled=True)
    out = desired(entra("o1", "a@x.com", account_enabled=False), entra("o2", "b@x.com"), scope=scope)
    assert list(out["status_in_source"]) == [OUT_OF_SCOPE, ACTIVE]


def test_quarantined_ids_are_quarantined_whatever_their_scope() -> None:
    out = desired(
        entra("o1", "a@x.com"),
        entra("o2", "b@x.com", account_enabled=False),
        entra("o3", "c@x.com"),
        quarantined=("o1", "o2"),
    )
    assert list(out["status_in_source"]) == [QUARANTINED, QUARANTINED, ACTIVE]


@pytest.mark.parametrize("object_id", [None, "", "   "])
def test_row_without_object_id_is_quarantined(object_id: str | None) -> None:
    user = one(desired(entra(object_id, "noid@x.com")))
    assert user["external_id"] is None
    assert user["status_in_source"] == QUARANTINED


def test_scope_status_keeps_the_staged_index() -> None:
    frame = staged(entra("o1", "a@x.com", account_enabled=False), entra("o2", "b@x.com"))
    frame.index = [5, 6]
    assert scope_status(frame, ALL_USERS).to_dict() == {5: DISABLED, 6: ACTIVE}


# --- the attribute mapping ---------------------------------------------------------------------


def test_default_mapping_reads_the_section_2_attributes() -> None:
    row = entra(
        "o1",
        "ann@x.com",
        given_name="Ann",
        surname="Lee",
        job_title="Engineer",
        department="R&D",
        office_location="London",
        manager_id="m1",
        street_address="1 Main St",
        city="Leeds",
        postal_code="LS1",
        country="UK",
        business_phone="+44 1",
        mobile_phone="+44 7",
        employee_hire_date="2020-05-04T00:00:00Z",
    )
    user = one(desired(row))
    assert {f: user[f] for f in SYNCED_FIELDS} == {
        "email": "ann@x.com",
        "first_name": "Ann",
        "last_name": "Lee",
        "street_address": "1 Main St",
        "city": "Leeds",
        "postal_code": "LS1",
        "country": "UK",
        "phone": "+44 1",
        "mobile_phone": "+44 7",
        "start_date": "2020-05-04",
        "role": "Engineer",
        "department": "R&D",
        "site": "London",
        "manager": "m1",
    }


def test_mapping_site_from_city_reads_the_city_column() -> None:
    mapping = {**MAPPING, "site": FieldMapping(source="city", on="create")}
    user = one(desired(entra("o1", "ann@x.com", office_location="HQ", city=" Leeds "), mapping=mapping))
    assert user["site"] == "Leeds"
    assert user["city"] == "Leeds"


def test_mapping_role_from_another_attribute() -> None:
    mapping = {**MAPPING, "role": FieldMapping(source="employeeId", on="always")}
    assert one(desired(entra("o1", "ann@x.com", job_title="Dev", employee_id="E42"), mapping=mapping))["role"] == "E42"


def test_start_date_mapped_from_a_text_attribute_is_still_an_iso_date() -> None:
    mapping = {**MAPPING, "start_date": FieldMapping(source="state", on="always")}
    user = one(desired(entra("o1", "ann@x.com", state="2019-12-31T00:00:00Z"), mapping=mapping))
    assert user["start_date"] == "2019-12-31"


# --- issue 10, defect 6: address keys ------------------------------------------------------------

KELVIN = "\u212a"  # KELVIN SIGN


def test_defect6_upn_key_lowercases_a_to_z_only() -> None:
    # casefold() made this "kristin.strasse@contoso.example" and adopted the wrong person.
    user = one(desired(entra("o1", f" {KELVIN}ristin.Straße@Contoso.Example ")))
    assert user["upn_key"] == "kristin.straße@contoso.example"
    assert one(desired(entra("o1", "ÉMILE@x.com")))["upn_key"] == "Émile@x.com"


def test_defect6_email_key_is_trimmed_nfc_and_ascii_lowercased() -> None:
    values = pd.Series(
        [" Ann@X.com ", "jose\u0301@x.com", "STRAßE@x.com", "ÉMILE@x.com", "  ", None], index=list("abcdef")
    )
    result = transform.email_key(values)
    assert result.to_dict() == {
        "a": "ann@x.com",
        "b": "jos\u00e9@x.com",  # composed
        "c": "straße@x.com",  # ß stays ß
        "d": "Émile@x.com",  # only A-Z are lower-cased
        "e": None,
        "f": None,
    }
    assert result.dtype == object


@pytest.mark.parametrize(
    ("left", "right", "same"),
    [
        ("Ann@X.com", "ann@x.com", True),
        ("josé@x.com", "jose\u0301@x.com", True),
        ("straße@x.com", "strasse@x.com", False),
        ("émile@x.com", "ÉMILE@x.com", False),
        ("ﬁnn@x.com", "finn@x.com", False),
    ],
)
def test_defect6_email_key_of_equality(left: str, right: str, same: bool) -> None:
    assert (transform.email_key_of(left) == transform.email_key_of(right)) is same


def test_defect6_email_key_of_blank_and_missing_is_none() -> None:
    assert transform.email_key_of("   ") is None
    assert transform.email_key_of(None) is None


def test_defect6_fold_makes_lookalikes_equal_and_spelling_tells_them_apart() -> None:
    kelvin = f"{KELVIN}ristin.straße@x.com"
    assert (
        transform.email_fold_of(kelvin) == transform.email_fold_of("kristin.strasse@x.com") == "kristin.strasse@x.com"
    )
    assert transform.email_fold_of("\uff21\uff2e\uff2e@x.com") == transform.email_fold_of("ann@x.com")  # full-width ANN
    # NFC maps the Kelvin sign to K (a canonical singleton); the spelling keeps it, composition still applies.
    assert transform.email_key_of(f"{KELVIN}ristin@x.com") == "kristin@x.com"
    assert transform.email_spelling_of(f"{KELVIN}ristin@x.com") != transform.email_spelling_of("kristin@x.com")
    assert transform.email_spelling_of("Jose\u0301@x.com") == transform.email_spelling_of("josé@x.com")
    assert transform.email_fold_of("  ") is None and transform.email_spelling_of(None) is None
