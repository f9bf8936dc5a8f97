"""Tasks (services/tasks.py): who may start what, on which targets, with which credentials; what
agents pick up and report; timeouts and restarts. SQLite and PostgreSQL, the clock in the
test's hands."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy import func, select

from runas.backend.local import LocalBackend
from runas.crypto.sealing import manifest_of, open_once
from runas.domain.accounts import DistributionMode
from runas.domain.model import TargetKind
from runas.domain.roles import Permission, Role, permissions_of
from runas.errors import DecryptionError, Forbidden, InvalidInput, NotFound
from runas.runtime import Runtime
from runas.services import agent_config, setup, tasks
from runas.services.accounts import AccountCreate
from runas.services.discovery import DiscoveryPayload
from runas.services.profiles import AssociateRequest
from runas.services.resolution_memory import ResolutionMemory
from runas.services.tasks import SuppliedCredentials, TaskResultIn, TaskStart
from runas.services.user_store import Grant, Principal
from runas.settings import Settings
from runas.storage.tables import AgentRow, AuditRow, TaskRunRow, TaskTargetRow, metadata
from support.enrolling import FakeAgent, enrol_approved

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
A, B, C, D = "a.contoso.com", "b.contoso.com", "c.contoso.com", "d.contoso.com"
INSTANCE = "Contoso.SQL.Instance:{};MSSQLSERVER"
INSTANCE_A, INSTANCE_D = INSTANCE.format(A), INSTANCE.format(D)
GROUP = "Contoso.SQL.ProductionInstances"  # a, b and c (d is a test instance)
RESTART = "Test.Tasks.Restart"
PING = "Test.Tasks.Ping"
TASK_PROFILE = "Test.Tasks.AdminProfile"
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CANARY = "canary-Pa55w0rd-7f3e9c"

TASK_PACK = """
pack:
  id: Test.Tasks
  version: 1.0.0
  display_name: Test tasks
  references:
    - {id: Contoso.SQL}
profiles:
  - id: Test.Tasks.AdminProfile
    display_name: SQL administration
    context_class: Contoso.SQL.Instance
    allowed_account_types: [windows]
    fallback: false
workflows:
  - id: Test.Tasks.Restart
    kind: task
    display_name: Restart the instance
    target: Contoso.SQL.Instance
    profile: Test.Tasks.AdminProfile
    timeout: 2m
    parameters:
      mode: {default: graceful, overridable: true, description: graceful or immediate}
      retries: {default: 3}
    probe:
      type: command
      config: {program: restart_sql, args: ["--instance", "{instance}", "--mode", "{mode}"]}
  - id: Test.Tasks.Ping
    kind: task
    display_name: Ping the computer
    target: System.Computer
    probe: {type: command, config: {program: ping, args: ["{name}"]}}
"""


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def principal(
    name: str, role: Role, *, groups: tuple[str, ...] = (), tasks_: tuple[str, ...] = ()
) -> Principal:
    return Principal(
        user_id=abs(hash(name)) % 10_000,
        name=name,
        roles=(Grant(role, groups, tasks_),),
        permissions=permissions_of([role]) | {Permission.SELF},
    )


ADMIN = principal("admin", Role.ADMINISTRATOR)
ALICE = principal("alice", Role.OPERATOR)
BOB = principal("bob", Role.OPERATOR)
READER = principal("reader", Role.READ_ONLY_OPERATOR)


class World:
    """A management group with the Contoso SQL pack, its four computers, a pack of tasks, an
    account for the tasks' profile (distributed to a) and approved agents on a and b."""

    def __init__(self, tmp_path: Path, db_url: str) -> None:
        self.clock = Clock()
        self.settings = Settings(
            data_dir=tmp_path / "runas-data", database_url=db_url, actor="test"
        )
        self.runtime = Runtime(self.settings, env={}, clock=self.clock)
        setup.init(self.runtime, "MG1")
        backend = LocalBackend(self.runtime)
        backend.pack_import((EXAMPLES / "packs" / "contoso-sql.yaml").read_text(), "sql.yaml")
        backend.pack_import(TASK_PACK, "tasks.yaml")
        payload = yaml.safe_load((EXAMPLES / "discovery" / "contoso-sql.yaml").read_text())
        backend.discovery_submit(DiscoveryPayload.model_validate(payload))
        self.account_id = backend.account_add(
            AccountCreate(
                name="sql-admin",
                type="windows",
                fields={"domain": "contoso.com", "user": "sqladmin"},
                secrets={"password": SecretStr("pw of sql-admin")},
            )
        ).id
        backend.associate(
            AssociateRequest(
                profile=TASK_PROFILE,
                account="sql-admin",
                target_kind=TargetKind.GROUP,
                target=GROUP,
            )
        )
        backend.distribution_set("sql-admin", DistributionMode.MORE_SECURE, [A], None, None)
        self.backend = backend
        self.agents = {name: FakeAgent(name) for name in (A, B)}
        for agent in self.agents.values():
            self.approve(agent)

    def approve(self, agent: FakeAgent) -> None:
        enrol_approved(self.runtime, agent)

    def start(self, req: TaskStart, who: Principal | None = ALICE) -> tasks.TaskRunView:
        with self.runtime.unit_of_work(actor=who.name if who else None) as uow:
            return tasks.start(uow, req, principal=who)

    def show(self, run: str, who: Principal | None = ALICE, **kw: Any) -> tasks.TaskRunView:
        with self.runtime.unit_of_work(read_only=True) as uow:
            return tasks.show(uow.session, run, principal=who, now=self.clock.now, **kw)

    def take(self, agent: str = A) -> list[dict[str, Any]]:
        with self.runtime.unit_of_work(actor=f"agent:{agent}") as uow:
            return tasks.pending_for_agent(uow, agent)

    def report(self, agent: str, target: int, **fields: Any) -> bool:
        body = {"state": "healthy", "started_at": self.clock.now.isoformat(), "duration_s": 1.5}
        result = TaskResultIn.model_validate({**body, **fields})
        with self.runtime.unit_of_work(actor=f"agent:{agent}") as uow:
            return tasks.record_result(uow, agent, target, result)

    def set_execution(self, enabled: bool, who: Principal | None = ADMIN) -> None:
        with self.runtime.unit_of_work() as uow:
            tasks.set_tasks_execution(uow, enabled, principal=who)

    def count(self, table: Any) -> int:
        with self.runtime.unit_of_work(read_only=True) as uow:
            return int(uow.session.scalar(select(func.count()).select_from(table)) or 0)

    def audit(self, action: str) -> list[AuditRow]:
        with self.runtime.unit_of_work(read_only=True) as uow:
            found = list(uow.session.scalars(select(AuditRow).where(AuditRow.action == action)))
            uow.session.expunge_all()
            return found

    def everything(self) -> str:
        """Every stored row of every table, as text (bytes too)."""
        out: list[str] = []
        with self.runtime.unit_of_work(read_only=True) as uow:
            for table in metadata.sorted_tables:
                for row in uow.session.execute(select(table)):
                    for value in row:
                        if isinstance(value, bytes | memoryview):
                            out.append(bytes(value).decode("latin-1"))
                        else:
                            out.append(json.dumps(value, default=str))
        return "\n".join(out)


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    w = World(tmp_path, db_url)
    try:
        yield w
    finally:
        w.runtime.close()


def restart(req_targets: list[str], **kw: Any) -> TaskStart:
    return TaskStart(task=RESTART, targets=req_targets, **kw)


def supplied(password: str = CANARY, domain: str | None = "CONTOSO") -> SuppliedCredentials:
    return SuppliedCredentials(user="alice.admin", domain=domain, password=SecretStr(password))


# -- the predefined account, delivery, results ------------------------------------------------


def test_a_run_goes_to_the_objects_agent_with_the_predefined_account_once(world: World) -> None:
    run = world.start(restart([INSTANCE_A], overrides={"mode": "immediate"}))
    assert (run.task, run.requested_by, run.management_group) == (RESTART, "alice", "MG1")
    assert (run.credential_mode, run.supplied_user, run.status) == ("predefined", None, "pending")
    (target,) = run.targets
    assert (target.object, target.computer, target.status) == (INSTANCE_A, A, "pending")
    assert target.account == "sql-admin"

    assert world.take(B) == []
    (doc,) = world.take(A)
    assert world.take(A) == []  # a delivered document is not served again
    assert doc["run"] == run.id
    assert doc["target"] == target.id
    assert doc["task"] == RESTART
    assert doc["object"] == INSTANCE_A
    assert doc["properties"]["instance"] == "MSSQLSERVER"
    assert doc["parameters"] == {"mode": "immediate", "retries": "3"}
    assert doc["probe"] == {
        "type": "command",
        "config": {
            "program": "restart_sql",
            "args": ["--instance", "{instance}", "--mode", "{mode}"],
        },
    }
    assert doc["timeout_s"] == 120
    assert datetime.fromisoformat(doc["deadline"]) == T0 + timedelta(minutes=2)
    assert doc["account"]["id"] == world.account_id
    assert (doc["account"]["name"], doc["account"]["type"]) == ("sql-admin", "windows")
    assert doc["account"]["secret_version"] == 1
    assert doc["account"]["public"] == {"domain": "contoso.com", "user": "sqladmin"}
    assert doc["credentials"] is None
    assert world.show(run.id).status == "running"

    world.clock.advance(seconds=30)
    assert world.report(
        A, target.id, state="warning", message="restarted", output="ok\n", exit_code=0
    )
    assert not world.report(A, target.id, state="critical")  # a second result is ignored
    shown = world.show(run.id, with_output=True)
    assert shown.status == "done"
    (t,) = shown.targets
    assert (t.status, t.state, t.message, t.exit_code, t.output) == (
        "succeeded",
        "warning",
        "restarted",
        0,
        "ok\n",
    )
    assert t.finished_at == T0 + timedelta(seconds=31.5)
    assert world.show(run.id).targets[0].output is None
    with pytest.raises(NotFound):
        world.report(B, target.id)  # another agent's target reads as a missing one
    with pytest.raises(NotFound):
        world.report(A, 999_999)


def test_a_group_fans_out_to_its_members_on_their_computers(world: World) -> None:
    run = world.start(restart([GROUP, INSTANCE_A]), who=ADMIN)
    by_object = {t.object: t for t in run.targets}
    assert sorted(by_object) == [INSTANCE.format(c) for c in (A, B, C)]  # d is not production
    assert by_object[INSTANCE_A].status == "pending"
    # b has an agent but the account is not distributed to it; c has no agent at all
    b, c = by_object[INSTANCE.format(B)], by_object[INSTANCE.format(C)]
    assert b.status == "refused"
    assert "not distributed to b.contoso.com" in b.message
    assert c.status == "refused"
    assert c.message == f"no approved agent runs on {C}"
    (refused,) = world.audit("task:refused")
    assert refused.target == run.id
    assert sorted(x["object"] for x in refused.details["targets"]) == [
        INSTANCE.format(B),
        INSTANCE.format(C),
    ]
    (doc,) = world.take(A)
    assert world.take(B) == []
    assert world.report(A, doc["target"], state="critical", message="refused to stop")
    assert world.show(run.id, who=ADMIN).status == "failed"


def test_a_task_without_a_profile_runs_as_the_action_account(world: World) -> None:
    run = world.start(TaskStart(task=PING, targets=[f"System.Computer:{B}"]))
    (doc,) = world.take(B)
    assert doc["account"] is None
    assert doc["credentials"] is None
    assert doc["properties"]["name"] == B
    assert run.targets[0].account is None


def test_the_wrong_class_an_unknown_target_and_bad_overrides_write_nothing(world: World) -> None:
    with pytest.raises(InvalidInput, match=r"targets Contoso\.SQL\.Instance; System\.Computer:"):
        world.start(restart([f"System.Computer:{A}"]))
    with pytest.raises(NotFound):
        world.start(restart(["Contoso.SQL.Instance:z.contoso.com;X"]))
    with pytest.raises(NotFound):
        world.start(restart(["No.Such.Group"]))
    with pytest.raises(NotFound):
        world.start(TaskStart(task="Contoso.SQL.InstanceAvailability", targets=[INSTANCE_A]))
    with pytest.raises(InvalidInput, match=r"'retries' of task Test\.Tasks\.Restart cannot be"):
        world.start(restart([INSTANCE_A], overrides={"retries": "9"}))
    with pytest.raises(InvalidInput, match="has no parameter 'speed'") as info:
        world.start(restart([INSTANCE_A], overrides={"speed": "9", "mode": "x"}))
    assert "(overridable: mode)" in str(info.value)
    assert world.count(TaskRunRow) == world.count(TaskTargetRow) == 0
    assert world.audit("task:start") == []


# -- roles, scopes, the Tasks Execution setting -------------------------------------------------


def test_read_only_operators_cannot_run_tasks(world: World) -> None:
    with pytest.raises(Forbidden, match=r"your roles do not allow this \(it needs tasks:run\)"):
        world.start(restart([INSTANCE_A]), who=READER)
    with pytest.raises(Forbidden):
        world.set_execution(False, who=ALICE)


def test_task_and_object_scopes_limit_an_operator(world: World) -> None:
    scoped = principal("carol", Role.OPERATOR, groups=(GROUP,), tasks_=(RESTART,))
    with pytest.raises(Forbidden, match=f"task {PING} is not within your task scope"):
        world.start(TaskStart(task=PING, targets=[f"System.Computer:{A}"]), who=scoped)
    # outside the scope and missing read the same: the name asked for, nothing else
    with pytest.raises(Forbidden) as outside:
        world.start(restart([INSTANCE_D]), who=scoped)
    assert str(outside.value) == f"{INSTANCE_D} is not within your scope (your roles' groups)"
    missing = "Contoso.SQL.Instance:z.contoso.com;X"
    with pytest.raises(Forbidden) as absent:
        world.start(restart([missing]), who=scoped)
    assert str(absent.value) == f"{missing} is not within your scope (your roles' groups)"
    assert world.start(restart([INSTANCE_A]), who=scoped).targets[0].status == "pending"
    # a role that runs tasks without a task scope lifts the bound
    both = Principal(
        user_id=7,
        name="dave",
        roles=(Grant(Role.OPERATOR, (), (RESTART,)), Grant(Role.ADVANCED_OPERATOR, (), ())),
        permissions=permissions_of([Role.OPERATOR, Role.ADVANCED_OPERATOR]),
    )
    assert world.start(TaskStart(task=PING, targets=[f"System.Computer:{A}"]), who=both)
    listed = {t.id for t in _list(world, scoped, None)}
    assert listed == {RESTART}
    assert {t.id for t in _list(world, ALICE, f"System.Computer:{A}")} == {PING}
    assert {t.id for t in _list(world, ALICE, GROUP)} == {RESTART}


def _list(world: World, who: Principal, target: str | None) -> list[tasks.TaskView]:
    with world.runtime.unit_of_work(read_only=True) as uow:
        return tasks.list_tasks(uow.session, target=target, principal=who)


def test_list_shows_parameters_and_timeouts(world: World) -> None:
    with world.runtime.unit_of_work(read_only=True) as uow:
        found = {t.id: t for t in tasks.list_tasks(uow.session, target=None, principal=None)}
    assert found[PING].timeout_seconds == 300
    assert found[PING].parameters == []
    restart_view = found[RESTART]
    assert (restart_view.timeout_seconds, restart_view.profile) == (120, TASK_PROFILE)
    assert [(p.name, p.default, p.overridable) for p in restart_view.parameters] == [
        ("mode", "graceful", True),
        ("retries", 3, False),
    ]


def test_tasks_execution_disabled_needs_credentials_from_non_administrators(
    world: World,
) -> None:
    with world.runtime.unit_of_work(read_only=True) as uow:
        assert tasks.tasks_execution(uow.session) is True
    world.set_execution(False)
    with world.runtime.unit_of_work(read_only=True) as uow:
        assert tasks.tasks_execution(uow.session) is False
    with pytest.raises(Forbidden) as info:
        world.start(restart([INSTANCE_A]))
    assert str(info.value) == (
        "Tasks Execution is disabled in management group MG1: supply credentials to run tasks "
        "(runas task start … --user USER; the password is prompted or read from stdin)"
    )
    assert world.start(restart([INSTANCE_A], credentials=supplied())).credential_mode == "supplied"
    assert world.start(restart([INSTANCE_A]), who=ADMIN).credential_mode == "predefined"
    assert world.start(restart([INSTANCE_A]), who=None).requested_by == "local"
    world.set_execution(True)
    assert world.start(restart([INSTANCE_A])).credential_mode == "predefined"
    trail = [r.details for r in world.audit("settings:tasks-execution")]
    assert trail == [
        {"tasks_execution": "disabled", "previous": "enabled"},
        {"tasks_execution": "enabled", "previous": "disabled"},
    ]


# -- supplied credentials -------------------------------------------------------------------------


def test_supplied_credentials_are_sealed_to_the_agent_and_leave_no_trace(world: World) -> None:
    run = world.start(restart([INSTANCE_A], credentials=supplied()))
    assert (run.credential_mode, run.supplied_user) == ("supplied", "CONTOSO\\alice.admin")
    (target,) = run.targets
    assert target.account is None
    with world.runtime.unit_of_work(read_only=True) as uow:
        row = uow.session.get(TaskTargetRow, target.id)
        assert row is not None
        assert row.sealed_credentials is not None
        assert row.account_id is None
    assert CANARY not in world.everything()

    (doc,) = world.take(A)
    assert doc["account"] is None
    creds = doc["credentials"]
    assert (creds["type"], creds["user"], creds["domain"]) == ("windows", "alice.admin", "CONTOSO")
    sealed = base64.b64decode(creds["sealed"])
    run_id = f"{run.id}:{target.id}"
    opened = open_once(
        world.agents[A].hpke, sealed, agent_id=A, purpose=tasks.PURPOSE, run_id=run_id
    )
    assert dict(opened) == {"password": CANARY}
    for key, agent_id, rid in (
        (world.agents[B].hpke, A, run_id),  # another agent's key
        (world.agents[A].hpke, B, run_id),  # bound to the agent
        (world.agents[A].hpke, A, f"{run.id}:{target.id + 1}"),  # bound to the target
    ):
        with pytest.raises(DecryptionError):
            open_once(key, sealed, agent_id=agent_id, purpose=tasks.PURPOSE, run_id=rid)
    with world.runtime.unit_of_work(read_only=True) as uow:
        row = uow.session.get(TaskTargetRow, target.id)
        assert row is not None
        assert row.sealed_credentials is None

    assert world.report(A, target.id, output="[scrubbed]", scrubbed=1)
    (started,) = world.audit("task:start")
    assert started.actor == "alice"
    assert started.target == run.id
    assert started.details["credential_mode"] == "supplied"
    assert started.details["supplied_user"] == "CONTOSO\\alice.admin"
    assert world.audit("agent:output-scrubbed")[0].details["total"] == 1
    assert CANARY not in world.everything()
    assert CANARY not in repr(supplied())
    assert CANARY not in str(TaskStart(task="x", targets=["y"], credentials=supplied()))


def test_supplied_credentials_without_a_domain_are_simple(world: World) -> None:
    world.start(
        TaskStart(task=PING, targets=[f"System.Computer:{B}"], credentials=supplied(domain=None))
    )
    (doc,) = world.take(B)
    assert doc["credentials"]["type"] == "simple"
    assert doc["credentials"]["domain"] is None


# -- timeouts, restarts ---------------------------------------------------------------------------


def test_a_target_not_picked_up_in_time_times_out(world: World) -> None:
    run = world.start(restart([INSTANCE_A], credentials=supplied()))
    world.clock.advance(minutes=2)
    (t,) = world.show(run.id).targets  # seen as soon as it is due, before anything writes it
    assert (t.status, t.message) == (
        "timed-out",
        "timed out: the agent did not pick the task up in time",
    )
    assert world.show(run.id).status == "failed"
    assert world.take(A) == []  # the agent returns too late
    with world.runtime.unit_of_work(read_only=True) as uow:
        row = uow.session.get(TaskTargetRow, t.id)
        assert row is not None
        assert (row.status, row.sealed_credentials) == ("timed-out", None)


def test_a_delivered_target_without_a_result_times_out_and_a_late_result_is_ignored(
    world: World,
) -> None:
    run = world.start(restart([INSTANCE_A]))
    world.clock.advance(minutes=1)
    (doc,) = world.take(A)
    world.clock.advance(minutes=2, seconds=59)
    assert world.show(run.id).targets[0].status == "delivered"
    world.clock.advance(seconds=1)  # deadline (2m) + timeout (2m)
    (t,) = world.show(run.id).targets
    assert (t.status, t.message) == ("timed-out", "timed out: the agent did not report")
    assert not world.report(A, doc["target"])
    with world.runtime.unit_of_work() as uow:
        assert tasks.expire_overdue(uow) == 0  # the late result already wrote it
    assert world.show(run.id).targets[0].status == "timed-out"


def test_expire_overdue_writes_due_timeouts(world: World) -> None:
    run = world.start(restart([INSTANCE_A], credentials=supplied()))
    with world.runtime.unit_of_work() as uow:
        assert tasks.expire_overdue(uow) == 0
    world.clock.advance(minutes=3)
    with world.runtime.unit_of_work() as uow:
        assert tasks.expire_overdue(uow) == 1
    with world.runtime.unit_of_work(read_only=True) as uow:
        row = uow.session.get(TaskTargetRow, run.targets[0].id)
        assert row is not None
        assert (row.status, row.sealed_credentials) == ("timed-out", None)


def test_a_run_survives_a_server_restart_and_waits_for_its_agent(world: World) -> None:
    run = world.start(restart([INSTANCE_A], credentials=supplied()))
    world.runtime.close()
    world.runtime = Runtime(world.settings, env={}, clock=world.clock)
    world.clock.advance(minutes=1)  # the agent was away a while, and returns in time
    assert world.show(run.id).status == "pending"
    (doc,) = world.take(A)
    opened = open_once(
        world.agents[A].hpke,
        base64.b64decode(doc["credentials"]["sealed"]),
        agent_id=A,
        purpose=tasks.PURPOSE,
        run_id=f"{run.id}:{doc['target']}",
    )
    assert opened["password"] == CANARY
    assert world.report(A, doc["target"])
    assert world.show(run.id).status == "done"


# -- who sees which runs; forwarded runs ----------------------------------------------------------


def test_operators_see_their_own_runs_and_administrators_every_run(world: World) -> None:
    mine = world.start(restart([INSTANCE_A]))
    theirs = world.start(restart([INSTANCE_A]), who=BOB)
    with pytest.raises(NotFound):
        world.show(theirs.id)
    with pytest.raises(NotFound):
        world.show("not-a-run")
    assert world.show(theirs.id, who=ADMIN).requested_by == "bob"
    with world.runtime.unit_of_work(read_only=True) as uow:
        assert [r.id for r in tasks.history(uow.session, principal=ALICE)] == [mine.id]
        every = tasks.history(uow.session, principal=ADMIN, limit=10)
        assert {r.id for r in every} == {mine.id, theirs.id}
        with pytest.raises(InvalidInput):
            tasks.history(uow.session, principal=ADMIN, limit=0)


def test_a_start_on_behalf_of_a_connected_groups_user(world: World) -> None:
    req = restart([INSTANCE_A], on_behalf_of="MG2:erin")
    with pytest.raises(Forbidden):
        world.start(req)  # only a connection account (an administrator) may say so
    run = world.start(req, who=ADMIN)
    assert (run.requested_by, run.management_group) == ("MG2:erin", "MG2")
    (started,) = world.audit("task:start")
    assert started.actor == "admin"
    assert started.details["on_behalf_of"] == "MG2:erin"
    with pytest.raises(InvalidInput):
        world.start(restart([INSTANCE_A], on_behalf_of="erin"), who=ADMIN)


# -- the agent's bundle ----------------------------------------------------------------------------


def test_the_bundle_holds_the_accounts_of_the_computers_tasks(world: World) -> None:
    with world.runtime.unit_of_work(read_only=True) as uow:
        row = uow.session.get(AgentRow, A)
        assert row is not None
        built = agent_config.build(uow, row, memory=ResolutionMemory())
    doc = json.loads(built.body)
    assert (world.account_id, 1) in built.delivered
    assert (world.account_id, 1) in manifest_of(base64.b64decode(doc["bundle"])).entries
    assert not [w for w in doc["workflows"] if w["kind"] == "task"]
    with world.runtime.unit_of_work(read_only=True) as uow:
        row = uow.session.get(AgentRow, B)
        assert row is not None
        built_b = agent_config.build(uow, row, memory=ResolutionMemory())
    assert all(account != world.account_id for account, _ in built_b.delivered)
