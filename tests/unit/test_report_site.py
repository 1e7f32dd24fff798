"""Run reports: HTML escaping, report.json keys, listing, path-traversal protection, retention."""

from __future__ import annotations

import importlib.util
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from frankli_sync import report_site as site
from frankli_sync.config import ConfigError, parse_config
from frankli_sync.report import render_html, run_directory, write_run_report

pytestmark = pytest.mark.unit

XSS = "<script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'
PARAMS = {"dry_run": False, "full_sync": False, "allow_mass_archive": False, "only_user": None}
TASKS = {t: {} for t in ("extract", "validate", "transform", "load_upserts", "load_archives")}
REPO = Path(__file__).resolve().parents[2]


def documents(dry_run: bool = False) -> dict[str, Any]:
    reason = {"expectation": "upn_format", "column": "user_principal_name", "value": IMG, "severity": "critical"}
    return {
        "validation": {
            "checked": 10,
            "quarantined": [{"object_id": XSS, "user_principal_name": XSS, "reasons": [reason]}],
            "warnings": [
                {"object_id": "w1", "user_principal_name": IMG, "reasons": [{**reason, "severity": "warning"}]}
            ],
            "failed_share": 0.1,
            "threshold_exceeded": False,
            "docs_index": None,
        },
        "plan": {
            "counts": {"create": 1, "update": 0, "archive": 0, "conflict": 1},
            "findings": {
                "orphaned_references": [
                    {"external_id": "o1", "email": IMG, "field": "department", "value": XSS, "action": f"dept {XSS}"}
                ],
                "manager_problems": [{"external_id": "m1", "email": XSS, "manager_id": IMG, "reason": XSS}],
                "manager_cycles": [{"members": [["c1", XSS], ["c2", IMG]]}],
                "archived_in_frankli": [{"external_id": "a1", "email": XSS}],
            },
            "actions": {
                "create": [{"external_id": "n1", "email": XSS, "department": IMG}],
                "conflict": [{"external_id": "x1", "email": IMG, "reason": f"rehire_conflict {XSS}"}],
            },
        },
        "guard": {"blocked": True, "message": f"blocked {XSS}", "to_archive": 5, "limit": 1},
    }


def write(run_dir: Path, dry_run: bool = False, retention: float | None = None, **kwargs: Any) -> dict[str, Any]:
    return write_run_report(
        run_dir,
        tenant="contoso",
        run_id=kwargs.pop("run_id", f"manual__2026-01-01T00:00:00+00:00{XSS}"),
        params={**PARAMS, "dry_run": dry_run, "only_user": XSS},
        documents=documents(dry_run),
        applied={"create": 1},
        task_results=TASKS,
        retention_days=retention,
        **kwargs,
    )


def test_every_piece_of_directory_data_is_escaped(tmp_path: Path) -> None:
    for dry_run in (False, True):
        run_dir = tmp_path / str(dry_run)
        write(run_dir, dry_run=dry_run)
        page = (run_dir / "index.html").read_text()
        assert "<script" not in page.lower() and "<img" not in page.lower()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in page
        assert 'http-equiv="Content-Security-Policy"' in page and "default-src &#39;none&#39;" in page
        if dry_run:
            assert "Dry-run plan" in page and "rehire_conflict &lt;script&gt;" in page


def test_report_json_keeps_its_keys_and_adds_links(tmp_path: Path) -> None:
    summary = write(tmp_path / "run")
    stored = json.loads((tmp_path / "run" / "report.json").read_text())
    for key in (
        "tenant", "run_id", "params", "dry_run", "status", "incomplete_tasks", "counts", "planned", "quarantined",
        "validation", "orphaned_references", "manager_problems", "manager_cycles", "archived_in_frankli",
        "deletion_guard", "plan", "generated_at", "links", "warnings",
    ):  # fmt: skip
        assert key in stored, key
    assert stored["counts"]["quarantine"] == 2  # the quarantined user and the conflict
    assert stored["links"] == {
        "html": "index.html",
        "json": "report.json",
        "validation_docs": None,
        "runs": "../",
        "changes": "changes",
        "changes_csv": "changes.csv",
        "quarantine_csv": "quarantine.csv",
    }
    assert summary["report_path"].endswith("report.json")
    assert datetime.fromisoformat(stored["generated_at"]).tzinfo is not None


def test_long_lists_are_cut_on_the_page_and_kept_whole_in_the_files(tmp_path: Path) -> None:
    """20,000 quarantined users: the page shows the first rows and says where all of them are."""
    from frankli_sync.report import LIST_ROWS_SHOWN

    docs = documents()
    reason = docs["validation"]["quarantined"][0]["reasons"][0]
    many = LIST_ROWS_SHOWN + 7
    docs["validation"]["quarantined"] = [
        {"object_id": f"q{n:05d}", "user_principal_name": f"u{n:05d}@x", "reasons": [reason]} for n in range(many)
    ]
    docs["validation"]["warnings"] = [
        {"object_id": f"w{n:05d}", "user_principal_name": f"w{n:05d}@x", "reasons": [reason]} for n in range(many)
    ]
    run_dir = tmp_path / "run"
    write_run_report(
        run_dir, tenant="contoso", run_id="r1", params=PARAMS, documents=docs, applied={}, task_results=TASKS,
        retention_days=None,
    )  # fmt: skip
    page = (run_dir / "index.html").read_text()
    assert f"u{LIST_ROWS_SHOWN - 1:05d}@x" in page and f"u{LIST_ROWS_SHOWN:05d}@x" not in page
    assert f"w{LIST_ROWS_SHOWN - 1:05d}@x" in page and f"w{LIST_ROWS_SHOWN:05d}@x" not in page
    assert f"Quarantined users ({many + 1})" in page  # the count is of all (the plan's conflict included)
    assert f'The first {LIST_ROWS_SHOWN} of {many + 1} are shown: <a href="quarantine.csv">' in page
    assert f'The first {LIST_ROWS_SHOWN} of {many} are shown: <a href="report.json">' in page
    stored = json.loads((run_dir / "report.json").read_text())
    assert len(stored["quarantined"]) == many + 1 and len(stored["warnings"]) == many
    assert (run_dir / "quarantine.csv").read_text().count("@x") == many


def test_render_html_accepts_reports_written_before_the_new_keys() -> None:
    old = {
        "tenant": "contoso", "run_id": "r1", "params": {}, "dry_run": False, "status": "success",
        "incomplete_tasks": [], "counts": {"create": 2}, "planned": {"create": 2}, "quarantined": [],
        "validation": {"checked": 2, "docs_index": "/x/validation/index.html"}, "orphaned_references": [],
        "manager_problems": [], "manager_cycles": [], "archived_in_frankli": [], "deletion_guard": None,
        "plan": None,
    }  # fmt: skip
    page = render_html(old)
    assert "Sync run · contoso" in page and 'href="validation/index.html"' in page


def _run(tenant_dir: Path, name: str, age_days: float, now: datetime) -> Path:
    run_dir = tenant_dir / name
    run_dir.mkdir(parents=True)
    stamp = (now - timedelta(days=age_days)).isoformat()
    (run_dir / "report.json").write_text(json.dumps({"run_id": name, "generated_at": stamp, "status": "success"}))
    return run_dir


def test_prune_runs_deletes_only_expired_run_directories(tmp_path: Path) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    tenant = tmp_path / "contoso"
    _run(tenant, "old", 40, now)
    _run(tenant, "recent", 5, now)
    _run(tenant, "current", 400, now)
    (tenant / "not a run").mkdir()  # not a run directory name: never touched
    assert site.prune_runs(tenant, None, now=now) == []
    assert site.prune_runs(tenant, 30, keep={"current"}, now=now) == ["old"]
    assert sorted(p.name for p in tenant.iterdir()) == ["current", "not a run", "recent"]


def test_write_run_report_prunes_with_the_configured_retention(tmp_path: Path, monkeypatch) -> None:
    reports = tmp_path / "reports"
    config = tmp_path / "tenants.yaml"
    config.write_text(
        json.dumps(
            {
                "reports_dir": str(reports),
                "report_retention_days": 7,
                "tenants": [{"name": "contoso", "source": {"kind": "csv", "path": "u.csv"},
                             "target": {"kind": "database", "conn_id": "f", "organisation": "C"}}],
            }
        )
    )  # fmt: skip
    monkeypatch.setenv("FRANKLI_SYNC_CONFIG", str(config))
    expired = _run(reports / "contoso", "scheduled__old", 8, datetime.now(UTC))
    kept = _run(reports / "contoso", "scheduled__new", 6, datetime.now(UTC))
    write_run_report(
        run_directory(reports, "contoso", "manual__now"),
        tenant="contoso",
        run_id="manual__now",
        params=PARAMS,
        documents={},
        applied={},
        task_results={},
    )
    assert not expired.exists() and kept.exists()


def test_report_retention_days_config() -> None:
    base = {"tenants": [{"name": "t", "source": {"kind": "csv", "path": "u.csv"},
                         "target": {"kind": "database", "conn_id": "f", "organisation": "C"}}]}  # fmt: skip
    assert parse_config(base).report_retention_days == 90
    assert parse_config({**base, "report_retention_days": None}).report_retention_days is None
    assert parse_config({**base, "report_retention_days": 14}).report_retention_days == 14
    for bad in (0, -1, "30", 1.5, True):
        with pytest.raises(ConfigError, match="report_retention_days"):
            parse_config({**base, "report_retention_days": bad})


def test_listing_runs_newest_first_and_tenants(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    _run(tmp_path / "contoso", "a", 2, now)
    _run(tmp_path / "contoso", "b", 1, now)
    (tmp_path / "contoso" / "c" / "validation").mkdir(parents=True)  # docs only, no report yet
    (tmp_path / "Bad-Name").mkdir()
    assert [r.directory for r in site.list_runs(tmp_path, "contoso")][1:] == ["b", "a"]
    assert site.list_tenants(tmp_path, ["fabrikam"]) == ["contoso", "fabrikam"]
    assert site.list_runs(tmp_path, "../etc") == []
    page = site.render_runs_page(tmp_path, "contoso", 30)
    assert page.index('href="b/"') < page.index('href="a/"')


def test_resolve_report_file_refuses_to_leave_the_run_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "reports" / "contoso" / "run1"
    (run_dir / "validation" / "sub").mkdir(parents=True)
    (run_dir / "report.json").write_text("{}")
    (run_dir / "validation" / "sub" / "page.html").write_text("<p>")
    (run_dir / ".hidden").write_text("x")
    (tmp_path / "secret.txt").write_text("secret")
    (tmp_path / "reports" / "contoso" / "other").mkdir()
    (tmp_path / "reports" / "contoso" / "other" / "report.json").write_text("{}")
    os.symlink(tmp_path / "secret.txt", run_dir / "validation" / "link.txt")
    reports = tmp_path / "reports"
    assert site.resolve_report_file(reports, "contoso", "run1", "report.json") == (run_dir / "report.json").resolve()
    assert site.resolve_report_file(reports, "contoso", "run1", "validation/sub/page.html") is not None
    for tenant, directory, relative in [
        ("contoso", "run1", "../other/report.json"),
        ("contoso", "run1", "../../../secret.txt"),
        ("contoso", "run1", "validation/../../other/report.json"),
        ("contoso", "run1", "/etc/passwd"),
        ("contoso", "run1", "validation\\..\\..\\other\\report.json"),
        ("contoso", "run1", "validation/link.txt"),  # symlink out of the run directory
        ("contoso", "run1", ".hidden"),
        ("contoso", "run1", "report.json\x00.html"),
        ("contoso", "run1", ""),
        ("contoso", "..", "contoso/run1/report.json"),
        ("..", "reports", "contoso/run1/report.json"),
        ("contoso", "run1", "missing.html"),
    ]:
        assert site.resolve_report_file(reports, tenant, directory, relative) is None, (tenant, directory, relative)


def test_data_docs_banner_links_back_relative_to_the_page() -> None:
    page = site.add_docs_banner("<html><body class='x'><p>GX</p></body></html>", depth=3)
    assert "<body class='x'><nav" in page
    assert 'href="../../../"' in page and 'href="../../../report.json"' in page
    assert 'href="../../../validation/index.html"' in page


def _plugin() -> Any:
    spec = importlib.util.spec_from_file_location("frankli_reports_plugin", REPO / "plugins" / "frankli_reports.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plugin_registration_and_signed_docs_links() -> None:
    plugin = _plugin()
    registered = plugin.FrankliReportsPlugin
    assert registered.fastapi_apps[0]["url_prefix"] == "/frankli-reports"
    nav = registered.external_views[0]
    assert nav["destination"] == "nav" and nav["category"] == "browse" and not nav["href"].startswith("/")
    token = plugin.docs_token("contoso", "run1", now=1_000)
    assert plugin.docs_token_valid(token, "contoso", "run1", now=1_500)
    assert not plugin.docs_token_valid(token, "contoso", "run2", now=1_500)  # another run
    assert not plugin.docs_token_valid(token, "fabrikam", "run1", now=1_500)
    assert not plugin.docs_token_valid(token, "contoso", "run1", now=1_000 + plugin.DOCS_LINK_SECONDS + 1)
    expires, _, signature = token.partition(".")
    assert not plugin.docs_token_valid(f"{int(expires) + 9999}.{signature}", "contoso", "run1", now=1_500)
    assert not plugin.docs_token_valid("garbage", "contoso", "run1", now=1_500)
