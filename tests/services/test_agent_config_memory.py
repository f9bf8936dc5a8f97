"""Configurations built from memory per epoch (services/agent_config.py with
resolution_memory.EpochView and secret_memory.PlaintextMemory): a secret version is decrypted
once per epoch for every agent, each agent's use is still audited under its own name, and
what the view keeps for an epoch (accounts, schedules, known hosts) follows every change."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy import event, select

from runas import errors as agents_errors
from runas.backend.local import LocalBackend
from runas.crypto.sealing import open_bundle
from runas.domain.accounts import DistributionMode
from runas.domain.model import TargetKind
from runas.runtime import Runtime
from runas.server.deliveries import DeliveryWriter
from runas.services import accounts, agent_config, agents, setup
from runas.services.accounts import AccountCreate, AccountUpdate
from runas.services.agent_config import BuiltConfig
from runas.services.discovery import DiscoveryPayload
from runas.services.profiles import AssociateRequest
from runas.services.resolution_memory import ResolutionMemory
from runas.services.secret_memory import PlaintextMemory
from runas.settings import Settings
from runas.storage.tables import AgentRow, AuditRow
from support.enrolling import FakeAgent, enrol_approved

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
A, B = "a.contoso.com", "b.contoso.com"
PROFILE = "Contoso.SQL.MonitoringProfile"
FIRST, SECOND = "first-Pa55-w0rd-c4n4ry", "second-Pa55-w0rd-c4n4ry"


class World:
    """The Contoso SQL pack and discovery, one account for the monitoring profile distributed
    less secure (every agent gets it), approved agents on a and b."""

    def __init__(self, tmp_path: Path, db_url: str) -> None:
        settings = Settings(data_dir=tmp_path / "data", database_url=db_url, actor="test")
        self.runtime = Runtime(settings, env={})
        setup.init(self.runtime, "MG1")
        backend = LocalBackend(self.runtime)
        backend.pack_import((EXAMPLES / "packs" / "contoso-sql.yaml").read_text(), "sql.yaml")
        payload = yaml.safe_load((EXAMPLES / "discovery" / "contoso-sql.yaml").read_text())
        backend.discovery_submit(DiscoveryPayload.model_validate(payload))
        self.account_id = backend.account_add(
            AccountCreate(
                name="sqlmon",
                type="windows",
                fields={"domain": "contoso.com", "user": "sqlmon"},
                secrets={"password": SecretStr(FIRST)},
            )
        ).id
        backend.associate(
            AssociateRequest(
                profile=PROFILE, account="sqlmon", target_kind=TargetKind.ALL, target=None
            )
        )
        backend.distribution_set("sqlmon", DistributionMode.LESS_SECURE, None, None, None)
        self.backend = backend
        self.agents = {name: FakeAgent(name) for name in (A, B)}
        for agent in self.agents.values():
            enrol_approved(self.runtime, agent)
        self.memory = ResolutionMemory()
        self.plaintexts = PlaintextMemory()

    def build(self, agent_id: str) -> BuiltConfig:
        with self.runtime.unit_of_work(read_only=True) as uow:
            row = uow.session.get(AgentRow, agent_id)
            assert row is not None
            return agent_config.build(uow, row, memory=self.memory, plaintexts=self.plaintexts)

    def secrets_of(self, built: BuiltConfig) -> dict[tuple[int, int], dict[str, str]]:
        doc = json.loads(built.body)
        bundle = open_bundle(
            self.agents[built.agent_id].hpke,
            base64.b64decode(doc["bundle"]),
            agent_id=built.agent_id,
        )
        return {e.key: dict(e.fields) for e in bundle.entries}

    def secret_uses(self) -> list[tuple[str, str, int]]:
        with self.runtime.unit_of_work(read_only=True) as uow:
            rows = uow.session.scalars(
                select(AuditRow)
                .where(AuditRow.action == "account:secret-use")
                .order_by(AuditRow.seq)
            )
            return [(r.actor, r.details["purpose"], r.details["secret_version"]) for r in rows]


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    w = World(tmp_path, db_url)
    try:
        yield w
    finally:
        w.plaintexts.clear()
        w.runtime.close()


def counting_decryptions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    original = accounts.decrypt_unaudited

    def counted(uow: Any, account_id: int, version: int) -> dict[str, str]:
        calls.append((account_id, version))
        return original(uow, account_id, version)

    monkeypatch.setattr(accounts, "decrypt_unaudited", counted)
    return calls


def test_a_version_is_decrypted_once_per_epoch_and_every_agents_use_is_audited(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = counting_decryptions(monkeypatch)
    writer = DeliveryWriter(world.runtime)
    a, b = world.build(A), world.build(B)
    assert calls == [(world.account_id, 1)]
    # each bundle is its own agent's, and holds the secret
    assert world.secrets_of(a) == {(world.account_id, 1): {"password": FIRST}}
    assert world.secrets_of(b) == {(world.account_id, 1): {"password": FIRST}}
    assert a.body != b.body
    for built in (a, b):
        writer.record(built, built.agent_id, "192.0.2.1")
    assert world.secret_uses() == [
        (f"agent:{A}", f"configuration of agent {A}", 1),
        (f"agent:{B}", f"configuration of agent {B}", 1),
    ]

    # a new password: a new epoch, decrypted once again, the old plaintext forgotten
    world.backend.account_update("sqlmon", AccountUpdate(secrets={"password": SecretStr(SECOND)}))
    a2, b2 = world.build(A), world.build(B)
    assert a2.epoch == b2.epoch > a.epoch
    assert calls == [(world.account_id, 1), (world.account_id, 2)]
    assert (
        world.secrets_of(a2)
        == world.secrets_of(b2)
        == {(world.account_id, 2): {"password": SECOND}}
    )
    assert len(world.plaintexts) == 1


def test_what_the_view_keeps_for_an_epoch_follows_every_change(world: World) -> None:
    first = json.loads(world.build(A).body)
    (account,) = {json.dumps(w["account"]) for w in first["workflows"] if w["account"]}
    assert json.loads(account)["public"] == {"domain": "contoso.com", "user": "sqlmon"}
    assert first["known_hosts"] == []

    world.backend.account_update(
        "sqlmon", AccountUpdate(fields={"user": "sqlmon2"}, rename="sqlmon-2")
    )
    second = json.loads(world.build(A).body)
    shown = {json.dumps(w["account"]) for w in second["workflows"] if w["account"]}
    (account,) = shown
    assert json.loads(account)["name"] == "sqlmon-2"
    assert json.loads(account)["public"] == {"domain": "contoso.com", "user": "sqlmon2"}
    assert json.loads(account)["secret_version"] == 1
    schedules = {w["workflow"]: w["schedule"] for w in second["workflows"]}
    assert all(s is None or s["interval_s"] > 0 for s in schedules.values())
    assert any(s is not None for s in schedules.values())

    # distributed to nobody any more (more secure, no computer): no workflow runs, no secret
    world.backend.distribution_set("sqlmon-2", DistributionMode.MORE_SECURE, [], None, None)
    third = world.build(A)
    assert not any(w["runs"] and w["account"] for w in json.loads(third.body)["workflows"])
    assert world.secrets_of(third) == {}


# -- PlaintextMemory ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plaintexts_are_kept_for_one_epoch_at_most_ttl_seconds() -> None:
    clock = FakeClock()
    memory = PlaintextMemory(ttl_s=30, clock=clock)
    decrypted: list[str] = []

    def decrypt(value: str) -> Any:
        def run() -> dict[str, str]:
            decrypted.append(value)
            return {"password": value}

        return run

    try:
        assert memory.fields(5, 1, 1, decrypt("p1")) == {"password": "p1"}
        assert memory.fields(5, 1, 1, decrypt("again")) == {"password": "p1"}  # reused
        assert decrypted == ["p1"]
        # an older epoch (a transaction begun before a change) decrypts for itself
        assert memory.fields(4, 1, 1, decrypt("old")) == {"password": "old"}
        assert memory.fields(5, 1, 1, decrypt("again")) == {"password": "p1"}
        # past the time bound: decrypted again
        clock.now += 30
        assert memory.fields(5, 1, 1, decrypt("p1b")) == {"password": "p1b"}
        # a newer epoch forgets everything of the older one
        memory.fields(5, 2, 1, decrypt("other"))
        assert len(memory) == 2
        assert memory.fields(6, 1, 1, decrypt("p1c")) == {"password": "p1c"}
        assert len(memory) == 1
        assert decrypted == ["p1", "old", "p1b", "other", "p1c"]
        assert (memory.decrypted, memory.reused) == (5, 2)
        # a caller changing what it got does not change what the next one gets
        got = memory.fields(6, 1, 1, decrypt("x"))
        got["password"] = "tampered"
        assert memory.fields(6, 1, 1, decrypt("x")) == {"password": "p1c"}
    finally:
        memory.clear()


def test_plaintexts_are_bounded_in_number_and_never_shown() -> None:
    memory = PlaintextMemory(max_versions=2)
    try:
        for account_id in (1, 2, 3):
            memory.fields(1, account_id, 1, lambda: {"password": "canary-value"})
        assert len(memory) <= 2
        assert "canary-value" not in repr(memory._held)
    finally:
        memory.clear()
    assert len(memory) == 0


def test_plaintexts_leave_memory_when_their_time_is_up_without_any_delivery() -> None:
    memory = PlaintextMemory(ttl_s=0.2)
    memory.fields(1, 1, 1, lambda: {"password": "p"})
    assert len(memory) == 1
    deadline = time.monotonic() + 5
    while len(memory) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(memory) == 0
    assert memory._timer is None


@pytest.mark.parametrize("max_approvals", [200_000, 0], ids=["read-at-once", "per-computer"])
def test_approvals_per_computer_whether_read_at_once_or_one_by_one(
    world: World, monkeypatch: pytest.MonkeyPatch, max_approvals: int
) -> None:
    from runas.services import resolution_memory

    monkeypatch.setattr(resolution_memory, "MAX_APPROVALS", max_approvals)
    world.backend.distribution_set("sqlmon", DistributionMode.MORE_SECURE, [A], None, None)
    a, b = world.build(A), world.build(B)
    assert world.secrets_of(a) == {(world.account_id, 1): {"password": FIRST}}
    assert world.secrets_of(b) == {}
    view = world.memory.view_if_current(a.epoch)
    assert view is not None
    assert (view._approvals is False) == (max_approvals == 0)
    world.backend.distribution_set("sqlmon", DistributionMode.MORE_SECURE, [B], None, None)
    assert world.secrets_of(world.build(A)) == {}
    assert world.secrets_of(world.build(B)) == {(world.account_id, 1): {"password": FIRST}}


# -- built from memory alone -------------------------------------------------------------------


def serial_of(world: World, agent_id: str) -> str:
    with world.runtime.unit_of_work(read_only=True) as uow:
        row = uow.session.get(AgentRow, agent_id)
        assert row is not None
        assert row.cert_serial is not None
        return row.cert_serial


def check(row: AgentRow | None) -> AgentRow:
    assert row is not None
    return row


def build_for(world: World, agent_id: str, serial: str) -> BuiltConfig:
    with world.runtime.unit_of_work(read_only=True) as uow:
        return agent_config.build_for(
            uow, agent_id, serial, check=check, memory=world.memory, plaintexts=world.plaintexts
        )


def statements(world: World) -> list[str]:
    """Every SQL statement the runtime's engine executes from now on."""
    seen: list[str] = []

    def note(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(world.runtime.database.engine, "before_cursor_execute", note)
    return seen


def without_bundle(built: BuiltConfig) -> dict[str, Any]:
    doc = json.loads(built.body)
    doc.pop("bundle")  # sealed to a fresh ephemeral key every time
    return dict(doc)


@pytest.mark.parametrize("bulk_after", [0, 1])
def test_once_the_view_holds_everything_a_configuration_is_built_without_the_database(
    world: World, monkeypatch: pytest.MonkeyPatch, bulk_after: int
) -> None:
    from runas.services import resolution_memory

    monkeypatch.setattr(resolution_memory, "BULK_AFTER", bulk_after)
    serial_a, serial_b = serial_of(world, A), serial_of(world, B)
    in_transaction = build_for(world, A, serial_a)
    epoch = in_transaction.epoch
    sql = statements(world)
    if bulk_after:
        # one computer answered one at a time: the agents and objects are not read yet
        assert agent_config.build_known(world.memory, epoch, B, serial_b, world.plaintexts) is None
        build_for(world, B, serial_b)  # the second reads them all
    sql.clear()
    from_memory = agent_config.build_known(world.memory, epoch, A, serial_a, world.plaintexts)
    assert from_memory is not None
    assert sql == []
    # the same configuration as in a transaction, its bundle sealed to the agent
    assert without_bundle(from_memory) == without_bundle(in_transaction)
    assert world.secrets_of(from_memory) == {(world.account_id, 1): {"password": FIRST}}
    assert from_memory.uses == in_transaction.uses
    assert from_memory.seen is not None


def test_memory_alone_never_answers_when_it_cannot_be_sure(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runas.services import resolution_memory

    monkeypatch.setattr(resolution_memory, "BULK_AFTER", 0)
    serial_a = serial_of(world, A)
    epoch = build_for(world, A, serial_a).epoch
    plaintexts = world.plaintexts
    assert agent_config.build_known(world.memory, epoch, A, serial_a, plaintexts) is not None
    # another certificate than the one the view knows (a renewed one): the database decides
    assert agent_config.build_known(world.memory, epoch, A, "f00d", plaintexts) is None
    # an epoch the view is not at
    assert agent_config.build_known(world.memory, epoch + 1, A, serial_a, plaintexts) is None
    # no such agent
    assert agent_config.build_known(world.memory, epoch, "x.contoso.com", "1", plaintexts) is None
    # the secret is not in memory (its time was up): it must be decrypted in a transaction
    plaintexts.clear()
    assert agent_config.build_known(world.memory, epoch, A, serial_a, plaintexts) is None
    build_for(world, A, serial_a)
    assert agent_config.build_known(world.memory, epoch, A, serial_a, plaintexts) is not None
    # removed: a new epoch, and the view of it does not know the agent
    with world.runtime.unit_of_work() as uow:
        agents.remove(uow, A)
    with world.runtime.unit_of_work(read_only=True) as uow:
        view = world.memory.view(uow.session)
        assert view.epoch > epoch
        assert view.agent(uow.session, A) is None
    assert agent_config.build_known(world.memory, view.epoch, A, serial_a, plaintexts) is None


def test_a_certificate_the_view_does_not_know_is_checked_against_the_agents_row(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runas.services import resolution_memory

    monkeypatch.setattr(resolution_memory, "BULK_AFTER", 0)
    serial_a = serial_of(world, A)
    build_for(world, A, serial_a)
    checked: list[str | None] = []

    def refuse(row: AgentRow | None) -> AgentRow:
        checked.append(row.cert_serial if row is not None else None)
        raise agents_errors.AgentRemoved("no longer in this management group")

    with (
        world.runtime.unit_of_work(read_only=True) as uow,
        pytest.raises(agents_errors.AgentRemoved),
    ):
        agent_config.build_for(
            uow, A, "f00d", check=refuse, memory=world.memory, plaintexts=world.plaintexts
        )
    assert checked == [serial_a]  # the row itself was read and checked
