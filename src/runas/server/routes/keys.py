"""Key-encryption keys: status, rotation, re-wrap, retirement. Rotation runs in the request's
worker thread; it works in batches of short transactions, so other requests go on meanwhile."""

from typing import Annotated

from fastapi import APIRouter

from runas.domain.roles import Permission
from runas.server.routes.common import API_PREFIX, errors
from runas.server.security import Caller, require
from runas.server.settings import ServerSettings
from runas.services import keys
from runas.services.audit import AuditAction
from runas.services.keys import KeyView, RotateResult


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["keys"])

    @r.get("/keys", response_model=list[KeyView], responses=errors())
    def list_keys(caller: Annotated[Caller, require(Permission.RUNAS_READ)]) -> list[KeyView]:
        return keys.list_keys(caller.runtime)

    @r.post("/keys/rotate", response_model=RotateResult, responses=errors(409))
    def rotate(
        caller: Annotated[Caller, require(Permission.KEYS_ADMIN, action=AuditAction.KEY_ROTATE)],
    ) -> RotateResult:
        return keys.rotate(caller.runtime, actor=caller.name, source=caller.source)

    @r.post("/keys/rewrap", response_model=RotateResult, responses=errors(409))
    def rewrap(
        caller: Annotated[Caller, require(Permission.KEYS_ADMIN, action=AuditAction.KEY_REWRAP)],
    ) -> RotateResult:
        return keys.rewrap_all(caller.runtime, actor=caller.name, source=caller.source)

    @r.delete("/keys/{key_id}", response_model=list[KeyView], responses=errors(404, 409))
    def retire(
        caller: Annotated[Caller, require(Permission.KEYS_ADMIN, action=AuditAction.KEY_RETIRE)],
        key_id: str,
    ) -> list[KeyView]:
        return keys.retire(caller.runtime, key_id, actor=caller.name, source=caller.source)

    return r
