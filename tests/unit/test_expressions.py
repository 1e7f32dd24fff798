"""Entra expressions: the grammar as Entra writes it, the checks a config load makes, and the value each function
gives one user (issue 14: expressions.py, and expression_values.py, the scalar reference evaluator)."""

from __future__ import annotations

import copy
import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from frankli_sync.entra import ENTRA_ATTRIBUTES
from frankli_sync.expression_values import FUNCTIONS as EVALUATED
from frankli_sync.expression_values import IGNORE_FLOW, EntraDateTime, evaluate
from frankli_sync.expressions import (
    FUNCTIONS,
    NOT_EVALUATED,
    REFUSED,
    Attribute,
    Call,
    Comparison,
    Constant,
    ExpressionError,
    Number,
    Omitted,
    Word,
    attributes_of,
    check,
    parse,
)

READ = set(ENTRA_ATTRIBUTES)


def test_a_call_of_attributes_and_constants_is_read_with_its_columns() -> None:
    tree = parse('Join(" ", [givenName], [surname])')
    assert tree == Call("Join", (Constant(" ", 6), Attribute("givenName", 12), Attribute("surname", 25)), 1)
    check(tree, READ)
    assert attributes_of(tree) == {"givenName", "surname"}


def test_nested_calls_and_calls_without_arguments() -> None:
    tree = parse("ToLower(NormalizeDiacritics([mail]))")
    assert tree == Call("ToLower", (Call("NormalizeDiacritics", (Attribute("mail", 30),), 9),), 1)
    assert parse("Now()") == Call("Now", (), 1)
    assert parse("  Coalesce( [officeLocation] ,\n [city] )") == Call(
        "Coalesce", (Attribute("officeLocation", 14), Attribute("city", 34)), 3
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (r'"Company name: \"Contoso\""', 'Company name: "Contoso"'),  # Entra's own example of an escape
        (r'"C:\\temp"', "C:\\temp"),
        ('""', ""),
        ('"a, b (c) [d]"', "a, b (c) [d]"),  # the grammar's own characters inside a string are text
    ],
)
def test_string_constants_keep_their_text_and_unescape_quotes_and_backslashes(text: str, value: str) -> None:
    assert parse(text) == Constant(value, 1)


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ('Join(" ", [givenName]', "ends early", 21),
        ("Join(, [mail]", "ends early", 13),
        ("[givenName] [surname]", "unexpected '['", 13),
        ("[]", "expected an attribute name", 2),
        ("", "non-empty", None),
    ],
)
def test_a_text_outside_the_grammar_is_refused_with_its_column(text: str, message: str, column: int | None) -> None:
    with pytest.raises(ExpressionError) as raised:
        parse(text)
    assert message in str(raised.value) and raised.value.column == column


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ('join(" ", [givenName])', "join is not an Entra expression function; did you mean Join?", 1),
        ('Concat("a", "b")', "Concat is not an Entra expression function", 1),
        ("Left([mail])", "Left takes 2 arguments, not 1", 1),
        ('Mid([mail], "1")', "Mid takes 3 arguments, not 2", 1),
        ('FormatDateTime([employeeHireDate], "a", "b", "c", "d")', "takes 3 to 4 arguments, not 5", 1),
        ("Join()", "Join takes 2 or more arguments, not 0", 1),
        ("Join(, [mail])", "argument 1 of Join may not be left out", 1),
        ("Left([mail], )", "argument 2 of Left may not be left out", 1),
        ('Join(" ", [givenName], [shoeSize])', "[shoeSize] is not an Entra attribute the sync reads", 25),
        ('ToLower(Join(" ", [nope]))', "[nope] is not an Entra attribute", 20),
    ],
)
def test_the_check_names_the_function_or_attribute_and_where(text: str, message: str, column: int) -> None:
    with pytest.raises(ExpressionError) as raised:
        check(parse(text), READ)
    assert message in str(raised.value) and raised.value.column == column


@pytest.mark.parametrize("function", sorted(REFUSED))
def test_entra_functions_without_meaning_here_are_refused_saying_why(function: str) -> None:
    with pytest.raises(ExpressionError) as raised:
        check(parse(f"{function}([mail])"), READ)
    assert f"{function} is not supported here: {REFUSED[function]}" in str(raised.value)
    assert function not in FUNCTIONS


def test_every_function_the_issue_names_is_known() -> None:
    named = [
        "Append",
        "CBool",
        "CStr",
        "Coalesce",
        "DateAdd",
        "DateDiff",
        "FormatDateTime",
        "IgnoreFlowIfNullOrEmpty",
        "IIF",
        "InStr",
        "IsNull",
        "IsNullOrEmpty",
        "IsPresent",
        "IsString",
        "Item",
        "Join",
        "Left",
        "Mid",
        "NormalizeDiacritics",
        "Not",
        "Now",
        "RemoveDuplicates",
        "Replace",
        "Split",
        "StripSpaces",
        "Switch",
        "ToLower",
        "ToUpper",
        "Word",
    ]
    assert sorted(set(FUNCTIONS) - {"CDate"}) == sorted(named)  # CDate: the date examples need it


def test_numbers_bare_words_and_arguments_left_out_are_read_as_microsofts_examples_write_them() -> None:
    assert parse('InStr("repEated","e",3,vbBinaryCompare)') == Call(
        "InStr", (Constant("repEated", 7), Constant("e", 18), Number(3, 22), Word("vbBinaryCompare", 24)), 1
    )
    replace = parse('Replace([mail], "@contoso.com", , ,"", ,)')
    assert isinstance(replace, Call)
    assert [type(a).__name__ for a in replace.arguments] == [
        "Attribute", "Constant", "Omitted", "Omitted", "Constant", "Omitted", "Omitted"
    ]  # fmt: skip
    assert parse('DateAdd("d", -10, [employeeHireDate])').arguments[1] == Number(-10, 14)  # type: ignore[union-attr]
    assert Omitted() in replace.arguments


def test_conditions_compare_two_terms_as_iif_and_cbool_take_them() -> None:
    tree = parse('IIF([country]="USA",[country],[department])')
    assert isinstance(tree, Call)
    assert tree.arguments[0] == Comparison("=", Attribute("country", 6), Constant("USA", 15), 14)
    assert parse('DateDiff("d", Now(), [employeeHireDate]) > 5') == Comparison(
        ">",
        Call("DateDiff", (Constant("d", 10), Call("Now", (), 15), Attribute("employeeHireDate", 23)), 1),
        Number(5, 44),
        42,
    )
    check(tree, READ)
    assert attributes_of(tree) == {"country", "department"}
    with pytest.raises(ExpressionError, match="unexpected '='"):
        parse('[country] = "USA" = "x"')


EXAMPLES = json.loads((Path(__file__).parent / "entra_expression_examples.json").read_text())


def _documented() -> list[tuple[str, str, bool]]:
    """(function, expression, usable) of every example Microsoft's reference page gives."""
    found = []
    for function, entry in EXAMPLES["functions"].items():
        for example in entry.get("examples", []) + entry.get("described_examples", []):
            found.append((function, example["expression"], not example.get("page_inconsistent")))
    for function, entry in EXAMPLES["unsupported_details"].items():
        found += [(function, e["expression"], True) for e in entry.get("examples", [])]
    return found


@pytest.mark.parametrize(("function", "expression", "usable"), _documented())
def test_every_expression_on_microsofts_reference_page_is_read_and_checked(
    function: str, expression: str, usable: bool
) -> None:
    """Grammar, function names and arities hold for every documented example; the functions this sync
    refuses or does not evaluate are named as such (the attributes are the example's own)."""
    tree = parse(expression)
    used = {n for n in NOT_EVALUATED if f"{n}(" in expression} | {n for n in REFUSED if f"{n}(" in expression}
    if not used:
        check(tree, attributes_of(tree))
        return
    with pytest.raises(ExpressionError) as raised:
        check(tree, attributes_of(tree))
    assert "does not evaluate" in str(raised.value) or "not supported here" in str(raised.value)


def _functions_of(node: Any) -> set[str]:
    if isinstance(node, Call):
        return {node.function}.union(*(_functions_of(a) for a in node.arguments))
    if isinstance(node, Comparison):
        return _functions_of(node.left) | _functions_of(node.right)
    return set()


def _with_outputs() -> list[Any]:
    """Documented examples with a concrete output, every input given, and deterministic."""
    cases = []
    for function, entry in EXAMPLES["functions"].items():
        for example in entry.get("examples", []):
            if example.get("page_inconsistent") or example.get("nondeterministic"):
                continue
            tree = parse(example["expression"])
            if not attributes_of(tree) <= set(example.get("inputs") or {}):
                continue  # the page names no value for an attribute it reads (CStr([dn]))
            cases.append(
                pytest.param(
                    example["expression"],
                    tree,
                    example["inputs"],
                    example["output"],
                    id=f"{function}: {example['expression']}",
                )
            )
    return cases


# Documented outputs the page's own expression cannot give: what it gives, and why. Asserted, not skipped
# (the examples file does not flag them page_inconsistent).
PAGE_ERRORS: dict[str, tuple[Any, str]] = {
    'Replace([mobile], , "[()\\\\s-]+", , "", , )': (
        "+19998887777",
        "the class [()\\s-] has no '+', so .NET's Regex.Replace (and Python's) keeps it; the page says 19998887777",
    ),
}


@pytest.mark.parametrize(("expression", "tree", "inputs", "output"), _with_outputs())
def test_documented_examples_give_the_documented_output(
    expression: str, tree: Any, inputs: dict[str, Any], output: Any
) -> None:
    expected = PAGE_ERRORS[expression][0] if expression in PAGE_ERRORS else output
    assert evaluate(tree, inputs) == expected


def test_a_page_error_is_a_documented_example_whose_output_differs() -> None:
    documented = {case.values[0]: case.values[3] for case in _with_outputs()}
    for expression, (value, _why) in PAGE_ERRORS.items():
        assert expression in documented and documented[expression] != value


def test_nothing_documented_is_skipped_and_everything_the_check_accepts_is_evaluated() -> None:
    documented = set().union(*(_functions_of(case.values[1]) for case in _with_outputs()))
    assert documented <= set(EVALUATED)
    assert {"CDate", "DateAdd", "DateDiff", "FormatDateTime", "Replace"} <= documented
    assert set(EVALUATED) == set(FUNCTIONS)  # what check() lets through, evaluate() computes
    assert not set(EVALUATED) & set(NOT_EVALUATED)


@pytest.mark.parametrize(
    ("expression", "row", "value"),
    [
        ('Join(" ", [givenName], [surname])', {"givenName": "Zoë", "surname": None}, "Zoë"),
        ('Coalesce([officeLocation], [city], "Remote")', {"officeLocation": None, "city": None}, "Remote"),
        ('Switch([country], "Other", "IE", "Ireland", "DE", "Germany")', {"country": "IE"}, "Ireland"),
        ('Switch([country], "Other", "IE", "Ireland")', {"country": "ie"}, "Other"),  # keys are case-sensitive
        ('IIF([country]="USA", [country], [department])', {"country": None, "department": "Sales"}, "Sales"),
        ('IIF([country]<>"USA", "abroad", "home")', {"country": "IE"}, "abroad"),
        ("ToLower(NormalizeDiacritics([mail]))", {"mail": "Ægir.Sørensen@Contoso.com"}, "aegir.soerensen@contoso.com"),
        ('Word("a,,b", 2, ",")', {}, "b"),
        ('Mid("Doe", 2, 10)', {}, "oe"),
        ('Left("Doe", -1)', {}, "Doe"),
        ('InStr("The quick brown fox", "slow")', {}, 0),
        ("Not(IsPresent([mail]))", {"mail": ""}, True),
    ],
)
def test_the_page_s_rules_for_nulls_keys_and_bounds(expression: str, row: dict[str, Any], value: Any) -> None:
    assert evaluate(parse(expression), row) == value


def test_a_function_not_evaluated_yet_is_named_never_guessed() -> None:
    assert "PCase" in NOT_EVALUATED
    with pytest.raises(ExpressionError, match="PCase is not evaluated yet") as raised:
        evaluate(Call("PCase", (Attribute("displayName", 7),), 1), {"displayName": "john doe"})
    assert raised.value.column == 1


def test_normalize_diacritics_maps_every_letter_of_the_page_s_table_in_either_unicode_form() -> None:
    import unicodedata

    from frankli_sync.expression_values import normalize_diacritics

    rows = EXAMPLES["functions"]["NormalizeDiacritics"]["character_table"]
    for lower, plain_lower, upper, plain_upper in rows:
        for letters, plain in ((lower, plain_lower), (upper, plain_upper)):
            for letter in filter(None, letters.split(", ")):
                assert normalize_diacritics(letter) == plain, letter
                assert normalize_diacritics(unicodedata.normalize("NFD", letter)) == plain, letter
    assert normalize_diacritics("Đorđe ŵ") == "Đorđe ŵ", "a letter the table does not list is kept"


# ---- The functions past the first twenty: null, empty, multi-valued and the edges the page leaves open ----

CLOCK = datetime(2021, 7, 2, 15, 33, 38, tzinfo=UTC)  # the page's sample value of Now()
NINE_AT_PLUS_2 = datetime(2021, 3, 1, 9, tzinfo=timezone(timedelta(hours=2)))


def _value(expression: str, row: dict[str, Any] | None = None, now: datetime | None = None) -> Any:
    return evaluate(parse(expression), row or {}, now=now)


def _refused(expression: str, message: str, row: dict[str, Any] | None = None, now: datetime | None = None) -> None:
    with pytest.raises(ExpressionError) as raised:
        _value(expression, row, now)
    assert message in str(raised.value), str(raised.value)
    assert raised.value.column is not None


@pytest.mark.parametrize(
    ("expression", "row", "value"),
    [
        # The page's CDate section (its examples are not in the examples file: CDate was not requested).
        ("CDate([StatusHireDate])", {"StatusHireDate": "2020-03-16-07:00"}, "3/16/2020 7:00:00 AM"),
        ('CDate("2021-06-30+08:00")', {}, "6/29/2021 4:00:00 PM"),
        ('CDate("2009-06-15T01:45:30-07:00")', {}, "6/15/2009 8:45:30 AM"),
        # Graph's ISO text, with and without a fraction; Entra's own text read back; a time without an offset is UTC.
        ("CDate([employeeHireDate])", {"employeeHireDate": "2021-03-01T00:00:00Z"}, "3/1/2021 12:00:00 AM"),
        ("CDate([employeeHireDate])", {"employeeHireDate": "2021-03-01T13:05:09.1234567Z"}, "3/1/2021 1:05:09 PM"),
        ('CDate("8/25/2021 5:41:18 PM")', {}, "8/25/2021 5:41:18 PM"),
        ('CDate("12/1/2021 12:00:00 AM")', {}, "12/1/2021 12:00:00 AM"),
        ('CDate("2021-08-24")', {}, "8/24/2021 12:00:00 AM"),
        ("CDate([employeeHireDate])", {"employeeHireDate": NINE_AT_PLUS_2}, "3/1/2021 7:00:00 AM"),  # a datetime
        ("CDate([employeeHireDate])", {"employeeHireDate": None}, None),
        ("CDate([employeeHireDate])", {"employeeHireDate": ""}, None),
        ("CDate([employeeHireDate])", {"employeeHireDate": []}, None),
    ],
)  # fmt: skip
def test_cdate_gives_the_utc_date_as_entra_shows_it(expression: str, row: dict[str, Any], value: Any) -> None:
    result = _value(expression, row)
    assert result == value
    assert value is None or isinstance(result, EntraDateTime)


@pytest.mark.parametrize("text", ["2021-02-30", "next Tuesday", "31/12/2021", "2021-03-01T25:00:00Z", "13/1/2021"])
def test_cdate_of_a_text_that_is_no_date_fails_naming_the_text(text: str) -> None:
    _refused("CDate([employeeHireDate])", f"CDate cannot read {text!r} as a date", {"employeeHireDate": text})


def test_a_date_value_is_its_text_and_keeps_its_moment_through_pickle_and_copy() -> None:
    date = _value('CDate("2009-06-15T01:45:30-07:00")')
    assert date == "6/15/2009 8:45:30 AM" and str(date) == "6/15/2009 8:45:30 AM"
    assert date.moment == datetime(2009, 6, 15, 8, 45, 30, tzinfo=UTC)
    for again in (pickle.loads(pickle.dumps(date)), copy.deepcopy(date)):
        assert again == date and again.moment == date.moment
    assert json.dumps({"d": date}) == '{"d": "6/15/2009 8:45:30 AM"}'


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ('DateAdd("m", 1, CDate("2024-01-31"))', "2/29/2024 12:00:00 AM"),  # .NET's AddMonths: the month's last day
        ('DateAdd("yyyy", 1, CDate("2024-02-29"))', "2/28/2025 12:00:00 AM"),
        ('DateAdd("m", -13, CDate("2024-01-15"))', "12/15/2022 12:00:00 AM"),
        ('DateAdd("h", 13, CDate("2024-01-15"))', "1/15/2024 1:00:00 PM"),
        ('DateAdd("n", -1, CDate("2024-01-15"))', "1/14/2024 11:59:00 PM"),
        ('DateAdd("s", 90, CDate("2024-01-15"))', "1/15/2024 12:01:30 AM"),
        (
            'DateAdd("ww", -1, DateAdd("d", 7, CDate("2024-01-15")))',
            "1/15/2024 12:00:00 AM",
        ),  # its own result is a date
        ('DateAdd("d", [department], CDate("2024-01-15"))', "1/18/2024 12:00:00 AM"),  # a number as text
    ],
)
def test_date_add_moves_the_date_by_calendar_rules(expression: str, value: str) -> None:
    assert _value(expression, {"department": " 3 "}) == value


@pytest.mark.parametrize(
    ("expression", "row", "message"),
    [
        ('DateAdd("d", 7, [employeeHireDate])', {"employeeHireDate": "2024-01-01"}, "must be a date from CDate or Now"),
        ('DateAdd("D", 7, CDate("2024-01-01"))', {}, "interval 'D' is none of the page's (yyyy, m, d, ww, h, n, s)"),
        ('DateAdd("q", 1, CDate("2024-01-01"))', {}, "interval 'q' is none of the page's"),
        ('DateAdd("d", "seven", CDate("2024-01-01"))', {}, "DateAdd's value 'seven' is not a whole number"),
        ('DateAdd("yyyy", 8000, CDate("2024-01-01"))', {}, "out of the calendar's range"),
        ('DateAdd("d", 1, CDate([employeeHireDate]))', {"employeeHireDate": ["2024-01-01", "2024-02-01"]},
         "CDate reads one value, not the 2 of a multi-valued one"),
    ],
)  # fmt: skip
def test_date_add_refuses_what_the_page_does_not_define(expression: str, row: dict[str, Any], message: str) -> None:
    _refused(expression, message, row)


def test_date_add_and_date_diff_of_a_null_date_are_null_and_fail_an_iif_condition() -> None:
    row = {"employeeHireDate": None}
    assert _value('DateAdd("d", 7, CDate([employeeHireDate]))', row) is None
    assert _value('DateAdd("d", [department], CDate("2024-01-01"))', {"department": None}) is None
    assert _value('DateDiff("d", Now(), CDate([employeeHireDate]))', row, CLOCK) is None
    assert _value('IIF(DateDiff("d", Now(), CDate([employeeHireDate])) > 5, "later", "soon")', row, CLOCK) == "soon"


@pytest.mark.parametrize(
    ("interval", "date1", "date2", "value"),
    [
        ("yyyy", "12/31/2020 11:59:59 PM", "2021-01-01", 1),  # years and months: calendar parts...
        ("m", "2021-01-31", "2021-02-01", 1),
        ("d", "12/31/2020 11:59:59 PM", "2021-01-01", 0),  # ...days to seconds: elapsed time, truncated
        ("s", "12/31/2020 11:59:59 PM", "2021-01-01", 1),
        ("h", "2021-08-25", "2021-08-24T22:30:00Z", -1),  # truncated toward zero, not floored
        ("n", "2021-08-25T00:00:30Z", "2021-08-24T23:59:45Z", 0),
        ("ww", "2021-08-28", "2021-08-29", 1),  # Saturday to Sunday: one Sunday passed
        ("ww", "2021-08-29", "2021-09-04", 0),  # Sunday to Saturday: none
        ("ww", "2021-08-29", "2021-08-28", -1),
        ("d", "2021-08-29", "2021-08-28", -1),
    ],
)
def test_date_diff_counts_each_interval_as_visual_basic_does(interval: str, date1: str, date2: str, value: int) -> None:
    assert _value(f'DateDiff("{interval}", CDate("{date1}"), CDate("{date2}"))') == value


def test_date_diff_refuses_an_undocumented_interval_and_a_date_not_from_cdate() -> None:
    _refused('DateDiff("w", CDate("2021-08-28"), CDate("2021-08-29"))', "interval 'w' is none of the page's")
    _refused('DateDiff("d", "2021-08-28", CDate("2021-08-29"))', "DateDiff's date1 must be a date from CDate or Now")


def test_now_is_the_run_s_clock_in_utc_and_without_one_is_refused() -> None:
    assert _value("Now()", now=CLOCK) == "7/2/2021 3:33:38 PM"  # the page's sample value, in its format
    assert _value("Now()", now=datetime(2021, 7, 2, 17, 33, 38, tzinfo=timezone(timedelta(hours=2)))) == (
        "7/2/2021 3:33:38 PM"
    )
    assert _value('DateDiff("d", Now(), CDate([employeeHireDate]))', {"employeeHireDate": "2021-07-09"}, CLOCK) == 6
    with pytest.raises(ExpressionError, match="Now needs the run's clock") as raised:
        _value('DateAdd("d", 1, Now())')
    assert raised.value.column == 17


@pytest.mark.parametrize(
    ("expression", "source", "value"),
    [
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-ddTHH:mm:ssZ", "yyyy-MM-dd")', "2021-03-01T00:00:00Z",
         "2021-03-01"),
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-ddTHH:mm:ssK", "dd/MM/yyyy HH:mm:ss.fff K")',
         "2021-03-01T13:05:09Z", "01/03/2021 13:05:09.000 Z"),
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-ddTHH:mm:ss.fffffffK", "yyyyMMddHHmmss.fZ")',
         "2021-03-01T13:05:09.1234567Z", "20210301130509.1Z"),
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-ddTHH:mm:ssK", "d \'of\' MMMM yy, h:mm tt (dddd)")',
         "2021-03-01T13:05:09Z", "1 of March 21, 1:05 PM (Monday)"),
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-dd", "MMM d, yyyy")', " 2021-03-01\t", "Mar 1, 2021"),
        ('FormatDateTime([employeeHireDate], , "d MMMM yyyy tt", "yyyy-MM-dd")', "1 mARCH 2021 am", "2021-03-01"),
        # an offset is converted to UTC (the default styles' RoundtripKind: the service's local time)
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-ddzzz", "yyyy-MM-dd HH:mm K")', "2020-12-31+08:00",
         "2020-12-30 16:00 +00:00"),
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-ddzzz", "yyyy-MM-dd")', "2020-12-31-08:00", "2020-12-31"),
        ('FormatDateTime([employeeHireDate], , "M/d/yyyy hh:mm:ss tt", "yyyy-MM-dd HH:mm")', "3/1/2021 12:30:00 AM",
         "2021-03-01 00:30"),
        ('FormatDateTime([employeeHireDate], "yy-M-d", "yyyy/MM/dd\\\\K")', "49-3-1", "2049/03/01K"),  # 3 arguments
        ('FormatDateTime([employeeHireDate], , "yy-M-d", "yyyy")', "50-3-1", "1950"),
        ('FormatDateTime(CDate([employeeHireDate]), , "M/d/yyyy h:mm:ss tt", "yyyy-MM-dd")', "2012-03-16-07:00",
         "2012-03-16"),
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-dd", "yyyy")', None, None),
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-dd", "yyyy")', "", None),
    ],
)  # fmt: skip
def test_format_date_time_reads_and_writes_dotnet_custom_formats(expression: str, source: Any, value: Any) -> None:
    assert _value(expression, {"employeeHireDate": source}) == value


@pytest.mark.parametrize(
    ("expression", "source", "message"),
    [
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-dd", "yyyy")', "2021-03-01T00:00:00Z",
         "FormatDateTime cannot read '2021-03-01T00:00:00Z' as 'yyyy-MM-dd'"),
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-dd", "yyyy")', "2021-02-30", "'2021-02-30' is no date"),
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-dd", "yyyy.FFF")', "2021-02-03",
         "format specifier 'FFF' is not implemented"),
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-dd", "yyyy gg")', "2021-02-03",
         "format specifier 'gg' is not implemented"),
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-dd", "yyy")', "2021-02-03",
         "format specifier 'yyy' is not implemented"),
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-dd", "o")', "2021-02-03", "standard format 'o'"),
        ('FormatDateTime([employeeHireDate], , "MM-dd", "yyyy")', "02-03", "has no year"),
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-dd hh", "yyyy")', "2021-02-03 01", "h (1-12) without tt"),
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-dd dddd", "yyyy")', "2021-02-03 Monday", "wrong weekday"),
        ('FormatDateTime([employeeHireDate], "AssumeUniversal", "yyyy-MM-dd", "yyyy")', "2021-02-03",
         "dateTimeStyles 'AssumeUniversal' is not implemented"),
        ('FormatDateTime([employeeHireDate], , "yyyy-MM-dd", "yyyy")', ["2021-02-03"] * 2, "reads one value"),
    ],
)  # fmt: skip
def test_format_date_time_refuses_rather_than_guesses(expression: str, source: Any, message: str) -> None:
    _refused(expression, message, {"employeeHireDate": source})


@pytest.mark.parametrize(
    ("expression", "row", "value"),
    [
        ('Replace([jobTitle], "Developer", , , "Engineer", , )', {"jobTitle": "Developer, Lead Developer"},
         "Engineer, Lead Engineer"),  # every occurrence...
        ('Replace([jobTitle], "developer", , , "Engineer", , )', {"jobTitle": "Developer"}, "Developer"),  # ...by case
        ('Replace([jobTitle], "Developer", , , "Engineer", , )', {"jobTitle": None}, None),
        ('Replace([jobTitle], "Developer", , , "Engineer", , )', {"jobTitle": ""}, ""),
        ('Replace([mailNickname], "<u>", , , , , "<u>@contoso.com")', {"mailNickname": None}, None),
        ('Replace([mailNickname], "<u>", , , , , "<u>.<u>")', {"mailNickname": "jo"}, "jo.jo"),
        # regexPattern + replacementValue: .NET's substitutions
        ('Replace([mobilePhone], , "(\\\\d+)-(?<rest>\\\\d+)", , "$2/$1 ${rest} $$ $& [$9] ${nope}", , )',
         {"mobilePhone": "12-34"}, "34/12 34 $ 12-34 [$9] ${nope}"),
        ("Replace([mobilePhone], , \"(?'area'\\\\d{3})\\\\k'area'\", , \"${area}\", , )", {"mobilePhone": "555555-1"},
         "555-1"),  # .NET's other named-group and back-reference syntax
        ('Replace([mobilePhone], , "[(?<x>)]", , "", , )', {"mobilePhone": "(?<x>)1"}, "1"),  # a class is literal
        ('Replace([mobilePhone], , "^", , "+", , )', {"mobilePhone": ""}, "+"),
        # regexPattern + regexGroupName + replacementValue: only the group's text in each match
        ('Replace([mail], , "(?<user>[a-z]+)@(?<host>[a-z]+)", "host", "x", , )', {"mail": "a@b, c@d"}, "a@x, c@x"),
        ('Replace([mail], , "(?<user>[a-z]+)(?<host>@[a-z]+)?", "host", "", , )', {"mail": "a@b c"}, "a c"),
        # regexPattern + regexGroupName + replacementAttributeName
        ('Replace([businessPhones], , "\\\\+\\\\d+ (?<n>\\\\d+)", "n", , [mobilePhone], )',
         {"businessPhones": "+1 555", "mobilePhone": "+49 777"}, "+1 555"),
        ('Replace([businessPhones], , "\\\\+\\\\d+ (?<n>\\\\d+)", "n", , [mobilePhone], )',
         {"businessPhones": None, "mobilePhone": "+49 777"}, "777"),
        ('Replace([businessPhones], , "\\\\+\\\\d+ (?<n>\\\\d+)", "n", , [mobilePhone], )',
         {"businessPhones": [], "mobilePhone": None}, None),
    ],
)  # fmt: skip
def test_replace_in_each_of_the_page_s_modes(expression: str, row: dict[str, Any], value: Any) -> None:
    assert _value(expression, row) == value


@pytest.mark.parametrize(
    ("expression", "row", "message"),
    [
        ('Replace([mail], "a", "b", , "c", , )', {"mail": "a"}, "Replace with oldValue + regexPattern + "
         "replacementValue is none of the page's modes"),
        ("Replace([mail], , , , , , )", {"mail": "a"}, "Replace with no argument but source"),
        ('Replace([mail], "a", , , , [department], )', {"mail": "a"}, "oldValue + replacementAttributeName"),
        ('Replace([mail], "", , , "x", , )', {"mail": "a"}, "oldValue is empty"),
        ('Replace([mail], , "(?<a>x", , "", , )', {"mail": "a"}, "regexPattern '(?<a>x' cannot be read"),
        ('Replace([mail], , "(?<a>x)", "b", "", , )', {"mail": "a"}, "regexGroupName 'b' is no group"),
        ('Replace([mail], , "(?<a>x)", "a", "$1", , )', {"mail": "a"}, "whether replacementValue's $ substitutes"),
        ('Replace([mail], , "(?<a>x)", , "$+", , )', {"mail": "x"}, "$+, which is not implemented"),
        ('Replace([mail], , "(?<a>\\\\d+)", "a", , [department], )', {"mail": "", "department": "none"},
         "regexPattern finds no 'a' in 'none'"),
        ('Replace([proxyAddresses], "a", , , "b", , )', {"proxyAddresses": ["a", "b"]}, "Replace reads one value"),
    ],
)  # fmt: skip
def test_replace_refuses_an_undocumented_mode_or_an_unreadable_pattern(
    expression: str, row: dict[str, Any], message: str
) -> None:
    _refused(expression, message, row)


@pytest.mark.parametrize(
    ("index", "values", "value"),
    [
        ("1", ["smtp:a@x", "SMTP:b@x"], "smtp:a@x"),
        ("2", ["smtp:a@x", "SMTP:b@x"], "SMTP:b@x"),
        ("3", ["smtp:a@x", "SMTP:b@x"], None),  # past the last value: none
        ("1", "SMTP:b@x", "SMTP:b@x"),  # a single value is a list of one
        ("2", "SMTP:b@x", None),
        ("1", None, None),
        ("1", [], None),
        ('"2"', ["a", "b"], "b"),
    ],
)
def test_item_is_one_based_and_none_past_the_last_value(index: str, values: Any, value: Any) -> None:
    assert _value(f"Item([proxyAddresses], {index})", {"proxyAddresses": values}) == value


@pytest.mark.parametrize(
    ("index", "message"), [("0", "1-based: 0 is no item"), ("-1", "1-based: -1 is no item"), ('"x"', "'x' is not")]
)
def test_item_refuses_an_index_that_is_no_position(index: str, message: str) -> None:
    _refused(f"Item([proxyAddresses], {index})", message, {"proxyAddresses": ["a"]})


@pytest.mark.parametrize(
    ("values", "value"),
    [
        (["SMTP:a@x", "smtp:b@x", "SMTP:a@x", "smtp:A@x", "smtp:b@x"], ["SMTP:a@x", "smtp:b@x", "smtp:A@x"]),
        (["b", "a", "b", "a"], ["b", "a"]),  # the first of each, in order
        ([], []),
        (None, None),
        ("SMTP:a@x", "SMTP:a@x"),
    ],
)
def test_remove_duplicates_keeps_the_first_of_equal_values_in_order(values: Any, value: Any) -> None:
    assert _value("RemoveDuplicates([proxyAddresses])", {"proxyAddresses": values}) == value


@pytest.mark.parametrize(
    ("expression", "row", "value"),
    [
        ("CBool([givenName] = [surname])", {"givenName": "Ann", "surname": "Ann"}, True),  # the page's example
        ("CBool([givenName] = [surname])", {"givenName": "Ann", "surname": "ann"}, False),
        ("CBool([givenName] = [surname])", {"givenName": None, "surname": None}, False),  # a null fails the condition
        ("CBool([givenName])", {"givenName": "True"}, True),
        ("CBool([givenName])", {"givenName": "false"}, False),
        ("CBool([givenName])", {"givenName": " 0 "}, False),
        ("CBool([givenName])", {"givenName": "-2.5"}, True),
        ("CBool([givenName])", {"givenName": None}, False),
        ("CBool([givenName])", {"givenName": ""}, False),
        ('CBool(InStr([givenName], "n"))', {"givenName": "Ann"}, True),
        ('CBool(InStr([givenName], "x"))', {"givenName": "Ann"}, False),
    ],
)
def test_cbool_is_true_for_a_non_zero_value(expression: str, row: dict[str, Any], value: bool) -> None:
    assert _value(expression, row) is value


def test_cbool_refuses_a_text_that_is_neither_a_boolean_nor_a_number() -> None:
    _refused("CBool([givenName])", "CBool cannot read 'yes' as a boolean or a number", {"givenName": "yes"})
    _refused("CBool([proxyAddresses])", "CBool reads one value", {"proxyAddresses": ["1", "0"]})


@pytest.mark.parametrize("department", [None, "", []])
def test_ignore_flow_if_null_or_empty_gives_the_sentinel_for_a_null_or_empty_value(department: Any) -> None:
    assert _value("IgnoreFlowIfNullOrEmpty([department])", {"department": department}) is IGNORE_FLOW


def test_ignore_flow_if_null_or_empty_passes_a_value_and_its_sentinel_is_one_readable_value() -> None:
    assert _value("IgnoreFlowIfNullOrEmpty([department])", {"department": "Sales"}) == "Sales"
    assert _value("IgnoreFlowIfNullOrEmpty([proxyAddresses])", {"proxyAddresses": ["a"]}) == ["a"]
    switch = 'IgnoreFlowIfNullOrEmpty(Switch([jobTitle], "", "3443", "Dr.", "3444", "Prof."))'  # the page's example 2
    assert _value(switch, {"jobTitle": "3444"}) == "Prof."
    assert _value(switch, {"jobTitle": "9"}) is IGNORE_FLOW
    assert repr(IGNORE_FLOW) == "IGNORE_FLOW"
    assert pickle.loads(pickle.dumps(IGNORE_FLOW)) is IGNORE_FLOW and copy.deepcopy(IGNORE_FLOW) is IGNORE_FLOW
    assert type(IGNORE_FLOW)() is IGNORE_FLOW


def test_ignore_flow_may_be_an_iif_branch_but_not_a_function_s_argument() -> None:
    branch = 'IIF([country]="IE", IgnoreFlowIfNullOrEmpty([department]), "none")'
    assert _value(branch, {"country": "IE", "department": None}) is IGNORE_FLOW
    assert _value(branch, {"country": "DE", "department": None}) == "none"
    _refused('Join(" ", IgnoreFlowIfNullOrEmpty([department]), "x")', "IgnoreFlowIfNullOrEmpty inside Join")
    _refused('IIF(IgnoreFlowIfNullOrEmpty([department]) = "x", "a", "b")', "inside a comparison")


def test_dates_compare_as_equal_or_not_but_their_order_is_left_to_date_diff() -> None:
    assert _value('IIF(CDate("2021-03-01T00:00:00Z") = CDate("3/1/2021"), "same", "other")') == "same"
    assert _value('IIF(CDate("2021-03-01") <> Now(), "other", "same")', now=CLOCK) == "other"
    _refused('IIF(CDate([employeeHireDate]) > Now(), "future", "past")', "a date compared with >", now=CLOCK)
