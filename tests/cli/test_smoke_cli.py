"""The seeds' example through the CLI, end to end (domain.md §12 example 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.cli import Cli

#: the same tests, in-process and as the client of a real server
pytestmark = pytest.mark.cli_modes("local", "remote")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INSTANCE = "Contoso.SQL.Instance:{}.contoso.com;MSSQLSERVER"
PROFILE = "Contoso.SQL.MonitoringProfile"


def test_seeds_example_resolves_each_computer_to_its_account(cli: Cli) -> None:
    cli.ok("pack", "import", str(EXAMPLES / "packs" / "contoso-sql.yaml"))
    cli.ok("discovery", "submit", str(EXAMPLES / "discovery" / "contoso-sql.yaml"))
    for n in (1, 2, 3):
        cli.ok(
            "account",
            "add",
            f"SQL account {n}",
            "--type",
            "windows",
            "--domain",
            "contoso.com",
            "--user",
            f"sqlmon{n}",
            "--stdin",
            stdin=f"pw-{n}\n",
        )
    cli.ok("profile", "associate", PROFILE, "SQL account 1", "--object", INSTANCE.format("a"))
    cli.ok(
        "profile",
        "associate",
        PROFILE,
        "SQL account 2",
        "--group",
        "Contoso.SQL.ProductionInstances",
    )
    cli.ok("profile", "associate", PROFILE, "SQL account 3")
    cli.ok("distribution", "set", "SQL account 1", "--more-secure", "--computer", "a.contoso.com")
    cli.ok(
        "distribution",
        "set",
        "SQL account 2",
        "--more-secure",
        "--computer",
        "b.contoso.com",
        "--computer",
        "c.contoso.com",
    )
    cli.ok("distribution", "set", "SQL account 3", "--more-secure", "--computer", "d.contoso.com")

    expected = {
        "a": "SQL account 1",
        "b": "SQL account 2",
        "c": "SQL account 2",
        "d": "SQL account 3",
    }
    for workflow in (
        "Contoso.SQL.DatabaseDiscovery",
        "Contoso.SQL.CollectConnections",
        "Contoso.SQL.InstanceAvailability",
    ):
        for computer, account in expected.items():
            out = cli.ok(
                "explain", "--workflow", workflow, "--object", INSTANCE.format(computer), "--json"
            ).out
            doc = json.loads(out)
            assert doc["outcome"] == "account"
            assert doc["account"]["name"] == account
            assert doc["computer"] == f"{computer}.contoso.com"
            assert doc["distributed"] is True
