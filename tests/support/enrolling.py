"""An agent's side of enrolment, with real keys: what ``runas agent run`` generates and sends."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr

from runas.crypto.ca import TlsKey, generate_tls_key, make_csr
from runas.crypto.sealing import AgentKeyPair
from runas.runtime import Runtime
from runas.services import agents
from runas.services.agents import EnrolRequest
from runas.storage.tables import AgentRow


@dataclass
class FakeAgent:
    """An agent id with its HPKE and TLS keys; ``request()`` is its enrolment request."""

    agent_id: str
    hpke: AgentKeyPair = field(default_factory=AgentKeyPair.generate)
    tls: TlsKey = field(default_factory=generate_tls_key)
    version: str = "1.0.0"

    def csr(self) -> bytes:
        return make_csr(self.tls, self.agent_id.lower())

    def request(self, token: str | None = None) -> EnrolRequest:
        return EnrolRequest(
            agent_id=self.agent_id,
            hpke_public_key=base64.b64encode(self.hpke.public_bytes()).decode("ascii"),
            csr=self.csr().decode("ascii"),
            token=SecretStr(token) if token is not None else None,
            agent_version=self.version,
        )

    def with_new_keys(self) -> FakeAgent:
        return FakeAgent(self.agent_id, version=self.version)


def der(certificate_pem: str | bytes) -> bytes:
    """The DER of a PEM certificate: what the TLS layer hands the server."""
    pem = certificate_pem.encode() if isinstance(certificate_pem, str) else certificate_pem
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def enrol_approved(runtime: Runtime, agent: FakeAgent) -> bytes:
    """Enrol ``agent`` and approve it, as the listener and an administrator would; the DER of
    the certificate it was issued (what its TLS layer presents)."""
    with runtime.unit_of_work(actor="system:agent-listener") as uow:
        agents.enrol(uow, agent.request())
    with runtime.unit_of_work() as uow:
        agents.approve(uow, agent.agent_id)
        row = uow.session.get(AgentRow, agent.agent_id.lower())
        assert row is not None
        assert row.cert_pem is not None
        return der(row.cert_pem)
