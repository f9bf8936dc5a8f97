"""The agents' own listener: TLS always, with a server certificate issued by the management
group's CA, and mutual TLS for everything but enrolment (docs/agents.md).

uvicorn does not pass a client certificate to the application, so :class:`PeerCertProtocol`
(its HTTP protocol, one more step) reads the certificate the TLS handshake verified and puts
it in the ASGI scope as the TLS extension does (``scope["extensions"]["tls"]``). The handshake
itself verifies the chain (``CERT_OPTIONAL`` against the group CA: an agent that has not been
approved yet has no certificate and may only enrol); the application then maps the
certificate to an approved agent (``services.agents.identify``).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from runas.errors import Unauthenticated
from runas.runtime import Runtime
from runas.services import agents

TLS_EXTENSION = "tls"


class PeerCertProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, with the verified client certificate (DER) of the
    connection in every request's scope."""

    _peer_der: bytes | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._peer_der = ssl_object.getpeercert(binary_form=True)
        super().connection_made(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {TLS_EXTENSION: {"client_cert_der": self._peer_der}}


def client_cert_of(scope: Scope) -> bytes | None:
    tls = (scope.get("extensions") or {}).get(TLS_EXTENSION) or {}
    der = tls.get("client_cert_der")
    return der if isinstance(der, bytes) else None


@dataclass(frozen=True)
class AgentFiles:
    """Where the listener's TLS material is written for uvicorn (it takes file names)."""

    cert: Path
    key: Path
    ca: Path


def prepare_tls(runtime: Runtime, directory: Path, *, hostnames: list[str]) -> AgentFiles:
    """The group CA (created on first use) and a fresh server certificate for this listener,
    written 0600 into ``directory``."""
    ips = [h for h in hostnames if _is_ip(h)]
    names = [h for h in hostnames if not _is_ip(h)]
    with runtime.unit_of_work(actor="system:server") as uow:
        ca = agents.group_ca(uow)
        cert_pem, key_pem = agents.server_certificate(uow, hostnames=names, ips=ips)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = AgentFiles(directory / "agent-listener.crt", directory / "agent-listener.key",
                       directory / "agent-ca.pem")  # fmt: skip
    _write(files.cert, cert_pem)
    _write(files.key, key_pem)
    _write(files.ca, ca.certificate_pem())
    return files


def _write(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class KnownAgent:
    agent_id: str
    #: the serial of the certificate it presented (hex), checked against the agent's row
    serial: str


class AgentIdentities:
    """Which agent a client certificate names, by certificate fingerprint: the chain and the
    name are verified once per certificate. Whether that agent is *still* approved with *that*
    certificate is checked against its row whenever its configuration is built — which every
    change of agents forces, since approving, rejecting and removing bump the epoch — and by
    every report. Bounded: past ``size`` certificates it forgets them all."""

    def __init__(self, size: int = 100_000) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._known: dict[bytes, KnownAgent] = {}

    def get(self, der: bytes) -> KnownAgent | None:
        return self._known.get(hashlib.sha256(der).digest())

    def put(self, der: bytes, known: KnownAgent) -> None:
        with self._lock:
            if len(self._known) >= self._size:
                self._known.clear()
            self._known[hashlib.sha256(der).digest()] = known

    def forget(self, der: bytes) -> None:
        with self._lock:
            self._known.pop(hashlib.sha256(der).digest(), None)


def require_certificate(scope: Scope) -> bytes:
    der = client_cert_of(scope)
    if der is None:
        raise Unauthenticated("this endpoint needs the agent's client certificate (mutual TLS)")
    return der


def ssl_options(files: AgentFiles) -> dict[str, Any]:
    """uvicorn ``Config`` keyword arguments for the agent listener."""
    return {
        "ssl_certfile": str(files.cert),
        "ssl_keyfile": str(files.key),
        "ssl_ca_certs": str(files.ca),
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
        "http": PeerCertProtocol,
    }


__all__ = [
    "AgentFiles",
    "AgentIdentities",
    "KnownAgent",
    "PeerCertProtocol",
    "client_cert_of",
    "prepare_tls",
    "require_certificate",
    "ssl_options",
]
