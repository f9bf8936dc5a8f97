"""SSH host keys the management group trusts (``services/ssh_hosts.py``): operators may look at
them (public data); only administrators decide which keys are trusted."""

from typing import Annotated

from fastapi import APIRouter, Query

from runas.domain.roles import Permission
from runas.server.routes.common import API_PREFIX, errors
from runas.server.security import Caller, require
from runas.server.settings import ServerSettings
from runas.services import ssh_hosts
from runas.services.audit import AuditAction
from runas.services.ssh_hosts import (
    SshHostKeyAdd,
    SshHostKeyApprove,
    SshHostKeysRemoved,
    SshHostKeyView,
)


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["ssh-hosts"])

    @r.get("/ssh-hosts", response_model=list[SshHostKeyView], responses=errors())
    def list_keys(
        caller: Annotated[Caller, require(Permission.OBJECTS_READ)],
        # Checked by the service, so that a remote CLI fails exactly like a local one.
        status: Annotated[str | None, Query(max_length=16)] = None,
        host: Annotated[str | None, Query(max_length=300)] = None,
    ) -> list[SshHostKeyView]:
        with caller.uow() as uow:
            return ssh_hosts.list_keys(uow.session, status, host)

    @r.post("/ssh-hosts", status_code=201, response_model=SshHostKeyView, responses=errors())
    def add(
        caller: Annotated[
            Caller, require(Permission.RUNAS_WRITE, action=AuditAction.SSH_HOST_KEY_ADD)
        ],
        req: SshHostKeyAdd,
    ) -> SshHostKeyView:
        caller.target(req.host)
        with caller.uow() as uow:
            return ssh_hosts.add(uow, req)

    @r.post(
        "/ssh-hosts/{host_port}/approve",
        response_model=SshHostKeyView,
        responses=errors(404, 409),
    )
    def approve(
        caller: Annotated[
            Caller, require(Permission.RUNAS_WRITE, action=AuditAction.SSH_HOST_KEY_APPROVE)
        ],
        host_port: str,
        req: SshHostKeyApprove,
    ) -> SshHostKeyView:
        caller.target(host_port)
        with caller.uow() as uow:
            return ssh_hosts.approve(uow, host_port, req.fingerprint)

    @r.delete("/ssh-hosts/{host_port}", response_model=SshHostKeysRemoved, responses=errors(404))
    def remove(
        caller: Annotated[
            Caller, require(Permission.RUNAS_WRITE, action=AuditAction.SSH_HOST_KEY_REMOVE)
        ],
        host_port: str,
        fingerprint: Annotated[str | None, Query(max_length=128)] = None,
    ) -> SshHostKeysRemoved:
        caller.target(host_port)
        with caller.uow() as uow:
            return SshHostKeysRemoved(removed=ssh_hosts.remove(uow, host_port, fingerprint))

    return r
