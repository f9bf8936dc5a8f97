"""The ``http`` probe: one HTTP(S) request with the workflow's Run As account.

How the credential is handed over (docs/probes/http.md), by account type:

* ``basic`` — an ``Authorization: Basic`` header built by httpx (``httpx.BasicAuth``), sent with
  the first request (on https, inside TLS);
* ``digest`` — ``httpx.DigestAuth``: the first request goes without credentials, the server's
  401 challenge is answered with an MD5/SHA-256 digest; the password itself never travels;
* ``binary`` — ``data`` is the TLS client certificate and its private key (PEM, or a PKCS#12
  bundle without a password). Python's ``ssl`` loads a key from a file only, so the PEM is
  written to a 0600 file in a fresh 0700 directory on /dev/shm (memory, never a disk), loaded
  into the request's ``SSLContext``, and file and directory are removed straight away, in a
  ``finally`` — before the first byte goes to the server;
* no account (the action account) — the request carries no credential.

Credentials are only ever sent to the host of ``url``: a redirect to another host (or from
https down to http) is not followed when the run has a credential, and no proxy from the
environment is used (``trust_env`` off). Nothing secret goes in a message: texts that come
from the server (realm, reason phrase) are scrubbed before they are used.

What maps to what: 401 or 407 → ``logon-failed`` (typed, for Run As health); a TLS alert
refusing the client certificate → ``logon-failed``; connection refused, DNS, a timeout, an
untrusted server certificate or a protocol error → ``unknown``; otherwise the state comes from
the status, the body regex and the latency thresholds, with perf ``latency_ms`` and ``status``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import shutil
import ssl
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from runas.agent.handoff import CredentialDocument, default_directory
from runas.agent.probes.base import ProbeContext
from runas.agent.probes.result import (
    AuthFailure,
    ProbeResult,
    ProbeState,
    logon_failed,
    unknown,
)
from runas.agent.scrub import Scrubber
from runas.errors import InvalidInput

if TYPE_CHECKING:  # httpx is imported on first run (docs/probes/README.md)
    import httpx

METHODS = ("GET", "HEAD")
#: how many redirects (to the same host) are followed by default
DEFAULT_MAX_REDIRECTS = 5
#: how much of the body is read for ``expect`` (the rest is not downloaded)
BODY_LIMIT = 1 << 20
#: TLS alerts a server sends when it refuses the client certificate (or wants one): the
#: account's credential was refused, as a 401 would say for a password
_CLIENT_CERT_ALERTS = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_REALM = re.compile(r'realm="((?:[^"\\]|\\.)*)"', re.IGNORECASE)


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpConfig:
    url: str
    method: str
    #: accepted statuses: exact codes and classes (2 for "2xx")
    codes: frozenset[int]
    classes: frozenset[int]
    expect: re.Pattern[str] | None
    warning_ms: float | None
    critical_ms: float | None
    verify: bool
    ca_file: str | None
    max_redirects: int

    def accepts(self, status: int) -> bool:
        return status in self.codes or status // 100 in self.classes

    def expected_text(self) -> str:
        parts = sorted(str(c) for c in self.codes) + [f"{c}xx" for c in sorted(self.classes)]
        return ", ".join(parts)


def _number(config: Mapping[str, Any], key: str) -> float | None:
    value = config.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InvalidInput(f"http probe: {key} must be a number of milliseconds") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidInput(f"http probe: {key} must be a number of milliseconds")
    return float(value)


def _flag(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"  # a placeholder fills a bool as text
    if not isinstance(value, bool):
        raise InvalidInput(f"http probe: {key} must be true or false")
    return value


def _statuses(value: Any) -> tuple[frozenset[int], frozenset[int]]:
    if value is None:
        return frozenset(), frozenset({2})
    items = value if isinstance(value, list | tuple) else [value]
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    codes: set[int] = set()
    classes: set[int] = set()
    for item in items:
        text = str(item).strip().lower()
        if isinstance(item, bool) or not text:
            raise InvalidInput("http probe: expected_status takes codes (200) or classes (2xx)")
        if re.fullmatch(r"[1-5]xx", text):
            classes.add(int(text[0]))
        elif re.fullmatch(r"[1-5][0-9][0-9]", text):
            codes.add(int(text))
        else:
            raise InvalidInput("http probe: expected_status takes codes (200) or classes (2xx)")
    return frozenset(codes), frozenset(classes)


def parse_config(config: Mapping[str, Any]) -> HttpConfig:
    """The probe's configuration (placeholders already filled); InvalidInput names the key."""
    known = {
        "url",
        "method",
        "expected_status",
        "expect",
        "warning_ms",
        "critical_ms",
        "verify",
        "ca_file",
        "max_redirects",
    }
    unknown_keys = sorted(set(config) - known)
    if unknown_keys:
        raise InvalidInput(
            f"http probe: unknown config key {', '.join(map(repr, unknown_keys))} "
            f"(known: {', '.join(sorted(known))})"
        )
    url = config.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidInput("http probe: url is required")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("http probe: url must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        # Credentials come from the Run As profile, never from a pack or an object property.
        raise InvalidInput("http probe: url must not carry user:password@ (use a Run As profile)")
    method = str(config.get("method", "GET")).upper()
    if method not in METHODS:
        raise InvalidInput(f"http probe: method must be one of {', '.join(METHODS)}")
    # An empty ``expect`` or ``ca_file`` is "not given": an object property may fill them and
    # be empty where the check or the private CA is not wanted.
    expect_text = config.get("expect") or None
    expect: re.Pattern[str] | None = None
    if expect_text is not None:
        if not isinstance(expect_text, str):
            raise InvalidInput("http probe: expect must be a regular expression")
        if method == "HEAD":
            raise InvalidInput("http probe: expect needs method GET (HEAD has no body)")
        try:
            expect = re.compile(expect_text)
        except re.error as err:
            raise InvalidInput(
                f"http probe: expect is not a valid regular expression ({err})"
            ) from None
    codes, classes = _statuses(config.get("expected_status"))
    warning_ms = _number(config, "warning_ms")
    critical_ms = _number(config, "critical_ms")
    if warning_ms is not None and critical_ms is not None and warning_ms > critical_ms:
        raise InvalidInput("http probe: warning_ms must not exceed critical_ms")
    ca_file = config.get("ca_file") or None
    if ca_file is not None and not isinstance(ca_file, str):
        raise InvalidInput("http probe: ca_file must be a path")
    redirects = config.get("max_redirects", DEFAULT_MAX_REDIRECTS)
    if isinstance(redirects, str) and redirects.isdecimal():
        redirects = int(redirects)
    if isinstance(redirects, bool) or not isinstance(redirects, int) or redirects < 0:
        raise InvalidInput("http probe: max_redirects must be a whole number >= 0")
    return HttpConfig(
        url=url,
        method=method,
        codes=codes,
        classes=classes,
        expect=expect,
        warning_ms=warning_ms,
        critical_ms=critical_ms,
        verify=_flag(config, "verify", True),
        ca_file=ca_file,
        max_redirects=redirects,
    )


# -- the client certificate -------------------------------------------------------------------


class CertificateError(Exception):
    """The binary account's data is no usable certificate and key (internal; no secret in it)."""


def client_pem(data: bytes) -> bytes:
    """``data`` (PEM with a certificate and an unencrypted key, or PKCS#12 without a password)
    as one PEM: the key, then the certificate and any chain, as ``load_cert_chain`` wants it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    if b"-----BEGIN" in data:
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise CertificateError("the PEM holds no certificate") from None
        key_block = re.search(
            rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", data, re.S
        )
        if key_block is None:
            raise CertificateError("the PEM holds no private key")
        try:
            key = serialization.load_pem_private_key(key_block.group(0), password=None)
        except TypeError:
            raise CertificateError("the private key is encrypted (store it unencrypted)") from None
        except ValueError:
            raise CertificateError("the private key cannot be read") from None
    else:
        try:
            loaded_key, certificate, chain = pkcs12.load_key_and_certificates(data, None)
        except ValueError:
            raise CertificateError(
                "the data is neither PEM nor a PKCS#12 bundle without a password"
            ) from None
        if loaded_key is None or certificate is None:
            raise CertificateError("the PKCS#12 bundle lacks the key or the certificate")
        key, certificates = loaded_key, [certificate, *chain]
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[Path]:
    """``data`` in a 0600 file inside a fresh 0700 directory (on /dev/shm when usable), removed
    with its directory on exit, whatever happened (the CredentialFile pattern, handoff.py)."""
    private = Path(tempfile.mkdtemp(prefix="runas-cert-", dir=default_directory()))
    try:
        path = private / "client.pem"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        yield path
    finally:
        with contextlib.suppress(OSError):  # overwrite: best effort, unlinking is what counts
            fd = os.open(private / "client.pem", os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.write(fd, bytes(len(data)))
            finally:
                os.close(fd)
        shutil.rmtree(private, ignore_errors=True)


class TlsSetupError(Exception):
    """The TLS context cannot be built (internal; the message names the part, no secret)."""


def _why(err: BaseException) -> str:
    return str(getattr(err, "reason", None) or getattr(err, "strerror", None) or type(err).__name__)


def ssl_context(config: HttpConfig, certificate: bytes | None) -> ssl.SSLContext:
    """The TLS context: server verification by system trust or ``ca_file`` (or off), and the
    client certificate when the account is one. TlsSetupError says which part failed."""
    try:
        if config.verify:
            context = ssl.create_default_context(cafile=config.ca_file)
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    except (OSError, ssl.SSLError) as err:
        raise TlsSetupError(f"cannot load ca_file {config.ca_file}: {_why(err)}") from None
    if certificate is not None:
        try:
            with _memory_file(certificate) as path:
                context.load_cert_chain(str(path))
        except (OSError, ssl.SSLError) as err:
            raise TlsSetupError(f"cannot load the client certificate: {_why(err)}") from None
    return context


# -- the run ----------------------------------------------------------------------------------


def _fields(document: CredentialDocument) -> dict[str, str]:
    fields = document.to_dict().get("fields", {})
    return {str(k): str(v) for k, v in fields.items()} if isinstance(fields, dict) else {}


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")


def _shown(url: httpx.URL) -> str:
    """The URL for messages: no query or fragment (they may carry tokens)."""
    return _origin(url) + (url.path or "/")


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _transport_failure(err: Exception, url: httpx.URL, timeout_s: float) -> ProbeResult:
    """What a failed exchange means: a refused client certificate is a logon failure, the
    rest proves nothing about the credential."""
    import httpx

    where = _origin(url)
    if isinstance(err, httpx.TimeoutException):
        return unknown(f"{where} did not answer within {timeout_s:g} s")
    for cause in _chain(err):
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or "verification failed"
            return unknown(f"the certificate of {where} is not trusted: {reason}")
        if isinstance(cause, ssl.SSLError):
            reason = cause.reason or type(cause).__name__
            if reason in _CLIENT_CERT_ALERTS:
                text = reason.split("_ALERT_", 1)[-1].lower().replace("_", " ")
                return logon_failed(f"{where} refused the TLS client certificate ({text})")
            return unknown(f"TLS with {where} failed: {reason}")
        if isinstance(cause, OSError) and (cause.strerror or cause.errno):
            reason = cause.strerror or os.strerror(cause.errno or 0)
            return unknown(f"cannot connect to {where}: {reason}")
    if isinstance(err, httpx.ConnectError):
        return unknown(f"cannot connect to {where}")
    return unknown(f"the exchange with {where} failed ({type(err).__name__})")


def _challenges(response: httpx.Response) -> list[str]:
    header = "proxy-authenticate" if response.status_code == 407 else "www-authenticate"
    return response.headers.get_list(header)


def _offers(response: httpx.Response, scheme: str) -> bool:
    return any(c.strip().lower().startswith(scheme) for c in _challenges(response))


def _realm(response: httpx.Response) -> str:
    challenges = _challenges(response)
    schemes = ", ".join(sorted({c.split(" ", 1)[0].strip() for c in challenges if c.strip()}))
    realms = [m.group(1) for c in challenges if (m := _REALM.search(c))]
    text = f" (realm {realms[0]!r}" if realms else ""
    if schemes:
        text += f", scheme {schemes}" if text else f" (scheme {schemes}"
    return text + (")" if text else "")


class HttpProbe:
    """The ``http`` probe in the registry's shape (:mod:`runas.agent.probes.base`)."""

    type = "http"

    def run(self, context: ProbeContext) -> ProbeResult:
        start = time.monotonic()
        result = self._run(context, start)
        return _finish(result, context, start)

    def _run(self, context: ProbeContext, start: float) -> ProbeResult:
        import httpx

        config = parse_config(context.config)
        document = context.document
        fields = _fields(document)
        auth: httpx.Auth | None = None
        certificate: bytes | None = None
        kind = document.type
        if kind in ("basic", "digest"):
            user, password = fields.get("user", ""), fields.get("password", "")
            auth = (
                httpx.BasicAuth(user, password)
                if kind == "basic"
                else httpx.DigestAuth(user, password)
            )
        elif kind == "binary":
            if not config.url.startswith("https:"):
                return unknown("a client certificate needs an https:// url")
            try:
                certificate = client_pem(base64.b64decode(fields.get("data", ""), validate=True))
            except (binascii.Error, CertificateError) as err:
                reason = str(err) if isinstance(err, CertificateError) else "not base64"
                return unknown(f"the binary account holds no usable client certificate: {reason}")
        elif document.has_credential:
            return unknown(f"the http probe cannot use a {kind} account (basic, digest, binary)")

        try:
            tls = ssl_context(config, certificate)
        except TlsSetupError as err:
            return unknown(str(err))
        finally:
            certificate = None

        url = httpx.URL(config.url)
        with httpx.Client(verify=tls, trust_env=False) as client:
            return self._exchange(client, config, context, auth, url, start)

    def _exchange(
        self,
        client: httpx.Client,
        config: HttpConfig,
        context: ProbeContext,
        auth: httpx.Auth | None,
        url: httpx.URL,
        start: float,
    ) -> ProbeResult:
        import httpx

        credential = context.document.has_credential
        first = url
        method = config.method
        hops = 0
        deadline = start + context.timeout_s
        sent = time.monotonic()  # latency: the exchange, not the TLS context set-up
        while True:
            try:
                # httpx times each phase (connect with TLS, then each read) on its own: half
                # of what is left for each keeps connect + first byte within the run's
                # timeout, and the body loop checks the deadline itself.
                left = max(deadline - time.monotonic(), 0.05)
                request = client.build_request(method, url, timeout=httpx.Timeout(left / 2))
                response = client.send(request, auth=auth, stream=True)
                try:
                    body = _read_body(response, config, deadline) if method == "GET" else b""
                finally:
                    response.close()
            except httpx.HTTPError as err:
                return _transport_failure(err, url, context.timeout_s)
            except _Deadline:
                return unknown(f"{_origin(url)} did not answer within {context.timeout_s:g} s")
            status = response.status_code
            location = response.headers.get("location")
            if status not in _REDIRECTS or location is None or hops >= config.max_redirects:
                break
            target = url.join(location)
            if credential and (
                target.host != first.host or (first.scheme == "https" and target.scheme != "https")
            ):
                # The credential is for this host only: judge the redirect itself.
                return _judge(config, context, response, b"", sent, url, redirect_refused=target)
            hops += 1
            url = target  # GET and HEAD stay what they are, even after a 303
        return _judge(config, context, response, body, sent, url)


class _Deadline(Exception):
    """The body did not arrive within the run's timeout (internal)."""


def _read_body(response: httpx.Response, config: HttpConfig, deadline: float) -> bytes:
    """The first :data:`BODY_LIMIT` bytes of the body (kept only for ``expect``): reading them
    keeps the latency honest; the rest is not downloaded."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        if config.expect is not None:
            chunks.append(chunk)
        size += len(chunk)
        if size >= BODY_LIMIT:
            break
        if time.monotonic() > deadline:
            raise _Deadline
    return b"".join(chunks)[:BODY_LIMIT]


def _judge(
    config: HttpConfig,
    context: ProbeContext,
    response: httpx.Response,
    body: bytes,
    start: float,
    url: httpx.URL,
    redirect_refused: httpx.URL | None = None,
) -> ProbeResult:
    latency_ms = (time.monotonic() - start) * 1000.0
    status = response.status_code
    perf = {"latency_ms": round(latency_ms, 3), "status": float(status)}
    where = _shown(url)
    head = f"HTTP {status} from {where} in {latency_ms:.0f} ms"
    if status in (401, 407) and not config.accepts(status):
        who = "proxy " if status == 407 else ""
        kind = context.document.type
        if not context.document.has_credential:
            what = f"the {who}server wants credentials and the run has no account"
        elif kind in ("basic", "digest") and not _offers(response, kind):
            what = f"the {who}server does not offer {kind.title()} authentication"
        else:
            what = f"the {who}server refused the credentials"
        failed = logon_failed(f"HTTP {status} from {where}: {what}{_realm(response)}")
        return ProbeResult(
            failed.state, failed.message, None, perf=perf, auth_failure=failed.auth_failure
        )
    if redirect_refused is not None:
        message = (
            f"{head}: redirect to {_origin(redirect_refused)} not followed (credentials go to "
            f"{url.host} only)"
        )
        state = ProbeState.HEALTHY if config.accepts(status) else ProbeState.CRITICAL
        return ProbeResult(state, message, None, perf=perf)
    if not config.accepts(status):
        return ProbeResult(
            ProbeState.CRITICAL, f"{head}, expected {config.expected_text()}", None, perf=perf
        )
    if config.expect is not None:
        text = body.decode(response.encoding or "utf-8", "replace")
        if config.expect.search(text) is None:
            return ProbeResult(
                ProbeState.CRITICAL,
                f"{head}, but the body does not match {config.expect.pattern!r}",
                None,
                perf=perf,
            )
    if config.critical_ms is not None and latency_ms >= config.critical_ms:
        return ProbeResult(
            ProbeState.CRITICAL, f"{head} (critical at {config.critical_ms:g} ms)", None, perf=perf
        )
    if config.warning_ms is not None and latency_ms >= config.warning_ms:
        return ProbeResult(
            ProbeState.WARNING, f"{head} (warning at {config.warning_ms:g} ms)", None, perf=perf
        )
    return ProbeResult(ProbeState.HEALTHY, head, None, perf=perf)


def _finish(result: ProbeResult, context: ProbeContext, start: float) -> ProbeResult:
    """Scrub what came from the server (realm, ...) of every secret held; stamp the duration."""
    guards = (Scrubber(context.document.secret_values()), context.scrubber)
    hits = 0

    def clean(text: str) -> str:
        nonlocal hits
        for guard in guards:
            text, found = guard.scrub(text)
            hits += found
        return text

    auth = result.auth_failure
    return replace(
        result,
        message=clean(result.message),
        auth_failure=AuthFailure(auth.kind, clean(auth.message)) if auth else None,
        duration_s=time.monotonic() - start,
        scrubbed=result.scrubbed + hits,
    )


PROBE = HttpProbe()

__all__ = ["PROBE", "HttpConfig", "HttpProbe", "client_pem", "parse_config", "ssl_context"]
