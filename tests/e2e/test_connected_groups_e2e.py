"""The seed's MG1/MG2 example (domain.md §7, seeds "Disable run as accounts") on real processes,
both ways: two ``runas server`` processes, each with its own database and one real agent,
connected to each other. MG1 has Tasks Execution enabled, MG2 disabled.

* From MG1, a non-administrator operator runs a task on a target in MG1 and on one in MG2
  without credentials: both run (MG1's setting applies, whoever owns the target).
* From MG2, a non-administrator must give credentials even for a target in MG1: refused without,
  with the message; with them it runs, and the agent proves by a SHA-256 that it received them.
* A canary password is absent from every log, audit record and database row afterwards.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from support.fleet import Agent, Group, Server, run_cli, start_agent, start_server, wait_for
from support.forkcli import Done

pytestmark = [pytest.mark.server, pytest.mark.agents, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PROFILE = "Contoso.SQL.MonitoringProfile"
TASK = "Contoso.SQL.Task.CheckCredential"
#: each group's one agent runs one computer of the example discovery
COMPUTER = {"MG1": "a.contoso.com", "MG2": "b.contoso.com"}
OTHER = {"MG1": "MG2", "MG2": "MG1"}
USER_PASSWORD = "operator-" + secrets.token_urlsafe(8)


def instance(computer: str) -> str:
    return f"Contoso.SQL.Instance:{computer};MSSQLSERVER"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Mg:
    name: str
    group: Group
    server: Server
    agent: Agent
    operator: str
    token: str
    account_password: str
    link_password: str

    def remote(self, *args: str, stdin: str | None = None) -> Done | CompletedProcess[str]:
        """The CLI of a user of this group, against its server (as from a workstation)."""
        env = {**self.group.env(), "RUNAS_SERVER": self.server.url, "RUNAS_TOKEN": self.token}
        return run_cli(args, env=env, stdin=stdin, timeout=180)


def _prepare(root: Path, name: str) -> tuple[Group, str]:
    g = Group(root / name)
    g.run("init", "--name", name)
    g.run("pack", "import", str(EXAMPLES / "packs" / "contoso-sql.yaml"))
    g.run("pack", "import", str(EXAMPLES / "packs" / "contoso-sql-agent.yaml"))
    g.run("discovery", "submit", str(EXAMPLES / "discovery" / "contoso-sql.yaml"))
    # The task's profile resolves to this account on this group's computer.
    password = f"canary-{name}-account-{secrets.token_urlsafe(12)}"
    g.run("account", "add", f"{name} SQL", "--type", "windows", "--domain", "contoso.com",
          "--user", f"sql-{name.lower()}", "--stdin", stdin=password + "\n")  # fmt: skip
    g.run("profile", "associate", PROFILE, f"{name} SQL")
    g.run("distribution", "set", f"{name} SQL", "--more-secure", "--computer", COMPUTER[name])
    return g, password


def _token(g: Group, user: str) -> str:
    created = json.loads(g.run("token", "create", "e2e", "--user", user, "--json"))
    return str(created["token"])


@pytest.fixture
def groups(tmp_path: Path) -> Iterator[dict[str, Mg]]:
    prepared = {n: _prepare(tmp_path, n) for n in ("MG1", "MG2")}
    links = {n: f"canary-link-{n}-{secrets.token_urlsafe(12)}" for n in ("MG1", "MG2")}
    started: list[Server | Agent] = []
    out: dict[str, Mg] = {}
    try:
        for name, (g, account_password) in prepared.items():
            operator = f"op-{name.lower()}"
            g.run("user", "add", operator, "--role", "operator", "--password-stdin",
                  stdin=USER_PASSWORD + "\n")  # fmt: skip
            # The administrator the OTHER group's connection logs in as.
            g.run("user", "add", f"link-from-{OTHER[name].lower()}", "--role", "administrator",
                  "--password-stdin", stdin=links[OTHER[name]] + "\n")  # fmt: skip
            server = start_server(g, env={"RUNAS_COMPUTER_NAME": f"ms.{name.lower()}.test"})
            started.append(server)
            agent = start_agent(g, COMPUTER[name], [server.agent_url])
            started.append(agent)
            out[name] = Mg(name, g, server, agent, operator, _token(g, operator),
                           account_password, links[name])  # fmt: skip
        for name, mg in out.items():
            wait_for(f"{name}'s agent to enrol",
                     lambda mg=mg: COMPUTER[mg.name] in mg.group.run("agent", "list"))  # fmt: skip
            mg.group.run("agent", "approve", COMPUTER[name])
        out["MG2"].group.run("settings", "set", "tasks-execution", "disabled")
        # Connected both ways, each with a basic account that is an administrator there.
        for name, mg in out.items():
            other = out[OTHER[name]]
            mg.group.run("account", "add", f"link to {other.name}", "--type", "basic",
                         "--user", f"link-from-{name.lower()}", "--stdin",
                         stdin=mg.link_password + "\n")  # fmt: skip
            mg.group.run("mg", "connect", other.name, "--server", other.server.url,
                         "--account", f"link to {other.name}")  # fmt: skip
        yield out
    finally:
        for p in reversed(started):
            p.stop()


def _run_id(result: Done | CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[0].removeprefix("task run ").strip()


def _succeeded(mg: Mg, run_id: str, via: str | None) -> dict[str, Any]:
    args = ["task", "output", run_id, "--json", *(["--mg", via] if via else [])]

    def done() -> dict[str, Any] | None:
        r = mg.remote(*args)
        if r.returncode != 0:
            return None
        doc: dict[str, Any] = json.loads(r.stdout)
        finals = {"succeeded", "failed", "timed-out", "refused"}
        return doc if all(t["status"] in finals for t in doc["targets"]) else None

    doc = wait_for(f"task run {run_id} to end", done, timeout=60)
    assert [t["status"] for t in doc["targets"]] == ["succeeded"], doc
    return doc


def test_the_seeds_mg1_mg2_example_both_ways(groups: dict[str, Mg]) -> None:
    mg1, mg2 = groups["MG1"], groups["MG2"]
    a, b = instance(COMPUTER["MG1"]), instance(COMPUTER["MG2"])

    # From MG1 (enabled): a non-administrator, no credentials, targets in MG1 and in MG2.
    local = _succeeded(mg1, _run_id(mg1.remote("task", "start", TASK, "--target", a)), None)
    assert f"sha256 {sha256(mg1.account_password)}" in local["targets"][0]["output"]
    forwarded = mg1.remote("task", "start", TASK, "--target", b, "--mg", "MG2")
    there = _succeeded(mg1, _run_id(forwarded), "MG2")
    # It ran in MG2 with MG2's predefined account, recorded there on the operator's behalf.
    assert f"sha256 {sha256(mg2.account_password)}" in there["targets"][0]["output"]
    audit2 = mg2.group.run("audit", "list", "--action", "task:start", "--json")
    assert f"MG1:{mg1.operator}" in audit2

    # From MG2 (disabled): even for a target in MG1, no credentials -> refused, with the reason.
    refused = mg2.remote("task", "start", TASK, "--target", a, "--mg", "MG1")
    assert refused.returncode == 1
    assert "Tasks Execution is disabled in management group MG2" in refused.stderr
    # Locally too.
    assert mg2.remote("task", "start", TASK, "--target", b).returncode == 1
    # With credentials it runs in MG1, and MG1's agent proves it received them.
    canary = f"canary-typed-{secrets.token_urlsafe(16)}"
    typed = mg2.remote("task", "start", TASK, "--target", a, "--mg", "MG1",
                       "--user", "ops", "--domain", "contoso.com", "--password-stdin",
                       stdin=canary + "\n")  # fmt: skip
    proof = _succeeded(mg2, _run_id(typed), "MG1")
    out = proof["targets"][0]["output"]
    assert f"(password sha256 {sha256(canary)})" in out
    assert proof["credential_mode"] == "supplied"

    # Alerts of both groups from either side, each marked with its group.
    merged = json.loads(mg1.group.run("alert", "list", "--connected", "--json"))
    assert merged["unreachable"] == []

    # No trace of any secret: logs, audit trails, database files of both groups.
    for mg in (mg1, mg2):
        mg.server.stop()
        mg.agent.stop()
    secrets_ = [canary, mg1.link_password, mg2.link_password]
    for mg in (mg1, mg2):
        audit_all = mg.group.run("audit", "list", "--limit", "100000", "--json")
        for s in secrets_:
            assert s not in audit_all
        for path in mg.group.root.rglob("*"):
            if path.is_file() and path.suffix not in (".pem", ".key"):
                data = path.read_bytes()
                assert canary.encode() not in data, path
                # The link passwords are encrypted in the database and typed on stdin only.
                assert mg1.link_password.encode() not in data, path
                assert mg2.link_password.encode() not in data, path
