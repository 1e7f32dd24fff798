"""
### Entra ID → Frankli directory sync

One DAG per tenant of `$FRANKLI_SYNC_CONFIG`, id `entra_to_frankli__<tenant>`:

extract (Microsoft Graph → staging) → validate (Great Expectations) → transform (plan) →
load_upserts → load_archives (deletion guard) → report.

Trigger params: `dry_run`, `full_sync`, `allow_mass_archive`, `only_user` (a UPN).
Every task is idempotent: clear and re-run any of them, or the whole run.
Loads that wrote users emit the organisation's asset (`frankli_sync.assets`); a tenant's `notify`
settings mail failures, a tripped deletion guard and quarantine above a warn share (`frankli_sync.notifications`).
The logic lives in `frankli_sync.pipeline`; this file only wires it.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Param, chain, dag, get_current_context, task
from frankli_sync import assets, notifications
from frankli_sync.config import TenantConfig, load_config

DEFAULT_ARGS = {
    "owner": "data-engineering",
    # Transient Graph / database errors are retried; safety stops fail at once (AirflowFailException).
    "retries": int(os.environ.get("FRANKLI_SYNC_TASK_RETRIES", "2")),
    "retry_delay": timedelta(seconds=int(os.environ.get("FRANKLI_SYNC_RETRY_DELAY_SECONDS", "120"))),
    "retry_exponential_backoff": True,
}
PARAMS = {
    "dry_run": Param(False, type="boolean", description="Plan and report only: write nothing to Frankli."),
    "full_sync": Param(False, type="boolean", description="Read every user instead of the delta since last run."),
    "allow_mass_archive": Param(
        False, type="boolean", description="Let this run archive more users than the deletion guard allows."
    ),
    "only_user": Param(
        None, type=["null", "string"], description="Provision only this user (a UPN): create, update or archive."
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

        @task(trigger_rule="all_done", retries=0)
        def report() -> dict:
            """Runs even when a step failed, so admins see why; then fails the run if a step did."""
            ti = get_current_context()["ti"]
            steps = ("extract", "validate", "transform", "load_upserts", "load_archives")
            results = {step: ti.xcom_pull(task_ids=step) for step in steps}
            summary = _run("report", tenant.name, task_results=results)
            print(f"Run summary for {tenant.name}: {summary['counts']}; report at {summary['report_path']}")
            if summary["incomplete_tasks"]:
                raise notifications.RunIncomplete(  # the failed step's own mail told; no second one
                    f"run incomplete: {', '.join(summary['incomplete_tasks'])} did not succeed; "
                    f"see {summary['report_path']}"
                )
            return {"counts": summary["counts"], "report_path": summary["report_path"]}

        chain(extract(), validate(), transform(), load_upserts(), load_archives(), report())

    return sync()


# The valid tenants only: the broken ones are one import error of entra_to_frankli_config_errors.py.
for _tenant in load_config().tenants:
    globals()[_tenant.dag_id] = build_dag(_tenant)
