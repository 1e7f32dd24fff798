"""The load path is set-based: its statement count does not grow with the number of users.

The loads of a run are executed again on a run that was planned with `dry_run` (so they
write for real), with every statement on the Frankli database counted. Day 1 creates a few
hundred users; day 2 updates, archives and creates others. A statement per user would
show up as hundreds of statements (or, on PostgreSQL, as executemany batches); COPY and
UPDATE … FROM keep it to a fixed few dozen.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from graph_emulator import apply_day2
from sqlalchemy import Engine, event

pytestmark = pytest.mark.integration


@contextmanager
def counted(url: str) -> Iterator[list[tuple[str, int]]]:
    """(first words of the statement, parameter sets) of every statement sent to the database at `url`."""
    seen: list[tuple[str, int]] = []
    database = url.split("?")[0].rsplit("/", 1)[-1]

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if conn.engine.url.database and conn.engine.url.database.endswith(database):
            seen.append((" ".join(statement.split()[:3]), len(parameters) if executemany else 1))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def load_for_real(tenant: Any) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    tenant.run(conf={"dry_run": True})
    with counted(tenant.frankli_url) as statements:
        upserts = tenant.run_task("load_upserts", conf={"allow_mass_archive": True})
        archives = tenant.run_task("load_archives", conf={"allow_mass_archive": True})
    return statements, {**upserts, **archives}


def test_statement_count_does_not_grow_with_users(make_tenant, frankli_url: str | None) -> None:
    tenant = make_tenant(users=400, seed=17, frankli_url=frankli_url)

    day1, counts1 = load_for_real(tenant)
    assert counts1["create"] > 300, counts1
    apply_day2(tenant.directory, seed=3)
    day2, counts2 = load_for_real(tenant)
    assert counts2.get("update", 0) > 5 and counts2.get("archive", 0) > 2 and counts2.get("create", 0) > 0, counts2

    for statements, counts in ((day1, counts1), (day2, counts2)):
        written = sum(v for k, v in counts.items() if k != "dry_run")
        assert len(statements) < 80, f"{len(statements)} statements for {written} user actions: {statements}"
        if tenant.frankli_url.startswith("postgresql"):
            # rows travel by COPY, never as executemany batches
            assert max(n for _, n in statements) == 1, [s for s in statements if s[1] > 1]
        for verb in ("UPDATE users SET",):
            assert sum(1 for s, _ in statements if s.startswith(verb)) <= 5, statements
