"""Users and their roles (user administrators), and one's own password."""

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from runas.domain.roles import Permission
from runas.server.routes.common import API_PREFIX, Removed, errors
from runas.server.security import Caller, require
from runas.server.settings import ServerSettings
from runas.services import users
from runas.services.audit import AuditAction
from runas.services.users import PasswordChange, RoleAssign, RoleView, UserCreate, UserView


class DisabledChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    disabled: bool


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["users"])
    read = require(Permission.USERS_READ)

    @r.get("/users", response_model=list[UserView], responses=errors())
    def list_users(caller: Annotated[Caller, read]) -> list[UserView]:
        with caller.uow() as uow:
            return users.list_users(uow.session)

    @r.post("/users", status_code=201, response_model=UserView, responses=errors(409, 413))
    def create_user(
        caller: Annotated[Caller, require(Permission.USERS_WRITE, action=AuditAction.USER_CREATE)],
        req: UserCreate,
    ) -> UserView:
        caller.target(req.name)
        # argon2 hashing: this plain def runs in a worker thread, off the event loop.
        with caller.uow() as uow:
            return users.create_user(uow, req)

    @r.get("/users/{name}", response_model=UserView, responses=errors(404))
    def show_user(caller: Annotated[Caller, read], name: str) -> UserView:
        with caller.uow() as uow:
            return users.show_user(uow.session, name)

    @r.delete("/users/{name}", response_model=Removed, responses=errors(404, 409))
    def remove_user(
        caller: Annotated[Caller, require(Permission.USERS_WRITE, action=AuditAction.USER_REMOVE)],
        name: str,
    ) -> Removed:
        with caller.uow() as uow:
            return Removed(removed=users.remove_user(uow, name))

    @r.put("/users/{name}/disabled", response_model=UserView, responses=errors(404, 409))
    def set_disabled(
        caller: Annotated[Caller, require(Permission.USERS_WRITE, action=AuditAction.USER_DISABLE)],
        name: str,
        change: DisabledChange,
    ) -> UserView:
        with caller.uow() as uow:
            return users.set_disabled(uow, name, change.disabled)

    @r.put("/users/{name}/password", response_model=UserView, responses=errors(404, 413, 429))
    def set_password(
        caller: Annotated[Caller, require(Permission.SELF, action=AuditAction.USER_PASSWORD)],
        name: str,
        change: PasswordChange,
    ) -> UserView:
        if name.strip().lower() != caller.name:
            # Someone else's password: a user administrator's right, checked before lookup.
            caller.demand(Permission.USERS_WRITE)
        with caller.uow() as uow:
            return users.set_password(uow, name, change, principal=caller.principal)

    @r.post("/users/{name}/roles", response_model=UserView, responses=errors(404, 409, 413))
    def assign_role(
        caller: Annotated[Caller, require(Permission.USERS_WRITE, action=AuditAction.ROLE_GRANT)],
        name: str,
        req: RoleAssign,
    ) -> UserView:
        with caller.uow() as uow:
            return users.assign_role(uow, name, req)

    @r.delete("/users/{name}/roles/{role}", response_model=UserView, responses=errors(404, 409))
    def revoke_role(
        caller: Annotated[Caller, require(Permission.USERS_WRITE, action=AuditAction.ROLE_REVOKE)],
        name: str,
        role: str,
    ) -> UserView:
        with caller.uow() as uow:
            return users.revoke_role(uow, name, role)

    @r.get("/roles", response_model=list[RoleView], responses=errors())
    def list_roles(caller: Annotated[Caller, require(Permission.SELF)]) -> list[RoleView]:
        return users.role_list()

    return r
