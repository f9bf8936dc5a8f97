"""The server remembers who a token stands for, briefly: a change of that answer is honoured by
the server that made it at once, and by any other (here: the local CLI on the server host,
which no server hears about) within a second."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import httpx
import pytest
from sqlalchemy.orm import Session

from runas.domain.roles import Role
from runas.server import security
from runas.server.principals import PRINCIPAL_REFRESH_S, PRINCIPAL_TTL_S, PrincipalCache
from runas.services import users
from runas.services.user_store import hash_token
from runas.services.users import Principal
from server.conftest import Served

ADMIN = Role.ADMINISTRATOR.value
READER = Role.READ_ONLY_ADMINISTRATOR.value


def _principal(name: str) -> Principal:
    return Principal(user_id=1, name=name, roles=(), permissions=frozenset())


def test_a_remembered_principal_is_forgotten_after_its_lifetime() -> None:
    now = [100.0]
    cache = PrincipalCache(ttl=0.5, clock=lambda: now[0])
    cache.put("h", _principal("alice"), cache.generation)
    assert cache.get("h") == _principal("alice")
    now[0] += 0.49
    assert cache.get("h") is not None
    now[0] += 0.02
    assert cache.get("h") is None


def test_a_lookup_begun_before_an_invalidation_is_not_remembered() -> None:
    cache = PrincipalCache()
    generation = cache.generation
    cache.invalidate()  # e.g. the token was revoked while the lookup read the database
    cache.put("h", _principal("alice"), generation)
    assert cache.get("h") is None


def test_the_cache_keeps_at_most_its_size() -> None:
    cache = PrincipalCache(size=2)
    for key in ("a", "b", "c"):
        cache.put(key, _principal(key), cache.generation)
    assert cache.get("a") is None
    assert cache.get("c") is not None


def test_a_token_revoked_through_this_server_is_refused_at_once(served: Served) -> None:
    c = served.client
    login = c.post(
        "/api/v1/login", json={"name": ADMIN, "password": "correct horse battery staple"}
    )
    assert login.status_code == 200, login.text
    session = {"Authorization": f"Bearer {login.json()['token']}"}
    assert c.get("/api/v1/me", headers=session).status_code == 200  # remembered now
    assert c.post("/api/v1/logout", headers=session).status_code == 200
    assert c.get("/api/v1/me", headers=session).status_code == 401
    # The same for a role taken away through the API by an administrator.
    assert c.get("/api/v1/accounts", headers=served.as_user(READER)).status_code == 200
    r = c.delete(f"/api/v1/users/{READER}/roles/{READER}", headers=served.admin)
    assert r.status_code == 200, r.text
    assert c.get("/api/v1/accounts", headers=served.as_user(READER)).status_code == 403


def test_a_user_disabled_behind_the_servers_back_is_refused_within_a_second(
    served: Served,
) -> None:
    c = served.client
    assert c.get("/api/v1/me", headers=served.as_user(READER)).status_code == 200
    # The local CLI on the server host: a change no server is told about.
    with served.runtime.unit_of_work() as uow:
        users.set_disabled(uow, READER, True)
    start = time.monotonic()
    while c.get("/api/v1/me", headers=served.as_user(READER)).status_code != 401:
        assert time.monotonic() - start < 1.0, "still accepted after a second"
        time.sleep(0.02)
    assert time.monotonic() - start <= PRINCIPAL_TTL_S + 0.2


def test_an_entry_is_due_for_refresh_before_it_expires() -> None:
    now = [100.0]
    cache = PrincipalCache(ttl=0.5, refresh=0.3, clock=lambda: now[0])
    cache.put("h", _principal("alice"), cache.generation)
    now[0] += 0.29
    assert cache.entry("h") == (_principal("alice"), False)
    now[0] += 0.02
    assert cache.entry("h") == (_principal("alice"), True)  # still used, refreshed behind
    now[0] += 0.2
    assert cache.entry("h") is None


def test_concurrent_requests_with_one_new_token_share_one_lookup(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = security.authenticate_token

    def counted(session: Session, token: str, now: datetime) -> Principal:
        calls.append("lookup")
        time.sleep(0.05)  # long enough for every request below to arrive meanwhile
        return real(session, token, now)

    monkeypatch.setattr(security, "authenticate_token", counted)

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=served.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answers = await asyncio.gather(
                *(client.get("/api/v1/me", headers=served.as_user(READER)) for _ in range(20))
            )
        return [a.status_code for a in answers]

    assert asyncio.run(burst()) == [200] * 20
    assert calls == ["lookup"]


def test_a_background_refresh_that_finds_the_token_revoked_ends_its_use(
    served: Served,
) -> None:
    cache: PrincipalCache = served.app.state.principals
    lookups: security.PrincipalLookups = served.app.state.principal_lookups
    headers = served.as_user(READER)
    key = hash_token(headers["Authorization"].removeprefix("Bearer "))

    async def scenario() -> tuple[int, float]:
        transport = httpx.ASGITransport(app=served.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/api/v1/me", headers=headers)).status_code == 200
            remembered = time.monotonic()
            with served.runtime.unit_of_work() as uow:  # behind the server's back
                users.set_disabled(uow, READER, True)
            await asyncio.sleep(PRINCIPAL_REFRESH_S + 0.02)
            # due: answered from memory while the refresh runs behind it
            due = (await client.get("/api/v1/me", headers=headers)).status_code
            while lookups._inflight:
                await asyncio.sleep(0.005)
            return due, time.monotonic() - remembered

    due, age = asyncio.run(scenario())
    assert due == 200
    assert age < PRINCIPAL_TTL_S  # not expired yet: forgotten because the refresh failed
    assert cache.entry(key) is None
    assert served.client.get("/api/v1/me", headers=headers).status_code == 401
