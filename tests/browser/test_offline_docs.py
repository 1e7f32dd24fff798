"""GX Data Docs on a network without internet, in a real browser against a real `airflow api-server`.

The API server, its plugin and the reports are those of test_reports_ui.py (its ``served_reports``
fixture: the latest run's Data Docs come from the real GX suite, one quarantined user per failing
rule). Chromium runs with every request that does not go to the API server blocked twice over:
DevTools' ``Network.setBlockedURLs`` and a proxy that does not exist for every host but loopback.
Every request a page makes is recorded from DevTools' Network events (the performance log), and
every request the page's CSP refused from the console.

An admin logs in through Airflow's login page and opens the run's validation report:

- the index is styled by the shipped Bootstrap (computed styles), its results table is filled in
  (by the shipped bootstrap-table) with the run and a visible failed icon (the shipped Font Awesome
  font is loaded and draws it);
- a click on the row opens the validation result: one row per expectation of the suite, each with
  the pass or fail icon its verdict calls for, drawn;
- the pages stay sandboxed (no cookies), and the shipped files are only served under the signed link;
- no request left for another host.

Screenshots: tests/browser/artifacts/offline_docs_index.png and offline_docs_validation.png.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import test_reports_ui as ui

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# The API server with the plugin and the reports (a module fixture of test_reports_ui.py, shared here).
served_reports = ui.served_reports

INDEX_ROWS = "table.ge-index-page-validation-results-table tbody tr[data-index]"
PAGE_LOAD_SECONDS = 60
# Console messages of requests the page's Content-Security-Policy refused: "Refused to load ... 'URL' ...".
REFUSED = re.compile(r"Refused to (?:load|connect to|frame|execute script from|apply style from)[^']*'([^']+)'")


def _blocking_options() -> Any:
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = ui.CHROMIUM
    for flag in ui.CHROME_FLAGS:
        options.add_argument(flag)
    # Any host but loopback goes through a proxy nobody listens on; names other than 127.0.0.1 do not resolve.
    options.add_argument(f"--proxy-server=http://127.0.0.1:{ui.free_port()}")
    options.add_argument("--proxy-bypass-list=127.0.0.1")
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    options.add_experimental_option("perfLoggingPrefs", {"enableNetwork": True, "enablePage": False})
    return options


@pytest.fixture(scope="module")
def offline_browser(served_reports: tuple[ui.ApiServer, dict[str, Any]]) -> Iterator[Any]:
    """Chromium that can reach the API server only, recording every request in its performance log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    server, _ = served_reports
    options = _blocking_options()
    profile = tempfile.mkdtemp(prefix="frankli-chromium-offline-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(ui.CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_LOAD_SECONDS)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        own = f"{server.base_url}/*"
        # Ordered URL patterns, the first match decides: the API server, then nothing else.
        driver.execute_cdp_cmd(
            "Network.setBlockedURLs",
            {"urlPatterns": [{"urlPattern": own, "block": False}, {"urlPattern": "*://*:*/*", "block": True}]},
        )
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# --- what the browser did -----------------------------------------------------------------------


class RequestLog:
    """Every URL the browser asked for (DevTools Network events) or the CSP refused (console)."""

    def __init__(self, driver: Any, own_origin: str) -> None:
        self.driver = driver
        self.own = urlsplit(own_origin).netloc
        self.urls: list[str] = []

    def drain(self) -> None:
        """Read what the logs hold since the last call (reading empties them)."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                self.urls.append(message["params"]["request"]["url"])
            elif message.get("method") == "Network.webSocketCreated":
                self.urls.append(message["params"]["url"])
        for entry in self.driver.get_log("browser"):
            self.urls.extend(REFUSED.findall(entry.get("message", "")))

    def reset(self) -> None:
        self.drain()
        self.urls.clear()

    def external(self) -> list[str]:
        """Requests for anything that is not on the API server (data: and about: URLs load nothing)."""
        return sorted(
            {url for url in self.urls if urlsplit(url).scheme not in ("data", "about", "blob") and not self._own(url)}
        )

    def _own(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme == "http" and parts.netloc == self.own


def wait_for(driver: Any, condition: Any, seconds: float = 30) -> Any:
    """What `condition` returns once truthy, or None if it never is (the caller says what is missing).

    A page replaced while it is read answers "stale element" or, from Chromium, "Node with given id does
    not belong to the document" (a plain WebDriverException): both mean "not there yet", so poll on.
    """
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (StaleElementReferenceException, WebDriverException)
    try:
        return WebDriverWait(driver, seconds, ignored_exceptions=ignored).until(condition)
    except TimeoutException:
        return None


# In-page probes: the sandboxed pages may run scripts (GX needs them), so WebDriver may too.
STYLE_PROBE = """
const navbar = document.querySelector('nav.navbar');
return {navbar: navbar ? getComputedStyle(navbar).display : null,
        font: getComputedStyle(document.body).fontFamily};
"""
FONTS_PROBE = """
const done = arguments[arguments.length - 1];
document.fonts.ready.then(() => done([...document.fonts]
  .filter(f => f.status === 'loaded').map(f => f.family.replace(/["']/g, '') + ' ' + f.weight)));
"""
ICONS_PROBE = """
return [...document.querySelectorAll(arguments[0])].map(row => {
  const cells = row.querySelectorAll('td');
  const icon = cells.length ? cells[0].querySelector('i') : null;
  const glyph = icon ? getComputedStyle(icon, '::before') : null;
  return {row: row.innerText, text: cells.length > 1 ? cells[1].innerText.trim() : '',
          icon: icon ? icon.className : null,
          width: icon ? icon.getBoundingClientRect().width : 0,
          glyph: glyph ? glyph.content : null,
          glyphFont: glyph ? glyph.fontFamily : null};
});
"""
SOLID_ICON_FONT = "Font Awesome 6 Free 900"


def styling_problems(driver: Any, page: str) -> list[str]:
    style = driver.execute_script(STYLE_PROBE)
    problems = []
    if style["navbar"] != "flex":  # Bootstrap's .navbar; a browser's default for <nav> is block
        problems.append(f"{page}: the navbar is not styled by Bootstrap (display {style['navbar']!r})")
    if "Segoe UI" not in style["font"]:  # Bootstrap's reboot font stack
        problems.append(f"{page}: the body font is not Bootstrap's ({style['font']!r})")
    return problems


def icon_problems(driver: Any, page: str) -> list[str]:
    loaded = driver.execute_async_script(FONTS_PROBE)
    if SOLID_ICON_FONT not in loaded:
        return [f"{page}: the icon font ({SOLID_ICON_FONT}) did not load; loaded fonts: {loaded}"]
    return []


def drawn(icon: dict[str, Any]) -> bool:
    """An icon that shows: a glyph from the icon font, with a width."""
    return (
        bool(icon["icon"])
        and icon["width"] > 0
        and icon["glyph"] not in (None, "none", "normal", '""')
        and ("Font Awesome" in (icon["glyphFont"] or ""))
    )


# --- the test -------------------------------------------------------------------------------------


def test_validation_report_works_without_internet(
    served_reports: tuple[ui.ApiServer, dict[str, Any]], offline_browser: Any
) -> None:
    from frankli_sync.report import safe_run_id
    from frankli_sync.validation import validate_users
    from selenium.webdriver.common.by import By

    server, _ = served_reports
    browser = offline_browser
    base = server.base_url
    run_url = f"{base}/frankli-reports/{ui.TENANT}/{safe_run_id(ui.LATEST_RUN)}/"
    requests = RequestLog(browser, base)
    # The verdict of every rule on the run's users (the same suite, evaluated without GX).
    verdicts = {
        name: stat["unexpected_count"] == 0
        for name, stat in validate_users(ui.staged_users(), engine="pandas").statistics.items()
    }
    assert set(verdicts.values()) == {True, False}, "the run should pass some rules and fail others"

    ui.log_in(browser, base)
    requests.reset()  # what Airflow's own UI loads is not under test

    # 1. The run's validation report, as the run page links it: a redirect to the signed, sandboxed link.
    browser.get(f"{run_url}validation/index.html")
    assert "/frankli-reports/_docs/" in browser.current_url, browser.current_url
    problems = styling_problems(browser, "index")
    # bootstrap-table fills the table in from the page's data (and may draw it again): read it, hold no element.
    rows = wait_for(browser, lambda d: d.execute_script(ICONS_PROBE, INDEX_ROWS)) or []
    if len(rows) != 1:
        problems.append(f"index: the validation results table has {len(rows)} rows instead of the run's 1")
    else:
        [row] = rows
        problems += icon_problems(browser, "index")
        if "fa-times" not in (row["icon"] or "") or not drawn(row):
            problems.append(f"index: the run's row shows no drawn failed icon: {row}")
        if ui.LATEST_RUN not in row["row"]:
            problems.append(f"index: the run's row does not name the run: {row['row']!r}")
    cookie = browser.execute_script("try { return 'readable:' + document.cookie } catch (e) { return e.name }")
    assert cookie == "SecurityError", f"the Data Docs are no longer sandboxed: {cookie}"
    browser.save_screenshot(str(_artifact("offline_docs_index.png")))

    # 2. The validation result, opened from the index's row: every expectation with its pass/fail icon.
    if len(rows) == 1:
        wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, INDEX_ROWS).click() or True)
    else:  # the table never filled in: follow the link bootstrap-table would have made clickable
        run_dir = server.home.parent / "reports" / ui.TENANT / safe_run_id(ui.LATEST_RUN)
        pages = sorted((run_dir / "validation" / "validations").rglob("*.html"))
        assert pages, f"GX wrote no validation result page under {run_dir}"
        signed_run = browser.current_url.rsplit("/validation/", 1)[0]
        browser.get(f"{signed_run}/{quote(pages[0].relative_to(run_dir).as_posix())}")
    assert wait_for(browser, lambda d: "/validations/" in d.current_url), "the row did not open the validation result"
    wait_for(browser, lambda d: d.execute_script("return document.readyState") == "complete")
    problems += styling_problems(browser, "validation result")
    shown = browser.execute_script(ICONS_PROBE, "table tbody tr")  # lays the icons out: their font loads
    problems += icon_problems(browser, "validation result")
    for name, passed in verdicts.items():
        # An expectation's row: its icon, then its description "<rule name>: <what it checks>".
        row = next((r for r in shown if r["text"].startswith(f"{name}: ")), None)
        expected = "fa-check-circle" if passed else "fa-times"
        if row is None:
            problems.append(f"validation result: no row for the expectation {name}")
        elif expected not in (row["icon"] or "") or not drawn(row):
            problems.append(f"validation result: {name} should show a drawn {expected} icon: {row}")
    browser.save_screenshot(str(_artifact("offline_docs_validation.png")))

    # 3. Nothing left for another host, on either page.
    requests.drain()
    external = requests.external()
    if external:
        problems.append(f"{len(external)} request(s) for other hosts: {external}")
    assert problems == [], "the validation report does not work offline:\n- " + "\n- ".join(problems)
    assert any("/_vendor/" in url for url in requests.urls), "the shipped files were not what styled the pages"

    # 4. The shipped files are served under a run's signed link only, never to a request without one.
    shipped = next(url for url in requests.urls if "/_vendor/jquery-3.7.1/jquery.min.js" in url)
    assert ui.http_get(shipped)[0] == 200
    for unsigned in (
        f"{run_url}_vendor/jquery-3.7.1/jquery.min.js",
        shipped.replace("/_docs/", "/_docs/1", 1),
    ):
        status, _, body = ui.http_get(unsigned)
        assert status in (401, 403) and "jQuery" not in body, (unsigned, status)


def _artifact(name: str) -> Any:
    ui.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ui.ARTIFACTS / name
