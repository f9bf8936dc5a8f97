"""Logging in (public, rate-limited), logging out, and who am I."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter

from runas.domain.roles import Permission
from runas.server.problems import declare
from runas.server.routes.common import API_PREFIX, Revoked, errors
from runas.server.security import ANONYMOUS, Anonymous, Caller, public, require
from runas.server.settings import ServerSettings
from runas.services import users
from runas.services.audit import AuditAction
from runas.services.users import LoginRequest, LoginResult, MeView


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["auth"])
    lifetime = timedelta(hours=settings.session_token_hours)

    @r.post("/login", response_model=LoginResult, responses=declare(401, 413, 422, 429, 500))
    def login(anon: Annotated[Anonymous, public()], req: LoginRequest) -> LoginResult:
        # Its own unit of work: users.login commits a failure (so it counts) before raising.
        # argon2 verification runs here, in a worker thread.
        with anon.runtime.unit_of_work(actor=ANONYMOUS, source=anon.source) as uow:
            return users.login(uow, req.name, req.password, lifetime=lifetime)

    @r.post("/logout", response_model=Revoked, responses=errors(404))
    def logout(
        caller: Annotated[Caller, require(Permission.SELF, action=AuditAction.AUTH_LOGOUT)],
    ) -> Revoked:
        token_id = caller.principal.token_id
        assert token_id is not None  # a bearer token authenticated this request
        with caller.uow() as uow:
            return Revoked(revoked=users.revoke_token(uow, token_id, principal=caller.principal))

    @r.get("/me", response_model=MeView, responses=errors())
    def me(caller: Annotated[Caller, require(Permission.SELF)]) -> MeView:
        return users.me(caller.principal)

    return r
