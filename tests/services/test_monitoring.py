"""Agent reports (monitoring.record_report), Run As health and its alerts, on SQLite and
PostgreSQL, with the management group's clock in the test's hands."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr, ValidationError
from sqlalchemy import func, select

from runas.backend.local import LocalBackend
from runas.domain.accounts import DistributionMode
from runas.domain.health import AlertAction, HealthState
from runas.domain.model import TargetKind
from runas.errors import NotFound
from runas.runtime import Runtime
from runas.services import alerts, monitoring, run_as_health, setup
from runas.services.accounts import AccountCreate, AccountUpdate
from runas.services.discovery import DiscoveryPayload
from runas.services.monitoring import AgentReport
from runas.services.profiles import AssociateRequest, DissociateRequest
from runas.settings import Settings
from runas.storage.tables import (
    AgentEventRow,
    AgentReportRow,
    AgentRow,
    AlertRow,
    AuditRow,
    MonitorStateRow,
    RunAsHealthRow,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROFILE = "Contoso.SQL.MonitoringProfile"
MONITOR = "Contoso.SQL.InstanceAvailability"
A, B = "a.contoso.com", "b.contoso.com"
INSTANCE_A = f"Contoso.SQL.Instance:{A};MSSQLSERVER"
INSTANCE_B = f"Contoso.SQL.Instance:{B};MSSQLSERVER"
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(minutes=5)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class World:
    """An initialised management group holding the Contoso SQL pack and its four computers."""

    def __init__(self, tmp_path: Path, db_url: str) -> None:
        self.clock = Clock()
        settings = Settings(data_dir=tmp_path / "runas-data", database_url=db_url, actor="test")
        self.runtime = Runtime(settings, env={}, clock=self.clock)
        setup.init(self.runtime, "test")
        self.backend = LocalBackend(self.runtime)
        self.backend.pack_import((EXAMPLES / "packs" / "contoso-sql.yaml").read_text(), "x.yaml")
        payload = yaml.safe_load((EXAMPLES / "discovery" / "contoso-sql.yaml").read_text())
        self.backend.discovery_submit(DiscoveryPayload.model_validate(payload))

    def account(self, name: str, *, expires_at: datetime | None = None) -> int:
        view = self.backend.account_add(
            AccountCreate(
                name=name,
                type="windows",
                fields={"domain": "contoso.com", "user": name},
                secrets={"password": SecretStr(f"pw of {name}")},
                expires_at=expires_at,
            )
        )
        return view.id

    def associate(self, account: str, target: str = INSTANCE_A) -> None:
        self.backend.associate(
            AssociateRequest(
                profile=PROFILE, account=account, target_kind=TargetKind.OBJECT, target=target
            )
        )

    def distribute(self, account: str, *computers: str) -> None:
        self.backend.distribution_set(
            account, DistributionMode.MORE_SECURE, list(computers), None, None
        )

    def report(self, agent: str = A, **fields: Any) -> int:
        with self.runtime.unit_of_work(actor=f"agent:{agent}") as uow:
            return monitoring.record_report(uow, agent, make_report(**fields), grace=GRACE)

    def evaluate(self, computer: str = A) -> list[Any]:
        with self.runtime.unit_of_work(actor="system") as uow:
            return run_as_health.evaluate_computer(uow, computer, grace=GRACE)

    def rows(self, table: Any) -> list[Any]:
        with self.runtime.unit_of_work() as uow:
            found = list(uow.session.scalars(select(table)))
            uow.session.expunge_all()
            return found

    def health(self, computer: str = A) -> dict[str, run_as_health.HealthView]:
        with self.runtime.unit_of_work() as uow:
            return {h.account: h for h in run_as_health.health_show(uow.session, computer)}

    def alerts(self, open_only: bool = True) -> list[alerts.AlertView]:
        with self.runtime.unit_of_work() as uow:
            return alerts.list_alerts(uow.session, open_only=open_only)

    def audit(self, action: str) -> list[AuditRow]:
        return [r for r in self.rows(AuditRow) if r.action == action]


def result(obj: str = INSTANCE_A, workflow: str = MONITOR, **fields: Any) -> dict[str, Any]:
    return {
        "workflow": workflow,
        "object": obj,
        "started_at": (fields.pop("at", None) or T0).isoformat(),
        "duration_s": 0.1,
        "state": "healthy",
        "message": "ok",
        "exit_code": 0,
        "perf": {"connections": 12.0},
        **fields,
    }


def make_report(
    results: list[dict[str, Any]] | None = None,
    report_id: str | None = None,
    discovery: dict[str, Any] | None = None,
) -> AgentReport:
    return AgentReport.model_validate(
        {
            "report_id": report_id or str(uuid.uuid4()),
            "epoch": 1,
            "results": results if results is not None else [result()],
            "discovery": discovery,
        }
    )


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    w = World(tmp_path, db_url)
    try:
        yield w
    finally:
        w.runtime.close()


# -- reports ---------------------------------------------------------------------------------


def test_a_report_is_stored_once(world: World) -> None:
    events = [{"severity": "warning", "message": "slow"}]
    report = make_report([result(events=events)], report_id="r-1")
    with world.runtime.unit_of_work() as uow:
        assert monitoring.record_report(uow, A, report) == 1
    with world.runtime.unit_of_work() as uow:
        assert monitoring.record_report(uow, A, report) == 0
    (state,) = world.rows(MonitorStateRow)
    assert (state.workflow_id, state.state, state.agent_id, state.perf) == (
        MONITOR,
        "healthy",
        A,
        {"connections": 12.0},
    )
    assert len(world.rows(AgentEventRow)) == 1
    assert [r.report_id for r in world.rows(AgentReportRow)] == ["r-1"]


def test_results_about_other_computers_or_unknown_things_are_skipped(world: World) -> None:
    stored = world.report(
        results=[
            result(),
            result(obj=INSTANCE_B),  # hosted on b: not this agent's
            result(obj=f"Contoso.SQL.Instance:{A};NOPE"),
            result(workflow="No.Such.Workflow"),
        ]
    )
    assert stored == 1
    assert [(s.workflow_id, s.agent_id) for s in world.rows(MonitorStateRow)] == [(MONITOR, A)]


def test_an_older_run_does_not_replace_a_newer_state(world: World) -> None:
    world.report(results=[result(at=T0 + timedelta(minutes=2), state="critical")])
    world.report(results=[result(at=T0, state="healthy")])
    (state,) = world.rows(MonitorStateRow)
    assert state.state == "critical"


def test_object_state_view(world: World) -> None:
    account_id = world.account("sql-a")
    world.associate("sql-a")
    world.distribute("sql-a", A)
    world.report(results=[result(account_id=account_id, secret_version=1)])
    view = world.backend.object_state(INSTANCE_A)
    (wf,) = view.workflows
    assert (view.computer, wf.workflow, wf.kind, wf.state, wf.account, wf.agent) == (
        A,
        MONITOR,
        "monitor",
        "healthy",
        "sql-a",
        A,
    )
    assert world.backend.object_state(INSTANCE_B).workflows == []
    with pytest.raises(NotFound):
        world.backend.object_state(f"Contoso.SQL.Instance:{A};NOPE")


def test_reports_are_validated() -> None:
    with pytest.raises(ValidationError):
        make_report([result(state="fine")])
    with pytest.raises(ValidationError):
        make_report([result(message="x" * 4097)])
    with pytest.raises(ValidationError):
        make_report([result(perf={f"p{i}": 1.0 for i in range(65)})])
    with pytest.raises(ValidationError):
        make_report([result(extra="key")])
    with pytest.raises(ValidationError):
        make_report([result(auth_failure={"kind": "bad-luck", "message": ""})])
    with pytest.raises(ValidationError):
        make_report(report_id="x" * 65)
    with pytest.raises(ValidationError):
        make_report([result()] * 1001)


def test_scrubbed_output_is_audited_as_counts(world: World) -> None:
    world.report(results=[result(scrubbed=2), result(scrubbed=1), result(scrubbed=0)])
    (record,) = world.audit("agent:output-scrubbed")
    assert record.target == A
    assert record.details["total"] == 3
    assert record.details["workflows"] == [{"workflow": MONITOR, "count": 3}]


def test_an_agent_discovers_only_its_own_computer(world: World) -> None:
    own = {
        "source": "Agent.Self",
        "computer": A,
        "objects": [
            {"class": "System.Computer", "key": {"name": A}},
            {"class": "Contoso.SQL.Instance", "host": f"System.Computer:{A}",
             "key": {"instance": "SECOND"}},
        ],
    }  # fmt: skip
    assert world.report(discovery=own) == 1
    assert world.backend.object_show(f"Contoso.SQL.Instance:{A};SECOND").computer == A

    foreign = {
        "source": "Agent.Self",
        "computer": A,
        "objects": [
            {"class": "System.Computer", "key": {"name": A}},
            {"class": "Contoso.SQL.Instance", "host": f"System.Computer:{B}",
             "key": {"instance": "SNEAKY"}},
        ],
    }  # fmt: skip
    # refused as a whole; the results of the report are still stored
    assert world.report(discovery=foreign, results=[result(at=T0 + timedelta(seconds=5))]) == 1
    with pytest.raises(NotFound):
        world.backend.object_show(f"Contoso.SQL.Instance:{B};SNEAKY")
    assert world.backend.object_show(f"Contoso.SQL.Instance:{A};SECOND")  # snapshot kept
    (refused,) = world.audit("agent:discovery-refused")
    assert refused.outcome == "denied"
    assert "not hosted on a.contoso.com" in refused.details["reason"]

    other_scope = {**own, "computer": B}
    world.report(discovery=other_scope)
    assert len(world.audit("agent:discovery-refused")) == 2


# -- Run As health ---------------------------------------------------------------------------


def _logon(account_id: int, version: int, *, failed: bool, at: datetime) -> dict[str, Any]:
    auth = {"kind": "logon-failed", "message": "login failed for user 'sql-a'"} if failed else None
    return result(
        account_id=account_id,
        secret_version=version,
        auth_failure=auth,
        state="unknown" if failed else "healthy",
        at=at,
    )


def test_a_failed_logon_opens_an_alert_and_a_success_closes_it(world: World) -> None:
    account_id = world.account("sql-a")
    world.associate("sql-a")
    world.distribute("sql-a", A)

    world.report(results=[_logon(account_id, 1, failed=True, at=T0)])
    (alert,) = world.alerts()
    assert (alert.account, alert.computer, alert.state, alert.severity) == (
        "sql-a",
        A,
        "logon-failed",
        "critical",
    )
    assert "could not log on" in alert.message
    health = world.health()["sql-a"]
    assert (health.state, health.last_report) == ("logon-failed", "logon-failed")
    (opened,) = world.audit("alert:open")
    assert (opened.actor, opened.target) == ("system", f"runas-health:{account_id}:{A}")

    world.clock.advance(minutes=1)
    world.report(results=[_logon(account_id, 1, failed=False, at=T0 + timedelta(minutes=1))])
    assert world.alerts() == []
    (closed,) = world.alerts(open_only=False)
    assert closed.closed_at == T0 + timedelta(minutes=1)
    assert world.health()["sql-a"].state == "ok"
    (record,) = world.audit("alert:close")
    assert record.actor == "system"
    assert record.details["alert"] == closed.id


def test_a_new_secret_version_clears_a_failure_about_the_old_one(world: World) -> None:
    account_id = world.account("sql-a")
    world.associate("sql-a")
    world.distribute("sql-a", A)
    world.report(results=[_logon(account_id, 1, failed=True, at=T0)])
    assert len(world.alerts()) == 1
    world.backend.account_update("sql-a", AccountUpdate(secrets={"password": SecretStr("new")}))
    changes = world.evaluate()
    assert [c.action for c in changes] == [AlertAction.CLOSE]
    assert world.alerts() == []


def test_not_distributed_raises_an_alert_only_after_the_grace_period(world: World) -> None:
    world.account("sql-a")
    world.associate("sql-a")  # needed on a, distributed nowhere
    assert world.evaluate() == []
    assert world.health()["sql-a"].missing_since == T0
    world.clock.advance(minutes=4, seconds=59)
    assert world.evaluate() == []
    world.clock.advance(seconds=1)
    (change,) = world.evaluate()
    assert (change.action, change.state) == (AlertAction.OPEN, HealthState.NOT_DISTRIBUTED)
    (alert,) = world.alerts()
    assert "credentials not found" in alert.message
    assert PROFILE in alert.message
    world.distribute("sql-a", A)
    (change,) = world.evaluate()
    assert change.action is AlertAction.CLOSE
    assert world.health()["sql-a"].missing_since is None


def test_expiry_warns_then_turns_critical_then_expired(world: World) -> None:
    world.account("sql-a", expires_at=T0 + timedelta(days=10))
    world.associate("sql-a")
    world.distribute("sql-a", A)
    world.evaluate()
    (alert,) = world.alerts()
    assert (alert.state, alert.severity) == ("expiring-warning", "warning")
    world.clock.advance(days=8)
    (change,) = world.evaluate()
    assert (change.action, change.state) == (AlertAction.UPDATE, HealthState.EXPIRING_CRITICAL)
    world.clock.advance(days=3)
    world.evaluate()
    (alert,) = world.alerts()
    assert (alert.state, alert.severity) == ("expired", "critical")
    assert len(world.audit("alert:open")) == 1  # one alert, updated, never reopened
    assert world.health()["sql-a"].since == T0 + timedelta(days=11)


def test_two_accounts_at_the_same_rank_are_in_conflict(world: World) -> None:
    world.account("sql-a")
    world.account("sql-b")
    world.associate("sql-a")
    world.associate("sql-b")
    world.distribute("sql-a", A)
    world.distribute("sql-b", A)
    changes = world.evaluate()
    assert {(c.action, c.state) for c in changes} == {(AlertAction.OPEN, HealthState.CONFLICT)}
    by_account = {a.account: a for a in world.alerts()}
    assert set(by_account) == {"sql-a", "sql-b"}
    assert "'sql-b'" in by_account["sql-a"].message
    assert "'sql-a'" in by_account["sql-b"].message
    world.backend.dissociate(DissociateRequest(profile=PROFILE, account="sql-b"))
    world.evaluate()
    assert world.alerts() == []


def test_pairs_no_longer_relevant_are_dropped_and_their_alerts_closed(world: World) -> None:
    account_id = world.account("sql-a")
    world.associate("sql-a")
    world.distribute("sql-a", A)
    world.report(results=[_logon(account_id, 1, failed=True, at=T0)])
    assert len(world.alerts()) == 1
    world.backend.dissociate(DissociateRequest(profile=PROFILE, account="sql-a"))
    world.distribute("sql-a")  # no longer sent to a either
    world.evaluate()
    assert world.alerts() == []
    assert world.rows(RunAsHealthRow) == []


def test_removing_an_account_closes_its_alerts_at_the_next_sweep(world: World) -> None:
    account_id = world.account("sql-a")
    world.associate("sql-a")
    world.distribute("sql-a", A)
    world.report(results=[_logon(account_id, 1, failed=True, at=T0)])
    world.backend.dissociate(DissociateRequest(profile=PROFILE, account="sql-a"))
    world.backend.account_remove("sql-a")
    assert world.rows(RunAsHealthRow) == []  # gone with the account
    with world.runtime.unit_of_work(actor="system") as uow:
        assert run_as_health.sweep(uow, grace=GRACE) == 1
    assert world.alerts() == []
    assert len(world.audit("alert:close")) == 1


def test_sweep_covers_approved_agents_and_stored_pairs(world: World) -> None:
    world.account("sql-a")
    world.associate("sql-a")
    with world.runtime.unit_of_work() as uow:
        for name, status in ((A, "approved"), (B, "pending")):
            uow.session.add(
                AgentRow(
                    id=name,
                    status=status,
                    hpke_public_key=b"k" * 32,
                    tls_key_sha256="0" * 64,
                    csr_pem="",
                    enrolled_at=T0,
                )
            )
        uow.session.add(AgentReportRow(report_id="old", agent_id=A, received_at=T0))
    world.clock.advance(days=1, minutes=10)
    with world.runtime.unit_of_work(actor="system") as uow:
        assert run_as_health.computers_to_sweep(uow.session) == [A]
        assert run_as_health.sweep(uow, grace=GRACE) == 1
    assert [h.account for h in world.health().values()] == ["sql-a"]
    assert world.rows(AgentReportRow) == []  # pruned after a day


def test_the_sweeper_thread_evaluates_each_computer(world: World) -> None:
    account_id = world.account("sql-a")
    world.associate("sql-a")
    with world.runtime.unit_of_work() as uow:
        uow.session.add(
            RunAsHealthRow(account_id=account_id, computer=A, since=T0, report_message="")
        )
    sweeper = run_as_health.HealthSweeper(world.runtime, interval_s=60, grace=timedelta(0))
    assert sweeper.run_once() == 1
    (alert,) = world.alerts()
    assert alert.state == "not-distributed"
    sweeper.start()
    sweeper.stop()


def test_the_sweeper_evaluates_again_only_what_may_have_changed(world: World) -> None:
    account_id = world.account("sql-a")
    world.associate("sql-a")
    with world.runtime.unit_of_work() as uow:
        uow.session.add(
            RunAsHealthRow(account_id=account_id, computer=A, since=T0, report_message="")
        )
    sweeper = run_as_health.HealthSweeper(world.runtime, interval_s=60, grace=timedelta(0))
    assert sweeper.run_once() == 1  # the first sweep is a full one
    (alert,) = world.alerts()
    assert alert.state == "not-distributed"
    assert sweeper.run_once() == 0  # nothing changed, nothing waits for a grace period
    world.distribute("sql-a", A)  # a change: the epoch moves
    assert sweeper.run_once() == 1
    assert world.alerts() == []  # distributed now: the alert closed by itself
    assert len(world.alerts(open_only=False)) == 1


def test_health_show_of_an_unknown_computer_is_not_found(world: World) -> None:
    with pytest.raises(NotFound, match="no computer named"):
        world.backend.health_show("nowhere.contoso.com")
    assert world.backend.health_show(B) == []


def test_alert_filters(world: World) -> None:
    world.account("sql-a", expires_at=T0 + timedelta(days=10))
    world.associate("sql-a")
    world.associate("sql-a", INSTANCE_B)
    world.distribute("sql-a", A, B)
    world.evaluate(A)
    world.evaluate(B)
    assert {a.computer for a in world.backend.alert_list(False, None, None, 100)} == {A, B}
    assert [a.computer for a in world.backend.alert_list(False, B, None, 100)] == [B]
    assert world.backend.alert_list(False, None, "monitor", 100) == []
    assert len(world.backend.alert_list(False, None, None, 1)) == 1
    with world.runtime.unit_of_work() as uow:
        assert alerts.list_alerts(uow.session, include_runas=False) == []
        count = uow.session.scalar(select(func.count()).select_from(AlertRow))
    assert count == 2


def test_a_refused_discovery_keeps_audit_records_queued_before_it(world: World) -> None:
    from runas.services import audit
    from runas.services.audit import AuditAction

    foreign = {"source": "Agent.Self", "computer": B,
               "objects": [{"class": "System.Computer", "key": {"name": B}}]}  # fmt: skip
    with world.runtime.unit_of_work(actor=f"agent:{A}") as uow:
        audit.record(uow, AuditAction.DISCOVERY_SUBMIT, "before", {"objects": 0})
        assert monitoring.record_report(uow, A, make_report(discovery=foreign)) == 1
    assert [r.target for r in world.audit("discovery:submit")][-1:] == ["before"]
    assert len(world.audit("agent:discovery-refused")) == 1


# -- discovery workflows ---------------------------------------------------------------------

DB_DISCOVERY = "Contoso.SQL.DatabaseDiscovery"
DIRECTORY_PACK = """
pack: {id: Test.Directory, version: 1.0.0, display_name: Directory}
workflows:
  - id: Test.Directory.Computers
    kind: discovery
    display_name: Computers from the directory
    target: System.Computer
    discovers: [System.Computer]
    schedule: {interval: 1h}
    probe: {type: command, config: {program: list_computers}}
"""


def _databases(instance: str, *names: str) -> list[dict[str, Any]]:
    return [
        {"class": "Contoso.SQL.Database", "host": instance, "key": {"database": name}}
        for name in names
    ]


def _found(**fields: Any) -> dict[str, Any]:
    return result(workflow=DB_DISCOVERY, **fields)


def test_a_discovery_workflow_submits_a_snapshot_for_the_object_it_ran_for(world: World) -> None:
    second = f"Contoso.SQL.Instance:{A};SECOND"
    world.backend.discovery_submit(
        DiscoveryPayload.model_validate(
            {
                "source": "manual",
                "computer": A,
                "objects": [
                    {
                        "class": "Contoso.SQL.Instance",
                        "host": f"System.Computer:{A}",
                        "key": {"instance": "SECOND"},
                    }
                ],
            }
        )
    )
    world.report(results=[_found(discovery=_databases(INSTANCE_A, "sales", "hr"))])
    world.report(results=[_found(obj=second, discovery=_databases(second, "crm"))])
    names = {o.full_name for o in world.backend.object_list("Contoso.SQL.Database", None, 100)}
    assert names == {f"Contoso.SQL.Database:{A};MSSQLSERVER;sales",
                     f"Contoso.SQL.Database:{A};MSSQLSERVER;hr",
                     f"Contoso.SQL.Database:{A};SECOND;crm"}  # fmt: skip

    # the next run of the first target no longer finds "hr": only its own finding goes
    world.report(results=[_found(discovery=_databases(INSTANCE_A, "sales"), at=T0 + GRACE)])
    names = {o.full_name for o in world.backend.object_list("Contoso.SQL.Database", None, 100)}
    assert names == {f"Contoso.SQL.Database:{A};MSSQLSERVER;sales",
                     f"Contoso.SQL.Database:{A};SECOND;crm"}  # fmt: skip


def test_a_discovery_workflow_cannot_reach_beyond_its_computer(world: World) -> None:
    sneaky = _databases(INSTANCE_B, "sneaky")
    assert world.report(results=[_found(discovery=sneaky)]) == 1  # the result itself is kept
    with pytest.raises(NotFound):
        world.backend.object_show(f"Contoso.SQL.Database:{B};MSSQLSERVER;sneaky")
    (refused,) = world.audit("agent:discovery-refused")
    assert "not hosted on a.contoso.com" in refused.details["reason"]

    # a monitor is not a discovery: what it "found" is not submitted
    world.report(results=[result(discovery=_databases(INSTANCE_A, "x"), at=T0 + GRACE)])
    with pytest.raises(NotFound):
        world.backend.object_show(f"Contoso.SQL.Database:{A};MSSQLSERVER;x")


def test_declared_classes_may_be_discovered_off_the_agents_computer(world: World) -> None:
    world.backend.pack_import(DIRECTORY_PACK, "directory.yaml")
    computers = [{"class": "System.Computer", "key": {"name": n}} for n in ("x1.test", "x2.test")]
    world.report(
        results=[
            result(
                obj=f"System.Computer:{A}", workflow="Test.Directory.Computers", discovery=computers
            )
        ]
    )
    assert world.backend.object_show("System.Computer:x1.test").computer == "x1.test"
    assert world.backend.object_show("System.Computer:x2.test")
    # but not a hosted object of a class it does not declare
    hosted = [*computers, *_databases(INSTANCE_B, "nope")]
    world.report(
        results=[
            result(
                obj=f"System.Computer:{A}",
                workflow="Test.Directory.Computers",
                discovery=hosted,
                at=T0 + GRACE,
            )
        ]
    )
    with pytest.raises(NotFound):
        world.backend.object_show(f"Contoso.SQL.Database:{B};MSSQLSERVER;nope")
    assert len(world.audit("agent:discovery-refused")) == 1


def test_the_full_sweep_grooms_old_events(world: World) -> None:
    old = [{"severity": "warning", "message": "old news"}]
    world.report(results=[result(events=old)])
    world.clock.advance(days=8)
    new = [{"severity": "information", "message": "fresh"}]
    world.report(results=[result(events=new, at=world.clock.now)])
    sweeper = run_as_health.HealthSweeper(
        world.runtime, interval_s=60, grace=GRACE, event_retention=timedelta(days=7)
    )
    sweeper.run_once()  # the first sweep is a full one
    assert [e.message for e in world.rows(AgentEventRow)] == ["fresh"]


def test_a_long_sweep_rests_so_deliveries_keep_the_cpu(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = world.account("sql-a")
    world.associate("sql-a")
    with world.runtime.unit_of_work() as uow:
        for computer in (A, B, "c.contoso.com"):
            uow.session.add(
                RunAsHealthRow(
                    account_id=account_id, computer=computer, since=T0, report_message=""
                )
            )
    ticks = iter(range(1_000_000))
    monkeypatch.setattr(run_as_health.time, "monotonic", lambda: next(ticks) * 0.01)
    sweeper = run_as_health.HealthSweeper(
        world.runtime, interval_s=60, grace=GRACE, duty=0.25, unpaced=1
    )
    rests: list[float] = []

    class Stop:
        def is_set(self) -> bool:
            return False

        def wait(self, seconds: float) -> None:
            rests.append(round(seconds, 6))

    sweeper._stop = Stop()  # type: ignore[assignment]
    assert sweeper.run_once() == 3
    # every computer after the first rests three times what it took (a quarter of the time)
    assert rests == [0.03, 0.03]
    with pytest.raises(ValueError, match="duty"):
        run_as_health.HealthSweeper(world.runtime, interval_s=60, duty=0)


def test_a_sweep_writes_only_the_computers_whose_health_changes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = world.account("sql-a")
    world.associate("sql-a")
    world.distribute("sql-a", A)
    with world.runtime.unit_of_work() as uow:
        uow.session.add(
            RunAsHealthRow(account_id=account_id, computer=A, since=T0, report_message="")
        )
    sweeper = run_as_health.HealthSweeper(world.runtime, interval_s=60, grace=GRACE)
    assert sweeper.run_once() == 1  # a's first evaluation: its health row is written
    assert world.health()["sql-a"].state == "ok"
    assert sweeper.unchanged == 0
    # a new password moves the epoch for every computer, yet a's health stays what it was:
    # evaluated in a read-only transaction, no write transaction taken
    world.backend.account_update(
        "sql-a", AccountUpdate(secrets={"password": SecretStr("new pw of sql-a")})
    )
    written: list[str] = []
    original = run_as_health.evaluate_computer

    def evaluate(uow: Any, computer: str, **kwargs: Any) -> Any:
        written.append(computer)
        return original(uow, computer, **kwargs)

    monkeypatch.setattr(run_as_health, "evaluate_computer", evaluate)
    assert sweeper.run_once() == 1
    assert (written, sweeper.unchanged) == ([], 1)
    # a change that does alter a's health is written: needed, no longer distributed there
    world.backend.distribution_set("sql-a", DistributionMode.MORE_SECURE, [], None, None)
    assert sweeper.run_once() == 1
    assert written == [A]
    assert world.health()["sql-a"].missing_since is not None


def test_a_sweep_slows_down_while_configurations_are_delivered(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id = world.account("sql-a")
    world.associate("sql-a")
    with world.runtime.unit_of_work() as uow:
        for computer in (A, B, "c.contoso.com"):
            uow.session.add(
                RunAsHealthRow(
                    account_id=account_id, computer=computer, since=T0, report_message=""
                )
            )
    delivering = [True, True, False]
    sweeper = run_as_health.HealthSweeper(
        world.runtime,
        interval_s=60,
        grace=GRACE,
        yield_to=lambda: delivering.pop(0),
        yield_step_s=0.25,
    )
    rests: list[float] = []

    class Stop:
        def is_set(self) -> bool:
            return False

        def wait(self, seconds: float) -> None:
            rests.append(seconds)

    sweeper._stop = Stop()  # type: ignore[assignment]
    # each computer takes 0.1 s (a fake clock): at 5 % duty, a rest of 1.9 s after each
    clock = [1000.0]
    monkeypatch.setattr(run_as_health.time, "monotonic", lambda: clock[0])
    evaluate = sweeper._evaluate

    def slow_evaluate(computer: str) -> None:
        evaluate(computer)
        clock[0] += 0.1

    monkeypatch.setattr(sweeper, "_evaluate", slow_evaluate)
    assert sweeper.run_once() == 3
    # while a roll-out is under way: at least one step before the first computer, then
    # at most YIELD_DUTY of the time; then at full speed
    assert rests[0] == 0.25
    assert rests[1] == pytest.approx(
        0.1 * (1 - run_as_health.YIELD_DUTY) / run_as_health.YIELD_DUTY
    )
    assert len(rests) == 2
