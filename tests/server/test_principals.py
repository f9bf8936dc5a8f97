"""The server remembers who a token stands for, briefly: a change of that answer is honoured by
the server that made it at once, and by any other (here: the local CLI on the server host,
which no server hears about) within a second."""

from __future__ import annotations

import time

from runas.domain.roles import Role
from runas.server.principals import PRINCIPAL_TTL_S, PrincipalCache
from runas.services import users
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
