"""Issue #11: the suite evaluated in pandas (incremental runs) gives GX's verdicts, row for row.

An incremental run validates a few participants; creating a GX context and rendering Data
Docs for them would cost more than the run. `validation.evaluate_in_pandas` evaluates the
same checks; these tests run both engines over hostile rows and over a generated tenant
and require the same quarantine, warnings (with their reasons) and statistics.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from entra_rows import entra
from frankli_sync.entra import ENTRA_ATTRIBUTES
from frankli_sync.sinks.schema import frankli_field_lengths
from frankli_sync.validation import ValidationSettings, validate_users
from graph_emulator import generate_tenant
from test_validation import ROWS, mapping_from

pytestmark = pytest.mark.unit

HOSTILE: list[dict[str, Any]] = [
    entra("h-amp", "o'brien&co@contoso.example"),  # escaped characters in the local part
    entra("h-amp-dup", "O'Brien&Co@contoso.example"),  # the same address: both fail unique_upn
    entra("h-nfd", "jose\u0301@contoso.example", mail="jos\u00e9@contoso.example"),  # NFC-equal
    entra("h-kelvin", "\u212aim@contoso.example"),
    entra("h-long", "long@contoso.example", street_address="x" * 300),
    entra("h-nul", "nul@contoso.example", city="Dub\u2400lin"),
    entra("h-tab", "\ttab@contoso.example\t", mail="tab@contoso.example"),
    entra("h-script", "<script>x</script>@contoso.example"),
    entra("h-local64", f"{'a' * 65}@contoso.example"),
    entra("h-dots", "a..b@contoso.example"),
    entra("h-idn", "ann@b\u00fccher.example"),
    entra("h-none-mail", "nm2@contoso.example", mail="   "),
    entra("h-enabled-str", "es@contoso.example", account_enabled="False"),
    entra("dup", "d1@contoso.example"),
    entra("dup", "d2@contoso.example"),
    entra("h-no-names", "nn@contoso.example", given_name=None, surname="  "),
]


def _settings() -> ValidationSettings:
    return ValidationSettings(max_lengths=frankli_field_lengths(mapping_from()))


def _outcomes(frame: pd.DataFrame) -> tuple[Any, Any]:
    settings = _settings()
    return validate_users(frame, settings), validate_users(frame, settings, engine="pandas")


def _same(gx: Any, fast: Any) -> None:
    assert fast.checked == gx.checked
    assert fast.statistics == gx.statistics
    pd.testing.assert_frame_equal(fast.quarantined, gx.quarantined)
    pd.testing.assert_frame_equal(fast.warnings, gx.warnings)
    assert fast.docs_index is None


def test_hostile_rows_get_gx_verdicts() -> None:
    frame = pd.DataFrame([*ROWS.values(), *HOSTILE])
    gx, fast = _outcomes(frame)
    _same(gx, fast)
    assert len(gx.quarantined) > 20  # the rows really fail, in many ways


def test_a_generated_tenant_gets_gx_verdicts() -> None:
    directory = generate_tenant(1500, seed=5)
    columns = {graph: staged for graph, staged in ENTRA_ATTRIBUTES.items()}
    rows = [{staged: user.get(graph) for graph, staged in columns.items()} for user in directory.users_sorted()]
    for row, user in zip(rows, directory.users_sorted(), strict=True):
        row["manager_id"] = directory.manager_of(user["id"])
    gx, fast = _outcomes(pd.DataFrame(rows))
    _same(gx, fast)
    assert len(gx.quarantined) and len(gx.warnings)


def test_an_empty_frame() -> None:
    frame = pd.DataFrame([entra("x", "x@contoso.example")]).iloc[0:0]
    _same(*_outcomes(frame))
