"""``runas user|role|token`` in local mode (the server host), as an administrator types them."""

from __future__ import annotations

import json
from pathlib import Path

from support.cli import Cli
from support.db import every_row

GOOD = "correct horse battery staple\n"
PACK = """\
pack: {id: Ops, version: 1.0.0, display_name: Operations}
classes:
  - {id: Ops.Service, base: System.Entity, host: System.Computer, key_properties: [name]}
groups:
  - id: Ops.WebServers
    rules:
      - class: Ops.Service
profiles:
  - {id: Ops.Accounts, display_name: Operations accounts}
workflows:
  - {id: Ops.Restart, kind: task, display_name: Restart the service, target: Ops.Service,
     profile: Ops.Accounts, probe: {type: command, config: {program: restart}}}
"""


def test_the_first_administrator_is_made_on_the_server_host(cli: Cli) -> None:
    assert cli.ok("user", "list").out.strip() == "(none)"
    out = cli.ok(
        "user",
        "add",
        "alice",
        "--display-name",
        "Alice Admin",
        "--role",
        "administrator",
        "--password-stdin",
        stdin=GOOD,
    ).out
    assert out.strip() == "created user 'alice' (roles: administrator)"
    listed = json.loads(cli.ok("user", "list", "--json").out)
    assert [(u["name"], u["roles"][0]["role"], u["created_by"]) for u in listed] == [
        ("alice", "administrator", "test:admin")
    ]
    shown = cli.ok("user", "show", "alice").out
    assert "Display name  Alice Admin" in shown
    assert "Roles         administrator" in shown
    assert "password" not in json.dumps(json.loads(cli.ok("user", "show", "alice", "--json").out))


def test_roles_are_listed_with_their_permissions(cli: Cli) -> None:
    doc = {r["role"]: r for r in json.loads(cli.ok("role", "list", "--json").out)}
    assert list(doc) == [
        "read-only-operator",
        "operator",
        "advanced-operator",
        "author",
        "administrator",
        "read-only-administrator",
    ]
    assert "profiles:list" in doc["author"]["permissions"]
    assert "runas:read" not in doc["author"]["permissions"]
    assert "runas:write" not in doc["read-only-administrator"]["permissions"]
    assert doc["administrator"]["scoped"] is False
    table = cli.ok("role", "list").out
    assert "operator" in table
    assert "tasks:run" in table


def test_roles_are_assigned_with_scopes_and_revoked(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "ops.yaml").write_text(PACK)
    cli.ok("pack", "import", str(tmp_path / "ops.yaml"))
    cli.ok("user", "add", "bob", "--password-stdin", stdin=GOOD)
    out = cli.ok(
        "role",
        "assign",
        "bob",
        "operator",
        "--scope-group",
        "Ops.WebServers",
        "--scope-task",
        "Ops.Restart",
    ).out
    assert out.strip() == "'bob' holds operator (group Ops.WebServers, task Ops.Restart)"
    cli.ok("role", "assign", "bob", "author")
    roles = json.loads(cli.ok("user", "show", "bob", "--json").out)["roles"]
    assert roles == [
        {"role": "operator", "scope_groups": ["Ops.WebServers"], "scope_tasks": ["Ops.Restart"]},
        {"role": "author", "scope_groups": [], "scope_tasks": []},
    ]
    out = cli.ok("role", "revoke", "bob", "operator").out
    assert out.strip() == "revoked operator from 'bob' (roles now: author)"


def test_mistakes_are_one_line_errors(cli: Cli) -> None:
    cli.ok("user", "add", "alice", "--role", "administrator", "--password-stdin", stdin=GOOD)
    assert cli.fails("user", "add", "bob", "--password-stdin", stdin="short\n") == (
        "the password is too short: use at least 12 characters"
    )
    assert "never go on the command line" in cli.fails(
        "user", "add", "bob", "--password", "hunter2hunter2"
    )
    assert "use --password-stdin" in cli.fails("user", "add", "bob")  # no terminal to prompt on
    assert cli.fails("user", "add", "alice", "--password-stdin", stdin=GOOD) == (
        "a user named 'alice' already exists"
    )
    assert cli.fails("user", "show", "nobody") == "no user named 'nobody'"
    assert cli.fails("role", "assign", "alice", "boss").startswith("unknown role 'boss' (roles:")
    assert cli.fails("role", "assign", "alice", "operator", "--scope-group", "Nope") == (
        "no group 'Nope' (scope groups must exist)"
    )
    assert "last administrator" in cli.fails("user", "remove", "alice")
    assert "last administrator" in cli.fails("role", "revoke", "alice", "administrator")
    assert cli.fails("token", "create", "ci") == "name the user whose tokens these are (--user)"
    assert cli.fails("token", "revoke", "999") == "no token with id 999"


def test_personal_tokens_are_shown_once_listed_and_revoked(cli: Cli) -> None:
    cli.ok("user", "add", "carol", "--role", "operator", "--password-stdin", stdin=GOOD)
    made = cli.ok("token", "create", "ci-deploy", "--user", "carol", "--expires-in-days", "30")
    token = made.out.strip()
    assert token.startswith("runas_")
    assert "\n" not in token
    assert "created token 'ci-deploy'" in made.err
    assert "not shown again" in made.err
    listed = json.loads(cli.ok("token", "list", "--user", "carol", "--json").out)
    assert [(t["name"], t["kind"], t["revoked"]) for t in listed] == [
        ("ci-deploy", "personal", False)
    ]
    assert token not in json.dumps(listed)
    table = cli.ok("token", "list", "--user", "carol").out
    assert "ci-deploy" in table
    assert token not in table
    assert cli.ok("token", "revoke", str(listed[0]["id"])).out.strip() == (
        f"revoked token {listed[0]['id']}"
    )
    assert json.loads(cli.ok("token", "list", "--user", "carol", "--json").out)[0]["revoked"]


def test_a_password_is_set_and_a_user_removed(cli: Cli) -> None:
    cli.ok("user", "add", "alice", "--role", "administrator", "--password-stdin", stdin=GOOD)
    cli.ok("user", "add", "dave", "--password-stdin", stdin=GOOD)
    out = cli.ok("user", "passwd", "dave", "--password-stdin", stdin="another long passphrase\n")
    assert out.out.strip() == "password of 'dave' changed; their other sessions have ended"
    assert "cannot contain the user's name" in cli.fails(
        "user", "passwd", "dave", "--password-stdin", stdin="dave dave dave dave\n"
    )
    assert cli.ok("user", "remove", "dave").out.strip() == "removed user 'dave' and their tokens"
    assert [u["name"] for u in json.loads(cli.ok("user", "list", "--json").out)] == ["alice"]


def test_no_password_or_token_leaks_into_output_logs_or_database(cli: Cli) -> None:
    canary = "canary-Pa55word-5e81d2"
    second = "canary-Second-Pa55-9b77"
    cli.ok("user", "add", "erin", "--role", "administrator", "--password-stdin", stdin=canary)
    cli.ok("user", "passwd", "erin", "--password-stdin", stdin=second)
    cli.fails("user", "add", "frank", "--password-stdin", stdin=canary[:8])  # too short
    made = cli.ok("token", "create", "canary", "--user", "erin")
    token = made.out.strip()
    cli.ok("token", "list", "--user", "erin", "--json")
    cli.ok("user", "show", "erin", "--json")
    cli.ok("user", "list")
    outputs = "\n".join(cli.outputs).replace(made.out, "")  # the one place a token may appear
    log = (cli.data_dir / "runas.log").read_text()
    dump = repr(every_row(cli.db_url))
    for where in (outputs, log, dump):
        for secret in (canary, second, canary[:8], token):
            assert secret not in where


def test_a_user_is_disabled_and_enabled_again(cli: Cli) -> None:
    cli.ok("user", "add", "alice", "--role", "administrator", "--password-stdin", stdin=GOOD)
    cli.ok("user", "add", "gina", "--password-stdin", stdin=GOOD)
    assert "last administrator" in cli.fails("user", "disable", "alice")
    assert cli.ok("user", "disable", "gina").out.startswith("disabled user 'gina'")
    assert json.loads(cli.ok("user", "show", "gina", "--json").out)["disabled"] is True
    assert cli.ok("user", "enable", "gina").out.strip() == "enabled user 'gina'"
    assert json.loads(cli.ok("user", "show", "gina", "--json").out)["disabled"] is False
