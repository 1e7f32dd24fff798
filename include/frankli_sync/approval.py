"""Approving a mass archive the deletion guard stopped, in Airflow's UI ("Required actions").

When the guard trips on a read proven complete, `load_archives` does not fail: it keeps the
guard's numbers, a sample of who would be archived and a digest of exactly that set, and the
run waits on an `ApprovalOperator`. An approval applies *that* set and nothing else: the
archives are planned again and applied only if their digest is the approved one (a user who
changed since, or a different set, and the run stops instead). A rejection, or no answer
before the timeout, archives nobody and the run ends failed, saying who decided and when.
An unproven read is never offered for approval: its guard message says to read in full.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

APPROVE, REJECT = "Approve", "Reject"  # ApprovalOperator's fixed options
SAMPLE_SIZE = 20
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")


def archive_digest(archives: pd.DataFrame) -> str:
    """A digest of who would be archived and why: the set an approval covers."""
    pairs = sorted(zip(archives["external_id"].astype(str), archives["reason"].astype(str), strict=True))
    text = "\n".join(f"{i}\t{r}" for i, r in pairs)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def approvable(guard: Mapping[str, Any]) -> bool:
    """A blocked guard a person may overrule: the read was proven complete and held users."""
    return bool(guard.get("blocked")) and bool(guard.get("read_complete")) and bool(guard.get("staged_users"))


def sample(archives: pd.DataFrame, size: int = SAMPLE_SIZE) -> list[dict[str, Any]]:
    """The first users of the archive set (by address), as the request lists them."""
    rows = archives.sort_values("email", kind="stable").head(size)
    return [
        {"email": e, "external_id": i, "reason": r}
        for e, i, r in rows[["email", "external_id", "reason"]].itertuples(index=False)
    ]


def request_body(tenant: str, guard: Mapping[str, Any], shown: Iterable[Mapping[str, Any]]) -> str:
    """The approval request in Markdown: the count, the thresholds, the evidence, a sample. Directory data escaped."""
    lines = [
        f"**The deletion guard stopped the archives of tenant `{_md(tenant)}`.**",
        "",
        f"- Users to archive: **{guard.get('to_archive')}**",
        f"- Limit: {guard.get('limit')} (the smaller of `max_archive_count` and `max_archive_share` of "
        f"{guard.get('synced_users')} synced users)",
        f"- Read: {guard.get('staged_users')} users staged, the source reports {guard.get('reported_users')} "
        f"({guard.get('completeness')}); the last synced run had {guard.get('last_synced_users')}",
        "",
        f"Who would be archived (first {SAMPLE_SIZE}, by address; the run's report lists all):",
        "",
    ]
    lines += [f"- {_md(str(u.get('email')))} ({_md(str(u.get('reason')))})" for u in shown]
    lines += [
        "",
        f"**{APPROVE}**: archive exactly these users now (if the set changed since, nothing is archived and the "
        f"run fails). **{REJECT}**, or no answer before the timeout: archive nobody; the run fails with the reason.",
    ]
    return "\n".join(lines)


def decision(response: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the person decided, from the ApprovalOperator's result (None: the approval task did not answer)."""
    if not response:
        return {"approved": False, "by": None, "at": None, "how": "were not answered (the approval step did not run)"}
    chosen = list(response.get("chosen_options") or [])
    user = response.get("responded_by_user") or {}
    by = (user.get("name") or user.get("id")) if isinstance(user, Mapping) else None
    at = response.get("responded_at")
    return {
        "approved": chosen == [APPROVE],
        "by": by,
        "at": str(at) if at is not None else None,
        "how": "were not answered before the timeout"
        if by is None
        else ("were approved" if chosen == [APPROVE] else "were rejected"),
    }


def _md(text: str) -> str:
    return _MARKDOWN.sub(r"\\\1", text.replace("\n", " "))
