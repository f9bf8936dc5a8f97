"""ASGI middleware: the access log and request metrics, the last-resort 500, and body limits.

Pure ASGI (no ``BaseHTTPMiddleware``): nothing here buffers a request or a response.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runas.server import problems
from runas.server.metrics import Metrics

ACCESS_LOGGER = "runas.server.access"
UNMATCHED = "<unmatched>"


def route_template(scope: Scope) -> str:
    """The matched route's path template: bounded cardinality for metrics, and no values
    (names, ids) from the URL in the log."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class Observe:
    """One JSON log line and one metrics sample per request; an exception that escaped every
    handler becomes a generic 500 problem here (its traceback goes to the log) instead of a
    stack trace from the server."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.log = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False

        async def watch(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if response_started:
                raise
            request = Request(scope, receive)
            response = await run_in_threadpool(problems.unexpected, request, exc)
            await response(scope, receive, watch)
        finally:
            seconds = time.perf_counter() - started
            route = route_template(scope)
            method = str(scope.get("method", ""))
            self.metrics.observe(route, method, status, seconds)
            state = scope.get("state") or {}
            client = scope.get("client")
            fields = {
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "actor": state.get("actor"),
                "source": client[0] if client else None,
            }
            if state.get("problem"):
                fields["problem"] = state["problem"]
            self.log.info("request", extra={"fields": fields})


class BodyLimit:
    """Refuse a request body over the route's limit with 413, without reading it into memory:
    a declared ``Content-Length`` over the limit is refused before the first byte is read, and
    a streamed body is counted chunk by chunk. The check happens when the route reads the body,
    so the limit can depend on the route (uploads get a larger one), and the 413 goes through
    the problem handlers like any other error."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = 0
        first = True

        async def limited() -> Message:
            nonlocal seen, first
            limit = self.limit_for(scope)
            if first:
                first = False
                declared = _content_length(scope)
                if declared is not None and declared > limit:
                    raise _too_large(limit)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
            return message

        await self.app(scope, limited, send)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the request body is larger than this route accepts ({limit} bytes)")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
