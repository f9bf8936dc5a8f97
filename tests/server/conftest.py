"""An initialised management group served in-process (FastAPI's TestClient), with users of
every role, each holding a personal API token made the way an administrator would make one.

Users are created with a cheap argon2 hasher: the tests are about who may do what, not about
hashing cost (the login route still uses the real one)."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.exceptions import StarletteDeprecationWarning

from runas import logs
from runas.domain.roles import Role
from runas.runtime import Runtime
from runas.server import ServerSettings, create_app
from runas.services import setup, users
from runas.services.users import TokenCreate, UserCreate
from runas.settings import Settings

with warnings.catch_warnings():
    # Starlette's test client prefers the httpx2 fork and warns when it finds httpx; httpx is
    # what this project depends on (the CLI's client uses it), so the warning is expected.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PASSWORD = "correct horse battery staple"
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
#: a user with no role at all (authenticated, but may only look at themself)
NO_ROLE = "no-role"


def make_runtime(data_dir: Path, db_url: str) -> Runtime:
    settings = Settings(data_dir=data_dir, database_url=db_url, actor="test:setup")
    # env={}: the keyring is the data directory's file, whatever the developer's shell says
    return Runtime(settings, env={})


def add_user(runtime: Runtime, name: str, roles: list[str]) -> str:
    """Create a user locally (as on the server host) and return a personal API token."""
    with runtime.unit_of_work() as uow:
        users.create_user(
            uow,
            UserCreate(name=name, password=SecretStr(PASSWORD), roles=roles),
            hasher=FAST_HASHER,
        )
        created = users.create_token(uow, TokenCreate(name="test"), user=name)
    return created.token


@dataclass
class Served:
    runtime: Runtime
    app: FastAPI
    client: TestClient
    tokens: dict[str, str]
    log: io.StringIO

    def as_user(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    @property
    def admin(self) -> dict[str, str]:
        return self.as_user(Role.ADMINISTRATOR.value)


def serve(runtime: Runtime, settings: ServerSettings | None = None) -> tuple[FastAPI, TestClient]:
    app = create_app(runtime, settings or ServerSettings())
    # raise_server_exceptions=False: a 500 must be a problem document, as a real client sees it
    return app, TestClient(app, raise_server_exceptions=False)


def _initialised(tmp_path: Path, url: str) -> Iterator[Runtime]:
    rt = make_runtime(tmp_path / "runas-data", url)
    setup.init(rt, "test")
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def runtime(tmp_path: Path, sqlite_url: str) -> Iterator[Runtime]:
    """SQLite: most server behaviour does not depend on the database."""
    yield from _initialised(tmp_path, sqlite_url)


@pytest.fixture
def runtime_any(tmp_path: Path, db_url: str) -> Iterator[Runtime]:
    """SQLite and PostgreSQL."""
    yield from _initialised(tmp_path, db_url)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Everything the server logs, as the JSON lines it writes."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logs.JsonLines())
    logger = logging.getLogger("runas")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _served(runtime: Runtime, json_log: io.StringIO) -> Iterator[Served]:
    tokens = {role.value: add_user(runtime, role.value, [role.value]) for role in Role}
    tokens[NO_ROLE] = add_user(runtime, NO_ROLE, [])
    app, client = serve(runtime)
    with client:
        yield Served(runtime, app, client, tokens, json_log)


@pytest.fixture
def served(runtime: Runtime, json_log: io.StringIO) -> Iterator[Served]:
    yield from _served(runtime, json_log)


# -- a management group with content, objects, an account and an association -----------------

PACK = (EXAMPLES / "packs" / "contoso-sql.yaml").read_text()
DISCOVERY = (EXAMPLES / "discovery" / "contoso-sql.yaml").read_text()
PACK_ID = "Contoso.SQL"
PROFILE = "Contoso.SQL.MonitoringProfile"
GROUP = "Contoso.SQL.ProductionInstances"
INSTANCE_A = "Contoso.SQL.Instance:a.contoso.com;MSSQLSERVER"
ACCOUNT = "sql-a"
#: a user the matrix may change (roles, disabled), so no caller's rights move under it
TARGET_USER = "target"


def seed(s: Served) -> None:
    """Content and state through the API itself, as an administrator would set it up."""
    import yaml

    c, admin = s.client, s.admin
    assert c.post("/api/v1/packs", json={"text": PACK, "source": "contoso-sql.yaml"},
                  headers=admin).status_code == 201  # fmt: skip
    payload = yaml.safe_load(DISCOVERY)
    assert c.post("/api/v1/discovery", json=payload, headers=admin).status_code == 200
    account = {
        "name": ACCOUNT,
        "type": "windows",
        "fields": {"domain": "contoso.com", "user": "sqlmon"},
        "secrets": {"password": "seed-password"},
    }
    assert c.post("/api/v1/accounts", json=account, headers=admin).status_code == 201
    r = c.post(
        f"/api/v1/profiles/{PROFILE}/associations",
        json={"account": ACCOUNT, "target_kind": "object", "target": INSTANCE_A},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    s.tokens[TARGET_USER] = add_user(s.runtime, TARGET_USER, [])


@pytest.fixture
def seeded(served: Served) -> Served:
    seed(served)
    return served


@pytest.fixture
def seeded_any(runtime_any: Runtime, json_log: io.StringIO) -> Iterator[Served]:
    """``seeded`` on SQLite and on PostgreSQL."""
    for served in _served(runtime_any, json_log):
        seed(served)
        yield served
