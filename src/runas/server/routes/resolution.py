"""Resolution: ``explain`` (which identity runs W for O, and why) and a computer's
configuration. Both show which accounts are used where: administrators' information."""

from typing import Annotated

from fastapi import APIRouter, Query

from runas.domain.roles import Permission
from runas.server.routes.common import API_PREFIX, errors
from runas.server.security import Caller, require
from runas.server.settings import ServerSettings
from runas.services import explain
from runas.services.catalog import CatalogCache
from runas.services.explain import ComputerConfigView, ExplainView


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["resolution"])
    read = require(Permission.RUNAS_READ)
    # Content (classes, groups, profiles, associations) per resolution epoch, for this process:
    # read again as soon as any server's change bumps the epoch.
    catalogs = CatalogCache()

    @r.get("/explain", response_model=ExplainView, responses=errors(404))
    def explain_route(
        caller: Annotated[Caller, read],
        object_ref: Annotated[str, Query(alias="object", min_length=1, max_length=1024)],
        workflow: Annotated[str | None, Query(max_length=255)] = None,
        profile: Annotated[str | None, Query(max_length=255)] = None,
    ) -> ExplainView:
        with caller.uow() as uow:
            return explain.explain(
                uow.session,
                obj_ref=object_ref,
                workflow=workflow,
                profile=profile,
                catalogs=catalogs,
            )

    @r.get("/computers/{name}/config", response_model=ComputerConfigView, responses=errors(404))
    def computer_config(caller: Annotated[Caller, read], name: str) -> ComputerConfigView:
        with caller.uow() as uow:
            return explain.computer_config(uow.session, name, catalogs=catalogs)

    return r
