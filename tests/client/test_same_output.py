"""Every read command prints exactly the same thing — text and JSON, stdout, stderr and exit
code — through a server as it does locally, on the same management group."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.cli import Cli, CliResult
from support.server import Remote

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROFILE = "Contoso.SQL.MonitoringProfile"
INSTANCE_A = "Contoso.SQL.Instance:a.contoso.com;MSSQLSERVER"
WORKFLOW = "Contoso.SQL.DatabaseDiscovery"

READS: list[tuple[str, ...]] = [
    ("account", "list"),
    ("account", "list", "--type", "windows"),
    ("account", "show", "sql 1"),
    ("account", "show", "odd/name;x:y"),
    ("account", "types"),
    ("distribution", "get", "sql 1"),
    ("distribution", "suggest", "odd/name;x:y"),
    ("pack", "list"),
    ("pack", "show", "Contoso.SQL"),
    ("pack", "show", "Contoso.SQL", "--yaml"),
    ("object", "list"),
    ("object", "list", "--class", "Contoso.SQL.Instance", "--limit", "2"),
    ("object", "show", INSTANCE_A),
    ("group", "list"),
    ("group", "show", "Contoso.SQL.ProductionInstances"),
    ("profile", "list"),
    ("profile", "show", PROFILE),
    ("explain", "--workflow", WORKFLOW, "--object", INSTANCE_A),
    ("explain", "--profile", PROFILE, "--object", INSTANCE_A),
    ("config", "show", "a.contoso.com"),
    ("key", "list"),
    ("user", "list"),
    ("user", "show", "admin"),
    ("role", "list"),
    ("audit", "list", "--action", "account"),
    ("audit", "verify"),
    # monitoring (the fixture records one agent report)
    ("state", "show", INSTANCE_A),
    ("alert", "list"),
    ("alert", "list", "--all"),
    ("health", "show", "a.contoso.com"),
]
#: each read command also with --json, where it has it
CASES = [args for read in READS for args in (read, (*read, "--json"))
         if not (args[-1] == "--json" and "--yaml" in args)]  # fmt: skip


@pytest.fixture
def populated(remote: Remote) -> Remote:
    cli = remote.cli
    cli.ok("pack", "import", str(EXAMPLES / "packs" / "contoso-sql.yaml"))
    cli.ok("discovery", "submit", str(EXAMPLES / "discovery" / "contoso-sql.yaml"))
    for name, user in (("sql 1", "sqlmon1"), ("odd/name;x:y", "odd")):
        cli.ok("account", "add", name, "--type", "windows", "--domain", "contoso.com",
               "--user", user, "--description", "d", "--stdin", stdin="pw")  # fmt: skip
    cli.ok("profile", "associate", PROFILE, "sql 1", "--object", INSTANCE_A)
    cli.ok("profile", "associate", PROFILE, "odd/name;x:y")
    cli.ok("distribution", "set", "sql 1", "--more-secure", "--computer", "a.contoso.com")
    _agent_reports(cli)
    return remote


def _agent_reports(cli: Cli) -> None:
    """One report from a.contoso.com's agent: a failed logon with 'sql 1' (an alert)."""
    from runas.runtime import Runtime
    from runas.services import monitoring
    from runas.settings import Settings

    runtime = Runtime(Settings(data_dir=cli.data_dir, database_url=cli.db_url), env={})
    result = {
        "workflow": "Contoso.SQL.InstanceAvailability", "object": INSTANCE_A,
        "started_at": "2025-06-01T12:00:00+00:00", "duration_s": 0.5, "state": "unknown",
        "message": "cannot log on", "perf": {"ms": 3}, "account_id": 1, "secret_version": 1,
        "auth_failure": {"kind": "logon-failed", "message": "login failed"},
    }  # fmt: skip
    report = monitoring.AgentReport.model_validate(
        {"report_id": "same-output", "epoch": 1, "results": [result]}
    )
    try:
        with runtime.unit_of_work() as uow:
            assert monitoring.record_report(uow, "a.contoso.com", report) == 1
    finally:
        runtime.close()


def local(remote: Remote, monkeypatch: pytest.MonkeyPatch, *args: str) -> CliResult:
    with monkeypatch.context() as m:
        m.delenv("RUNAS_SERVER")
        m.delenv("RUNAS_TOKEN")
        return remote.cli(*args)


def test_every_read_command_prints_the_same_through_the_server(
    populated: Remote, monkeypatch: pytest.MonkeyPatch, subtests: pytest.Subtests
) -> None:
    for args in CASES:
        with subtests.test(" ".join(args)):
            there = populated.cli(*args)
            here = local(populated, monkeypatch, *args)
            assert here.code == 0, here.err
            assert (there.code, there.out, there.err) == (here.code, here.out, here.err)
