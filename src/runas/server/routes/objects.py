"""Discovered objects and groups (read-only)."""

from typing import Annotated

from fastapi import APIRouter, Query

from runas.domain.roles import Permission
from runas.server.routes.common import API_PREFIX, errors
from runas.server.security import Caller, require
from runas.server.settings import ServerSettings
from runas.services import objects
from runas.services.objects import MAX_LIST, GroupView, ObjectSummary, ObjectView


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["objects"])
    read = require(Permission.OBJECTS_READ)

    @r.get("/objects", response_model=list[ObjectSummary], responses=errors(404))
    def list_objects(
        caller: Annotated[Caller, read],
        class_id: Annotated[str | None, Query(alias="class", max_length=255)] = None,
        computer: Annotated[str | None, Query(max_length=255)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 1000,
    ) -> list[ObjectSummary]:
        with caller.uow() as uow:
            return objects.list_objects(
                uow.session, class_id, computer, limit, scope=caller.principal.object_scope()
            )

    @r.get("/objects/{ref:path}", response_model=ObjectView, responses=errors(404))
    def show_object(caller: Annotated[Caller, read], ref: str) -> ObjectView:
        with caller.uow() as uow:
            return objects.show(uow.session, ref, scope=caller.principal.object_scope())

    @r.get("/groups", response_model=list[GroupView], responses=errors())
    def list_groups(caller: Annotated[Caller, read]) -> list[GroupView]:
        with caller.uow() as uow:
            return objects.list_groups(uow.session, scope=caller.principal.object_scope())

    @r.get("/groups/{group_id}", response_model=GroupView, responses=errors(404))
    def show_group(caller: Annotated[Caller, read], group_id: str) -> GroupView:
        with caller.uow() as uow:
            return objects.show_group(uow.session, group_id, scope=caller.principal.object_scope())

    return r
