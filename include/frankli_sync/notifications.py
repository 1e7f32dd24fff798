"""Mail about a tenant's runs, sent with Airflow's SMTP notifier (the SMTP provider's ``SmtpNotifier``).

A tenant with a ``notify`` block (``config.NotifySettings``) is mailed, at the moment Airflow knows it:

- ``failure``: a step failed for good (after its retries), from the step's ``on_failure_callback``, with
  the step's error (the message that names what to change) and what the failure left in Frankli. The
  report task failing only because a step did (``RunIncomplete``) sends nothing more: one failed run, one
  mail. A run that fails without a failed step (stopped by ``dagrun_timeout``, deadlocked) is mailed by the
  DAG's ``on_failure_callback``.
- ``guard``: the deletion guard stopped the archives: this mail instead of the failure mail when it failed
  ``load_archives``, with the guard's numbers (the run's ``guard`` document in staging) and the way out the
  guard offers. ``load_archives`` succeeding with a blocked guard (the run then waits for a person's
  approval in Airflow's "Required actions", issue 12 item 5) mails it too, from its ``on_success_callback``.
- ``quarantine``: validation quarantined more than ``notify.quarantine_warn_share`` of the in-scope users,
  from validate's ``on_success_callback`` (the run goes on; above ``thresholds.max_invalid_share`` it stops,
  and that is a failure mail). Users per rule, from the run's ``validation`` document. Not for
  ``only_user`` runs, whose share is one user's.

Every mail names the tenant, its Frankli organisation and the run, says what happened and what to do,
and links the run's report page, ``<[api] base_url>/frankli-reports/<tenant>/<run>/`` (served by
``plugins/frankli_reports.py``), and the run in the Airflow UI. Dry runs are marked as such.

Secrets: the notifiers hold none. The SMTP connection is the Airflow connection ``notify.conn_id`` (host,
port, login, password, extra ``from_email``), read by the SMTP hook only when a mail is sent; Airflow masks
its password in task logs and nothing here logs the connection. The mails carry directory values and error
texts, so they are escaped by jinja2 and never rendered as Airflow templates (``template_fields`` is empty
and ``SmtpNotifier.notify`` is called with the finished text): an Entra attribute holding
``{{ conn.smtp_default.password }}`` stays that text.

A mail that cannot be sent raises ``NotificationNotSent`` naming tenant, run, recipients and connection;
Airflow logs it as a failed callback and the task's state stands.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from airflow.sdk.bases.notifier import BaseNotifier
from airflow.sdk.exceptions import AirflowFailException

from frankli_sync.config import TenantConfig
from frankli_sync.ui_links import report_url, run_url

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "[Frankli sync]"
MAX_ERROR_CHARS = 4000

# What a failed step leaves behind (each step is one idempotent unit; loads are one transaction each).
STEP_OUTCOME = {
    "extract": "Nothing was staged as this run's snapshot and nothing was written to Frankli.",
    "validate": "Nothing was written to Frankli.",
    "transform": "Nothing was written to Frankli.",
    "load_upserts": "Its transaction was rolled back: nothing of this run was written to Frankli, nobody archived.",
    "load_archives": "This run's creates and updates were applied (load_upserts); its archives were rolled back.",
    "report": "Frankli was written as planned; only the run report is missing or incomplete.",
}
RUN_FAILURE = {
    "timed_out": (
        "The run took longer than the DAG's dagrun_timeout and Airflow stopped it. Steps still running were "
        "stopped; what a stopped load had not committed was rolled back."
    ),
    "all_tasks_deadlocked": "Airflow found no step it could run (a deadlock) and failed the run.",
}


class RunIncomplete(AirflowFailException):
    """The report task's failure because an earlier step did not succeed: that step's mail already told."""


class NotificationNotSent(RuntimeError):
    """A notification mail could not be sent (the message names tenant, run, recipients and connection)."""


@dataclass(frozen=True)
class Mail:
    event: str  # "failure" | "guard" | "quarantine"
    subject: str
    html: str


@dataclass(frozen=True)
class RunFacts:
    """What every mail says about the run."""

    tenant: TenantConfig
    run_id: str
    dry_run: bool = False
    only_user: str | None = None

    @classmethod
    def of(cls, tenant: TenantConfig, context: Mapping[str, Any]) -> RunFacts:
        """From an Airflow callback context (a DAG processor's may hold only dag, run_id and reason)."""
        run_id = context.get("run_id") or getattr(context.get("dag_run"), "run_id", None) or "unknown run"
        params = context.get("params") or {}
        return cls(tenant, str(run_id), params.get("dry_run") is True, params.get("only_user") or None)

    def subject(self, what: str) -> str:
        dry = " [dry run]" if self.dry_run else ""
        return f"{SUBJECT_PREFIX} {self.tenant.name}{dry}: {what} (run {self.run_id})"


# --- the mails -----------------------------------------------------------------------------------------------

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
_MAIL = _ENV.from_string(
    """<!doctype html>
<html><body style="font-family: sans-serif">
<h2>{{ headline }}</h2>
<table cellpadding="3">
<tr><th align="left">Tenant</th><td>{{ tenant }} (Frankli organisation {{ organisation }})</td></tr>
<tr><th align="left">Run</th>
<td>{{ run_id }}{% if dry_run %} (dry run: nothing is written to Frankli){% endif %}</td></tr>
{% for label, value in facts %}<tr><th align="left">{{ label }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>
<h3>What happened</h3>
{% for paragraph in happened %}<p>{{ paragraph }}</p>
{% endfor %}{% if error %}<pre style="white-space: pre-wrap">{{ error }}</pre>
{% endif %}{% if rows %}<table cellpadding="3" border="1" style="border-collapse: collapse">
<tr>{% for heading in rows_head %}<th align="left">{{ heading }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% endif %}<h3>What to do</h3>
<ul>
{% for step in todo %}<li>{{ step }}</li>
{% endfor %}</ul>
<p>Run report: <a href="{{ report_url }}">{{ report_url }}</a><br>
The run in Airflow: <a href="{{ run_url }}">{{ run_url }}</a>{% if log_url %}<br>
Log of the failed step: <a href="{{ log_url }}">{{ log_url }}</a>{% endif %}</p>
<p style="color: #666">Sent by the Frankli sync of tenant {{ tenant }} (DAG {{ dag_id }}) to the addresses in its
notify settings.</p>
</body></html>
"""
)


def _render(
    run: RunFacts,
    headline: str,
    happened: Sequence[str],
    todo: Sequence[str],
    facts: Sequence[tuple[str, Any]] = (),
    error: str | None = None,
    rows: Sequence[Sequence[Any]] = (),
    rows_head: Sequence[str] = (),
    log_url: str | None = None,
) -> str:
    tenant = run.tenant
    return _MAIL.render(
        headline=headline,
        tenant=tenant.name,
        organisation=tenant.target.organisation,
        dag_id=tenant.dag_id,
        run_id=run.run_id,
        dry_run=run.dry_run,
        facts=facts,
        happened=happened,
        error=error[:MAX_ERROR_CHARS] if error else None,
        rows=rows,
        rows_head=rows_head,
        todo=todo,
        report_url=report_url(tenant.name, run.run_id),
        run_url=run_url(tenant.dag_id, run.run_id),
        log_url=log_url,
    )


def failure_mail(run: RunFacts, step: str, error: str | None, log_url: str | None = None) -> Mail:
    """A step failed for good: its error, what it left in Frankli, how to go on."""
    happened = [f"The step {step} failed and the run stops there. {STEP_OUTCOME.get(step, '')}".strip()]
    if error:
        happened.append("Its error, which names what to change:")
    else:
        happened.append("It recorded no error: its worker was lost or killed (memory, a restart). See its log.")
    todo = [
        "Act on the error above: it names the setting, connection or Entra user to fix. Errors a retry can fix "
        "(throttling, a dropped connection) were retried before this mail.",
        f"Then clear {step} in the Airflow UI (with its downstream tasks) or trigger the DAG again: every step "
        "is idempotent and a cleared extract resumes where it stopped.",
    ]
    return Mail(
        "failure",
        run.subject(f"{step} failed"),
        _render(run, f"Frankli sync of {run.tenant.name}: {step} failed", happened, todo, error=error, log_url=log_url),
    )


def run_failure_mail(run: RunFacts, reason: str) -> Mail:
    """The run failed without a failed step (Airflow's reason: timed_out, all_tasks_deadlocked, ...)."""
    happened = [RUN_FAILURE.get(reason, f"Airflow failed the run ({reason}).")]
    todo = [
        "Open the run in Airflow and look at which step ran long or did not start (Graph throttling, a large "
        "first sync, a pool with no free slot: the graph_extract pool must exist).",
        "Trigger the DAG again: every step is idempotent and an interrupted extract resumes where it stopped. "
        "If runs keep timing out, raise the DAG's dagrun_timeout.",
    ]
    return Mail(
        "failure",
        run.subject(f"run failed ({reason})"),
        _render(run, f"Frankli sync of {run.tenant.name}: the run failed", happened, todo, facts=[("Reason", reason)]),
    )


def guard_mail(run: RunFacts, guard: Mapping[str, Any] | None, error: str | None, waiting: bool = False) -> Mail:
    """The deletion guard stopped the archives: its numbers and the way out it offers.

    `waiting`: load_archives succeeded with the guard blocked, so the run waits for an approval.
    """
    guard = guard or {}
    to_archive = guard.get("to_archive")
    complete = guard.get("read_complete")
    facts = [
        ("Users this run would archive", to_archive),
        ("Limit", guard.get("limit")),
        ("Synced users in Frankli", guard.get("synced_users")),
        ("Users in this read", guard.get("staged_users")),
        ("Users in the last synced read", guard.get("last_synced_users")),
        ("Read proven complete", {True: "yes", False: "no"}.get(complete, "unknown")),
    ]
    happened = [
        "The deletion guard stopped load_archives: nobody was archived. The run's creates and updates were "
        "applied. The guard says:"
    ]
    todo = ["Open the run report: it shows the guard's numbers and this run's plan."]
    if waiting:
        todo.append(
            "This run waits for a decision in the Airflow UI, under Required actions: approve to archive "
            "these users, reject to archive nobody."
        )
    elif guard.get("staged_users") == 0:
        todo.append("The read returned no users: check the source (Graph connection, scope groups, CSV file).")
    elif complete:
        todo.append(
            'If these users really left Entra (or the scope), trigger the DAG again with {"allow_mass_archive": '
            "true} (Trigger DAG, advanced options: configuration JSON): that run archives them."
        )
    else:
        todo.append(
            'The read is not proven complete: trigger the DAG again with {"full_sync": true}. A full read is '
            "checked against the size Graph reports before anyone is archived; the override is not offered."
        )
    todo.append(
        "If they should stay: find why they are missing from this read (a changed scope group, a partial "
        "export, an Entra change) and fix that; the next run decides again. Nothing is archived until then."
    )
    count = f"{to_archive} archives" if to_archive is not None else "archiving"
    return Mail(
        "guard",
        run.subject(f"deletion guard stopped {count}"),
        _render(
            run,
            f"Frankli sync of {run.tenant.name}: deletion guard stopped archiving",
            happened,
            todo,
            facts=facts,
            error=guard.get("message") or error,
        ),
    )


def quarantine_mail(run: RunFacts, validation: Mapping[str, Any], descriptions: Mapping[str, str]) -> Mail:
    """More than the warn share of the in-scope users was quarantined (the run went on)."""
    notify = run.tenant.notify
    assert notify is not None and notify.quarantine_warn_share is not None
    quarantined = validation.get("quarantined") or []
    in_scope = validation.get("in_scope") or validation.get("checked") or 0
    share = float(validation.get("failed_share") or 0.0)
    stop = float(validation.get("threshold", run.tenant.thresholds.max_invalid_share))
    users_per_rule: Counter[str] = Counter()
    for entry in quarantined:
        users_per_rule.update({str(reason.get("expectation", "?")) for reason in entry.get("reasons") or []})
    rows = [(rule, descriptions.get(rule, ""), users) for rule, users in users_per_rule.most_common()]
    facts = [
        ("Quarantined", f"{len(quarantined)} of {in_scope} users in scope ({share:.1%})"),
        ("Mail above", f"{notify.quarantine_warn_share:.1%} (notify.quarantine_warn_share)"),
        ("Run stops above", f"{stop:.1%} (thresholds.max_invalid_share)"),
    ]
    happened = [
        f"Validation quarantined {len(quarantined)} users ({share:.1%} of those in scope): they are neither "
        "created, updated nor archived in Frankli until their Entra record passes. The run went on.",
        "Users per rule they fail (a user can fail several):",
    ]
    todo = [
        "Open the run report: it lists every quarantined user with the rule and the value that failed.",
        "Fix those users in Entra (or the tenant's validation settings, if a rule is wrong for this tenant); "
        "the next run picks them up.",
        "A sudden rise usually comes from one change in Entra (a bulk import, a new UPN suffix, a cleared "
        "attribute): compare with the reports of earlier runs.",
        f"Above {stop:.1%} the run stops before loading anything.",
    ]
    return Mail(
        "quarantine",
        run.subject(f"{len(quarantined)} of {in_scope} users quarantined ({share:.1%})"),
        _render(
            run,
            f"Frankli sync of {run.tenant.name}: {share:.1%} of the users quarantined",
            happened,
            todo,
            facts=facts,
            rows=rows,
            rows_head=("Rule", "Meaning", "Users"),
        ),
    )


# --- the notifiers (Airflow callbacks) -----------------------------------------------------------------------


class TenantNotifier(BaseNotifier):
    """A tenant's notifier: decides whether to mail and what; the SMTP provider's notifier sends it."""

    template_fields = ()  # the mails hold directory values and error texts: never rendered as templates

    def __init__(self, tenant: TenantConfig) -> None:
        super().__init__()
        if tenant.notify is None:
            raise ValueError(f"tenant {tenant.name!r} has no notify settings")
        self.tenant = tenant
        self.settings = tenant.notify

    def send(self, mail: Mail, context: Mapping[str, Any]) -> None:
        """Send through ``SmtpNotifier`` with the tenant's connection (its ``from_email`` unless notify sets one)."""
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        run = RunFacts.of(self.tenant, context)
        smtp = SmtpNotifier(
            to=list(self.settings.to),
            from_email=self.settings.from_email,
            subject=mail.subject,
            html_content=mail.html,
            smtp_conn_id=self.settings.conn_id,
        )
        try:
            smtp.notify(context)  # type: ignore[arg-type]  # not __call__: the text is final, not a template
        except Exception as error:
            raise NotificationNotSent(
                f"tenant {self.tenant.name}: the {mail.event} mail of run {run.run_id} to "
                f"{', '.join(self.settings.to)} was not sent through the SMTP connection {self.settings.conn_id!r} "
                f"({type(error).__name__}: {error}). Check that connection's host, port, login and TLS settings "
                f"and its from_email, or tenants[{self.tenant.name}].notify"
            ) from error
        log.info(
            "tenant %s run %s: %s mail sent to %s",
            self.tenant.name,
            run.run_id,
            mail.event,
            ", ".join(self.settings.to),
        )

    def notify(self, context: Any) -> None:  # pragma: no cover - each notifier defines its own
        raise NotImplementedError


class StepFailureNotifier(TenantNotifier):
    """``on_failure_callback`` of every task: the guard mail, or the failure mail with the step's error."""

    def notify(self, context: Any) -> None:
        error = context.get("exception")
        if isinstance(error, RunIncomplete):
            return  # the report task only repeats that a step failed; that step's mail told
        run = RunFacts.of(self.tenant, context)
        ti = context.get("ti")
        step = str(getattr(ti, "task_id", None) or "a step")
        if _is_guard_stop(error) and "guard" in self.settings.on:
            self.send(guard_mail(run, _document(self.tenant, run.run_id, "guard"), _text(error)), context)
        elif "failure" in self.settings.on:
            self.send(failure_mail(run, step, _text(error), getattr(ti, "log_url", None)), context)


class GuardNotifier(TenantNotifier):
    """load_archives' ``on_success_callback``: mail when it succeeded with the guard blocked (an approval waits)."""

    def notify(self, context: Any) -> None:
        if "guard" not in self.settings.on:
            return
        run = RunFacts.of(self.tenant, context)
        guard = _document(self.tenant, run.run_id, "guard")
        if guard and guard.get("blocked"):
            self.send(guard_mail(run, guard, None, waiting=True), context)


class RunFailureNotifier(TenantNotifier):
    """The DAG's ``on_failure_callback``: a run that failed without a failed step (timed out, deadlocked)."""

    def notify(self, context: Any) -> None:
        reason = str(context.get("reason") or "unknown")
        if reason == "task_failure" or "failure" not in self.settings.on:
            return  # a failed step: its own on_failure_callback mailed, with the error
        self.send(run_failure_mail(RunFacts.of(self.tenant, context), reason), context)


class QuarantineNotifier(TenantNotifier):
    """validate's ``on_success_callback``: mail when the quarantined share is above the warn share."""

    def notify(self, context: Any) -> None:
        run = RunFacts.of(self.tenant, context)
        warn = self.settings.quarantine_warn_share
        if run.only_user or warn is None or "quarantine" not in self.settings.on:
            return
        validation = _document(self.tenant, run.run_id, "validation")
        if validation is None or float(validation.get("failed_share") or 0.0) <= warn:
            return
        self.send(quarantine_mail(run, validation, _rule_descriptions(self.tenant)), context)


@dataclass(frozen=True)
class Callbacks:
    """A tenant's Airflow callbacks; None where its notify settings ask for no mail."""

    step_failed: StepFailureNotifier | None = None  # every task's on_failure_callback
    run_failed: RunFailureNotifier | None = None  # the DAG's on_failure_callback
    validated: QuarantineNotifier | None = None  # validate's on_success_callback
    archived: GuardNotifier | None = None  # load_archives' on_success_callback


def callbacks(tenant: TenantConfig) -> Callbacks:
    notify = tenant.notify
    if notify is None:
        return Callbacks()
    on = set(notify.on)
    return Callbacks(
        step_failed=StepFailureNotifier(tenant) if on & {"failure", "guard"} else None,
        run_failed=RunFailureNotifier(tenant) if "failure" in on else None,
        validated=QuarantineNotifier(tenant) if "quarantine" in on else None,
        archived=GuardNotifier(tenant) if "guard" in on else None,
    )


# --- helpers -------------------------------------------------------------------------------------------------


def _text(error: BaseException | str | None) -> str | None:
    return str(error) if error is not None and str(error) else None


def _is_guard_stop(error: BaseException | str | None) -> bool:
    """Whether the step stopped on the deletion guard (``pipeline.DeletionGuardTriggered`` in its chain)."""
    if not isinstance(error, BaseException):
        return False
    from frankli_sync.pipeline import DeletionGuardTriggered

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, DeletionGuardTriggered):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _document(tenant: TenantConfig, run_id: str, kind: str) -> dict[str, Any] | None:
    """The run's staging document (``validation``, ``guard``); None when it cannot be read (said in the log)."""
    from frankli_sync.config import load_config
    from frankli_sync.connections import staging_engine
    from frankli_sync.staging import Staging

    try:
        engine = staging_engine(load_config().staging_conn_id)
        try:
            document = Staging(engine).load_document(tenant.name, run_id, kind)
        finally:
            engine.dispose()
    except Exception as error:
        log.warning(
            "tenant %s run %s: no %s document for the mail (%s: %s)",
            tenant.name,
            run_id,
            kind,
            type(error).__name__,
            error,
        )
        return None
    return document if isinstance(document, dict) else None


def _rule_descriptions(tenant: TenantConfig) -> dict[str, str]:
    """Validation rule name -> what it asks, in the words of the run report."""
    from frankli_sync.sinks.schema import frankli_field_lengths
    from frankli_sync.validation import ValidationSettings, plan_checks

    settings = ValidationSettings(
        required_fields=tenant.validation.required_columns,
        warn_fields=tenant.validation.warn_columns,
        max_lengths=frankli_field_lengths(tenant.mapping),
    )
    return {check.name: check.description for check in plan_checks(settings)}
