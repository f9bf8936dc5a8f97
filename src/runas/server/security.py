"""Authentication and authorisation: every route carries exactly one :class:`Rule`.

A rule is the route's dependency: ``require(Permission.X)`` resolves the bearer token to a
principal (401 otherwise) and refuses a missing permission with 403 *before* the handler
runs, so a refusal never depends on whether the thing asked for exists. ``public()`` marks the
few routes anyone may call (login, health, metrics) — explicitly, so that the route-coverage
test can tell "public on purpose" from "forgot the rule" (:func:`rules_of`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
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
        with self.runtime.unit_of_work(actor=self.principal.name, source=self.source) as uow:
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

    @property
    def public(self) -> bool:
        return self.permission is None

    def describe(self) -> str:
        return "public" if self.permission is None else self.permission.value


@dataclass(frozen=True)
class _Protected(Rule):
    # A plain function: token lookup is database work, so FastAPI runs it in the threadpool.
    def __call__(self, request: Request) -> Caller:
        assert self.permission is not None
        runtime = runtime_of(request)
        source = client_source(request)
        token = _bearer(request)
        cache = principals_of(request)
        key = hash_token(token)
        principal = cache.get(key)
        if principal is None:
            generation = cache.generation
            with runtime.unit_of_work(actor=ANONYMOUS, source=source) as uow:
                principal = authenticate_token(uow.session, token, uow.now)
            cache.put(key, principal, generation)
        request.state.actor = principal.name
        if self.permission not in principal.permissions:
            raise Forbidden(_forbidden_message(self.permission))
        return Caller(runtime, source, principal, request)


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
