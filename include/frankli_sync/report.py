"""Run reports: ``report.json`` and an HTML summary under ``<reports_dir>/<tenant>/<run_id>/``.

Every piece of directory data that goes into HTML is escaped (jinja2 with autoescape, see
`frankli_sync.report_site`): names and values come from Entra and are untrusted. The page
has no script and a Content-Security-Policy that forbids scripts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup

from frankli_sync import json_text
from frankli_sync.plan import Plan
from frankli_sync.report_site import (
    DOCS_INDEX,
    REPORT_HTML,
    REPORT_JSON,
    prune_runs,
    safe_run_id,
    template_environment,
)
from frankli_sync.run_changes import (
    CHANGE_COLUMNS,
    CHANGES_CSV,
    CHANGES_MACROS,
    CHANGES_PAGE,
    QUARANTINE_CSV,
    SHOWN_ON_RUN_PAGE,
    csv_text,
    quarantine_rows,
)
from frankli_sync.task_outcome import failure_kind, root_cause, task_outcomes

log = logging.getLogger(__name__)

ACTION_SAMPLE = 200  # actions listed per kind in a non-dry report (all of them in a dry run)
TASKS = ("extract", "validate", "transform", "load_upserts", "load_archives")


def run_directory(reports_dir: Path, tenant: str, run_id: str) -> Path:
    return Path(reports_dir) / tenant / safe_run_id(run_id)


def plan_document(plan: Plan, full: bool) -> dict[str, Any]:
    """The plan as JSON: counts, findings, and the actions (all when `full`, else a sample per kind)."""
    actions = {
        "entity_create": plan.entity_creates,
        "create": plan.creates,
        "update": plan.updates,
        "link": plan.links,
        "restore": plan.restores,
        "archive": plan.archives,
        "conflict": plan.conflicts,
    }
    return {
        "counts": plan.counts(),
        "findings": plan.findings,
        "actions": {k: _records(v if full else v.head(ACTION_SAMPLE)) for k, v in actions.items()},
        "complete": full,
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records", default_handler=str)) if len(frame) else []


PLAN_ROWS_SHOWN = 1000  # rows per action kind on the HTML page of a dry run (report.json has them all)
# Rows per list (quarantined users, warnings, manager problems…) on the HTML run page: a page of 20,000
# rows helps nobody and costs seconds each run; report.json and quarantine.csv hold every one.
LIST_ROWS_SHOWN = 500
_WHOLE_LIST = {"quarantine": QUARANTINE_CSV, "json": REPORT_JSON}
_FROM_CONFIG: Any = object()


def configured_retention_days() -> float | None:
    """``report_retention_days`` of the sync config in force (None, keep everything, if it cannot load)."""
    from frankli_sync.config import ConfigError, load_config

    try:
        return load_config().report_retention_days
    except ConfigError as error:
        log.warning("report retention not applied: %s", error)
        return None


def write_run_report(
    run_dir: Path,
    *,
    tenant: str,
    run_id: str,
    params: Mapping[str, Any],
    documents: Mapping[str, Any],
    applied: Mapping[str, int],
    task_results: Mapping[str, Any],
    task_states: Mapping[str, str | None] | None = None,
    changes: pd.DataFrame | None = None,
    retention_days: float | None = _FROM_CONFIG,
) -> dict[str, Any]:
    """Write report.json and index.html for the run and return the summary.

    `changes`: who changed (`run_changes.change_rows`), written whole to ``changes.csv`` with the
    quarantine in ``quarantine.csv``; the summary keeps the first rows for the run page. Then delete
    the tenant's run directories older than `retention_days` (default: the
    config's ``report_retention_days``; None keeps everything).
    """
    validation = documents.get("validation") or {}
    plan = documents.get("plan") or {}
    guard = documents.get("guard")
    incomplete = [t for t in TASKS if t in task_results and task_results[t] is None]
    outcomes = task_outcomes(
        [t for t in TASKS if t in task_results], task_results, {t: documents.get(failure_kind(t)) for t in TASKS},
        task_states,
    )  # fmt: skip
    conflicts = (plan.get("actions") or {}).get("conflict", [])
    quarantined = [
        {"object_id": q.get("object_id"), "user_principal_name": q.get("user_principal_name"), "reasons": q["reasons"]}
        for q in validation.get("quarantined", [])
    ] + [
        {"object_id": c["external_id"], "user_principal_name": c["email"], "reasons": [{"expectation": c["reason"]}]}
        for c in conflicts
    ]
    run_dir = Path(run_dir)
    has_docs = bool(validation.get("docs_index")) or (run_dir / DOCS_INDEX).is_file()
    summary: dict[str, Any] = {
        "tenant": tenant,
        "run_id": run_id,
        "params": dict(params),
        "dry_run": bool(params.get("dry_run")),
        "status": "failed" if incomplete else "success",
        "incomplete_tasks": incomplete,
        # Each task's state (success / failed / upstream_failed / not_run) and, for the failed, the message.
        "tasks": outcomes,
        "failure": root_cause(outcomes),
        "counts": dict(plan.get("counts", {})) if params.get("dry_run") else dict(applied),
        "planned": dict(plan.get("counts", {})),
        "quarantined": quarantined,
        "validation": {
            "checked": validation.get("checked"),
            # The users the failing share is a share of (incremental runs check fewer: their participants).
            "in_scope": validation.get("in_scope", validation.get("checked")),
            "failed_share": validation.get("failed_share"),
            "threshold_exceeded": validation.get("threshold_exceeded"),
            "warnings": len(validation.get("warnings", [])),
            "docs_index": validation.get("docs_index"),
        },
        "warnings": list(validation.get("warnings", [])),
        # How the run planned: incremental (its participants only) or full, and why.
        "basis": plan.get("basis") or validation.get("basis"),
        "orphaned_references": (plan.get("findings") or {}).get("orphaned_references", []),
        "manager_problems": (plan.get("findings") or {}).get("manager_problems", []),
        "manager_cycles": (plan.get("findings") or {}).get("manager_cycles", []),
        "archived_in_frankli": (plan.get("findings") or {}).get("archived_in_frankli", []),
        "deletion_guard": guard,
        # An only_user run: which mapping gave each of the user's values, from which attribute values.
        "mapping_trace": plan.get("mapping_trace"),
        "plan": plan.get("actions") if params.get("dry_run") else None,
        "generated_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        # Relative to the run directory, as the HTML pages link them.
        "links": {
            "html": REPORT_HTML,
            "json": REPORT_JSON,
            "validation_docs": DOCS_INDEX if has_docs else None,
            "runs": "../",
        },
    }
    summary["counts"]["quarantine"] = len(quarantined)
    run_dir.mkdir(parents=True, exist_ok=True)
    changes = changes if changes is not None else pd.DataFrame(columns=list(CHANGE_COLUMNS))
    _write_atomically(run_dir / CHANGES_CSV, csv_text(changes))
    _write_atomically(run_dir / QUARANTINE_CSV, csv_text(quarantine_rows(quarantined)))
    summary["changes"] = {
        "total": len(changes),
        "by_action": {str(k): int(v) for k, v in changes["action"].value_counts().items()} if len(changes) else {},
        "shown": changes.head(SHOWN_ON_RUN_PAGE).to_dict("records"),
    }
    summary["links"].update(changes=CHANGES_PAGE, changes_csv=CHANGES_CSV, quarantine_csv=QUARANTINE_CSV)
    _write_atomically(run_dir / REPORT_JSON, json_text.document(summary, indent=2))
    _write_atomically(run_dir / REPORT_HTML, render_html(summary))
    if retention_days is _FROM_CONFIG:
        retention_days = configured_retention_days()
    prune_runs(run_dir.parent, retention_days, keep={run_dir.name})
    summary["report_path"] = str(run_dir / REPORT_JSON)
    return summary


def _write_atomically(path: Path, text: str) -> None:
    """Readers (the Airflow plugin) never see a half-written file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


MANAGER_REASONS = {
    "quarantined": "the manager is quarantined in this run (see Quarantined users)",
    "conflict": "the manager is in conflict in this run (see Quarantined users)",
    "disabled": "the manager's account is disabled in Entra",
    "deleted": "the manager was deleted in Entra",
    "out_of_scope": "the manager is outside the sync scope",
    "not_in_source": "the manager is not among the synced Entra users (out of scope or gone)",
    "archived_in_frankli": "the manager was archived by a Frankli admin",
}

RUN_PAGE = """{% extends "layout.html" %}
{% from "changes_macros.html" import changes_table %}
{% block title %}Frankli sync · {{ s.tenant }} · {{ s.run_id }}{% endblock %}
{% block body %}
<nav class="crumbs"><a href="../../">All tenants</a> &rsaquo; <a href="../">{{ s.tenant }}</a> &rsaquo; run</nav>
<h1>Sync run · {{ s.tenant }}</h1>
<dl class="facts">
<dt>Run</dt><dd><code>{{ s.run_id }}</code></dd>
<dt>DAG</dt><dd><code>entra_to_frankli__{{ s.tenant }}</code></dd>
<dt>Status</dt><dd>{% if s.status == "success" %}<span class="badge ok">success</span>
{% else %}<span class="badge bad">{{ s.status }}</span>{% endif %}
{% if s.dry_run %} <span class="badge warn">dry run · nothing written to Frankli</span>{% endif %}</dd>
{% if s.generated_at %}<dt>Written</dt><dd>{{ s.generated_at }}</dd>{% endif %}
<dt>Parameters</dt><dd><code>{{ params }}</code></dd>
</dl>
<nav class="links">
<a href="../">All runs of {{ s.tenant }}</a>
<a href="report.json">report.json</a>
{% if docs %}<a href="validation/index.html">Validation report (GX Data Docs)</a>{% endif %}
</nav>
{% if s.failure %}
<div class="box bad"><strong>{{ s.failure.task }} failed{% if s.failure.stopped %} (a safety stop){% endif %}:</strong>
<span class="value">{{ s.failure.message }}</span></div>
{% elif s.incomplete_tasks %}
<div class="box bad">These tasks did not succeed: {{ s.incomplete_tasks|join(", ") }}. Check their logs in Airflow.
</div>
{% endif %}
{% if s.incomplete_tasks and s.tasks %}
<table>
<tr><th>Task</th><th>Outcome</th></tr>
{% for t in s.tasks %}
<tr><th>{{ t.task }}</th><td>{% if t.state == "success" %}<span class="badge ok">succeeded</span>
{% elif t.state == "failed" %}<span class="badge bad">failed</span>
{% elif t.state == "upstream_failed" %}<span class="badge warn">not run: an earlier task failed</span>
{% else %}<span class="badge warn">not run</span>{% endif %}</td></tr>
{% endfor %}
</table>
<p class="muted">Once the cause is fixed, clear the failed task in Airflow ("Clear" with its downstream tasks): every
task is idempotent and the run converges.</p>
{% endif %}
{% if s.validation.threshold_exceeded %}
<div class="box bad">Too many invalid users: the run stopped before loading anything.
Fix the users below in Entra.</div>
{% endif %}
{% if s.dry_run %}
<div class="box warn">Dry run: every step up to the plan ran; nothing was written to Frankli.
The plan is listed below.</div>
{% endif %}

{% if s.mapping_trace %}
<h2 id="mapping">How {{ s.params.only_user }}'s values were mapped</h2>
<table>
<tr><th>Frankli field</th><th>Mapping</th><th>Entra values read</th><th>Value</th></tr>
{% for t in s.mapping_trace %}
<tr><th>{{ t.field }}</th><td><code>{{ t.mapping }}</code>{% if t.on == "create" %} (on create){% endif %}</td>
<td>{% for name, v in t.inputs.items() %}<code>[{{ name }}]</code> = {{ shown(v) }}<br>{% endfor %}</td>
<td>{% if t.failure %}<span class="bad">{{ t.failure }}</span>{% else %}{{ shown(t.value) }}{% endif %}</td></tr>
{% endfor %}
</table>
{% endif %}

<h2 id="actions">Actions</h2>
<table>
<tr><th>Action</th><th class="num">Planned</th>{% if not s.dry_run %}<th class="num">Applied</th>{% endif %}</tr>
{% for kind in action_kinds %}
<tr><th>{{ kind }}</th><td class="num">{{ s.planned.get(kind, "") }}</td>
{% if not s.dry_run %}<td class="num">{{ "not evaluated" if not loaded else (s.counts[kind] if kind in s.counts
  else (0 if kind in audited else "n/a")) }}</td>{% endif %}</tr>
{% endfor %}
</table>
{% if not s.dry_run %}<p class="muted">Applied: the user actions of this run in Frankli's audit trail (sync_audit).
Entity creates are not audited; conflicts are counted as quarantined.</p>{% endif %}

{% if s.changes is defined and s.changes %}
<h2 id="changes">Who changed ({{ s.changes.total }})</h2>
<p class="muted">{% if s.dry_run %}What this dry run would change.{% else %}What this run wrote to Frankli, from
its audit trail.{% endif %} Updates show each field as before → after; managers by name and address.</p>
{{ changes_table(s.changes.shown) }}
<nav class="links">
{% if s.changes.total > s.changes.shown|length %}<a href="{{ s.links.changes }}">All {{ s.changes.total }}
changes: search, filter, page</a>{% elif s.changes.total %}<a href="{{ s.links.changes }}">Search and filter</a>
{% endif %}
<a href="{{ s.links.changes_csv }}" download>Download changes (CSV)</a>
<a href="{{ s.links.quarantine_csv }}" download>Download quarantine (CSV)</a>
</nav>
{% endif %}

<h2 id="guard">Deletion guard</h2>
{% if guard %}
<div class="box {{ 'bad' if guard.blocked else 'ok' }}">
{% if guard.blocked %}<strong>Blocked.</strong> {% endif %}{{ guard.message }}</div>
<dl class="facts">
{% for key in ("to_archive", "limit", "synced_users", "staged_users", "last_synced_users", "allow_mass_archive") %}
{% if key in guard %}<dt>{{ key|replace("_", " ") }}</dt><dd>{{ guard[key] }}</dd>{% endif %}
{% endfor %}
</dl>
{% else %}
<p class="muted">Not evaluated in this run (dry run, or the archive step did not run).</p>
{% endif %}

<h2 id="validation">Validation</h2>
<dl class="facts">
{% if s.validation.checked is none %}
<dd class="muted">Not evaluated: the validate task did not run in this run.</dd>
{% else %}
<dt>Users checked</dt><dd>{{ s.validation.checked }}</dd>
<dt>Failing share</dt><dd>{{ share }}</dd>
<dt>Threshold exceeded</dt><dd>{{ "yes" if s.validation.threshold_exceeded else "no" }}</dd>
<dt>Users with warnings</dt><dd>{{ s.validation.warnings }}</dd>
{% endif %}
</dl>
{% if s.basis %}<p class="muted">Planned {{ s.basis.mode }}{% if s.basis.reason %}: {{ s.basis.reason }}{% endif %}.
{% if s.basis.mode == "incremental" %}Only the users the changes touch were validated and planned; the others
keep their last outcome.{% endif %}</p>{% endif %}
{% if docs %}<p><a href="validation/index.html">Open the validation report (GX Data Docs)</a></p>
{% elif s.basis and s.basis.mode == "incremental" %}<p class="muted">No Data Docs: incremental runs evaluate the
suite without GX's renderer; full runs write them.</p>{% endif %}

<h2 id="quarantined">Quarantined users ({{ s.quarantined|length }})</h2>
<p class="muted">Not loaded and not archived: fix them in Entra, the next run picks them up.</p>
{% if s.quarantined %}
<table>
<tr><th>User principal name</th><th>Object id</th><th>Failed expectation</th><th>Column</th>
<th>Offending value</th></tr>
{% for q in s.quarantined[:rows_shown] %}
{% set reasons = q.reasons or [{}] %}
{% for r in reasons %}
<tr>
{% if loop.first %}
<td rowspan="{{ reasons|length }}" class="value">{{ shown(q.user_principal_name) }}</td>
<td rowspan="{{ reasons|length }}"><code>{{ shown(q.object_id) }}</code></td>
{% endif %}
<td>{{ r.expectation }}</td><td>{{ r.column or "" }}</td>
<td class="value">{% if "value" in r %}{{ value(r.value) if r.value is not none else "(empty)" }}{% endif %}</td>
</tr>
{% endfor %}
{% endfor %}
</table>
{{ more(s.quarantined, "quarantine") }}
{% endif %}

<h2 id="orphaned">References to entities deleted in Frankli ({{ s.orphaned_references|length }})</h2>
<p class="muted">These users keep no site/department/role: the entity was deleted in Frankli.
Set a new value in Entra.</p>
{% if s.orphaned_references %}
<table>
<tr><th>User</th><th>Object id</th><th>Field</th><th>Value (deleted in Frankli)</th><th>What to do</th></tr>
{% for o in s.orphaned_references[:rows_shown] %}
<tr><td class="value">{{ o.email }}</td><td><code>{{ o.external_id }}</code></td><td>{{ o.field }}</td>
<td class="value">{{ value(o.value) }}</td><td class="value">{{ o.action }}</td></tr>
{% endfor %}
</table>
{{ more(s.orphaned_references, "json") }}
{% endif %}

<h2 id="managers">Manager problems ({{ s.manager_problems|length }})</h2>
<p class="muted">The manager Entra names for these users could not be used. A manager missing from the
snapshot leaves the Frankli manager as it was; any other problem leaves the user without one.</p>
{% if s.manager_problems %}
<table>
<tr><th>User</th><th>Object id</th><th>Manager object id</th><th>Reason</th><th>Outcome</th></tr>
{% for m in s.manager_problems[:rows_shown] %}
<tr><td class="value">{{ m.email }}</td><td><code>{{ m.external_id }}</code></td>
<td><code>{{ m.manager_id }}</code></td>
<td>{{ manager_reasons.get(m.reason, m.reason) }}</td><td>{{ m.outcome or "no manager" }}</td></tr>
{% endfor %}
</table>
{{ more(s.manager_problems, "json") }}
{% endif %}

<h2 id="cycles">Manager cycles ({{ s.manager_cycles|length }})</h2>
<p class="muted">Each cycle was broken by dropping one manager link; fix the chain in Entra.</p>
{% if s.manager_cycles %}
<ol>
{% for c in s.manager_cycles %}
<li>{% for member in c.members %}
<span class="value">{{ member[1] if member[1] else member[0] }}</span> <code class="muted">{{ member[0] }}</code>
{% if not loop.last %} &rarr; {% endif %}{% endfor %}</li>
{% endfor %}
</ol>
{% endif %}

{% if s.archived_in_frankli %}
<h2 id="archived">Archived by a Frankli admin ({{ s.archived_in_frankli|length }})</h2>
<p class="muted">Active in Entra, but archived in Frankli by an admin: the sync leaves them archived.</p>
<table><tr><th>User</th><th>Object id</th></tr>
{% for a in s.archived_in_frankli[:rows_shown] %}
<tr><td class="value">{{ a.email }}</td><td><code>{{ a.external_id }}</code></td></tr>
{% endfor %}
</table>
{{ more(s.archived_in_frankli, "json") }}
{% endif %}

{% if warnings %}
<h2 id="warnings">Validation warnings ({{ warnings|length }})</h2>
<details><summary>Users loaded despite a warning-level expectation</summary>
<table>
<tr><th>User principal name</th><th>Object id</th><th>Expectation</th><th>Column</th><th>Value</th></tr>
{% for w in warnings[:rows_shown] %}
{% for r in (w.reasons or [{}]) %}
<tr><td class="value">{{ w.user_principal_name }}</td><td><code>{{ w.object_id }}</code></td>
<td>{{ r.expectation }}</td>
<td>{{ r.column or "" }}</td><td class="value">{{ value(r.value) if "value" in r else "" }}</td></tr>
{% endfor %}
{% endfor %}
</table>
{{ more(warnings, "json") }}</details>
{% endif %}

{% if plan is not none %}
<h2 id="plan">Dry-run plan</h2>
{% for kind, rows in plan %}
<h3>{{ kind }} ({{ rows.total }})</h3>
{% if rows.total %}
<table>
<tr>{% for column in rows.columns %}<th>{{ column }}</th>{% endfor %}</tr>
{% for row in rows.shown %}
<tr>{% for column in rows.columns %}<td class="value">{{ value(row.get(column)) }}</td>{% endfor %}</tr>
{% endfor %}
</table>
{% if rows.total > rows.shown|length %}
<p class="muted">First {{ rows.shown|length }} of {{ rows.total }}; report.json lists them all.</p>
{% endif %}
{% else %}<p class="muted">none</p>{% endif %}
{% endfor %}
{% endif %}
{% endblock %}
"""

ACTION_KINDS = ("entity_create", "create", "update", "link", "restore", "archive", "conflict", "quarantine", "failed")
AUDITED_ACTIONS = ("create", "update", "link", "restore", "archive", "quarantine", "failed")  # sync_audit.action
_ENV = template_environment({"run.html": RUN_PAGE, "changes_macros.html": CHANGES_MACROS})


def _value(value: Any) -> str:
    """A value as text (the template escapes it)."""
    if value is None:
        return ""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _plan_tables(actions: Mapping[str, Any] | None) -> list[tuple[str, dict[str, Any]]] | None:
    if actions is None:
        return None
    tables = []
    for kind, rows in actions.items():
        rows = [r for r in (rows or []) if isinstance(r, Mapping)]
        shown = rows[:PLAN_ROWS_SHOWN]
        columns: list[str] = []
        for row in shown:
            columns += [str(c) for c in row if str(c) not in columns]
        tables.append((str(kind), {"total": len(rows), "shown": shown, "columns": columns}))
    return tables


def render_html(summary: Mapping[str, Any]) -> str:
    """A self-contained HTML run summary (no script); all directory data is escaped."""
    validation = summary.get("validation") or {}
    share = validation.get("failed_share")
    links = summary.get("links") or {}
    docs = links.get("validation_docs") if "links" in summary else validation.get("docs_index")
    planned = summary.get("planned") or {}
    counts = summary.get("counts") or {}
    kinds = [k for k in ACTION_KINDS if k in planned or k in counts]
    kinds += sorted(k for k in {*planned, *counts} if k not in kinds)
    return _ENV.get_template("run.html").render(
        s=summary,
        params=json.dumps(summary.get("params") or {}, sort_keys=True, default=str),
        guard=summary.get("deletion_guard"),
        docs=bool(docs),
        share=f"{share:.2%}" if isinstance(share, int | float) else "-",
        action_kinds=kinds,
        # The applied counts mean something once a load ran: before, they are "not evaluated", not zeros.
        loaded=any(
            t.get("task") in ("load_upserts", "load_archives") and t.get("state") == "success"
            for t in summary.get("tasks") or []
        )
        or not summary.get("tasks"),
        audited=AUDITED_ACTIONS,
        manager_reasons=MANAGER_REASONS,
        warnings=summary.get("warnings") or [],
        plan=_plan_tables(summary.get("plan")) if summary.get("dry_run") else None,
        value=_value,
        shown=lambda v: "(none)" if v is None else v,
        rows_shown=LIST_ROWS_SHOWN,
        more=_more,
    )


def _more(rows: Sequence[Any], whole: str) -> Markup:
    """Under a list cut at `LIST_ROWS_SHOWN` rows: how many are shown and which file has them all."""
    if len(rows) <= LIST_ROWS_SHOWN:
        return Markup("")
    href = _WHOLE_LIST[whole]
    return Markup('<p class="muted">The first {} of {} are shown: <a href="{}">{}</a> has every one.</p>').format(
        f"{LIST_ROWS_SHOWN:,}", f"{len(rows):,}", href, href
    )
