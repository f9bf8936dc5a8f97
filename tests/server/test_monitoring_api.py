"""The monitoring routes: object state, alerts and Run As health, with role scopes and who may
see Run As health alerts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from runas.domain.roles import Role
from runas.services import monitoring, users
from runas.services.monitoring import AgentReport
from runas.services.roles import RoleAssign
from runas.storage.tables import AlertRow
from server.conftest import ACCOUNT, GROUP, INSTANCE_A, Served, add_user

A = "a.contoso.com"
INSTANCE_D = "Contoso.SQL.Instance:d.contoso.com;MSSQLSERVER"  # environment test: not in GROUP
MONITOR = "Contoso.SQL.InstanceAvailability"
AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _scoped_operator(s: Served) -> dict[str, str]:
    token = add_user(s.runtime, "scoped", [])
    with s.runtime.unit_of_work() as uow:
        users.assign_role(uow, "scoped", RoleAssign(role=Role.OPERATOR.value, scope_groups=[GROUP]))
    return {"Authorization": f"Bearer {token}"}


def _report(s: Served, agent: str, obj: str, **fields: object) -> int:
    result = {
        "workflow": MONITOR,
        "object": obj,
        "started_at": AT.isoformat(),
        "duration_s": 0.5,
        "state": "warning",
        "message": "slow",
        "perf": {"ms": 512},
        **fields,
    }
    report = AgentReport.model_validate(
        {"report_id": str(uuid.uuid4()), "epoch": 1, "results": [result]}
    )
    with s.runtime.unit_of_work(actor=f"agent:{agent}") as uow:
        return monitoring.record_report(uow, agent, report)


def _logon_failed(s: Served) -> None:
    c = s.client
    account = c.get(f"/api/v1/accounts/{ACCOUNT}", headers=s.admin).json()
    r = c.put(
        f"/api/v1/distribution/{ACCOUNT}",
        json={"mode": "more-secure", "add": [A]},
        headers=s.admin,
    )
    assert r.status_code == 200, r.text
    failure = {"kind": "logon-failed", "message": "bad password"}
    assert _report(
        s, A, INSTANCE_A, account_id=account["id"], secret_version=1, auth_failure=failure
    )


def test_object_state_follows_role_scopes(seeded: Served) -> None:
    c = seeded.client
    assert _report(seeded, A, INSTANCE_A) == 1
    assert _report(seeded, "d.contoso.com", INSTANCE_D) == 1
    shown = c.get(f"/api/v1/objects/{INSTANCE_A}/state", headers=seeded.admin)
    assert shown.status_code == 200, shown.text
    (wf,) = shown.json()["workflows"]
    assert (wf["workflow"], wf["state"], wf["perf"], wf["agent"]) == (
        MONITOR,
        "warning",
        {"ms": 512.0},
        A,
    )
    scoped = _scoped_operator(seeded)
    assert c.get(f"/api/v1/objects/{INSTANCE_A}/state", headers=scoped).status_code == 200
    hidden = c.get(f"/api/v1/objects/{INSTANCE_D}/state", headers=scoped)
    missing = c.get("/api/v1/objects/Contoso.SQL.Instance:z.contoso.com;X/state", headers=scoped)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"] == f"no object named {INSTANCE_D!r}"
    # the object route itself still answers for the object
    assert c.get(f"/api/v1/objects/{INSTANCE_A}", headers=scoped).json()["full_name"] == (
        INSTANCE_A
    )


def test_run_as_health_alerts_need_runas_read(seeded: Served) -> None:
    _logon_failed(seeded)
    c = seeded.client
    for who, sees in (
        (Role.ADMINISTRATOR.value, 1),
        (Role.READ_ONLY_ADMINISTRATOR.value, 1),
        (Role.OPERATOR.value, 0),
        (Role.READ_ONLY_OPERATOR.value, 0),
    ):
        listed = c.get("/api/v1/alerts", headers=seeded.as_user(who))
        assert listed.status_code == 200, listed.text
        assert len(listed.json()) == sees, who
    (alert,) = c.get("/api/v1/alerts", headers=seeded.admin).json()
    assert (alert["source"], alert["account"], alert["state"]) == (
        "runas-health",
        ACCOUNT,
        "logon-failed",
    )
    health = c.get(f"/api/v1/computers/{A}/health", headers=seeded.admin)
    assert health.status_code == 200
    (pair,) = health.json()
    assert (pair["account"], pair["state"], pair["last_report"]) == (
        ACCOUNT,
        "logon-failed",
        "logon-failed",
    )
    gone = c.get("/api/v1/computers/nowhere.contoso.com/health", headers=seeded.admin)
    assert gone.status_code == 404


def test_monitor_alerts_follow_role_scopes(seeded: Served) -> None:
    with seeded.runtime.unit_of_work() as uow:
        for obj, computer in ((INSTANCE_A, A), (INSTANCE_D, "d.contoso.com")):
            uow.session.add(
                AlertRow(
                    key=f"monitor:{obj}",
                    source="monitor",
                    computer=computer,
                    object_name=obj,
                    state="critical",
                    severity="critical",
                    message="down",
                    opened_at=AT,
                    updated_at=AT,
                )
            )
    c = seeded.client
    everyone = c.get("/api/v1/alerts", headers=seeded.as_user(Role.READ_ONLY_OPERATOR.value))
    assert {a["object"] for a in everyone.json()} == {INSTANCE_A, INSTANCE_D}
    scoped = c.get("/api/v1/alerts", headers=_scoped_operator(seeded))
    assert [a["object"] for a in scoped.json()] == [INSTANCE_A]
    only_d = c.get(
        "/api/v1/alerts", params={"computer": "d.contoso.com"}, headers=seeded.admin
    ).json()
    assert [a["object"] for a in only_d] == [INSTANCE_D]
