"""The application served on the agent listener (docs/agents.md): enrolment, the CA
certificate, configuration pulls and reports. Nothing of ``/api/v1`` is here, and none of
this is on the administrators' port.

Two hot paths are kept free of the database: identifying an agent from its certificate
(:class:`~runas.server.agent_listener.AgentIdentities`, per epoch) and an unchanged
configuration poll (:class:`~runas.services.agent_config.AgentConfigCache`, per epoch): a
304 costs two dictionary lookups once the server's epoch watcher vouches for the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from runas import __version__
from runas.errors import AgentRemoved
from runas.runtime import Runtime
from runas.server import problems
from runas.server.agent_listener import AgentIdentities, require_certificate
from runas.server.epochs import EpochWatcher
from runas.server.metrics import Metrics
from runas.server.middleware import BodyLimit, Observe
from runas.server.security import DirectRoute, Rule, client_source, rules_of
from runas.server.settings import ServerSettings
from runas.services import agent_config, agents, lookup, monitoring
from runas.services.agent_config import AgentConfigCache, BuiltConfig
from runas.services.resolution_memory import ResolutionMemory
from runas.storage.tables import AgentRow

AGENT_PREFIX = "/agent/v1"
JSON = "application/json"
PEM = "application/x-pem-file"


@dataclass
class AgentCaller:
    """A request from an approved agent, identified by its client certificate."""

    agent_id: str
    runtime: Runtime
    source: str


def _identify(runtime: Runtime, der: bytes, source: str) -> tuple[str, int]:
    with runtime.unit_of_work(actor="system:agent-listener", source=source, read_only=True) as uow:
        epoch = lookup.epoch(uow.session)
        row = agents.identify(uow.session, der, now=uow.now)
        return row.id, epoch


@dataclass(frozen=True)
class _AgentRule(Rule):
    async def __call__(self, request: Request) -> AgentCaller:
        der = require_certificate(request.scope)
        state = request.app.state
        runtime: Runtime = state.runtime
        source = client_source(request)
        identities: AgentIdentities = state.identities
        epoch = state.epochs.known()
        known = identities.get(der, epoch) if epoch is not None else None
        if known is None:
            found, seen = await run_in_threadpool(_identify, runtime, der, source)
            identities.put(der, seen, found)
            known = found
        request.state.actor = f"agent:{known}"
        return AgentCaller(known, runtime, source)


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

    @app.post(f"{AGENT_PREFIX}/enrol", response_model=agents.EnrolAnswer)
    def enrol(
        request: Request, _: Annotated[None, public_rule()], req: agents.EnrolRequest
    ) -> agents.EnrolAnswer:
        with runtime.unit_of_work(
            actor=f"agent:{req.agent_id}", source=client_source(request)
        ) as uow:
            return agents.enrol(uow, req)

    configs: AgentConfigCache = app.state.configs

    def build(caller: AgentCaller) -> BuiltConfig:
        with runtime.unit_of_work(actor=f"agent:{caller.agent_id}", source=caller.source) as uow:
            row = uow.session.get(AgentRow, caller.agent_id)
            if row is None or row.status != "approved":
                raise AgentRemoved(f"agent {caller.agent_id} is no longer in this management group")
            built = agent_config.build(uow, row, memory=memory)
            agents.touch(uow.session, row.id, now=uow.now, source=caller.source, epoch=built.epoch)
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
        built = await run_in_threadpool(build, caller)
        configs.put(built)
        return answer(request, built)

    app.router.routes.append(DirectRoute(f"{AGENT_PREFIX}/config", config, methods=["GET"]))

    @app.post(f"{AGENT_PREFIX}/reports")
    def reports(
        caller: Annotated[AgentCaller, agent_rule()], report: monitoring.AgentReport
    ) -> dict[str, int]:
        with runtime.unit_of_work(actor=f"agent:{caller.agent_id}", source=caller.source) as uow:
            return {"accepted": monitoring.record_report(uow, caller.agent_id, report)}

    problems.install(app)
    app.add_middleware(BodyLimit, limit_for=_limit_for(settings))
    app.add_middleware(Observe, metrics=metrics)
    return app


def agent_routes_rules(app: FastAPI) -> dict[str, list[Rule]]:
    """Each route of the agent app and its rules (the coverage test wants exactly one)."""
    return {getattr(r, "path", "?"): rules_of(r) for r in app.routes if isinstance(r, APIRoute)}
