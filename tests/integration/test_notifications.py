"""Notification mails, received by a real SMTP server (aiosmtpd) from the real DAG and Airflow's SMTP notifier.

The server requires a login (the Airflow SMTP connection's), so a mail that arrives was sent with the
connection's credentials; it keeps every message with its envelope. Sending is synchronous: when the
DAG run returns, its mails have been accepted (the server answers 250 after storing them).
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import re
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from synced_tenant import valid_leaves

pytestmark = [
    pytest.mark.integration,
    # Plain SMTP with AUTH on loopback, on purpose: the test server's own warning about it is no news.
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

LOGIN = "frankli-sync"
PASSWORD = "s3cret-smtp-Pa55word"  # must never reach a mail or a log
SENDER = "frankli-sync@acme.example"
RECIPIENTS = ["ops@acme.example", "it-lead@acme.example"]
BASE_URL = "https://airflow.acme.example/"
CONN_ID = "smtp_frankli"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    login: str | None
    message: email.message.EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None, "the mail has no HTML body"
        return part.get_content()


@dataclass
class Mailbox:
    port: int
    messages: list[Received] = field(default_factory=list)
    refused_logins: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's name for the hook
        login = session.auth_data.login.decode() if session.authenticated else None
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), login, message))
        return "250 Message accepted for delivery"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        valid = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            LOGIN.encode(),
            PASSWORD.encode(),
        )
        if not valid:
            self.refused_logins += 1
        return AuthResult(success=valid, auth_data=auth_data if valid else None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[Mailbox]:
    """A real SMTP server on 127.0.0.1 that only takes mail after AUTH with LOGIN / PASSWORD."""
    mailbox = Mailbox(port=_free_port())
    # aiosmtpd logs each session from its own thread; Airflow's task logging may have closed the stream the
    # root logger writes to by then, so keep the server's log to itself.
    server_log = logging.getLogger("mail.log")
    server_log.addHandler(logging.NullHandler())
    server_log.propagate = False
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=mailbox.port,
        authenticator=mailbox.authenticate,
        auth_required=True,
        auth_require_tls=False,  # plain SMTP on loopback; the connection disables TLS and SSL
    )
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()
        server_log.propagate = True


@pytest.fixture
def mailbox(smtp_server: Mailbox, monkeypatch: pytest.MonkeyPatch) -> Mailbox:
    """The server's mailbox, emptied, with the Airflow SMTP connection and [api] base_url pointing at it."""
    smtp_server.messages.clear()
    smtp_server.refused_logins = 0
    connection = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": smtp_server.port,
        "login": LOGIN,
        "password": PASSWORD,
        "extra": {"from_email": SENDER, "disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 30},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL)
    return smtp_server


def _notify(**settings: Any) -> dict[str, Any]:
    return {"conn_id": CONN_ID, "to": RECIPIENTS, **settings}


def _report_link(tenant: str, run_id: str) -> str:
    from frankli_sync.report_site import safe_run_id

    return f"{BASE_URL.rstrip('/')}/frankli-reports/{tenant}/{safe_run_id(run_id)}/"


def _assert_addressed(mail: Received, tenant: str, run_id: str) -> None:
    """Envelope and headers go to the configured recipients; the body names tenant, organisation and run."""
    assert mail.mail_from == SENDER and str(mail.message["From"]) == SENDER
    assert sorted(mail.rcpt_tos) == sorted(RECIPIENTS)
    assert mail.login == LOGIN, "the mail must be sent with the Airflow connection's login"
    html = mail.html
    assert f"<td>{tenant} (Frankli organisation Acme Corp)</td>" in html
    assert run_id in html
    assert f'href="{_report_link(tenant, run_id)}"' in html
    assert PASSWORD not in mail.message.as_string()


def test_quarantine_above_the_warn_share_mails_the_rules_and_the_run_goes_on(
    make_tenant, mailbox: Mailbox, capfd: pytest.CaptureFixture[str]
) -> None:
    tenant = make_tenant(
        users=100,
        seed=11,
        notify=_notify(on=["quarantine"], quarantine_warn_share=0.01),
        thresholds={"max_invalid_share": 0.5},
    )
    run = tenant.run()
    report = tenant.report()
    quarantined, in_scope = len(report["quarantined"]), report["validation"]["in_scope"]
    share = quarantined / in_scope
    assert 0.01 < share < 0.5, "the generated tenant must quarantine more than the warn share"

    [mail] = mailbox.messages
    assert mail.subject == (
        f"[Frankli sync] acme: {quarantined} of {in_scope} users quarantined ({share:.1%}) (run {run.run_id})"
    )
    _assert_addressed(mail, "acme", run.run_id)
    html = mail.html
    assert f"Validation quarantined {quarantined} users ({share:.1%} of those in scope)" in html
    assert "1.0% (notify.quarantine_warn_share)" in html and "50.0% (thresholds.max_invalid_share)" in html
    per_rule = Counter(rule for q in report["quarantined"] for rule in {r["expectation"] for r in q["reasons"]})
    assert per_rule
    for rule, users in per_rule.items():  # rule, its meaning, the users failing it
        assert re.search(rf"<tr><td>{re.escape(rule)}</td><td>[^<]+</td><td>{users}</td></tr>", html), rule
    assert "lists every quarantined user" in html, "the mail says what to do"
    assert PASSWORD not in "".join(capfd.readouterr())

    # Under the warn share, no mail.
    tenant.tenant_extra["notify"] = _notify(on=["quarantine"], quarantine_warn_share=0.45)
    tenant.run()
    assert mailbox.messages == [mail]


def test_tripped_deletion_guard_mails_the_guard_once_not_a_failure(make_tenant, mailbox: Mailbox) -> None:
    tenant = make_tenant(users=100, seed=11, notify=_notify(on=["failure", "guard"]))
    tenant.run()
    assert mailbox.messages == [], "a clean run mails nobody (quarantine is not asked for)"

    for object_id in valid_leaves(tenant.directory)[:15]:
        tenant.directory.delete_user(object_id)
    run = tenant.run(expect="failed")
    guard = tenant.report()["deletion_guard"]
    assert guard["blocked"] is True and guard["to_archive"] == 15

    [mail] = mailbox.messages  # the guard's; neither load_archives nor the report adds a failure mail
    assert mail.subject == f"[Frankli sync] acme: deletion guard stopped 15 archives (run {run.run_id})"
    _assert_addressed(mail, "acme", run.run_id)
    html = mail.html
    assert '<th align="left">Users this run would archive</th><td>15</td>' in html
    assert f'<th align="left">Limit</th><td>{guard["limit"]}</td>' in html
    assert "nobody was archived. The run&#39;s creates and updates were applied" in html
    assert "archive 15 users" in html, "the guard's own message is quoted"
    assert "{&#34;allow_mass_archive&#34;: true}" in html, "the read was complete: the override is offered"


def test_failed_step_mails_its_error_once(make_tenant, mailbox: Mailbox, capfd: pytest.CaptureFixture[str]) -> None:
    # Any quarantined user is too many: validate stops the run (a SyncStopped, failed without retries).
    tenant = make_tenant(users=100, seed=11, notify=_notify(on=["failure"]), thresholds={"max_invalid_share": 0.0})
    run = tenant.run(expect="failed")
    assert tenant.report()["incomplete_tasks"][0] == "validate"

    [mail] = mailbox.messages  # validate's; the report task failing after it sends nothing more
    assert mail.subject == f"[Frankli sync] acme: validate failed (run {run.run_id})"
    _assert_addressed(mail, "acme", run.run_id)
    html = mail.html
    assert "The step validate failed and the run stops there. Nothing was written to Frankli." in html
    assert "fail validation, above tenants[acme].thresholds.max_invalid_share = 0.0%; nothing is loaded" in html
    assert "/dags/entra_to_frankli__acme/runs/" in html and "/tasks/validate" in html, "links the failed step's log"
    assert "clear validate in the Airflow UI" in html
    assert PASSWORD not in "".join(capfd.readouterr())


def _tenant_config(**notify: Any) -> Any:
    from frankli_sync.config import parse_config

    tenant = {
        "name": "acme",
        "source": {"kind": "graph", "conn_id": "msgraph_acme"},
        "target": {"kind": "database", "conn_id": "frankli_acme", "organisation": "Acme Corp"},
        "notify": _notify(**notify),
    }
    config = parse_config({"tenants": [tenant]})
    assert not config.errors, config.errors
    return config.tenants[0]


def test_run_failed_without_a_failed_step_mails_from_the_dag_callback(mailbox: Mailbox) -> None:
    """The DAG processor calls the DAG's on_failure_callback with only dag, run_id and reason."""
    from frankli_sync.notifications import callbacks

    notify = callbacks(_tenant_config(on=["failure"]))
    assert notify.run_failed is not None and notify.validated is None
    notify.run_failed({"dag": None, "run_id": "scheduled__2026-12-01T03:00:00+00:00", "reason": "task_failure"})
    assert mailbox.messages == [], "a failed step mails from its own callback, with its error"

    notify.run_failed({"dag": None, "run_id": "scheduled__2026-12-01T03:00:00+00:00", "reason": "timed_out"})
    [mail] = mailbox.messages
    assert mail.subject == "[Frankli sync] acme: run failed (timed_out) (run scheduled__2026-12-01T03:00:00+00:00)"
    _assert_addressed(mail, "acme", "scheduled__2026-12-01T03:00:00+00:00")
    assert "took longer than the DAG&#39;s dagrun_timeout" in mail.html


def test_mail_text_is_escaped_never_an_airflow_template(mailbox: Mailbox) -> None:
    """Error texts carry directory values: a Jinja expression in one stays text, HTML is escaped."""
    from frankli_sync.notifications import callbacks

    notify = callbacks(_tenant_config(on=["failure"]))
    assert notify.step_failed is not None
    error = RuntimeError("user {{ conn.smtp_frankli.password }} <script>alert(1)</script> is broken")
    ti = SimpleNamespace(task_id="extract", log_url=f"{BASE_URL}dags/entra_to_frankli__acme/runs/r1/tasks/extract")
    notify.step_failed({"dag": None, "run_id": "r1", "ti": ti, "exception": error, "params": {"dry_run": True}})

    [mail] = mailbox.messages
    assert mail.subject == "[Frankli sync] acme [dry run]: extract failed (run r1)"
    html = mail.html
    assert "{{ conn.smtp_frankli.password }}" in html and PASSWORD not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert "(dry run: nothing is written to Frankli)" in html


def test_unreachable_smtp_server_fails_the_callback_naming_tenant_and_connection(
    mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from frankli_sync.notifications import NotificationNotSent, callbacks

    connection = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": _free_port(),  # nothing listens there
        "login": LOGIN,
        "password": PASSWORD,
        "extra": {"from_email": SENDER, "disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 5},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
    notify = callbacks(_tenant_config(on=["failure"]))
    assert notify.run_failed is not None
    with pytest.raises(NotificationNotSent) as raised:
        notify.run_failed({"dag": None, "run_id": "r2", "reason": "timed_out"})
    message = str(raised.value)
    assert "tenant acme: the failure mail of run r2" in message and f"SMTP connection {CONN_ID!r}" in message
    assert PASSWORD not in message
    assert mailbox.messages == []


def test_archives_waiting_for_approval_mail_the_guard(make_tenant, mailbox: Mailbox) -> None:
    """load_archives succeeding with the guard blocked (an approval waits): mailed from its success callback."""
    from frankli_sync.config import load_config
    from frankli_sync.connections import staging_engine
    from frankli_sync.notifications import callbacks
    from frankli_sync.staging import Staging

    tenant = make_tenant(users=10, notify=_notify(on=["guard"]))
    config = load_config(tenant.config_path)
    notify = callbacks(config.tenant("acme"))
    assert notify.archived is not None and notify.step_failed is not None and notify.run_failed is None
    guard = {
        "to_archive": 40,
        "limit": 9,
        "synced_users": 94,
        "staged_users": 54,
        "last_synced_users": 94,
        "read_complete": True,
        "blocked": True,
        "message": "deletion guard: this run would archive 40 users, more than the limit of 9",
    }
    engine = staging_engine(config.staging_conn_id)
    try:
        staging = Staging(engine)
        staging.save_document("acme", "run-waiting", "guard", guard)
        staging.save_document("acme", "run-passed", "guard", {**guard, "blocked": False, "message": "ok"})
    finally:
        engine.dispose()

    notify.archived({"run_id": "run-passed", "params": {}})
    assert mailbox.messages == [], "archives the guard let through are no news"
    notify.archived({"run_id": "run-waiting", "params": {}})
    [mail] = mailbox.messages
    assert mail.subject == "[Frankli sync] acme: deletion guard stopped 40 archives (run run-waiting)"
    _assert_addressed(mail, "acme", "run-waiting")
    assert "waits for a decision in the Airflow UI, under Required actions" in mail.html
    assert "would archive 40 users, more than the limit of 9" in mail.html
