"""Every error the API returns is RFC 9457 problem+json, mapped here once.

``type`` is ``urn:runas:problem:<code>`` with the :class:`runas.errors.RunAsError` code, so the
HTTP client rebuilds the same error (``runas.errors.error_for``) and a remote CLI fails exactly
like a local one. Details never echo request values: a secret may be among them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException

from runas.errors import Conflict, RunAsError
from runas.server import auditing

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:runas:problem:"
LOGGER = "runas.server"

#: the problem code of a status that no RunAsError names (404 for an unknown path, 405…)
_HTTP_CODES = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "content-too-large",
    415: "unsupported-media-type",
    422: "invalid-input",
    429: "too-many-requests",
    503: "unavailable",
}


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str


def title_of(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    request: Request,
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    # Remembered for the access log, the metrics and the audit record of a failed change.
    request.state.problem = code
    body = Problem(
        type=TYPE_PREFIX + code,
        title=title_of(status),
        status=status,
        detail=detail,
        instance=request.url.path,
    )
    return JSONResponse(
        body.model_dump(), status_code=status, headers=headers, media_type=MEDIA_TYPE
    )


def declare(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each error status with the problem schema (the media
    type is set to problem+json when the OpenAPI document is built)."""
    return {s: {"model": Problem, "description": title_of(s)} for s in statuses}


def validation_detail(errors: Iterable[Any]) -> str:
    """One line naming the first bad field and why, never the value that was sent."""
    first = next(iter(errors), None)
    if not isinstance(first, dict):
        return "invalid request"
    loc = ".".join(str(p) for p in first.get("loc", ()))
    msg = str(first.get("msg", "invalid value")).splitlines()[0]
    return f"{loc}: {msg}" if loc else msg


def _on_runas_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RunAsError)
    auditing.failed(request, exc.code)
    headers: dict[str, str] = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    retry_after = getattr(exc, "retry_after", None)
    if exc.status == 429 and isinstance(retry_after, int | float):
        headers["Retry-After"] = str(max(1, int(retry_after)))
    return problem_response(request, exc.status, exc.code, str(exc), headers)


def _on_request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | ValidationError)
    auditing.failed(request, "invalid-input")
    return problem_response(request, 422, "invalid-input", validation_detail(exc.errors()))


def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http-error")
    if exc.status_code != 404:  # no route matched: nothing to audit
        auditing.failed(request, code)
    detail = exc.detail if isinstance(exc.detail, str) else title_of(exc.status_code)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no such resource: {request.url.path}"
    elif exc.status_code == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}"
    headers = dict(exc.headers or {})
    return problem_response(request, exc.status_code, code, detail, headers)


def _on_stale(request: Request, exc: Exception) -> JSONResponse:
    # Optimistic concurrency (row_version) or a unique constraint hit by a concurrent
    # change: refused, never silently overwritten.
    err = Conflict("the resource was changed by another request at the same time: reload and retry")
    logging.getLogger(LOGGER).info("conflict", extra={"fields": {"exception": type(exc).__name__}})
    return _on_runas_error(request, err)


#: PostgreSQL's answers to two transactions that cannot both go through: serialization
#: failure, deadlock detected (the other one went through)
_CONCURRENCY_SQLSTATES = frozenset({"40001", "40P01"})


def _on_operational(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OperationalError)
    if getattr(exc.orig, "sqlstate", None) in _CONCURRENCY_SQLSTATES:
        return _on_stale(request, exc)
    return unexpected(request, exc)


def unexpected(request: Request, exc: BaseException) -> JSONResponse:
    """The last line of defence: a generic 500; the traceback goes to the log only."""
    logging.getLogger(LOGGER).error(
        "internal error",
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"fields": {"method": request.method, "path": request.url.path}},
    )
    auditing.failed(request, "internal-error")
    return problem_response(
        request, 500, "internal-error", "internal server error; details are in the server log"
    )


def install(app: FastAPI) -> None:
    # Plain functions: Starlette runs them in the threadpool, so writing the audit record
    # of a failed change stays off the event loop.
    app.add_exception_handler(RunAsError, _on_runas_error)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(ValidationError, _on_request_validation)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(StaleDataError, _on_stale)
    app.add_exception_handler(IntegrityError, _on_stale)
    app.add_exception_handler(OperationalError, _on_operational)
