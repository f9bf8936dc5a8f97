"""``runas state show``, ``runas alert list`` and ``runas health show``, in-process and as the
client of a real server, on state an agent reported (``monitoring.record_report``)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runas.runtime import Runtime
from runas.services import monitoring
from runas.services.monitoring import AgentReport
from runas.settings import Settings
from support.cli import Cli

pytestmark = pytest.mark.cli_modes("local", "remote")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROFILE = "Contoso.SQL.MonitoringProfile"
A = "a.contoso.com"
INSTANCE_A = f"Contoso.SQL.Instance:{A};MSSQLSERVER"
MONITOR = "Contoso.SQL.InstanceAvailability"
AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def record(cli: Cli, agent: str, results: list[dict[str, Any]]) -> int:
    """What the agent API does with a report, on the CLI's own management group."""
    runtime = Runtime(
        Settings(data_dir=cli.data_dir, database_url=cli.db_url, actor=f"agent:{agent}"), env={}
    )
    try:
        report = AgentReport.model_validate(
            {"report_id": str(uuid.uuid4()), "epoch": 1, "results": results}
        )
        with runtime.unit_of_work() as uow:
            return monitoring.record_report(uow, agent, report)
    finally:
        runtime.close()


def result(**fields: Any) -> dict[str, Any]:
    return {
        "workflow": MONITOR,
        "object": INSTANCE_A,
        "started_at": AT.isoformat(),
        "duration_s": 0.25,
        "state": "critical",
        "message": "instance down",
        "exit_code": 2,
        "perf": {"connections": 0},
        **fields,
    }


@pytest.fixture
def reported(cli: Cli) -> Cli:
    cli.ok("pack", "import", str(EXAMPLES / "packs" / "contoso-sql.yaml"))
    cli.ok("discovery", "submit", str(EXAMPLES / "discovery" / "contoso-sql.yaml"))
    cli.ok("account", "add", "sql-a", "--type", "windows", "--domain", "contoso.com",
           "--user", "sqlmon", "--stdin", stdin="pw")  # fmt: skip
    cli.ok("profile", "associate", PROFILE, "sql-a", "--object", INSTANCE_A)
    cli.ok("distribution", "set", "sql-a", "--more-secure", "--computer", A)
    account_id = json.loads(cli.ok("account", "show", "sql-a", "--json").out)["id"]
    failure = {"kind": "logon-failed", "message": "login failed for user 'sqlmon'"}
    assert record(cli, A, [result(account_id=account_id, secret_version=1, auth_failure=failure)])
    return cli


def test_state_show(reported: Cli) -> None:
    out = reported.ok("state", "show", INSTANCE_A).out
    assert f"Object    {INSTANCE_A}" in out
    line = next(x for x in out.splitlines() if x.startswith(MONITOR))
    for part in ("monitor", "critical", "2025-06-01 12:00:00", "sql-a", "instance down",
                 "connections=0"):  # fmt: skip
        assert part in line
    doc = json.loads(reported.ok("state", "show", INSTANCE_A, "--json").out)
    (wf,) = doc["workflows"]
    assert (doc["computer"], wf["state"], wf["account"], wf["exit_code"]) == (
        A,
        "critical",
        "sql-a",
        2,
    )
    assert reported.fails("state", "show", f"Contoso.SQL.Instance:{A};NOPE") == (
        f"no object named 'Contoso.SQL.Instance:{A};NOPE'"
    )


def test_alert_list(reported: Cli) -> None:
    out = reported.ok("alert", "list").out
    line = next(x for x in out.splitlines() if "logon-failed" in x)
    for part in ("critical", A, "sql-a"):
        assert part in line
    (alert,) = json.loads(reported.ok("alert", "list", "--json").out)
    assert (alert["source"], alert["state"], alert["closed_at"]) == (
        "runas-health",
        "logon-failed",
        None,
    )
    assert reported.ok("alert", "list", "--computer", "b.contoso.com").out.strip() == "(none)"

    # a good logon with the same secret version closes it
    account_id = json.loads(reported.ok("account", "show", "sql-a", "--json").out)["id"]
    later = datetime(2025, 6, 1, 12, 5, tzinfo=UTC).isoformat()
    record(reported, A, [result(account_id=account_id, secret_version=1, started_at=later,
                                state="healthy", exit_code=0)])  # fmt: skip
    assert reported.ok("alert", "list").out.strip() == "(none)"
    (closed,) = json.loads(reported.ok("alert", "list", "--all", "--json").out)
    assert closed["closed_at"] is not None
    assert "Closed (UTC)" in reported.ok("alert", "list", "--all").out


def test_health_show(reported: Cli) -> None:
    out = reported.ok("health", "show", A).out
    line = next(x for x in out.splitlines() if x.startswith("sql-a"))
    for part in ("logon-failed", "could not log on", "(secret version 1)"):
        assert part in line
    (pair,) = json.loads(reported.ok("health", "show", A, "--json").out)
    assert (pair["state"], pair["severity"], pair["last_report"]) == (
        "logon-failed",
        "critical",
        "logon-failed",
    )
    assert reported.ok("health", "show", "b.contoso.com").out.strip() == "(none)"
    assert reported.fails("health", "show", "nowhere") == (
        "no computer named 'nowhere' (computers appear through discovery)"
    )
