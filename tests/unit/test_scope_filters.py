"""Entra-style attribute scoping filters: parsing, per-operator results, AND/OR, explain, vectorised == per-row."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pandas as pd
import pytest
from frankli_sync.entra import ENTRA_ATTRIBUTES
from frankli_sync.scope_filters import (
    OPERATORS,
    Clause,
    ScopeFilter,
    ScopeFilterError,
    attributes_needed,
    clause_holds,
    clause_text,
    explain,
    in_scope,
    parse_filters,
)

pytestmark = pytest.mark.unit

# The operator statements of MicrosoftDocs/entra-docs
# docs/identity/app-provisioning/define-conditional-rules-for-provisioning-user-accounts.md
# @ efd1ce19dccb67801842cd28424abe6b7dcf2e2b ("Create a scoping filter", step 8). & and !& are listed there too
# but are refused (their sentence does not say what they test).
DOCUMENTED = {
    "ENDS_WITH": 'Clause returns "true" if the evaluated attribute ends with the input string value.',
    "EQUALS": 'Clause returns "true" if the evaluated attribute matches the input string value exactly (case '
    "sensitive).",
    "Greater_Than": 'Clause returns "true" if the evaluated attribute is greater than the value. The value '
    "specified on the scoping filter must be an integer and the attribute on the user must be an integer.",
    "Greater_Than_OR_EQUALS": 'Clause returns "true" if the evaluated attribute is greater than or equal to the '
    "value. The value specified on the scoping filter must be an integer and the attribute on the user must be "
    "an integer.",
    "Includes": 'Clause returns "true" if the evaluated attribute contains the string value (case sensitive) as '
    "described [System.String.Contains].",
    "IS FALSE": 'Clause returns "true" if the evaluated attribute contains a Boolean value of false.',
    "IS NOT NULL": 'Clause returns "true" if the evaluated attribute isn\'t empty.',
    "IS NULL": 'Clause returns "true" if the evaluated attribute is empty.',
    "IS TRUE": 'Clause returns "true" if the evaluated attribute contains a Boolean value of true.',
    "NOT EQUALS": 'Clause returns "true" if the evaluated attribute doesn\'t match the input string value (case '
    "sensitive).",
    "NOT REGEX MATCH": 'Clause returns "true" if the evaluated attribute doesn\'t match a regular expression '
    'pattern. It returns "false" if the attribute is null / empty.',
    "REGEX MATCH": 'Clause returns "true" if the evaluated attribute matches a regular expression pattern. For '
    "example: ([1-9][0-9]) matches any number between 10 and 99 (case sensitive).",
}
NULL_RULE = 'Scoping filters will return "false" if the value is null / empty.'

# operator -> (attribute, value, values that hold, values that do not). None and '' are added to the misses of every
# operator but IS NULL (NULL_RULE), where they are the hits.
CASES: dict[str, tuple[str, Any, list[Any], list[Any]]] = {
    "EQUALS": ("department", "Sales", ["Sales"], ["sales", "SALES", "Sales ", "Presales", "Marketing"]),
    "NOT EQUALS": ("department", "Sales", ["sales", "Marketing", "Sales "], ["Sales"]),
    "IS TRUE": ("accountEnabled", None, [True, np.True_, "true", "True", " TRUE ", 1], [False, "false", 0, "yes", "1"]),
    "IS FALSE": ("accountEnabled", None, [False, np.False_, "false", "FALSE", 0], [True, "true", 1, "no", "0"]),
    "IS NULL": ("jobTitle", None, [None, np.nan, pd.NA, ""], ["Engineer", " ", "null"]),
    "IS NOT NULL": ("jobTitle", None, ["Engineer", " ", "null"], []),
    # a search (Regex.IsMatch), case sensitive: '([1-9][0-9])' also finds '10' inside '100'
    "REGEX MATCH": ("employeeId", "([1-9][0-9])", ["10", "99", "100", "E-42"], ["9", "05", "abc"]),
    "NOT REGEX MATCH": ("userPrincipalName", r"@contoso\.com$", ["a@fabrikam.com", "a@CONTOSO.com"], ["a@contoso.com"]),
    "Greater_Than": (
        "employeeId",
        1000000,
        ["1000001", "+2000000", " 1500000 ", 2000000],
        [
            "1000000",
            "999999",
            "-5",
            "1000001.5",
            "1,500,000",
            "1e7",
            "abc",
            "\u0661\u0660\u0660\u0660\u0660\u0660\u0660\u0660",
        ],
    ),
    "Greater_Than_OR_EQUALS": (
        "employeeId",
        "1000000",
        ["1000000", "1000001", "99999999999999999999999"],
        ["999999", "0999999", "1000000.0", "x1000000"],
    ),
    "Includes": ("jobTitle", "Eng", ["Engineer", "Senior Eng", "Eng"], ["engineer", "ENG", "En g", "Sales"]),
    "ENDS_WITH": ("mail", "@contoso.com", ["a@contoso.com", "@contoso.com"], ["a@Contoso.com", "a@contoso.com.x"]),
    # Not on Entra's page; the issue asks for them (the mirrors of Greater_Than and Includes, by their rules).
    "Less_Than": ("employeeId", "1000000", ["999999", "-5", " 12 "], ["1000000", "1000001", "1e3", "abc"]),
    "Less_Than_OR_EQUALS": ("employeeId", "1000000", ["1000000", "999999"], ["1000001", "1000000.0"]),
    "Not Includes": ("jobTitle", "Eng", ["engineer", "Sales", "ENG"], ["Engineer", "Senior Eng", "Eng"]),
}


def test_the_supported_operators_are_the_documented_ones_and_each_has_a_case():
    not_on_the_page = {"Less_Than", "Less_Than_OR_EQUALS", "Not Includes"}  # the issue's, see the module docstring
    assert set(OPERATORS) - not_on_the_page == set(DOCUMENTED) and set(OPERATORS) == set(CASES)


def _frame(attribute: str, values: list[Any]) -> pd.DataFrame:
    return pd.DataFrame({ENTRA_ATTRIBUTES[attribute]: pd.Series(values, dtype=object)})


@pytest.mark.parametrize("operator", list(CASES))
def test_operator_hits_misses_and_null(operator):
    attribute, value, hits, misses = CASES[operator]
    if operator != "IS NULL":  # IS NULL's hits are these
        misses = [*misses, None, np.nan, pd.NA, ""]
    clause_yaml = {"attribute": attribute, "operator": operator}
    if value is not None:
        clause_yaml["value"] = value
    filters = parse_filters([[clause_yaml]], "f")
    values = hits + misses
    result = in_scope(_frame(attribute, values), filters)
    assert result.tolist() == [True] * len(hits) + [False] * len(misses), list(zip(values, result, strict=True))
    clause = filters[0].clauses[0]
    assert [clause_holds(v, clause) for v in values] == result.tolist()


def test_null_never_raises_and_fails_every_operator_but_is_null():
    for operator in OPERATORS:
        attribute, value, _, _ = CASES[operator]
        clause = parse_filters([[{"attribute": attribute, "operator": operator, "value": value}]], "f")[0].clauses[0]
        for empty in (None, np.nan, pd.NA, pd.NaT, ""):
            assert clause_holds(empty, clause) is (operator == "IS NULL"), (operator, empty)


def test_regex_match_is_a_search_and_anchors_make_it_whole_value():
    def hits(pattern: str, values: list[str]) -> list[bool]:
        filters = parse_filters([[{"attribute": "department", "operator": "REGEX MATCH", "value": pattern}]], "f")
        return in_scope(_frame("department", values), filters).tolist()

    assert hits("Sales", ["Sales", "PreSales", "Sales EMEA", "Presales", "sales"]) == [True, True, True, False, False]
    assert hits("^Sales$", ["Sales", "Presales", "Sales EMEA"]) == [True, False, False]
    assert hits("(?i)^sales$", ["SALES", "Sales", "Presales"]) == [True, True, False]
    assert hits(r".*\@domain.com", ["a@domain.com"]) == [True]  # the page's own example (\@ is a literal @)


def test_clauses_in_a_filter_are_anded_and_filters_are_ored():
    staged = pd.DataFrame(
        {
            "department": ["Sales", "Sales", "Engineering", "Engineering", "Marketing"],
            "account_enabled": [True, False, True, False, True],
            "city": ["Oslo", "Oslo", "Bergen", "Oslo", None],
        }
    )
    filters = parse_filters(
        [
            [
                {"attribute": "department", "operator": "EQUALS", "value": "Sales"},
                {"attribute": "accountEnabled", "operator": "IS TRUE"},
            ],
            [{"attribute": "city", "operator": "EQUALS", "value": "Bergen"}],
        ],
        "f",
    )
    assert in_scope(staged, filters).tolist() == [True, False, True, False, False]
    assert in_scope(staged, filters[:1]).tolist() == [True, False, False, False, False]
    assert in_scope(staged, filters[1:]).tolist() == [False, False, True, False, False]


def test_no_filters_put_everyone_in_scope():
    staged = pd.DataFrame({"department": [None, "x"]}, index=["a", "b"])
    assert parse_filters(None, "f") == ()
    result = in_scope(staged, ())
    assert result.tolist() == [True, True] and list(result.index) == ["a", "b"] and result.dtype == bool
    assert explain({"department": None}, ()) == "in scope: there are no scoping filters, so every user is in scope"


def test_result_keeps_the_index_even_when_it_repeats():
    staged = pd.DataFrame({"department": ["Sales", "x", "Sales"]}, index=[7, 7, 3])
    filters = parse_filters([[{"attribute": "department", "operator": "EQUALS", "value": "Sales"}]], "f")
    result = in_scope(staged, filters)
    assert list(result.index) == [7, 7, 3] and result.tolist() == [True, False, True]


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("equals", "EQUALS"),
        ("Not Equals", "NOT EQUALS"),
        ("NOT_EQUALS", "NOT EQUALS"),
        ("is_not_null", "IS NOT NULL"),
        ("regex-match", "REGEX MATCH"),
        ("not  regex  match", "NOT REGEX MATCH"),
        ("GREATER_THAN", "Greater_Than"),
        ("greater than or equals", "Greater_Than_OR_EQUALS"),
        ("INCLUDES", "Includes"),
        ("ends with", "ENDS_WITH"),
    ],
)
def test_operator_spellings_are_normalised(written, canonical):
    value = None if canonical == "IS NOT NULL" else "5"
    (f,) = parse_filters([[{"attribute": "EMPLOYEEID", "operator": written, "value": value}]], "f")
    assert f.clauses == (Clause("employeeId", canonical, value),)


def test_values_are_kept_as_text_and_integers_normalised():
    (f,) = parse_filters(
        [
            [
                {"attribute": "postalCode", "operator": "EQUALS", "value": 1234},
                {"attribute": "employeeId", "operator": "Greater_Than", "value": " +0042 "},
            ]
        ],
        "f",
    )
    assert f.clauses[0].value == "1234" and f.clauses[1].value == "42"


KNOWN = ", ".join(ENTRA_ATTRIBUTES)
OPS = ", ".join(OPERATORS)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"a": 1}, "t.scope.filters: must be a list of filters, each a list of clauses"),
        ([], "t.scope.filters: is empty; remove it to put every user in scope, or add a filter"),
        (
            [[{"attribute": "city", "operator": "IS NULL"}], []],
            "t.scope.filters[1]: has no clauses; give at least one or remove the filter",
        ),
        (
            [{"attribute": "city", "operator": "IS NULL"}],
            "t.scope.filters[0]: is one clause, but a filter is a list of clauses; wrap it in a list",
        ),
        (["city"], "t.scope.filters[0]: must be a list of clauses"),
        ([["city"]], "t.scope.filters[0][0]: must be a mapping with attribute, operator"),
        (
            [[{"attribute": "city", "operator": "IS NULL", "valeu": 1}]],
            "t.scope.filters[0][0]: unknown key 'valeu'; a clause has only attribute, operator, value",
        ),
        ([[{"operator": "IS NULL"}]], f"t.scope.filters[0][0].attribute: required; name an Entra attribute: {KNOWN}"),
        (
            [[{"attribute": "dept", "operator": "IS NULL"}]],
            f"t.scope.filters[0][0].attribute: 'dept' is not an Entra attribute the sync reads; use one of: {KNOWN}",
        ),
        ([[{"attribute": "city"}]], f"t.scope.filters[0][0].operator: required; use one of: {OPS}"),
        (
            [[{"attribute": "city", "operator": "LIKE", "value": "x"}]],
            f"t.scope.filters[0][0].operator: 'LIKE' is not an Entra scoping operator; use one of: {OPS}",
        ),
        ([[{"attribute": "city", "operator": 3}]], "t.scope.filters[0][0].operator: 3 is not an operator; use one of"),
        (
            [[{"attribute": "city", "operator": "IS NULL"}, {"attribute": "city", "operator": "EQUALS"}]],
            "t.scope.filters[0][1].value: EQUALS needs a value; to test for an empty attribute use IS NULL",
        ),
        (
            [[{"attribute": "city", "operator": "Includes", "value": ""}]],
            "t.scope.filters[0][0].value: Includes needs a value; to test for an empty attribute use IS NULL",
        ),
        (
            [[{"attribute": "city", "operator": "IS NULL", "value": "x"}]],
            "t.scope.filters[0][0].value: IS NULL takes no value; remove value ('x')",
        ),
        (
            [[{"attribute": "accountEnabled", "operator": "IS TRUE", "value": True}]],
            "t.scope.filters[0][0].value: IS TRUE takes no value; remove value (True)",
        ),
        (
            [[{"attribute": "city", "operator": "EQUALS", "value": 1.5}]],
            "t.scope.filters[0][0].value: 1.5 must be text; quote it in the YAML, e.g. '1.5'",
        ),
        (
            [[{"attribute": "employeeId", "operator": "Greater_Than", "value": "1e6"}]],
            "t.scope.filters[0][0].value: Greater_Than compares integers and '1e6' is not one; Entra requires an "
            "integer value such as 1000000",
        ),
        (
            [[{"attribute": "employeeId", "operator": "Greater_Than_OR_EQUALS"}]],
            "t.scope.filters[0][0].value: Greater_Than_OR_EQUALS needs a value",
        ),
        (
            [[{"attribute": "city", "operator": "REGEX MATCH", "value": "Os(lo"}]],
            "t.scope.filters[0][0].value: 'Os(lo' is not a valid regular expression: missing ), unterminated "
            "subpattern at position 2; fix the pattern",
        ),
        (
            [[{"attribute": "city", "operator": "NOT REGEX MATCH", "value": r"(?<city>Oslo)"}]],
            "t.scope.filters[0][0].value: '(?<city>Oslo)' is not a valid regular expression: unknown extension ?<c "
            "at position 1",
        ),
        (
            [[{"attribute": "city", "operator": "REGEX MATCH", "value": "[a-z-[aeiou]]"}]],
            "t.scope.filters[0][0].value: '[a-z-[aeiou]]' uses .NET character class subtraction at position 4",
        ),
        (
            [[{"attribute": "city", "operator": "REGEX MATCH", "value": "[[a]]"}]],
            "t.scope.filters[0][0].value: '[[a]]' is ambiguous (Possible nested set at position 1)",
        ),
        (
            [[{"attribute": "businessPhones", "operator": "IS NOT NULL"}]],
            "t.scope.filters[0][0].attribute: businessPhones is multi-valued, and Entra scoping filters do not "
            "support multi-valued attributes",
        ),
        (
            [[{"attribute": "accountEnabled", "operator": "EQUALS", "value": "true"}]],
            "t.scope.filters[0][0].operator: accountEnabled is a Boolean; use IS TRUE, IS FALSE, IS NULL or IS NOT "
            "NULL, not EQUALS",
        ),
        (
            [[{"attribute": "department", "operator": "IS TRUE"}]],
            "t.scope.filters[0][0].operator: IS TRUE tests a Boolean and department is text, so it would never hold; "
            "use it on accountEnabled",
        ),
        (
            [[{"attribute": "employeeId", "operator": "Less_Than", "value": "five"}]],
            "t.scope.filters[0][0].value: Less_Than compares integers and 'five' is not one",
        ),
        (
            [[{"attribute": "city", "operator": "&", "value": "x"}]],
            "t.scope.filters[0][0].operator: '&' is not supported: Entra documents & only as",
        ),
        (
            [[{"attribute": "city", "operator": "!&", "value": "x"}]],
            "t.scope.filters[0][0].operator: '!&' is not supported: Entra documents !& only as",
        ),
    ],
)
def test_parse_errors_name_the_path_and_say_what_to_do(raw, message):
    with pytest.raises(ScopeFilterError) as caught:
        parse_filters(raw, "t.scope.filters")
    assert str(caught.value).startswith(message), str(caught.value)


def test_parse_error_is_a_value_error():
    assert issubclass(ScopeFilterError, ValueError)


def test_clause_text():
    assert clause_text(Clause("department", "EQUALS", "Sales")) == "department EQUALS 'Sales'"
    assert clause_text(Clause("jobTitle", "IS NOT NULL", None)) == "jobTitle IS NOT NULL"
    assert clause_text(Clause("employeeId", "Greater_Than", "1000000")) == "employeeId Greater_Than 1000000"
    assert clause_text(Clause("mail", "REGEX MATCH", r".*\@x\.com")) == r"mail REGEX MATCH '.*\@x\.com'"


EXPLAINED = parse_filters(
    [
        [
            {"attribute": "department", "operator": "EQUALS", "value": "Sales"},
            {"attribute": "accountEnabled", "operator": "IS TRUE"},
        ],
        [
            {"attribute": "employeeId", "operator": "Greater_Than", "value": 1000},
            {"attribute": "city", "operator": "IS NOT NULL"},
        ],
    ],
    "f",
)


@pytest.mark.parametrize(
    ("row", "text"),
    [
        (
            {"department": "Sales", "account_enabled": True, "employee_id": None, "city": None},
            "in scope: filter 1 matched (department EQUALS 'Sales' and accountEnabled IS TRUE)",
        ),
        (
            {"department": "Marketing", "account_enabled": True, "employee_id": "1001", "city": "Oslo"},
            "in scope: filter 2 matched (employeeId Greater_Than 1000 and city IS NOT NULL)",
        ),
        (
            {"department": "Marketing", "account_enabled": False, "employee_id": "12", "city": "Oslo"},
            "out of scope: filter 1: department EQUALS 'Sales' failed (department is 'Marketing'); "
            "filter 2: employeeId Greater_Than 1000 failed (employeeId is '12')",
        ),
        (
            {"department": "Sales", "account_enabled": None, "employee_id": "5000", "city": ""},
            "out of scope: filter 1: accountEnabled IS TRUE failed (accountEnabled is null); "
            "filter 2: city IS NOT NULL failed (city is empty)",
        ),
        (
            {"department": "Sales", "account_enabled": False, "employee_id": 7, "city": "Oslo"},
            "out of scope: filter 1: accountEnabled IS TRUE failed (accountEnabled is False); "
            "filter 2: employeeId Greater_Than 1000 failed (employeeId is 7)",
        ),
    ],
)
def test_explain_names_the_matching_filter_or_each_first_failure(row, text):
    assert explain(row, EXPLAINED) == text
    assert in_scope(pd.DataFrame([row]), EXPLAINED).iloc[0] == text.startswith("in scope")


def test_explain_takes_a_staged_row_series():
    staged = pd.DataFrame({"department": ["Sales"], "account_enabled": [True], "employee_id": [None], "city": [None]})
    assert explain(staged.iloc[0], EXPLAINED).startswith("in scope: filter 1 matched")


def test_attributes_needed():
    assert attributes_needed(EXPLAINED) == {"department", "accountEnabled", "employeeId", "city"}
    assert attributes_needed(()) == set()


def test_a_missing_column_is_an_error_not_out_of_scope():
    with pytest.raises(ScopeFilterError, match="no column 'city' for the attribute city"):
        in_scope(
            pd.DataFrame({"department": ["Sales"]}),
            parse_filters([[{"attribute": "city", "operator": "IS NULL"}]], "f"),
        )
    with pytest.raises(ScopeFilterError, match="no column 'city' for the attribute city"):
        explain({"department": "Sales"}, parse_filters([[{"attribute": "city", "operator": "IS NULL"}]], "f"))


def test_columns_mapping_is_honoured():
    filters = parse_filters([[{"attribute": "department", "operator": "EQUALS", "value": "Sales"}]], "f")
    staged = pd.DataFrame({"dept": ["Sales", "x"]})
    assert in_scope(staged, filters, {"department": "dept"}).tolist() == [True, False]


# --------------------------------------------------------------------------- vectorised == per-row, generated


TEXTS = [
    "Sales",
    "sales",
    "SALES",
    "Presales",
    "Sales ",
    " Sales",
    "",
    None,
    np.nan,
    "Engineering",
    "R&D",
    "a@contoso.com",
    "A@Contoso.com",
    "a@contoso.com.evil",
    "x@fabrikam.com",
    "100",
    "1000",
    "0999",
    "+5",
    "-12",
    " 42 ",
    "1,000",
    "1e3",
    "12.5",
    "\u0661\u0662",
    "99999999999999999999",
    "true",
    "False",
    "null",
    "Ünïcødé",
    "line\nbreak",
    "tab\t",
    "(x)",
    "[a]",
]
VALUES = [*TEXTS, 7, 1000, 0, 1, 3.0, True, False]
BOOLEANS = [True, False, None, np.nan, "true", "false", "TRUE", " False ", "", 1, 0, "1", "yes", 2]
CLAUSE_VALUES = {
    "EQUALS": ["Sales", "100", "", "7", "True"],
    "NOT EQUALS": ["Sales", "1000", "7"],
    "Includes": ["Sales", "ale", "@", "0", " "],
    "ENDS_WITH": ["Sales", "com", "0", " "],
    "REGEX MATCH": ["Sales", "^Sales$", "(?i)sales", r"^[0-9]+$", r"contoso\.com$", ".", "^$", r"\s"],
    "NOT REGEX MATCH": ["Sales", "^Sales$", r"^[0-9]+$", r"\d"],
    "Greater_Than": ["0", "99", "1000", "-20", "999999999999999999"],
    "Greater_Than_OR_EQUALS": ["0", "100", "1000", "42"],
    "Less_Than": ["0", "99", "1000", "-20"],
    "Less_Than_OR_EQUALS": ["0", "100", "42"],
    "Not Includes": ["Sales", "ale", "@", "0"],
}
TEXT_ATTRIBUTES = ["department", "jobTitle", "employeeId", "city"]


def _random_clause(rng: random.Random) -> dict[str, Any]:
    operator = rng.choice(OPERATORS)
    if operator in ("IS TRUE", "IS FALSE"):
        return {"attribute": "accountEnabled", "operator": operator}
    attribute = rng.choice(
        [*TEXT_ATTRIBUTES, "accountEnabled"] if operator in ("IS NULL", "IS NOT NULL") else TEXT_ATTRIBUTES
    )
    if operator in ("IS NULL", "IS NOT NULL"):
        return {"attribute": attribute, "operator": operator}
    value = rng.choice([v for v in CLAUSE_VALUES[operator] if v])
    return {"attribute": attribute, "operator": operator, "value": value}


def _reference(row: dict[str, Any], filters: tuple[ScopeFilter, ...]) -> bool:
    if not filters:
        return True
    return any(all(clause_holds(row[ENTRA_ATTRIBUTES[c.attribute]], c) for c in f.clauses) for f in filters)


def test_vectorised_in_scope_equals_the_per_row_reference():
    rng = random.Random(20240611)
    rows = 500
    columns = {ENTRA_ATTRIBUTES[a]: [rng.choice(VALUES) for _ in range(rows)] for a in TEXT_ATTRIBUTES}
    columns["account_enabled"] = [rng.choice(BOOLEANS) for _ in range(rows)]
    staged = pd.DataFrame({name: pd.Series(values, dtype=object) for name, values in columns.items()})
    staged.index = [rng.randrange(rows // 2) for _ in range(rows)]  # repeated, unordered labels
    records = staged.to_dict("records")
    checked = 0
    for _ in range(150):
        raw = [[_random_clause(rng) for _ in range(rng.randint(1, 3))] for _ in range(rng.randint(1, 3))]
        filters = parse_filters(raw, "f")
        expected = [_reference(row, filters) for row in records]
        assert in_scope(staged, filters).tolist() == expected, raw
        checked += sum(expected)
    assert 0 < checked < 150 * rows  # the generated filters neither all fail nor all pass
    # every single clause on its own, each operator with each value, over every column it may read
    for operator, values in CLAUSE_VALUES.items():
        for value in values:
            if not value:
                continue
            for attribute in TEXT_ATTRIBUTES:
                filters = parse_filters([[{"attribute": attribute, "operator": operator, "value": value}]], "f")
                expected = [_reference(row, filters) for row in records]
                assert in_scope(staged, filters).tolist() == expected, (attribute, operator, value)
    for operator in ("IS TRUE", "IS FALSE", "IS NULL", "IS NOT NULL"):
        filters = parse_filters([[{"attribute": "accountEnabled", "operator": operator}]], "f")
        expected = [_reference(row, filters) for row in records]
        assert in_scope(staged, filters).tolist() == expected, operator


def test_typed_columns_give_the_same_results_as_object_columns():
    values = ["Sales", None, "", "100", "sales"]
    filters = parse_filters(
        [
            [{"attribute": "department", "operator": "REGEX MATCH", "value": "^[A-Z]"}],
            [{"attribute": "department", "operator": "Greater_Than", "value": 50}],
        ],
        "f",
    )
    expected = [True, False, False, True, False]
    for dtype in (object, "string", pd.StringDtype("pyarrow"), "str"):
        assert in_scope(pd.DataFrame({"department": pd.Series(values, dtype=dtype)}), filters).tolist() == expected
    enabled = parse_filters([[{"attribute": "accountEnabled", "operator": "IS TRUE"}]], "f")
    for column in (pd.Series([True, False, None], dtype="boolean"), pd.Series([1, 0, None], dtype="Int64")):
        assert in_scope(pd.DataFrame({"account_enabled": column}), enabled).tolist() == [True, False, False]


@pytest.mark.parametrize(
    ("operator", "value", "hits"),
    [
        ("Less_Than", "100", ["5", "99", "-3"]),
        ("Less_Than_OR_EQUALS", "100", ["5", "99", "100", "-3"]),
        ("Not Includes", "Sales", ["Marketing", "sales", "5", "99", "100", "-3", "101", "x1"]),
    ],
)
def test_the_mirrors_of_greater_than_and_includes_the_issue_asks_for(operator, value, hits):
    """Not on Entra's page: Less_Than(_OR_EQUALS) by Greater_Than's integer rule, Not Includes as "does not
    contain"; a null or empty attribute fails all three (the page's null rule)."""
    values = ["5", "99", "100", "101", "-3", "x1", "Marketing", "sales", "Sales dept", None, ""]
    frame = pd.DataFrame({"department": pd.Series(values, dtype=object)})
    filters = parse_filters([[{"attribute": "department", "operator": operator.lower(), "value": value}]], "f")
    assert filters[0].clauses[0].operator == operator
    mask = in_scope(frame, filters)
    assert sorted(v for v, hit in zip(values, mask, strict=True) if hit) == sorted(hits)
    assert [clause_holds(v, filters[0].clauses[0]) for v in values] == list(mask)
