"""What staging does to a source row before storing it (the same on SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from entra_rows import entra
from frankli_sync.staging import Staging
from sqlalchemy import create_engine

pytestmark = pytest.mark.unit


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    staging = Staging(create_engine(f"sqlite:///{tmp_path / 'staging.db'}"))
    staging.begin_snapshot("acme", "run1", "graph")
    return staging


def test_nul_is_staged_as_the_nul_symbol(staging: Staging) -> None:
    staging.apply_page("acme", "run1", [entra("id-1", "ann@contoso.example", city="Dub\x00lin")], {}, None)
    staging.complete_snapshot("acme", "run1", 1)
    snapshot = staging.snapshot("acme", "run1")
    assert snapshot.loc[0, "city"] == "Dub\u2400lin"
    assert snapshot.loc[0, "given_name"] == "Ann", "other values are untouched"


def test_long_values_are_staged_whole(staging: Staging) -> None:
    street = "x" * 5000
    staging.apply_page("acme", "run1", [entra("id-1", "ann@contoso.example", street_address=street)], {}, None)
    staging.complete_snapshot("acme", "run1", 1)
    assert staging.snapshot("acme", "run1").loc[0, "street_address"] == street


def test_an_object_id_that_is_no_guid_is_refused_naming_the_user(staging: Staging) -> None:
    with pytest.raises(ValueError, match=r"'bob@contoso.example' has an object id of 2000 characters"):
        staging.apply_page("acme", "run1", [entra("i" * 2000, "bob@contoso.example")], {}, None)
