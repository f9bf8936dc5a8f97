"""The management group's CA: what it issues, what it refuses, and a real mutual-TLS handshake
on loopback with Python's ``ssl`` module (server certificate and agent client certificate both
issued by the CA; the server maps the verified peer certificate to the agent id)."""

from __future__ import annotations

import pickle
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runas.crypto.ca import (
    AGENT_URI_PREFIX,
    CertificateAuthority,
    agent_id_of,
    check_agent_id,
    generate_tls_key,
    load_tls_key,
    make_csr,
    tls_key_to_pem,
)
from runas.errors import ConfigurationError, InvalidInput

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("runas MG1 agents", now=NOW)


def issue(
    ca: CertificateAuthority, agent_id: str, *, now: datetime = NOW, days: int = 365
) -> bytes:
    return ca.issue_agent_certificate(
        make_csr(generate_tls_key(), agent_id), agent_id=agent_id, now=now, days=days
    )


def ext(
    cert: x509.Certificate, kind: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def forged_csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A CSR that asks for everything it should not get."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "administrator"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "runas"),
                ]
            )
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(AGENT_URI_PREFIX + "mgmt-server-1"),
                    x509.DNSName("mgmt.example.com"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


# --- the CA certificate ----------------------------------------------------------------------


def test_ca_certificate_is_a_self_signed_p256_ca_with_pathlen_zero(
    ca: CertificateAuthority,
) -> None:
    cert = ca.certificate
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "runas MG1 agents"
    cert.verify_directly_issued_by(cert)
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
    constraints = ext(cert, x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value == x509.BasicConstraints(ca=True, path_length=0)
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature
    assert cert.not_valid_after_utc - NOW == timedelta(days=3650)
    assert cert.not_valid_before_utc < NOW


def test_pem_round_trip_with_passphrase(ca: CertificateAuthority) -> None:
    cert_pem, key_pem = ca.to_pem(b"correct horse")
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in key_pem
    loaded = CertificateAuthority.load(cert_pem, key_pem, b"correct horse")
    assert loaded.certificate == ca.certificate
    # The loaded CA issues certificates that the original verifies.
    ca.verify_issued(issue(loaded, "agent-7"), now=NOW)


def test_pem_round_trip_without_passphrase(ca: CertificateAuthority) -> None:
    cert_pem, key_pem = ca.to_pem(None)
    assert b"BEGIN PRIVATE KEY" in key_pem
    assert CertificateAuthority.load(cert_pem, key_pem).certificate == ca.certificate


def test_loading_refuses_bad_passphrases_and_mismatched_keys(ca: CertificateAuthority) -> None:
    cert_pem, key_pem = ca.to_pem(b"correct horse")
    for passphrase in (b"wrong", None):
        with pytest.raises(ConfigurationError, match="wrong passphrase"):
            CertificateAuthority.load(cert_pem, key_pem, passphrase)
    _, other_key = CertificateAuthority.create("other", now=NOW).to_pem(None)
    with pytest.raises(ConfigurationError, match="does not belong"):
        CertificateAuthority.load(cert_pem, other_key)
    with pytest.raises(ConfigurationError, match="not a PEM certificate"):
        CertificateAuthority.load(b"nope", other_key)
    # An agent certificate with its own key is no CA.
    key = generate_tls_key()
    agent_pem = ca.issue_agent_certificate(make_csr(key, "a1"), agent_id="a1", now=NOW)
    with pytest.raises(ConfigurationError, match="not a CA"):
        CertificateAuthority.load(agent_pem, tls_key_to_pem(key))


def test_empty_passphrase_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(InvalidInput, match="non-empty"):
        ca.to_pem(b"")


def test_repr_shows_no_key_and_pickling_is_refused(ca: CertificateAuthority) -> None:
    _, key_pem = ca.to_pem(None)
    body = b"".join(key_pem.splitlines()[1:-1]).decode()
    assert body[:20] not in repr(ca)
    assert "runas MG1 agents" in repr(ca)
    with pytest.raises(TypeError):
        pickle.dumps(ca)


@pytest.mark.parametrize("name", ["", "x" * 65])
def test_ca_name_must_fit_a_common_name(name: str) -> None:
    with pytest.raises(InvalidInput):
        CertificateAuthority.create(name, now=NOW)


def test_naive_now_is_a_caller_error(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="timezone"):
        CertificateAuthority.create("x", now=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone"):
        ca.verify_issued(issue(ca, "a1"), now=datetime(2026, 1, 1))


# --- agent certificates ----------------------------------------------------------------------


def test_agent_certificate_has_the_agent_identity_and_client_auth_only(
    ca: CertificateAuthority,
) -> None:
    key = generate_tls_key()
    cert = x509.load_pem_x509_certificate(
        ca.issue_agent_certificate(make_csr(key, "web-01.corp"), agent_id="web-01.corp", now=NOW)
    )
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web-01.corp")])
    assert cert.issuer == ca.certificate.subject
    assert cert.public_key() == key.public_key()
    san = ext(cert, x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier("urn:runas:agent:web-01.corp")]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ext(cert, x509.BasicConstraints).value.ca is False
    assert ext(cert, x509.KeyUsage).value.digital_signature
    assert cert.not_valid_after_utc - NOW == timedelta(days=365)
    assert agent_id_of(cert) == "web-01.corp"
    cert.verify_directly_issued_by(ca.certificate)


def test_serials_are_random_and_distinct(ca: CertificateAuthority) -> None:
    serials = {x509.load_pem_x509_certificate(issue(ca, "a1")).serial_number for _ in range(8)}
    assert len(serials) == 8
    assert all(serial > 2**64 for serial in serials)


def test_a_forged_csr_subject_still_yields_the_given_agent_id(ca: CertificateAuthority) -> None:
    key = generate_tls_key()
    pem = ca.issue_agent_certificate(forged_csr(key), agent_id="agent-42", now=NOW)
    cert = x509.load_pem_x509_certificate(pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "agent-42"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) == []
    assert list(ext(cert, x509.SubjectAlternativeName).value) == [
        x509.UniformResourceIdentifier("urn:runas:agent:agent-42")
    ]
    assert ext(cert, x509.BasicConstraints).value.ca is False
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert agent_id_of(cert) == "agent-42"


def test_certificates_do_not_outlive_the_ca() -> None:
    short = CertificateAuthority.create("short-lived", now=NOW, days=30)
    cert = x509.load_pem_x509_certificate(issue(short, "a1", days=365))
    assert cert.not_valid_after_utc == short.certificate.not_valid_after_utc


def test_an_expired_ca_issues_nothing() -> None:
    short = CertificateAuthority.create("short-lived", now=NOW, days=1)
    with pytest.raises(InvalidInput, match="expired"):
        issue(short, "a1", now=NOW + timedelta(days=2))


def test_garbage_csr_is_invalid_input_with_one_line(ca: CertificateAuthority) -> None:
    for garbage in (b"", b"not a csr", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"):
        with pytest.raises(InvalidInput) as excinfo:
            ca.issue_agent_certificate(garbage, agent_id="a1", now=NOW)
        assert "\n" not in str(excinfo.value)
        assert excinfo.value.__cause__ is None


def test_csr_with_a_bad_signature_is_refused(ca: CertificateAuthority) -> None:
    csr = x509.load_pem_x509_csr(make_csr(generate_tls_key(), "agent-aaaa"))
    der = csr.public_bytes(serialization.Encoding.DER)
    # Same length, so the DER stays well-formed; only the signature no longer matches.
    tampered = der.replace(b"agent-aaaa", b"agent-bbbb")
    assert tampered != der
    pem = x509.load_der_x509_csr(tampered).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(InvalidInput, match="signature does not verify") as excinfo:
        ca.issue_agent_certificate(pem, agent_id="agent-bbbb", now=NOW)
    assert "\n" not in str(excinfo.value)


def test_weak_csr_keys_are_refused(ca: CertificateAuthority) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (the point)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a1")]))
        .sign(weak, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(InvalidInput, match="P-256"):
        ca.issue_agent_certificate(csr, agent_id="a1", now=NOW)


@pytest.mark.parametrize(
    "agent_id",
    ["", "-lead", ".hidden", "a b", "a/b", "../etc", "agent\n", "agént", "a" * 65, "a:b"],
)
def test_invalid_agent_ids_are_refused(ca: CertificateAuthority, agent_id: str) -> None:
    with pytest.raises(InvalidInput):
        check_agent_id(agent_id)
    csr = make_csr(generate_tls_key(), "fine")
    with pytest.raises(InvalidInput):
        ca.issue_agent_certificate(csr, agent_id=agent_id, now=NOW)


@pytest.mark.parametrize("agent_id", ["a", "A1", "web-01.corp.contoso.com", "x_y", "a" * 64])
def test_valid_agent_ids(agent_id: str) -> None:
    assert check_agent_id(agent_id) == agent_id


def test_tls_key_pem_round_trip() -> None:
    key = generate_tls_key()
    for passphrase in (None, b"pw"):
        pem = tls_key_to_pem(key, passphrase)
        assert load_tls_key(pem, passphrase).public_key() == key.public_key()
    with pytest.raises(InvalidInput):
        load_tls_key(tls_key_to_pem(key, b"pw"), b"wrong")
    with pytest.raises(InvalidInput):
        load_tls_key(b"garbage")


# --- agent_id_of and verify_issued -----------------------------------------------------------


def test_agent_id_of_reads_objects_der_and_pem(ca: CertificateAuthority) -> None:
    pem = issue(ca, "agent-9")
    cert = x509.load_pem_x509_certificate(pem)
    assert agent_id_of(cert) == "agent-9"
    assert agent_id_of(pem) == "agent-9"
    assert agent_id_of(cert.public_bytes(serialization.Encoding.DER)) == "agent-9"


def test_agent_id_of_refuses_non_agent_certificates(ca: CertificateAuthority) -> None:
    server_pem, _ = ca.issue_server_certificate(hostnames=["mgmt"], ips=[], now=NOW, days=30)
    for cert in (server_pem, ca.certificate, b"not a certificate"):
        with pytest.raises(InvalidInput):
            agent_id_of(cert)


def test_verify_issued_accepts_own_certificates_within_validity(ca: CertificateAuthority) -> None:
    pem = issue(ca, "agent-1")
    cert = ca.verify_issued(pem, now=NOW + timedelta(days=100))
    assert agent_id_of(cert) == "agent-1"
    # A slightly slow agent clock is tolerated (not_valid_before is backdated).
    ca.verify_issued(pem, now=NOW - timedelta(minutes=4))


def test_verify_issued_refuses_expired_and_not_yet_valid(ca: CertificateAuthority) -> None:
    pem = issue(ca, "agent-1", days=30)
    with pytest.raises(InvalidInput, match="expired"):
        ca.verify_issued(pem, now=NOW + timedelta(days=31))
    with pytest.raises(InvalidInput, match="not yet valid"):
        ca.verify_issued(pem, now=NOW - timedelta(hours=1))


def test_verify_issued_refuses_another_cas_certificate(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.create("runas MG1 agents", now=NOW)  # same name, other key
    with pytest.raises(InvalidInput, match="not issued by this"):
        ca.verify_issued(issue(other, "agent-1"), now=NOW)


def test_verify_issued_refuses_the_ca_itself(ca: CertificateAuthority) -> None:
    with pytest.raises(InvalidInput, match="certificate authority"):
        ca.verify_issued(ca.certificate_pem(), now=NOW)


# --- server certificates ---------------------------------------------------------------------


def test_server_certificate_names_and_usage(ca: CertificateAuthority) -> None:
    cert_pem, key_pem = ca.issue_server_certificate(
        hostnames=["MGMT1.corp.example", "localhost"], ips=["127.0.0.1", "::1"], now=NOW, days=90
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mgmt1.corp.example", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mgmt1.corp.example"
    assert load_tls_key(key_pem).public_key() == cert.public_key()
    ca.verify_issued(cert_pem, now=NOW)


def test_server_certificate_with_a_long_name_has_an_empty_subject(ca: CertificateAuthority) -> None:
    long_name = ".".join(["a" * 30] * 3)
    cert = x509.load_pem_x509_certificate(
        ca.issue_server_certificate(hostnames=[long_name], ips=[], now=NOW, days=90)[0]
    )
    assert len(cert.subject) == 0
    assert ext(cert, x509.SubjectAlternativeName).critical


@pytest.mark.parametrize(
    ("hostnames", "ips"),
    [
        ([], []),
        (["bad host"], []),
        (["*.example.com"], []),
        (["ok"], ["999.1.1.1"]),
        (["é.fr"], []),
    ],
)
def test_server_certificate_refuses_bad_names(
    ca: CertificateAuthority, hostnames: list[str], ips: list[str]
) -> None:
    with pytest.raises(InvalidInput):
        ca.issue_server_certificate(hostnames=hostnames, ips=ips, now=NOW, days=90)


# --- real mutual TLS on loopback -------------------------------------------------------------


@dataclass
class Handshake:
    agent_id: str | None = None  # what the server mapped the verified peer certificate to
    server_error: BaseException | None = None
    reply: bytes | None = None  # what the client read after its handshake
    client_error: BaseException | None = None


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def server_context(tmp_path: Path, ca: CertificateAuthority, now: datetime) -> ssl.SSLContext:
    cert_pem, key_pem = ca.issue_server_certificate(
        hostnames=["localhost"], ips=["127.0.0.1"], now=now, days=30
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(
        write(tmp_path / "server.pem", cert_pem), write(tmp_path / "server.key", key_pem)
    )
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca.certificate_pem().decode("ascii"))
    return context


def client_context(
    tmp_path: Path, trusted: CertificateAuthority, cert_pem: bytes | None, key_pem: bytes | None
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server and its host name
    context.load_verify_locations(cadata=trusted.certificate_pem().decode("ascii"))
    if cert_pem is not None and key_pem is not None:
        context.load_cert_chain(
            write(tmp_path / "agent.pem", cert_pem), write(tmp_path / "agent.key", key_pem)
        )
    return context


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> Handshake:
    result = Handshake()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(10)
                with server.wrap_socket(conn, server_side=True) as tls:
                    peer = tls.getpeercert(binary_form=True)
                    assert peer is not None
                    result.agent_id = agent_id_of(peer)
                    tls.sendall(b"hello " + result.agent_id.encode())
            except Exception as exc:  # reported to the test, never left to the thread
                result.server_error = exc

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                # With TLS 1.3 the client's handshake ends before the server has checked the
                # client certificate; a refusal shows up on the first read.
                result.reply = tls.recv(64)
        except OSError as exc:  # ssl.SSLError, or the connection reset by the server
            result.client_error = exc
        thread.join(15)
        assert not thread.is_alive()
    return result


def agent_credentials(
    ca: CertificateAuthority, agent_id: str, *, now: datetime, days: int = 30
) -> tuple[bytes, bytes]:
    key = generate_tls_key()
    csr = make_csr(key, agent_id)  # what the agent sends when it enrols
    cert = ca.issue_agent_certificate(csr, agent_id=agent_id, now=now, days=days)
    return cert, tls_key_to_pem(key)


def test_mutual_tls_maps_the_client_certificate_to_the_agent(tmp_path: Path) -> None:
    now = datetime.now(UTC)  # OpenSSL checks validity against the real clock
    ca = CertificateAuthority.create("runas MG1 agents", now=now)
    cert, key = agent_credentials(ca, "sql-01.corp", now=now)
    result = handshake(server_context(tmp_path, ca, now), client_context(tmp_path, ca, cert, key))
    assert result.server_error is None
    assert result.client_error is None
    assert result.agent_id == "sql-01.corp"
    assert result.reply == b"hello sql-01.corp"


def test_mutual_tls_refuses_a_client_certificate_from_another_ca(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca = CertificateAuthority.create("runas MG1 agents", now=now)
    rogue = CertificateAuthority.create("runas MG1 agents", now=now)  # same name, other key
    cert, key = agent_credentials(rogue, "sql-01.corp", now=now)
    result = handshake(server_context(tmp_path, ca, now), client_context(tmp_path, ca, cert, key))
    assert isinstance(result.server_error, ssl.SSLError)
    assert "certificate verify failed" in str(result.server_error)
    assert result.agent_id is None
    assert result.reply in (None, b"")


def test_mutual_tls_refuses_an_expired_client_certificate(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca = CertificateAuthority.create("runas MG1 agents", now=now - timedelta(days=10))
    cert, key = agent_credentials(ca, "sql-01.corp", now=now - timedelta(days=10), days=2)
    with pytest.raises(InvalidInput, match="expired"):
        ca.verify_issued(cert, now=now)
    result = handshake(server_context(tmp_path, ca, now), client_context(tmp_path, ca, cert, key))
    assert isinstance(result.server_error, ssl.SSLError)
    assert result.agent_id is None


def test_mutual_tls_requires_a_client_certificate(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca = CertificateAuthority.create("runas MG1 agents", now=now)
    result = handshake(server_context(tmp_path, ca, now), client_context(tmp_path, ca, None, None))
    assert isinstance(result.server_error, ssl.SSLError)
    assert result.agent_id is None
    assert result.reply in (None, b"")


def test_an_agent_certificate_cannot_serve_tls(tmp_path: Path) -> None:
    # EKU clientAuth only: an agent cannot pose as a management server to other agents. The
    # client skips the host name check so that only the certificate's purpose can fail.
    now = datetime.now(UTC)
    ca = CertificateAuthority.create("runas MG1 agents", now=now)
    cert, key = agent_credentials(ca, "impostor", now=now)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(write(tmp_path / "s.pem", cert), write(tmp_path / "s.key", key))
    client = client_context(tmp_path, ca, None, None)
    client.check_hostname = False
    result = handshake(server, client)
    assert isinstance(result.client_error, ssl.SSLError)
    assert "certificate purpose" in str(result.client_error)  # "unsuitable" or "unsupported"
