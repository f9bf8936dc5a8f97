"""The application factory: ``create_app(runtime, settings)`` builds a FastAPI app with no
module-level state, so tests build as many as they like and a server process builds one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.types import Scope

from runas import __version__
from runas.runtime import Runtime
from runas.server import problems
from runas.server.epochs import EpochWatcher
from runas.server.metrics import Metrics
from runas.server.middleware import BodyLimit, Observe
from runas.server.principals import PrincipalCache
from runas.server.routes import (
    accounts,
    agents,
    audit,
    auth,
    connected,
    discovery,
    distribution,
    health,
    keys,
    monitoring,
    objects,
    packs,
    profiles,
    resolution,
    ssh_hosts,
    tasks,
    tokens,
    users,
)
from runas.server.routes.common import API_PREFIX
from runas.server.security import Anonymous, PrincipalLookups, public, rules_of
from runas.server.settings import ServerSettings
from runas.services.resolution_memory import ResolutionMemory

#: routes whose bodies may be as large as ``max_upload_bytes``: whole packs and snapshots
UPLOAD_ROUTES = frozenset({("POST", f"{API_PREFIX}/packs"), ("POST", f"{API_PREFIX}/discovery")})
BEARER_SCHEME = "bearer"


class RunAsAPI(FastAPI):
    """FastAPI with the OpenAPI document completed from the routes' rules: each operation's
    permission (``x-permission``), bearer security on every non-public one, and errors typed
    ``application/problem+json``."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema:
            return self.openapi_schema
        schema = get_openapi(
            title=self.title,
            version=self.version,
            description=self.description,
            routes=self.routes,
        )
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})[BEARER_SCHEME] = {
            "type": "http",
            "scheme": "bearer",
            "description": "a session token from POST /api/v1/login or a personal API token",
        }
        for route in self.routes:
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            rules = rules_of(route)
            for method in route.methods or ():
                op = schema["paths"][route.path_format][method.lower()]
                if rules:
                    op["x-permission"] = rules[0].describe()
                    if not rules[0].public:
                        op["security"] = [{BEARER_SCHEME: []}]
                _problem_media_type(op)
        self.openapi_schema = schema
        return schema


def _problem_media_type(op: dict[str, Any]) -> None:
    # FastAPI files every declared model under the route's own media type (JSON, or text
    # for /metrics); an error is always a problem document.
    for status, response in op.get("responses", {}).items():
        content = response.get("content", {})
        if status[0] in "45" and content:
            media = next(iter(content.values()))
            response["content"] = {problems.MEDIA_TYPE: media}


def _add_routes(app: FastAPI, router: APIRouter) -> None:
    """Put a router's routes on the app itself. Not ``include_router``: this FastAPI composes
    included routers lazily, so ``app.routes`` would hold router objects rather than routes,
    and a request's ``scope["route"]`` would carry the path without its prefix. Flat, the
    route table is what the coverage test walks and what metrics and logs name."""
    for route in router.routes:
        app.router.routes.append(route)


def create_app(runtime: Runtime, settings: ServerSettings) -> FastAPI:
    metrics = Metrics()
    app = RunAsAPI(
        title="runas management server",
        version=__version__,
        description="Run As accounts and profiles. Errors are RFC 9457 problem+json.",
        # The document is served by a route of ours (below) so that it too carries a rule;
        # no interactive docs: they would load scripts from a CDN.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.principals = PrincipalCache()
    app.state.principal_lookups = PrincipalLookups()
    # Started by the server loop (serve.py); until then requests read the epoch themselves.
    epochs = EpochWatcher(runtime.database)
    runtime.on_epoch(epochs.advance)
    app.state.epochs = epochs
    app.state.resolution = ResolutionMemory()

    # Routes are matched in order: the questions asked most often come first.
    for module in (
        resolution,
        auth,
        accounts,
        distribution,
        packs,
        discovery,
        monitoring,  # before objects: /objects/{ref:path} would also match …/state
        objects,
        profiles,
        keys,
        audit,
        users,
        tokens,
        agents,
        ssh_hosts,
        connected,
        tasks,
    ):
        _add_routes(app, module.build(settings))
    _add_routes(app, health.build(settings, metrics))

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_document(_: Annotated[Anonymous, public()]) -> JSONResponse:
        return JSONResponse(app.openapi())

    def limit_for(scope: Scope) -> int:
        route = scope.get("route")
        key = (scope.get("method", ""), getattr(route, "path", ""))
        return settings.max_upload_bytes if key in UPLOAD_ROUTES else settings.max_body_bytes

    problems.install(app)
    # add_middleware wraps: the last added is the outermost. Observe must see every response,
    # including the 413 and the last-resort 500.
    app.add_middleware(BodyLimit, limit_for=limit_for)
    app.add_middleware(Observe, metrics=metrics)
    return app
