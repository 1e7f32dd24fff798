"""GX Data Docs without the internet: the shipped files, and the rewrite that points the pages at them.

The pages are real ones: the GX suite renders Data Docs for a few staged users (one quarantined),
as the validate task does, and every page must load nothing from another host once rewritten.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlsplit

import pytest
from entra_rows import entra, staged
from frankli_sync import docs_assets
from frankli_sync import report_site as site
from frankli_sync.docs_assets import ASSETS, ASSETS_SEGMENT, NOT_SHIPPED, localize_docs_assets, vendored_asset
from frankli_sync.validation import validate_users

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
ASSETS_DIR = REPO / "plugins" / "frankli_reports_assets"
RUN_URL = "http://127.0.0.1:8080/frankli-reports/_docs/123.sig/contoso/run1/"
# A resource-loading tag and the URL it loads (src of script/img, href of link).
RESOURCE = re.compile(
    r"""<(?P<tag>script|link|img)\b[^>]*?(?<![\w-])(?:src|href)\s*=\s*["']?(?P<url>[^"'\s>]+)""", re.IGNORECASE
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory whose validation/ holds the Data Docs GX renders for this suite."""
    run = tmp_path_factory.mktemp("run1")
    users = staged(
        entra("id-ann", "ann@contoso.example", department="Sales", manager_id="id-bob"),
        entra("id-bob", "bob@contoso.example", mail="robert@contoso.example", department="Sales"),
    )
    validate_users(users, docs_dir=run / site.DOCS_DIR, run_name="manual__2026-01-02T08:30:00+00:00")
    return run


def docs_pages(run_dir: Path) -> list[tuple[PurePosixPath, str]]:
    """(path below the run directory, HTML) of every Data Docs page."""
    pages = sorted((run_dir / site.DOCS_DIR).rglob("*.html"))
    assert len(pages) >= 3, "GX rendered no index, suite and validation pages"
    return [(PurePosixPath(p.relative_to(run_dir).as_posix()), p.read_text()) for p in pages]


def served(relative: PurePosixPath, page: str) -> str:
    return localize_docs_assets(page, depth=len(relative.parts) - 1)


def resources(page: str) -> list[tuple[str, str]]:
    return [(m["tag"].lower(), m["url"]) for m in RESOURCE.finditer(page)]


def test_rendered_pages_load_nothing_from_another_host(run_dir: Path) -> None:
    for relative, page in docs_pages(run_dir):
        before = [url for _, url in resources(page) if docs_assets.is_external(url)]
        assert before, f"{relative}: GX no longer loads from CDNs? then this module may go"
        unknown = {urlsplit(u)._replace(query="").geturl() for u in before} - set(docs_assets._BY_URL) - NOT_SHIPPED
        assert unknown <= {docs_assets.GX_LOGO_URL}, f"{relative}: GX loads files nothing ships: {unknown}"
        after = served(relative, page)
        left = [(tag, url) for tag, url in resources(after) if docs_assets.is_external(url)]
        assert left == [], f"{relative} still loads from another host: {left}"
        assert re.findall(r"<a\b[^>]*>", after) == re.findall(r"<a\b[^>]*>", page), "links (not loads) stay"


def test_rewritten_urls_reach_the_shipped_files_from_every_page(run_dir: Path) -> None:
    reached: set[str] = set()
    for relative, page in docs_pages(run_dir):
        page_url = urljoin(RUN_URL, str(relative))
        rewritten = set(resources(served(relative, page))) - set(resources(page))
        assert rewritten, f"{relative}: nothing was rewritten"
        for _, url in rewritten:
            absolute = urljoin(page_url, url)
            assert absolute.startswith(RUN_URL), f"{relative}: {url} leaves the run's signed link ({absolute})"
            inside = absolute.removeprefix(RUN_URL)
            if inside.startswith(f"{ASSETS_SEGMENT}/"):
                name = inside.removeprefix(f"{ASSETS_SEGMENT}/")
                assert vendored_asset(name) is not None, f"{relative}: {url} names no shipped file"
                reached.add(name)
            else:  # GX's logo, from the copy of GX's static files in the run's docs
                assert inside == docs_assets.GX_LOGO_IN_RUN and (run_dir / inside).is_file(), (relative, url)
    stylesheets_and_scripts = {a.path for a in ASSETS.values() if a.urls}
    assert reached == stylesheets_and_scripts, f"shipped but never used: {stylesheets_and_scripts - reached}"


def test_shipped_files_are_the_exact_files_gx_pins(run_dir: Path) -> None:
    """GX pins Popper and Bootstrap's script with Subresource Integrity hashes: the shipped copies match."""
    _, index = next(p for p in docs_pages(run_dir) if p[0].name == "index.html")
    pinned = re.findall(r'<script src="([^"]+)" integrity="(sha384-[^"]+)"', index)
    assert len(pinned) >= 2
    for url, integrity in pinned:
        asset = docs_assets._BY_URL[url]
        digest = base64.b64encode(hashlib.sha384((ASSETS_DIR / asset.path).read_bytes()).digest()).decode()
        assert f"sha384-{digest}" == integrity, f"{asset.path} is not the file GX pins for {url}"


def test_every_listed_file_is_shipped_unchanged_and_nothing_else_is_served() -> None:
    for asset in ASSETS.values():
        path = ASSETS_DIR / asset.path
        assert path.is_file(), f"{asset.path} is listed but not shipped in {ASSETS_DIR}"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == asset.sha256, f"{asset.path} was changed"
    on_disk = {p.relative_to(ASSETS_DIR).as_posix() for p in ASSETS_DIR.rglob("*") if p.is_file()}
    unlisted = {name for name in on_disk - set(ASSETS) if not re.search(r"(^|/)(LICENSE[^/]*|README\.md)$", name)}
    assert unlisted == set(), f"files shipped but not listed in docs_assets (never served): {unlisted}"
    for folder in {name.split("/")[0] for name in ASSETS}:
        assert list((ASSETS_DIR / folder).glob("LICENSE*")), f"{folder} has no licence text"


def test_the_icon_fonts_the_stylesheet_asks_for_are_shipped() -> None:
    css_name = "fontawesome-free-6.6.0/css/all.min.css"
    css = (ASSETS_DIR / css_name).read_text()
    for font in ("fa-solid-900.woff2", "fa-regular-400.woff2"):  # solid: the pass/fail icons
        assert f"url(../webfonts/{font})" in css
        name = str(PurePosixPath(css_name).parent.parent / "webfonts" / font)
        asset = vendored_asset(name)
        assert asset is not None and asset.media_type == "font/woff2" and asset.cross_origin


def test_shipped_stylesheets_load_nothing_from_another_host() -> None:
    for asset in ASSETS.values():
        if asset.media_type.startswith("text/css"):
            css = (ASSETS_DIR / asset.path).read_text()
            remote = re.findall(r"""(?:url\(\s*["']?|@import\s+["'])\s*((?:[a-z]+:)?//[^"')\s]+)""", css, re.I)
            assert remote == [], f"{asset.path} loads {remote}"


def test_rewrite_is_relative_to_the_page_and_drops_integrity() -> None:
    tag = (
        '<script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js" '
        'integrity="sha384-x" crossorigin="anonymous"></script>'
    )
    for depth in (0, 1, 5):
        page = localize_docs_assets(f"<head>{tag}</head>", depth)
        local = f"{'../' * depth}{ASSETS_SEGMENT}/bootstrap-4.3.1/js/bootstrap.min.js"
        assert page == f'<head><script src="{local}"></script></head>'
        folders = ["validation", *["d"] * (depth - 1)] if depth else []
        page_url = urljoin(RUN_URL, "/".join([*folders, "page.html"]))
        assert urljoin(page_url, local) == f"{RUN_URL}{ASSETS_SEGMENT}/bootstrap-4.3.1/js/bootstrap.min.js"


def test_gx_logo_comes_from_the_run_and_unknown_external_loads_are_dropped() -> None:
    page = (
        '<img class="NO-CACHE"\n  src="https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png'
        '?d=20260101T000000Z"\n  alt="Great Expectations"/>'
        '<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>'
        "<script src='//cdn.example/x.js'></script>"
        '<link rel="preconnect" href="https://fonts.example">'
        "<img src=https://tracker.example/p.gif>"
        '<link rel="shortcut icon" href="./static/images/favicon.ico" type="image/x-icon"/>'
        '<img src="data:image/png;base64,AAAA">'
        '<script>$(".x").bootstrapTable()</script>'
        '<a href="https://greatexpectations.io">Great Expectations</a>'
        "<td>&lt;script src=&quot;https://evil.example/x.js&quot;&gt;&lt;/script&gt;</td>"
    )
    out = localize_docs_assets(page, depth=1)
    assert 'src="../validation/static/images/logo-long.png"' in out and 'alt="Great Expectations"' in out
    for gone in ("vega", "cdn.example", "fonts.example", "tracker.example"):
        assert gone not in out
    for kept in (
        '<link rel="shortcut icon" href="./static/images/favicon.ico" type="image/x-icon"/>',
        '<img src="data:image/png;base64,AAAA">',
        '<script>$(".x").bootstrapTable()</script>',
        '<a href="https://greatexpectations.io">Great Expectations</a>',
        "<td>&lt;script src=&quot;https://evil.example/x.js&quot;&gt;&lt;/script&gt;</td>",  # text stays text
    ):
        assert kept in out


def test_only_listed_files_are_ever_named() -> None:
    assert vendored_asset("jquery-3.7.1/jquery.min.js") is ASSETS["jquery-3.7.1/jquery.min.js"]
    for name in (
        "jquery-3.7.1/LICENSE.txt",  # shipped, but not a file the pages load
        "README.md",
        "../frankli_reports.py",
        "jquery-3.7.1/../../frankli_reports.py",
        "/etc/passwd",
        "jquery-3.7.1/jquery.min.js/",
        "",
    ):
        assert vendored_asset(name) is None, name


def test_a_page_below_the_run_directory_has_a_depth() -> None:
    with pytest.raises(ValueError, match="depth must be 0 or more"):
        localize_docs_assets("<html></html>", depth=-1)


def test_data_docs_policy_allows_this_site_only() -> None:
    policy = site.DATA_DOCS_POLICY
    assert policy.startswith("sandbox allow-scripts;") and "allow-same-origin" not in policy
    assert "http" not in policy and "*" not in policy, f"the Data Docs may load from other hosts: {policy}"
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";")[1:] if d.strip())
    assert directives["default-src"] == "'none'" and directives["connect-src"] == "'none'"
    assert directives["script-src"] == "'self' 'unsafe-inline'" and directives["font-src"] == "'self'"
