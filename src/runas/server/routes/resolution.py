"""Resolution: ``explain`` (which identity runs W for O, and why) and a computer's
configuration. Both show which accounts are used where: administrators' information."""

from collections.abc import Container
from typing import Annotated, Any
from urllib.parse import unquote_plus

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from runas.domain.roles import Permission
from runas.server.epochs import EpochWatcher
from runas.server.routes.common import API_PREFIX, errors
from runas.server.security import Caller, DirectRoute, require
from runas.server.settings import ServerSettings
from runas.services import explain
from runas.services.catalog import CatalogCache
from runas.services.explain import ComputerConfigView, ExplainView
from runas.services.resolution_memory import ResolutionMemory

JSON = "application/json"
#: name -> (required, max length)
_EXPLAIN_QUERY = {"object": (True, 1024), "workflow": (False, 255), "profile": (False, 255)}
EXPLAIN_PARAMETERS = [
    {
        "name": name,
        "in": "query",
        "required": required,
        "schema": {"type": "string", "minLength": 1 if required else 0, "maxLength": longest},
    }
    for name, (required, longest) in _EXPLAIN_QUERY.items()
]


def query_values(request: Request, names: Container[str]) -> dict[str, str]:
    """The named query parameters, decoded as Starlette decodes them (``+`` is a space,
    percent-escapes are UTF-8, the last of repeated names wins), without building the whole
    multi-dict: only what the route reads is decoded."""
    found: dict[str, str] = {}
    raw = request.scope.get("query_string", b"").decode("latin-1")
    for part in raw.split("&"):
        name, _, value = part.partition("=")
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if name in names:
            found[name] = unquote_plus(value) if "%" in value or "+" in value else value
    return found


def _explain_query(request: Request) -> tuple[str, str | None, str | None]:
    """``object`` (required), ``workflow``, ``profile``, refused like FastAPI would refuse
    them (422, the same problem document)."""
    found = query_values(request, _EXPLAIN_QUERY)
    problems: list[dict[str, Any]] = []
    for name, (required, longest) in _EXPLAIN_QUERY.items():
        value = found.get(name)
        if value is None or (required and value == ""):
            if required:
                kind, msg = (
                    ("missing", "Field required")
                    if value is None
                    else ("string_too_short", "String should have at least 1 character")
                )
                problems.append({"type": kind, "loc": ("query", name), "msg": msg, "input": value})
        elif len(value) > longest:
            problems.append({
                "type": "string_too_long", "loc": ("query", name), "input": value,
                "msg": f"String should have at most {longest} characters",
            })  # fmt: skip
    if problems:
        raise RequestValidationError(problems)
    return found["object"], found.get("workflow"), found.get("profile")


def build(settings: ServerSettings) -> APIRouter:
    r = APIRouter(prefix=API_PREFIX, tags=["resolution"])
    read = require(Permission.RUNAS_READ)
    # Content (classes, groups, profiles, associations) per resolution epoch, for this process:
    # read again as soon as any server's change bumps the epoch.
    catalogs = CatalogCache()

    async def explain_route(request: Request, caller: Annotated[Caller, read]) -> Response:
        # The hottest question a server answers. async: answered from memory on the event
        # loop when the server's view is at the epoch its watcher vouches for; otherwise in
        # one transaction in a worker thread, which reads what is missing and keeps it for
        # the next question. A DirectRoute: query parameters are read here rather than
        # declared to FastAPI, whose per-request machinery cost more than the whole answer
        # (they are declared in the OpenAPI document all the same, and checked the same way).
        object_ref, workflow, profile = _explain_query(request)
        memory: ResolutionMemory = request.app.state.resolution
        watcher: EpochWatcher = request.app.state.epochs
        epoch = watcher.known()
        view = None
        if epoch is not None:
            view = memory.explain_known(epoch, object_ref, workflow=workflow, profile=profile)
        if view is None:

            def in_transaction() -> ExplainView:
                with caller.uow() as uow:
                    return memory.explain(
                        uow.session, object_ref, workflow=workflow, profile=profile
                    )

            view = await run_in_threadpool(in_transaction)
        return Response(view.model_dump_json(), media_type=JSON)

    r.add_api_route(
        "/explain",
        explain_route,
        methods=["GET"],
        response_model=ExplainView,
        responses=errors(404),
        openapi_extra={"parameters": EXPLAIN_PARAMETERS},
        route_class_override=DirectRoute,
    )

    @r.get("/computers/{name}/config", response_model=ComputerConfigView, responses=errors(404))
    def computer_config(caller: Annotated[Caller, read], name: str) -> ComputerConfigView:
        with caller.uow() as uow:
            return explain.computer_config(uow.session, name, catalogs=catalogs)

    return r
