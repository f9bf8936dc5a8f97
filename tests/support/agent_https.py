"""For the agent's tests: a real management group CA and tiny real HTTPS servers.

:class:`HttpsServer` is Python's ``http.server`` behind ``ssl`` with a server certificate from
a real :class:`~runas.crypto.ca.CertificateAuthority`; it can require client certificates,
answers with whatever its ``respond`` function says, and :meth:`HttpsServer.stop` also cuts the
keep-alive connections it holds (a stopped server must look stopped to a pooled client).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from runas.crypto.ca import (
    CertificateAuthority,
    agent_id_of,
    generate_tls_key,
    make_csr,
    tls_key_to_pem,
)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    #: the agent id of the client certificate, None without one
    agent: str | None


Response = tuple[int, dict[str, str], Any]
Respond = Callable[[Request], Response]


@dataclass
class Pki:
    ca: CertificateAuthority
    directory: Path
    ca_file: Path
    server_cert: Path
    server_key: Path

    def agent_files(self, agent_id: str) -> tuple[Path, Path]:
        """A client certificate and key for ``agent_id`` (cert file, key file)."""
        key = generate_tls_key()
        cert = self.ca.issue_agent_certificate(
            make_csr(key, agent_id), agent_id=agent_id, now=datetime.now(UTC)
        )
        cert_file = self.directory / f"{agent_id}.crt"
        key_file = self.directory / f"{agent_id}.key"
        cert_file.write_bytes(cert)
        key_file.write_bytes(tls_key_to_pem(key))
        key_file.chmod(0o600)
        return cert_file, key_file


def make_pki(directory: Path) -> Pki:
    now = datetime.now(UTC)
    ca = CertificateAuthority.create("runas test MG", now=now)
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.certificate_pem())
    cert, key = ca.issue_server_certificate(hostnames=["localhost"], ips=["127.0.0.1"], now=now)
    server_cert = directory / "server.crt"
    server_key = directory / "server.key"
    server_cert.write_bytes(cert)
    server_key.write_bytes(key)
    return Pki(ca, directory, ca_file, server_cert, server_key)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        peer = self.connection.getpeercert(True)  # type: ignore[attr-defined]
        request = Request(
            self.command,
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            json.loads(raw) if raw else None,
            agent_id_of(peer) if peer else None,
        )
        self.server.requests.append(request)
        status, headers, body = self.server.respond(request)
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status != 304:
            content_type = headers.get("Content-Type", "application/json")
            if "Content-Type" not in headers:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status != 304:
            self.wfile.write(data)

    do_GET = _handle
    do_POST = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, respond: Respond) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.respond = respond
        self.requests: list[Request] = []
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()


@dataclass
class HttpsServer:
    pki: Pki
    respond: Respond
    require_cert: bool = True
    _server: _Server | None = None
    _thread: threading.Thread | None = None
    port: int = 0
    requests: list[Request] = field(default_factory=list)

    def start(self) -> str:
        server = _Server(lambda request: self.respond(request))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        context.load_verify_locations(self.pki.ca_file)
        context.verify_mode = ssl.CERT_REQUIRED if self.require_cert else ssl.CERT_OPTIONAL
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.requests = self.requests
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with server.lock:
            connections = list(server.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None


def problem(status: int, code: str, detail: str = "refused") -> Response:
    return (
        status,
        {"Content-Type": "application/problem+json"},
        {
            "type": f"urn:runas:problem:{code}",
            "title": "refused",
            "status": status,
            "detail": detail,
            "instance": "/",
        },
    )
