"""The agent's client against real local HTTPS servers (mutual TLS with a real CA)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runas.agent.client import AgentRevoked, ManagementClient, ServersUnavailable, tls_context
from runas.crypto.ca import CertificateAuthority, generate_tls_key, make_csr
from runas.errors import ConfigurationError, Conflict, InvalidInput, NotFound
from support.agent_https import HttpsServer, Pki, Request, Response, problem

Start = Callable[..., HttpsServer]


def config_server(name: str) -> Callable[[Request], Response]:
    def respond(request: Request) -> Response:
        if request.path == "/agent/v1/config":
            if request.headers.get("if-none-match") == '"1.0"':
                return 304, {"ETag": '"1.0"'}, None
            return 200, {"ETag": '"1.0"'}, {"agent": request.agent, "served_by": name}
        if request.path == "/agent/v1/reports":
            return 200, {}, {"accepted": len(request.body["results"])}
        return problem(404, "not-found")

    return respond


def client_for(pki: Pki, *servers: HttpsServer | str) -> ManagementClient:
    cert, key = pki.agent_files("a.contoso.com")
    urls = [s if isinstance(s, str) else s.url for s in servers]
    return ManagementClient(urls, ca_file=pki.ca_file, cert_file=cert, key_file=key, timeout_s=5)


def test_mutual_tls_config_and_etag(pki: Pki, https_servers: Start) -> None:
    server = https_servers(config_server("one"))
    with client_for(pki, server) as client:
        fetched = client.fetch_config(None)
        assert fetched is not None
        assert fetched.etag == '"1.0"'
        assert fetched.document == {"agent": "a.contoso.com", "served_by": "one"}
        assert client.fetch_config('"1.0"') is None
        assert client.send_report({"report_id": "r", "epoch": 1, "results": [{}, {}]}) == 2


def test_failover_moves_on_and_sticks(pki: Pki, https_servers: Start) -> None:
    one = https_servers(config_server("one"))
    two = https_servers(config_server("two"))
    with client_for(pki, one, two) as client:
        fetched = client.fetch_config(None)
        assert fetched is not None
        assert fetched.document["served_by"] == "one"
        one.stop()
        fetched = client.fetch_config(None)
        assert fetched is not None
        assert fetched.document["served_by"] == "two"
        assert client.current == two.url
        one.start()  # back, but the client sticks to the one that works
        fetched = client.fetch_config(None)
        assert fetched is not None
        assert fetched.document["served_by"] == "two"
        assert len([r for r in two.requests if r.path == "/agent/v1/config"]) == 2


def test_a_5xx_fails_over_and_all_down_is_one_error(pki: Pki, https_servers: Start) -> None:
    broken = https_servers(lambda request: problem(503, "unavailable"))
    two = https_servers(config_server("two"))
    with client_for(pki, broken, two) as client:
        fetched = client.fetch_config(None)
        assert fetched is not None
        assert fetched.document["served_by"] == "two"
        two.stop()
        with pytest.raises(ServersUnavailable, match="no management server answered"):
            client.fetch_config(None)


@pytest.mark.parametrize(
    ("response", "error", "match"),
    [
        (problem(404, "not-found", "no such route"), NotFound, "no such route"),
        (problem(409, "conflict", "other keys"), Conflict, "other keys"),
        (problem(422, "invalid-input", "csr: bad"), InvalidInput, "csr: bad"),
        ((400, {}, {"no": "problem"}), InvalidInput, "Bad Request"),
    ],
)
def test_a_4xx_is_not_a_reason_to_fail_over(
    pki: Pki, https_servers: Start, response: Response, error: type[Exception], match: str
) -> None:
    refusing = https_servers(lambda request: response)
    two = https_servers(config_server("two"))
    with client_for(pki, refusing, two) as client:
        with pytest.raises(error, match=match):
            client.fetch_config(None)
        assert client.current == refusing.url
    assert two.requests == []


@pytest.mark.parametrize("code", ["agent-removed", "agent-not-approved"])
def test_revocation_is_typed(pki: Pki, https_servers: Start, code: str) -> None:
    server = https_servers(lambda request: problem(403, code, "removed by admin"))
    two = https_servers(config_server("two"))
    with client_for(pki, server, two) as client, pytest.raises(AgentRevoked) as err:
        client.fetch_config(None)
    assert err.value.kind == code
    assert two.requests == []


def test_a_server_from_another_ca_is_not_trusted(
    pki: Pki, https_servers: Start, tmp_path: Path
) -> None:
    server = https_servers(config_server("one"))
    other = CertificateAuthority.create("impostor", now=datetime.now(UTC))
    other_ca = tmp_path / "other.pem"
    other_ca.write_bytes(other.certificate_pem())
    client = ManagementClient([server.url], ca_file=other_ca)
    with client, pytest.raises(ServersUnavailable):
        client.fetch_config(None)
    assert server.requests == []


def test_a_server_requiring_a_client_certificate_refuses_none(
    pki: Pki, https_servers: Start
) -> None:
    server = https_servers(config_server("one"))
    client = ManagementClient([server.url], ca_file=pki.ca_file, timeout_s=5)
    with client, pytest.raises(ServersUnavailable):
        client.fetch_config(None)
    assert server.requests == []


def test_enrolment_without_a_certificate(pki: Pki, https_servers: Start) -> None:
    key = generate_tls_key()
    csr = make_csr(key, "a.contoso.com")

    def respond(request: Request) -> Response:
        assert request.path == "/agent/v1/enrol"
        assert request.agent is None
        assert request.body["token"] == "tok"
        assert len(base64.b64decode(request.body["hpke_public_key"])) == 32
        if len(server.requests) < 2:
            return 200, {}, {"status": "pending", "certificate": None}
        return 200, {}, {"status": "approved", "certificate": "-----BEGIN CERTIFICATE-----"}

    server = https_servers(respond, require_cert=False)
    with ManagementClient([server.url], ca_file=pki.ca_file) as client:
        kwargs = {
            "agent_id": "a.contoso.com",
            "hpke_public_key": bytes(range(32)),
            "csr_pem": csr,
            "token": "tok",
            "agent_version": "0.1.0",
        }
        assert client.enrol(**kwargs).status == "pending"  # type: ignore[arg-type]
        answer = client.enrol(**kwargs)  # type: ignore[arg-type]
        assert answer.status == "approved"
        assert answer.certificate == b"-----BEGIN CERTIFICATE-----"


def test_an_unreadable_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="ca_file"):
        tls_context(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(ConfigurationError, match="ca_file"):
        tls_context(tmp_path / "junk.pem")
