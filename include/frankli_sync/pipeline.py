"""The six task bodies of an `entra_to_frankli__<tenant>` DAG run.

Each function takes the tenant name, the Airflow run id and the trigger
params, does its I/O at the edges (staging, Graph, the Frankli database,
the reports directory) and returns a small JSON-able summary for XCom.
Every one is idempotent: clearing and re-running it gives the same result.
The transform keeps its plan in staging (`plan_store`); a load applies it only
while Frankli and the run's inputs are provably as the plan saw them, and
otherwise computes the plan again inside its own transaction, so a re-run
finds what an earlier attempt already applied and writes nothing twice.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from frankli_sync import approval, incremental, mapped_fields, task_log
from frankli_sync.config import SyncConfig, TenantConfig, load_config
from frankli_sync.connections import staging_engine
from frankli_sync.db_values import as_utc
from frankli_sync.errors import SyncStopped
from frankli_sync.incremental import Basis, Focus
from frankli_sync.plan import FrankliState, Plan, PlanOptions, plan_user_changes
from frankli_sync.plan_store import PlanKey, PlanStore
from frankli_sync.report import TASKS as REPORTED_TASKS
from frankli_sync.report import plan_document, run_directory, write_run_report
from frankli_sync.sinks import open_sink
from frankli_sync.sinks.interface import AuditEntry, FrankliSession, FrankliSink, OrganisationOwnedElsewhere
from frankli_sync.staging import SnapshotMissing, Staging
from frankli_sync.sync_record import SyncRecord, carried_findings, quarantine_entries
from frankli_sync.task_outcome import failure_document, failure_kind
from frankli_sync.transform import (
    OUT_OF_SCOPE,
    QUARANTINED,
    desired_users,
    email_fold_of,
    email_key,
    email_key_of,
    json_ready,
    scope_status,
)
from frankli_sync.ui_links import report_url

log = logging.getLogger(__name__)
# Appended to the mark recorded after a load the target refused writes of: no read matches it, so the
# next run plans in full and tries those users again.
REFUSED = "-refused"


class ValidationThresholdExceeded(SyncStopped):
    pass


class DeletionGuardTriggered(SyncStopped):
    pass


class OwnershipConflict(SyncStopped):
    """The tenant's Frankli organisation is synced from another source."""


@dataclass(frozen=True)
class RunParams:
    dry_run: bool = False
    full_sync: bool = False
    allow_mass_archive: bool = False
    only_user: str | None = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> RunParams:
        raw = dict(raw or {})
        values: dict[str, Any] = {}
        for flag in ("dry_run", "full_sync", "allow_mass_archive"):
            value = raw.get(flag, False)
            if not isinstance(value, bool):
                raise ValueError(f"trigger param {flag}: must be true or false, got {value!r}")
            values[flag] = value
        only_user = raw.get("only_user")
        if only_user is not None and (not isinstance(only_user, str) or "@" not in only_user):
            raise ValueError(f"trigger param only_user: must be a UPN like jane@contoso.com, got {only_user!r}")
        values["only_user"] = only_user.strip() if only_user else None
        return cls(**values)


@dataclass
class RunContext:
    config: SyncConfig
    tenant: TenantConfig
    run_id: str
    params: RunParams
    staging: Staging

    @classmethod
    def open(cls, tenant_name: str, run_id: str, params: Mapping[str, Any] | None = None) -> RunContext:
        config = load_config()
        return cls(
            config=config,
            tenant=config.tenant(tenant_name),
            run_id=run_id,
            params=RunParams.from_mapping(params),
            staging=Staging(staging_engine(config.staging_conn_id)),
        )

    @cached_property
    def record(self) -> SyncRecord:
        return SyncRecord(self.staging.engine)

    @cached_property
    def plans(self) -> PlanStore:
        return PlanStore(self.staging.engine)

    @property
    def run_dir(self) -> Path:
        return run_directory(self.config.reports_dir, self.tenant.name, self.run_id)

    def clock(self) -> datetime:
        """The instant this run's Entra snapshot was taken: every Frankli timestamp the run writes.

        A cleared or retried load therefore writes the same values as the first attempt,
        and the same run gives the same rows on SQLite and PostgreSQL.
        """
        record = self.staging.extraction(self.tenant.name, self.run_id)
        if record is None:
            raise SnapshotMissing(f"tenant {self.tenant.name} run {self.run_id}: no extraction; run extract first")
        started: datetime = record["started_at"]
        return as_utc(started)

    def source(self) -> str:
        """The source this run read (recorded by its extract), the identity its writes are checked against."""
        from frankli_sync.extraction import source_identity

        record = self.staging.extraction(self.tenant.name, self.run_id) or {}
        return record.get("source_id") or source_identity(self.tenant)

    @cached_property
    def sink(self) -> FrankliSink:
        return open_sink(self.tenant.target, self.staging.engine)

    @contextmanager
    def frankli(self, owned: bool = True) -> Iterator[FrankliSession]:
        """The tenant's Frankli organisation, locked, in one transaction of its sink.

        `owned`: the organisation must be synced from this run's source (claimed if it records none);
        a run from another source stops before reading or writing anything.
        """
        try:
            source = self.source() if owned else None
            with self.sink.session(self.tenant.target.organisation, source) as session:
                yield session
        except OrganisationOwnedElsewhere as owned_elsewhere:
            raise OwnershipConflict(self._ownership_message(owned_elsewhere)) from owned_elsewhere

    def _ownership_message(self, error: OrganisationOwnedElsewhere) -> str:
        target = self.tenant.target
        return (
            f"tenant {self.tenant.name}: Frankli organisation {error.organisation!r} (connection "
            f"{target.conn_id}) is synced from {error.recorded!r}, but this tenant reads {error.incoming!r}. "
            "Each organisation is synced from exactly one source, or each run would archive the other's users; "
            f"nothing was written. Point the target of tenant {self.tenant.name} at its own organisation. "
            f"If the organisation really moved to this source, an admin must first change the source recorded in "
            f"{error.where} to {error.incoming!r} (users not in the new source are then archived)."
        )


# --- extract ---------------------------------------------------------------------------------


Step = Callable[..., dict[str, Any]]  # (tenant name, run id, params, **step-specific inputs) -> summary


def _records_failure(step: Step) -> Step:
    """The step keeps the exception it ends with for the run's report (`task_outcome`), then raises it."""

    @functools.wraps(step)
    def run(tenant_name: str, run_id: str, params: Mapping[str, Any] | None = None, **inputs: Any) -> dict[str, Any]:
        try:
            return step(tenant_name, run_id, params, **inputs)
        except Exception as error:
            _keep_failure(tenant_name, run_id, step.__name__, error)
            raise

    return run


def _keep_failure(tenant_name: str, run_id: str, task: str, error: Exception) -> None:
    try:
        staging = RunContext.open(tenant_name, run_id).staging
        staging.save_document(tenant_name, run_id, failure_kind(task), failure_document(task, error))
    except Exception as unrecorded:  # the report then says "no error was recorded"; the task log has it
        log.warning(
            "tenant %s run %s: the cause of %s's failure was not kept: %s", tenant_name, run_id, task, unrecorded
        )


@_records_failure
def extract(tenant_name: str, run_id: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Stage the tenant's Entra users for this run (full or delta read, resumable)."""
    from frankli_sync.extraction import extract_users

    ctx = RunContext.open(tenant_name, run_id, params)
    summary = extract_users(ctx.staging, ctx.tenant, run_id, full_sync=ctx.params.full_sync)
    pages = (ctx.staging.extraction(ctx.tenant.name, run_id) or {}).get("pages")
    log.info(task_log.extract_line(tenant_name, {"pages": pages, **summary}))
    return summary


def staged_users(ctx: RunContext, run_id: str) -> pd.DataFrame:
    """A run's snapshot, with `group_member` when the tenant is scoped to groups."""
    staged = ctx.staging.snapshot(ctx.tenant.name, run_id)
    if ctx.tenant.scope.groups:
        members = ctx.staging.scope_member_ids(ctx.tenant.name, run_id)
        staged["group_member"] = staged["object_id"].isin(members)
    return staged


# --- validate --------------------------------------------------------------------------------


@_records_failure
def validate(tenant_name: str, run_id: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run the GX suite on the in-scope staged users; quarantine failing rows; stop above the threshold.

    An incremental run (`incremental.basis`) validates its participants only and carries the
    other users' quarantines over from the record; it and `only_user` runs evaluate the suite
    in pandas (`validation.evaluate_in_pandas`, GX's verdicts) without Data Docs.
    """
    task_log.quiet_gx()
    from frankli_sync.validation import ValidationSettings, validate_users

    ctx = RunContext.open(tenant_name, run_id, params)
    basis, focus = _basis(ctx)
    staged = focus.staged if focus else staged_users(ctx, run_id)
    in_scope = staged[scope_status(staged, ctx.tenant.scope) != OUT_OF_SCOPE].reset_index(drop=True)
    lengths = ctx.sink.field_lengths(ctx.tenant.mapping)
    settings = ValidationSettings(
        required_fields=ctx.tenant.validation.required_columns,
        warn_fields=ctx.tenant.validation.warn_columns,
        max_lengths={c: n for c, n in lengths.items() if not c.startswith("mapping.")},
    )
    # GX with Data Docs for full runs; the same suite in pandas where a GX context would cost more than the
    # run (an incremental run's participants, an only_user run).
    light = focus is not None or bool(ctx.params.only_user)
    outcome = validate_users(
        in_scope,
        settings,
        docs_dir=None if light else ctx.run_dir / "validation",
        run_name=run_id,
        engine="pandas" if light else "gx",
    )
    # Users an expression mapping gives no storable value are quarantined as Entra fails their export.
    failed = mapped_fields.failures(in_scope, ctx.tenant.mapping, lengths, ctx.clock())
    quarantined = mapped_fields.merged(outcome.quarantined.to_dict("records"), failed)
    checked = in_scope_total = outcome.checked
    if focus:
        carried, in_scope_total = _carried_quarantines(ctx, focus, outcome.checked)
        quarantined = carried + quarantined
    failed_share = len(quarantined) / in_scope_total if in_scope_total else 0.0
    threshold = ctx.tenant.thresholds.max_invalid_share
    exceeded = failed_share > threshold
    ctx.staging.save_document(
        ctx.tenant.name,
        run_id,
        "validation",
        {
            "checked": checked,
            "in_scope": in_scope_total,
            "basis": basis.document(),
            "quarantined": quarantined,
            "warnings": outcome.warnings.to_dict("records"),
            "statistics": outcome.statistics,
            "failed_share": failed_share,
            "threshold": threshold,
            "threshold_exceeded": exceeded,
            "docs_index": str(outcome.docs_index) if outcome.docs_index else None,
        },
    )
    summary = {
        "checked": checked,
        "quarantined": len(quarantined),
        "failed_share": round(failed_share, 4),
    }
    log.info("tenant %s run %s validated %s users (%s: %s)", tenant_name, run_id, checked, basis.mode, basis.reason)
    log.info(task_log.validate_line(tenant_name, summary, quarantined, len(outcome.warnings)))
    if exceeded:
        raise ValidationThresholdExceeded(
            f"{len(quarantined)} of {in_scope_total} users ({failed_share:.1%}) fail validation, "
            f"above tenants[{tenant_name}].thresholds.max_invalid_share = {threshold:.1%}; nothing is loaded. "
            f"See the validation report {outcome.docs_index or ctx.run_dir}"
        )
    return summary


def _basis(ctx: RunContext) -> tuple[Basis, Focus | None]:
    """How this run plans; with the participants when it is incremental."""
    basis = incremental.basis(ctx.staging, ctx.record, ctx.tenant, ctx.run_id, ctx.params.full_sync)
    if basis.mode != "incremental":
        return basis, None
    focus = incremental.focus(ctx.staging, ctx.record, ctx.tenant, ctx.run_id, ctx.params.only_user)
    if focus is None:
        return Basis("full", f"the changes touch over {incremental.MAX_SHARE:.0%} of the tenant"), None
    ctx.staging.save_document(ctx.tenant.name, ctx.run_id, "focus", incremental.kept_focus(focus, basis))
    return basis, focus


def _carried_quarantines(ctx: RunContext, focus: Focus, checked: int) -> tuple[list[dict[str, Any]], int]:
    """The record's quarantines of users this run does not validate, and the tenant's in-scope count."""
    held = ctx.record.in_states(ctx.tenant.name, ["quarantined"])
    carried = quarantine_entries(held[~held["object_id"].isin(focus.participants)])
    counts = ctx.record.counts(ctx.tenant.name)
    before = int((focus.record["state"] != OUT_OF_SCOPE).sum())
    return carried, sum(n for state, n in counts.items() if state != OUT_OF_SCOPE) - before + checked


# --- transform (plan) ------------------------------------------------------------------------


@_records_failure
def transform(tenant_name: str, run_id: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Entra rows → desired Frankli users → the plan against Frankli's current state (read-only)."""
    ctx = RunContext.open(tenant_name, run_id, params)
    with ctx.frankli() as frankli:
        planned = compute_plan(ctx, frankli)
        frankli.discard()  # planning writes nothing
    document = plan_document(planned.plan, full=ctx.params.dry_run)
    document["basis"] = planned.basis.document()
    if ctx.params.only_user:
        document["mapping_trace"] = _mapping_trace(ctx, planned.staged)
    ctx.staging.save_document(ctx.tenant.name, run_id, "plan", document)
    if not ctx.params.dry_run:
        _keep(ctx, planned, planned.mark)
    log.info("tenant %s run %s planned %s (%s)", tenant_name, run_id, planned.basis.mode, planned.basis.reason)
    return document["counts"]


def _mapping_trace(ctx: RunContext, staged: pd.DataFrame) -> list[dict[str, Any]] | None:
    """An only_user run's user: which mapping gave each value (None when the user is not staged)."""
    keys = email_key(staged["user_principal_name"]) if len(staged) else pd.Series(dtype="object")
    rows = staged[(keys == email_key_of(ctx.params.only_user)).to_numpy(dtype=bool)]
    if rows.empty:
        return None
    row = {c: rows.iloc[0][c] for c in rows.columns}
    return json_ready(mapped_fields.trace(row, ctx.tenant.mapping, ctx.clock()))


@dataclass(frozen=True)
class Planned:
    """A plan with what it was computed from: the planned users' staged and desired rows, the quarantine."""

    plan: Plan
    basis: Basis
    staged: pd.DataFrame
    desired: pd.DataFrame  # aligned with `staged`
    quarantined: list[dict[str, Any]]  # the validation document's entries (carried ones included)
    mark: str = ""  # Frankli's mark read before its state (a quiet plan: the recorded one, nothing read)
    participants: frozenset[str] | None = None  # incremental: the users the plan is about
    record: pd.DataFrame | None = None  # the record rows, when the plan was kept with them
    kept: bool = False  # read back from `plan_store` (not computed by this task)


def compute_plan(ctx: RunContext, frankli: FrankliSession, mark: str | None = None) -> Planned:
    """The plan for this run against the organisation as `frankli` sees it (pure given the inputs).

    Incremental when validation planned the run so, the record still describes the same run
    and Frankli holds what the sync last left there (`mark`, `frankli_mark`); in full otherwise,
    or when the subset's plan reaches outside it. The mark is read before the state, so a write
    landing in between moves it and the loads plan again; a run nothing changed for in Entra
    reads neither (`incremental.Basis.quiet`).
    """
    ctx.staging.require_complete(ctx.tenant.name, ctx.run_id)
    validation = _validation(ctx)
    recorded = validation.get("basis") or {}
    state = ctx.record.state(ctx.tenant.name) or {}
    same_record = recorded.get("record_run") == state.get("run_id")
    if recorded.get("mode") == "incremental" and same_record:
        basis = Basis(**recorded)
        focus = _focus(ctx, basis)
        if mark is None and _quiet(ctx, focus, state.get("frankli_mark")):
            basis, unread = basis.quiet(), str(state["frankli_mark"])
            planned = _plan_incremental(ctx, frankli, validation, basis, focus, unread)
            if isinstance(planned, Planned):
                return planned
        mark = mark or frankli.mark()
        if mark == state.get("frankli_mark"):
            planned = _plan_incremental(ctx, frankli, validation, basis, focus, mark)
            if isinstance(planned, Planned):
                return planned
            reason = planned
        else:
            reason = (
                "Frankli changed behind the sync since the recorded run (an admin's edit, a load not recorded, "
                "or writes the target refused)"
            )
        basis = Basis("full", reason)
    elif recorded.get("mode") == "incremental":
        basis = Basis("full", "the record changed since validation")
    else:
        basis = Basis("full", recorded.get("reason") or "validated in full")
    mark = mark or frankli.mark()
    return _plan_full(ctx, frankli.state(), validation, basis, mark)


def _quiet(ctx: RunContext, focus: Focus | None, recorded_mark: str | None) -> bool:
    """Nothing changed in Entra for this run (no participant) and the target is not read for nothing.

    The database's mark costs one query: it is read, and an edit made in Frankli is undone at once. A
    SCIM endpoint is not asked anything, unless the last load left writes the target refused (they are
    tried again) or no mark was recorded. An only_user run always reads its user.
    """
    if ctx.sink.reads_when_nothing_changed or ctx.params.only_user:
        return False
    if not recorded_mark or recorded_mark.endswith(REFUSED):
        return False
    return focus is not None and not focus.participants


def _plan_full(ctx: RunContext, state: FrankliState, validation: Mapping[str, Any], basis: Basis, mark: str) -> Planned:
    staged = staged_users(ctx, ctx.run_id)
    quarantined = {q["object_id"] for q in validation["quarantined"] if q.get("object_id")}
    desired = desired_users(staged, ctx.tenant.mapping, ctx.tenant.scope, quarantined, ctx.clock())
    previous = None
    last = ctx.staging.last_synced(ctx.tenant.name, ctx.run_id)
    if last is not None:
        try:
            previous_staged = staged_users(ctx, last[0])
            previous = desired_users(previous_staged, ctx.tenant.mapping, ctx.tenant.scope, now=ctx.clock())
        except SnapshotMissing:
            previous = None
    deleted = frozenset(ctx.staging.removed_ids(ctx.tenant.name, ctx.run_id))
    options = PlanOptions(mapping=ctx.tenant.mapping, only_user=ctx.params.only_user, deleted_ids=deleted)
    plan = plan_user_changes(desired, state, options, previous=previous)
    return Planned(plan, basis, staged, desired, validation["quarantined"], mark)


def _plan_incremental(
    ctx: RunContext,
    frankli: FrankliSession,
    validation: Mapping[str, Any],
    basis: Basis,
    focus: Focus | None,
    mark: str,
) -> Planned | str:
    """The plan of the participants, against the part of Frankli they can meet; or why to plan in full."""
    name, tenant = ctx.tenant.name, ctx.tenant
    if focus is None:
        return f"the changes touch over {incremental.MAX_SHARE:.0%} of the tenant"
    own = focus.desired
    emails = own["email"] if "email" in own else own["upn_key"]
    keys = set(own["upn_key"].dropna()) | set(email_key(emails).dropna())
    keys |= {email_fold_of(v) for v in emails.dropna()} - {None}
    # A quiet run has no participant: nothing of Frankli to meet, and nothing read.
    state = frankli.state_of(focus.participants | focus.context, keys) if basis.frankli_read else FrankliState.empty()
    linked = set(state.users["external_id"].dropna()) - focus.participants
    context = ctx.staging.rows_of(name, ctx.run_id, focus.context | linked)
    known = ctx.record.rows(name, context["object_id"].dropna())
    held_back = {q["object_id"] for q in validation["quarantined"] if q.get("object_id")}
    held_back |= set(known.loc[known["state"] == QUARANTINED, "object_id"])
    staged = pd.concat([focus.staged, context], ignore_index=True)
    desired = desired_users(staged, tenant.mapping, tenant.scope, held_back, ctx.clock())
    previous = desired_users(ctx.staging.rows_of(name, basis.record_run, focus.participants), tenant.mapping,
                             tenant.scope, now=ctx.clock())  # fmt: skip
    only = ctx.params.only_user
    options = PlanOptions(mapping=tenant.mapping, only_user=only, deleted_ids=frozenset(focus.removed))
    plan = plan_user_changes(desired, state, options, previous=previous)
    outside = incremental.reaches_outside(plan, focus.participants, state.entities)
    if outside:
        return outside
    mine = len(focus.staged)
    carried = {} if only else carried_findings(ctx.record.with_findings(name))  # only_user reports one user
    return Planned(
        incremental.restrict(plan, focus.participants, carried),
        basis,
        focus.staged,
        desired.iloc[:mine].reset_index(drop=True),
        validation["quarantined"],
        mark,
        participants=focus.participants,
    )


def _focus(ctx: RunContext, basis: Basis) -> Focus | None:
    """Validation's focus when it planned against this record (kept), or the focus computed again."""
    try:
        kept = ctx.staging.load_document(ctx.tenant.name, ctx.run_id, "focus")
    except SnapshotMissing:
        kept = None
    if kept and kept.get("record_run") == basis.record_run:
        return incremental.refocus(ctx.staging, ctx.record, ctx.tenant, ctx.run_id, kept)
    return incremental.focus(ctx.staging, ctx.record, ctx.tenant, ctx.run_id, ctx.params.only_user)


def _validation(ctx: RunContext) -> dict[str, Any]:
    return ctx.staging.load_document(ctx.tenant.name, ctx.run_id, "validation")


def plan_key(ctx: RunContext, mark: str) -> PlanKey:
    """What a plan of this run computed now would be computed from (`plan_store.PlanKey`)."""
    extraction = ctx.staging.extraction(ctx.tenant.name, ctx.run_id) or {}
    last = ctx.staging.last_synced(ctx.tenant.name, ctx.run_id)
    return PlanKey(
        frankli_mark=mark,
        snapshot=f"{extraction.get('status')}|{extraction.get('user_count')}|{extraction.get('completed_at')}",
        validation=ctx.staging.document_digest(ctx.tenant.name, ctx.run_id, "validation"),
        record_run=(ctx.record.state(ctx.tenant.name) or {}).get("run_id"),
        previous_run=last[0] if last else None,
        settings=incremental.fingerprint(ctx.tenant),
    )


def _keep(ctx: RunContext, planned: Planned, mark: str) -> None:
    """Keep the plan for the loads, with the record rows the run will leave (not for only_user runs)."""
    record = None
    if not ctx.params.only_user:
        record = incremental.record_rows(planned.staged, planned.desired, planned.plan, planned.quarantined, ctx.tenant)
    key = plan_key(ctx, mark)
    try:
        ctx.plans.save(
            ctx.tenant.name, ctx.run_id, key, planned.plan, planned.basis.document(), planned.participants, record
        )
    except (TypeError, ValueError) as error:  # a value JSON cannot hold: the loads plan again, as they can
        log.warning("tenant %s run %s: plan not kept (%s); the loads plan again", ctx.tenant.name, ctx.run_id, error)


def load_plan(ctx: RunContext, frankli: FrankliSession, after_upserts: bool) -> Planned:
    """The transform's kept plan when the evidence holds that it is still this run's plan; else a new one.

    A quiet plan (nothing changed in Entra, Frankli not read) is kept under the recorded mark and needs no
    read to hold: it writes nothing. Any other needs Frankli's mark now to equal the one it was planned at.
    """
    mark = (ctx.record.state(ctx.tenant.name) or {}).get("frankli_mark")
    kept = ctx.plans.load(ctx.tenant.name, ctx.run_id, plan_key(ctx, mark), after_upserts) if mark else None
    if kept is None or kept.basis.get("frankli_read") is not False:
        mark = frankli.mark()
        kept = ctx.plans.load(ctx.tenant.name, ctx.run_id, plan_key(ctx, mark), after_upserts)
        if kept is None:
            return compute_plan(ctx, frankli, mark)
    nothing = pd.DataFrame()
    return Planned(
        kept.plan,
        Basis(**kept.basis),
        staged=nothing,
        desired=nothing,
        quarantined=_validation(ctx)["quarantined"],
        mark=mark,
        participants=kept.participants,
        record=kept.record,
        kept=True,
    )


def _quarantine_entries(ctx: RunContext, planned: Planned) -> list[AuditEntry]:
    entries = [
        AuditEntry(q.get("object_id"), q.get("user_principal_name"), "quarantine", {"reasons": q["reasons"]})
        for q in planned.quarantined
    ]
    entries += [
        AuditEntry(r.external_id, r.email, "quarantine", {"reasons": [{"expectation": r.reason}]})
        for r in planned.plan.conflicts.itertuples()
    ]
    if ctx.params.only_user:
        key = email_key_of(ctx.params.only_user)
        entries = [e for e in entries if email_key_of(e.email) == key]
    return entries


# --- load ------------------------------------------------------------------------------------


@_records_failure
def load_upserts(tenant_name: str, run_id: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Create entities; create, link, update and restore users; set managers. One transaction."""
    ctx = RunContext.open(tenant_name, run_id, params)
    if ctx.params.dry_run:
        return {"dry_run": True}
    started = time.monotonic()
    with ctx.frankli() as frankli:
        newer = _superseded_by(ctx, frankli)
        if newer:
            return newer
        planned = load_plan(ctx, frankli, after_upserts=False)
        before = planned.mark
        planned_at = time.monotonic()
        counts = frankli.apply_upserts(planned.plan, run_id, ctx.clock(), quarantined=_quarantine_entries(ctx, planned))
        if not ctx.params.only_user:
            frankli.record_applied_snapshot(ctx.clock())
        after = _mark_after(frankli, run_id, planned)
    ctx.record.advance_mark(ctx.tenant.name, before, after)
    ctx.plans.applied(ctx.tenant.name, run_id, after if planned.kept else None)
    if not ctx.params.only_user:
        ctx.staging.mark_synced(ctx.tenant.name, run_id)
    log.info(task_log.load_line(tenant_name, "load_upserts", counts))
    log.info(
        "upserts for tenant %s run %s: %s (%s in %.1f s, written and committed in %.1f s)",
        tenant_name,
        run_id,
        counts or "nothing to change",
        "the transform's plan read back" if planned.kept else "state read and planned",
        planned_at - started,
        time.monotonic() - planned_at,
    )
    return counts


@_records_failure
def load_archives(tenant_name: str, run_id: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Archive disabled / deleted / out-of-scope users, behind the deletion guard. One transaction.

    A guard that trips on a read proven complete asks for approval (`approval`) when the tenant
    allows it: the task then succeeds with ``awaiting_approval`` and archives nothing yet.
    """
    return _archive(tenant_name, run_id, params)


def keep_approval(tenant_name: str, run_id: str, event: Mapping[str, Any]) -> None:
    """Keep the person's answer to the run's approval request (called by the approval task)."""
    ctx = RunContext.open(tenant_name, run_id)
    answered = None if "error" in event else event  # a timeout without a default: nobody answered
    ctx.staging.save_document(ctx.tenant.name, run_id, "approval", approval.decision(answered))


def _kept_approval(ctx: RunContext) -> dict[str, Any]:
    try:
        return ctx.staging.load_document(ctx.tenant.name, ctx.run_id, "approval")
    except SnapshotMissing:
        return approval.decision(None)


@_records_failure
def apply_approved_archives(tenant_name: str, run_id: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """After the approval task: archive the approved set (exactly it), or stop saying who rejected it."""
    ctx = RunContext.open(tenant_name, run_id, params)
    choice = _kept_approval(ctx)
    guard = ctx.staging.load_document(ctx.tenant.name, run_id, "guard")
    if not guard.get("awaiting_approval"):
        return {"archive": 0, "approval": "not needed"}
    if not choice["approved"]:
        ctx.staging.save_document(ctx.tenant.name, run_id, "guard", {**guard, "approval": choice})
        raise DeletionGuardTriggered(_not_approved(guard, choice))
    return _archive(tenant_name, run_id, params, approved=(str(guard["archive_digest"]), choice))


def _not_approved(guard: Mapping[str, Any], choice: Mapping[str, Any]) -> str:
    who = f" by {choice['by']}" if choice.get("by") else ""
    when = f" at {choice['at']}" if choice.get("at") else ""
    return (
        f"the deletion guard stopped {guard.get('to_archive')} archives (limit {guard.get('limit')}); they "
        f"{choice['how']}{who}{when}: nobody was archived. If these users really left, approve them in the next run "
        'that stops on them, or trigger the DAG again with {"allow_mass_archive": true}.'
    )


def _archive(
    tenant_name: str,
    run_id: str,
    params: Mapping[str, Any] | None,
    approved: tuple[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    ctx = RunContext.open(tenant_name, run_id, params)
    if ctx.params.dry_run:
        return {"dry_run": True}
    with ctx.frankli() as frankli:
        newer = _superseded_by(ctx, frankli)
        if newer:
            return newer
        planned = load_plan(ctx, frankli, after_upserts=True)
        before, plan = planned.mark, planned.plan
        guard = archive_guard(ctx, len(plan.archives), frankli.synced_users)
        if guard["blocked"] and approved is not None:
            guard = _approved(guard, approval.archive_digest(plan.archives), *approved)
        log.info(task_log.load_line(tenant_name, "load_archives", {}, guard))
        if guard["blocked"] and approved is None and approval.approvable(guard) and _asks_approval(ctx):
            request = {**guard, "awaiting_approval": True, "archive_digest": approval.archive_digest(plan.archives)}
            request["sample"] = approval.sample(plan.archives)
            ctx.staging.save_document(ctx.tenant.name, run_id, "guard", request)
            frankli.discard()  # nothing archived until a person approves
            return {"archive": 0, "awaiting_approval": True, "to_archive": len(plan.archives),
                    "request": approval.request_body(ctx.tenant.name, request, request["sample"])}  # fmt: skip
        ctx.staging.save_document(ctx.tenant.name, run_id, "guard", guard)
        if guard["blocked"]:
            raise DeletionGuardTriggered(guard["message"])
        archived = frankli.apply_archives(plan.archives, run_id, ctx.clock())
        after = _mark_after(frankli, run_id, planned)
    if ctx.params.only_user:
        ctx.record.advance_mark(ctx.tenant.name, before, after)
    else:
        _record(ctx, planned, after)
    log.info(
        "archives for tenant %s run %s planned %s (%s)",
        tenant_name,
        run_id,
        planned.basis.mode,
        "the transform's plan" if planned.kept else "planned again",
    )
    log.info(task_log.load_line(tenant_name, "load_archives", {"archive": archived}))
    return {"archive": archived}


def _mark_after(frankli: FrankliSession, run_id: str, planned: Planned) -> str:
    """The mark to record after a load: one no read matches when the target refused some of this run's writes.

    The next run then plans in full and tries those users again; an incremental run would plan only the
    users Entra changed since, and leave a refused user waiting for the next full run. A quiet plan wrote
    nothing to Frankli and did not read it: the mark stays the recorded one.
    """
    if not planned.basis.frankli_read:
        return planned.mark
    mark = frankli.mark()
    return f"{mark}{REFUSED}" if frankli.refused_writes(run_id) else mark


def _asks_approval(ctx: RunContext) -> bool:
    """The tenant waits for a person's approval of a tripped guard (not for an only_user run: one user)."""
    return ctx.tenant.thresholds.archive_approval_hours > 0 and not ctx.params.only_user


def _approved(guard: dict[str, Any], digest: str, approved_digest: str, choice: Mapping[str, Any]) -> dict[str, Any]:
    """The guard after an approval: passed if the set to archive is the approved one, else still blocked."""
    if digest != approved_digest:
        return {
            **guard,
            "approval": dict(choice),
            "message": (
                f"{choice.get('by') or 'someone'} approved archiving a set of users, but the users to archive "
                f"changed since ({guard['to_archive']} now); nobody was archived. The next run asks again."
            ),
        }
    message = f"{guard['to_archive']} archives approved by {choice.get('by')} at {choice.get('at')}"
    return {**guard, "blocked": False, "approval": dict(choice), "message": message}


def _record(ctx: RunContext, planned: Planned, mark: str) -> None:
    """After both loads: what this run left each user as, for the next run to plan against."""
    rows = planned.record
    if rows is None:
        rows = incremental.record_rows(planned.staged, planned.desired, planned.plan, planned.quarantined, ctx.tenant)
    incremental_run = planned.participants is not None
    saved = ctx.record.save(
        ctx.tenant.name,
        ctx.run_id,
        incremental.fingerprint(ctx.tenant),
        ctx.clock(),
        rows,
        replace=not incremental_run,
        frankli_mark=mark,
        dropped=(planned.participants or frozenset()) - set(rows["object_id"]),
    )
    if not saved:
        log.warning("tenant %s run %s: a newer run is already recorded; record left as it is", ctx.tenant.name,
                    ctx.run_id)  # fmt: skip


def _superseded_by(ctx: RunContext, frankli: FrankliSession) -> dict[str, Any] | None:
    """A summary when a newer Entra snapshot was already applied: this run's older one must not undo it.

    Loads of one organisation are serialised, not ordered: in a backfill, or when ops clear an
    old run's task, an older snapshot can reach the lock after a newer one was written.
    """
    applied = frankli.applied_snapshot()
    mine = ctx.clock()
    if applied is None or applied <= mine:
        return None
    log.warning(
        "tenant %s run %s: its Entra snapshot (%s) is older than the one already applied to Frankli (%s); "
        "writing nothing (the newer run's state stands)",
        ctx.tenant.name,
        ctx.run_id,
        mine.isoformat(),
        applied.isoformat(),
    )
    return {"superseded": True, "snapshot_at": mine.isoformat(), "applied_snapshot_at": applied.isoformat()}


def archive_guard(ctx: RunContext, to_archive: int, count_synced: Callable[[], int]) -> dict[str, Any]:
    """Decide whether this run may archive `to_archive` users (DESIGN §2 Safety).

    `count_synced` counts the organisation's synced users (a request to a SCIM endpoint): asked only
    when there is someone to archive.

    The thresholds only limit the damage of a mistake; the override may only be suggested when
    the read was proven complete (its extract recorded the evidence). Otherwise the message says
    the read is unproven and that a full read is what to run, never the override.
    """
    thresholds = ctx.tenant.thresholds
    record = ctx.staging.extraction(ctx.tenant.name, ctx.run_id) or {}
    staged_count = ctx.staging.staged_count(ctx.tenant.name, ctx.run_id)
    last = ctx.staging.last_synced(ctx.tenant.name, ctx.run_id)
    proven = bool(record.get("completeness"))
    status: dict[str, Any] = {
        "to_archive": to_archive,
        "staged_users": staged_count,
        "last_synced_users": last[1] if last else None,
        "read_complete": proven,
        "completeness": record.get("completeness"),
        "reported_users": record.get("reported_count"),
        "allow_mass_archive": ctx.params.allow_mass_archive,
        "blocked": False,
        "message": "ok",
    }
    if to_archive == 0:
        return status
    synced_users = count_synced()
    limit = min(thresholds.max_archive_count, math.floor(thresholds.max_archive_share * synced_users))
    status.update(limit=limit, synced_users=synced_users)
    if staged_count == 0:
        status.update(blocked=True, message="the extract returned no users; archiving nobody")
        return status
    if not proven:
        status.update(
            blocked=True,
            message=(
                f"this run would archive {to_archive} users, but its read of the source is not proven complete "
                "(the snapshot carries no completeness evidence: it was staged before this check existed); "
                'archiving nobody. Trigger the DAG again with {"full_sync": true}: a full read is checked '
                "against the size Graph reports before anyone is archived."
            ),
        )
        return status
    override = 'trigger the DAG again with {"allow_mass_archive": true}'
    evidence = f"The read was complete ({staged_count} users; the source reports {record.get('reported_count')})"
    if last and staged_count < thresholds.min_source_share * last[1] and not ctx.params.allow_mass_archive:
        status.update(
            blocked=True,
            message=(
                f"the extract returned {staged_count} users, under {thresholds.min_source_share:.0%} of the "
                f"{last[1]} of the last synced run; archiving nobody. {evidence}: "
                f"if the directory really shrank, {override}"
            ),
        )
    elif to_archive > limit and not ctx.params.allow_mass_archive:
        status.update(
            blocked=True,
            message=(
                f"deletion guard: this run would archive {to_archive} users, more than the limit of {limit} "
                f"(min(max_archive_count {thresholds.max_archive_count}, max_archive_share "
                f"{thresholds.max_archive_share:.0%} of {synced_users} synced users)); nothing was archived, "
                f"upserts were applied. {evidence}: if these users really left, {override}"
            ),
        )
    return status


# --- report ----------------------------------------------------------------------------------


def report(
    tenant_name: str,
    run_id: str,
    params: Mapping[str, Any] | None = None,
    task_results: Mapping[str, Any] | None = None,
    task_states: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """Write report.json and the HTML summary for the run; fail if an upstream task did not succeed.

    `task_results`: the tasks' XCom results (None: did not succeed); `task_states`: Airflow's states
    of the tasks, when the caller has them (the report then tells upstream_failed from not run).
    """
    ctx = RunContext.open(tenant_name, run_id, params)
    documents = {}
    kinds = ("validation", "plan", "guard", *(failure_kind(t) for t in (*REPORTED_TASKS, "apply_approved_archives")))
    for kind in kinds:
        try:
            documents[kind] = ctx.staging.load_document(ctx.tenant.name, run_id, kind)
        except SnapshotMissing:
            documents[kind] = None
    task_results = dict(task_results or {})
    _approval_outcome(documents, task_results, _kept_approval(ctx))
    applied, changes = _applied_actions(ctx, documents["plan"])
    summary = write_run_report(
        ctx.run_dir,
        tenant=ctx.tenant.name,
        run_id=run_id,
        params=ctx.params.__dict__,
        documents=documents,
        applied=applied,
        task_results=task_results,
        task_states=dict(task_states) if task_states is not None else None,
        changes=changes,
    )
    summary["report_url"] = report_url(ctx.tenant.name, run_id)
    log.info("run report of tenant %s: %s (%s)", tenant_name, summary["report_url"], summary["status"])
    return summary


def _approval_outcome(documents: dict[str, Any], task_results: dict[str, Any], choice: Mapping[str, Any]) -> None:
    """A guard that asked for approval: its outcome becomes load_archives' (rejected, timed out or failed: failed)."""
    guard = documents.get("guard") or {}
    applied = task_results.get("apply_approved_archives")
    failure = documents.get(failure_kind("apply_approved_archives")) if applied is None else None
    if guard.get("awaiting_approval"):  # asked, and the approved archives were not applied (they replace it)
        if choice["approved"] and applied is not None:
            return
        if not choice["approved"]:
            message = _not_approved(guard, choice)
            documents["guard"] = {**guard, "approval": choice, "message": message}
            failure = {"task": "load_archives", "message": message, "stopped": True}
        failure = failure or {
            "task": "load_archives",
            "message": "the archives were approved but not applied: see the apply_approved_archives task's log",
        }
    elif failure is None:
        return
    documents[failure_kind("load_archives")] = failure
    task_results["load_archives"] = None


def _applied_actions(ctx: RunContext, plan: Mapping[str, Any] | None) -> tuple[dict[str, int], pd.DataFrame]:
    """The run's action counts and who changed: from Frankli's audit, or a dry run's plan (nothing was written).

    A target that cannot be read (a SCIM token refused, say) leaves them empty: the report is still written,
    since it is what tells the admin which task failed and why.
    """
    from frankli_sync.run_changes import change_rows, planned_audit

    try:
        return _read_applied(ctx, plan)
    except Exception as error:
        log.warning("tenant %s run %s: the report could not read what was applied: %s", ctx.tenant.name, ctx.run_id,
                    error)  # fmt: skip
        return {}, change_rows(planned_audit({}), {})


def _read_applied(ctx: RunContext, plan: Mapping[str, Any] | None) -> tuple[dict[str, int], pd.DataFrame]:
    from frankli_sync.run_changes import ACTIONS, Person, change_rows, planned_audit, referenced_ids

    with ctx.frankli(owned=False) as frankli:
        counts = {} if ctx.params.dry_run else frankli.audit_counts(ctx.run_id)
        if ctx.params.dry_run:
            audit = planned_audit((plan or {}).get("actions"))
        else:
            audit = frankli.audit_rows(ctx.run_id, ACTIONS)
        people = {i: Person(*p) for i, p in frankli.people_of(referenced_ids(audit)).items()}
        frankli.discard()  # the report reads only
    return counts, change_rows(audit, people)
