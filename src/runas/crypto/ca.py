"""The management group's own certificate authority, for mutual TLS between agents and servers.

How an agent gets its identity::

    agent                                   management server (holds the CA)
    generate_tls_key(), make_csr(key, id)
    ─── enrolment request: agent id, CSR, HPKE public key ──▶  pending
                                            an administrator approves the agent
    ◀── issue_agent_certificate(csr, agent_id=id) ──────────  client certificate (PEM)
    every later connection: TLS with that client certificate; the server maps the verified
    peer certificate to the agent with agent_id_of()

The CA issues exactly two kinds of certificate, both ECDSA P-256 / SHA-256:

* **agent** (client) certificates: subject ``CN=<agent id>``, one URI SAN
  ``urn:runas:agent:<agent id>``, EKU clientAuth only, ``CA:FALSE``. The CA never copies
  anything from the CSR but its public key: a CSR asking for another subject, other names or
  ``CA:TRUE`` still yields exactly this certificate. The URI SAN, not the CN, is the identity
  (``agent_id_of``): CNs are free text that other tools also fill in.
* **server** certificates: DNS and IP SANs as given, EKU serverAuth only.

The CA certificate itself is self-signed with ``CA:TRUE, pathlen:0`` (it signs end-entity
certificates only) and keyUsage keyCertSign + cRLSign. Issued certificates never outlive it:
their end is clamped to the CA's. Every ``not_valid_before`` is set five minutes before ``now``
so an agent whose clock lags the server's slightly can still use a certificate straight away.

Where the CA's key is stored is the caller's decision: ``to_pem`` gives the certificate and a
PKCS#8 key, encrypted with the best available PEM encryption when a passphrase is given.

There is no revocation list. Removing or un-approving an agent is enforced by the server, which
looks the agent id from ``agent_id_of`` up in its database on every connection; a certificate
of a removed agent still verifies, but names an agent the server no longer serves.

Errors: malformed or refused input (CSR, agent id, certificate to check, names) raises
``InvalidInput`` with one line that says what is wrong; CA files that cannot be loaded raise
``ConfigurationError``; caller bugs (a naive ``now``) raise ``ValueError``. Certificates are
public, so these messages may be precise; none contains key material.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runas.errors import ConfigurationError, InvalidInput

#: An agent id: ASCII, starts with a letter or digit, at most 64 characters (RFC 5280's limit for
#: the common name it becomes). It goes into certificates, sealed-bundle headers and log lines,
#: so it has no separators, spaces or control characters. Always used with ``fullmatch``
#: (``$`` would accept a trailing newline).
AGENT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
AGENT_URI_PREFIX = "urn:runas:agent:"

#: Backdating of ``not_valid_before``, for agents whose clock is slightly behind the server's.
CLOCK_SKEW = timedelta(minutes=5)
CA_DAYS = 3650
AGENT_DAYS = 365
#: The CA/Browser Forum's limit for server certificates; clients other than agents may care.
SERVER_DAYS = 397

# X.509 upper bound for a common name (RFC 5280, ub-common-name).
_MAX_CN = 64
# A host name in a DNS SAN: dot-separated LDH labels, no wildcard (servers are named exactly).
_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)

TlsKey = ec.EllipticCurvePrivateKey


def check_agent_id(agent_id: str) -> str:
    """Return ``agent_id`` if it is a valid agent id (see :data:`AGENT_ID_PATTERN`), else raise
    ``InvalidInput`` (the message does not repeat the value: it may be anything)."""
    if type(agent_id) is not str or AGENT_ID_PATTERN.fullmatch(agent_id) is None:
        raise InvalidInput(
            "an agent id is 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return agent_id


# -- agent side ---------------------------------------------------------------------------------


def generate_tls_key() -> TlsKey:
    """A fresh ECDSA P-256 key for an agent's (or server's) TLS certificate."""
    return ec.generate_private_key(ec.SECP256R1())


def tls_key_to_pem(key: TlsKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM of a TLS key, encrypted when a passphrase is given."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _encryption(passphrase)
    )


def load_tls_key(pem: bytes, passphrase: bytes | None = None) -> TlsKey:
    """Load a TLS key written by :func:`tls_key_to_pem`; anything else raises ``InvalidInput``."""
    key = _load_private_key(pem, passphrase)
    if key is None:
        raise InvalidInput("not a PEM private key, or wrong passphrase")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput("a TLS key must be an ECDSA key")
    return key


def make_csr(private_key: TlsKey, agent_id: str) -> bytes:
    """A PEM certificate signing request for ``agent_id``, signed with ``private_key``.

    It asks for the same subject and URI SAN the CA will set; the CA ignores the request's
    names anyway, so this is for people reading the pending request, not for security.
    """
    check_agent_id(agent_id)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, agent_id)]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(AGENT_URI_PREFIX + agent_id)]
            ),
            critical=False,
        )
        .sign(private_key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def agent_id_of(certificate: x509.Certificate | bytes) -> str:
    """The agent id an agent certificate stands for (its ``urn:runas:agent:`` URI SAN).

    ``certificate`` is a certificate object or its DER (``SSLSocket.getpeercert(True)``) or PEM
    bytes. Only call this on a certificate already verified against this CA — by the TLS
    handshake or :meth:`CertificateAuthority.verify_issued`: it reads, it does not verify.
    Refused (``InvalidInput``): no such SAN, several, no clientAuth EKU, an invalid id.
    """
    cert = _as_certificate(certificate)
    try:
        extensions = cert.extensions
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise InvalidInput("not a runas agent certificate (no agent name or usage)") from None
    except ValueError:
        # cryptography parses extensions lazily; a malformed one surfaces here.
        raise InvalidInput("certificate has malformed extensions") from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise InvalidInput("not a runas agent certificate (not for client authentication)")
    uris = [
        uri
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(AGENT_URI_PREFIX)
    ]
    if len(uris) != 1:
        raise InvalidInput("not a runas agent certificate (must name exactly one agent)")
    return check_agent_id(uris[0].removeprefix(AGENT_URI_PREFIX))


# -- the authority ------------------------------------------------------------------------------


class CertificateAuthority:
    """A CA certificate with its private key. Build with :meth:`create` or :meth:`load`."""

    __slots__ = ("_certificate", "_key")

    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        if key.public_key() != certificate.public_key():
            raise ConfigurationError("the CA key does not belong to the CA certificate")
        if not _is_ca(certificate):
            raise ConfigurationError("the CA certificate is not a CA (basicConstraints)")
        self._certificate = certificate
        self._key = key

    def __repr__(self) -> str:
        fingerprint = self._certificate.fingerprint(hashes.SHA256()).hex()[:16]
        return f"CertificateAuthority(subject={self.subject!r}, sha256={fingerprint}…)"

    def __reduce__(self) -> NoReturn:
        # Pickling would copy the private key into whatever receives the pickle.
        raise TypeError("a CertificateAuthority cannot be pickled")

    @property
    def certificate(self) -> x509.Certificate:
        return self._certificate

    @property
    def subject(self) -> str:
        return self._certificate.subject.rfc4514_string()

    def certificate_pem(self) -> bytes:
        """The CA certificate alone: what agents and servers put in their trust store."""
        return self._certificate.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(
        cls, common_name: str, *, now: datetime, days: int = CA_DAYS
    ) -> CertificateAuthority:
        """A new self-signed CA: ECDSA P-256 key, ``CA:TRUE, pathlen:0``, valid ``days``."""
        if type(common_name) is not str or not 0 < len(common_name) <= _MAX_CN:
            raise InvalidInput(f"a CA name is 1 to {_MAX_CN} characters")
        start, end = _validity(now, days)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                _key_usage(digital_signature=False, key_cert_sign=True, crl_sign=True),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    def to_pem(self, passphrase: bytes | None) -> tuple[bytes, bytes]:
        """``(certificate PEM, PKCS#8 key PEM)``; the key is encrypted when given a passphrase."""
        return self.certificate_pem(), self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _encryption(passphrase)
        )

    @classmethod
    def load(
        cls, cert_pem: bytes, key_pem: bytes, passphrase: bytes | None = None
    ) -> CertificateAuthority:
        """Load what :meth:`to_pem` wrote. Unreadable files, a wrong or missing passphrase, or
        a key that does not match the certificate raise ``ConfigurationError``."""
        try:
            certificate = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            raise ConfigurationError("the CA certificate is not a PEM certificate") from None
        key = _load_private_key(key_pem, passphrase)
        if key is None:
            raise ConfigurationError("the CA key is not a PEM private key, or wrong passphrase")
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigurationError("the CA key must be an ECDSA key")
        return cls(certificate, key)

    def issue_agent_certificate(
        self, csr_pem: bytes, *, agent_id: str, now: datetime, days: int = AGENT_DAYS
    ) -> bytes:
        """A client certificate (PEM) for ``agent_id`` over the CSR's public key.

        Only the CSR's key is used, after its signature proves the requester holds the private
        key; the subject, names and extensions it asks for are ignored (module docstring).
        """
        check_agent_id(agent_id)
        csr = _load_csr(csr_pem)
        public_key = _check_public_key(csr.public_key())
        certificate = self._issue(
            public_key,
            subject=agent_id,
            names=[x509.UniformResourceIdentifier(AGENT_URI_PREFIX + agent_id)],
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            now=now,
            days=days,
        )
        return certificate.public_bytes(serialization.Encoding.PEM)

    def issue_server_certificate(
        self,
        *,
        hostnames: Sequence[str],
        ips: Sequence[str],
        now: datetime,
        days: int = SERVER_DAYS,
        passphrase: bytes | None = None,
    ) -> tuple[bytes, bytes]:
        """A new key and a serverAuth certificate for a management server:
        ``(certificate PEM, PKCS#8 key PEM)``. The first host name (else the first IP) is
        also the CN when it fits in one (64 characters); clients check the SANs."""
        names: list[x509.GeneralName] = []
        for hostname in hostnames:
            if type(hostname) is not str or _HOSTNAME_RE.fullmatch(hostname) is None:
                raise InvalidInput("a server host name must be an ASCII DNS name")
            names.append(x509.DNSName(hostname.lower()))
        for ip in ips:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(ip)))
            except ValueError:
                raise InvalidInput(f"not an IP address: {ip!r}") from None
        if not names:
            raise InvalidInput("a server certificate needs at least one host name or IP address")
        key = generate_tls_key()
        first = [*hostnames, *ips][0].lower()
        certificate = self._issue(
            key.public_key(),
            subject=first if len(first) <= _MAX_CN else None,
            names=names,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            now=now,
            days=days,
        )
        return certificate.public_bytes(serialization.Encoding.PEM), tls_key_to_pem(key, passphrase)

    def verify_issued(
        self, certificate: x509.Certificate | bytes, *, now: datetime
    ) -> x509.Certificate:
        """Check that ``certificate`` (object, PEM or DER) is an end-entity certificate signed by
        this CA and valid at ``now`` (the CA too); return it, else raise ``InvalidInput``."""
        return verify_issued(self._certificate, certificate, now=now)

    def _issue(
        self,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        *,
        subject: str | None,
        names: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        now: datetime,
        days: int,
    ) -> x509.Certificate:
        start, end = _validity(now, days)
        end = min(end, self._certificate.not_valid_after_utc)
        if end <= start:
            raise InvalidInput("the certificate authority has expired")
        ca_ski = self._certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        attributes = [] if subject is None else [x509.NameAttribute(NameOID.COMMON_NAME, subject)]
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self._certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(digital_signature=True, key_cert_sign=False, crl_sign=False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            # RFC 5280 §4.2.1.6: the SAN is critical when the subject is empty.
            .add_extension(x509.SubjectAlternativeName(names), critical=subject is None)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )


# -- without the CA's key -----------------------------------------------------------------------


def verify_issued(
    ca_certificate: x509.Certificate, certificate: x509.Certificate | bytes, *, now: datetime
) -> x509.Certificate:
    """:meth:`CertificateAuthority.verify_issued` with the CA certificate alone (a server that
    checks agents needs no private key): ``certificate`` is an end-entity certificate signed by
    ``ca_certificate``, and both are valid at ``now``; return it, else raise ``InvalidInput``."""
    cert = _as_certificate(certificate)
    moment = _as_utc(now)
    try:
        cert.verify_directly_issued_by(ca_certificate)
        is_ca = _is_ca(cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        is_ca = None
    if is_ca is None:
        raise InvalidInput("certificate was not issued by this certificate authority")
    if is_ca:
        # The CA's own certificate is "directly issued by" itself; it is no agent.
        raise InvalidInput("certificate is a certificate authority, not an end entity")
    for checked in (cert, ca_certificate):
        if not checked.not_valid_before_utc <= moment <= checked.not_valid_after_utc:
            raise InvalidInput("certificate is expired or not yet valid")
    return cert


def load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """A PEM certificate signing request whose signature verifies and whose key the CA would
    certify (what :meth:`CertificateAuthority.issue_agent_certificate` checks), else
    ``InvalidInput``: enrolment refuses a request the CA could never approve."""
    csr = _load_csr(csr_pem)
    _check_public_key(csr.public_key())
    return csr


# -- helpers ------------------------------------------------------------------------------------


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return moment.astimezone(UTC)


def _validity(now: datetime, days: int) -> tuple[datetime, datetime]:
    if type(days) is not int or days < 1:
        raise InvalidInput("a certificate is valid for at least one day")
    start = _as_utc(now)
    return start - CLOCK_SKEW, start + timedelta(days=days)


def _key_usage(*, digital_signature: bool, key_cert_sign: bool, crl_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _encryption(passphrase: bytes | None) -> serialization.KeySerializationEncryption:
    if passphrase is None:
        return serialization.NoEncryption()
    if type(passphrase) is not bytes or not passphrase:
        # An empty passphrase would silently mean "no protection"; make the caller say None.
        raise InvalidInput("a key passphrase must be non-empty bytes (or None for no encryption)")
    return serialization.BestAvailableEncryption(passphrase)


def _load_private_key(pem: bytes, passphrase: bytes | None) -> object | None:
    # None when unreadable: the callers raise their own error type, outside this handler.
    try:
        return serialization.load_pem_private_key(pem, password=passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # TypeError: a passphrase for a plain key, or none for an encrypted one.
        return None


def _load_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        valid = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm):
        valid = None
    if valid is None:
        raise InvalidInput("not a PEM certificate signing request")
    if not valid:
        raise InvalidInput("the certificate signing request's signature does not verify")
    return csr


def _check_public_key(key: object) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    # What OpenSSL and every agent platform handle for TLS client authentication.
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1):
            return key
    elif isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return key
    raise InvalidInput("a CSR key must be ECDSA P-256/P-384 or RSA of at least 2048 bits")


def _as_certificate(certificate: x509.Certificate | bytes) -> x509.Certificate:
    if isinstance(certificate, x509.Certificate):
        return certificate
    try:
        if bytes(certificate).lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(certificate)
        return x509.load_der_x509_certificate(certificate)
    except ValueError:
        pass
    raise InvalidInput("not an X.509 certificate (PEM or DER)")


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


__all__ = [
    "AGENT_ID_PATTERN",
    "AGENT_URI_PREFIX",
    "CertificateAuthority",
    "TlsKey",
    "agent_id_of",
    "check_agent_id",
    "generate_tls_key",
    "load_csr",
    "load_tls_key",
    "make_csr",
    "tls_key_to_pem",
    "verify_issued",
]
