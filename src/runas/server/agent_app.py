"""The application served on the agent listener (docs/agents.md): enrolment, the CA
certificate, configuration pulls and reports. Nothing of ``/api/v1`` is here, and none of
this is on the administrators' port.

Two hot paths are kept free of the database: identifying an agent from its certificate
(:class:`~runas.server.agent_listener.AgentIdentities`, per epoch) and an unchanged
configuration poll (:class:`~runas.services.agent_config.AgentConfigCache`, per epoch): a
304 costs two dictionary lookups once the server's epoch watcher vouches for the epoch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from runas import __version__
from runas.errors import AgentNotApproved, AgentRemoved
from runas.runtime import Runtime
from runas.server import problems
from runas.server.agent_listener import AgentIdentities, KnownAgent, require_certificate
from runas.server.deliveries import DeliveryWriter
from runas.server.epochs import EpochWatcher
from runas.server.metrics import Metrics
from runas.server.middleware import BodyLimit, Observe
from runas.server.security import DirectRoute, Rule, client_source, rules_of
from runas.server.settings import ServerSettings
from runas.services import agent_config, agents, monitoring, tasks
from runas.services.agent_config import AgentConfigCache, BuiltConfig
from runas.services.resolution_memory import ResolutionMemory
from runas.services.secret_memory import PlaintextMemory
from runas.storage.tables import AgentRow

AGENT_PREFIX = "/agent/v1"
JSON = "application/json"
PEM = "application/x-pem-file"
#: configurations built at once. Building one is CPU work under the GIL (the database is
#: read from the page cache): more builders do not build faster, they only queue for the GIL
#: and starve the event loop that reads the agents' requests and writes the answers. Waiting
#: for the deliveries' audit commit is not counted (those wait together, for group commit).
BUILDERS = 2


@dataclass
class AgentCaller:
    """A request from an agent, identified by its client certificate."""

    agent_id: str
    serial: str
    runtime: Runtime
    source: str
    der: bytes

    def check(self, row: AgentRow | None) -> AgentRow:
        """The agent's row, if it is still approved with the certificate it presented."""
        if row is None or row.cert_serial != self.serial:
            raise AgentRemoved(f"agent {self.agent_id} is no longer in this management group")
        if row.status != "approved":
            raise AgentNotApproved(f"agent {self.agent_id} is not approved")
        return row


def _identify(runtime: Runtime, der: bytes, source: str) -> KnownAgent:
    with runtime.unit_of_work(actor="system:agent-listener", source=source, read_only=True) as uow:
        row = agents.identify(uow.session, der, now=uow.now)
        assert row.cert_serial is not None
        return KnownAgent(row.id, row.cert_serial)


@dataclass(frozen=True)
class _AgentRule(Rule):
    async def __call__(self, request: Request) -> AgentCaller:
        der = require_certificate(request.scope)
        state = request.app.state
        runtime: Runtime = state.runtime
        source = client_source(request)
        identities: AgentIdentities = state.identities
        known = identities.get(der)
        if known is None:
            known = await run_in_threadpool(_identify, runtime, der, source)
            identities.put(der, known)
        request.state.actor = f"agent:{known.agent_id}"
        return AgentCaller(known.agent_id, known.serial, runtime, source, der)


@dataclass(frozen=True)
class _PublicRule(Rule):
    async def __call__(self, request: Request) -> None:
        return None


def agent_rule() -> Any:
    return Depends(_AgentRule(None, agent=True))


def public_rule() -> Any:
    return Depends(_PublicRule(None))


def _limit_for(settings: ServerSettings) -> Any:
    def limit(scope: Scope) -> int:
        route = getattr(scope.get("route"), "path", "")
        if route == f"{AGENT_PREFIX}/reports":
            return settings.max_upload_bytes
        return settings.max_body_bytes

    return limit


def create_agent_app(
    runtime: Runtime,
    settings: ServerSettings,
    *,
    epochs: EpochWatcher,
    metrics: Metrics,
    memory: ResolutionMemory,
) -> FastAPI:
    app = FastAPI(
        title="runas agent endpoint",
        version=__version__,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.settings = settings
    app.state.epochs = epochs
    app.state.identities = AgentIdentities()
    app.state.configs = AgentConfigCache()

    @app.get(f"{AGENT_PREFIX}/ca")
    def ca_certificate(_: Annotated[None, public_rule()]) -> Response:
        with runtime.unit_of_work(actor="system:agent-listener") as uow:
            pem = agents.group_ca(uow).certificate_pem()
        return Response(pem, media_type=PEM)

    limits = agents.EnrolLimits(
        per_source=settings.enrol_per_source,
        window=timedelta(seconds=settings.enrol_window),
        max_pending=settings.max_pending_enrolments,
    )

    @app.post(f"{AGENT_PREFIX}/enrol", response_model=agents.EnrolAnswer)
    def enrol(
        request: Request, _: Annotated[None, public_rule()], req: agents.EnrolRequest
    ) -> agents.EnrolAnswer:
        with runtime.unit_of_work(
            actor=f"agent:{req.agent_id}", source=client_source(request)
        ) as uow:
            return agents.enrol(uow, req, limits=limits)

    configs: AgentConfigCache = app.state.configs
    deliveries = DeliveryWriter(runtime)
    app.state.deliveries = deliveries
    # The secret versions of the current epoch, decrypted once for every agent's bundle
    # (bounded in time and size; every use still audited per agent): services/secret_memory.py
    plaintexts = PlaintextMemory()
    app.state.plaintexts = plaintexts
    identities: AgentIdentities = app.state.identities

    builders = threading.BoundedSemaphore(BUILDERS)
    app.state.builders = builders

    def build(caller: AgentCaller) -> BuiltConfig:
        actor = f"agent:{caller.agent_id}"
        # BUILDERS at a time. From memory when the epoch's view holds everything (the
        # server's watcher vouches for the epoch, as for a 304); else in a read-only
        # transaction (no write lock), which fills the view for the next agents. The
        # secrets' uses and the agent's last contact are written after, grouped with other
        # deliveries waiting at the same time (server/deliveries.py), and committed before
        # anything is sent.
        with builders:
            epoch = epochs.known()
            built = (
                agent_config.build_known(memory, epoch, caller.agent_id, caller.serial, plaintexts)
                if epoch is not None
                else None
            )
            if built is None:
                with runtime.unit_of_work(actor=actor, source=caller.source, read_only=True) as uow:
                    built = agent_config.build_for(
                        uow,
                        caller.agent_id,
                        caller.serial,
                        check=caller.check,
                        memory=memory,
                        plaintexts=plaintexts,
                    )
        deliveries.record(built, caller.agent_id, caller.source)
        return built

    def answer(request: Request, built: BuiltConfig) -> Response:
        headers = {"ETag": built.etag}
        if request.headers.get("if-none-match") == built.etag:
            return Response(status_code=304, headers=headers)
        return Response(built.body, media_type=JSON, headers=headers)

    async def config(request: Request, caller: Annotated[AgentCaller, agent_rule()]) -> Response:
        # The poll every agent makes: unchanged (304) without any database work when this
        # server's watcher vouches for the epoch and the configuration was built at it.
        epoch = epochs.known()
        if epoch is not None:
            built = configs.get(caller.agent_id, epoch)
            if built is not None:
                return answer(request, built)
        try:
            built = await run_in_threadpool(build, caller)
        except (AgentRemoved, AgentNotApproved):
            identities.forget(caller.der)
            raise
        configs.put(built)
        return answer(request, built)

    app.router.routes.append(DirectRoute(f"{AGENT_PREFIX}/config", config, methods=["GET"]))

    @app.post(f"{AGENT_PREFIX}/reports")
    def reports(
        caller: Annotated[AgentCaller, agent_rule()], report: monitoring.AgentReport
    ) -> dict[str, int]:
        with runtime.unit_of_work(actor=f"agent:{caller.agent_id}", source=caller.source) as uow:
            caller.check(uow.session.get(AgentRow, caller.agent_id))
            return {"accepted": monitoring.record_report(uow, caller.agent_id, report)}

    @app.get(f"{AGENT_PREFIX}/tasks")
    def task_documents(caller: Annotated[AgentCaller, agent_rule()]) -> dict[str, Any]:
        # Polled as often as the configuration: nothing pending is one indexed read, without
        # the write lock; the documents are taken (marked delivered) in a write transaction.
        actor = f"agent:{caller.agent_id}"
        with runtime.unit_of_work(actor=actor, source=caller.source, read_only=True) as uow:
            if not tasks.has_pending(uow.session, caller.agent_id):
                return {"tasks": []}
        with runtime.unit_of_work(actor=actor, source=caller.source) as uow:
            session = uow.session
            docs = tasks.pending_for_agent(
                uow,
                caller.agent_id,
                verify=lambda: caller.check(session.get(AgentRow, caller.agent_id)),
            )
        return {"tasks": docs}

    @app.post(f"{AGENT_PREFIX}/tasks/{{target}}/result")
    def task_result(
        target: int, caller: Annotated[AgentCaller, agent_rule()], result: tasks.TaskResultIn
    ) -> dict[str, bool]:
        with runtime.unit_of_work(actor=f"agent:{caller.agent_id}", source=caller.source) as uow:
            caller.check(uow.session.get(AgentRow, caller.agent_id))
            return {"accepted": tasks.record_result(uow, caller.agent_id, target, result)}

    problems.install(app)
    app.add_middleware(BodyLimit, limit_for=_limit_for(settings))
    app.add_middleware(Observe, metrics=metrics)
    return app


def agent_routes_rules(app: FastAPI) -> dict[str, list[Rule]]:
    """Each route of the agent app and its rules (the coverage test wants exactly one)."""
    return {getattr(r, "path", "?"): rules_of(r) for r in app.routes if isinstance(r, APIRoute)}
