"""Extraction: a source → this run's complete staging snapshot, with evidence that it is complete.

Graph: a full read goes through ``/users/delta`` from scratch (every user,
999 per page, managers included) and ends with a delta link. The next run,
unless a full read is asked for or due, copies the last snapshot and applies
only the changes behind that link, so the staged snapshot is always the full
current state. A stale link (HTTP 410) falls back to a full read. Each page is
applied in its own transaction with the link of the next page, so a task
retried after a failure resumes where it stopped, replaying at most one page
(pages upsert by object id: nothing is duplicated or lost).

Only a read proven complete is marked complete (DESIGN §2 "Evidence, not
counts"): the users staged must match the size Graph reports
(``GET /users/$count``) within the tenant's tolerance. A full read that falls
short fails the extract: the snapshot stays incomplete (no later task can use
it) and the delta link is not advanced. A delta snapshot that disagrees with
the count is read again in full. A CSV export is complete when every record
parsed against its header (`sources.csv_export` checks the whole file first).

Extracts of one tenant hold its extraction lock, so two runs (a backfill)
never read from the same delta link at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from frankli_sync.config import TenantConfig
from frankli_sync.entra import GRAPH_SELECT
from frankli_sync.sources import UserPage
from frankli_sync.staging import Staging

log = logging.getLogger(__name__)

GRAPH_COUNT = "graph_count"
CSV_PARSE = "csv_parse"


class IncompleteRead(RuntimeError):
    """The source delivered fewer users than it reports: nothing read may be used."""


@dataclass(frozen=True)
class Read:
    """What a source's read staged, with its evidence: the size the source itself reports."""

    mode: str  # full, delta, or why a delta read became a full one
    reported: int  # the users the source says it holds (Graph's /users/$count; the CSV's records)
    details: dict[str, Any] = field(default_factory=dict)  # e.g. Graph requests and retries
    delta_link: str | None = None  # where the next run's read starts (Graph)


class SourceReader(Protocol):
    """A tenant's source: stages `UserPage`s for a run (`stage_pages`) and says how it proves them complete."""

    completeness: str  # how completeness is proven (recorded with the snapshot)

    def identity(self) -> str:
        """What the tenant reads: the organisation it writes to records this one source (DESIGN §2 Ownership)."""
        ...

    async def read(self, staging: Staging, run_id: str, full_sync: bool) -> Read: ...


def source_reader(tenant: TenantConfig) -> SourceReader:
    return READERS[tenant.source.kind](tenant)


def extract_users(staging: Staging, tenant: TenantConfig, run_id: str, full_sync: bool = False) -> dict[str, Any]:
    """Stage the tenant's users for this run; returns a summary (mode, users, pages, removed, evidence)."""
    reader = source_reader(tenant)
    with staging.extract_lock(tenant.name):
        read = asyncio.run(reader.read(staging, run_id, full_sync))
        summary = _complete(staging, tenant, run_id, read, reader)
        if read.delta_link is not None:
            staging.save_cursor(
                tenant.name,
                read.delta_link,
                run_id,
                full_read=not read.mode.startswith("delta"),
                selected=",".join(tenant.graph_select),
            )
        return summary


def source_identity(tenant: TenantConfig) -> str:
    """What the tenant reads: the Entra tenant id of its Graph connection, or ``csv:<tenant>``."""
    return source_reader(tenant).identity()


async def stage_pages(staging: Staging, tenant: TenantConfig, run_id: str, pages: AsyncIterator[UserPage]) -> int:
    """Stage each page in its own transaction with the link to resume after it; the number of pages."""
    count = 0
    async for page in pages:
        staging.apply_page(tenant.name, run_id, page.rows, page.removed, page.next_link)
        count += 1
    return count


class CsvReader:
    """The admin center's users export: complete when every record parsed against its header."""

    completeness = CSV_PARSE

    def __init__(self, tenant: TenantConfig) -> None:
        self.tenant = tenant

    def identity(self) -> str:
        return f"csv:{self.tenant.name}"

    async def read(self, staging: Staging, run_id: str, full_sync: bool) -> Read:
        staging.begin_snapshot(self.tenant.name, run_id, "csv")
        records = 0

        async def pages() -> AsyncIterator[UserPage]:
            nonlocal records
            # read_csv_pages checks the whole file before it yields the first page.
            from frankli_sync.sources.csv_export import read_csv_pages

            for rows in read_csv_pages(self.tenant.source.path or ""):
                records += len(rows)
                yield UserPage(rows)

        count = await stage_pages(staging, self.tenant, run_id, pages())
        return Read("full", reported=records, details={"pages": count})


class GraphReader:
    """Microsoft Graph through the Azure provider's hook: complete when the read matches /users/$count."""

    completeness = GRAPH_COUNT

    def __init__(self, tenant: TenantConfig) -> None:
        self.tenant = tenant

    def identity(self) -> str:
        from airflow.sdk import BaseHook

        conn_id = self.tenant.source.conn_id
        extra = BaseHook.get_connection(conn_id or "").extra_dejson
        entra_tenant = str(extra.get("tenant_id") or extra.get("tenantId") or "").strip().lower()
        return entra_tenant or f"msgraph:{conn_id}"

    async def read(self, staging: Staging, run_id: str, full_sync: bool) -> Read:
        from frankli_sync.sources.graph import DeltaTokenExpired, GraphClient, RetryPolicy

        tenant = self.tenant
        retry = RetryPolicy(
            max_retry_after=float(tenant.source.max_retry_after_seconds),
            max_total_wait=float(tenant.source.max_retry_seconds),
        )
        client = GraphClient(tenant.source.conn_id or "", retry=retry)
        try:
            start, mode = _starting_point(staging, tenant, run_id, full_sync)
            try:
                delta_link = await _read_pages(staging, tenant, run_id, client, start)
            except DeltaTokenExpired as expired:
                log.warning("%s; reading every user again", expired)
                mode = "full (delta token expired)"
                delta_link = await _read_all(staging, tenant, run_id, client)
            reported = await graph_user_count(client)
            received = staging.staged_count(tenant.name, run_id)
            if mode.startswith("delta") and abs(reported - received) > tenant.source.count_tolerance(reported):
                # The base snapshot plus the changes does not add up to the directory: never build on it.
                log.warning(
                    "tenant %s: the delta snapshot holds %d users but Graph reports %d; reading every user again",
                    tenant.name,
                    received,
                    reported,
                )
                mode = "full (delta snapshot did not match /users/$count)"
                delta_link = await _read_all(staging, tenant, run_id, client)
                reported = await graph_user_count(client)
                received = staging.staged_count(tenant.name, run_id)
            _check_complete(tenant, run_id, received, reported)
            await _stage_scope_groups(staging, tenant, run_id, client)
            details = {"requests": client.requests, "retries": client.retries}
            return Read(mode, reported=reported, details=details, delta_link=delta_link)
        finally:
            await client.close()


READERS: dict[str, type[CsvReader] | type[GraphReader]] = {"csv": CsvReader, "graph": GraphReader}


async def graph_user_count(client: Any) -> int:
    """The number of users Graph holds (``GET /users/$count``, an eventually consistent count)."""
    body = await client.get("users/$count", headers={"ConsistencyLevel": "eventual", "Accept": "text/plain"})
    text = str(body).strip().lstrip("\ufeff")
    if isinstance(body, bool) or not text.isdigit():
        raise IncompleteRead(f"GET /users/$count on {client.conn_id!r} did not answer a number: {text[:100]!r}")
    return int(text)


def _check_complete(tenant: TenantConfig, run_id: str, received: int, reported: int) -> None:
    shortfall = reported - received
    allowed = tenant.source.count_tolerance(reported)
    if shortfall > allowed:
        raise IncompleteRead(
            f"tenant {tenant.name} run {run_id}: the full read returned {received} users but Graph reports "
            f"{reported} (GET /users/$count); {shortfall} are missing, more than the tolerance of {allowed} "
            f"(source.count_tolerance_users / count_tolerance_share). The listing ended early, so this read "
            "cannot tell who left: nothing was staged as a snapshot, the delta link was not advanced and Frankli "
            "was not written. The task is retried; if it keeps failing, check Graph's service health and run "
            'again with {"full_sync": true} later.'
        )
    log.info(
        "tenant %s: read %d users, Graph reports %d (tolerance %d): complete", tenant.name, received, reported, allowed
    )


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
    # A delta link reads the attributes of the read that began it: a tenant that now needs others reads in full.
    reselect = cursor is not None and (cursor.get("selected") or ",".join(GRAPH_SELECT)) != ",".join(
        tenant.graph_select
    )
    if reselect:
        log.info("tenant %s reads other Entra attributes than its delta link (%s): a full read", tenant.name,
                 ",".join(tenant.graph_select))  # fmt: skip
    if full_sync or cursor is None or due or not base_ok or reselect:
        staging.begin_snapshot(tenant.name, run_id, "graph")
        return None, "full"
    staging.begin_snapshot(tenant.name, run_id, "graph", base_run_id=cursor["snapshot_run_id"])
    return cursor["delta_link"], "delta"


async def _read_all(staging: Staging, tenant: TenantConfig, run_id: str, client: Any) -> str:
    staging.begin_snapshot(tenant.name, run_id, "graph")
    return await _read_pages(staging, tenant, run_id, client, None)


async def _read_pages(staging: Staging, tenant: TenantConfig, run_id: str, client: Any, start: str | None) -> str:
    from frankli_sync.sources.graph import iter_user_pages

    delta_link = None

    async def pages() -> AsyncIterator[UserPage]:
        nonlocal delta_link
        async for page in iter_user_pages(client, start, tenant.source.page_size, tenant.graph_select):
            delta_link = page.delta_link or delta_link
            yield page

    await stage_pages(staging, tenant, run_id, pages())
    assert delta_link, "iter_user_pages ends with a delta link"
    return delta_link


async def _stage_scope_groups(staging: Staging, tenant: TenantConfig, run_id: str, client: Any) -> None:
    from frankli_sync.sources.graph import iter_group_member_ids

    for group_id in tenant.scope.groups:
        batch: list[str] = []
        async for member in iter_group_member_ids(client, group_id, tenant.source.page_size):
            batch.append(member)
            if len(batch) >= 5000:
                staging.add_scope_members(tenant.name, run_id, batch)
                batch = []
        staging.add_scope_members(tenant.name, run_id, batch)


def _complete(staging: Staging, tenant: TenantConfig, run_id: str, read: Read, reader: SourceReader) -> dict[str, Any]:
    users = staging.staged_count(tenant.name, run_id)
    identity = reader.identity()
    staging.complete_snapshot(
        tenant.name,
        run_id,
        users,
        source_id=identity,
        completeness=reader.completeness,
        reported_count=read.reported,
    )
    cursor = staging.cursor(tenant.name)
    previous = staging.last_synced(tenant.name, run_id)
    keep = [run_id, *([cursor["snapshot_run_id"]] if cursor else []), *([previous[0]] if previous else [])]
    staging.prune(tenant.name, keep_runs=keep)
    removed = staging.removed_ids(tenant.name, run_id)
    log.info("staged %d Entra users for tenant %s run %s (%s)", users, tenant.name, run_id, read.mode)
    evidence = {"completeness": reader.completeness, "reported": read.reported, "source": identity}
    return {"users": users, "removed": len(removed), "mode": read.mode, **read.details, **evidence}


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
