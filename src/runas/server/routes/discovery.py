"""Discovery data: a snapshot of what a source sees (a larger body limit applies)."""

from typing import Annotated

from fastapi import APIRouter

from runas.domain.roles import Permission
from runas.server.routes.common import API_PREFIX, errors
from runas.server.security import Caller, require
from runas.server.settings import ServerSettings
from runas.services import discovery
from runas.services.audit import AuditAction
from runas.services.discovery import DiscoveryPayload, DiscoveryResult


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["discovery"])

    @r.post("/discovery", response_model=DiscoveryResult, responses=errors(404, 409, 413))
    def submit(
        caller: Annotated[
            Caller, require(Permission.DISCOVERY_SUBMIT, action=AuditAction.DISCOVERY_SUBMIT)
        ],
        payload: DiscoveryPayload,
    ) -> DiscoveryResult:
        caller.target(payload.source)
        with caller.uow() as uow:
            return discovery.submit(uow, payload)

    return r
