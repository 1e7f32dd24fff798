"""Airflow plugin: the Frankli sync run and validation reports inside the Airflow UI.

Registration (Airflow 3.1+, checked against 3.3's source):

- ``fastapi_apps``: ``airflow/api_fastapi/app.py::init_plugins`` mounts each ``app`` on the API
  server at ``url_prefix`` (``/frankli-reports``; ``/api/v2``, ``/ui``, ``/auth``... are reserved).
- ``external_views``: served to the React UI by ``GET /api/v2/plugins``. A ``destination: "nav"``
  view with ``category: "browse"`` is a "Browse" menu entry; the UI shows ``href`` in an iframe at
  ``/plugin/<url_route>``. The ``dag_run`` view is a tab on every DAG run page (``{DAG_ID}`` and
  ``{RUN_ID}`` are filled in by the UI). ``href`` is relative: the UI's ``<base href>`` is
  ``[api] base_url``, so it also works behind a reverse proxy with a path prefix.

Authentication: every route depends on ``airflow.api_fastapi.core_api.security.get_user``, the
dependency Airflow's own REST API uses: the ``Authorization: Bearer <JWT>`` header or the ``_token``
cookie the UI sets at login, validated by the configured auth manager. No valid token: 401 (an
HTML navigation without any credential is redirected to the auth manager's login page instead).
Authorization: a tenant's reports are shown to users the auth manager lets read the runs of the
tenant's DAG (``is_authorized_dag(method="GET", access_entity=DagAccessEntity.RUN)``).

GX Data Docs write directory values into their HTML unescaped, and Airflow's UI session token is a
JavaScript-readable cookie, so Data Docs are served in a CSP sandbox (opaque origin, no cookies,
no API access with the session). A sandboxed page's own link clicks carry no cookie either, so an
authenticated request for ``<run>/validation/...`` is redirected to ``/_docs/<signed link>/...``:
an HMAC (key derived from the API server's JWT signing key) over tenant, run and expiry, valid for
``DOCS_LINK_SECONDS``, granting read access to that one run's report files only.

The files GX's pages load from CDNs (jQuery, Bootstrap, bootstrap-table, Font Awesome...) are shipped
in ``frankli_reports_assets/`` beside this file: each page is rewritten as it is served to load them
from ``<signed link>/_vendor/<file>`` (``frankli_sync.docs_assets``), only the files listed there are
served, and the pages' CSP allows no other host, so Data Docs work on a network without internet.

Airflow's modules are imported inside the functions: task workers and the DAG processor load
plugins too, and must not pay for (or depend on) the API server's imports.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import mimetypes
import time
from pathlib import Path, PurePosixPath
from typing import Annotated, Any
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from frankli_sync import docs_assets
from frankli_sync import report_site as site
from frankli_sync.ui_links import REPORTS_PREFIX
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

URL_PREFIX = REPORTS_PREFIX
DOCS_LINK_SECONDS = 3600  # how long a signed Data Docs link stays valid
_bearer = HTTPBearer(auto_error=False)

REPORT_HEADERS = {
    "Content-Security-Policy": site.CONTENT_SECURITY_POLICY_HEADER,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
DOCS_HEADERS = {**REPORT_HEADERS, "Content-Security-Policy": site.DATA_DOCS_POLICY}
DATA_HEADERS = {**REPORT_HEADERS, "Content-Security-Policy": "default-src 'none'; sandbox"}
DOCS_ASSETS_DIR = Path(__file__).resolve().with_name("frankli_reports_assets")  # see docs_assets


# --- authentication and authorization ---------------------------------------------------------


async def airflow_user(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Any:
    """The Airflow user of the request, exactly as the core REST API resolves it (or 401/403)."""
    from airflow.api_fastapi.core_api.security import get_user

    return await get_user(request, None, bearer)


User = Annotated[Any, Depends(airflow_user)]


def may_read(user: Any, tenant: str) -> bool:
    """Whether the auth manager lets `user` read the runs of the tenant's DAG."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.configuration import conf

    dag_id = site.dag_id_for(tenant)
    team_name = None
    if conf.getboolean("core", "multi_team", fallback=False):
        from airflow.models.dag import DagModel

        team_name = DagModel.get_team_name(dag_id)
    return get_auth_manager().is_authorized_dag(
        method="GET",
        access_entity=DagAccessEntity.RUN,
        details=DagDetails(id=dag_id, team_name=team_name),
        user=user,
    )


def _require_tenant(user: Any, tenant: str) -> None:
    if not site.TENANT_DIR.match(tenant):
        raise HTTPException(404, f"no tenant {tenant!r}")
    if not may_read(user, tenant):
        raise HTTPException(403, f"you may not read the runs of {site.dag_id_for(tenant)}")


# --- settings ----------------------------------------------------------------------------------


def _settings() -> tuple[Path, list[str], int | None]:
    """reports_dir, configured tenant names and retention from the sync config in force."""
    from frankli_sync.config import ConfigError, load_config

    try:
        config = load_config()
    except ConfigError as error:
        raise HTTPException(500, f"the Frankli sync config could not be loaded: {error}") from error
    return config.reports_dir, [t.name for t in config.tenants], config.report_retention_days


# --- the app -----------------------------------------------------------------------------------

app = FastAPI(
    title="Frankli sync reports",
    description="Run and validation reports of the Entra ID to Frankli sync (Airflow plugin).",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


def _home(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/") + "/"


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    headers = {**(exc.headers or {}), **REPORT_HEADERS}
    if not _wants_html(request):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)
    login = None
    if exc.status_code in (401, 403) and not request.headers.get("authorization"):
        from airflow.api_fastapi.app import get_auth_manager

        login = get_auth_manager().get_url_login(next_url=str(request.url))
        if exc.status_code == 401:
            # A browser without a (valid) session: Airflow's login page, then back here.
            return RedirectResponse(login, status_code=303, headers={"Cache-Control": "no-store"})
    titles = {401: "Not logged in", 403: "Forbidden", 404: "Not found"}
    page = site.render_message_page(
        titles.get(exc.status_code, "Error"),
        str(exc.detail),
        home=_home(request),
        link={"href": login, "text": "Log in to Airflow again"} if login else None,
    )
    return HTMLResponse(page, status_code=exc.status_code, headers=headers)


def _html(page: str) -> HTMLResponse:
    return HTMLResponse(page, headers=REPORT_HEADERS)


@app.get("/", response_class=HTMLResponse)
def tenants(user: User) -> HTMLResponse:
    """All tenants the user may see, with their latest run."""
    reports_dir, configured, retention = _settings()
    visible = [t for t in site.list_tenants(reports_dir, configured) if may_read(user, t)]
    return _html(site.render_tenants_page(reports_dir, visible, retention))


@app.get("/_api/runs")
def runs_json(user: User) -> JSONResponse:
    """Tenants and their runs as JSON (for scripts): the same data as the pages."""
    reports_dir, configured, _ = _settings()
    body = {
        tenant: [
            {
                "run_id": run.run_id,
                "directory": run.directory,
                "generated_at": run.generated_at.isoformat(),
                "status": run.status,
                "dry_run": run.dry_run,
                "counts": dict(run.counts),
                "quarantined": run.quarantined,
                "guard_blocked": run.guard_blocked,
            }
            for run in site.list_runs(reports_dir, tenant)
        ]
        for tenant in site.list_tenants(reports_dir, configured)
        if may_read(user, tenant)
    }
    return JSONResponse(body, headers=DATA_HEADERS)


@app.get("/_dag-runs/{dag_id}/{run_id}")
def dag_run_report(dag_id: str, run_id: str, user: User) -> Response:
    """The report of one DAG run (the "Sync report" tab of a DAG run in the Airflow UI)."""
    tenant = site.tenant_for_dag(dag_id)
    if tenant is None:
        raise HTTPException(404, f"{dag_id} is not a Frankli sync DAG: it has no sync report")
    _require_tenant(user, tenant)
    reports_dir, _, _ = _settings()
    directory = site.safe_run_id(run_id)
    if site.resolve_report_file(reports_dir, tenant, directory, site.REPORT_JSON) is None:
        page = site.render_message_page(
            "No report yet",
            f"Run {run_id} of {tenant} has no report yet: it is written by the run's last task (report).",
            home="../../",
            link={"href": f"../../{tenant}/", "text": f"All runs of {tenant}"},
        )
        return HTMLResponse(page, status_code=404, headers=REPORT_HEADERS)
    return RedirectResponse(f"../../{tenant}/{directory}/", status_code=303)


@app.get("/_dags/{dag_id}")
def dag_reports(dag_id: str, user: User) -> Response:
    tenant = site.tenant_for_dag(dag_id)
    if tenant is None:
        raise HTTPException(404, f"{dag_id} is not a Frankli sync DAG: it has no sync reports")
    _require_tenant(user, tenant)
    return RedirectResponse(f"../{tenant}/", status_code=303)


# --- signed links for the sandboxed Data Docs -------------------------------------------------


@functools.cache
def _docs_key() -> bytes:
    """A key for the Data Docs links, derived from the API server's JWT signing key material.

    Every API server worker and replica shares it (as they must share the JWT key); a link
    signed by one is valid on the others.
    """
    from airflow.api_fastapi.auth.tokens import get_signing_key
    from airflow.configuration import conf

    key_path = conf.get("api_auth", "jwt_private_key_path", fallback=None)
    material = Path(key_path).read_bytes() if key_path else get_signing_key("api_auth", "jwt_secret").encode()
    return hmac.new(material, b"frankli-sync-reports: data docs links v1", hashlib.sha256).digest()


def _signature(tenant: str, directory: str, expires: int) -> str:
    mac = hmac.new(_docs_key(), f"{tenant}/{directory}/{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def docs_token(tenant: str, directory: str, now: float | None = None) -> str:
    """``<expiry>.<signature>``: read access to one run's report files until the expiry."""
    expires = int((now or time.time()) + DOCS_LINK_SECONDS)
    return f"{expires}.{_signature(tenant, directory, expires)}"


def docs_token_valid(token: str, tenant: str, directory: str, now: float | None = None) -> bool:
    expires, _, signature = token.partition(".")
    if not expires.isdigit() or int(expires) < (now or time.time()):
        return False
    return hmac.compare_digest(signature, _signature(tenant, directory, int(expires)))


def _require_docs_link(token: str, tenant: str, directory: str) -> None:
    if not (site.TENANT_DIR.match(tenant) and docs_token_valid(token, tenant, directory)):
        raise HTTPException(403, "this Data Docs link is invalid or expired: open it again from the run page")


@app.get(f"/_docs/{{token}}/{{tenant}}/{{directory}}/{docs_assets.ASSETS_SEGMENT}/{{name:path}}")
def signed_docs_asset(token: str, tenant: str, directory: str, name: str) -> Response:
    """A file GX's pages would load from a CDN, shipped with the plugin: only those listed, by exact name."""
    _require_docs_link(token, tenant, directory)
    asset = docs_assets.vendored_asset(name)
    if asset is None:
        raise HTTPException(404, f"{name!r} is not one of the files shipped for the Data Docs")
    path = DOCS_ASSETS_DIR / asset.path
    if not path.is_file():
        raise HTTPException(
            500, f"{path} is missing: deploy the folder {DOCS_ASSETS_DIR.name}/ beside {Path(__file__).name}"
        )
    headers = {**DATA_HEADERS, "Cache-Control": "private, max-age=3600"}
    if asset.cross_origin:  # a font, fetched in CORS mode by the sandboxed (opaque origin) page
        headers["Access-Control-Allow-Origin"] = "*"
    return FileResponse(path, media_type=asset.media_type, headers=headers)


@app.get("/_docs/{token}/{tenant}/{directory}/{relative:path}")
def signed_run_file(token: str, tenant: str, directory: str, relative: str) -> Response:
    """A run's report files through a signed link (what the sandboxed Data Docs navigate with)."""
    _require_docs_link(token, tenant, directory)
    return _serve_run_file(tenant, directory, relative or site.REPORT_HTML)


@app.get("/_docs/{token}/{tenant}/")
def signed_to_tenant(token: str, tenant: str, request: Request) -> Response:
    """Leaving the run through a signed link: back to the (login-protected) tenant's runs."""
    return RedirectResponse(f"{_home(request)}{tenant}/" if site.TENANT_DIR.match(tenant) else _home(request), 303)


@app.get("/_docs/{token}/")
def signed_to_home(token: str, request: Request) -> Response:
    return RedirectResponse(_home(request), 303)


@app.get("/{tenant}")
def tenant_no_slash(tenant: str, user: User) -> Response:
    _require_tenant(user, tenant)
    return RedirectResponse(f"{tenant}/", status_code=307)


@app.get("/{tenant}/", response_class=HTMLResponse)
def tenant_runs(tenant: str, user: User) -> HTMLResponse:
    """The tenant's runs, newest first."""
    _require_tenant(user, tenant)
    reports_dir, _, retention = _settings()
    return _html(site.render_runs_page(reports_dir, tenant, retention))


@app.get("/{tenant}/latest")
def latest_run(tenant: str, user: User) -> Response:
    _require_tenant(user, tenant)
    reports_dir, _, _ = _settings()
    latest = next((r for r in site.list_runs(reports_dir, tenant) if r.has_report), None)
    if latest is None:
        raise HTTPException(404, f"no reports for {tenant} yet")
    return RedirectResponse(f"{latest.directory}/", status_code=307)


@app.get("/{tenant}/{directory}")
def run_no_slash(tenant: str, directory: str, user: User) -> Response:
    _require_tenant(user, tenant)
    return RedirectResponse(f"{directory}/", status_code=307)


@app.get("/{tenant}/{directory}/")
def run_page(tenant: str, directory: str, user: User) -> Response:
    _require_tenant(user, tenant)
    return _serve_run_file(tenant, directory, site.REPORT_HTML)


@app.get("/{tenant}/{directory}/changes", response_class=HTMLResponse)
def run_changes_page(
    tenant: str, directory: str, user: User, q: str = "", action: str = "", page: int = 1
) -> HTMLResponse:
    """Who changed in the run: its changes.csv searched, filtered and paged on the server (no script)."""
    from frankli_sync import run_changes

    _require_tenant(user, tenant)
    reports_dir, _, _ = _settings()
    path = site.resolve_report_file(reports_dir, tenant, directory, run_changes.CHANGES_CSV)
    summary_path = site.resolve_report_file(reports_dir, tenant, directory, site.REPORT_JSON)
    if path is None or summary_path is None:
        raise HTTPException(404, f"run {directory} of {tenant} has no list of changes (written by its report task)")
    summary = json.loads(summary_path.read_text())
    chosen = run_changes.select_page(
        run_changes.read_changes(path.read_text()), q[:200], action if action in run_changes.ACTIONS else "", page
    )
    body = run_changes.render_changes_page(
        chosen, tenant=tenant, run_id=str(summary.get("run_id")), dry_run=bool(summary.get("dry_run")),
        query=q[:200], action=action if action in run_changes.ACTIONS else "",
    )  # fmt: skip
    return HTMLResponse(body, headers={**REPORT_HEADERS, "Content-Security-Policy": run_changes.CHANGES_HEADER_POLICY})


@app.get("/{tenant}/{directory}/{relative:path}")
def report_file(tenant: str, directory: str, relative: str, request: Request, user: User) -> Response:
    """A file of a run directory: the run page, report.json; Data Docs go through a signed link."""
    _require_tenant(user, tenant)
    if PurePosixPath(relative).parts[:1] == (site.DOCS_DIR,):
        # GX Data Docs are served sandboxed (see DATA_DOCS_POLICY); a sandboxed page's own links
        # carry no cookie, so they are served under a short-lived link signed for this run.
        reports_dir, _, _ = _settings()
        if site.resolve_report_file(reports_dir, tenant, directory, relative) is None:
            raise HTTPException(404, f"no file {relative!r} in the reports of run {directory} of {tenant}")
        target = f"_docs/{docs_token(tenant, directory)}/{tenant}/{directory}/{quote(relative)}"
        return RedirectResponse(_home(request) + target, status_code=303)
    return _serve_run_file(tenant, directory, relative)


def _serve_run_file(tenant: str, directory: str, relative: str) -> Response:
    reports_dir, _, _ = _settings()
    path = site.resolve_report_file(reports_dir, tenant, directory, relative)
    if path is None and relative == site.REPORT_HTML:
        # index.html missing (an interrupted write): render the page from report.json.
        summary = site.resolve_report_file(reports_dir, tenant, directory, site.REPORT_JSON)
        if summary is not None:
            from frankli_sync.report import render_html

            return _html(render_html(json.loads(summary.read_text())))
    if path is None:
        raise HTTPException(404, f"no file {relative!r} in the reports of run {directory} of {tenant}")
    parts = PurePosixPath(relative).parts
    if relative == site.REPORT_HTML:
        return FileResponse(path, media_type="text/html; charset=utf-8", headers=REPORT_HEADERS)
    if relative == site.REPORT_JSON:
        return FileResponse(path, media_type="application/json", headers=DATA_HEADERS)
    if parts[0] == site.DOCS_DIR and path.suffix == ".html":
        depth = len(parts) - 1
        page = docs_assets.localize_docs_assets(path.read_text(errors="replace"), depth)
        return HTMLResponse(site.add_docs_banner(page, depth=depth), headers=DOCS_HEADERS)
    if len(parts) == 1 and path.suffix == ".csv":  # changes.csv, quarantine.csv: downloads, never rendered
        return FileResponse(path, media_type="text/csv; charset=utf-8", filename=f"{tenant}-{directory}-{path.name}",
                            headers=DATA_HEADERS)  # fmt: skip
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers=DOCS_HEADERS)


class FrankliReportsPlugin(AirflowPlugin):
    """Frankli sync reports: a FastAPI app on the API server and its entries in the Airflow UI."""

    name = "frankli_reports"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Frankli sync reports"}]
    external_views = [
        {
            "name": "Frankli sync reports",
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "category": "browse",
            "url_route": "frankli-reports",
        },
        {
            "name": "Sync report",
            "href": URL_PREFIX.lstrip("/") + "/_dag-runs/{DAG_ID}/{RUN_ID}",
            "destination": "dag_run",
            "url_route": "frankli-run-report",
        },
    ]
