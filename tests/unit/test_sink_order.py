"""New users are inserted managers first, so row-by-row foreign key checks (SQLite) always pass."""

from __future__ import annotations

import pytest
from frankli_sync.sinks.database import _managers_first_order

pytestmark = pytest.mark.unit


def create(user: str, manager: str | None) -> dict[str, str | None]:
    return {"external_id": user, "manager": manager}


def order(*records: dict[str, str | None]) -> list[str]:
    ids = [r["external_id"] for r in records]
    return [str(ids[i]) for i in _managers_first_order(ids, [r["manager"] for r in records])]


def test_a_new_manager_comes_before_their_new_reports() -> None:
    got = order(create("dev", "lead"), create("lead", "cto"), create("cto", None), create("ops", "existing"))
    assert got.index("cto") < got.index("lead") < got.index("dev")


def test_users_of_one_level_keep_the_plan_order() -> None:
    assert order(create("b", None), create("a", None), create("c", "b")) == ["b", "a", "c"]


def test_a_cycle_still_orders_every_user_once() -> None:
    got = order(create("x", "y"), create("y", "x"), create("z", "x"))
    assert sorted(got) == ["x", "y", "z"]
    assert got.index("x") < got.index("z"), "a report of a cycle member still follows it"
