"""One's own API tokens (a user administrator may revoke anyone's)."""

from typing import Annotated

from fastapi import APIRouter, Path

from runas.domain.roles import Permission
from runas.server.routes.common import API_PREFIX, Revoked, errors
from runas.server.security import Caller, require
from runas.server.settings import ServerSettings
from runas.services import users
from runas.services.audit import AuditAction
from runas.services.users import TokenCreate, TokenCreated, TokenView


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["tokens"])

    @r.get("/tokens", response_model=list[TokenView], responses=errors())
    def list_tokens(caller: Annotated[Caller, require(Permission.SELF)]) -> list[TokenView]:
        with caller.uow() as uow:
            return users.list_tokens(uow.session, principal=caller.principal, now=uow.now)

    @r.post("/tokens", status_code=201, response_model=TokenCreated, responses=errors(409, 413))
    def create_token(
        caller: Annotated[Caller, require(Permission.SELF, action=AuditAction.TOKEN_CREATE)],
        req: TokenCreate,
    ) -> TokenCreated:
        # The one response that carries a secret: the new token, shown this once.
        with caller.uow() as uow:
            return users.create_token(uow, req, principal=caller.principal)

    @r.delete("/tokens/{token_id}", response_model=Revoked, responses=errors(404))
    def revoke_token(
        caller: Annotated[Caller, require(Permission.SELF, action=AuditAction.TOKEN_REVOKE)],
        # ids are 64-bit in the database: a larger number is a 422, not an overflow
        token_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    ) -> Revoked:
        # Another user's token looks exactly like a missing one unless the caller may manage
        # users (users.revoke_token decides), so ids cannot be probed.
        with caller.uow() as uow:
            return Revoked(revoked=users.revoke_token(uow, token_id, principal=caller.principal))

    return r
