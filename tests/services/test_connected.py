"""Connected management groups (services/connected.py) against a second, real management group
served in-process: connecting logs in first and stores nothing when that fails; alerts of both
groups are merged and a group that does not answer is reported, not fatal; a task start is
checked against THIS group's rules (its Tasks Execution setting) before it is forwarded with
``on_behalf_of``, which the connected group records; one tier only; the connection's password
is never stored outside its encrypted account, nor in the audit trail."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy import select

from runas.domain.roles import Role, permissions_of
from runas.errors import AlreadyExists, Forbidden, InUse, InvalidInput, NotFound
from runas.runtime import Runtime
from runas.server import ServerSettings, create_app
from runas.services import accounts, audit, connected, discovery, packs, setup, tasks, users
from runas.services.accounts import AccountCreate
from runas.services.connected import ConnectedGroupCreate
from runas.services.discovery import DiscoveryPayload
from runas.services.tasks import SuppliedCredentials, TaskStart
from runas.services.user_store import Grant, Principal
from runas.services.users import UserCreate
from runas.settings import Settings
from runas.storage.tables import AlertRow, ConnectedGroupRow, TaskRunRow

with warnings.catch_warnings():
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

from argon2 import PasswordHasher

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LINK_PASSWORD = "canary-link-" + "Zq8vX1rT"  # a test canary
URL = "http://127.0.0.1:9"  # never dialled: the in-process transport answers
TASK = "Contoso.SQL.Task.CheckCredential"
INSTANCE = "Contoso.SQL.Instance:a.contoso.com;MSSQLSERVER"
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def _runtime(data_dir: Path, url: str, name: str) -> Runtime:
    rt = Runtime(Settings(data_dir=data_dir, database_url=url, actor="test:admin"), env={})
    setup.init(rt, name)
    return rt


@pytest.fixture
def mg1(tmp_path: Path, db_url: str) -> Iterator[Runtime]:
    rt = _runtime(tmp_path / "mg1", db_url, "MG1")
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def mg2(tmp_path: Path, sqlite_template: Path) -> Iterator[Runtime]:
    """The connected group: its own SQLite database, with content, a link administrator and
    an operator."""
    db = tmp_path / "mg2.db"
    shutil.copy(sqlite_template, db)
    rt = _runtime(tmp_path / "mg2", f"sqlite:///{db}", "MG2")
    with rt.unit_of_work() as uow:
        for name, roles in (("mg1-link", ["administrator"]), ("viewer", ["operator"])):
            users.create_user(
                uow, UserCreate(name=name, password=SecretStr(LINK_PASSWORD), roles=roles),
                hasher=FAST,
            )  # fmt: skip
        for pack in ("contoso-sql.yaml", "contoso-sql-agent.yaml"):
            packs.import_pack(uow, (EXAMPLES / "packs" / pack).read_text(), pack)
        payload = yaml.safe_load((EXAMPLES / "discovery" / "contoso-sql.yaml").read_text())
        discovery.submit(uow, DiscoveryPayload.model_validate(payload))
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def wire(mg2: Runtime) -> Iterator[httpx.BaseTransport]:
    """MG2's API, in-process."""
    with TestClient(create_app(mg2, ServerSettings()), raise_server_exceptions=False) as c:
        yield c._transport


def _principal(name: str, role: Role, user_id: int = 99) -> Principal:
    return Principal(
        user_id=user_id, name=name, roles=(Grant(role, (), ()),), permissions=permissions_of([role])
    )


ALICE = _principal("alice", Role.OPERATOR)
BOB = _principal("bob", Role.OPERATOR, 98)


def _account(rt: Runtime, name: str = "link", *, user: str = "mg1-link", kind: str = "basic",
             password: str = LINK_PASSWORD) -> None:  # fmt: skip
    with rt.unit_of_work() as uow:
        accounts.add(
            uow,
            AccountCreate(name=name, type=kind, fields={"user": user},
                          secrets={"password": SecretStr(password)}),
        )  # fmt: skip


def _connect(rt: Runtime, wire: httpx.BaseTransport, account: str = "link") -> None:
    connected.connect(
        rt, ConnectedGroupCreate(name="MG2", server_url=URL, account=account), principal=None,
        transport=wire,
    )  # fmt: skip


def _no_network(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def test_connect_logs_in_first_and_stores_the_connection(
    mg1: Runtime, wire: httpx.BaseTransport
) -> None:
    _account(mg1)
    _connect(mg1, wire)
    with mg1.unit_of_work() as uow:
        [view] = connected.list_groups(uow.session, principal=None)
        assert (view.name, view.server_url, view.account) == ("MG2", URL, "link")
        records = audit.list_records(uow.session, limit=100)
    actions = [r.action for r in records]
    assert "connected-group:add" in actions
    uses = [r for r in records if r.action == "account:secret-use"]
    assert uses
    assert all(r.details["purpose"] == connected.PURPOSE for r in uses)
    assert LINK_PASSWORD not in repr([r.model_dump() for r in records])
    with pytest.raises(AlreadyExists):
        _connect(mg1, wire)


@pytest.mark.parametrize(
    ("kind", "user", "password", "expected"),
    [
        ("simple", "mg1-link", LINK_PASSWORD, "of type simple: a connection logs in with"),
        ("basic", "mg1-link", "wrong-" + LINK_PASSWORD, "failed"),
        ("basic", "viewer", LINK_PASSWORD, "is not an administrator"),
    ],
)
def test_a_connection_that_cannot_log_in_as_an_administrator_is_refused(
    mg1: Runtime, wire: httpx.BaseTransport, kind: str, user: str, password: str, expected: str
) -> None:
    _account(mg1, kind=kind, user=user, password=password)
    with pytest.raises(InvalidInput) as err:
        _connect(mg1, wire)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
    assert password not in message
    with mg1.unit_of_work() as uow:
        assert uow.session.scalars(select(ConnectedGroupRow)).all() == []


def test_only_administrators_manage_connections(mg1: Runtime, wire: httpx.BaseTransport) -> None:
    _account(mg1)
    with pytest.raises(Forbidden):
        connected.connect(
            mg1, ConnectedGroupCreate(name="MG2", server_url=URL, account="link"),
            principal=ALICE, transport=wire,
        )  # fmt: skip
    _connect(mg1, wire)
    with mg1.unit_of_work() as uow, pytest.raises(Forbidden):
        connected.remove(uow, "MG2", principal=ALICE)
    # The account cannot go while the connection uses it.
    with mg1.unit_of_work() as uow, pytest.raises(InUse, match="runas mg remove"):
        accounts.remove(uow, "link")
    with mg1.unit_of_work() as uow:
        assert connected.remove(uow, "MG2", principal=None) == "MG2"
    with mg1.unit_of_work() as uow, pytest.raises(NotFound):
        connected.remove(uow, "MG2", principal=None)


def _alert(rt: Runtime, computer: str, message: str) -> None:
    now = datetime.now(UTC)
    with rt.unit_of_work() as uow:
        uow.session.add(
            AlertRow(key=f"test:{computer}", source="test", computer=computer, state="critical",
                     severity="error", message=message, opened_at=now, updated_at=now)
        )  # fmt: skip


def test_alerts_of_connected_groups_are_merged_and_a_silent_group_is_reported(
    mg1: Runtime, mg2: Runtime, wire: httpx.BaseTransport
) -> None:
    _account(mg1)
    _connect(mg1, wire)
    _alert(mg1, "a.mg1", "local trouble")
    _alert(mg2, "b.mg2", "remote trouble")
    found = connected.alerts(mg1, principal=None, include_closed=False, computer=None,
                             source=None, limit=100, transport=wire)  # fmt: skip
    assert {(a.management_group, a.message) for a in found.alerts} == {
        ("MG1", "local trouble"),
        ("MG2", "remote trouble"),
    }
    assert found.unreachable == []
    down = connected.alerts(mg1, principal=None, include_closed=False, computer=None,
                            source=None, limit=100,
                            transport=httpx.MockTransport(_no_network))  # fmt: skip
    assert [a.management_group for a in down.alerts] == ["MG1"]
    [silent] = down.unreachable
    assert silent.management_group == "MG2"
    assert "connection refused" in silent.error
    # One tier: a request that came through a connection is not forwarded again.
    with pytest.raises(Forbidden, match="not forwarded further"):
        connected.alerts(mg1, principal=None, include_closed=False, computer=None, source=None,
                         limit=100, incoming_from="MG3", transport=wire)  # fmt: skip


def _set_tasks_execution(rt: Runtime, enabled: bool) -> None:
    with rt.unit_of_work() as uow:
        tasks.set_tasks_execution(uow, enabled, principal=None)


def test_this_groups_tasks_execution_decides_before_anything_is_forwarded(
    mg1: Runtime, mg2: Runtime, wire: httpx.BaseTransport
) -> None:
    _account(mg1)
    _connect(mg1, wire)
    _set_tasks_execution(mg1, False)
    _set_tasks_execution(mg2, True)
    req = TaskStart(task=TASK, targets=[INSTANCE])
    with pytest.raises(Forbidden, match="Tasks Execution is disabled in management group MG1"):
        connected.forward_start(mg1, "MG2", req, principal=ALICE,
                                transport=httpx.MockTransport(_no_network))  # fmt: skip
    # With credentials the same operator may: forwarded, and recorded there on her behalf.
    creds = SuppliedCredentials(user="ops", domain="contoso.com", password=SecretStr("pw-1-x"))
    run = connected.forward_start(
        mg1, "MG2", TaskStart(task=TASK, targets=[INSTANCE], credentials=creds),
        principal=ALICE, transport=wire,
    )  # fmt: skip
    assert run.management_group == "MG2"
    assert run.credential_mode == "supplied"
    with mg2.unit_of_work() as uow:
        there = uow.session.get(TaskRunRow, run.id)
        assert there is not None
        assert (there.requested_by, there.management_group) == ("MG1:alice", "MG1")
        starts = audit.list_records(uow.session, action="task:start", limit=10)
    assert starts[0].details["on_behalf_of"] == "MG1:alice"
    with mg1.unit_of_work() as uow:
        here = uow.session.get(TaskRunRow, run.id)
        assert here is not None
        assert (here.requested_by, here.management_group) == ("alice", "MG2")
        forwards = audit.list_records(uow.session, action="task:forward", limit=10)
    assert forwards[0].details["connected_group"] == "MG2"
    # Its status from here: for the user who asked (and administrators), nobody else.
    shown = connected.forwarded_show(mg1, "MG2", run.id, principal=ALICE, transport=wire)
    assert shown.id == run.id
    assert shown.requested_by == "alice"
    with pytest.raises(NotFound):
        connected.forwarded_show(mg1, "MG2", run.id, principal=BOB, transport=wire)


def test_enabled_here_forwards_without_credentials_even_where_it_is_disabled(
    mg1: Runtime, mg2: Runtime, wire: httpx.BaseTransport
) -> None:
    """The seed's example: the setting of the group where the session runs applies."""
    _account(mg1)
    _connect(mg1, wire)
    _set_tasks_execution(mg2, False)
    run = connected.forward_start(
        mg1, "MG2", TaskStart(task=TASK, targets=[INSTANCE]), principal=ALICE, transport=wire
    )
    assert run.credential_mode == "predefined"
    listed = connected.forwarded_tasks(mg1, "MG2", INSTANCE, principal=ALICE, transport=wire)
    assert TASK in [t.id for t in listed]
    with pytest.raises(Forbidden, match="not forwarded further"):
        connected.forward_start(mg1, "MG2", TaskStart(task=TASK, targets=[INSTANCE]),
                                principal=ALICE, incoming_from="MG3", transport=wire)  # fmt: skip
    with pytest.raises(Forbidden, match="tasks:run"):
        connected.forward_start(mg1, "MG2", TaskStart(task=TASK, targets=[INSTANCE]),
                                principal=_principal("ro", Role.READ_ONLY_OPERATOR),
                                transport=wire)  # fmt: skip
