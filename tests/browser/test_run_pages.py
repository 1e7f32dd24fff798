"""Issue #12: who changed, the CSV download and a failed run's cause, in Chromium against a real api-server.

A tenant is synced for real (`dag.test()`): day 1 creates everyone; on day 2 one user gets a new
title and manager and loses the mobile number, one is disabled; a third run fails at the extract
(the Graph listing ends early). `airflow api-server` with the reports plugin serves the tenant's
reports. An admin logs in through Airflow's login page and:

- on day 2's run page finds the changed user with each field as before → after and both managers by
  name and address, and the disabled user with the reason;
- opens *Search and filter*, searches the changed user's address and gets exactly that row;
- downloads changes.csv through the page's link and finds the same row in the file;
- on the failed run's page reads the extract's own message as the cause, the later tasks as not run
  because of it, and "not evaluated" instead of counts.

Screenshots: tests/browser/artifacts/run_page_changes.png, changes_search.png, failed_run.png.
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_reports_ui as ui
from graph_emulator import FaultPlan, FaultRule
from synced_tenant import make_tenant

__all__ = ["make_tenant"]  # the fixture, shared with tests/integration
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ENDS_EARLY = FaultPlan([FaultRule(path_prefix="/v1.0/users/delta", ends_early=True, ordinals=[2])])


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """Headless Chromium that saves downloads to a directory of the test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    ui.require_chromium()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = ui.CHROMIUM
    for flag in ui.CHROME_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="frankli-chromium-pages-")
    options.add_argument(f"--user-data-dir={profile}")
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    driver = webdriver.Chrome(service=Service(ui.CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield driver, downloads
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def synced_with_a_failure(make_tenant: Any) -> tuple[Any, dict[str, Any]]:
    tenant = make_tenant(users=150, seed=4, source={"kind": "graph", "conn_id": "msgraph_acme", "page_size": 100})
    directory = tenant.directory
    tenant.run()
    day1 = tenant.users()
    members = [u for u in directory.users_sorted() if u["id"] in day1]
    mover = next(u for u in members if directory.manager_of(u["id"]) in day1 and u.get("mobilePhone"))
    old_manager = day1[directory.manager_of(mover["id"])]
    new_manager = next(u for u in members if u["id"] not in {mover["id"], old_manager["external_id"]})
    leaver = next(u for u in members if u["id"] not in {mover["id"], new_manager["id"], old_manager["external_id"]})
    directory.update_user(mover["id"], manager_id=new_manager["id"], jobTitle="Head of Widgets", mobilePhone=None)
    directory.update_user(leaver["id"], accountEnabled=False)
    tenant.run()
    changed_run = tenant.runs[-1].run_id
    tenant.emulator.faults = ENDS_EARLY
    tenant.run(conf={"full_sync": True}, expect="failed")
    tenant.emulator.faults = None
    users = tenant.users()
    return tenant, {
        "changed_run": changed_run,
        "failed_run": tenant.runs[-1].run_id,
        "mover": users[mover["id"]],
        "old_manager": old_manager,
        "new_manager": users[new_manager["id"]],
        "leaver": users[leaver["id"]],
    }


def person(user: dict[str, Any]) -> str:
    return f"{user['first_name']} {user['last_name']} <{user['email']}>"


def screenshot(driver: Any, name: str) -> None:
    ui.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ui.ARTIFACTS / name))


def test_who_changed_the_csv_and_the_failed_runs_cause(
    make_tenant: Any, chromium: tuple[Any, Path], request: pytest.FixtureRequest
) -> None:
    from frankli_sync.report import safe_run_id
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    tenant, facts = synced_with_a_failure(make_tenant)
    (tenant.workdir / "api").mkdir()
    server = ui.ApiServer(tenant.workdir / "api", tenant.config_path)
    ui.prepare_metadata_db(server, request)
    server.start()
    driver, downloads = chromium
    try:
        server.wait_ready()
        wait = ui.log_in(driver, server.base_url)
        reports = f"{server.base_url}/frankli-reports/{tenant.name}"
        mover, leaver = facts["mover"], facts["leaver"]

        # 1. The run page: who changed, field by field, managers by name and address.
        driver.get(f"{reports}/{safe_run_id(facts['changed_run'])}/")
        wait.until(ec.text_to_be_present_in_element((By.ID, "changes"), "Who changed"))
        rows = {r.text for r in driver.find_elements(By.CSS_SELECTOR, "h2#changes + p + table tr")}
        moved = next(r for r in rows if mover["email"] in r)
        assert "role: " in moved and "→ head of widgets" in moved
        assert f"manager: {person(facts['old_manager'])} → {person(facts['new_manager'])}" in moved
        assert "mobile phone: " in moved and "→ (empty)" in moved
        assert any(leaver["email"] in r and "reason: disabled" in r for r in rows)
        entra = driver.find_element(By.CSS_SELECTOR, f"a[title='{mover['external_id']}']").get_attribute("href")
        assert entra.endswith(f"/UserProfileMenuBlade/~/overview/userId/{mover['external_id']}")
        screenshot(driver, "run_page_changes.png")

        # 2. Search and filter: the changed user's address finds exactly that row.
        driver.find_element(By.PARTIAL_LINK_TEXT, "Search and filter").click()
        wait.until(ec.presence_of_element_located((By.NAME, "q"))).send_keys(mover["email"])
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "1 matching"))
        found = driver.find_elements(By.CSS_SELECTOR, "table tr")[1:]
        assert len(found) == 1 and mover["email"] in found[0].text and "head of widgets" in found[0].text
        screenshot(driver, "changes_search.png")

        # 3. The CSV download, through the page's own link.
        driver.find_element(By.PARTIAL_LINK_TEXT, "Download CSV").click()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(downloads.glob("*changes.csv")):
            time.sleep(0.2)
        (saved,) = downloads.glob("*changes.csv")
        rows_csv = list(csv.DictReader(io.StringIO(saved.read_text())))
        update = next(r for r in rows_csv if r["object_id"] == mover["external_id"])
        assert update["action"] == "update" and f"→ {person(facts['new_manager'])}" in update["details"]
        assert any(r["object_id"] == leaver["external_id"] and r["action"] == "archive" for r in rows_csv)

        # 4. The failed run: the extract's own message is the cause; the rest did not run because of it.
        driver.get(f"{reports}/{safe_run_id(facts['failed_run'])}/")
        wait.until(ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "extract failed"))
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "returned 100 users but Graph reports" in body
        assert body.count("not run: an earlier task failed") == 4
        assert "not evaluated" in body and "These tasks did not succeed" not in body
        screenshot(driver, "failed_run.png")
    finally:
        server.stop()
