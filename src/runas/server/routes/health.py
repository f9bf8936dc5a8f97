"""Liveness, readiness and metrics: public, outside ``/api/v1``, for load balancers and
Prometheus. They say nothing about the management group beyond counters."""

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from runas.errors import RunAsError
from runas.server.metrics import CONTENT_TYPE, Metrics
from runas.server.problems import declare, problem_response
from runas.server.security import Anonymous, public
from runas.server.settings import ServerSettings
from runas.services import audit, lookup
from runas.storage import migrate


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


def _readiness_checks(anon: Anonymous) -> tuple[dict[str, str], str | None]:
    """Each check's outcome, and the first failure's one-line reason."""
    checks: dict[str, str] = {}
    rt = anon.runtime
    try:
        rt.database.check_connection()
        checks["database"] = "ok"
        checks["schema"] = "ok" if migrate.is_at_head(rt.database) else "not at head"
    except RunAsError as err:
        return {"database": "unreachable"}, f"database: {err}"
    except Exception as err:  # driver errors: the kind only, never a URL with a password
        return {"database": "unreachable"}, f"database: {type(err).__name__}"
    if checks["schema"] != "ok":
        return checks, "database schema is not at this version's head: run 'runas db upgrade'"
    try:
        rt.keyring_source().load()
        checks["keyring"] = "ok"
    except RunAsError as err:
        checks["keyring"] = "unusable"
        return checks, f"keyring: {err}"
    return checks, None


def _gauges(anon: Anonymous) -> dict[str, tuple[str, str, float]]:
    gauges: dict[str, tuple[str, str, float]] = {
        "runas_agents": ("gauge", "Approved agents (none until agents exist).", 0),
    }
    try:
        with anon.runtime.database.session() as s:
            epoch = float(lookup.setting(s, lookup.EPOCH_KEY, 0) or 0)
            audit_seq = float(audit.head(s)[0])
    except Exception:  # metrics still report this process when the database is down
        gauges["runas_database_up"] = ("gauge", "1 if the database answered the scrape.", 0)
        return gauges
    gauges["runas_database_up"] = ("gauge", "1 if the database answered the scrape.", 1)
    gauges["runas_resolution_epoch"] = (
        "gauge",
        "The management group's resolution epoch (bumped by every change).",
        epoch,
    )
    gauges["runas_audit_writes_total"] = (
        "counter",
        "Audit records written in the management group (the chain's last seq).",
        audit_seq,
    )
    return gauges


def build(settings: ServerSettings, metrics: Metrics) -> APIRouter:
    r = APIRouter(tags=["health"])

    @r.get("/healthz", response_model=Health, responses=declare(500))
    async def healthz(anon: Annotated[Anonymous, public()]) -> Health:
        # async on purpose: liveness must answer even when every worker thread is busy.
        return Health(status="ok")

    @r.get("/readyz", response_model=Readiness, responses=declare(500, 503))
    def readyz(anon: Annotated[Anonymous, public()], request: Request) -> JSONResponse:
        checks, failure = _readiness_checks(anon)
        if failure is not None:
            return problem_response(request, 503, "unavailable", failure)
        return JSONResponse(Readiness(status="ready", checks=checks).model_dump())

    @r.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {}}}, **declare(500)},
    )
    def metrics_route(anon: Annotated[Anonymous, public()]) -> PlainTextResponse:
        return PlainTextResponse(metrics.render(_gauges(anon)), media_type=CONTENT_TYPE)

    return r
