"""The agent's HTTP client for the management servers' ``/agent/v1`` endpoints.

Trust. Servers are verified against ``ca_file`` alone — the management group's own CA — with
host name checking on: an :class:`ssl.SSLContext` built from nothing but that file, never the
system store (a public CA must not be able to impersonate a management server) and never
unverified. After approval the same context presents the agent's client certificate
(``tls.crt`` + ``tls.key``). ``trust_env`` is off: no proxy, ``.netrc`` or ``SSL_CERT_FILE``
from the environment changes where the agent connects or whom it trusts.

Failover. ``servers`` are tried in order. The client sticks to the one that last answered and
moves to the next (wrapping round, each server at most once per call) on a connection error,
a timeout or a 5xx. A 4xx is the server's considered answer, not an outage: another server of
the same management group would answer the same, so it is raised at once. Every request of
the contract is safe to repeat (enrolment and configuration polls are idempotent, reports
carry a ``report_id``), so a request that timed out after the server may have acted on it is
simply sent again to the next server. When every server failed: :class:`ServersUnavailable`.

Errors are RFC 9457 problem documents (``runas.server.problems``): the last segment of
``type`` is a :class:`runas.errors.RunAsError` code, rebuilt with ``error_for``. A 403 whose type
is ``agent-removed`` or ``agent-not-approved`` raises :class:`AgentRevoked`, which the main loop
answers by erasing its secrets and going back to enrolment.

One ``httpx.Client`` per server keeps its connection alive (HTTP/1.1) between polls.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from runas.errors import (
    ConfigurationError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RunAsError,
    ServerError,
    TooManyRequests,
    Unauthenticated,
    error_for,
)

AGENT_PREFIX = "/agent/v1"
#: how long an idle connection to a server is kept (the agent listener keeps it as long)
KEEPALIVE_S = 120.0
DEFAULT_TIMEOUT_S = 15.0
#: problem types (last segment) that mean "this agent may no longer talk to the group"
REVOKED_PROBLEMS = frozenset({"agent-removed", "agent-not-approved"})

_log = logging.getLogger("runas.agent.client")

_BY_STATUS: dict[int, type[RunAsError]] = {
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: TooManyRequests,
}


class AgentRevoked(Forbidden):
    """The management group removed or un-approved this agent (403 agent-removed or
    agent-not-approved): erase secrets, stop workflows, enrol again."""

    code = "agent-revoked"

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        #: the problem type's code: ``agent-removed`` or ``agent-not-approved``
        self.kind = kind


class ServersUnavailable(ServerError):
    """No management server could be reached, or every one answered with a 5xx."""

    code = "servers-unavailable"


@dataclass(frozen=True)
class EnrolmentAnswer:
    status: str  # pending | approved | rejected
    certificate: bytes | None


@dataclass(frozen=True)
class FetchedConfig:
    document: dict[str, Any]
    etag: str | None


def tls_context(
    ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """A client context that trusts ``ca_file`` only, optionally with a client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies and checks host names
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else "not a PEM CA"
        raise ConfigurationError(f"ca_file {ca_file}: {reason}") from None
    if cert_file is not None and key_file is not None:
        try:
            context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
        except (OSError, ssl.SSLError):
            raise ConfigurationError(
                f"client certificate {cert_file} cannot be used with its key"
            ) from None
    return context


def _problem_code(response: httpx.Response) -> tuple[str, str]:
    """(code, detail) of a problem document; tolerant of anything else."""
    code, detail = "", ""
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict):
            kind = body.get("type")
            if isinstance(kind, str):
                code = kind.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
            text = body.get("detail") or body.get("title")
            if isinstance(text, str):
                detail = text.splitlines()[0][:300] if text else ""
    return code, detail or response.reason_phrase or f"HTTP {response.status_code}"


class ManagementClient:
    """Talks to the management servers on the agent's behalf; see the module docstring."""

    def __init__(
        self,
        servers: Sequence[str],
        *,
        ca_file: Path,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not servers:
            raise ConfigurationError("at least one management server is needed")
        self._servers = tuple(s.rstrip("/") for s in servers)
        self._ca_file = ca_file
        self._timeout = timeout_s
        self._current = 0
        self._clients: list[httpx.Client] = []
        self.use_certificate(cert_file, key_file)

    def __repr__(self) -> str:
        return f"ManagementClient(servers={list(self._servers)!r}, current={self.current!r})"

    def __enter__(self) -> ManagementClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def current(self) -> str:
        """The server the client sticks to."""
        return self._servers[self._current]

    def use_certificate(self, cert_file: Path | None, key_file: Path | None) -> None:
        """(Re)build the connections, presenting this client certificate (None: none)."""
        context = tls_context(self._ca_file, cert_file, key_file)
        self.close()
        self._clients = [
            httpx.Client(
                base_url=server,
                verify=context,
                http1=True,
                http2=False,
                trust_env=False,
                timeout=self._timeout,
                follow_redirects=False,
                headers={"User-Agent": "runas-agent"},
                # Keep the TLS connection between polls (every 30 s by default): a handshake
                # per poll would cost the server more than the poll itself.
                limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S),
            )
            for server in self._servers
        ]

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients = []

    # -- the contract ---------------------------------------------------------------------------

    def enrol(
        self,
        *,
        agent_id: str,
        hpke_public_key: bytes,
        csr_pem: bytes,
        token: str | None,
        agent_version: str,
    ) -> EnrolmentAnswer:
        body = {
            "agent_id": agent_id,
            "hpke_public_key": base64.b64encode(hpke_public_key).decode("ascii"),
            "csr": csr_pem.decode("ascii"),
            "token": token,
            "agent_version": agent_version,
        }
        response = self._request("POST", "/enrol", json=body)
        data = self._json(response)
        status = data.get("status")
        certificate = data.get("certificate")
        if status not in ("pending", "approved", "rejected"):
            raise ServerError("the enrolment answer has no valid status")
        if status == "approved" and not isinstance(certificate, str):
            raise ServerError("the enrolment was approved without a certificate")
        return EnrolmentAnswer(
            status, certificate.encode("ascii") if isinstance(certificate, str) else None
        )

    def fetch_config(self, etag: str | None) -> FetchedConfig | None:
        """The configuration, or None when it has not changed since ``etag`` (304)."""
        headers = {"If-None-Match": etag} if etag else {}
        response = self._request("GET", "/config", headers=headers)
        if response.status_code == 304:
            return None
        document = self._json(response)
        header = response.headers.get("ETag")
        body_etag = document.get("etag")
        return FetchedConfig(
            document, header or (body_etag if isinstance(body_etag, str) else None)
        )

    def send_report(self, report: Mapping[str, Any]) -> int:
        """Send one report; returns how many results the server accepted."""
        data = self._json(self._request("POST", "/reports", json=dict(report)))
        accepted = data.get("accepted", 0)
        return accepted if isinstance(accepted, int) else 0

    def fetch_tasks(self) -> list[Any]:
        """The task documents waiting for this agent (``runas.agent.tasks`` checks each).
        The server marks them delivered as it answers: a doc is served once."""
        tasks = self._json(self._request("GET", "/tasks")).get("tasks", [])
        if not isinstance(tasks, list):
            raise ServerError(f"{self.current} answered tasks that are not a list")
        return tasks

    def send_task_result(self, target: int, result: Mapping[str, Any]) -> bool:
        """Post one task target's result; False when the server already had one (ignored)."""
        data = self._json(self._request("POST", f"/tasks/{int(target)}/result", json=dict(result)))
        return data.get("accepted") is True

    # -- plumbing -------------------------------------------------------------------------------

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ServerError(f"{self.current} answered with something other than a JSON object")
        return data

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        count = len(self._servers)
        last = ""
        for step in range(count):
            index = (self._current + step) % count
            client = self._clients[index]
            server = self._servers[index]
            try:
                response = client.request(
                    method, AGENT_PREFIX + path, json=json, headers=dict(headers or {})
                )
            except httpx.TransportError as err:
                last = f"{server}: {type(err).__name__}"
                _log.info(
                    "agent.server_unreachable",
                    extra={"fields": {"server": server, "error": type(err).__name__}},
                )
                continue
            if response.status_code >= 500:
                last = f"{server}: HTTP {response.status_code}"
                _log.info(
                    "agent.server_failed",
                    extra={"fields": {"server": server, "status": response.status_code}},
                )
                continue
            if index != self._current:
                _log.info(
                    "agent.failover",
                    extra={"fields": {"from": self.current, "to": server}},
                )
                self._current = index
            if response.status_code >= 400:
                raise self._error(response)
            return response
        raise ServersUnavailable(f"no management server answered (last: {last})")

    @staticmethod
    def _error(response: httpx.Response) -> RunAsError:
        code, detail = _problem_code(response)
        if response.status_code == 403 and code in REVOKED_PROBLEMS:
            return AgentRevoked(code, detail)
        err = error_for(code, detail) if code else None
        if err is None or type(err) is ServerError:
            # No problem type runas knows (a proxy's page, say): the status says enough.
            err = _BY_STATUS.get(response.status_code, InvalidInput)(detail)
        return err


__all__ = [
    "AGENT_PREFIX",
    "REVOKED_PROBLEMS",
    "AgentRevoked",
    "EnrolmentAnswer",
    "FetchedConfig",
    "ManagementClient",
    "ServersUnavailable",
    "tls_context",
]
