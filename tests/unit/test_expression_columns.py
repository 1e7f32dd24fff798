"""The column-wise expression evaluator gives, row by row, exactly what the scalar evaluator gives (issue 14).

Oracle: `expression_values.evaluate(tree, row)` on each row of a generated frame (types included: True is
not "True", 0 is not None, a list is a list). Frames hold Microsoft's documented examples' own inputs plus
seeded variations (missing, blank, spaces, case, diacritics in both Unicode forms, numbers as text,
duplicates; flags, whole numbers and lists in the "odd" frames), and each runs twice: attribute columns
factorized (the path low-cardinality columns take) and one value per row (the path of mail-like ones).
"""

from __future__ import annotations

import json
import random
import unicodedata
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from frankli_sync import expression_columns, expression_values
from frankli_sync.entra import ENTRA_ATTRIBUTES
from frankli_sync.expression_columns import evaluate_columns, scalar_evaluator
from frankli_sync.expressions import Call, Comparison, Constant, Node, attributes_of, parse

EXAMPLES = json.loads((Path(__file__).parent / "entra_expression_examples.json").read_text())

BLANKS = [None, "", "  ", " x "]
DIACRITICS = ["Zoë", "Ægir", "Đorđe", unicodedata.normalize("NFD", "Zoë"), "Søren Åberg", "İlkay", "ŁUKASZ Ż"]
NUMBERS = ["0", "1", "3", "42", " 7 ", "-3", "007", "600", "1000"]
TEXTS = ["true", "True", "FALSE", "a, b", "x,,y", "The quick brown fox", "ann.lee@contoso.com", "US", "IE", "de"]
DATES = ["2012-03-16-07:00", "2021-08-24", "2021-08-31+08:00", "8/25/2021 5:41:18 PM", "20150123105347.1Z"]
ODD = [True, False, 0, 7, ["a", "b"], [], ["", "Zoë", None]]


def _functions_of(node: Node) -> set[str]:
    if isinstance(node, Call):
        return {node.function}.union(*(_functions_of(a) for a in node.arguments))
    if isinstance(node, Comparison):
        return _functions_of(node.left) | _functions_of(node.right)
    return set()


def _constants_of(node: Node) -> list[str]:
    if isinstance(node, Constant):
        return [node.value]
    if isinstance(node, Call):
        return [c for a in node.arguments for c in _constants_of(a)]
    if isinstance(node, Comparison):
        return _constants_of(node.left) + _constants_of(node.right)
    return []


def _variations(own: Any) -> list[Any]:
    if isinstance(own, list):
        items = [str(v) for v in own]
        return [own, list(reversed(own)), items[:1], [], [""], [*items, "Zoë"], [None, *items]]
    if not isinstance(own, str):
        return [own]
    return [own, own, own.upper(), own.lower(), own.swapcase(), f" {own} ", own[:3], own + "é", f"{own}, {own}"]


def _pool(tree: Node, own: Any, odd: bool) -> list[Any]:
    return [
        *_variations(own),
        *BLANKS,
        *DIACRITICS,
        *NUMBERS,
        *TEXTS,
        *DATES,
        *_constants_of(tree),
        *(ODD if odd else []),
    ]


def _example_frame(tree: Node, inputs: dict[str, Any], odd: bool, seed: int, rows: int = 300) -> pd.DataFrame:
    """Row 0: the example's own inputs; then `rows - 1` seeded rows drawn from each attribute's variations."""
    rng = random.Random(seed)
    names = sorted(attributes_of(tree))
    pools = {name: _pool(tree, inputs.get(name), odd) for name in names}
    data = {name: [inputs.get(name)] + [rng.choice(pools[name]) for _ in range(rows - 1)] for name in names}
    return pd.DataFrame({name: pd.Series(values, dtype=object) for name, values in data.items()}, index=range(rows))


def _row_values(frame: pd.DataFrame, columns: dict[str, str], names: set[str]) -> Iterator[dict[str, Any]]:
    """Each row as the scalar evaluator reads it: frame.at with NaN/NA as None, absent attributes None."""
    for i in frame.index:
        row = {}
        for name in names:
            column = columns.get(name)
            value = frame.at[i, column] if column in frame.columns else None
            row[name] = None if not isinstance(value, list) and pd.isna(value) else value
        yield row


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _expected(
    tree: Node, frame: pd.DataFrame, columns: dict[str, str], now: datetime | None
) -> tuple[list[Any], dict[Any, Exception]]:
    """The scalar evaluator's value per row, and the rows where it raises (with what)."""
    evaluate = scalar_evaluator(now)
    values, failures = [], {}
    for label, row in zip(frame.index, _row_values(frame, columns, attributes_of(tree)), strict=True):
        try:
            values.append(evaluate(tree, row))
        except Exception as error:
            failures[label] = error
            values.append(None)
    return values, failures


def _assert_equal_to_scalar(
    tree: Node, frame: pd.DataFrame, columns: dict[str, str], now: datetime | None = None
) -> pd.Series:
    """evaluate_columns equals the scalar evaluator on every row; where the scalar raises on some rows, the
    column evaluator raises too, and equals it on the others."""
    expected, failures = _expected(tree, frame, columns, now)
    if failures:
        with pytest.raises(Exception) as raised:
            evaluate_columns(tree, frame, columns=columns, now=now)
        assert type(raised.value) in {type(e) for e in failures.values()}
        keep = ~frame.index.isin(list(failures))
        frame = frame[keep]
        expected = [v for v, k in zip(expected, keep, strict=True) if k]
    got = evaluate_columns(tree, frame, columns=columns, now=now)
    assert got.dtype == object and got.index.equals(frame.index)
    mismatches = [
        (label, row, want, have)
        for label, row, want, have in zip(frame.index, frame.to_dict("records"), expected, got, strict=True)
        if not _same(want, have)
    ]
    assert not mismatches, mismatches[:5]
    return got


@pytest.fixture(params=["factorized", "per-row"])
def layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """ "per-row": every text column counts as high-cardinality, so the one-value-per-row path is taken."""
    if request.param == "per-row":
        monkeypatch.setattr(expression_columns, "_SAMPLE", 2)
        monkeypatch.setattr(expression_columns, "_DENSE_SHARE", 0.0)
    return str(request.param)


def _documented() -> list[Any]:
    cases = []
    for function, entry in EXAMPLES["functions"].items():
        for number, example in enumerate(entry.get("examples", [])):
            if example.get("page_inconsistent") or example.get("nondeterministic"):
                continue
            cases.append(pytest.param(example, number, id=f"{function}: {example['expression']}"))
    return cases


@pytest.mark.parametrize("odd", [False, True], ids=["text", "odd-values"])
@pytest.mark.parametrize(("example", "number"), _documented())
def test_every_documented_example_equals_the_scalar_evaluator_row_by_row(
    example: dict[str, Any], number: int, odd: bool, layout: str
) -> None:
    tree = parse(example["expression"])
    missing = _functions_of(tree) - set(expression_values.FUNCTIONS)
    if missing:
        pytest.skip(f"not evaluated by expression_values yet: {sorted(missing)}")
    inputs = example.get("inputs") or {}
    names = attributes_of(tree)
    frame = _example_frame(tree, inputs, odd, seed=zlib.crc32(f"{example['expression']}{odd}".encode()))
    got = _assert_equal_to_scalar(tree, frame, {name: name for name in names})
    if names <= set(inputs):  # the page gives every input (not CStr([dn])): the documented output on row 0
        output = example["output"]  # the page's type (a date is text; the scalar's EntraDateTime is a str)
        if scalar_evaluator()(tree, inputs) != output:  # a page error: test_expressions pins what is given instead
            return
        assert got.iloc[0] == output and isinstance(got.iloc[0], type(output)), (got.iloc[0], output)


# --- typical mappings over a generated directory, staging column names ------------------------------------

TYPICAL = [
    'Join(" ", [givenName], [surname])',
    'Switch([country], "Other", "IE", "Ireland", "DE", "Germany", "US", "United States")',
    'Coalesce([officeLocation], [city], "Remote")',
    "ToLower(NormalizeDiacritics([mail]))",
    'IIF([country]="US", Left([surname], 3), Mid([givenName], 2, 3))',
    'Append(ToUpper([department]), " team")',
    'Word([displayName], 2, " ")',
    'Join(".", ToLower(NormalizeDiacritics(StripSpaces([givenName]))), ToLower([surname]))',
    "IIF(IsPresent([mail]), [mail], [userPrincipalName])",
    "Not(IsNullOrEmpty([jobTitle]))",
    "IsNull([officeLocation])",
    "IsString([employeeId])",
    "CStr([accountEnabled])",
    'InStr([mail], "@")',
    'InStr([displayName], "a", 2, vbTextCompare)',
    'Split([department], " ")',
    'Switch([country], [country], "", "Other")',
    'Switch([department], "Other", [country], "same", "HR", [city], "Sales", "S")',
    'Word([mail], 1, "@.")',
    'IIF([department]<>"Sales", Coalesce([jobTitle], "n/a"), Join("/", [department], [city]))',
    "Left([givenName], [postalCode])",
    "Mid([surname], [postalCode], 2)",
    'Join(", ", [city], [state], [country], "x", [businessPhones])',
    "Coalesce([mobilePhone], [businessPhones])",
    "Append([givenName], [surname])",
    'IIF([employeeId] > 500, "senior", "junior")',
    'IIF([accountEnabled]="True", ToUpper([userType]), ToLower([userType]))',
    "Join([state], [givenName], [surname])",
    "ToUpper(Left(NormalizeDiacritics([givenName]), 1))",
    "[department]",
    'Left("John Doe", 3)',
    "Coalesce([officeLocation])",
]


def _directory(rows: int, seed: int) -> pd.DataFrame:
    """Staged users as staging returns them (object columns, None for NULL), with awkward values mixed in."""
    rng = random.Random(seed)
    given = ["Ann", "ann", "Zoë", "Ægir", "Đorđe", "Søren", "Jean-Luc", "  ", "", None, "İlkay", "Mary Ann"]
    surnames = ["Lee", "Ó Briain", "Müller", "Ng", "", None, "de la Cruz", "SMITH", "Łukasz"]
    countries = ["US", "IE", "DE", "us", "FR", "", None, "Other"]
    departments = ["Sales", "HR", "Engineering", "sales", "R&D Labs", "", None, "US"]
    cities = ["Dublin", "Berlin", "New York", "", None, "Zürich"]
    phones = ["+1 555 0100", "", None, ["+1 555 0101", "+1 555 0102"], []]

    def pick(values: list[Any]) -> Any:
        return rng.choice(values)

    data: dict[str, list[Any]] = {column: [] for column in ENTRA_ATTRIBUTES.values()}
    for i in range(rows):
        first, last = pick(given), pick(surnames)
        data["object_id"].append(f"id-{i}")
        data["user_principal_name"].append(f"user{i}@contoso.com")
        data["mail"].append(pick([f"{first}.{last}{i}@Contoso.com", None, "", f"Zoë.Æ{i}@x.de", f"U{i}@X.COM"]))
        data["display_name"].append(pick([f"{first} {last}", f"{first}  {last} Jr", None, "", "Mononym"]))
        data["given_name"].append(first)
        data["surname"].append(last)
        data["job_title"].append(pick(["Engineer", "", None, "Lead, Sales", "CEO"]))
        data["department"].append(pick(departments))
        data["office_location"].append(pick(["HQ", "Dublin 2", None, None, ""]))
        data["company_name"].append(pick(["Contoso", None]))
        data["employee_id"].append(pick([str(rng.randint(1, 1000)), None, "", " 42 ", "E-7", rng.randint(1, 1000)]))
        data["street_address"].append(pick(["1 Main St", None]))
        data["city"].append(pick(cities))
        data["state"].append(pick(["CA", "", None, " - "]))
        data["postal_code"].append(pick(["1", "2", "0", "-1", "x", "", None, " 3 "]))
        data["country"].append(pick(countries))
        data["usage_location"].append(pick(["US", None]))
        data["business_phone"].append(pick(phones))
        data["mobile_phone"].append(pick(["+353 1 555", None, ""]))
        data["employee_hire_date"].append(pick(["2021-08-24", None]))
        data["account_enabled"].append(pick([True, False, None]))
        data["user_type"].append(pick(["Member", "Guest", None]))
        data["manager_id"].append(pick([f"id-{rng.randint(0, rows)}", None]))
        for column, values in data.items():
            if len(values) == i:  # a column added to staging since: empty, or text now and then
                values.append(pick([None, "", f"{column} {i % 7}"]))
    return pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in data.items()})


def _as_string_columns(frame: pd.DataFrame, dtype: Any) -> pd.DataFrame:
    """Every column holding only text and missing values in a pandas string dtype (as pandas 3 reads text)."""
    out = frame.copy()
    for column in out.columns:
        if all(v is None or type(v) is str for v in out[column]):
            out[column] = out[column].astype(dtype)
    return out


@pytest.mark.parametrize("dtype", ["object", "str", "string[pyarrow]", "string[python]"])
@pytest.mark.parametrize("expression", TYPICAL)
def test_typical_mappings_equal_the_scalar_evaluator_on_a_directory(expression: str, dtype: str, layout: str) -> None:
    tree = parse(expression)
    frame = _directory(1500, seed=14)
    if dtype != "object":
        frame = _as_string_columns(frame, dtype)
        assert sum(not pd.api.types.is_object_dtype(d) for d in frame.dtypes) >= 10
    _assert_equal_to_scalar(tree, frame, ENTRA_ATTRIBUTES)
    _, fallbacks = expression_columns._evaluate(tree, frame, ENTRA_ATTRIBUTES, None)
    assert fallbacks == [], "a vectorised function fell back to the scalar evaluator"


# Functions without a column rule inside and around vectorised ones (the scalar evaluator takes the subtree).
MIXED = [
    "IIF(IsPresent([mail]), ToLower([mail]), IgnoreFlowIfNullOrEmpty([mail]))",
    'Join(" ", IgnoreFlowIfNullOrEmpty([givenName]), [surname])',
    "IgnoreFlowIfNullOrEmpty(Coalesce([officeLocation], [city]))",
    'Coalesce(Item(Split([department], " "), 2), [city])',
    'RemoveDuplicates(Split(Join(",", [jobTitle], [department], [jobTitle]), ","))',
    "CBool(IsPresent([mail]))",
    "Not(CBool([accountEnabled]))",
    'FormatDateTime([employeeHireDate], , "yyyy-MM-dd", "dd.MM.yyyy")',
    'DateDiff("d", CDate([employeeHireDate]), Now())',
    'Replace([mail], "@contoso.com", , , "", , )',
    'Switch(Replace([country], "US", , , "USA", , ), "Other", "USA", "United States", "IE", "Ireland")',
    'Append(ToUpper(Left([givenName], 1)), DateAdd("d", 7, CDate([employeeHireDate])))',
]


@pytest.mark.parametrize("expression", MIXED)
def test_functions_without_a_column_rule_mixed_with_vectorised_ones(expression: str, layout: str) -> None:
    tree = parse(expression)
    missing = _functions_of(tree) - set(expression_values.FUNCTIONS)
    if missing:
        pytest.skip(f"not evaluated by expression_values yet: {sorted(missing)}")
    frame = _directory(1500, seed=21)
    _assert_equal_to_scalar(tree, frame, ENTRA_ATTRIBUTES, now=datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC))


def test_typed_columns_are_read_as_python_values() -> None:
    """A bool / Int64 / float column: the scalar evaluator sees True, 7, None, never numpy.True_ or NaN."""
    frame = pd.DataFrame(
        {
            "account_enabled": pd.Series([True, False, None], dtype="boolean"),
            "employee_id": pd.Series([7, None, 0], dtype="Int64"),
            "postal_code": [1.5, float("nan"), 2.0],
        }
    )
    got = evaluate_columns(parse("Not([accountEnabled])"), frame)
    assert list(got) == [False, True, True] and all(type(v) is bool for v in got)
    assert list(evaluate_columns(parse("CStr([employeeId])"), frame)) == ["7", None, "0"]
    assert list(evaluate_columns(parse("IsNull([postalCode])"), frame)) == [False, True, False]
    assert list(evaluate_columns(parse('IIF([employeeId]>5, "big", "small")'), frame)) == ["big", "small", "small"]


# --- index, empty frames, constants, absent attributes, fallbacks ----------------------------------------------


def test_the_index_is_kept_and_missing_is_none_never_nan() -> None:
    frame = _directory(50, seed=3)
    frame.index = pd.Index([f"u{i}" for i in reversed(range(50))], name="user")
    tree = parse('Coalesce([officeLocation], [city], "Remote")')
    got = _assert_equal_to_scalar(tree, frame, ENTRA_ATTRIBUTES)
    assert got.index.equals(frame.index) and got.index.name == "user"
    nothing = evaluate_columns(parse("[officeLocation]"), frame)
    assert nothing.index.equals(frame.index)
    assert all(v is None for v in nothing[frame["office_location"].isna()])


def test_an_empty_frame_gives_an_empty_object_series() -> None:
    frame = _directory(0, seed=1)
    frame.index = pd.Index([], dtype=object, name="user")
    for expression in [*TYPICAL[:5], 'Left("John Doe", 3)', 'Split([mail], "")']:
        got = evaluate_columns(parse(expression), frame)
        assert got.dtype == object and len(got) == 0 and got.index.equals(frame.index)


def test_constants_and_attributes_not_in_the_frame() -> None:
    frame = _directory(20, seed=5).drop(columns=["city"])
    assert list(evaluate_columns(parse('Left("John Doe", 3)'), frame)) == ["Joh"] * 20
    assert list(evaluate_columns(parse("[city]"), frame)) == [None] * 20
    assert list(evaluate_columns(parse('Coalesce([city], "Remote")'), frame)) == ["Remote"] * 20
    got = evaluate_columns(parse("IsNull([surname])"), frame, columns={"surname": "nope"})
    assert list(got) == [True] * 20


def test_each_row_gets_a_list_of_its_own() -> None:
    frame = pd.DataFrame({"department": ["a b", "a b", "a b"]})
    got = evaluate_columns(parse('Split([department], " ")'), frame)
    got.iloc[0].append("changed")
    assert list(got.iloc[1]) == ["a", "b"] and got.iloc[2] == ["a", "b"]


def test_a_branch_iif_does_not_choose_may_fail_where_it_is_not_chosen() -> None:
    """Split with an empty delimiter raises on a present value, but IIF only takes it where mail is missing."""
    frame = _directory(200, seed=9)
    tree = parse('IIF(IsPresent([mail]), [mail], Split([mail], ""))')
    _assert_equal_to_scalar(tree, frame, ENTRA_ATTRIBUTES)
    with pytest.raises(ValueError):
        evaluate_columns(parse('Split([mail], "")'), frame)


def test_functions_without_a_column_rule_are_evaluated_by_the_scalar_evaluator() -> None:
    """The documented examples (above) hold them equal; here: the fallback is taken, and said."""
    unruled = set(expression_values.FUNCTIONS) - set(expression_columns._RULES)
    for function, entry in EXAMPLES["functions"].items():
        for example in entry.get("examples", []):
            tree = parse(example["expression"])
            if (
                function not in unruled
                or not attributes_of(tree)
                or _functions_of(tree) - set(expression_values.FUNCTIONS)
            ):
                continue
            inputs = example["inputs"]
            frame = pd.DataFrame({name: pd.Series([value] * 3, dtype=object) for name, value in inputs.items()})
            values, fallbacks = expression_columns._evaluate(tree, frame, {n: n for n in inputs}, None)
            assert list(values) == [example["output"]] * 3
            assert any(f"{function}: no column rule" in f for f in fallbacks), fallbacks
            return
    pytest.skip("no documented example of a function without a column rule is evaluated by expression_values yet")


def test_normalize_diacritics_over_a_column_maps_every_letter_of_the_page_s_table_as_the_scalar_rule() -> None:
    """Every letter of the table, composed and decomposed, alone and inside text (next to other letters with
    diacritics, combining marks the table has no letter for, and letters it does not list)."""
    rows = EXAMPLES["functions"]["NormalizeDiacritics"]["character_table"]
    letters = [letter for row in rows for letters in (row[0], row[2]) for letter in filter(None, letters.split(", "))]
    values: list[Any] = []
    for letter in letters:
        for form in ("NFC", "NFD"):
            text = unicodedata.normalize(form, letter)
            values += [text, f"x{text}y", f"Zoë {text}\u0301 Đorđe", text + "\u0331", "\u0301" + text]
    frame = pd.DataFrame({"given_name": pd.Series(values, dtype=object)})
    got = evaluate_columns(parse("NormalizeDiacritics([givenName])"), frame)
    assert list(got) == [expression_values.normalize_diacritics(v) for v in values]
