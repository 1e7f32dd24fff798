"""Run reports: ``report.json`` and an HTML summary under ``<reports_dir>/<tenant>/<run_id>/``.

Every piece of directory data that goes into HTML passes through
`html.escape`: names and values come from Entra and are untrusted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from frankli_sync.plan import Plan

ACTION_SAMPLE = 200  # actions listed per kind in a non-dry report (all of them in a dry run)
TASKS = ("extract", "validate", "transform", "load_upserts", "load_archives")


def safe_run_id(run_id: str) -> str:
    """A run id usable as a directory name (Airflow run ids hold ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)


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


def write_run_report(
    run_dir: Path,
    *,
    tenant: str,
    run_id: str,
    params: Mapping[str, Any],
    documents: Mapping[str, Any],
    applied: Mapping[str, int],
    task_results: Mapping[str, Any],
) -> dict[str, Any]:
    """Write report.json and index.html for the run and return the summary."""
    validation = documents.get("validation") or {}
    plan = documents.get("plan") or {}
    guard = documents.get("guard")
    incomplete = [t for t in TASKS if t in task_results and task_results[t] is None]
    conflicts = (plan.get("actions") or {}).get("conflict", [])
    quarantined = [
        {"object_id": q.get("object_id"), "user_principal_name": q.get("user_principal_name"), "reasons": q["reasons"]}
        for q in validation.get("quarantined", [])
    ] + [
        {"object_id": c["external_id"], "user_principal_name": c["email"], "reasons": [{"expectation": c["reason"]}]}
        for c in conflicts
    ]
    summary: dict[str, Any] = {
        "tenant": tenant,
        "run_id": run_id,
        "params": dict(params),
        "dry_run": bool(params.get("dry_run")),
        "status": "failed" if incomplete else "success",
        "incomplete_tasks": incomplete,
        "counts": dict(plan.get("counts", {})) if params.get("dry_run") else dict(applied),
        "planned": dict(plan.get("counts", {})),
        "quarantined": quarantined,
        "validation": {
            "checked": validation.get("checked"),
            "failed_share": validation.get("failed_share"),
            "threshold_exceeded": validation.get("threshold_exceeded"),
            "warnings": len(validation.get("warnings", [])),
            "docs_index": validation.get("docs_index"),
        },
        "orphaned_references": (plan.get("findings") or {}).get("orphaned_references", []),
        "manager_problems": (plan.get("findings") or {}).get("manager_problems", []),
        "manager_cycles": (plan.get("findings") or {}).get("manager_cycles", []),
        "archived_in_frankli": (plan.get("findings") or {}).get("archived_in_frankli", []),
        "deletion_guard": guard,
        "plan": plan.get("actions") if params.get("dry_run") else None,
    }
    summary["counts"]["quarantine"] = len(quarantined)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.json").write_text(json.dumps(summary, indent=2, default=str, sort_keys=True))
    (run_dir / "index.html").write_text(render_html(summary))
    summary["report_path"] = str(run_dir / "report.json")
    return summary


def render_html(summary: Mapping[str, Any]) -> str:
    """A self-contained HTML run summary; all directory data is escaped."""
    counts = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in sorted(summary["counts"].items())
    )
    quarantined = "".join(
        "<tr><td>{}</td><td>{}</td><td><ul>{}</ul></td></tr>".format(
            escape(str(q.get("user_principal_name"))),
            escape(str(q.get("object_id"))),
            "".join(
                f"<li>{escape(str(r.get('expectation')))}: {escape(str(r.get('value', '')))}</li>" for r in q["reasons"]
            ),
        )
        for q in summary["quarantined"]
    )
    orphans = "".join(
        f"<li>{escape(str(o.get('email')))}: {escape(str(o.get('action')))}</li>"
        for o in summary["orphaned_references"]
    )
    managers = "".join(
        f"<li>{escape(str(m.get('email')))}: manager {escape(str(m.get('manager_id')))} "
        f"({escape(str(m.get('reason')))})</li>"
        for m in summary["manager_problems"]
    )
    guard = summary.get("deletion_guard") or {}
    docs = summary["validation"].get("docs_index")
    docs_link = '<p><a href="validation/index.html">Validation report (GX Data Docs)</a></p>' if docs else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Frankli sync · {escape(summary["tenant"])}</title></head>
<body>
<h1>Frankli sync run · {escape(summary["tenant"])}</h1>
<p>Run <code>{escape(summary["run_id"])}</code> · status <strong>{escape(summary["status"])}</strong>
{" · dry run (nothing written)" if summary["dry_run"] else ""}</p>
{docs_link}
<h2>Actions</h2><table>{counts}</table>
<h2>Deletion guard</h2><p>{escape(str(guard.get("message", "not evaluated")))}</p>
<h2>Quarantined users ({len(summary["quarantined"])})</h2>
<table><tr><th>UPN</th><th>Object id</th><th>Reasons</th></tr>{quarantined}</table>
<h2>References to entities deleted in Frankli ({len(summary["orphaned_references"])})</h2><ul>{orphans}</ul>
<h2>Manager problems ({len(summary["manager_problems"])})</h2><ul>{managers}</ul>
</body></html>
"""
