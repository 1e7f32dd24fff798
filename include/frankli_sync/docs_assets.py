"""GX Data Docs without the internet: the files their pages load from CDNs, shipped with the plugin.

GX (1.x) writes Data Docs pages that load jQuery, Popper, Bootstrap 4, bootstrap-table (with its
filter-control extension), bootstrap-datepicker, a dark Bootstrap theme and Font Awesome from public
CDNs, and its logo from S3. Without internet access the pages render unstyled, the index's
results table (filled in by bootstrap-table) stays empty and the pass/fail icons are blank.

The exact files GX pins (same versions, from the packages' npm releases; the two GX pins with a
Subresource Integrity hash match byte for byte) are kept in ``plugins/frankli_reports_assets/``,
beside the plugin that serves them (licences there, see its README.md). `localize_docs_assets`
rewrites a page as it is served: every CDN URL of a ``<script>``, ``<link>`` or ``<img>`` becomes a
relative link to the run's signed Data Docs link (``<run>/_vendor/<file>``), and any other external
resource tag (vega's scripts, used only by charts this suite never renders) is dropped. Reports
written before this module existed are fixed too, since nothing on disk changes.

Light on purpose (standard library only): the Airflow plugin imports it in the API server.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

ASSETS_SEGMENT = "_vendor"  # URL segment below a run's signed Data Docs link: <run>/_vendor/<path>

# GX copies its own static files (logo included) into every docs site it builds.
GX_LOGO_URL = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png"
GX_LOGO_IN_RUN = "validation/static/images/logo-long.png"


@dataclass(frozen=True)
class VendoredAsset:
    """One shipped file: where it lies in the assets folder, how it is served, which CDN URLs it replaces.

    ``urls``: the URLs GX writes for it (without query); empty for files that another asset loads
    (Font Awesome's fonts, by relative URL from its stylesheet, so the folder layout is npm's).
    """

    path: str
    media_type: str
    sha256: str
    urls: tuple[str, ...] = ()

    @property
    def cross_origin(self) -> bool:
        """Fonts are fetched in CORS mode; a sandboxed page's origin is opaque, so they need CORS headers."""
        return self.media_type.startswith("font/")


_JS = "text/javascript; charset=utf-8"
_CSS = "text/css; charset=utf-8"

VENDORED_ASSETS: tuple[VendoredAsset, ...] = (
    VendoredAsset(
        "jquery-3.7.1/jquery.min.js",
        _JS,
        "fc9a93dd241f6b045cbff0481cf4e1901becd0e12fb45166a8f17f95823f0b1a",
        ("https://code.jquery.com/jquery-3.7.1.min.js",),
    ),
    VendoredAsset(
        "popper.js-1.12.9/umd/popper.min.js",
        _JS,
        "a52f7aa54d7bcaafa056ee0a050262dfc5694ae28dee8b4cac3429af37ff0d66",
        ("https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js",),
    ),
    VendoredAsset(
        "bootstrap-4.3.1/css/bootstrap.min.css",
        _CSS,
        "60b19e5da6a9234ff9220668a5ec1125c157a268513256188ee80f2d2c8d8d36",
        ("https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css",),
    ),
    VendoredAsset(
        "bootstrap-4.3.1/js/bootstrap.min.js",
        _JS,
        "0a34a87842c539c1f4feec56bba982fd596b73500046a6e6fe38a22260c6577b",
        ("https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js",),
    ),
    VendoredAsset(
        "bootstrap-table-1.19.1/bootstrap-table.min.css",
        _CSS,
        "643f536f6982af4d7287af23f89ad457dd7e4a82f9c695330a112b0881c30a4a",
        ("https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css",),
    ),
    VendoredAsset(
        "bootstrap-table-1.19.1/bootstrap-table.min.js",
        _JS,
        "06a571a9beb50bd5ddd60517159775dfec1f3e798fff38fb117ae2350dc9ba9d",
        ("https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js",),
    ),
    VendoredAsset(
        "bootstrap-table-1.19.1/extensions/filter-control/bootstrap-table-filter-control.min.js",
        _JS,
        "111f68d31d1bdd714f9503bf5f4e162e0739c363e4ff2feef950d39e78266ffc",
        (
            "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
        ),
    ),
    VendoredAsset(
        "bootstrap-table-1.19.0/extensions/filter-control/bootstrap-table-filter-control.min.css",
        _CSS,
        "2c707bb54520737762a76f2238e87627993fb63bcef6d789a21a4957f393fa1c",
        (
            "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
        ),
    ),
    VendoredAsset(
        "bootstrap-table-1.19.0/extensions/filter-control/bootstrap-table-filter-control.css",
        _CSS,
        "b3ff051168696ec9ae3cf8616c59a6db8734fb282863b23edfd8c0f93eb5c4f0",
        ("https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css",),
    ),
    VendoredAsset(
        "bootstrap-datepicker-1.9.0/css/bootstrap-datepicker.min.css",
        _CSS,
        "b22c8ea45fe905650f8087108b5ed32c1923bcd80d400adc9b0241f18be40208",
        ("https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css",),
    ),
    VendoredAsset(
        "bootstrap-datepicker-1.9.0/js/bootstrap-datepicker.min.js",
        _JS,
        "6ea55ea86749ee1fe560fabac6b3effd81b33046fa74dc657e24d41d28110a9f",
        ("https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js",),
    ),
    VendoredAsset(
        # GX links the unminified file; the package's minified build of the same release replaces it.
        "bootstrap-dark-1.1.0/css/bootstrap-prefers-dark.min.css",
        _CSS,
        "424070f1f798087a68c110a776228f9eaae5406df143940faa67d77344293ac8",
        ("https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css",),
    ),
    VendoredAsset(
        "fontawesome-free-6.6.0/css/all.min.css",
        _CSS,
        "e5e202e3c899507992952533f57b634722b69b34241d271963559d31aa33ef81",
        ("https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css",),
    ),
    # Solid (the pass/fail icons) and regular; brands and the v4 shims are never used by GX's pages.
    VendoredAsset(
        "fontawesome-free-6.6.0/webfonts/fa-solid-900.woff2",
        "font/woff2",
        "1f0189e087fcefbf654fad74a3a06668b782c01353a61d5c0b7f0bf23e33c020",
    ),
    VendoredAsset(
        "fontawesome-free-6.6.0/webfonts/fa-regular-400.woff2",
        "font/woff2",
        "c732f106e91bc618767fbac8e2c7b27e5c736d477b2bb4fb83f597a43198c33c",
    ),
)

# What GX loads that is deliberately not shipped (the rewrite drops these tags): vega draws the charts
# of distribution expectations, which this suite does not have (about 1.5 MB of script for nothing).
NOT_SHIPPED: frozenset[str] = frozenset(
    {
        "https://cdn.jsdelivr.net/npm/vega@5",
        "https://cdn.jsdelivr.net/npm/vega-lite@5",
        "https://cdn.jsdelivr.net/npm/vega-embed@6",
    }
)

ASSETS: Mapping[str, VendoredAsset] = {asset.path: asset for asset in VENDORED_ASSETS}
_BY_URL: Mapping[str, VendoredAsset] = {url: asset for asset in VENDORED_ASSETS for url in asset.urls}


def vendored_asset(name: str) -> VendoredAsset | None:
    """The shipped file called `name` (its path in the assets folder), or None: never any other path."""
    return ASSETS.get(name)


# A tag that loads a resource: <script src=...></script>, <link href=...>, <img src=...>.
_SCRIPT = re.compile(r"<(?P<name>script)\b(?P<attrs>[^>]*)>(?P<close>\s*</script\s*>)?", re.IGNORECASE)
_LINK_OR_IMG = re.compile(r"<(?P<name>link|img)\b(?P<attrs>[^>]*)>", re.IGNORECASE)
_ATTR = r"""(?<![\w-])(?P<attr>{name})\s*=\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s"'>]+))"""
_SRC = re.compile(_ATTR.format(name="src"), re.IGNORECASE)
_HREF = re.compile(_ATTR.format(name="href"), re.IGNORECASE)
_SRI = re.compile(r"""\s(?:integrity|crossorigin)(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'>]+))?""", re.IGNORECASE)
_EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)


def is_external(url: str) -> bool:
    """Whether `url` points at another host (``https://…``, ``//host/…``) rather than this site."""
    return _EXTERNAL.match(html.unescape(url)) is not None


def local_url(url: str, depth: int) -> str | None:
    """The relative URL that replaces the external `url` on a page `depth` folders below the run, or None.

    None: no shipped file replaces it (the tag is dropped).
    """
    if depth < 0:
        raise ValueError(f"depth must be 0 or more folders below the run directory, got {depth}")
    parts = urlsplit(html.unescape(url).strip())
    bare = parts._replace(query="", fragment="").geturl()
    up = "../" * depth
    if bare == GX_LOGO_URL:
        return up + GX_LOGO_IN_RUN
    asset = _BY_URL.get(bare)
    return f"{up}{ASSETS_SEGMENT}/{asset.path}" if asset else None


def localize_docs_assets(page: str, depth: int) -> str:
    """GX Data Docs page `page`, `depth` folders below the run directory, with no external resource left.

    Shipped files replace the CDN URLs (Subresource Integrity attributes are removed with them: the
    files are served by this site, and the tests check they are the exact files GX pins); any other
    ``<script>``, ``<link>`` or ``<img>`` that would load from another host is removed. Links
    (``<a href>``) are left alone: they load nothing until clicked.
    """
    if depth < 0:
        raise ValueError(f"depth must be 0 or more folders below the run directory, got {depth}")
    page = _SCRIPT.sub(lambda match: _localize_tag(match, _SRC, depth), page)
    return _LINK_OR_IMG.sub(
        lambda match: _localize_tag(match, _SRC if match["name"].lower() == "img" else _HREF, depth), page
    )


def _localize_tag(match: re.Match[str], attribute: re.Pattern[str], depth: int) -> str:
    """The tag of `match` loading from this site, unchanged when it already does, or "" when nothing can."""
    found = attribute.search(match["attrs"])
    if found is None:
        return match.group(0)
    url = next(value for value in (found["dq"], found["sq"], found["bare"]) if value is not None)
    if not is_external(url):
        return match.group(0)
    local = local_url(url, depth)
    if local is None:
        return ""  # nothing shipped replaces it: load nothing
    attrs = match["attrs"]
    attrs = _SRI.sub("", f'{attrs[: found.start()]}{found["attr"]}="{local}"{attrs[found.end() :]}')
    close = match.groupdict().get("close") or ""
    return f"<{match['name']}{attrs}>{close}"
