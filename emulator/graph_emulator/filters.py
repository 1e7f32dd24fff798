"""The $filter subset the emulator evaluates on users, and Graph's 400 for everything else.

Syncs commonly narrow a read to enabled members; those simple equality filters work
on /users without `ConsistencyLevel: eventual` in Graph, so none is required here
either. Anything beyond `accountEnabled eq true|false`, `userType eq '...'` and `and`
of those is refused the way Graph refuses unsupported queries, so a client never
silently gets unfiltered data from the emulator that Graph would have rejected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graph_emulator.errors import GraphError

# Tokens: parentheses, quoted strings ('' escapes a quote), and bare words.
_TOKEN = re.compile(r"\s*(?:(?P<paren>[()])|(?P<string>'(?:[^']|'')*')|(?P<word>[A-Za-z0-9_.]+))")
_FILTERABLE = {"accountenabled": ("accountEnabled", bool), "usertype": ("userType", str)}


def unsupported(raw: str) -> GraphError:
    return GraphError(
        400,
        "Request_UnsupportedQuery",
        f"Unsupported or invalid query filter clause specified for resource 'User': '{raw}'.",
    )


@dataclass(frozen=True)
class UserFilter:
    """A conjunction of (property, value) equality tests; callable on a stored user."""

    clauses: tuple[tuple[str, Any], ...]

    def __call__(self, user: Mapping[str, Any]) -> bool:
        for prop, expected in self.clauses:
            actual = user.get(prop)
            if isinstance(expected, str):
                # Graph compares directory strings case-insensitively.
                if not isinstance(actual, str) or actual.casefold() != expected:
                    return False
            elif actual is not expected:
                return False
        return True


def _tokens(raw: str) -> list[str]:
    tokens, position = [], 0
    while position < len(raw.rstrip()):
        match = _TOKEN.match(raw, position)
        if match is None:
            raise unsupported(raw)
        tokens.append(match.group(match.lastgroup or "word"))
        position = match.end()
    return tokens


def parse_filter(raw: str) -> UserFilter:
    """Parse a $filter value; anything outside the supported subset is a 400 Request_UnsupportedQuery.

    Grammar: expr := term ('and' term)* ; term := '(' expr ')' | property 'eq' literal.
    """
    tokens = _tokens(raw)
    clauses: list[tuple[str, Any]] = []
    position = 0

    def expect_expression() -> None:
        nonlocal position
        expect_term()
        while position < len(tokens) and tokens[position].lower() == "and":
            position += 1
            expect_term()

    def expect_term() -> None:
        nonlocal position
        if position < len(tokens) and tokens[position] == "(":
            position += 1
            expect_expression()
            if position >= len(tokens) or tokens[position] != ")":
                raise unsupported(raw)
            position += 1
            return
        if position + 3 > len(tokens) or tokens[position + 1].lower() != "eq":
            raise unsupported(raw)
        known = _FILTERABLE.get(tokens[position].lower())
        literal = tokens[position + 2]
        if known is None:
            raise unsupported(raw)
        prop, kind = known
        if kind is bool and literal.lower() in ("true", "false"):
            clauses.append((prop, literal.lower() == "true"))
        elif kind is str and literal.startswith("'"):
            clauses.append((prop, literal[1:-1].replace("''", "'").casefold()))
        else:
            raise unsupported(raw)
        position += 3

    expect_expression()
    if position != len(tokens):
        raise unsupported(raw)
    return UserFilter(tuple(clauses))
