"""Entra expressions: the grammar as Entra writes it, and the checks a config load makes (issue 14, first part)."""

from __future__ import annotations

import pytest
from frankli_sync.entra import ENTRA_ATTRIBUTES
from frankli_sync.expressions import (
    FUNCTIONS,
    REFUSED,
    Attribute,
    Call,
    Constant,
    ExpressionError,
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
        ("Join(,)", "unexpected ','", 6),
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
    assert sorted(FUNCTIONS) == sorted(named)
