"""The reports site: run directories on disk, listing, retention, and the shared HTML layout.

Layout on disk (written by `frankli_sync.report.write_run_report`)::

    <reports_dir>/<tenant>/<safe_run_id>/report.json
                                         index.html          run summary
                                         validation/...      GX Data Docs

This module is light (standard library + jinja2, no pandas, no Airflow) so the
Airflow plugin in ``plugins/frankli_reports.py`` can import it in the API
server. Every page is rendered by jinja2 with autoescape on: names, UPNs and
values come from Entra and are untrusted. The pages carry no script at all and
a Content-Security-Policy that forbids scripts, so an escaping mistake still
cannot run code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2

log = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_HTML = "index.html"
DOCS_DIR = "validation"
DOCS_INDEX = f"{DOCS_DIR}/index.html"
TENANT_DIR = re.compile(r"^[a-z0-9][a-z0-9_]{0,62}$")  # config.TENANT_NAME
RUN_DIR = re.compile(r"^[A-Za-z0-9._-]{1,250}$")  # what safe_run_id produces


def safe_run_id(run_id: str) -> str:
    """A run id usable as a directory name (Airflow run ids hold ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)


def dag_id_for(tenant: str) -> str:
    return f"entra_to_frankli__{tenant}"


def tenant_for_dag(dag_id: str) -> str | None:
    prefix = "entra_to_frankli__"
    tenant = dag_id.removeprefix(prefix)
    return tenant if dag_id.startswith(prefix) and TENANT_DIR.match(tenant) else None


# --- listing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunEntry:
    """One run directory of a tenant, with the bits of its report.json the lists show."""

    tenant: str
    directory: str  # safe_run_id: the URL segment
    run_id: str
    generated_at: datetime
    status: str
    dry_run: bool
    counts: Mapping[str, int] = field(default_factory=dict)
    quarantined: int = 0
    orphaned: int = 0
    manager_problems: int = 0
    guard_blocked: bool = False
    has_docs: bool = False
    has_report: bool = True


def _utc(value: Any, fallback: datetime) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return fallback
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return fallback


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)


def read_run(tenant_dir: Path, directory: str) -> RunEntry | None:
    """The entry of one run directory (None when it is not a run directory)."""
    if not RUN_DIR.match(directory) or directory in {".", ".."}:
        return None
    run_dir = tenant_dir / directory
    if not run_dir.is_dir() or run_dir.is_symlink():
        return None
    has_docs = (run_dir / DOCS_INDEX).is_file()
    report_file = run_dir / REPORT_JSON
    try:
        report = json.loads(report_file.read_text())
        if not isinstance(report, dict):
            raise ValueError("not an object")
    except (OSError, ValueError):
        # A run whose report task has not (yet) written its summary: validation docs only.
        return RunEntry(
            tenant=tenant_dir.name,
            directory=directory,
            run_id=directory,
            generated_at=_mtime(run_dir),
            status="no report",
            dry_run=False,
            has_docs=has_docs,
            has_report=False,
        )
    guard = report.get("deletion_guard") or {}
    counts = report.get("counts") or {}
    return RunEntry(
        tenant=tenant_dir.name,
        directory=directory,
        run_id=str(report.get("run_id") or directory),
        generated_at=_utc(report.get("generated_at"), _mtime(report_file)),
        status=str(report.get("status") or "unknown"),
        dry_run=bool(report.get("dry_run")),
        counts={str(k): v for k, v in counts.items() if isinstance(v, int)},
        quarantined=len(report.get("quarantined") or []),
        orphaned=len(report.get("orphaned_references") or []),
        manager_problems=len(report.get("manager_problems") or []) + len(report.get("manager_cycles") or []),
        guard_blocked=bool(isinstance(guard, dict) and guard.get("blocked")),
        has_docs=has_docs,
    )


def list_runs(reports_dir: Path, tenant: str) -> list[RunEntry]:
    """The tenant's runs, newest first."""
    if not TENANT_DIR.match(tenant):
        return []
    tenant_dir = Path(reports_dir) / tenant
    if not tenant_dir.is_dir():
        return []
    entries = [read_run(tenant_dir, child.name) for child in tenant_dir.iterdir()]
    runs = [e for e in entries if e is not None]
    return sorted(runs, key=lambda e: (e.generated_at, e.directory), reverse=True)


def list_tenants(reports_dir: Path, configured: Iterable[str] = ()) -> list[str]:
    """Tenants with a report directory, plus the configured ones, sorted."""
    names = set(configured)
    root = Path(reports_dir)
    if root.is_dir():
        names |= {c.name for c in root.iterdir() if c.is_dir() and not c.is_symlink() and TENANT_DIR.match(c.name)}
    return sorted(n for n in names if TENANT_DIR.match(n))


def resolve_report_file(reports_dir: Path, tenant: str, directory: str, relative: str) -> Path | None:
    """The file `relative` of a run directory, or None if it does not exist or lies outside it.

    Refuses absolute paths, ``..`` segments, backslashes, NUL bytes, hidden files and any path
    (symlinks included) that resolves outside ``<reports_dir>/<tenant>/<directory>``.
    """
    if not TENANT_DIR.match(tenant) or not RUN_DIR.match(directory) or directory in {".", ".."}:
        return None
    if not relative or "\x00" in relative or "\\" in relative or relative.startswith("/"):
        return None
    parts = PurePosixPath(relative).parts
    if any(part in {"..", "."} or part.startswith(".") for part in parts):
        return None
    root = Path(reports_dir).resolve()
    run_dir = (root / tenant / directory).resolve()
    if not run_dir.is_relative_to(root / tenant):
        return None
    target = run_dir.joinpath(*parts).resolve()
    if not target.is_relative_to(run_dir) or not target.is_file():
        return None
    return target


# --- retention -------------------------------------------------------------------------------


def prune_runs(
    tenant_dir: Path,
    retention_days: float | None,
    *,
    keep: Iterable[str] = (),
    now: datetime | None = None,
) -> list[str]:
    """Delete the run directories of a tenant older than `retention_days`; return their names.

    A run's age is its report's ``generated_at`` (the directory's mtime for runs without a
    report). Directories in `keep` (the run being written) and anything that is not a run
    directory are left alone; `None` keeps everything.
    """
    if retention_days is None or not Path(tenant_dir).is_dir():
        return []
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    kept = set(keep)
    removed: list[str] = []
    for child in sorted(Path(tenant_dir).iterdir()):
        if child.name in kept:
            continue
        entry = read_run(Path(tenant_dir), child.name)
        if entry is None or entry.generated_at >= cutoff:
            continue
        try:
            shutil.rmtree(child)
        except OSError as error:  # another run pruning at the same time, permissions...
            log.warning("could not delete the expired report directory %s: %s", child, error)
            continue
        removed.append(child.name)
    if removed:
        log.info("deleted %d report(s) older than %s days under %s", len(removed), retention_days, tenant_dir)
    return removed


# --- HTML ------------------------------------------------------------------------------------

STYLE = """
:root { color-scheme: light dark; --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --bg: #fff;
  --alt: #f6f8fa; --bad: #b42318; --badbg: #fef3f2; --ok: #067647; --okbg: #ecfdf3; --warn: #93370d;
  --warnbg: #fffaeb; --link: #0969da; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9198a1; --line: #3d444d;
  --bg: #0d1117; --alt: #151b23; --bad: #ff7b72; --badbg: #3c1618; --ok: #56d364; --okbg: #12261e;
  --warn: #e3b341; --warnbg: #2e2210; --link: #4493f8; } }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); margin: 0; padding: 16px 24px 48px; }
a { color: var(--link); }
h1 { font-size: 22px; margin: 4px 0 8px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
nav.crumbs { font-size: 13px; color: var(--muted); margin-bottom: 8px; }
nav.crumbs a { margin-right: 4px; }
nav.links { display: flex; flex-wrap: wrap; gap: 8px; margin: 10px 0 4px; }
nav.links a { border: 1px solid var(--line); border-radius: 6px; padding: 4px 10px; text-decoration: none;
  background: var(--alt); }
table { border-collapse: collapse; margin: 6px 0; width: auto; max-width: 100%; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--alt); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td ul { margin: 0; padding-left: 18px; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px;
  overflow-wrap: anywhere; }
.badge { display: inline-block; border-radius: 10px; padding: 1px 8px; font-size: 12px; font-weight: 600;
  border: 1px solid currentColor; }
.ok { color: var(--ok); background: var(--okbg); }
.bad { color: var(--bad); background: var(--badbg); }
.warn { color: var(--warn); background: var(--warnbg); }
.muted { color: var(--muted); }
.box { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; margin: 8px 0; }
.box.bad, .box.warn, .box.ok { border-color: currentColor; }
.value { white-space: pre-wrap; overflow-wrap: break-word; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 6px 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
"""
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()

# No script source at all: inline and external scripts are both refused.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src '{STYLE_HASH}'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; object-src 'none'"
)
# The HTTP header adds what a <meta> policy cannot carry.
CONTENT_SECURITY_POLICY_HEADER = f"{CONTENT_SECURITY_POLICY}; frame-ancestors 'self'"
# GX Data Docs need inline scripts, and GX (1.x) writes unexpected values into them unescaped: a
# UPN "<script>...</script>" ends up as markup in the validation page. So they are served in a CSP
# sandbox: an opaque origin that cannot read Airflow's cookies or storage nor call its API with the
# user's session, may not open dialogs, popups or forms, and may not connect anywhere. What GX loads
# from CDNs is shipped with the plugin and served from this site (`frankli_sync.docs_assets`), so
# nothing may load from any other host: the pages work without internet and tell no CDN who reads them.
DATA_DOCS_POLICY = (
    "sandbox allow-scripts; default-src 'none'; "
    "script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "font-src 'self'; img-src 'self' data:; connect-src 'none'; "
    "base-uri 'self'; form-action 'none'; object-src 'none'; frame-ancestors 'self'"
)

LAYOUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="referrer" content="same-origin">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}{% endblock %}</title>
<style>{{ style|safe }}</style>
</head>
<body>
{% block body %}{% endblock %}
</body></html>
"""

TENANTS_PAGE = """{% extends "layout.html" %}
{% from "macros.html" import status_badge, run_links %}
{% block title %}Frankli sync reports{% endblock %}
{% block body %}
<h1>Frankli sync reports</h1>
<p class="muted">Validation and run reports of the Entra ID → Frankli sync, one DAG per tenant.
{% if retention_days is not none %}Reports older than {{ retention_days }} days are deleted.{% endif %}</p>
{% if error %}<div class="box bad">{{ error }}</div>{% endif %}
<table>
<tr><th>Tenant</th><th>DAG</th><th>Runs</th><th>Latest run</th><th>Status</th><th class="num">Quarantined</th>
<th>Latest reports</th></tr>
{% for row in rows %}
<tr>
<td><a href="{{ row.tenant|urlencode }}/">{{ row.tenant }}</a></td>
<td><code>{{ row.dag_id }}</code></td>
<td class="num">{{ row.runs }}</td>
{% if row.latest %}
<td><a href="{{ row.tenant|urlencode }}/{{ row.latest.directory|urlencode }}/"><code>{{ row.latest.run_id }}</code></a>
 <span class="muted">{{ row.latest.generated_at.strftime("%Y-%m-%d %H:%M UTC") }}</span></td>
<td>{{ status_badge(row.latest) }}</td>
<td class="num">{{ row.latest.quarantined }}</td>
<td>{{ run_links(row.tenant|urlencode ~ "/" ~ row.latest.directory|urlencode ~ "/", row.latest) }}</td>
{% else %}
<td colspan="4" class="muted">no reports yet</td>
{% endif %}
</tr>
{% else %}
<tr><td colspan="7" class="muted">No tenants you may see.</td></tr>
{% endfor %}
</table>
{% endblock %}
"""

RUNS_PAGE = """{% extends "layout.html" %}
{% from "macros.html" import status_badge, run_links %}
{% block title %}Frankli sync · {{ tenant }} · runs{% endblock %}
{% block body %}
<nav class="crumbs"><a href="../">All tenants</a> &rsaquo; {{ tenant }}</nav>
<h1>Runs of {{ tenant }}</h1>
<p class="muted">DAG <code>{{ dag_id }}</code> · {{ runs|length }} report(s), newest first.
{% if retention_days is not none %}Reports older than {{ retention_days }} days are deleted.{% endif %}</p>
<table>
<tr><th>Run</th><th>Written</th><th>Status</th>{% for kind in count_kinds %}<th class="num">{{ kind }}</th>{% endfor %}
<th class="num">quarantined</th><th class="num">orphaned refs</th><th class="num">manager problems</th>
<th>Reports</th></tr>
{% for run in runs %}
<tr>
<td>{% if run.has_report %}<a href="{{ run.directory|urlencode }}/"><code>{{ run.run_id }}</code></a>
{% else %}<code>{{ run.run_id }}</code>{% endif %}</td>
<td>{{ run.generated_at.strftime("%Y-%m-%d %H:%M:%S UTC") }}</td>
<td>{{ status_badge(run) }}</td>
{% for kind in count_kinds %}<td class="num">{{ run.counts.get(kind, 0) if run.has_report else "" }}</td>{% endfor %}
<td class="num">{{ run.quarantined }}</td><td class="num">{{ run.orphaned }}</td>
<td class="num">{{ run.manager_problems }}</td>
<td>{{ run_links(run.directory|urlencode ~ "/", run) }}</td>
</tr>
{% else %}
<tr><td colspan="{{ 7 + count_kinds|length }}" class="muted">No reports for this tenant yet.</td></tr>
{% endfor %}
</table>
{% endblock %}
"""

MESSAGE_PAGE = """{% extends "layout.html" %}
{% block title %}Frankli sync reports · {{ title }}{% endblock %}
{% block body %}
<nav class="crumbs"><a href="{{ home }}">All tenants</a></nav>
<h1>{{ title }}</h1>
<p>{{ message }}</p>
{% if link %}<p><a href="{{ link.href }}">{{ link.text }}</a></p>{% endif %}
{% endblock %}
"""

MACROS = """
{% macro status_badge(run) -%}
{%- if not run.has_report -%}<span class="badge warn">no report</span>
{%- elif run.status == "success" -%}<span class="badge ok">success</span>
{%- else -%}<span class="badge bad">{{ run.status }}</span>{%- endif -%}
{%- if run.dry_run %} <span class="badge warn">dry run</span>{% endif -%}
{%- if run.guard_blocked %} <span class="badge bad">deletion guard</span>{% endif -%}
{%- endmacro %}
{% macro run_links(base, run) -%}
{%- if run.has_report %}<a href="{{ base }}">summary</a> · <a href="{{ base }}report.json">report.json</a>{% endif -%}
{%- if run.has_docs %}{% if run.has_report %} · {% endif %}<a href="{{ base }}validation/index.html">Data Docs</a>
{%- endif -%}
{%- endmacro %}
"""

COUNT_KINDS = ("create", "update", "link", "restore", "archive")


def _environment(templates: Mapping[str, str]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.DictLoader({"layout.html": LAYOUT, "macros.html": MACROS, **templates}),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,  # reports written by older versions lack newer keys
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(style=STYLE, csp=CONTENT_SECURITY_POLICY)
    return env


def template_environment(extra: Mapping[str, str] | None = None) -> jinja2.Environment:
    """A jinja2 environment with autoescape, the shared layout, macros and the given templates."""
    return _environment(
        {"tenants.html": TENANTS_PAGE, "runs.html": RUNS_PAGE, "message.html": MESSAGE_PAGE, **(extra or {})}
    )


_ENV = template_environment()


def render_tenants_page(
    reports_dir: Path, tenants: Iterable[str], retention_days: float | None = None, error: str | None = None
) -> str:
    rows = []
    for tenant in tenants:
        runs = list_runs(reports_dir, tenant)
        latest = next((r for r in runs if r.has_report), runs[0] if runs else None)
        rows.append({"tenant": tenant, "dag_id": dag_id_for(tenant), "runs": len(runs), "latest": latest})
    return _ENV.get_template("tenants.html").render(rows=rows, retention_days=retention_days, error=error)


def render_runs_page(reports_dir: Path, tenant: str, retention_days: float | None = None) -> str:
    return _ENV.get_template("runs.html").render(
        tenant=tenant,
        dag_id=dag_id_for(tenant),
        runs=list_runs(reports_dir, tenant),
        count_kinds=COUNT_KINDS,
        retention_days=retention_days,
    )


def render_message_page(title: str, message: str, home: str, link: Mapping[str, str] | None = None) -> str:
    return _ENV.get_template("message.html").render(title=title, message=message, home=home, link=link)


DOCS_BANNER = (
    '<nav style="font:13px/1.6 system-ui,sans-serif;padding:6px 12px;background:#f6f8fa;'
    'border-bottom:1px solid #d0d7de;color:#1b1f24">'
    'Frankli sync · <a href="{run}">Run summary</a> · '
    '<a href="{json}">report.json</a> · '
    '<a href="{docs}">Data Docs home</a></nav>'
)


def add_docs_banner(page: str, depth: int) -> str:
    """GX Data Docs page `page`, `depth` directories below the run directory, with links back.

    The links are relative, so they work wherever the reports are served from.
    """
    up = "../" * depth
    banner = DOCS_BANNER.format(run=up, json=up + REPORT_JSON, docs=up + DOCS_INDEX)
    match = re.search(r"<body[^>]*>", page, flags=re.IGNORECASE)
    if not match:
        return banner + page
    return page[: match.end()] + banner + page[match.end() :]
