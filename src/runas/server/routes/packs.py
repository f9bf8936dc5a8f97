"""Management packs: import (a larger body limit applies), list, show, remove."""

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from runas.domain.roles import Permission
from runas.server.routes.common import API_PREFIX, RemovedObjects, errors
from runas.server.security import Caller, require
from runas.server.settings import ServerSettings
from runas.services import packs
from runas.services.audit import AuditAction
from runas.services.packs import ImportResult, PackSummary, PackView


class PackImport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: the pack's YAML
    text: str
    #: where it came from (a file name), used to locate errors as ``source:line``
    source: str = Field(default="<api>", max_length=1024)


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["packs"])
    read = require(Permission.OBJECTS_READ)

    @r.get("/packs", response_model=list[PackSummary], responses=errors())
    def list_packs(caller: Annotated[Caller, read]) -> list[PackSummary]:
        with caller.uow() as uow:
            return packs.list_packs(uow.session)

    @r.post("/packs", status_code=201, response_model=ImportResult, responses=errors(404, 409, 413))
    def import_pack(
        caller: Annotated[
            Caller, require(Permission.CONTENT_WRITE, action=AuditAction.PACK_IMPORT)
        ],
        req: PackImport,
    ) -> ImportResult:
        caller.target(req.source)
        with caller.uow() as uow:
            return packs.import_pack(uow, req.text, req.source)

    @r.get("/packs/{pack_id}", response_model=PackView, responses=errors(404))
    def show_pack(
        caller: Annotated[Caller, read],
        pack_id: str,
        source: Annotated[bool, Query(description="include the YAML as imported")] = False,
    ) -> PackView:
        with caller.uow() as uow:
            return packs.show(uow.session, pack_id, with_source=source)

    @r.delete("/packs/{pack_id}", response_model=RemovedObjects, responses=errors(404, 409))
    def remove_pack(
        caller: Annotated[
            Caller, require(Permission.CONTENT_WRITE, action=AuditAction.PACK_REMOVE)
        ],
        pack_id: str,
    ) -> RemovedObjects:
        with caller.uow() as uow:
            return RemovedObjects(removed_objects=packs.remove(uow, pack_id))

    return r
