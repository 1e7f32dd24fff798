"""Extraction: a source → this run's complete staging snapshot.

Graph: a full read goes through ``/users/delta`` from scratch (every user,
999 per page, managers included) and ends with a delta link. The next run,
unless a full read is asked for or due, copies the last snapshot and applies
only the changes behind that link, so the staged snapshot is always the full
current state. A stale link (HTTP 410) falls back to a full read. Each page is
applied in its own transaction with the link of the next page, so a task
retried after a failure resumes where it stopped, replaying at most one page
(pages upsert by object id: nothing is duplicated or lost). Only a read that
reached its end is marked complete.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from frankli_sync.config import TenantConfig
from frankli_sync.staging import Staging

log = logging.getLogger(__name__)


def extract_users(staging: Staging, tenant: TenantConfig, run_id: str, full_sync: bool = False) -> dict[str, Any]:
    """Stage the tenant's users for this run; returns a summary (mode, users, pages, removed)."""
    if tenant.source.kind == "csv":
        from frankli_sync.sources.csv_export import read_csv_pages

        staging.begin_snapshot(tenant.name, run_id, "csv")
        pages = 0
        for rows in read_csv_pages(tenant.source.path or ""):
            staging.apply_page(tenant.name, run_id, rows, {}, next_link=None)
            pages += 1
        return _complete(staging, tenant, run_id, {"mode": "full", "pages": pages})
    return asyncio.run(_extract_graph(staging, tenant, run_id, full_sync))


async def _extract_graph(staging: Staging, tenant: TenantConfig, run_id: str, full_sync: bool) -> dict[str, Any]:
    from frankli_sync.sources.graph import DeltaTokenExpired, GraphClient, iter_group_member_ids

    client = GraphClient(tenant.source.conn_id or "")
    try:
        start, mode = _starting_point(staging, tenant, run_id, full_sync)
        try:
            delta_link = await _read_pages(staging, tenant, run_id, client, start)
        except DeltaTokenExpired as expired:
            log.warning("%s; reading every user again", expired)
            staging.begin_snapshot(tenant.name, run_id, "graph")
            mode = "full (delta token expired)"
            delta_link = await _read_pages(staging, tenant, run_id, client, None)
        for group_id in tenant.scope.groups:
            batch: list[str] = []
            async for member in iter_group_member_ids(client, group_id, tenant.source.page_size):
                batch.append(member)
                if len(batch) >= 5000:
                    staging.add_scope_members(tenant.name, run_id, batch)
                    batch = []
            staging.add_scope_members(tenant.name, run_id, batch)
        summary = _complete(
            staging,
            tenant,
            run_id,
            {"mode": mode, "requests": client.requests, "retries": client.retries},
        )
        staging.save_cursor(tenant.name, delta_link, run_id, full_read=not mode.startswith("delta"))
        return summary
    finally:
        await client.close()


def _starting_point(staging: Staging, tenant: TenantConfig, run_id: str, full_sync: bool) -> tuple[str | None, str]:
    """Where to start reading: a resume link, the stored delta link, or the beginning."""
    record = staging.extraction(tenant.name, run_id)
    if record and record["status"] == "extracting" and record["resume_link"]:
        log.info("resuming the extraction of run %s after %s page(s)", run_id, record["pages"])
        return record["resume_link"], f"{record['mode']} (resumed)"
    cursor = staging.cursor(tenant.name)
    due = cursor is not None and datetime.now(UTC) - _aware(cursor["full_read_at"]) > timedelta(
        days=tenant.source.full_resync_days
    )
    base_ok = (
        cursor is not None
        and (staging.extraction(tenant.name, cursor["snapshot_run_id"]) or {}).get("status") == "complete"
    )
    if full_sync or cursor is None or due or not base_ok:
        staging.begin_snapshot(tenant.name, run_id, "graph")
        return None, "full"
    staging.begin_snapshot(tenant.name, run_id, "graph", base_run_id=cursor["snapshot_run_id"])
    return cursor["delta_link"], "delta"


async def _read_pages(staging: Staging, tenant: TenantConfig, run_id: str, client: Any, start: str | None) -> str:
    from frankli_sync.sources.graph import iter_user_pages

    delta_link = None
    async for page in iter_user_pages(client, start, tenant.source.page_size):
        staging.apply_page(tenant.name, run_id, page.rows, page.removed, page.next_link)
        delta_link = page.delta_link or delta_link
    assert delta_link, "iter_user_pages ends with a delta link"
    return delta_link


def _complete(staging: Staging, tenant: TenantConfig, run_id: str, summary: dict[str, Any]) -> dict[str, Any]:
    users = staging.staged_count(tenant.name, run_id)
    staging.complete_snapshot(tenant.name, run_id, users)
    cursor = staging.cursor(tenant.name)
    previous = staging.last_synced(tenant.name, run_id)
    keep = [run_id, *([cursor["snapshot_run_id"]] if cursor else []), *([previous[0]] if previous else [])]
    staging.prune(tenant.name, keep_runs=keep)
    removed = staging.removed_ids(tenant.name, run_id)
    log.info("staged %d Entra users for tenant %s run %s (%s)", users, tenant.name, run_id, summary["mode"])
    return {"users": users, "removed": len(removed), **summary}


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
