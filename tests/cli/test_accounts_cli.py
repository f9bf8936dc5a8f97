"""``runas account …`` and ``runas distribution …`` happy paths (domain.md §3, §4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from support.cli import Cli

#: the same tests, in-process and as the client of a real server
pytestmark = pytest.mark.cli_modes("local", "remote")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROFILE = "Contoso.SQL.MonitoringProfile"
PASSWORD = "Tr0ub4dor&3-not-shown"


def show(cli: Cli, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(cli.ok("account", "show", name, "--json").out)
    return doc


def listed(cli: Cli, *args: str) -> dict[str, dict[str, Any]]:
    rows = json.loads(cli.ok("account", "list", "--json", *args).out)
    return {r["name"]: r for r in rows}


def add_windows(cli: Cli, name: str = "sql-mon", password: str = PASSWORD) -> None:
    cli.ok("account", "add", name, "--type", "windows", "--domain", "corp.contoso.com",
           "--user", "sqlmon", "--description", "SQL monitoring", "--stdin",
           stdin=password + "\n")  # fmt: skip


def test_add_list_show(cli: Cli) -> None:
    out = cli.ok("account", "add", "sql-mon", "--type", "windows", "--domain", "corp.contoso.com",
                 "--user", "sqlmon", "--description", "SQL monitoring", "--stdin",
                 stdin=PASSWORD + "\n").out  # fmt: skip
    assert "created windows account 'sql-mon'" in out
    assert "secret version 1" in out
    cli.ok("account", "add", "web", "--type", "basic", "--user", "w", "--stdin", stdin="pw")

    rows = listed(cli)
    assert set(rows) == {"sql-mon", "web"}
    assert rows["sql-mon"]["identity"] == "corp.contoso.com\\sqlmon"
    assert rows["sql-mon"]["secret_version"] == 1
    assert set(listed(cli, "--type", "basic")) == {"web"}
    table = cli.ok("account", "list").out
    assert "sql-mon" in table
    assert "corp.contoso.com\\sqlmon" in table

    doc = show(cli, "sql-mon")
    assert doc["type"] == "windows"
    assert doc["fields"] == {"domain": "corp.contoso.com", "user": "sqlmon"}
    assert doc["description"] == "SQL monitoring"
    assert doc["created_by"] == doc["modified_by"] == cli.actor
    assert [(v["version"], v["current"]) for v in doc["versions"]] == [(1, True)]
    assert show(cli, str(doc["id"]))["name"] == "sql-mon"  # by id too

    text = cli.ok("account", "show", "sql-mon").out
    assert "write-only, never shown" in text
    assert "corp.contoso.com\\sqlmon" in text
    # the secret is nowhere: not in any output, not as a field of the JSON view
    assert PASSWORD not in "".join(cli.outputs)
    assert "password" not in doc["fields"]
    assert "password" not in json.dumps(doc)


def test_update_makes_a_new_secret_version_and_changes_fields(cli: Cli) -> None:
    add_windows(cli)
    created = show(cli, "sql-mon")
    out = cli.ok("account", "update", "sql-mon", "--new-secret", "--stdin", stdin="new-pw").out
    assert "new secret version 2" in out
    doc = show(cli, "sql-mon")
    assert doc["secret_version"] == 2
    assert [(v["version"], v["current"]) for v in doc["versions"]] == [(1, False), (2, True)]
    assert "2" in cli.ok("account", "show", "sql-mon").out.split("Version")[-1]

    # public fields alone: no new version
    cli.ok("account", "update", "sql-mon", "--user", "sqlmon2", "--description", "renewed")
    doc = show(cli, "sql-mon")
    assert doc["secret_version"] == 2
    assert doc["identity"] == "corp.contoso.com\\sqlmon2"
    assert doc["description"] == "renewed"
    assert doc["created_at"] == created["created_at"]
    assert doc["modified_at"] >= created["modified_at"]


def test_rename_keeps_the_account(cli: Cli) -> None:
    add_windows(cli)
    before = show(cli, "sql-mon")
    cli.ok("account", "update", "sql-mon", "--rename", "sql-monitoring")
    after = show(cli, "sql-monitoring")
    assert after["id"] == before["id"]
    assert after["versions"] == before["versions"]
    assert "sql-mon" not in listed(cli)
    assert "'sql-mon'" in cli.fails("account", "show", "sql-mon")


def test_expiry_is_set_shown_and_cleared(cli: Cli) -> None:
    add_windows(cli)
    assert show(cli, "sql-mon")["expires_at"] is None
    cli.ok("account", "update", "sql-mon", "--expires", "2030-01-31")
    assert show(cli, "sql-mon")["expires_at"].startswith("2030-01-31")
    assert "2030-01-31" in cli.ok("account", "show", "sql-mon").out
    assert listed(cli)["sql-mon"]["expires_at"].startswith("2030-01-31")
    cli.ok("account", "update", "sql-mon", "--no-expiry")
    assert show(cli, "sql-mon")["expires_at"] is None
    cli.ok("account", "add", "temp", "--type", "simple", "--user", "t", "--expires", "2031-06-30",
           "--stdin", stdin="pw")  # fmt: skip
    assert show(cli, "temp")["expires_at"].startswith("2031-06-30")


def test_remove_is_refused_while_associated_then_works(cli: Cli) -> None:
    cli.ok("pack", "import", str(EXAMPLES / "packs" / "contoso-sql.yaml"))
    add_windows(cli)
    cli.ok("account", "update", "sql-mon", "--new-secret", "--stdin", stdin="second")
    cli.ok("profile", "associate", PROFILE, "sql-mon")
    [assoc] = show(cli, "sql-mon")["associations"]
    assert assoc["profile"] == PROFILE
    assert assoc["target_kind"] == "all"

    assert PROFILE in cli.fails("account", "remove", "sql-mon")
    assert "sql-mon" in listed(cli)

    cli.ok("profile", "dissociate", PROFILE, "sql-mon")
    assert show(cli, "sql-mon")["associations"] == []
    out = cli.ok("account", "remove", "sql-mon").out
    assert "removed account 'sql-mon'" in out
    assert listed(cli) == {}
    # every version of its secret went with it
    [key] = json.loads(cli.ok("key", "list", "--json").out)
    assert key["secret_versions"] == 0
    # the name is free again
    add_windows(cli)
    assert show(cli, "sql-mon")["secret_version"] == 1


def test_distribution_defaults_to_more_secure_and_empty(cli: Cli) -> None:
    cli.ok("pack", "import", str(EXAMPLES / "packs" / "contoso-sql.yaml"))
    cli.ok("discovery", "submit", str(EXAMPLES / "discovery" / "contoso-sql.yaml"))
    add_windows(cli)
    dist = json.loads(cli.ok("distribution", "get", "sql-mon", "--json").out)
    assert dist["mode"] == "more-secure"
    assert dist["computers"] == []
    assert show(cli, "sql-mon")["distribution"] == "more-secure"
    assert "no computer approved" in cli.ok("distribution", "get", "sql-mon").out

    cli.ok("distribution", "set", "sql-mon", "--more-secure", "--computer", "a.contoso.com",
           "--computer", "b.contoso.com")  # fmt: skip
    cli.ok("distribution", "set", "sql-mon", "--more-secure", "--add", "c.contoso.com",
           "--remove", "a.contoso.com")  # fmt: skip
    assert show(cli, "sql-mon")["computers"] == ["b.contoso.com", "c.contoso.com"]
    assert listed(cli)["sql-mon"]["distributed_to"] == 2

    cli.ok("distribution", "set", "sql-mon", "--less-secure")
    assert show(cli, "sql-mon")["distribution"] == "less-secure"
    assert "every computer" in cli.ok("distribution", "get", "sql-mon").out
    cli.ok("distribution", "set", "sql-mon", "--more-secure")
    assert show(cli, "sql-mon")["distribution"] == "more-secure"


def test_action_accounts_are_always_more_secure(cli: Cli) -> None:
    cli.ok("pack", "import", str(EXAMPLES / "packs" / "contoso-sql.yaml"))
    cli.ok("discovery", "submit", str(EXAMPLES / "discovery" / "contoso-sql.yaml"))
    cli.ok("account", "add", "agent", "--type", "action", "--user", "svc", "--stdin", stdin="pw")
    assert "action" in cli.fails("distribution", "set", "agent", "--less-secure")
    assert show(cli, "agent")["distribution"] == "more-secure"
    cli.ok("distribution", "set", "agent", "--more-secure", "--computer", "a.contoso.com")
    assert show(cli, "agent")["computers"] == ["a.contoso.com"]
