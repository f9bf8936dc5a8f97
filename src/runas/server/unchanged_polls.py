"""The poll every agent makes, answered before the web framework when nothing changed.

Each agent asks for its configuration every ``poll_interval`` (30 s) with the ETag it holds;
almost always the answer is 304. Through FastAPI that answer passed a dozen layers (telemetry,
error handling, body limits, routing, the dependency that names the agent) for what amounts to
three dictionary lookups, and it was most of what a 304 cost the listener's event loop.
:class:`UnchangedPolls` wraps the agent app and answers such a poll itself when — and only
when — the agent app would answer exactly the same:

* ``GET /agent/v1/config`` with an ``If-None-Match``;
* a client certificate this listener already identified (:class:`AgentIdentities`: verified
  chain and name; a certificate it has not seen goes through the app, which identifies it);
* the epoch the server's watcher vouches for, and a configuration built for that agent at that
  epoch whose ETag is the one presented (the app's own cache, :class:`AgentConfigCache`).

Anything else goes to the app unchanged. Such an answer is observed like any other request:
one metrics sample and one access log line with the same fields (``Observe``).
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from runas.server.agent_listener import AgentIdentities, client_cert_of
from runas.server.epochs import EpochWatcher
from runas.server.metrics import Metrics
from runas.server.middleware import ACCESS_LOGGER
from runas.services.agent_config import AgentConfigCache

CONFIG_PATH = "/agent/v1/config"


class UnchangedPolls:
    def __init__(
        self,
        app: ASGIApp,
        *,
        identities: AgentIdentities,
        epochs: EpochWatcher,
        configs: AgentConfigCache,
        metrics: Metrics,
    ) -> None:
        self.app = app
        self.identities = identities
        self.epochs = epochs
        self.configs = configs
        self.metrics = metrics
        self.log = logging.getLogger(ACCESS_LOGGER)
        #: polls answered here (for tests and metrics)
        self.answered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == CONFIG_PATH and scope["method"] == "GET":
            started = time.perf_counter()
            found = self._unchanged(scope)
            if found is not None:
                agent_id, etag = found
                await send(
                    {
                        "type": "http.response.start",
                        "status": 304,
                        "headers": [(b"etag", etag.encode("ascii"))],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
                self.answered += 1
                self._observe(scope, agent_id, time.perf_counter() - started)
                return
        await self.app(scope, receive, send)

    def _unchanged(self, scope: Scope) -> tuple[str, str] | None:
        """(agent id, ETag) when the agent app would answer 304; None to let it answer."""
        presented = None
        for name, value in scope["headers"]:
            if name == b"if-none-match":
                presented = value
                break
        if presented is None:
            return None
        der = client_cert_of(scope)
        if der is None:
            return None
        known = self.identities.get(der)
        epoch = self.epochs.known()
        if known is None or epoch is None:
            return None
        built = self.configs.get(known.agent_id, epoch)
        if built is None or built.etag.encode("ascii") != presented:
            return None
        return known.agent_id, built.etag

    def _observe(self, scope: Scope, agent_id: str, seconds: float) -> None:
        self.metrics.observe(CONFIG_PATH, "GET", 304, seconds)
        client = scope.get("client")
        fields = {
            "method": "GET",
            "route": CONFIG_PATH,
            "status": 304,
            "duration_ms": round(seconds * 1000, 2),
            "actor": f"agent:{agent_id}",
            "source": client[0] if client else None,
        }
        self.log.info("request", extra={"fields": fields})


__all__ = ["CONFIG_PATH", "UnchangedPolls"]
