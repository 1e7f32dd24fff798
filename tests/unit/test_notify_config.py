"""A tenant's `notify` block: what parses, its defaults, and the errors naming tenant and field."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from frankli_sync.config import NotifySettings, load_config, parse_config

pytestmark = pytest.mark.unit


def _tenant(notify: Any, **extra: Any) -> dict[str, Any]:
    return {
        "name": "contoso",
        "source": {"kind": "graph", "conn_id": "msgraph_contoso"},
        "target": {"kind": "database", "conn_id": "frankli_contoso", "organisation": "Contoso Ltd"},
        "notify": notify,
        **extra,
    }


def _notify(notify: Any, **extra: Any) -> NotifySettings | None:
    config = parse_config({"tenants": [_tenant(notify, **extra)]})
    assert not config.errors, config.errors
    return config.tenants[0].notify


def _error(notify: Any, **extra: Any) -> str:
    config = parse_config({"tenants": [_tenant(notify, **extra)]})
    assert config.tenants == ()
    return config.errors["contoso"]


def test_readme_example_parses(tmp_path: Path) -> None:
    (tmp_path / "tenants.yaml").write_text(
        textwrap.dedent(
            """\
            tenants:
              - name: contoso
                source: {kind: graph, conn_id: msgraph_contoso}
                target: {kind: database, conn_id: frankli_contoso, organisation: Contoso Ltd}
                thresholds: {max_invalid_share: 0.05}
                notify:
                  conn_id: smtp_default          # an Airflow SMTP connection
                  to: [it-ops@contoso.com, directory-admins@contoso.com]
                  on: [failure, guard, quarantine]
                  quarantine_warn_share: 0.02    # below thresholds.max_invalid_share
            """
        )
    )
    [tenant] = load_config(tmp_path / "tenants.yaml").tenants
    assert tenant.notify == NotifySettings(
        to=("it-ops@contoso.com", "directory-admins@contoso.com"),
        conn_id="smtp_default",
        on=("failure", "guard", "quarantine"),
        quarantine_warn_share=0.02,
    )


def test_no_block_no_mail_and_defaults() -> None:
    config = parse_config({"tenants": [{k: v for k, v in _tenant(None).items() if k != "notify"}]})
    assert config.tenants[0].notify is None
    assert _notify({"to": "ops@contoso.com"}) == NotifySettings(to=("ops@contoso.com",))
    assert _notify({"to": ["ops@contoso.com"]}).on == ("failure", "guard")
    assert _notify({"to": ["ops@contoso.com"], "quarantine_warn_share": 0}).on == ("failure", "guard", "quarantine")
    assert _notify({"to": ["ops@contoso.com"], "on": ["guard"], "from_email": "sync@contoso.com"}) == NotifySettings(
        to=("ops@contoso.com",), on=("guard",), from_email="sync@contoso.com"
    )


@pytest.mark.parametrize(
    ("notify", "extra", "message"),
    [
        ("yes", {}, "tenants[0].notify: must be a mapping, got str"),
        ({"to": ["ops@contoso.com"], "cc": ["x@y.z"]}, {}, "tenants[0].notify: unknown key(s) ['cc']"),
        ({}, {}, "tenants[0].notify.to: must be a non-empty list of e-mail addresses, got None"),
        ({"to": []}, {}, "tenants[0].notify.to: must be a non-empty list of e-mail addresses, got []"),
        ({"to": ["ops@contoso.com", "IT Ops"]}, {}, "tenants[0].notify.to[1]: 'IT Ops' is not an e-mail address"),
        ({"to": ["ops@contoso.com\nBcc: all@contoso.com"]}, {}, "tenants[0].notify.to[0]: "),
        ({"to": ["Ops <ops@contoso.com>"]}, {}, "tenants[0].notify.to[0]: 'Ops <ops@contoso.com>' is not an e-mail"),
        ({"to": ["ops@contoso.com"], "from_email": "sync"}, {}, "tenants[0].notify.from_email: 'sync' is not an"),
        ({"to": ["ops@contoso.com"], "conn_id": " "}, {}, "tenants[0].notify.conn_id: must be a non-empty string"),
        ({"to": ["ops@contoso.com"], "on": []}, {}, "tenants[0].notify.on: must be a non-empty list of"),
        ({"to": ["ops@contoso.com"], "on": ["falure"]}, {}, "tenants[0].notify.on[0]: 'falure' is not one of"),
        ({"to": ["ops@contoso.com"], "on": ["guard", "guard"]}, {}, "tenants[0].notify.on: ['guard', 'guard'] names"),
        (
            {"to": ["ops@contoso.com"], "on": ["quarantine"]},
            {},
            "tenants[0].notify.quarantine_warn_share: required when 'quarantine' is in tenants[0].notify.on",
        ),
        (
            {"to": ["ops@contoso.com"], "on": ["failure"], "quarantine_warn_share": 0.01},
            {},
            "tenants[0].notify.quarantine_warn_share: set, but 'quarantine' is not in tenants[0].notify.on",
        ),
        ({"to": ["ops@contoso.com"], "quarantine_warn_share": 1.5}, {}, "quarantine_warn_share: 1.5 must be between"),
        (
            {"to": ["ops@contoso.com"], "quarantine_warn_share": 0.05},
            {},
            "tenants[0].notify.quarantine_warn_share: 0.05 must be below thresholds.max_invalid_share (0.05)",
        ),
        (
            {"to": ["ops@contoso.com"], "quarantine_warn_share": 0.02},
            {"thresholds": {"max_invalid_share": 0.01}},
            "tenants[0].notify.quarantine_warn_share: 0.02 must be below thresholds.max_invalid_share (0.01)",
        ),
    ],
)
def test_errors_name_tenant_and_field(notify: Any, extra: dict[str, Any], message: str) -> None:
    error = _error(notify, **extra)
    assert error.startswith("tenant 'contoso': "), error
    assert message in error, error


def test_a_broken_notify_block_breaks_only_its_tenant() -> None:
    other = {**_tenant(None), "name": "fabrikam", "target": {"conn_id": "frankli_fabrikam", "organisation": "Fab"}}
    config = parse_config({"tenants": [_tenant({"to": ["nobody"]}), other]})
    assert [t.name for t in config.tenants] == ["fabrikam"]
    assert list(config.errors) == ["contoso"]
