"""Entra's attribute-mapping expressions, read as Entra reads them (issue 14; not yet wired to the mapping).

An expression is a function call whose arguments are attributes in brackets (``[givenName]``),
string constants in double quotes (``"Company: \\"Contoso\\""``, with ``\\`` escaping a quote or a
backslash) or other calls: ``Join(" ", [givenName], [surname])``. Microsoft's own examples also pass
whole numbers (``Left("John Doe", 3)``), bare words (``vbBinaryCompare``), comparisons as
conditions (``IIF([country]="USA", …)``, ``DateDiff(…) > 5``) and leave optional arguments out by
position (``Replace([mail], "@contoso.com", , , "", , )``): all are read. `parse` turns the text into a
tree of `Call` / `Attribute` / `Constant` with the column of each node, using a lark grammar (no
regular expressions over the whole text, no ``eval``); `check` holds the tree against the functions
Entra documents and the attributes the sync reads, so a mistake is a config error naming where it is.

Function names are matched as Entra matches them: case-sensitively (``join(...)`` is not ``Join``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import cache
from typing import Any

GRAMMAR = r"""
?start: expr
?expr: comparison | term
comparison: term COMPARATOR term
?term: call | attribute | constant | number | word
call: NAME "(" [argument ("," argument)*] ")"
argument: expr?
attribute: "[" ATTRIBUTE "]"
constant: STRING
number: SIGNED_INT
word: NAME

NAME: /[A-Za-z_][A-Za-z0-9_]*/
COMPARATOR: "<>" | ">=" | "<=" | "=" | ">" | "<"
ATTRIBUTE: /[^\[\]\s][^\[\]]*/
STRING: /"(?:[^"\\]|\\.)*"/s

%import common.SIGNED_INT

%import common.WS
%ignore WS
"""


class ExpressionError(ValueError):
    """An expression Entra would not accept, or one this sync cannot evaluate.

    `column`: where, as the character's 1-based position in the expression's text (a folded YAML
    line counts on: the position is not per line).
    """

    def __init__(self, message: str, column: int | None = None) -> None:
        self.column = column
        super().__init__(f"{message} (at character {column})" if column else message)


@dataclass(frozen=True)
class Attribute:
    name: str
    column: int


@dataclass(frozen=True)
class Constant:
    value: str
    column: int


@dataclass(frozen=True)
class Number:
    value: int
    column: int


@dataclass(frozen=True)
class Word:
    """A bare word where Entra takes a named option (``vbBinaryCompare``)."""

    name: str
    column: int


@dataclass(frozen=True)
class Omitted:
    """An optional argument left out by position: ``Replace([mail], "x", , , "", , )``."""


@dataclass(frozen=True)
class Call:
    function: str
    arguments: tuple[Node, ...]
    column: int


@dataclass(frozen=True)
class Comparison:
    """``[country]="USA"``, ``DateDiff(…) > 5``: the conditions of IIF and CBool in Microsoft's examples."""

    operator: str
    left: Node
    right: Node
    column: int


Node = Attribute | Constant | Number | Word | Omitted | Call | Comparison


@dataclass(frozen=True)
class Signature:
    """How many arguments a function takes (`most` None: any number from `least`), and which positions
    (0-based) may be left out between commas."""

    least: int
    most: int | None
    optional: frozenset[int] = frozenset()


# Entra's documented functions this sync evaluates, with their arity (Reference for writing expressions).
FUNCTIONS: dict[str, Signature] = {
    "Append": Signature(2, 2),
    "CBool": Signature(1, 1),
    "CDate": Signature(1, 1),  # not in the list, but DateAdd's and DateDiff's documented examples need it
    "CStr": Signature(1, 1),
    "Coalesce": Signature(1, None),
    "DateAdd": Signature(3, 3),
    "DateDiff": Signature(3, 3),
    "FormatDateTime": Signature(3, 4, frozenset({1})),
    "IgnoreFlowIfNullOrEmpty": Signature(1, 1),
    "IIF": Signature(3, 3),
    "InStr": Signature(2, 4, frozenset({2, 3})),
    "IsNull": Signature(1, 1),
    "IsNullOrEmpty": Signature(1, 1),
    "IsPresent": Signature(1, 1),
    "IsString": Signature(1, 1),
    "Item": Signature(2, 2),
    "Join": Signature(2, None),
    "Left": Signature(2, 2),
    "Mid": Signature(3, 3),
    "NormalizeDiacritics": Signature(1, 1),
    "Not": Signature(1, 1),
    "Now": Signature(0, 0),
    "RemoveDuplicates": Signature(1, 1),
    "Replace": Signature(7, 7, frozenset(range(1, 7))),
    "Split": Signature(2, 2),
    "StripSpaces": Signature(1, 1),
    "Switch": Signature(2, None, frozenset({1})),  # the default value may be left out
    "ToLower": Signature(1, 2),
    "ToUpper": Signature(1, 2),
    "Word": Signature(3, 3),
}
# Entra functions the page documents that this sync does not evaluate (yet): a config error says so.
NOT_EVALUATED = (
    "BitAnd",
    "ConvertToBase64",
    "ConvertToUTF8Hex",
    "Count",
    "DateFromNum",
    "NumFromDate",
    "PCase",
    "Redact",
)
# Entra functions that have no meaning for a batch sync into Frankli, and why (the config error says it).
REFUSED: dict[str, str] = {
    "AppRoleAssignmentsComplex": "it maps app role assignments of an enterprise app, which Frankli has no place for",
    "SingleAppRoleAssignment": "it maps an app role assignment of an enterprise app, which Frankli has no place for",
    "Guid": "it makes a new random value on every run, so every run would rewrite the field",
    "RandomString": "it makes a new random value on every run, so every run would rewrite the field",
    "SelectUniqueValue": "it asks the target which values are free, user by user; Frankli's API cannot answer that",
}


# Terminal names as an error message says them.
_TERMINALS = {
    "NAME": "a function name",
    "STRING": "a string in double quotes",
    "LSQB": "an attribute in brackets",
    "RSQB": "']'",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "$END": "the end",
    "COMPARATOR": "a comparison (=, <>, <, <=, >, >=)",
    "ATTRIBUTE": "an attribute name",
}


@cache
def _parser() -> Any:
    from lark import Lark

    return Lark(GRAMMAR, parser="lalr", propagate_positions=True)


def parse(text: str) -> Node:
    """The tree of an expression; `ExpressionError` (with the column) when Entra's grammar does not hold."""
    from lark import Token, Tree
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("an expression must be a non-empty text")
    try:
        tree = _parser().parse(text)
    except UnexpectedEOF as error:
        raise ExpressionError("the expression ends early (a call or a string is not closed)", len(text)) from error
    except UnexpectedToken as error:
        if error.token.type == "$END":
            raise ExpressionError("the expression ends early (a call or a bracket is not closed)", len(text)) from error
        wanted = ", ".join(sorted({_TERMINALS.get(t, t) for t in error.expected}))
        found = str(error.token.value)
        if error.token.type == "ATTRIBUTE":  # the lexer's last resort outside brackets: name the character
            found = found[:1]
        raise ExpressionError(f"unexpected {found!r}; expected {wanted}", error.token.start_pos + 1) from error
    except UnexpectedCharacters as error:
        raise ExpressionError(f"unexpected character {text[error.pos_in_stream]!r}", error.pos_in_stream + 1) from error
    except UnexpectedInput as error:  # any other grammar error lark reports
        raise ExpressionError("not an Entra expression") from error

    def node(item: Any) -> Node:
        if isinstance(item, Tree) and item.data == "call":
            name, *arguments = item.children
            if arguments == [None]:  # Now(): no argument at all
                arguments = []
            return Call(str(name), tuple(node(a) for a in arguments), name.start_pos + 1)
        if isinstance(item, Tree) and item.data == "argument":
            if not item.children or item.children[0] is None:
                return Omitted()
            return node(item.children[0])
        if isinstance(item, Tree) and item.data == "comparison":
            left, operator, right = item.children
            return Comparison(str(operator), node(left), node(right), operator.start_pos + 1)
        if isinstance(item, Tree) and item.data == "number":
            (token,) = item.children
            return Number(int(token), token.start_pos + 1)
        if isinstance(item, Tree) and item.data == "word":
            (token,) = item.children
            return Word(str(token), token.start_pos + 1)
        if isinstance(item, Tree) and item.data == "attribute":
            (token,) = item.children
            return Attribute(str(token).rstrip(), token.start_pos + 1)
        if isinstance(item, Tree) and item.data == "constant":
            (token,) = item.children
            return Constant(unescape(str(token)[1:-1]), token.start_pos + 1)
        column = item.start_pos + 1 if isinstance(item, Token) else None
        raise ExpressionError("not an Entra expression", column)  # pragma: no cover - the grammar has no other node

    return node(tree)


def unescape(body: str) -> str:
    """A string constant's text: ``\\"`` is a quote, ``\\\\`` a backslash; any other escape keeps its character."""
    out, escaped = [], False
    for char in body:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    return "".join(out)


def check(node: Node, attributes: Collection[str]) -> None:
    """Every function known with a fitting number of arguments, every attribute one the sync reads."""
    if isinstance(node, Attribute):
        if node.name not in attributes:
            raise ExpressionError(
                f"[{node.name}] is not an Entra attribute the sync reads (one of {', '.join(sorted(attributes))})",
                node.column,
            )
        return
    if isinstance(node, Comparison):
        check(node.left, attributes)
        check(node.right, attributes)
        return
    if not isinstance(node, Call):
        return
    if node.function in REFUSED:
        raise ExpressionError(f"{node.function} is not supported here: {REFUSED[node.function]}", node.column)
    signature = FUNCTIONS.get(node.function)
    if signature is None:
        near = [f for f in FUNCTIONS if f.lower() == node.function.lower()]
        hint = f"; did you mean {near[0]}? (names are case-sensitive)" if near else ""
        if node.function in NOT_EVALUATED:
            raise ExpressionError(f"{node.function} is an Entra function this sync does not evaluate", node.column)
        raise ExpressionError(f"{node.function} is not an Entra expression function{hint}", node.column)
    count = len(node.arguments)
    if count < signature.least or (signature.most is not None and count > signature.most):
        wanted = (
            f"{signature.least}"
            if signature.most == signature.least
            else f"{signature.least} to {signature.most}"
            if signature.most is not None
            else f"{signature.least} or more"
        )
        raise ExpressionError(f"{node.function} takes {wanted} arguments, not {count}", node.column)
    for position, argument in enumerate(node.arguments):
        if isinstance(argument, Omitted) and position not in signature.optional:
            raise ExpressionError(f"argument {position + 1} of {node.function} may not be left out", node.column)
        check(argument, attributes)


def attributes_of(node: Node) -> set[str]:
    """The attributes an expression reads (what the Graph `$select` must ask for)."""
    if isinstance(node, Attribute):
        return {node.name}
    if isinstance(node, Call):
        return set().union(*(attributes_of(a) for a in node.arguments)) if node.arguments else set()
    if isinstance(node, Comparison):
        return attributes_of(node.left) | attributes_of(node.right)
    return set()
