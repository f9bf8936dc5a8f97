"""Connected management groups (``services/connected.py``): the connections themselves
(administrators), the alerts of every connected group, and tasks forwarded to one (the
connected group receives them on its ordinary ``POST /task-runs``, with ``on_behalf_of``).

The forwarding routes make HTTP calls to the connected server from a worker thread, outside
any database transaction; a request that itself came through a connection (it carries
``X-Runas-Connected-From``) is refused there: one tier only."""

# No ``from __future__ import annotations``: FastAPI must evaluate ``Annotated[Caller, read]``
# where ``read`` is local to build(); as a postponed string it would become a query parameter.
from typing import Annotated

from fastapi import APIRouter, Path, Query

from runas.domain.roles import Permission
from runas.server.routes.common import API_PREFIX, Removed, errors
from runas.server.security import Caller, require
from runas.server.settings import ServerSettings
from runas.services import connected
from runas.services.alerts import MAX_LIST
from runas.services.audit import AuditAction
from runas.services.connected import (
    CONNECTED_FROM,
    ConnectedAlertsView,
    ConnectedGroupCreate,
    ConnectedGroupView,
)
from runas.services.tasks import TaskRunView, TaskStart, TaskView

Name = Annotated[str, Path(min_length=1, max_length=connected.NAME_MAX)]
RunId = Annotated[str, Path(min_length=1, max_length=64)]


def _from(caller: Caller) -> str | None:
    return caller.request.headers.get(CONNECTED_FROM)


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["connected-groups"])
    read = require(Permission.OBJECTS_READ)

    @r.get("/connected-groups", response_model=list[ConnectedGroupView], responses=errors())
    def list_groups(
        caller: Annotated[Caller, require(Permission.RUNAS_READ)],
    ) -> list[ConnectedGroupView]:
        with caller.uow() as uow:
            return connected.list_groups(uow.session, principal=caller.principal)

    @r.post(
        "/connected-groups",
        status_code=201,
        response_model=ConnectedGroupView,
        responses=errors(404, 409),
    )
    def connect(
        caller: Annotated[
            Caller,
            require(Permission.SETTINGS_WRITE, action=AuditAction.CONNECTED_GROUP_ADD),
        ],
        req: ConnectedGroupCreate,
    ) -> ConnectedGroupView:
        caller.target(req.name)
        return connected.connect(
            caller.runtime, req, principal=caller.principal, actor=caller.name, source=caller.source
        )

    @r.delete("/connected-groups/{name}", response_model=Removed, responses=errors(404))
    def remove(
        caller: Annotated[
            Caller,
            require(Permission.SETTINGS_WRITE, action=AuditAction.CONNECTED_GROUP_REMOVE),
        ],
        name: Name,
    ) -> Removed:
        caller.target(name)
        with caller.uow() as uow:
            return Removed(removed=connected.remove(uow, name, principal=caller.principal))

    @r.get("/connected-alerts", response_model=ConnectedAlertsView, responses=errors())
    def connected_alerts(
        caller: Annotated[Caller, read],
        all_: Annotated[bool, Query(alias="all")] = False,
        computer: Annotated[str | None, Query(max_length=255)] = None,
        source: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 1000,
    ) -> ConnectedAlertsView:
        return connected.alerts(
            caller.runtime,
            principal=caller.principal,
            include_closed=all_,
            computer=computer,
            source=source,
            limit=limit,
            actor=caller.name,
            origin=caller.source,
            incoming_from=_from(caller),
        )

    @r.get("/connected-groups/{name}/tasks", response_model=list[TaskView], responses=errors(404))
    def tasks(
        caller: Annotated[Caller, read],
        name: Name,
        target: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> list[TaskView]:
        return connected.forwarded_tasks(
            caller.runtime,
            name,
            target,
            principal=caller.principal,
            actor=caller.name,
            origin=caller.source,
            incoming_from=_from(caller),
        )

    @r.post(
        "/connected-groups/{name}/task-runs",
        status_code=201,
        response_model=TaskRunView,
        responses=errors(404),
    )
    def start(
        caller: Annotated[Caller, require(Permission.TASKS_RUN, action=AuditAction.TASK_FORWARD)],
        name: Name,
        req: TaskStart,
    ) -> TaskRunView:
        caller.target(req.task)
        return connected.forward_start(
            caller.runtime,
            name,
            req,
            principal=caller.principal,
            actor=caller.name,
            origin=caller.source,
            incoming_from=_from(caller),
        )

    def _show(caller: Caller, name: str, run_id: str, with_output: bool) -> TaskRunView:
        return connected.forwarded_show(
            caller.runtime,
            name,
            run_id,
            principal=caller.principal,
            with_output=with_output,
            actor=caller.name,
            origin=caller.source,
            incoming_from=_from(caller),
        )

    @r.get(
        "/connected-groups/{name}/task-runs/{run_id}",
        response_model=TaskRunView,
        responses=errors(404),
    )
    def show(caller: Annotated[Caller, read], name: Name, run_id: RunId) -> TaskRunView:
        return _show(caller, name, run_id, False)

    @r.get(
        "/connected-groups/{name}/task-runs/{run_id}/output",
        response_model=TaskRunView,
        responses=errors(404),
    )
    def output(caller: Annotated[Caller, read], name: Name, run_id: RunId) -> TaskRunView:
        return _show(caller, name, run_id, True)

    return r
