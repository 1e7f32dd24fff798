"""The plugin serves GX Data Docs ready for a network without internet, through its real FastAPI app.

Real GX Data Docs of one run, the plugin module as the API server loads it, and HTTP requests
through FastAPI's test client on the signed Data Docs links (the routes a sandboxed page uses,
which need no Airflow login; tests/browser/test_offline_docs.py covers the logged-in side).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from frankli_sync import report_site as site
from frankli_sync.docs_assets import ASSETS, ASSETS_SEGMENT, is_external
from frankli_sync.validation import validate_users

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TENANT = "contoso"
RUN = "run1"
RESOURCE = re.compile(r"""<(?:script|link|img)\b[^>]*?(?<![\w-])(?:src|href)\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)


def load_plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("frankli_reports_plugin", REPO / "plugins" / "frankli_reports.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def staged_users() -> object:
    import pandas as pd

    rows = [
        ("id-ann", "ann@contoso.example", "ann@contoso.example"),
        ("id-bob", "bob@contoso.example", "robert@contoso.example"),
    ]
    return pd.DataFrame(
        [
            {"object_id": oid, "user_principal_name": upn, "mail": mail, "given_name": "A", "surname": "B",
             "account_enabled": True, "department": "Sales", "manager_id": None}
            for oid, upn, mail in rows
        ]
    )  # fmt: skip


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The plugin, its config pointing at a reports folder holding one run's real Data Docs."""
    root = tmp_path_factory.mktemp("offline-docs")
    reports = root / "reports"
    validate_users(staged_users(), docs_dir=reports / TENANT / RUN / site.DOCS_DIR, run_name=RUN)
    config = root / "tenants.yaml"
    tenant = {
        "name": TENANT,
        "schedule": None,
        "source": {"kind": "csv", "path": "users.csv"},
        "target": {"kind": "database", "conn_id": "frankli_contoso", "organisation": "Contoso Ltd"},
    }
    config.write_text(json.dumps({"reports_dir": str(reports), "tenants": [tenant]}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FRANKLI_SYNC_CONFIG", str(config))
        yield load_plugin()


@pytest.fixture
def client(plugin: ModuleType) -> Iterator[object]:
    from fastapi.testclient import TestClient

    with TestClient(plugin.app) as test_client:
        yield test_client


def signed(plugin: ModuleType, relative: str) -> str:
    return f"/_docs/{plugin.docs_token(TENANT, RUN)}/{TENANT}/{RUN}/{relative}"


def test_docs_pages_are_served_pointing_at_this_site_only(plugin: ModuleType, client: object) -> None:
    response = client.get(signed(plugin, "validation/index.html"))
    assert response.status_code == 200, response.text
    assert response.headers["content-security-policy"] == site.DATA_DOCS_POLICY
    external = [url for url in RESOURCE.findall(response.text) if is_external(url)]
    assert external == [], f"the served index still loads {external}"
    assert f'src="../{ASSETS_SEGMENT}/jquery-3.7.1/jquery.min.js"' in response.text
    assert "Run summary" in response.text  # the banner back to the run


def test_every_shipped_file_is_served_as_shipped(plugin: ModuleType, client: object) -> None:
    for asset in ASSETS.values():
        response = client.get(signed(plugin, f"{ASSETS_SEGMENT}/{asset.path}"))
        assert response.status_code == 200, (asset.path, response.status_code, response.text[:200])
        assert hashlib.sha256(response.content).hexdigest() == asset.sha256, asset.path
        assert response.headers["content-type"].split(";")[0] == asset.media_type.split(";")[0], asset.path
        assert response.headers["x-content-type-options"] == "nosniff"
        # Fonts are fetched in CORS mode from the sandboxed page's opaque origin; nothing else is shared.
        assert response.headers.get("access-control-allow-origin") == ("*" if asset.cross_origin else None)


def test_nothing_but_the_listed_files_and_only_under_a_valid_link(plugin: ModuleType, client: object) -> None:
    for name in (
        "jquery-3.7.1/LICENSE.txt",  # on disk, but not a file the pages load
        "README.md",
        "..%2F..%2Ffrankli_reports.py",
        "jquery-3.7.1%2F..%2F..%2Ffrankli_reports.py",
        "%2Fetc%2Fpasswd",
    ):
        response = client.get(signed(plugin, f"{ASSETS_SEGMENT}/{name}"))
        assert response.status_code == 404, (name, response.status_code)
        assert "Copyright" not in response.text and "import" not in response.text
    jquery = f"{ASSETS_SEGMENT}/jquery-3.7.1/jquery.min.js"
    token = plugin.docs_token(TENANT, RUN)
    expired = plugin.docs_token(TENANT, RUN, now=1_000)
    for path in (
        f"/_docs/{token}x/{TENANT}/{RUN}/{jquery}",  # forged
        f"/_docs/{plugin.docs_token(TENANT, 'run2')}/{TENANT}/{RUN}/{jquery}",  # another run's link
        f"/_docs/{expired}/{TENANT}/{RUN}/{jquery}",
        f"/_docs/{token}/fabrikam/{RUN}/{jquery}",
    ):
        response = client.get(path)
        assert response.status_code == 403, (path, response.status_code)
        assert "jQuery" not in response.text
