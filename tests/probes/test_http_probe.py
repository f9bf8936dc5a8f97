"""The ``http`` probe, in-process, against a real Apache httpd (tests/support/peers/apache.py):
basic and digest on plain HTTP, TLS client certificates (PEM and PKCS#12) on HTTPS with
``SSLVerifyClient require``; refusals typed as logon failures, unreachable peers unknown, and
canary secrets nowhere in results or logs."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import NoEncryption, pkcs12

from runas.agent.handoff import NO_CREDENTIAL, CredentialDocument, credential_document
from runas.agent.probes.base import ProbeContext, probe_for
from runas.agent.probes.http import PROBE, parse_config
from runas.agent.probes.result import ProbeResult, ProbeState
from runas.agent.scrub import Scrubber
from runas.domain.health import AuthFailureKind
from runas.errors import InvalidInput
from support.peers.apache import BASIC_REALM, Apache, Issued

pytestmark = [pytest.mark.peer]

BASIC_USER = "webmon"
DIGEST_USER = "digestmon"
#: canaries: each secret of the run, and what a wrong attempt sends
CANARY = {
    "basic": f"canary-basic-{secrets.token_urlsafe(12)}",
    "digest": f"canary-digest-{secrets.token_urlsafe(12)}",
    "wrong": f"canary-wrong-{secrets.token_urlsafe(12)}",
}


@pytest.fixture(scope="module")
def apache() -> Iterator[Apache]:
    server = Apache.start(
        basic_users={BASIC_USER: CANARY["basic"]}, digest_users={DIGEST_USER: CANARY["digest"]}
    )
    try:
        yield server
    finally:
        server.stop()


def _document(kind: str, public: dict[str, str], secret: dict[str, str]) -> CredentialDocument:
    return credential_document(
        kind, public, secret, account_name=f"web {kind}", account_id=7, secret_version=1
    )


def basic(password: str = CANARY["basic"], user: str = BASIC_USER) -> CredentialDocument:
    return _document("basic", {"user": user}, {"password": password})


def digest(password: str = CANARY["digest"], user: str = DIGEST_USER) -> CredentialDocument:
    return _document("digest", {"user": user}, {"password": password})


def binary(data: bytes) -> CredentialDocument:
    return _document("binary", {}, {"data": base64.b64encode(data).decode()})


def run(
    config: dict[str, Any], document: CredentialDocument = NO_CREDENTIAL, timeout_s: float = 5.0
) -> ProbeResult:
    context = ProbeContext(
        workflow="Runas.Web.SiteAvailability",
        kind="monitor",
        object="Runas.Web.Site:web1.test;site",
        computer="web1.test",
        config=config,
        raw_config=config,
        properties={},
        document=document,
        timeout_s=timeout_s,
        scrubber=Scrubber(document.secret_values()),
    )
    return PROBE.run(context)


def tls(apache: Apache, **extra: Any) -> dict[str, Any]:
    return {"url": f"{apache.https_url}/", "ca_file": str(apache.ca_file), **extra}


def _no_canary(result: ProbeResult, *extra: str) -> None:
    text = json.dumps(result.to_dict())
    for canary in (*CANARY.values(), *extra):
        assert canary not in text


def _pkcs12(issued: Issued) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        b"client", issued.key, issued.certificate, None, NoEncryption()
    )


# -- success -----------------------------------------------------------------------------------


def test_the_registry_finds_the_http_probe() -> None:
    assert probe_for("http") is PROBE


def test_basic_credentials_are_accepted(apache: Apache) -> None:
    result = run({"url": f"{apache.http_url}/basic/", "expect": "basic ok"}, basic())
    assert result.state is ProbeState.HEALTHY, result.message
    assert result.auth_failure is None
    assert result.perf["status"] == 200
    assert result.perf["latency_ms"] > 0
    assert result.message.startswith(f"HTTP 200 from {apache.http_url}/basic/ in ")
    # A success says something about the credential: Run As health sees it as OK.
    assert result.credential_report(_now(), 1) is not None
    _no_canary(result)


def test_digest_credentials_are_accepted(apache: Apache) -> None:
    result = run({"url": f"{apache.http_url}/digest/", "expect": "digest ok"}, digest())
    assert result.state is ProbeState.HEALTHY, result.message
    _no_canary(result)


def test_a_pem_client_certificate_is_accepted(apache: Apache) -> None:
    result = run(tls(apache, expect="open page"), binary(apache.pki.client.bundle))
    assert result.state is ProbeState.HEALTHY, result.message
    assert result.perf["status"] == 200


def test_a_pkcs12_client_certificate_is_accepted(apache: Apache) -> None:
    result = run(tls(apache), binary(_pkcs12(apache.pki.client)))
    assert result.state is ProbeState.HEALTHY, result.message


def test_the_client_certificate_file_is_gone_after_the_run(apache: Apache) -> None:
    before = set(Path("/dev/shm").glob("runas-cert-*"))
    run(tls(apache), binary(apache.pki.client.bundle))
    assert set(Path("/dev/shm").glob("runas-cert-*")) == before


def test_without_an_account_the_request_carries_no_credential(apache: Apache) -> None:
    assert run({"url": f"{apache.http_url}/"}).state is ProbeState.HEALTHY
    # A page that wants credentials, requested without: critical, and typed (a run with no
    # account is never reported to Run As health).
    result = run({"url": f"{apache.http_url}/basic/"})
    assert result.state is ProbeState.CRITICAL
    # ... unless 401 is what the workflow expects (the page must stay protected).
    protected = run({"url": f"{apache.http_url}/basic/", "expected_status": [401]})
    assert protected.state is ProbeState.HEALTHY, protected.message


def test_verification_can_be_switched_off(apache: Apache) -> None:
    result = run({"url": f"{apache.https_url}/", "verify": False}, binary(apache.pki.client.bundle))
    assert result.state is ProbeState.HEALTHY, result.message


# -- refused credentials -----------------------------------------------------------------------


def test_a_wrong_basic_password_is_a_logon_failure(apache: Apache) -> None:
    result = run({"url": f"{apache.http_url}/basic/"}, basic(CANARY["wrong"]))
    assert result.state is ProbeState.CRITICAL
    assert result.auth_failure is not None
    assert result.auth_failure.kind is AuthFailureKind.LOGON_FAILED
    assert result.message.startswith(f"HTTP 401 from {apache.http_url}/basic/")
    assert f"realm '{BASIC_REALM}'" in result.message
    assert result.perf["status"] == 401
    _no_canary(result)


def test_a_wrong_digest_password_is_a_logon_failure(apache: Apache) -> None:
    result = run({"url": f"{apache.http_url}/digest/"}, digest(CANARY["wrong"]))
    assert result.auth_failure is not None
    assert result.auth_failure.kind is AuthFailureKind.LOGON_FAILED
    assert "Digest" in result.message
    _no_canary(result)


def test_a_basic_account_on_a_digest_page_says_what_the_server_wants(apache: Apache) -> None:
    result = run({"url": f"{apache.http_url}/digest/"}, basic())
    assert result.auth_failure is not None
    assert "does not offer Basic authentication" in result.message
    assert "scheme Digest" in result.message


def test_an_unknown_user_is_a_logon_failure(apache: Apache) -> None:
    result = run({"url": f"{apache.http_url}/basic/"}, basic(user="nobody-here"))
    assert result.auth_failure is not None


def test_a_client_certificate_from_another_ca_is_a_logon_failure(apache: Apache) -> None:
    result = run(tls(apache), binary(apache.pki.foreign_client.bundle))
    assert result.state is ProbeState.CRITICAL, result.message
    assert result.auth_failure is not None
    assert result.auth_failure.kind is AuthFailureKind.LOGON_FAILED
    assert "refused the TLS client certificate" in result.message


def test_no_client_certificate_where_one_is_required_is_a_logon_failure(apache: Apache) -> None:
    result = run(tls(apache), basic())
    assert result.auth_failure is not None, result.message
    assert "client certificate" in result.message


# -- what proves nothing about the credential --------------------------------------------------


def test_an_unreachable_server_is_unknown() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connection refused
        result = run({"url": f"http://127.0.0.1:{port}/basic/"}, basic())
    assert result.state is ProbeState.UNKNOWN
    assert result.auth_failure is None
    assert "cannot connect to" in result.message
    assert result.credential_report(_now(), 1) is None


def test_an_unknown_host_is_unknown() -> None:
    result = run({"url": "http://no-such-host.invalid/"}, basic())
    assert result.state is ProbeState.UNKNOWN
    assert "cannot connect to http://no-such-host.invalid" in result.message


def test_a_silent_server_times_out_as_unknown() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)  # accepts into the backlog, never answers
        port = sock.getsockname()[1]
        started = time.monotonic()
        result = run({"url": f"http://127.0.0.1:{port}/"}, basic(), timeout_s=1.0)
    assert time.monotonic() - started < 3.0
    assert result.state is ProbeState.UNKNOWN
    assert "did not answer within 1 s" in result.message


def test_an_untrusted_server_certificate_is_unknown(apache: Apache) -> None:
    result = run({"url": f"{apache.https_url}/"}, binary(apache.pki.client.bundle))
    assert result.state is ProbeState.UNKNOWN
    assert result.auth_failure is None
    assert "is not trusted" in result.message


def test_plain_http_to_the_tls_port_is_unknown_or_an_error_status(apache: Apache) -> None:
    result = run({"url": f"http://127.0.0.1:{apache.https_port}/"})
    assert result.state in (ProbeState.UNKNOWN, ProbeState.CRITICAL)
    assert result.auth_failure is None


def test_a_missing_ca_file_is_unknown(apache: Apache, tmp_path: Path) -> None:
    result = run({"url": f"{apache.https_url}/", "ca_file": str(tmp_path / "none.pem")}, basic())
    assert result.state is ProbeState.UNKNOWN
    assert result.message.startswith("cannot load ca_file")


def test_a_binary_account_that_is_no_certificate_is_unknown(apache: Apache) -> None:
    result = run(tls(apache), binary(b"certainly not a certificate"))
    assert result.state is ProbeState.UNKNOWN
    assert "no usable client certificate" in result.message


# -- what was measured -------------------------------------------------------------------------


def test_an_unexpected_status_is_critical(apache: Apache) -> None:
    result = run({"url": f"{apache.http_url}/missing"})
    assert result.state is ProbeState.CRITICAL
    assert "HTTP 404" in result.message
    assert "expected 2xx" in result.message
    assert result.perf["status"] == 404
    ok = run({"url": f"{apache.http_url}/missing", "expected_status": "404, 410"})
    assert ok.state is ProbeState.HEALTHY


def test_a_body_that_does_not_match_is_critical(apache: Apache) -> None:
    result = run({"url": f"{apache.http_url}/basic/", "expect": "^nope$"}, basic())
    assert result.state is ProbeState.CRITICAL
    assert "does not match" in result.message


def test_latency_thresholds(apache: Apache) -> None:
    url = f"{apache.http_url}/"
    assert run({"url": url, "warning_ms": 0}).state is ProbeState.WARNING
    assert run({"url": url, "warning_ms": 0, "critical_ms": 0}).state is ProbeState.CRITICAL
    assert run({"url": url, "warning_ms": 60000}).state is ProbeState.HEALTHY


def test_head_requests(apache: Apache) -> None:
    result = run({"url": f"{apache.http_url}/basic/", "method": "HEAD"}, basic())
    assert result.state is ProbeState.HEALTHY, result.message


def test_redirects_on_the_same_host_are_followed(apache: Apache) -> None:
    result = run({"url": f"{apache.http_url}/redirect-here", "expect": "basic ok"}, basic())
    assert result.state is ProbeState.HEALTHY, result.message


def test_credentials_never_follow_a_redirect_to_another_host(apache: Apache) -> None:
    result = run({"url": f"{apache.http_url}/redirect-away"}, basic())
    assert result.state is ProbeState.CRITICAL
    assert "not followed" in result.message
    assert result.perf["status"] == 302


def test_configuration_errors_name_the_key() -> None:
    with pytest.raises(InvalidInput, match="url is required"):
        parse_config({})
    with pytest.raises(InvalidInput, match="user:password@"):
        parse_config({"url": "http://u:p@example.test/"})
    with pytest.raises(InvalidInput, match="method"):
        parse_config({"url": "http://example.test/", "method": "POST"})
    with pytest.raises(InvalidInput, match="unknown config key 'pasword'"):
        parse_config({"url": "http://example.test/", "pasword": "x"})
    with pytest.raises(InvalidInput, match="expected_status"):
        parse_config({"url": "http://example.test/", "expected_status": "ok"})
    with pytest.raises(InvalidInput, match="warning_ms"):
        parse_config({"url": "http://example.test/", "warning_ms": 10, "critical_ms": 5})


# -- canaries ----------------------------------------------------------------------------------


def test_no_canary_in_results_or_logs(apache: Apache, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pem = apache.pki.client.bundle
    key_line = pem.decode().splitlines()[1]  # a line of the private key
    results = [
        run({"url": f"{apache.http_url}/basic/"}, basic()),
        run({"url": f"{apache.http_url}/basic/"}, basic(CANARY["wrong"])),
        run({"url": f"{apache.http_url}/digest/"}, digest()),
        run({"url": f"{apache.http_url}/digest/"}, digest(CANARY["wrong"])),
        run({"url": f"{apache.http_url}/redirect-away"}, basic()),
        run(tls(apache), binary(pem)),
        run(tls(apache), binary(apache.pki.foreign_client.bundle)),
    ]
    assert caplog.records  # httpx and httpcore did log: the check below is not vacuous
    for result in results:
        _no_canary(result, key_line)
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for canary in (*CANARY.values(), key_line, base64.b64encode(CANARY["basic"].encode()).decode()):
        assert canary not in logged


def test_concurrent_runs_do_not_mix_credentials(apache: Apache) -> None:
    outcomes: dict[str, ProbeState] = {}

    def one(name: str, document: CredentialDocument, config: dict[str, Any]) -> None:
        outcomes[name] = run(config, document).state

    page = {"url": f"{apache.http_url}/basic/"}
    threads = [
        threading.Thread(target=one, args=("good", basic(), page)),
        threading.Thread(target=one, args=("bad", basic(CANARY["wrong"]), page)),
        threading.Thread(target=one, args=("cert", binary(apache.pki.client.bundle), tls(apache))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == {
        "good": ProbeState.HEALTHY,
        "bad": ProbeState.CRITICAL,
        "cert": ProbeState.HEALTHY,
    }


def _now() -> datetime:
    return datetime.now(UTC)
