"""
### Entra ID → Frankli directory sync

extract (Microsoft Graph → staging) → validate (Great Expectations) → transform (plan) →
load_upserts → load_archives (deletion guard) → [approve_archives → apply_approved_archives] → report.

**Reports**: the *Frankli sync report* tab of each run (Browse > Frankli sync reports): who changed,
field by field; why a run failed (the failing task's own message); the quarantine; CSV downloads.

**Runbook**
- *A task failed*: read the cause on the run's report tab, fix it (Graph credentials, a database, the
  tenant config), then **Clear** the failed task with its downstream tasks. Every task is idempotent:
  a re-run finds what an earlier try wrote and writes nothing twice.
- *Backfill / a missed day*: trigger one new run. Each run reads Entra as it is now (a delta from the
  last run, a full read every `full_resync_days`); there is nothing to replay per day, and older runs
  cleared later never undo a newer one's writes.
- *The deletion guard stopped archives*: the run waits in **approve_archives** (Required actions) with
  the count, the limits and who would go. Approve archives exactly that set; Reject (or no answer
  within `thresholds.archive_approval_hours`) archives nobody and fails the run. Never approve a set
  you did not expect: check Entra first. `allow_mass_archive` does the same for automation.
- *Too many users quarantined*: the run stops before loading; fix the users in Entra (the report
  lists each with the failed rule and value), then trigger a new run.
- *One user now*: trigger with `only_user` = their UPN.

Loads that wrote users emit the organisation's asset (`frankli_sync.assets`); a tenant's `notify`
settings mail failures, a tripped deletion guard and quarantine above a warn share (`frankli_sync.notifications`).
The logic lives in `frankli_sync.pipeline`; this file only wires it.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Param, chain, dag, get_current_context, task
from frankli_sync import assets, notifications
from frankli_sync.approval_operator import ArchiveApproval
from frankli_sync.config import TenantConfig, load_config

DEFAULT_ARGS = {
    "owner": "data-engineering",
    # Transient Graph / database errors are retried; safety stops fail at once (AirflowFailException).
    "retries": int(os.environ.get("FRANKLI_SYNC_TASK_RETRIES", "2")),
    "retry_delay": timedelta(seconds=int(os.environ.get("FRANKLI_SYNC_RETRY_DELAY_SECONDS", "120"))),
    "retry_exponential_backoff": True,
}
PARAMS = {
    "dry_run": Param(False, type="boolean", title="Dry run", description="Plan and report only: write nothing."),
    "full_sync": Param(
        False, type="boolean", title="Full read", description="Read every user, not the changes since the last run."
    ),
    "allow_mass_archive": Param(
        False,
        type="boolean",
        title="Allow a mass archive",
        description="Archive more users than the deletion guard allows, without asking (automation only).",
    ),
    "only_user": Param(
        None,
        type=["null", "string"],
        format="email",
        title="Only this user",
        description="Provision only this user, by UPN (jane@contoso.com): create, update or archive.",
    ),
}


def _run(step: str, tenant: str, **extra: object) -> dict:
    """Call one pipeline step; safety stops fail the task without retries (retrying cannot help)."""
    from airflow.sdk.exceptions import AirflowFailException
    from frankli_sync import pipeline

    context = get_current_context()
    try:
        return getattr(pipeline, step)(tenant, context["run_id"], dict(context["params"]), **extra)
    except pipeline.SyncStopped as stop:
        raise AirflowFailException(str(stop)) from stop


def build_dag(tenant: TenantConfig):
    notify = notifications.callbacks(tenant)  # None each where the tenant asks for no mail
    changed = assets.changes_alias(tenant)  # the organisation's asset, added only when a load wrote users

    @dag(
        dag_id=tenant.dag_id,
        schedule=tenant.schedule,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        default_args={**DEFAULT_ARGS, "on_failure_callback": notify.step_failed},
        on_failure_callback=notify.run_failed,
        params=PARAMS,
        tags=["frankli", "entra-id", "directory-sync", f"tenant:{tenant.name}"],
        doc_md=__doc__,
        dagrun_timeout=timedelta(hours=6),
    )
    def sync():
        @task(pool="graph_extract")  # caps concurrent Graph reads across tenants; the pool must exist
        def extract() -> dict:
            return _run("extract", tenant.name)

        @task(on_success_callback=notify.validated)
        def validate() -> dict:
            return _run("validate", tenant.name)

        @task
        def transform() -> dict:
            return _run("transform", tenant.name)

        @task(outlets=[changed])
        def load_upserts() -> dict:
            return assets.announce(get_current_context(), tenant, "load_upserts", _run("load_upserts", tenant.name))

        @task(outlets=[changed], on_success_callback=notify.archived)
        def load_archives() -> dict:
            return assets.announce(get_current_context(), tenant, "load_archives", _run("load_archives", tenant.name))

        @task.short_circuit(ignore_downstream_trigger_rules=False)  # report still runs when nothing is asked
        def needs_approval(archives: dict) -> bool:
            return bool(archives.get("awaiting_approval"))

        hours = tenant.thresholds.archive_approval_hours
        approve = ArchiveApproval(
            tenant=tenant.name,
            task_id="approve_archives",
            subject=f"Archive users of {tenant.name}? The deletion guard stopped this run's archives.",
            body="{{ ti.xcom_pull(task_ids='load_archives')['request'] }}",
            defaults="Reject",  # no answer in time: nobody is archived
            retries=0,
            response_timeout=timedelta(hours=hours) if hours else None,
        )

        @task(outlets=[changed], retries=0)
        def apply_approved_archives() -> dict:
            done = _run("apply_approved_archives", tenant.name)  # the answer is kept with the run
            return assets.announce(get_current_context(), tenant, "apply_approved_archives", done)

        @task(trigger_rule="all_done", retries=0)
        def report() -> dict:
            """Runs even when a step failed, so admins see why; then fails the run if a step did."""
            context = get_current_context()
            ti = context["ti"]
            steps = ("extract", "validate", "transform", "load_upserts", "load_archives", "apply_approved_archives")
            results = {step: ti.xcom_pull(task_ids=step) for step in steps}
            states = ti.get_task_states(dag_id=tenant.dag_id, run_ids=[context["run_id"]], task_ids=list(steps))
            summary = _run("report", tenant.name, task_results=results, task_states=states.get(context["run_id"]))
            print(f"Run summary for {tenant.name}: {summary['counts']}; report: {summary['report_url']}")
            if summary["incomplete_tasks"]:
                raise notifications.RunIncomplete(  # the failed step's own mail told; no second one
                    f"run incomplete: {', '.join(summary['incomplete_tasks'])} did not succeed; "
                    f"the cause is on the run's report: {summary['report_url']}"
                )
            return {key: summary[key] for key in ("counts", "report_url", "report_path")}

        archives = load_archives()
        chain(extract(), validate(), transform(), load_upserts(), archives)
        chain(archives, needs_approval(archives), approve, apply_approved_archives(), report())

    return sync()


# The valid tenants only: the broken ones are one import error of entra_to_frankli_config_errors.py.
for _tenant in load_config().tenants:
    globals()[_tenant.dag_id] = build_dag(_tenant)
