"""A throwaway Apache httpd for the ``http`` probe's tests, from Debian's own binaries.

``Apache.start(basic_users=..., digest_users=...)`` writes its own configuration (no Debian
``apache2.conf``, no ``envvars``, no system service) into a fresh directory under /tmp and
runs ``/usr/sbin/apache2 -f <conf> -DFOREGROUND`` as a child process, listening on 127.0.0.1
only, on two free high ports:

* plain HTTP: ``/`` (open), ``/basic/`` (mod_auth_basic, a bcrypt htpasswd file written by
  ``htpasswd -niB`` with the password on its stdin, never on argv), ``/digest/``
  (mod_auth_digest, an htdigest file written here: ``user:realm:md5(user:realm:password)``);
  ``/redirect-away`` answers 302 to another host and ``/redirect-here`` 302 to ``/basic/``.
* HTTPS (mod_ssl) with ``SSLVerifyClient require``: a server certificate for 127.0.0.1 from a
  test CA made here with ``cryptography``; client certificates must come from the client CA.

:class:`Pki` holds the CAs and the client bundles (PEM key + certificate), including one from
a foreign CA for the refusal case. ``stop()`` stops httpd (its process group) and removes the
directory; ``start`` does the same when it fails. Workers run as ``www-data`` (httpd starts as
root and drops to it), so the directory is traversable and the password files group-readable
by www-data; no other OS user is needed.
"""

from __future__ import annotations

import contextlib
import datetime
import grp
import hashlib
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

APACHE = Path("/usr/sbin/apache2")
HTPASSWD = Path("/usr/bin/htpasswd")
MODULES = Path("/usr/lib/apache2/modules")
WORKER_USER = "www-data"
BASIC_REALM = "runas basic test"
DIGEST_REALM = "runas digest test"
START_TIMEOUT_S = 20.0
_MODULES = (
    ("mpm_event_module", "mod_mpm_event.so"),
    ("authn_core_module", "mod_authn_core.so"),
    ("authn_file_module", "mod_authn_file.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("authz_user_module", "mod_authz_user.so"),
    ("auth_basic_module", "mod_auth_basic.so"),
    ("auth_digest_module", "mod_auth_digest.so"),
    ("alias_module", "mod_alias.so"),
    ("dir_module", "mod_dir.so"),
    ("mime_module", "mod_mime.so"),
    ("socache_shmcb_module", "mod_socache_shmcb.so"),
    ("ssl_module", "mod_ssl.so"),
)


class ApacheUnavailable(RuntimeError):
    """httpd cannot be started here; the message says what to install."""


# -- certificates -----------------------------------------------------------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def bundle(self) -> bytes:
        """Key and certificate in one PEM: what a ``binary`` account's ``data`` holds."""
        return _pem_key(self.key) + self.cert_pem


def _issue(
    common: str,
    issuer: Issued | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(issuer.certificate.subject if issuer else _name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            False,
        )
    signer = issuer.key if issuer else key
    return Issued(key, builder.sign(signer, hashes.SHA256()))


@dataclass(frozen=True)
class Pki:
    """A server CA and certificate, a client CA the server trusts, and client certificates."""

    server_ca: Issued
    server: Issued
    client_ca: Issued
    client: Issued
    #: from a CA the server does not trust: the refused-certificate case
    foreign_client: Issued

    @classmethod
    def create(cls) -> Pki:
        server_ca = _issue("runas test server CA", None, ca=True)
        client_ca = _issue("runas test client CA", None, ca=True)
        foreign_ca = _issue("runas test foreign CA", None, ca=True)
        return cls(
            server_ca=server_ca,
            server=_issue("127.0.0.1", server_ca, server=True),
            client_ca=client_ca,
            client=_issue("runas-probe-client", client_ca),
            foreign_client=_issue("runas-probe-intruder", foreign_ca),
        )


# -- the server -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _check_installed() -> None:
    for path, package in ((APACHE, "apache2"), (HTPASSWD, "apache2-utils")):
        if not path.is_file():
            raise ApacheUnavailable(
                f"{path} not found: the Debian package {package} is missing "
                "(./scripts/test installs it)"
            )
    missing = [so for _, so in _MODULES if not (MODULES / so).is_file()]
    if missing:
        raise ApacheUnavailable(
            f"Apache modules missing in {MODULES} ({', '.join(missing)}): "
            "./scripts/test installs the apache2 package"
        )


def _bcrypt_line(user: str, password: str) -> str:
    # -n: print the line; -i: password on stdin (never argv); -B: bcrypt.
    done = subprocess.run(
        [str(HTPASSWD), "-niB", "-C", "5", user],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise ApacheUnavailable(f"htpasswd failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _digest_line(user: str, password: str, realm: str) -> str:
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode(), usedforsecurity=False)
    return f"{user}:{realm}:{ha1.hexdigest()}"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no error log)"


@dataclass
class Apache:
    base: Path
    pki: Pki
    http_port: int = 0
    https_port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def ca_file(self) -> Path:
        """The server CA, for the probe's ``ca_file``."""
        return self.base / "server-ca.pem"

    @property
    def error_log(self) -> Path:
        return self.base / "logs" / "error.log"

    # -- lifecycle ----------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        basic_users: dict[str, str],
        digest_users: dict[str, str],
        pki: Pki | None = None,
    ) -> Apache:
        _check_installed()
        base = Path(tempfile.mkdtemp(prefix="runas-httpd-"))
        server = cls(base=base, pki=pki or Pki.create())
        try:
            server._write_files(basic_users, digest_users)
            server._launch()
        except BaseException:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        """Stop httpd and remove its directory. Safe to call twice."""
        try:
            process = self.process
            if process is not None and process.poll() is None:
                # httpd -DFOREGROUND: SIGTERM to the parent stops the children too.
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            if process is not None:
                # Children left behind by a crashed parent share its process group.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def _write_files(self, basic_users: dict[str, str], digest_users: dict[str, str]) -> None:
        base = self.base
        www_gid = grp.getgrnam(WORKER_USER).gr_gid
        # The workers (www-data) must traverse the directory and read content and password
        # files; keys and logs stay root's (the parent reads keys before dropping privileges).
        os.chmod(base, 0o711)  # noqa: S103
        for sub in ("logs", "run", "htdocs/basic", "htdocs/digest"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        # Runtime files (mutex, TLS session cache) are reopened by the workers.
        os.chmod(base / "run", 0o700)
        os.chown(base / "run", pwd.getpwnam(WORKER_USER).pw_uid, www_gid)
        for sub in ("htdocs", "htdocs/basic", "htdocs/digest"):
            os.chmod(base / sub, 0o755)  # noqa: S103
        pages = {
            "htdocs/index.html": "runas open page\n",
            "htdocs/basic/index.html": "runas basic ok\n",
            "htdocs/digest/index.html": "runas digest ok\n",
        }
        for name, text in pages.items():
            (base / name).write_text(text)
            os.chmod(base / name, 0o644)

        def private(name: str, data: str, *, readable_by_www: bool) -> Path:
            path = base / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(data)
            if readable_by_www:
                os.chown(path, 0, www_gid)
                os.chmod(path, 0o640)
            return path

        basic = "".join(_bcrypt_line(u, p) + "\n" for u, p in basic_users.items())
        digest = "".join(_digest_line(u, p, DIGEST_REALM) + "\n" for u, p in digest_users.items())
        private("htpasswd", basic, readable_by_www=True)
        private("htdigest", digest, readable_by_www=True)
        private("server.key", _pem_key(self.pki.server.key).decode(), readable_by_www=False)
        (base / "server.crt").write_bytes(self.pki.server.cert_pem)
        (base / "client-ca.pem").write_bytes(self.pki.client_ca.cert_pem)
        self.ca_file.write_bytes(self.pki.server_ca.cert_pem)

    def _config(self) -> str:
        b = self.base
        loads = "\n".join(f"LoadModule {name} {MODULES / so}" for name, so in _MODULES)
        return f"""# written by tests/support/peers/apache.py
ServerRoot "{b}"
{loads}
ServerName 127.0.0.1
PidFile "{b}/run/httpd.pid"
DefaultRuntimeDir "{b}/run"
Mutex file:{b}/run default
ErrorLog "{b}/logs/error.log"
LogLevel warn ssl:warn
User {WORKER_USER}
Group {WORKER_USER}
StartServers 1
ServerLimit 1
ThreadsPerChild 16
MaxRequestWorkers 16
Timeout 20
TypesConfig /dev/null
DirectoryIndex index.html
Listen 127.0.0.1:{self.http_port}
Listen 127.0.0.1:{self.https_port}
DocumentRoot "{b}/htdocs"
<Directory />
    Require all denied
    AllowOverride None
</Directory>
<Directory "{b}/htdocs">
    Require all granted
</Directory>
Redirect 302 /redirect-away http://localhost.invalid/elsewhere
Redirect 302 /redirect-here /basic/
<Location /basic>
    AuthType Basic
    AuthName "{BASIC_REALM}"
    AuthBasicProvider file
    AuthUserFile "{b}/htpasswd"
    Require valid-user
</Location>
<Location /digest>
    AuthType Digest
    AuthName "{DIGEST_REALM}"
    AuthDigestDomain /digest/
    AuthDigestProvider file
    AuthUserFile "{b}/htdigest"
    Require valid-user
</Location>
SSLSessionCache "shmcb:{b}/run/ssl_scache(512000)"
<VirtualHost 127.0.0.1:{self.https_port}>
    SSLEngine on
    SSLCertificateFile "{b}/server.crt"
    SSLCertificateKeyFile "{b}/server.key"
    SSLCACertificateFile "{b}/client-ca.pem"
    SSLVerifyClient require
    SSLVerifyDepth 2
</VirtualHost>
"""

    def _launch(self) -> None:
        last = ""
        for _attempt in range(3):  # another process may take a free port before httpd binds it
            self.http_port, self.https_port = _free_port(), _free_port()
            if self.http_port == self.https_port:
                continue
            conf = self.base / "httpd.conf"
            conf.write_text(self._config())
            self.error_log.write_bytes(b"")
            with (self.base / "logs" / "stderr.log").open("wb") as stderr:
                self.process = subprocess.Popen(
                    [str(APACHE), "-f", str(conf), "-DFOREGROUND"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
                    cwd=self.base,
                    start_new_session=True,
                )
            if self._wait_until_answering():
                return
            last = _tail(self.error_log) + "\n" + _tail(self.base / "logs" / "stderr.log")
            self.process.kill()
            self.process.wait()
            self.process = None
        raise ApacheUnavailable(f"httpd did not start:\n{last}")

    def _wait_until_answering(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(*self._client_files())
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=1) as s:
                    s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    if not s.recv(64).startswith(b"HTTP/1.1 200"):
                        raise OSError("not ready")
                with (
                    socket.create_connection(("127.0.0.1", self.https_port), timeout=1) as raw,
                    context.wrap_socket(raw, server_hostname="127.0.0.1") as s,
                ):
                    s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    if not s.recv(64).startswith(b"HTTP/1.1 200"):
                        raise OSError("not ready")
                return True
            except OSError:
                time.sleep(0.1)
        return False

    def _client_files(self) -> tuple[str, str]:
        # The readiness check's own client certificate (not an account's): root-only files.
        cert, key = self.base / "ready.crt", self.base / "ready.key"
        if not key.exists():
            ready = _issue("runas-readiness", self.pki.client_ca)
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(_pem_key(ready.key))
            cert.write_bytes(ready.cert_pem)
        return str(cert), str(key)


__all__ = ["BASIC_REALM", "DIGEST_REALM", "Apache", "ApacheUnavailable", "Issued", "Pki"]
