"""Authentication and authorisation: every route carries exactly one :class:`Rule`.

A rule is the route's dependency: ``require(Permission.X)`` resolves the bearer token to a
principal (401 otherwise) and refuses a missing permission with 403 *before* the handler
runs, so a refusal never depends on whether the thing asked for exists. ``public()`` marks the
few routes anyone may call (login, health, metrics) — explicitly, so that the route-coverage
test can tell "public on purpose" from "forgot the rule" (:func:`rules_of`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute

from runas.domain.roles import Permission
from runas.errors import Forbidden, Unauthenticated
from runas.runtime import Runtime, UnitOfWork
from runas.server.principals import PrincipalCache
from runas.services.audit import AuditAction
from runas.services.user_store import hash_token
from runas.services.users import Principal, authenticate_token

ANONYMOUS = "anonymous"
#: changes through these change who a token stands for (logout, tokens, users, roles,
#: passwords): once one commits, this server forgets the principals it remembered
_PRINCIPAL_CHANGES = ("/api/v1/logout", "/api/v1/tokens", "/api/v1/users")
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def client_source(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def runtime_of(request: Request) -> Runtime:
    runtime = request.app.state.runtime
    assert isinstance(runtime, Runtime)
    return runtime


def principals_of(request: Request) -> PrincipalCache:
    cache = request.app.state.principals
    assert isinstance(cache, PrincipalCache)
    return cache


@dataclass
class Anonymous:
    """Who calls a public route: nobody in particular, from somewhere."""

    runtime: Runtime
    source: str


@dataclass
class Caller:
    """An authenticated request: the principal, where it came from, and how to do work."""

    runtime: Runtime
    source: str
    principal: Principal
    request: Request

    @property
    def name(self) -> str:
        return self.principal.name

    def demand(self, permission: Permission) -> None:
        """A second permission some requests need (``apply=true``, someone else's password).
        Called before any lookup, like the route's own rule."""
        if permission not in self.principal.permissions:
            raise Forbidden(_forbidden_message(permission))

    def target(self, value: str) -> None:
        """Name the thing a change is about, for the audit record if the change fails."""
        self.request.state.audit_target = value

    @contextmanager
    def uow(self) -> Iterator[UnitOfWork]:
        """The request's transaction; read-only for GET (on SQLite: no write lock, so reads
        never queue behind each other or behind a change)."""
        with self.runtime.unit_of_work(
            actor=self.principal.name,
            source=self.source,
            read_only=self.request.method in _READS,
        ) as uow:
            yield uow
        # Committed. Other servers see a revoked token within the cache's lifetime; this one
        # at once.
        request = self.request
        if request.method not in _READS and request.url.path.startswith(_PRINCIPAL_CHANGES):
            principals_of(request).invalidate()


def _forbidden_message(permission: Permission) -> str:
    return f"your roles do not grant {permission.value}"


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("authentication required: send 'Authorization: Bearer <token>'")
    return token


@dataclass(frozen=True)
class Rule:
    """The route's one authorisation rule. ``permission`` None means public. ``action`` names
    the change for the audit trail when the request fails (None for reads)."""

    permission: Permission | None
    action: AuditAction | None = None
    #: an agent authenticated by its client certificate (the agent listener's routes)
    agent: bool = False

    @property
    def public(self) -> bool:
        return self.permission is None and not self.agent

    def describe(self) -> str:
        if self.agent:
            return "agent certificate"
        return "public" if self.permission is None else self.permission.value


def _look_up(
    runtime: Runtime, cache: PrincipalCache, token: str, key: str, source: str
) -> Principal:
    generation = cache.generation
    with runtime.unit_of_work(actor=ANONYMOUS, source=source) as uow:
        principal = authenticate_token(uow.session, token, uow.now)
    cache.put(key, principal, generation)
    return principal


class PrincipalLookups:
    """Token lookups in flight, one per token: the many requests of a busy client that miss
    the cache at the same moment share one database lookup instead of each making their own.
    Used on the event loop only."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[Principal]] = {}

    def shared(
        self, runtime: Runtime, cache: PrincipalCache, token: str, key: str, source: str
    ) -> asyncio.Future[Principal]:
        found = self._inflight.get(key)
        if found is not None:
            return found
        future = asyncio.ensure_future(
            run_in_threadpool(_look_up, runtime, cache, token, key, source)
        )
        self._inflight[key] = future

        def done(f: asyncio.Future[Principal]) -> None:
            self._inflight.pop(key, None)
            if not f.cancelled() and f.exception() is not None:
                cache.forget(key)  # a refresh that found the token revoked ends its use now

        future.add_done_callback(done)
        return future


async def _principal(request: Request, token: str, source: str) -> Principal:
    runtime = runtime_of(request)
    cache = principals_of(request)
    lookups: PrincipalLookups = request.app.state.principal_lookups
    key = hash_token(token)
    found = cache.entry(key)
    if found is not None:
        principal, due = found
        if due:  # refreshed in the background; this request does not wait for it
            lookups.shared(runtime, cache, token, key, source)
        return principal
    # shield: a client that goes away must not cancel the lookup others are waiting for
    return await asyncio.shield(lookups.shared(runtime, cache, token, key, source))


@dataclass(frozen=True)
class _Protected(Rule):
    # async: a remembered principal costs no worker thread; only a token lookup (database
    # work) goes to the threadpool.
    async def __call__(self, request: Request) -> Caller:
        assert self.permission is not None
        source = client_source(request)
        principal = await _principal(request, _bearer(request), source)
        request.state.actor = principal.name
        if self.permission not in principal.permissions:
            raise Forbidden(_forbidden_message(self.permission))
        return Caller(runtime_of(request), source, principal, request)


@dataclass(frozen=True)
class _Public(Rule):
    # async: nothing to wait for, so no worker thread (liveness answers even when all are busy)
    async def __call__(self, request: Request) -> Anonymous:
        return Anonymous(runtime_of(request), client_source(request))


def require(permission: Permission, *, action: AuditAction | None = None) -> Any:
    """The dependency of a route that needs ``permission`` (``action``: the audit action of a
    change)."""
    return Depends(_Protected(permission, action))


def public() -> Any:
    """The dependency of a route anyone may call, stated explicitly."""
    return Depends(_Public(None))


def rules_of(route: BaseRoute) -> list[Rule]:
    """The rules a route carries (the coverage test wants exactly one)."""
    if not isinstance(route, APIRoute):
        return []
    found: list[Rule] = []
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, Rule):
            found.append(dep.call)
        stack.extend(dep.dependencies)
    return found


class DirectRoute(APIRoute):
    """A route whose endpoint is called as ``await endpoint(request, caller)``, without
    FastAPI's per-request dependency solving.

    For the few questions asked so often that the framework's machinery (which re-inspects
    every dependency and parameter on every request) would cost more than the answer. The
    route still declares its rule as its one dependency, so the route-coverage test, the
    OpenAPI document and refusals work exactly as for any route: the rule runs first and
    refuses (401/403) before the endpoint is called. The endpoint reads its own query
    parameters and must be ``async``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        rules = rules_of(self)
        if len(rules) != 1 or not callable(rules[0]):
            raise TypeError(f"{self.path}: a direct route carries exactly one rule")
        rule: Any = rules[0]
        endpoint: Any = self.endpoint

        async def handler(request: Request) -> Response:
            caller = await rule(request)
            response: Response = await endpoint(request, caller)
            return response

        return handler
