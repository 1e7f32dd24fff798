"""Issue #12: approving a mass archive the deletion guard stopped (`approval`)."""

from __future__ import annotations

import pandas as pd
import pytest
from frankli_sync.approval import APPROVE, REJECT, approvable, archive_digest, decision, request_body, sample

pytestmark = pytest.mark.unit


def archives(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["external_id", "email", "reason"], dtype=object)


def test_the_digest_covers_exactly_who_and_why() -> None:
    base = archives(("id-1", "a@x", "disabled"), ("id-2", "b@x", "deleted"))
    assert archive_digest(base) == archive_digest(base.iloc[::-1]), "order does not matter"
    assert archive_digest(base) != archive_digest(base.iloc[:1]), "one user fewer is another set"
    assert archive_digest(base) != archive_digest(archives(("id-1", "a@x", "disabled"), ("id-3", "b@x", "deleted")))
    assert archive_digest(base) != archive_digest(archives(("id-1", "a@x", "deleted"), ("id-2", "b@x", "deleted")))


def test_only_a_proven_read_may_be_approved() -> None:
    proven = {"blocked": True, "read_complete": True, "staged_users": 160}
    assert approvable(proven)
    assert not approvable({**proven, "read_complete": False}), "an unproven read: read in full, never approve"
    assert not approvable({**proven, "staged_users": 0})
    assert not approvable({**proven, "blocked": False})


def test_the_request_escapes_directory_data_and_says_what_each_answer_does() -> None:
    guard = {"to_archive": 40, "limit": 2, "synced_users": 160, "staged_users": 160, "reported_users": 160,
             "completeness": "graph_count", "last_synced_users": 200}  # fmt: skip
    rows = archives(
        *((f"id-{i}", f"u{i}@x", "disabled") for i in range(30)), ("id-x", "[click](http://evil)", "deleted")
    )
    shown = sample(rows)
    assert len(shown) == 20 and shown[0]["email"] == "[click](http://evil)", "sorted by address, then cut"
    body = request_body("acme", guard, shown)
    assert "Users to archive: **40**" in body and "Limit: 2" in body and "160 users staged" in body
    assert "\\[click\\]\\(http://evil\\)" in body and "[click](http" not in body
    assert f"**{APPROVE}**: archive exactly these users" in body and f"**{REJECT}**" in body


def test_the_decision_says_who_and_how() -> None:
    approved = decision({"chosen_options": [APPROVE], "responded_by_user": {"id": "7", "name": "ops"},
                         "responded_at": "2026-12-01T05:00:00+00:00"})  # fmt: skip
    assert approved == {"approved": True, "by": "ops", "at": "2026-12-01T05:00:00+00:00", "how": "were approved"}
    assert decision({"chosen_options": [REJECT], "responded_by_user": {"id": "7", "name": "ops"}})["how"] == (
        "were rejected"
    )
    timed_out = decision({"chosen_options": [REJECT], "responded_by_user": None})
    assert timed_out["approved"] is False and timed_out["how"] == "were not answered before the timeout"
    assert decision(None)["approved"] is False


def test_the_approval_wait_is_configured_per_tenant_and_bounded() -> None:
    from frankli_sync.config import parse_config

    def tenant(**thresholds: object) -> dict:
        return {"tenants": [{"name": "contoso", "source": {"kind": "graph", "conn_id": "msgraph_contoso"},
                             "target": {"kind": "database", "conn_id": "frankli_contoso", "organisation": "Contoso"},
                             "thresholds": thresholds}]}  # fmt: skip

    assert parse_config(tenant()).tenant("contoso").thresholds.archive_approval_hours == 8.0
    assert parse_config(tenant(archive_approval_hours=0)).tenant("contoso").thresholds.archive_approval_hours == 0
    broken = parse_config(tenant(archive_approval_hours=500)).errors
    assert "thresholds.archive_approval_hours: 500 must be between 0" in next(iter(broken.values()))
