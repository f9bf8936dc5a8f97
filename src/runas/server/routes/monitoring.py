"""Monitoring: the state agents reported for an object, alerts, Run As health of a computer."""

from typing import Annotated

from fastapi import APIRouter, Query

from runas.domain.roles import Permission
from runas.server.routes.common import API_PREFIX, errors
from runas.server.security import Caller, require
from runas.server.settings import ServerSettings
from runas.services import alerts, monitoring, run_as_health
from runas.services.alerts import MAX_LIST, AlertView
from runas.services.monitoring import ObjectStateView
from runas.services.run_as_health import HealthView


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["monitoring"])
    read_objects = require(Permission.OBJECTS_READ)

    # Registered before the object routes: ``/objects/{ref:path}`` would take ``…/state``.
    @r.get("/objects/{ref:path}/state", response_model=ObjectStateView, responses=errors(404))
    def object_state(caller: Annotated[Caller, read_objects], ref: str) -> ObjectStateView:
        with caller.uow() as uow:
            return monitoring.object_state(uow.session, ref, scope=caller.principal.object_scope())

    @r.get("/alerts", response_model=list[AlertView], responses=errors())
    def list_alerts(
        caller: Annotated[Caller, read_objects],
        all_: Annotated[bool, Query(alias="all")] = False,
        computer: Annotated[str | None, Query(max_length=255)] = None,
        source: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 1000,
    ) -> list[AlertView]:
        # Run As health alerts name Run As accounts: only for those who may read them.
        principal = caller.principal
        with caller.uow() as uow:
            return alerts.list_alerts(
                uow.session,
                open_only=not all_,
                computer=computer,
                source=source,
                limit=limit,
                include_runas=Permission.RUNAS_READ in principal.permissions,
                scope=principal.object_scope(),
            )

    @r.get("/computers/{name}/health", response_model=list[HealthView], responses=errors(404))
    def computer_health(
        caller: Annotated[Caller, require(Permission.RUNAS_READ)], name: str
    ) -> list[HealthView]:
        with caller.uow() as uow:
            return run_as_health.health_show(uow.session, name)

    return r
