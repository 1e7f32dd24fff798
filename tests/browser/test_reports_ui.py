"""The run reports in the Airflow UI, checked in a real browser against a real `airflow api-server`.

One test, in steps (the API server takes ~30 s to migrate and start, so it is started once):

- reports for tenant ``contoso`` are written with `frankli_sync.report.write_run_report`: the
  validation document comes from the real GX suite (`validate_users`, with Data Docs), the plan
  and guard documents are crafted. One quarantined user is named ``<script>alert(1)</script>``;
  an expired run is pruned by the retention when the latest report is written;
- ``airflow api-server`` runs with its own AIRFLOW_HOME, the repository's ``plugins/`` and
  SimpleAuthManager with a known user;
- plain HTTP without a login is refused on every reports URL (401/403, or a redirect to the login
  page for a browser navigation), never the report;
- headless Chromium logs in through Airflow's login page, opens "Browse > Frankli sync reports",
  goes tenant > runs > latest run, and finds every quarantined user with each failed expectation
  and offending value; the script-tag user is shown as text: no alert, no script element;
- the Data Docs link and the links back work; Data Docs run sandboxed (no access to cookies).

Chromium: /usr/bin/chromium + /usr/bin/chromedriver (Debian's), installed by
scripts/install_chromium.sh when missing. Without them the test skips, or fails under CI=true.
The screenshot of the report page is saved to tests/browser/artifacts/report_page.png.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SCREENSHOT = ARTIFACTS / "report_page.png"
IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,2200",
)

TENANT = "contoso"
XSS = "<script>alert(1)</script>"
USERNAME = "reports-admin"
PASSWORD = secrets.token_urlsafe(16)
OLD_RUN = "scheduled__2026-01-01T06:00:00+00:00"
LATEST_RUN = "manual__2026-01-02T08:30:00+00:00"
EXPIRED_RUN = "scheduled__2025-01-01T06:00:00+00:00"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


# --- chromium ------------------------------------------------------------------------------


def _missing_browser() -> str | None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).is_file() and os.access(p, os.X_OK))]
    return ", ".join(missing) if missing else None


def require_chromium() -> None:
    """Chromium + chromedriver, installed with scripts/install_chromium.sh if needed."""
    if not _missing_browser():
        return
    try:
        result = subprocess.run(
            ["bash", str(REPO / "scripts" / "install_chromium.sh")],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        detail = f"install_chromium.sh exited {result.returncode}: {(result.stdout + result.stderr)[-1500:]}"
    except (OSError, subprocess.TimeoutExpired) as error:
        detail = f"install_chromium.sh could not run: {error}"
    missing = _missing_browser()
    if missing:
        message = f"no Chromium for the browser test (missing {missing}); {detail}"
        if IN_CI:
            pytest.fail(f"{message}; CI=true requires it")
        pytest.skip(message)


# --- the reports under test ----------------------------------------------------------------


def staged_users() -> Any:
    import pandas as pd

    base = {"account_enabled": True, "department": "Sales", "manager_id": "id-ada"}
    rows = [
        {"object_id": "id-ada", "user_principal_name": "ada@contoso.example", "mail": "ada@contoso.example",
         "given_name": "Ada", "surname": "Lovelace", "manager_id": None},
        {"object_id": "id-bob", "user_principal_name": "bob@contoso.example", "mail": "robert@contoso.example",
         "given_name": "Bob", "surname": "Stone"},
        {"object_id": "id-carol", "user_principal_name": "carol@contoso.example", "mail": "carol@contoso.example",
         "given_name": "   ", "surname": "King"},
        {"object_id": "id-xss", "user_principal_name": XSS, "mail": XSS, "given_name": XSS, "surname": XSS,
         "department": XSS},
    ]  # fmt: skip
    return pd.DataFrame([{**base, **row} for row in rows])


def write_reports(reports_dir: Path) -> dict[str, Any]:
    """An expired run, a clean older run, and the latest run (real GX validation, crafted plan)."""
    from frankli_sync.report import run_directory, write_run_report
    from frankli_sync.validation import validate_users

    params = {"dry_run": False, "full_sync": False, "allow_mass_archive": False, "only_user": None}
    tasks = {t: {"ok": True} for t in ("extract", "validate", "transform", "load_upserts", "load_archives")}

    expired = run_directory(reports_dir, TENANT, EXPIRED_RUN)
    expired.mkdir(parents=True)
    old_stamp = (datetime.now(UTC) - timedelta(days=400)).isoformat()
    (expired / "report.json").write_text(json.dumps({"run_id": EXPIRED_RUN, "generated_at": old_stamp}))

    clean_plan = {"counts": {"create": 3, "update": 0, "archive": 0}, "findings": {}, "actions": {}}
    write_run_report(
        run_directory(reports_dir, TENANT, OLD_RUN),
        tenant=TENANT,
        run_id=OLD_RUN,
        params=params,
        documents={"validation": {"checked": 3, "quarantined": [], "warnings": []}, "plan": clean_plan},
        applied={"create": 3},
        task_results=tasks,
        retention_days=None,
    )
    time.sleep(0.01)

    run_dir = run_directory(reports_dir, TENANT, LATEST_RUN)
    outcome = validate_users(staged_users(), docs_dir=run_dir / "validation", run_name=LATEST_RUN)
    validation = {
        "checked": outcome.checked,
        "quarantined": outcome.quarantined.to_dict("records"),
        "warnings": outcome.warnings.to_dict("records"),
        "failed_share": outcome.failed_share,
        "threshold_exceeded": False,
        "docs_index": str(outcome.docs_index),
    }
    plan = {
        "counts": {"entity_create": 1, "create": 1, "update": 1, "link": 0, "restore": 0, "archive": 40, "conflict": 1},
        "findings": {
            "orphaned_references": [
                {"external_id": "id-dave", "email": "dave@contoso.example", "field": "department",
                 "value": "Research <b>Lab</b>",
                 "action": "department 'Research <b>Lab</b>' was deleted in Frankli: set a new value in Entra"},
            ],
            "manager_problems": [
                {"external_id": "id-ada", "email": "ada@contoso.example", "manager_id": "id-gone",
                 "reason": "not_in_source"},
            ],
            "manager_cycles": [{"members": [["id-eve", "eve@contoso.example"], ["id-fay", "fay@contoso.example"]]}],
            "archived_in_frankli": [],
        },
        "actions": {
            "conflict": [
                {"external_id": "id-gus", "email": "gus@contoso.example",
                 "reason": "rehire_conflict: Frankli user with this email is linked to object id id-old, "
                 "which still exists in Entra"},
            ],
        },
    }  # fmt: skip
    guard = {
        "to_archive": 40,
        "limit": 10,
        "synced_users": 100,
        "staged_users": 104,
        "last_synced_users": 104,
        "allow_mass_archive": False,
        "blocked": True,
        "message": "deletion guard: this run would archive 40 users, more than the limit of 10; nothing was "
        'archived, upserts were applied. If this is expected, trigger the DAG again with {"allow_mass_archive": true}',
    }
    summary = write_run_report(
        run_dir,
        tenant=TENANT,
        run_id=LATEST_RUN,
        params=params,
        documents={"validation": validation, "plan": plan, "guard": guard},
        applied={"create": 1, "update": 1},
        task_results={**tasks, "load_archives": None},
        retention_days=30,
    )
    assert not expired.exists(), "the retention did not prune the expired run"
    return summary


# --- the API server ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """status, headers, body; redirects are not followed."""
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode(errors="replace")


def login_token(base_url: str) -> str:
    body = json.dumps({"username": USERNAME, "password": PASSWORD}).encode()
    request = urllib.request.Request(f"{base_url}/auth/token", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["access_token"]


def log_in(driver: Any, base: str) -> Any:
    """Log in through Airflow's login page; returns the wait used (it polls through pages replaced mid-read)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 60, ignored_exceptions=(StaleElementReferenceException, WebDriverException))
    driver.get(f"{base}/")
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(USERNAME)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(ec.element_to_be_clickable((By.XPATH, "//*[normalize-space(text())='Browse']")))
    return wait


class ApiServer:
    def __init__(self, workdir: Path, config: Path) -> None:
        self.home = workdir / "airflow"
        self.home.mkdir()
        (workdir / "dags").mkdir()
        passwords = workdir / "passwords.json"
        passwords.write_text(json.dumps({USERNAME: PASSWORD}))
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "api-server.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(workdir / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "FRANKLI_SYNC_CONFIG": str(config),
                "GX_ANALYTICS_ENABLED": "False",
            }
        )
        self.process: subprocess.Popen | None = None

    def migrate(self) -> None:
        result = subprocess.run(
            [AIRFLOW, "db", "migrate"], env=self.env, capture_output=True, text=True, timeout=600, check=False
        )
        assert result.returncode == 0, f"airflow db migrate failed:\n{(result.stdout + result.stderr)[-4000:]}"

    def start(self) -> None:
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its uvicorn workers go down with it
            )

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"airflow api-server exited {self.process.returncode}:\n{self.log_tail()}")
            try:
                if http_get(f"{self.base_url}/api/v2/monitor/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"airflow api-server did not answer within {timeout} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # the group of the server started above
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def prepare_metadata_db(server: ApiServer, request: pytest.FixtureRequest) -> None:
    """The server's own SQLite metadata DB: a copy of the session's migrated one, else `airflow db migrate`.

    tests/conftest.py migrates one DB per session for the DAG tests; copying it saves a migration.
    """
    try:
        session_home = Path(request.getfixturevalue("airflow_db"))
    except pytest.FixtureLookupError:
        session_home = None
    migrated = session_home / "airflow.db" if session_home else None
    if migrated is not None and migrated.is_file():
        shutil.copyfile(migrated, server.home / "airflow.db")
    else:
        server.migrate()


@pytest.fixture(scope="module")
def served_reports(request: pytest.FixtureRequest) -> Iterator[tuple[ApiServer, dict[str, Any]]]:
    """A running API server with the plugin, and the summary of the latest run it serves."""
    require_chromium()
    workdir = Path(tempfile.mkdtemp(prefix="frankli-reports-ui-"))
    reports_dir = workdir / "reports"
    config = workdir / "tenants.yaml"
    tenant = {
        "name": TENANT,
        "schedule": None,
        "source": {"kind": "csv", "path": "users.csv"},
        "target": {"kind": "database", "conn_id": "frankli_contoso", "organisation": "Contoso Ltd"},
    }
    config.write_text(json.dumps({"reports_dir": str(reports_dir), "report_retention_days": 30, "tenants": [tenant]}))
    server = ApiServer(workdir, config)
    started = time.monotonic()
    # The reports (GX takes a few seconds) are written while the metadata DB is migrated.
    written: dict[str, Any] = {}

    def _write() -> None:
        try:
            written["summary"] = write_reports(reports_dir)
            print(f"\nreports written in {time.monotonic() - started:.0f} s")
        except BaseException as error:
            written["error"] = error

    writer = threading.Thread(target=_write)
    writer.start()
    try:
        prepare_metadata_db(server, request)
    finally:
        writer.join(timeout=600)
    if "error" in written:
        raise written["error"]
    print(f"\nreports written and metadata DB migrated in {time.monotonic() - started:.0f} s")
    server.start()
    try:
        server.wait_ready()
        print(f"api-server ready after {time.monotonic() - started:.0f} s")
        yield server, written["summary"]
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(served_reports: tuple[ApiServer, dict[str, Any]]) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="frankli-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.unhandled_prompt_behavior = "ignore"  # an alert() must stay open for the test to see it
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# --- the test ------------------------------------------------------------------------------


def test_reports_in_the_airflow_ui(served_reports: tuple[ApiServer, dict[str, Any]], browser: Any) -> None:
    from frankli_sync.report import safe_run_id
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    server, summary = served_reports
    base = server.base_url
    run_url = f"{base}/frankli-reports/{TENANT}/{safe_run_id(LATEST_RUN)}/"
    quarantined = {q["user_principal_name"]: q for q in summary["quarantined"]}
    assert {"bob@contoso.example", "carol@contoso.example", XSS, "gus@contoso.example"} <= set(quarantined)

    # 1. Without a login, every reports URL is refused: plain HTTP, no cookie, no token.
    for url in (
        f"{base}/frankli-reports/",
        f"{base}/frankli-reports/{TENANT}/",
        f"{base}/frankli-reports/{TENANT}/latest",
        run_url,
        f"{run_url}report.json",
        f"{run_url}validation/index.html",
        f"{base}/frankli-reports/_dag-runs/entra_to_frankli__{TENANT}/{LATEST_RUN}",
    ):
        status, _, body = http_get(url)
        assert status in (401, 403), f"{url} answered {status} without a login"
        assert "bob@contoso.example" not in body and "quarantined" not in body
        status, headers, body = http_get(url, {"Accept": "text/html"})
        assert status in (302, 303, 307) and "/auth/login" in headers.get("location", ""), (url, status)
        assert "bob@contoso.example" not in body
        status, _, body = http_get(url, {"Authorization": "Bearer not-a-valid-jwt"})
        assert status in (401, 403) and "bob@contoso.example" not in body, (url, status)

    # With Airflow's JWT: the report, its CSP header, and path traversal refused.
    token = login_token(base)
    status, headers, body = http_get(run_url, {"Authorization": f"Bearer {token}"})
    assert status == 200 and "bob@contoso.example" in body
    csp = headers.get("content-security-policy", "")
    assert "default-src 'none'" in csp and "script-src" not in csp and "unsafe-inline" not in csp, csp
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and XSS not in body
    for sneaky in ("..%2F..%2F..%2Fetc%2Fpasswd", "validation/..%2F..%2F..%2F..%2Fetc%2Fpasswd", ".%2E/.%2E/x"):
        status, _, body = http_get(run_url + sneaky, {"Authorization": f"Bearer {token}"})
        assert status == 404 and "root:" not in body, (sneaky, status)
    status, headers, _ = http_get(f"{run_url}validation/index.html", {"Authorization": f"Bearer {token}"})
    assert status == 303 and "/frankli-reports/_docs/" in headers["location"], (status, headers)
    docs_csp = http_get(base + headers["location"])[1].get("content-security-policy", "")
    assert docs_csp.startswith("sandbox allow-scripts;") and "allow-same-origin" not in docs_csp, docs_csp
    forged = headers["location"].replace("/_docs/", "/_docs/1", 1)
    assert http_get(base + forged)[0] == 403
    status, headers, _ = http_get(
        f"{base}/frankli-reports/_dag-runs/entra_to_frankli__{TENANT}/{LATEST_RUN}",
        {"Authorization": f"Bearer {token}"},
    )
    assert status == 303 and headers["location"].endswith(f"/{TENANT}/{safe_run_id(LATEST_RUN)}/")

    # 2. Log in through Airflow's login page.
    # A page replaced while a condition reads it answers "stale element" or, from Chromium's inspector, "Node with
    # given id does not belong to the document" (a plain WebDriverException): both mean "not there yet", so poll on.
    wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException, WebDriverException))
    browser.get(f"{base}/")
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(USERNAME)
    assert "/auth/login" in browser.current_url
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    # 3. Browse > Frankli sync reports: the plugin's view in the Airflow UI (an iframe).
    wait.until(ec.element_to_be_clickable((By.XPATH, "//*[normalize-space(text())='Browse']"))).click()
    wait.until(ec.element_to_be_clickable((By.XPATH, "//*[normalize-space(text())='Frankli sync reports']"))).click()
    wait.until(lambda d: "/plugin/frankli-reports" in d.current_url)
    frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[title='Frankli sync reports']")))
    browser.switch_to.frame(frame)
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Frankli sync reports"))
    browser.find_element(By.LINK_TEXT, TENANT).click()
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), f"Runs of {TENANT}"))
    runs_text = browser.find_element(By.TAG_NAME, "body").text
    assert LATEST_RUN in runs_text and OLD_RUN in runs_text and EXPIRED_RUN not in runs_text
    assert runs_text.index(LATEST_RUN) < runs_text.index(OLD_RUN), "runs are not newest first"
    browser.find_element(By.LINK_TEXT, LATEST_RUN).click()
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), f"Sync run · {TENANT}"))

    # 4. The latest run's page: quarantined users with each failed expectation and offending value.
    text = browser.find_element(By.TAG_NAME, "body").text
    assert f"Quarantined users ({len(summary['quarantined'])})" in text
    for upn, entry in quarantined.items():
        assert upn in text, f"quarantined user {upn!r} is not shown"
        for reason in entry["reasons"]:
            assert reason["expectation"] in text, f"reason {reason['expectation']} of {upn} is not shown"
            if reason.get("value"):
                assert reason["value"] in text, f"offending value {reason['value']!r} of {upn} is not shown"
    assert "UPN bob@contoso.example ≠ mail robert@contoso.example" in text
    assert "required:given_name" in text
    assert "Research <b>Lab</b>" in text  # orphaned reference, as text
    assert "eve@contoso.example" in text and "fay@contoso.example" in text  # manager cycle
    assert "not among the synced Entra users" in text  # manager problem, explained
    assert "Blocked." in text and "allow_mass_archive" in text  # deletion guard
    assert "load_archives" in text  # incomplete task

    # 5. The script-tag user is text: visible, no script element, no alert.
    assert text.count(XSS) >= 3, "the <script> name/UPN is not shown as text"
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.find_elements(By.TAG_NAME, "b") == []
    try:
        WebDriverWait(browser, 1.5).until(ec.alert_is_present())
        pytest.fail("an alert fired: directory data ran as script")
    except TimeoutException:
        pass

    browser.switch_to.default_content()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    print(f"\nscreenshot of the report page: {SCREENSHOT}")

    # 6. Links: run page -> Data Docs (sandboxed, through a signed link) -> run page -> runs -> report.json.
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe[title='Frankli sync reports']"))
    browser.find_element(By.LINK_TEXT, "Validation report (GX Data Docs)").click()
    wait.until(ec.presence_of_element_located((By.LINK_TEXT, "Run summary")))
    assert "Data Docs" in browser.find_element(By.TAG_NAME, "body").text
    cookie_access = browser.execute_script("try { return 'readable:' + document.cookie } catch (e) { return e.name }")
    assert cookie_access == "SecurityError", f"Data Docs are not sandboxed: {cookie_access}"
    browser.find_element(By.LINK_TEXT, "Run summary").click()
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), f"Sync run · {TENANT}"))
    browser.find_element(By.LINK_TEXT, f"All runs of {TENANT}").click()
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), f"Runs of {TENANT}"))
    browser.find_elements(By.LINK_TEXT, "report.json")[0].click()
    wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), '"quarantined"'))
    report = json.loads(browser.find_element(By.TAG_NAME, "body").text)
    assert report["run_id"] == LATEST_RUN and report["links"]["validation_docs"] == "validation/index.html"
    browser.switch_to.default_content()
