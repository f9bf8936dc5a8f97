"""``runas task …`` and ``runas settings …``, in-process and as the client of a real server.

No agent runs here: targets wait ('pending') or are refused (no approved agent). What is
checked is the command line itself — how a run is asked for, how credentials are taken
(never from a flag), what is refused, and what is printed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runas.cli.commands import tasks as task_commands
from support.cli import Cli
from support.server import create_user, login_token

pytestmark = pytest.mark.cli_modes("local", "remote")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TASK = "Contoso.SQL.Task.CheckCredential"
INSTANCE_A = "Contoso.SQL.Instance:a.contoso.com;MSSQLSERVER"
GROUP = "Contoso.SQL.ProductionInstances"
CANARY = "canary-Pa55word-typed-for-a-task"
USER_PASSWORD = "correct horse battery staple"


@pytest.fixture
def content(cli: Cli) -> Cli:
    cli.ok("pack", "import", str(EXAMPLES / "packs" / "contoso-sql.yaml"))
    cli.ok("pack", "import", str(EXAMPLES / "packs" / "contoso-sql-agent.yaml"))
    cli.ok("discovery", "submit", str(EXAMPLES / "discovery" / "contoso-sql.yaml"))
    return cli


def run_id_of(out: str) -> str:
    return out.splitlines()[0].strip()


def test_task_list(content: Cli) -> None:
    out = content.ok("task", "list").out
    line = next(x for x in out.splitlines() if x.startswith(TASK))
    for part in ("Contoso.SQL.Instance", "Contoso.SQL.MonitoringProfile", "command", "60s",
                 "label=check*", "mode=safe"):  # fmt: skip
        assert part in line
    assert "mode=safe*" not in line
    (task,) = [t for t in json.loads(content.ok("task", "list", "--json").out) if t["id"] == TASK]
    assert task["profile"] == "Contoso.SQL.MonitoringProfile"
    targeted = json.loads(content.ok("task", "list", "--target", INSTANCE_A, "--json").out)
    assert TASK in [t["id"] for t in targeted]


def test_task_start_status_output_history(content: Cli) -> None:
    out = content.ok("task", "start", TASK, "--target", INSTANCE_A, "--override", "label=hi").out
    run_id = run_id_of(out)
    assert len(run_id) >= 32
    status = content.ok("task", "status", run_id).out
    for part in (f"Run               {run_id}", f"Task              {TASK}", "predefined",
                 "label=hi", INSTANCE_A):  # fmt: skip
        assert part in status
    doc = json.loads(content.ok("task", "status", run_id, "--json").out)
    assert doc["id"] == run_id
    assert doc["overrides"] == {"label": "hi"}
    # through a server: the logged-in user; locally, the service's name for the server host
    assert doc["requested_by"] in (content.actor, "local")
    (target,) = doc["targets"]
    assert target["object"] == INSTANCE_A
    assert target["computer"] == "a.contoso.com"
    out = content.ok("task", "output", run_id).out
    assert out.startswith(f"== {INSTANCE_A} (a.contoso.com): ")
    assert json.loads(content.ok("task", "output", run_id, "--json").out)["id"] == run_id
    history = content.ok("task", "history").out
    assert run_id in history
    assert TASK in history
    (run,) = json.loads(content.ok("task", "history", "--limit", "5", "--json").out)
    assert run["id"] == run_id
    assert content.fails("task", "status", "no-such-run").startswith("no task run")


def test_a_group_fans_out_to_its_members(content: Cli) -> None:
    doc = json.loads(content.ok("task", "start", TASK, "--target", GROUP, "--json").out)
    objects = [t["object"] for t in doc["targets"]]
    assert len(objects) >= 1
    assert all(o.startswith("Contoso.SQL.Instance:") for o in objects)


def test_overrides_are_checked(content: Cli) -> None:
    assert "mode" in content.fails(
        "task", "start", TASK, "--target", INSTANCE_A, "--override", "mode=fast"
    )
    assert "nope" in content.fails(
        "task", "start", TASK, "--target", INSTANCE_A, "--override", "nope=1"
    )
    assert (
        content.fails("task", "start", TASK, "--target", INSTANCE_A, "--override", "label")
        == "--override takes NAME=VALUE (got 'label')"
    )
    assert json.loads(content.ok("task", "history", "--json").out) == []


def test_a_password_is_never_a_flag(content: Cli) -> None:
    err = content.fails(
        "task", "start", TASK, "--target", INSTANCE_A, "--user", "alice", "--password", CANARY
    )
    assert "never go on the command line" in err
    assert CANARY not in err
    # no terminal to prompt on, and no --password-stdin
    assert "--password-stdin" in content.fails(
        "task", "start", TASK, "--target", INSTANCE_A, "--user", "alice"
    )
    assert "name the user" in content.fails(
        "task", "start", TASK, "--target", INSTANCE_A, "--password-stdin", stdin=CANARY
    )
    assert json.loads(content.ok("task", "history", "--json").out) == []


def test_supplied_credentials_from_stdin(content: Cli) -> None:
    out = content.ok(
        "task", "start", TASK, "--target", INSTANCE_A, "--user", "CONTOSO\\alice",
        "--password-stdin", stdin=CANARY + "\n",
    ).out  # fmt: skip
    run_id = run_id_of(out)
    doc = json.loads(content.ok("task", "status", run_id, "--json").out)
    assert doc["credential_mode"] == "supplied"
    assert "alice" in doc["supplied_user"]
    assert "supplied (" in content.ok("task", "status", run_id).out
    assert all(CANARY not in text for text in content.outputs)


def test_settings_get_and_set(content: Cli) -> None:
    assert content.ok("settings", "get", "tasks-execution").out.strip() == (
        "tasks-execution: enabled"
    )
    out = content.ok("settings", "set", "tasks-execution", "disabled").out
    assert out.startswith("tasks-execution: disabled")
    doc = json.loads(content.ok("settings", "get", "tasks-execution", "--json").out)
    assert doc == {"tasks_execution": "disabled"}
    # an administrator (local mode counts as one) may still use the predefined account
    content.ok("task", "start", TASK, "--target", INSTANCE_A)
    content.ok("settings", "set", "tasks-execution", "enabled")
    assert content.fails("settings", "set", "tasks-execution", "maybe") == (
        "tasks-execution is enabled or disabled, not 'maybe'"
    )
    assert content.fails("settings", "get", "colour").startswith("unknown setting 'colour'")


def test_wait_follows_the_run_until_every_target_is_final(
    content: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # b.contoso.com has no approved agent: its target is refused at once, so --wait ends
    monkeypatch.setattr(task_commands, "POLL_INTERVAL", 0.01)
    instance_b = "Contoso.SQL.Instance:b.contoso.com;MSSQLSERVER"
    result = content("task", "start", TASK, "--target", instance_b, "--wait")
    assert result.code == 1, result.out + result.err
    assert f"{instance_b} (b.contoso.com): refused" in result.out
    assert "did not succeed" in result.err


def test_non_administrators_are_refused_what_their_roles_do_not_allow(content: Cli) -> None:
    if content.server_url is None:
        pytest.skip("local mode is the server host's administrator")
    url = content.server_url
    admin_token = os.environ["RUNAS_TOKEN"]
    create_user(content, "reader", USER_PASSWORD, ["read-only-operator"])
    create_user(content, "oscar", USER_PASSWORD, ["operator"])
    content.remote(url, login_token(url, "reader", USER_PASSWORD), actor="reader")
    assert TASK in content.ok("task", "list").out
    err = content.fails("task", "start", TASK, "--target", INSTANCE_A)
    assert "tasks:run" in err
    assert "enabled" in content.ok("settings", "get", "tasks-execution").out
    assert "settings:write" in content.fails("settings", "set", "tasks-execution", "disabled")

    # an operator must bring credentials while Tasks Execution is disabled
    content.remote(url, admin_token, actor="admin")
    content.ok("settings", "set", "tasks-execution", "disabled")
    content.remote(url, login_token(url, "oscar", USER_PASSWORD), actor="oscar")
    err = content.fails("task", "start", TASK, "--target", INSTANCE_A)
    assert "Tasks Execution is disabled" in err
    assert "--user" in err
    out = content.ok(
        "task", "start", TASK, "--target", INSTANCE_A, "--user", "oscar-admin",
        "--password-stdin", stdin=CANARY,
    ).out  # fmt: skip
    run_id = run_id_of(out)
    assert "supplied (oscar-admin)" in content.ok("task", "status", run_id).out
    assert all(CANARY not in text for text in content.outputs)
