"""The agent a management server runs for itself (issue 4, item 8), so that credentials can be
distributed to management servers like to any computer and server-side workflows run with the
resolved account.

It is the ordinary agent (:mod:`runas.agent.main`) in a thread of the server process, talking
to this server's own agent listener over mutual TLS like any other agent. Only enrolment
differs: the server holds the CA, so nobody needs to vouch for it — the server registers its
own agent directly (``services.agents.register_management_server``, marked as a management
server and audited) and hands it its certificate.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from runas.agent.identity import load_identity
from runas.agent.main import Agent
from runas.agent.settings import AgentSettings
from runas.crypto.ca import make_csr
from runas.errors import RunAsError
from runas.runtime import Runtime
from runas.services import agents

_log = logging.getLogger("runas.server.embedded_agent")


class EmbeddedAgent:
    def __init__(
        self,
        runtime: Runtime,
        *,
        name: str,
        agent_url: str,
        ca_file: Path,
        data_dir: Path,
        poll_interval: float,
    ) -> None:
        self._runtime = runtime
        self._settings = AgentSettings(
            servers=(agent_url,),
            name=name,
            data_dir=data_dir,
            ca_file=ca_file,
            poll_interval=poll_interval,
            report_interval=min(poll_interval, 10.0),
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def agent_id(self) -> str:
        return self._settings.agent_id

    def register(self) -> None:
        """Keys on first start, then a certificate from this management group's CA."""
        identity = load_identity(self._settings.data_dir, self.agent_id)
        csr = make_csr(identity.tls_key, self.agent_id)
        with self._runtime.unit_of_work(actor="system:server") as uow:
            pem = agents.register_management_server(
                uow, self.agent_id, identity.keys.public_bytes(), csr
            )
        if identity.certificate_pem != pem:
            identity.save_certificate(pem)

    def start(self) -> None:
        try:
            self.register()
        except RunAsError as err:  # e.g. an ordinary agent already holds this name
            _log.warning("the server's own agent does not run: %s", err)
            return
        agent = Agent(self._settings, stop_event=self._stop, log_to_file=False)
        self._thread = threading.Thread(target=agent.run, name="runas-embedded-agent", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
