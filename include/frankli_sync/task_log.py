"""One line per task for its Airflow log: what it read, decided and wrote, in numbers an on-call engineer reads.

Pure formatters over the tasks' own summaries; `pipeline` logs them. GX's own import chatter
(hundreds of INFO lines of its function registry) is silenced by `quiet_gx` before GX loads.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any


def quiet_gx() -> None:
    """Keep GX's INFO bookkeeping ("Skipping registering function …") out of the task log; warnings stay."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def extract_line(tenant: str, summary: Mapping[str, Any]) -> str:
    evidence = summary.get("completeness")
    reported = summary.get("reported")
    return (
        f"extract of tenant {tenant}: {summary.get('mode')} read, {summary.get('pages', '?')} page(s), "
        f"{summary.get('requests', '?')} request(s), {summary.get('retries', 0)} retried; "
        f"{summary.get('users')} users staged, {summary.get('removed', 0)} reported removed; "
        f"complete by {evidence} (source reports {reported})"
    )


def quarantine_reasons(quarantined: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """How many quarantined users failed each expectation (a user failing two counts in both)."""
    counts: Counter[str] = Counter()
    for entry in quarantined:
        for reason in {_reason_name(r) for r in entry.get("reasons") or []}:
            counts[reason] += 1
    return counts


def validate_line(
    tenant: str, summary: Mapping[str, Any], quarantined: Iterable[Mapping[str, Any]], warned: int
) -> str:
    reasons = quarantine_reasons(quarantined)
    listed = ", ".join(f"{name}: {n}" for name, n in reasons.most_common()) or "none"
    return (
        f"validation of tenant {tenant}: {summary['checked']} users checked, {summary['quarantined']} quarantined "
        f"({summary['failed_share']:.2%}) by reason [{listed}], {warned} loaded with warnings"
    )


def load_line(tenant: str, task: str, counts: Mapping[str, int], guard: Mapping[str, Any] | None = None) -> str:
    written = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()) if v) or "nothing to change"
    line = f"{task} of tenant {tenant}: {written}"
    if guard is not None and not guard.get("to_archive"):
        line += "; deletion guard: nothing to archive"
    elif guard is not None:
        line += (
            f"; deletion guard: {guard.get('to_archive')} to archive, limit {guard.get('limit')} "
            f"of {guard.get('synced_users')} synced users, {guard.get('staged_users')} staged "
            f"(last synced run: {guard.get('last_synced_users')}), "
            f"{'BLOCKED: ' + str(guard.get('message')) if guard.get('blocked') else 'passed'}"
        )
    return line


def _reason_name(reason: Mapping[str, Any]) -> str:
    name = str(reason.get("expectation") or "unknown")
    return f"{name} ({reason['column']})" if reason.get("column") else name
