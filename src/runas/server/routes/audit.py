"""The audit trail: records with filters, and verification of the hash chain."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from runas.domain.roles import Permission
from runas.server.routes.common import API_PREFIX, errors
from runas.server.security import Caller, require
from runas.server.settings import ServerSettings
from runas.services import audit
from runas.services.audit import AuditRecordView, AuditVerifyView


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["audit"])
    read = require(Permission.AUDIT_READ)

    @r.get("/audit", response_model=list[AuditRecordView], responses=errors())
    def list_records(
        caller: Annotated[Caller, read],
        since: Annotated[datetime | None, Query()] = None,
        actor: Annotated[str | None, Query(max_length=255)] = None,
        action: Annotated[str | None, Query(max_length=128)] = None,
        target: Annotated[str | None, Query(max_length=1024)] = None,
        limit: Annotated[int, Query(ge=1, le=audit.MAX_LIMIT)] = 1000,
    ) -> list[AuditRecordView]:
        with caller.uow() as uow:
            return audit.list_records(
                uow.session, since=since, actor=actor, action=action, target=target, limit=limit
            )

    @r.get("/audit/verify", response_model=AuditVerifyView, responses=errors())
    def verify(caller: Annotated[Caller, read]) -> AuditVerifyView:
        with caller.uow() as uow:
            return audit.verify(uow.session)

    return r
