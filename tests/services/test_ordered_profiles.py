"""Ordered profiles (the site-account catalogue's "accounts tried in turn"): each account has
one position, and accounts tied at the top rank are an order, not a conflict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.cli import Cli

#: the same tests, in-process and as the client of a real server
pytestmark = pytest.mark.cli_modes("local", "remote")

PACK = """\
pack: {id: Push, version: 1.0.0, display_name: Client push}
classes:
  - {id: Push.Target, base: System.Entity, host: System.Computer, key_properties: [name]}
profiles:
  - {id: Push.Accounts, display_name: Client push installation accounts, ordered: true,
     max_accounts: 3, allowed_account_types: [windows]}
workflows:
  - {id: Push.Install, kind: task, display_name: Push the client, target: Push.Target,
     profile: Push.Accounts, probe: {type: command, config: {program: push}}}
"""
DISCOVERY = """\
source: test
objects:
  - {class: System.Computer, key: {name: p1.corp.test}}
  - {class: Push.Target, host: "System.Computer:p1.corp.test", key: {name: t}}
"""
TARGET = "Push.Target:p1.corp.test;t"


def _setup(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "push.yaml").write_text(PACK)
    (tmp_path / "discovery.yaml").write_text(DISCOVERY)
    cli.ok("pack", "import", str(tmp_path / "push.yaml"))
    cli.ok("discovery", "submit", str(tmp_path / "discovery.yaml"))
    for name in ("push-b", "push-a", "push-c", "push-d"):
        cli.ok(
            "account",
            "add",
            name,
            "--type",
            "windows",
            "--domain",
            "corp.test",
            "--user",
            name,
            "--stdin",
            stdin="secret-value\n",
        )
        cli.ok("distribution", "set", name, "--more-secure", "--computer", "p1.corp.test")


def test_first_in_turn_wins_and_the_others_follow(cli: Cli, tmp_path: Path) -> None:
    _setup(cli, tmp_path)
    cli.ok("profile", "associate", "Push.Accounts", "push-b", "--position", "2")
    cli.ok("profile", "associate", "Push.Accounts", "push-a", "--position", "1")
    cli.ok("profile", "associate", "Push.Accounts", "push-c")  # next free: 3

    doc = json.loads(
        cli.ok("explain", "--workflow", "Push.Install", "--object", TARGET, "--json").out
    )
    assert doc["outcome"] == "account"
    assert doc["account"]["name"] == "push-a"
    statuses = {c["account"]: (c["status"], c["reason"]) for c in doc["candidates"]}
    assert statuses["push-a"][0] == "winner"
    assert statuses["push-b"][0] == "tied"
    assert "tried in turn" in statuses["push-b"][1]
    positions = {
        a["account"]: a["position"]
        for a in json.loads(cli.ok("profile", "show", "Push.Accounts", "--json").out)[
            "associations"
        ]
    }
    assert positions == {"push-a": 1, "push-b": 2, "push-c": 3}


def test_positions_are_one_per_account_and_unique(cli: Cli, tmp_path: Path) -> None:
    _setup(cli, tmp_path)
    cli.ok("profile", "associate", "Push.Accounts", "push-a", "--position", "1")
    err = cli.fails("profile", "associate", "Push.Accounts", "push-b", "--position", "1")
    assert "position 1 in Push.Accounts is taken by 'push-a'" in err
    err = cli.fails(
        "profile",
        "associate",
        "Push.Accounts",
        "push-a",
        "--class",
        "Push.Target",
        "--position",
        "2",
    )
    assert "keeps one position" in err
    # The same account for another target keeps its place in the order.
    cli.ok("profile", "associate", "Push.Accounts", "push-a", "--class", "Push.Target")
    cli.ok("profile", "associate", "Push.Accounts", "push-b")
    cli.ok("profile", "associate", "Push.Accounts", "push-c")
    err = cli.fails("profile", "associate", "Push.Accounts", "push-d")
    assert "at most 3 account(s)" in err


def test_position_is_refused_on_an_unordered_profile(cli: Cli, tmp_path: Path) -> None:
    _setup(cli, tmp_path)
    cli.ok("profile", "add", "Corp.Plain", "--display-name", "Plain")
    err = cli.fails("profile", "associate", "Corp.Plain", "push-a", "--position", "1")
    assert "not ordered" in err
