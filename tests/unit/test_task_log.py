"""Issue #12: task logs tell the story: one line per task with its numbers, without GX's import chatter."""

from __future__ import annotations

import subprocess
import sys

import pytest
from frankli_sync.task_log import extract_line, load_line, quarantine_reasons, validate_line

pytestmark = pytest.mark.unit

IMPORT_GX = "import logging; logging.basicConfig(level=logging.INFO); {quiet} import great_expectations"


def gx_import_log(quiet: bool) -> str:
    code = IMPORT_GX.format(quiet="from frankli_sync.task_log import quiet_gx; quiet_gx();" if quiet else "")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return done.stderr


def test_a_fresh_worker_logs_no_gx_registry_chatter() -> None:
    assert gx_import_log(quiet=False).count("Skipping registering function") > 50, "the noise this silences"
    assert "Skipping registering function" not in gx_import_log(quiet=True)


def test_validate_counts_quarantined_users_per_reason() -> None:
    quarantined = [
        {"reasons": [{"expectation": "upn_equals_mail", "column": "mail"},
                     {"expectation": "required", "column": "surname"}]},
        {"reasons": [{"expectation": "upn_equals_mail", "column": "mail"}]},
        {"reasons": [{"expectation": "unique_upn"}]},
    ]  # fmt: skip
    assert quarantine_reasons(quarantined) == {"upn_equals_mail (mail)": 2, "required (surname)": 1, "unique_upn": 1}
    line = validate_line("acme", {"checked": 300, "quarantined": 3, "failed_share": 0.01}, quarantined, 7)
    assert line == (
        "validation of tenant acme: 300 users checked, 3 quarantined (1.00%) by reason "
        "[upn_equals_mail (mail): 2, required (surname): 1, unique_upn: 1], 7 loaded with warnings"
    )


def test_extract_and_load_lines_carry_their_numbers() -> None:
    summary = {"mode": "delta", "pages": 3, "requests": 5, "retries": 2, "users": 1200, "removed": 4,
               "completeness": "graph_count", "reported": 1200}  # fmt: skip
    assert extract_line("acme", summary) == (
        "extract of tenant acme: delta read, 3 page(s), 5 request(s), 2 retried; 1200 users staged, "
        "4 reported removed; complete by graph_count (source reports 1200)"
    )
    guard = {"to_archive": 40, "limit": 2, "synced_users": 150, "staged_users": 160, "last_synced_users": 160,
             "blocked": True, "message": "deletion guard: this run would archive 40 users"}  # fmt: skip
    line = load_line("acme", "load_archives", {}, guard)
    assert line.startswith("load_archives of tenant acme: nothing to change; deletion guard: 40 to archive, limit 2")
    assert line.endswith("BLOCKED: deletion guard: this run would archive 40 users")
    assert load_line("acme", "load_upserts", {"create": 3, "update": 0}) == "load_upserts of tenant acme: create: 3"
