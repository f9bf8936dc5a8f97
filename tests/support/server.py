"""A real ``runas server`` process on a loopback port, for the tests that drive the CLI as a
client of it.

The server runs on the test's own data directory and database (the same ``RUNAS_*``
variables the test's CLI uses), so a test can still look at what the server stored: the
database rows, the keyring file. Its log goes to a file of its own, next to the data
directory, so the client's command log stays the client's.

``serve(cli, request)`` turns a :class:`support.cli.Cli` on an initialised management group
into a remote one: it creates an administrator with the local user service (the way the first
administrator is made on a server host), starts the server, logs in over HTTP and points the
CLI at the server with ``RUNAS_SERVER`` and ``RUNAS_TOKEN``. The server is stopped (SIGTERM,
then SIGKILL) when the test ends.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from support.cli import Cli
from support.fleet import spawn_cli
from support.forkcli import ForkedProcess

ADMIN = "admin"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

#: what the server process needs from the test's environment, and nothing else
_PASSED_ON = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def make_tls_files(directory: Path) -> TlsFiles:
    """A throwaway CA and a certificate it signed for 127.0.0.1 and localhost."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("runas test CA"))
        .issuer_name(name("runas test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(ca=directory / "ca.pem", cert=directory / "server.pem",
                     key=directory / "server-key.pem")  # fmt: skip
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.key.chmod(0o600)
    return files


@dataclass
class ServerProcess:
    url: str
    process: ForkedProcess | subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(
        cls,
        *,
        data_dir: Path,
        db_url: str,
        log: Path,
        extra_env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
        tls: TlsFiles | None = None,
    ) -> ServerProcess:
        port = free_port()
        env = {k: os.environ[k] for k in _PASSED_ON if k in os.environ}
        env.update(
            {
                "RUNAS_DATA_DIR": str(data_dir),
                "RUNAS_DATABASE_URL": db_url,
                "RUNAS_LOG_FILE": str(log.with_suffix(".jsonl")),
                "RUNAS_HOST": "127.0.0.1",
                "RUNAS_PORT": str(port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if tls is not None:
            env.update({"RUNAS_TLS_CERT": str(tls.cert), "RUNAS_TLS_KEY": str(tls.key)})
        env.update(extra_env or {})
        with log.open("ab") as out:
            process = spawn_cli(
                ["server", *args], env=env, stdout=out.fileno(), stderr=out.fileno(),
                new_session=True,
            )  # fmt: skip
        scheme = "https" if tls is not None else "http"
        server = cls(url=f"{scheme}://127.0.0.1:{port}", process=process, log=log)
        try:
            server.wait_ready(verify=tls.context() if tls is not None else True)
        except BaseException:
            server.stop()
            raise
        return server

    def wait_ready(self, *, verify: bool | ssl.SSLContext = True) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"runas server exited with {self.process.returncode}:\n{self.output()}"
                )
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=1.0, verify=verify)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except httpx.TransportError as err:
                last = str(err)
            time.sleep(0.02)
        raise RuntimeError(
            f"runas server not ready after {START_TIMEOUT} s ({last}):\n{self.output()}"
        )

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)


def create_user(cli: Cli, name: str, password: str, roles: list[str]) -> None:
    """A user made the way the first administrator is: locally, on the server host."""
    from runas.runtime import Runtime
    from runas.services.users import UserCreate, create_user
    from runas.settings import load_settings

    runtime = Runtime(load_settings(env={"RUNAS_DATA_DIR": str(cli.data_dir),
                                         "RUNAS_DATABASE_URL": cli.db_url,
                                         "RUNAS_ACTOR": "test:setup"}))  # fmt: skip
    try:
        with runtime.unit_of_work() as uow:
            create_user(uow, UserCreate(name=name, password=SecretStr(password), roles=roles))
    finally:
        runtime.close()


def login_token(url: str, name: str, password: str, *, verify: bool | ssl.SSLContext = True) -> str:
    r = httpx.post(f"{url}/api/v1/login", json={"name": name, "password": password}, verify=verify)
    assert r.status_code == 200, f"login failed: {r.status_code} {r.text}"
    token: str = r.json()["token"]
    return token


@dataclass(frozen=True)
class Remote:
    """A CLI turned client, the server it talks to, and the administrator it is logged in as."""

    cli: Cli
    server: ServerProcess
    admin: str
    password: str
    token: str


def serve(cli: Cli, request: pytest.FixtureRequest, *, tls: TlsFiles | None = None) -> Remote:
    """Start a server on ``cli``'s management group and make ``cli`` its client."""
    password = secrets.token_urlsafe(16)
    create_user(cli, ADMIN, password, ["administrator"])
    log = cli.data_dir.parent / "server.log"
    server = ServerProcess.start(data_dir=cli.data_dir, db_url=cli.db_url, log=log, tls=tls)
    request.addfinalizer(server.stop)
    token = login_token(server.url, ADMIN, password, verify=tls.context() if tls else True)
    cli.remote(server.url, token, actor=ADMIN)
    return Remote(cli=cli, server=server, admin=ADMIN, password=password, token=token)
