"""The GX validation gate: which staged users are quarantined or warned about, and why."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from entra_rows import entra
from frankli_sync import validation
from frankli_sync.config import DEFAULT_MAPPING, FieldMapping
from frankli_sync.entra import STAGED_COLUMNS
from frankli_sync.sinks.schema import frankli_field_lengths
from frankli_sync.validation import (
    DEFAULT_REQUIRED_FIELDS,
    SUITE_NAME,
    ValidationOutcome,
    ValidationSettings,
    checked_columns,
    prepare,
    validate_users,
)

pytestmark = pytest.mark.unit

GUEST_UPN = "jane_gmail.com#EXT#@contoso.example"


def user(object_id: str | None, upn: str | None, **overrides: Any) -> dict[str, Any]:
    """A staged row that passes every rule (warnings included) unless overridden."""
    return entra(object_id, upn, **{"department": "Operations", "manager_id": "mgr-1", **overrides})


# Index label -> staged row. Labels deliberately differ from object ids, so the tests also
# show that the outcome keeps the caller's index (object ids can be missing or shared).
ROWS: dict[str, dict[str, Any]] = {
    "clean": user("id-clean", "ann@contoso.example"),
    # Case and surrounding blanks differ from the UPN: still equal after normalising.
    "clean_mixed_case_mail": user("id-mixed", "bob@contoso.example", mail="  Bob@Contoso.example "),
    "clean_disabled": user("id-disabled", "cy@contoso.example", account_enabled=False),
    "dup_id_a": user("id-dup", "dupa@contoso.example"),
    "dup_id_b": user("id-dup", "dupb@contoso.example"),
    "dup_upn_a": user("id-upn-a", "Same@contoso.example"),
    "dup_upn_b": user("id-upn-b", "same@contoso.example"),
    "guest": user("id-guest", GUEST_UPN, mail="jane@gmail.com"),
    "no_mail": user("id-no-mail", "nm@contoso.example", mail=None),
    "blank_given_name": user("id-blank-given", "bg@contoso.example", given_name="   "),
    "bad_upn_format": user("id-bad-upn", "not-an-address"),
    "bad_mail_format": user("id-bad-mail", "bm@contoso.example", mail="bm@contoso"),
    "no_object_id": user("  ", "noid@contoso.example"),
    "no_upn": user("id-no-upn", None, mail="nu@contoso.example"),
    "enabled_missing": user("id-enabled-missing", "em@contoso.example", account_enabled=None),
    "enabled_text": user("id-enabled-text", "et@contoso.example", account_enabled="yes"),
    "enabled_int": user("id-enabled-int", "ei@contoso.example", account_enabled=1),
    "warn_only": user("id-warn", "warn@contoso.example", department=None, manager_id="  "),
}

EXPECTED_QUARANTINE: dict[str, list[tuple[str, str | None]]] = {
    "dup_id_a": [("unique_object_id", "id-dup")],
    "dup_id_b": [("unique_object_id", "id-dup")],
    "dup_upn_a": [("unique_upn", "Same@contoso.example")],
    "dup_upn_b": [("unique_upn", "same@contoso.example")],
    "guest": [("upn_equals_mail", f"UPN {GUEST_UPN} ≠ mail jane@gmail.com")],
    "no_mail": [("required:mail", None)],
    "blank_given_name": [("required:given_name", None)],
    "bad_upn_format": [("upn_format", "not-an-address"), ("mail_format", "not-an-address")],
    "bad_mail_format": [
        ("mail_format", "bm@contoso"),
        ("upn_equals_mail", "UPN bm@contoso.example ≠ mail bm@contoso"),
    ],
    "no_object_id": [("required:object_id", None)],
    "no_upn": [("required:user_principal_name", None)],
    "enabled_missing": [("required:account_enabled", None)],
    "enabled_text": [("account_enabled_boolean", "yes")],
    "enabled_int": [("account_enabled_boolean", "1")],
}


def staged_users() -> pd.DataFrame:
    return pd.DataFrame(list(ROWS.values()), index=list(ROWS))


def reasons_by_label(frame: pd.DataFrame) -> dict[str, list[tuple[str, str | None]]]:
    return {
        label: [(reason["expectation"], reason["value"]) for reason in reasons]
        for label, reasons in frame["reasons"].items()
    }


@pytest.fixture(scope="module")
def docs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data_docs")


@pytest.fixture(scope="module")
def outcome(docs_dir: Path) -> ValidationOutcome:
    # One GX run shared by the tests below: GX takes seconds to import and run.
    return validate_users(staged_users(), docs_dir=docs_dir, run_name="unit-test-run")


def test_quarantines_exactly_the_failing_rows_with_their_reasons(outcome: ValidationOutcome) -> None:
    assert reasons_by_label(outcome.quarantined) == EXPECTED_QUARANTINE
    # Reasons are listed in suite order, so the comparison above is order-exact too.
    assert list(outcome.quarantined.columns) == ["object_id", "user_principal_name", "reasons"]


def test_quarantined_object_ids(outcome: ValidationOutcome) -> None:
    assert set(outcome.quarantined["object_id"].dropna()) == {
        "id-dup",
        "id-upn-a",
        "id-upn-b",
        "id-guest",
        "id-no-mail",
        "id-blank-given",
        "id-bad-upn",
        "id-bad-mail",
        "id-no-upn",
        "id-enabled-missing",
        "id-enabled-text",
        "id-enabled-int",
    }
    # The row without an object id is reported with None, not "" or "  ".
    assert outcome.quarantined.loc["no_object_id", "object_id"] is None


def test_duplicate_object_id_quarantines_every_sharing_row(outcome: ValidationOutcome) -> None:
    shared = outcome.quarantined[outcome.quarantined["object_id"] == "id-dup"]
    assert sorted(shared["user_principal_name"]) == ["dupa@contoso.example", "dupb@contoso.example"]


def test_duplicate_upn_is_caught_case_insensitively(outcome: ValidationOutcome) -> None:
    reasons = reasons_by_label(outcome.quarantined)
    assert reasons["dup_upn_a"] == [("unique_upn", "Same@contoso.example")]
    assert reasons["dup_upn_b"] == [("unique_upn", "same@contoso.example")]


def test_whitespace_only_required_field_counts_as_missing(outcome: ValidationOutcome) -> None:
    assert reasons_by_label(outcome.quarantined)["blank_given_name"] == [("required:given_name", None)]


def test_missing_mail_yields_only_the_required_field_reason(outcome: ValidationOutcome) -> None:
    assert reasons_by_label(outcome.quarantined)["no_mail"] == [("required:mail", None)]


def test_guest_upn_fails_only_the_mail_rule(outcome: ValidationOutcome) -> None:
    reasons = reasons_by_label(outcome.quarantined)
    assert reasons["guest"] == [("upn_equals_mail", f"UPN {GUEST_UPN} ≠ mail jane@gmail.com")]


def test_clean_rows_pass(outcome: ValidationOutcome) -> None:
    clean = {"clean", "clean_mixed_case_mail", "clean_disabled", "warn_only"}
    assert clean.isdisjoint(outcome.quarantined.index)


def test_warnings_are_reported_but_do_not_quarantine(outcome: ValidationOutcome) -> None:
    assert reasons_by_label(outcome.warnings) == {
        "warn_only": [("recommended:department", None), ("recommended:manager_id", None)]
    }
    assert outcome.warnings.loc["warn_only", "object_id"] == "id-warn"
    assert "warn_only" not in outcome.quarantined.index


def test_reasons_are_complete_and_json_serialisable(outcome: ValidationOutcome) -> None:
    for frame, severity in ((outcome.quarantined, "critical"), (outcome.warnings, "warning")):
        for reasons in frame["reasons"]:
            json.dumps(reasons)  # they go to XCom and the quarantine table
            for reason in reasons:
                assert set(reason) == {"expectation", "column", "value", "severity"}
                assert reason["severity"] == severity
    guest = outcome.quarantined.loc["guest", "reasons"][0]
    assert guest["column"] == "mail"
    dup_upn = outcome.quarantined.loc["dup_upn_a", "reasons"][0]
    assert dup_upn["column"] == "user_principal_name"  # not the lower-cased helper column


def test_counts_and_statistics(outcome: ValidationOutcome) -> None:
    assert outcome.checked == len(ROWS)
    assert outcome.failed_share == pytest.approx(len(EXPECTED_QUARANTINE) / len(ROWS))
    counts = {name: stat["unexpected_count"] for name, stat in outcome.statistics.items()}
    assert counts == {
        "required:object_id": 1,
        "required:user_principal_name": 1,
        "required:mail": 1,
        "required:given_name": 1,
        "required:surname": 0,
        "required:account_enabled": 1,
        "unique_object_id": 2,
        "unique_upn": 2,
        "upn_format": 1,
        "mail_format": 2,
        "upn_equals_mail": 2,
        "account_enabled_boolean": 2,
        "recommended:department": 1,
        "recommended:manager_id": 1,
    }
    assert outcome.statistics["unique_upn"] == {
        "expectation": "unique_upn",
        "severity": "critical",
        "unexpected_count": 2,
    }
    assert outcome.statistics["recommended:department"]["severity"] == "warning"


def test_data_docs_index_is_written_and_mentions_the_suite(outcome: ValidationOutcome, docs_dir: Path) -> None:
    assert outcome.docs_index == docs_dir / "index.html"
    html = outcome.docs_index.read_text(encoding="utf-8")
    assert SUITE_NAME in html
    assert "unit-test-run" in html
    assert list((docs_dir / "validations").rglob("*.html"))


def test_input_frame_is_not_modified() -> None:
    users = staged_users()
    before = users.copy()
    prepare(users, checked_columns())
    pd.testing.assert_frame_equal(users, before)


def test_empty_frame_validates_to_an_empty_outcome() -> None:
    empty = pd.DataFrame({column: pd.Series(dtype=object) for column in STAGED_COLUMNS})
    outcome = validate_users(empty)
    assert outcome.checked == 0
    assert outcome.failed_share == 0.0
    assert outcome.quarantined.empty
    assert outcome.warnings.empty
    assert list(outcome.quarantined.columns) == ["object_id", "user_principal_name", "reasons"]
    assert all(stat["unexpected_count"] == 0 for stat in outcome.statistics.values())
    assert outcome.docs_index is None


def test_settings_choose_required_and_warn_fields() -> None:
    users = staged_users().loc[["clean", "warn_only"]]
    outcome = validate_users(
        users,
        ValidationSettings(required_fields=(*DEFAULT_REQUIRED_FIELDS, "department"), warn_fields=("manager_id",)),
    )
    assert reasons_by_label(outcome.quarantined) == {"warn_only": [("required:department", None)]}
    assert reasons_by_label(outcome.warnings) == {"warn_only": [("recommended:manager_id", None)]}


def test_unknown_required_field_is_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="givn_name"):
        ValidationSettings(required_fields=("user_principal_name", "givn_name"))
    with pytest.raises(ValueError, match="dept"):
        ValidationSettings(warn_fields=("dept",))


def test_missing_column_is_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="surname"):
        validate_users(staged_users().drop(columns=["surname"]))


def test_non_frame_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="DataFrame"):
        validate_users([ROWS["clean"]])  # type: ignore[arg-type]


def test_prepare_normalises_text_and_keeps_booleans_strict() -> None:
    users = pd.DataFrame(
        [
            user(" id-1 ", " a@contoso.example ", given_name="\t", account_enabled=False),
            user("id-2", "B@contoso.example", account_enabled="true"),
        ]
    )
    frame = prepare(users, checked_columns())
    assert frame["object_id"].tolist() == ["id-1", "id-2"]
    assert frame["user_principal_name"].tolist() == ["a@contoso.example", "B@contoso.example"]
    assert frame["given_name"].isna().tolist() == [True, False]
    assert frame["_upn_lower"].tolist() == ["a@contoso.example", "b@contoso.example"]
    assert frame["_row"].tolist() == [0, 1]
    # Only real booleans count as booleans: text "true" must fail the boolean rule.
    assert frame["account_enabled"].tolist() == [False, "true"]


def test_directory_values_are_escaped_in_data_docs_but_reported_as_is(tmp_path: Path) -> None:
    script = "<script>alert(1)</script>"
    frame = pd.DataFrame([user("id-xss", "x@contoso.example", mail=script), user("id-ok", "ok@contoso.example")])
    result = validate_users(frame, docs_dir=tmp_path, run_name="xss")
    reasons = reasons_by_label(result.quarantined)
    assert ("mail_format", script) in next(iter(reasons.values())), "reasons keep the value as Entra has it"
    pages = [p.read_text(errors="replace") for p in tmp_path.rglob("*.html")]
    assert pages and not any(script in page for page in pages), "a raw <script> from Entra reached Data Docs"
    assert any("&lt;script&gt;" in page or "&amp;lt;script" in page for page in pages)


# --- values Frankli cannot store (too long, NUL) ------------------------------------

FIT_LIMITS = {"given_name": 255, "city": 255, "street_address": 255}
FIT_ROWS: dict[str, dict[str, Any]] = {
    "given_256": user("id-long", "long@contoso.example", given_name="A" * 256),
    "given_255": user("id-exact", "exact@contoso.example", given_name="B" * 255),
    # Trimmed before measuring, as the load trims it: 255 characters are stored.
    "given_255_padded": user("id-padded", "padded@contoso.example", given_name=f"  {'C' * 255}\t"),
    # 255 raw characters, but 1,275 once HTML-escaped for GX: must be measured raw.
    "ampersands": user("id-amp", "amp@contoso.example", given_name="&" * 255),
    "city_nul": user("id-nul", "nul@contoso.example", city="Dub\x00lin"),
    # Staging records NUL as ␀ (PostgreSQL text cannot hold NUL): the same verdict.
    "city_nul_staged": user("id-nul-staged", "nulstaged@contoso.example", city="Dub\u2400lin"),
    "street_missing": user("id-no-street", "nostreet@contoso.example", street_address=None, city="  "),
}


def mapping_from(**sources: str) -> dict[str, FieldMapping]:
    """The default field mapping with some Frankli fields read from other Entra attributes."""
    return {field: FieldMapping(sources.get(field, source), on) for field, (source, on) in DEFAULT_MAPPING.items()}


@pytest.fixture(scope="module")
def fit_outcome() -> ValidationOutcome:
    users = pd.DataFrame(list(FIT_ROWS.values()), index=list(FIT_ROWS))
    return validate_users(users, ValidationSettings(max_lengths=FIT_LIMITS))


def test_value_longer_than_frankli_allows_is_quarantined_naming_field_and_length(
    fit_outcome: ValidationOutcome,
) -> None:
    (reason,) = fit_outcome.quarantined.loc["given_256", "reasons"]
    assert reason["expectation"] == "fits_frankli:given_name"
    assert reason["column"] == "given_name"
    assert reason["severity"] == "critical"
    assert reason["value"].startswith("256 characters; Frankli holds at most 255")
    assert len(reason["value"]) < 100, "the reason quotes the start of the value, not all of it"
    json.dumps(reason)


def test_value_of_exactly_the_limit_passes_even_if_html_escaping_makes_it_longer(
    fit_outcome: ValidationOutcome,
) -> None:
    for label in ("given_255", "given_255_padded", "ampersands"):
        assert label not in fit_outcome.quarantined.index, label


@pytest.mark.parametrize("label", ["city_nul", "city_nul_staged"])
def test_nul_character_is_quarantined(fit_outcome: ValidationOutcome, label: str) -> None:
    (reason,) = fit_outcome.quarantined.loc[label, "reasons"]
    assert reason["expectation"] == "fits_frankli:city"
    assert reason["column"] == "city"
    assert "contains a NUL character" in reason["value"]
    assert "\x00" not in reason["value"]


def test_missing_value_passes_the_fit_check(fit_outcome: ValidationOutcome) -> None:
    assert "street_missing" not in fit_outcome.quarantined.index
    assert set(fit_outcome.quarantined.index) == {"given_256", "city_nul", "city_nul_staged"}
    counts = {name: s["unexpected_count"] for name, s in fit_outcome.statistics.items() if name.startswith("fits")}
    assert counts == {"fits_frankli:given_name": 1, "fits_frankli:city": 2, "fits_frankli:street_address": 0}


def test_fit_checks_read_only_their_columns() -> None:
    settings = ValidationSettings(max_lengths={"postal_code": 64})
    assert "postal_code" in checked_columns(settings)
    assert "postal_code" not in checked_columns()
    with pytest.raises(ValueError, match="postal_code"):
        validate_users(pd.DataFrame([user("id-1", "a@contoso.example")]).drop(columns=["postal_code"]), settings)
    frame = prepare(pd.DataFrame([user("id-1", "a@contoso.example", postal_code="9" * 65)]), checked_columns(settings))
    assert not [c for c in frame.columns if c.startswith("_fits_")], "no helper without max_lengths"


def test_unknown_or_invalid_max_lengths_are_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="street_adress"):
        ValidationSettings(max_lengths={"street_adress": 255})
    with pytest.raises(ValueError, match="city=0"):
        ValidationSettings(max_lengths={"city": 0})
    with pytest.raises(ValueError, match="city=True"):
        ValidationSettings(max_lengths={"city": True})
    with pytest.raises(ValueError, match="max_lengths"):
        ValidationSettings(max_lengths=[("city", 10)])  # type: ignore[arg-type]


def test_frankli_field_lengths_of_the_default_mapping() -> None:
    assert frankli_field_lengths(mapping_from()) == {
        "user_principal_name": 320,
        "given_name": 255,
        "surname": 255,
        "job_title": 255,
        "department": 255,
        "office_location": 255,
        "street_address": 255,
        "city": 255,
        "postal_code": 64,
        "country": 255,
        "business_phone": 64,
        "mobile_phone": 64,
    }  # no start_date (a date) and no manager (an id)


def test_frankli_field_lengths_smallest_limit_wins_for_a_shared_column() -> None:
    # postal code (64) and city (255) both read city; so do role / site (entity names, 255).
    mapping = mapping_from(postal_code="city", site="city")
    lengths = frankli_field_lengths(mapping)
    assert lengths["city"] == 64
    assert "postal_code" not in lengths and "office_location" not in lengths


# --- issue 10, defect 6: UPN and mail are validated as addresses, compared by email key --------

KELVIN = "\u212a"  # KELVIN SIGN
VALID_ADDRESSES = {
    "plain": "ann.lee@contoso.example",
    "apostrophe": "o'brien@contoso.example",  # HTML-escaped to &#x27; before GX sees it
    "ampersand": "r&d@contoso.example",
    "atext_specials": "a!#$%*+/=?^_`{|}~-z@contoso.example",
    "guest": "jane_gmail.com#EXT#@contoso.example",
    "unicode_local": f"{KELVIN}ristin.straße@contoso.example",
    "idn_domain": "jürgen@bücher.example",
    "punycode_tld": "ann@xn--bcher-kva.xn--p1ai",
    "hyphenated_labels": "ann@mail-1.contoso-eu.example",
    "local_64": f"{'a' * 64}@contoso.example",
    "whole_254": f"a@{'b' * 63}.{'c' * 63}.{'d' * 63}.{'e' * 52}.example",
    "decomposed_accent": "jose\u0301@contoso.example",  # NFC first: é
}
INVALID_ADDRESSES = {
    "script_tag": "<script>alert(9)</script>@contoso.example",
    "no_at": "not-an-address",
    "no_tld": "bm@contoso",
    "leading_dot": ".ann@contoso.example",
    "trailing_dot": "ann.@contoso.example",
    "double_dot": "ann..lee@contoso.example",
    "local_65": f"{'a' * 65}@contoso.example",
    "whole_255": f"a@{'b' * 63}.{'c' * 63}.{'d' * 63}.{'e' * 53}.example",
    "space": "ann lee@contoso.example",
    "quote": 'ann"lee@contoso.example',
    "semicolon": "ann;lee@contoso.example",
    "parentheses": "ann(lee)@contoso.example",
    "two_ats": "ann@lee@contoso.example",
    "label_leading_hyphen": "ann@-contoso.example",
    "label_trailing_hyphen": "ann@contoso-.example",
    "underscore_in_domain": "ann@con_toso.example",
    "empty_label": "ann@contoso..example",
    "one_letter_tld": "ann@contoso.e",
    "digit_tld": "ann@contoso.123",
    "trailing_dot_domain": "ann@contoso.example.",
    "entity_typed_in": "ann&amp;lee@contoso.example",  # a real "&amp;" has a ";": not atext
}


assert len(VALID_ADDRESSES["whole_254"]) == 254 and len(INVALID_ADDRESSES["whole_255"]) == 255


@pytest.fixture(scope="module")
def address_outcome() -> ValidationOutcome:
    rows = {**VALID_ADDRESSES, **INVALID_ADDRESSES}
    frame = pd.DataFrame([user(f"id-{label}", address) for label, address in rows.items()], index=list(rows))
    return validate_users(frame)


def test_defect6_script_tag_upn_is_quarantined(address_outcome: ValidationOutcome) -> None:
    reasons = reasons_by_label(address_outcome.quarantined)["script_tag"]
    script = INVALID_ADDRESSES["script_tag"]
    assert reasons == [("upn_format", script), ("mail_format", script)]


@pytest.mark.parametrize("label", sorted(INVALID_ADDRESSES))
def test_defect6_invalid_addresses_fail_upn_and_mail_format(address_outcome: ValidationOutcome, label: str) -> None:
    expectations = [name for name, _ in reasons_by_label(address_outcome.quarantined).get(label, [])]
    assert {"upn_format", "mail_format"} <= set(expectations), (label, INVALID_ADDRESSES[label])


@pytest.mark.parametrize("label", sorted(VALID_ADDRESSES))
def test_defect6_valid_addresses_pass(address_outcome: ValidationOutcome, label: str) -> None:
    assert label not in address_outcome.quarantined.index, address_outcome.quarantined.loc[[label], "reasons"].tolist()


def test_defect6_is_address_agrees_with_the_gx_rule() -> None:
    for address in VALID_ADDRESSES.values():
        assert validation.is_address(unicodedata.normalize("NFC", address)), address
    for address in INVALID_ADDRESSES.values():
        assert not validation.is_address(address), address


def test_defect6_unique_upn_and_upn_equals_mail_use_the_email_key() -> None:
    rows = {
        # ß ≠ ss and the Kelvin sign is no case variant: two different UPNs.
        "kelvin_eszett": user("id-1", f"{KELVIN}ristin.straße@contoso.example"),
        "strasse": user("id-2", "kristin.strasse@contoso.example"),
        # Only A-Z fold: É and é are different addresses...
        "emile_upper": user("id-3", "ÉMILE@contoso.example"),
        "emile_lower": user("id-4", "émile@contoso.example"),
        # ... while NFC-equal spellings are the same address, whatever the A-Z case.
        "jose_composed": user("id-5", "José@contoso.example"),
        "jose_decomposed": user("id-6", "jose\u0301@contoso.example"),
        "mail_in_nfd": user("id-7", "zoë@contoso.example", mail="Zoe\u0308@contoso.example"),
        "mail_upper_non_ascii": user("id-8", "öz@contoso.example", mail="ÖZ@contoso.example"),
    }
    outcome = validate_users(pd.DataFrame(list(rows.values()), index=list(rows)))
    assert reasons_by_label(outcome.quarantined) == {
        "jose_composed": [("unique_upn", "José@contoso.example")],
        "jose_decomposed": [("unique_upn", "josé@contoso.example")],
        "mail_upper_non_ascii": [("upn_equals_mail", "UPN öz@contoso.example ≠ mail ÖZ@contoso.example")],
    }
