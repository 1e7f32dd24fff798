"""Issue 10, defects 5 and 8: Graph faults that waiting or retrying cannot fix stop the extract at once.

Defect 5: a 429 with ``Retry-After: 86400`` made the extract sleep a day, holding a pool slot until the
run timed out. Now a Retry-After past ``RetryPolicy.max_retry_after`` (``source.max_retry_after_seconds``),
or a wait past the client's ``max_total_wait`` budget (``source.max_retry_seconds``), fails at once with a
`SyncStopped` naming Graph's value and the setting.

Defect 8: the README's placeholder tenant id failed after 10½ minutes of task retries. Errors retrying
cannot fix (a missing or malformed connection, a token endpoint refusing the credentials, Graph refusing a
fresh token, a 400) now fail at once as `SyncStopped`, naming the connection field to fix.

Everything runs against real local servers: the Graph emulator (with its fault plan), a small Graph
stand-in for Retry-After as an HTTP date (the emulator only sends whole seconds), and an HTTPS token
endpoint that answers like Entra ID, trusted through the connection's ``verify`` (a CA file).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from frankli_sync import pipeline
from frankli_sync.sources.graph import GraphClient, RetryPolicy
from graph_emulator import GraphEmulator, generate_tenant
from graph_emulator.faults import FaultPlan, FaultRule

pytestmark = [
    pytest.mark.integration,
    # The provider hands the connection's `verify` (here a CA file, as for a private CA) to httpx as a string.
    pytest.mark.filterwarnings("ignore:`verify=<str>` is deprecated:DeprecationWarning"),
]

SECRET = "s3cr3t-Value~never-shown"
# Entra ID's answers for refused credentials (shape of the v2.0 token endpoint's error body).
ENTRA_ERRORS = {
    "tenant": (
        400,
        "invalid_request",
        "AADSTS90002: Tenant 'contoso-tenant' not found. Check to make sure you have the correct tenant ID and "
        "are signing into the correct cloud.",
    ),
    "secret": (
        401,
        "invalid_client",
        "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent "
        "in the request is the client secret value, not the client secret ID.",
    ),
    "client": (
        400,
        "unauthorized_client",
        "AADSTS700016: Application with identifier 'app-client-id' was not found in the directory 'Contoso'.",
    ),
}


# ------------------------------------------------------------------------------------------------ servers
class TokenEndpoint:
    """A real HTTPS server answering ``POST /{tenant}/oauth2/v2.0/token`` as Entra ID does.

    `refuse` is None (issue a fresh token per request) or a key of ENTRA_ERRORS. Its certificate is
    self-signed for 127.0.0.1 and written to `ca_file`, which the connection's ``verify`` points at, so
    TLS is verified as in production.
    """

    def __init__(self, directory: Path) -> None:
        self.refuse: str | None = None
        self.requests: list[dict[str, list[str]]] = []
        self.ca_file = directory / "token-endpoint.pem"
        key_file = directory / "token-endpoint.key"
        _self_signed(self.ca_file, key_file)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def do_POST(self) -> None:
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                endpoint.requests.append({"path": [self.path], **form})
                if endpoint.refuse is None:
                    status = 200
                    token = f"token-{len(endpoint.requests)}"
                    payload: dict[str, Any] = {"token_type": "Bearer", "expires_in": 3599, "access_token": token}
                else:
                    status, error, description = ENTRA_ERRORS[endpoint.refuse]
                    code = int(description.split(":")[0].removeprefix("AADSTS"))
                    payload = {
                        "error": error,
                        "error_description": f"{description}\r\nTrace ID: 0000\r\nCorrelation ID: 1111",
                        "error_codes": [code],
                    }
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    @property
    def authority(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _self_signed(cert_file: Path, key_file: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


class ScriptedGraph:
    """A plain HTTP stand-in for Graph that answers scripted (status, headers) pairs, then 200.

    The emulator's Retry-After is whole seconds only; this one sends any header value, e.g. an HTTP date.
    Headers are produced by callables so dates are computed when the answer is sent.
    """

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, Any]]] = []
        self.request_count = 0
        graph = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def do_GET(self) -> None:
                graph.request_count += 1
                status, headers = graph.script.pop(0) if graph.script else (200, {})
                if status == 200:
                    payload: dict[str, Any] = {"value": [], "@odata.deltaLink": f"{graph.base_url}/users/delta?t=1"}
                else:
                    payload = {"error": {"code": "TooManyRequests", "message": "Too many requests."}}
                data = json.dumps(payload).encode()
                self.send_response(status)  # also sends Date, which Retry-After dates are measured from
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value() if callable(value) else value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1.0"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def emulator() -> Iterator[GraphEmulator]:
    with GraphEmulator(generate_tenant(40, seed=10)) as running:
        yield running


@pytest.fixture
def token_endpoint(tmp_path: Path) -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint(tmp_path)
    yield endpoint
    endpoint.stop()


@pytest.fixture
def scripted_graph() -> Iterator[ScriptedGraph]:
    graph = ScriptedGraph()
    yield graph
    graph.stop()


def _connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, tenant_id: str = "contoso-tenant", **extra: Any) -> str:
    """An msgraph connection as JSON in AIRFLOW_CONN_<ID>, as the README tells operators to add it."""
    connection = {
        "conn_type": "msgraph",
        "login": "app-client-id",
        "password": SECRET,
        "extra": {"tenant_id": tenant_id, **extra},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    return conn_id


def _emulated(monkeypatch: pytest.MonkeyPatch, conn_id: str, emulator: GraphEmulator) -> str:
    """The emulator as Graph; allowed_hosts excludes it, so no token is requested (conftest's shape)."""
    return _connection(monkeypatch, conn_id, base_url=emulator.base_url, allowed_hosts="graph.microsoft.com")


def _signed_in(monkeypatch: pytest.MonkeyPatch, conn_id: str, base_url: str, token: TokenEndpoint) -> str:
    """Graph at `base_url` with every request carrying a token from the local Entra stand-in."""
    return _connection(
        monkeypatch,
        conn_id,
        base_url=base_url,
        allowed_hosts="127.0.0.1",  # the token goes to hosts listed here: the local Graph
        authority=token.authority,
        verify=str(token.ca_file),
    )


def _get(client: GraphClient, *urls: str, query: dict[str, str] | None = None) -> Any:
    """GET each URL in turn (the first with `query`) through one client; the adapter is closed afterwards."""

    async def run() -> Any:
        try:
            body = None
            for index, url in enumerate(urls):
                body = await client.get(url, query=query if index == 0 else None)
            return body
        finally:
            await client.close()  # the hook caches adapters per conn id for the whole process

    return asyncio.run(run())


def _stopped(client: GraphClient, *urls: str, query: dict[str, str] | None = None) -> Exception:
    """The error a GET raises, checked to be a stop task retries cannot help (`SyncStopped`)."""
    with pytest.raises(Exception) as caught:
        _get(client, *urls, query=query)
    error = caught.value
    assert issubclass(type(error), pipeline.SyncStopped), f"{type(error).__name__} would be retried: {error}"
    assert SECRET not in str(error)
    return error


# ---------------------------------------------------------------------------------------------- defect 5
@pytest.mark.timeout(90)  # sleeping as Graph asked would take a day
def test_defect5_day_long_retry_after_fails_fast_naming_graphs_value(monkeypatch, emulator) -> None:
    conn_id = _emulated(monkeypatch, "msgraph_d5_day", emulator)
    first = _get(GraphClient(conn_id), "users/delta", query={"$top": "10"})
    next_link = first["@odata.nextLink"]
    emulator.faults = FaultPlan(rules=(FaultRule(path_prefix="/v1.0/users", status=429, retry_after=86400),))
    before = emulator.request_count

    client = GraphClient(conn_id)
    error = _stopped(client, next_link)
    message = str(error)
    assert emulator.request_count - before == 1, "the throttled request was retried instead of failing at once"
    assert client.waited == 0
    assert "Retry-After: 86400" in message
    assert "source.max_retry_after_seconds" in message and "300 s" in message
    assert "/v1.0/users/delta" in message and conn_id in message
    assert "next scheduled run tries again" in message and "clear the extract task" in message
    token = next_link.split("?", 1)[1]
    assert token not in message, "the URL's query (the skip token) must not be in the message"


@pytest.mark.timeout(90)
def test_defect5_retry_after_within_the_cap_is_still_honoured(monkeypatch, emulator) -> None:
    conn_id = _emulated(monkeypatch, "msgraph_d5_within", emulator)
    emulator.faults = FaultPlan(rules=(FaultRule(path_prefix="/v1.0/users", status=429, retry_after=1, ordinals=(1,)),))
    client = GraphClient(conn_id, retry=RetryPolicy(max_retry_after=1.0))
    body = _get(client, "users/delta", query={"$top": "5"})
    assert len(body["value"]) == 5
    assert emulator.request_count == 2 and client.waited == 1.0


@pytest.mark.timeout(90)
def test_defect5_total_retry_budget_spent_fails_naming_max_retry_seconds(monkeypatch, emulator) -> None:
    conn_id = _emulated(monkeypatch, "msgraph_d5_budget", emulator)
    emulator.faults = FaultPlan(rules=(FaultRule(path_prefix="/v1.0/users", status=429, retry_after=1),))
    client = GraphClient(conn_id, retry=RetryPolicy(max_total_wait=2.5))

    message = str(_stopped(client, "users/delta", query={"$top": "5"}))
    # Two one-second waits fit in 2.5 s; the third request's wait would not, so it stops without sleeping.
    assert emulator.request_count == 3
    assert client.waited == 2.0
    assert "source.max_retry_seconds" in message and "(2.5 s)" in message
    assert "Retry-After: 1" in message and conn_id in message and "users/delta" in message
    assert "next scheduled run tries again" in message


@pytest.mark.timeout(90)
def test_defect5_retry_after_as_an_http_date(monkeypatch, scripted_graph) -> None:
    conn_id = _connection(
        monkeypatch, "msgraph_d5_date", base_url=scripted_graph.base_url, allowed_hosts="graph.microsoft.com"
    )

    def in_seconds(seconds: float) -> Any:
        return lambda: email.utils.formatdate(time.time() + seconds, usegmt=True)

    # A date a day ahead is a day-long wait: refused at once, quoting Graph's date.
    tomorrow = email.utils.formatdate(time.time() + 86400, usegmt=True)
    scripted_graph.script = [(429, {"Retry-After": tomorrow})]
    client = GraphClient(conn_id)
    message = str(_stopped(client, "users/delta"))
    assert scripted_graph.request_count == 1
    assert f"Retry-After: {tomorrow}" in message and "source.max_retry_after_seconds" in message
    assert "about 8640" in message or "about 8639" in message  # ~86400 s, measured from the answer's Date

    # A date two seconds ahead is honoured (about two seconds, not a backoff guess); a past date means now.
    scripted_graph.script = [(503, {"Retry-After": in_seconds(2)}), (429, {"Retry-After": in_seconds(-30)})]
    client = GraphClient(conn_id, retry=RetryPolicy(base_delay=60.0, max_delay=60.0))
    assert _get(client, "users/delta")["value"] == []
    assert scripted_graph.request_count == 4
    assert 1.0 <= client.waited <= 3.0


def test_defect5_retry_after_values_parse_as_seconds_or_http_dates() -> None:
    from frankli_sync.sources.graph import retry_after_seconds

    now = dt.datetime(2026, 11, 30, 12, 0, 0, tzinfo=dt.UTC)
    assert retry_after_seconds("86400", now) == 86400.0
    assert retry_after_seconds(" 7 ", now) == 7.0
    assert retry_after_seconds("Tue, 01 Dec 2026 12:00:00 GMT", now) == 86400.0
    assert retry_after_seconds("Mon, 30 Nov 2026 11:59:00 GMT", now) == 0.0  # already passed: retry now
    for unusable in (None, "", "-5", "soon", "nan", "inf", "Mon, 99 Foo 2026"):
        assert retry_after_seconds(unusable, now) is None, unusable


@pytest.mark.timeout(90)
def test_defect5_negative_or_garbage_retry_after_falls_back_to_backoff(monkeypatch, scripted_graph) -> None:
    conn_id = _connection(
        monkeypatch, "msgraph_d5_garbage", base_url=scripted_graph.base_url, allowed_hosts="graph.microsoft.com"
    )
    scripted_graph.script = [
        (429, {"Retry-After": "-5"}),
        (429, {"Retry-After": "soon"}),
        (503, {"Retry-After": "nan"}),
    ]
    client = GraphClient(conn_id, retry=RetryPolicy(base_delay=0.01, max_delay=0.02))
    assert _get(client, "users/delta")["value"] == []
    assert scripted_graph.request_count == 4
    assert client.retries == 3 and client.waited < 0.1


# ---------------------------------------------------------------------------------------------- defect 8
@pytest.mark.timeout(90)
def test_defect8_placeholder_tenant_id_fails_without_retry(monkeypatch) -> None:
    # The README's connection as copied: no base_url (real Graph), the tenant id left as its placeholder.
    conn_id = _connection(monkeypatch, "msgraph_d8_placeholder", tenant_id="<tenant id>")
    client = GraphClient(conn_id)
    message = str(_stopped(client, "users/delta", query={"$top": "999"}))
    assert client.requests == 0 and client.retries == 0, "azure-identity refuses it locally: nothing was sent"
    assert "extra.tenant_id" in message and "'<tenant id>'" in message and conn_id in message
    assert "Invalid tenant ID provided" in message
    assert "without retries" in message


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("blank", "field"), [("login", "login"), ("password", "password")])
def test_defect8_connection_without_client_id_or_secret_fails_naming_the_field(monkeypatch, blank, field) -> None:
    conn_id = f"msgraph_d8_no_{blank}"
    connection = {"conn_type": "msgraph", "login": "app-client-id", "password": SECRET}
    connection[blank] = ""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({**connection, "extra": {"tenant_id": "t1"}}))
    client = GraphClient(conn_id)
    message = str(_stopped(client, "users/delta"))
    assert client.requests == 0
    assert f"set {field} to" in message and conn_id in message


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("refusal", "field"),
    [("tenant", "extra.tenant_id"), ("secret", "password"), ("client", "login")],
)
def test_defect8_token_endpoint_refusal_fails_at_once_naming_the_field(
    monkeypatch, emulator, token_endpoint, refusal, field
) -> None:
    conn_id = _signed_in(monkeypatch, f"msgraph_d8_token_{refusal}", emulator.base_url, token_endpoint)
    token_endpoint.refuse = refusal
    client = GraphClient(conn_id)
    message = str(_stopped(client, "users/delta", query={"$top": "5"}))
    status, _, description = ENTRA_ERRORS[refusal]
    assert len(token_endpoint.requests) == 1, "a refused credential must not be retried"
    assert token_endpoint.requests[0]["path"] == ["/contoso-tenant/oauth2/v2.0/token"]
    assert emulator.request_count == 0, "no Graph request goes out without a token"
    assert f"set {field} to" in message and conn_id in message
    assert f"HTTP {status}" in message and description.split(":")[0] in message
    assert "Trace ID" not in message and "without retries" in message


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("status", "code", "named"),
    [
        (401, "InvalidAuthenticationToken", ("extra.tenant_id", "login", "password")),
        (403, "Authorization_RequestDenied", ("User.Read.All", "GroupMember.Read.All", "admin consent")),
    ],
)
def test_defect8_graph_refusal_persisting_after_one_token_refresh_fails_naming_the_fields(
    monkeypatch, emulator, token_endpoint, status, code, named
) -> None:
    conn_id = _signed_in(monkeypatch, f"msgraph_d8_graph_{status}", emulator.base_url, token_endpoint)
    emulator.faults = FaultPlan(rules=(FaultRule(path_prefix="/v1.0", status=status, code=code),))
    client = GraphClient(conn_id)
    message = str(_stopped(client, "users/delta", query={"$top": "5"}))
    assert emulator.request_count == 2, "one retry with a fresh token, then stop"
    assert len(token_endpoint.requests) == 2, "the retry must use a newly fetched token, not the cached one"
    assert f"HTTP {status}" in message and code in message and conn_id in message
    for name in named:
        assert name in message
    assert "without retries" in message


@pytest.mark.timeout(90)
def test_defect8_graph_401_once_then_200_succeeds_after_the_refresh(monkeypatch, emulator, token_endpoint) -> None:
    conn_id = _signed_in(monkeypatch, "msgraph_d8_refresh", emulator.base_url, token_endpoint)
    emulator.faults = FaultPlan(
        rules=(FaultRule(path_prefix="/v1.0", status=401, code="InvalidAuthenticationToken", ordinals=(1,)),)
    )
    client = GraphClient(conn_id)
    body = _get(client, "users/delta", query={"$top": "5"})
    assert len(body["value"]) == 5
    assert emulator.request_count == 2 and len(token_endpoint.requests) == 2
    assert client.token_refreshes == 1


@pytest.mark.timeout(90)
def test_defect8_graph_400_to_our_request_is_not_retried(monkeypatch, emulator) -> None:
    conn_id = _emulated(monkeypatch, "msgraph_d8_400", emulator)
    emulator.faults = FaultPlan(rules=(FaultRule(path_prefix="/v1.0/users", status=400, code="BadRequest"),))
    message = str(_stopped(GraphClient(conn_id), "users/delta", query={"$top": "5"}))
    assert emulator.request_count == 1
    assert "HTTP 400" in message and "BadRequest" in message and "source.page_size" in message
    assert "full_sync=true" in message


@pytest.mark.timeout(90)
def test_defect8_missing_msgraph_connection_names_the_conn_id(monkeypatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_MSGRAPH_D8_NOWHERE", raising=False)
    client = GraphClient("msgraph_d8_nowhere")
    message = str(_stopped(client, "users/delta"))
    assert client.requests == 0
    assert "'msgraph_d8_nowhere'" in message
    assert "AIRFLOW_CONN_MSGRAPH_D8_NOWHERE" in message and "Admin > Connections" in message


def test_defect8_missing_frankli_database_connection_is_a_sync_stop(monkeypatch) -> None:
    from frankli_sync.connections import engine_for

    monkeypatch.delenv("AIRFLOW_CONN_FRANKLI_D8_NOWHERE", raising=False)
    with pytest.raises(Exception) as caught:
        engine_for("frankli_d8_nowhere")
    error = caught.value
    assert issubclass(type(error), pipeline.SyncStopped), f"{type(error).__name__} would be retried: {error}"
    message = str(error)
    assert "'frankli_d8_nowhere'" in message and "AIRFLOW_CONN_FRANKLI_D8_NOWHERE" in message
    assert "extra.sqlalchemy_url" in message and "Admin > Connections" in message
