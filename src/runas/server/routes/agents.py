"""Agents as administrators manage them: enrolment requests, approval, one-time enrolment
tokens, and the agent CA's certificate. (What agents themselves call is served on the agent
listener, not here: ``server/agent_app.py``.)"""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from runas.domain.roles import Permission
from runas.server.routes.common import API_PREFIX, Removed, errors
from runas.server.security import Caller, require
from runas.server.settings import ServerSettings
from runas.services import agents
from runas.services.agents import (
    AgentCaView,
    AgentView,
    EnrolmentTokenCreate,
    EnrolmentTokenCreated,
)
from runas.services.audit import AuditAction


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["agents"])

    @r.get("/agents", response_model=list[AgentView], responses=errors())
    def list_agents(
        caller: Annotated[Caller, require(Permission.RUNAS_READ)],
        # Checked by the service, so that a remote CLI fails exactly like a local one.
        status: Annotated[str | None, Query(max_length=16)] = None,
    ) -> list[AgentView]:
        with caller.uow() as uow:
            return agents.list_agents(uow.session, status)

    @r.get("/agents/{agent_id}", response_model=AgentView, responses=errors(404))
    def show_agent(
        caller: Annotated[Caller, require(Permission.RUNAS_READ)], agent_id: str
    ) -> AgentView:
        with caller.uow() as uow:
            return agents.show(uow.session, agent_id)

    @r.post("/agents/{agent_id}/approve", response_model=AgentView, responses=errors(404))
    def approve(
        caller: Annotated[
            Caller, require(Permission.RUNAS_WRITE, action=AuditAction.AGENT_APPROVE)
        ],
        agent_id: str,
    ) -> AgentView:
        caller.target(agent_id)
        with caller.uow() as uow:
            return agents.approve(uow, agent_id)

    @r.post("/agents/{agent_id}/reject", response_model=AgentView, responses=errors(404, 409))
    def reject(
        caller: Annotated[Caller, require(Permission.RUNAS_WRITE, action=AuditAction.AGENT_REJECT)],
        agent_id: str,
    ) -> AgentView:
        caller.target(agent_id)
        with caller.uow() as uow:
            return agents.reject(uow, agent_id)

    @r.delete("/agents/{agent_id}", response_model=Removed, responses=errors(404))
    def remove(
        caller: Annotated[Caller, require(Permission.RUNAS_WRITE, action=AuditAction.AGENT_REMOVE)],
        agent_id: str,
    ) -> Removed:
        caller.target(agent_id)
        with caller.uow() as uow:
            return Removed(removed=agents.remove(uow, agent_id))

    @r.post(
        "/enrolment-tokens",
        status_code=201,
        response_model=EnrolmentTokenCreated,
        responses=errors(),
    )
    def create_enrolment_token(
        caller: Annotated[
            Caller, require(Permission.RUNAS_WRITE, action=AuditAction.AGENT_TOKEN_CREATE)
        ],
        req: EnrolmentTokenCreate,
    ) -> EnrolmentTokenCreated:
        # The one response of this router that carries a secret: the token, shown this once.
        caller.target(req.computer)
        with caller.uow() as uow:
            return agents.create_enrolment_token(
                uow, req.computer, timedelta(seconds=req.expires_in)
            )

    @r.get("/agent-ca", response_model=AgentCaView, responses=errors())
    def agent_ca(caller: Annotated[Caller, require(Permission.RUNAS_READ)]) -> AgentCaView:
        with caller.uow() as uow:
            found = agents.find_ca(uow.session)
        if found is not None:
            return found
        # First use: the CA is made (and audited) in a transaction that may write.
        with caller.runtime.unit_of_work(actor=caller.name, source=caller.source) as uow:
            return agents.ca_view(uow)

    return r
