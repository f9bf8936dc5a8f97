"""The ``ssh`` probe end to end on real processes: a ``runas server``, one ``runas agent run``
standing for the computer mon1.contoso.com that hosts a Runas.Linux.Host object, and a real
OpenSSH sshd (tests/support/peers/sshd.py).

The sample pack runas.linux (with short schedules) watches the host with a unix-monitoring
account holding a random canary password, distributed to mon1 only. No trust on first use: the
first run stops at the unknown host key, which the server records as pending; once approved by
its fingerprint the monitor runs and the account's Run As health on mon1 is OK. A wrong
password makes the health *logon failed* with an open alert; the right one again closes it.
The canary passwords are searched for in every process's command line and environment while
everything runs, and afterwards in every file the test produced and in what the CLI printed.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.canaries import encodings, scan_processes
from support.fleet import Agent, Group, Server, start_agent, start_server, wait_for
from support.peers.sshd import Sshd, running_sshd

pytestmark = [pytest.mark.server, pytest.mark.agents, pytest.mark.peer, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "examples" / "packs" / "runas-linux.yaml"
COMPUTER = "mon1.contoso.com"
HOSTNAME = "linux1.contoso.com"
TARGET = f"Runas.Linux.Host:{COMPUTER};{HOSTNAME}"
ACCOUNT = "Linux monitoring"
PROFILE = "Runas.Linux.MonitoringProfile"
MONITOR = "Runas.Linux.RootFilesystem"
#: the sample pack's schedules, and the short ones this test imports instead
SCHEDULES = {
    "schedule: {interval: 5m, spread: 30s, timeout: 30s}": "schedule: {interval: 1s, timeout: 1s}",
    "schedule: {interval: 5m, spread: 1m, timeout: 30s}": "schedule: {interval: 2s, timeout: 2s}",
    "schedule: {interval: 15m, spread: 1m, timeout: 30s}": "schedule: {interval: 2s, timeout: 2s}",
}


@pytest.fixture
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    # Outside the group's directory: the canary scan covers runas's files, not the peer's.
    with running_sshd(tmp_path_factory.mktemp("ssh-e2e-peer")) as server:
        yield server


@pytest.fixture
def group(tmp_path: Path, sshd: Sshd) -> Group:
    g = Group(tmp_path / "runas")
    g.root.mkdir()
    g.run("init", "--name", "contoso")
    pack = PACK.read_text()
    for sample, short in SCHEDULES.items():
        assert sample in pack, sample
        pack = pack.replace(sample, short)
    fast = g.root / "runas-linux-fast.yaml"
    fast.write_text(pack)
    g.run("pack", "import", str(fast))
    objects = g.root / "linux.json"
    objects.write_text(
        json.dumps(
            {
                "source": "test.linux",
                "objects": [
                    {"class": "System.Computer", "key": {"name": COMPUTER}},
                    {
                        "class": "Runas.Linux.Host",
                        "host": f"System.Computer:{COMPUTER}",
                        "key": {"hostname": HOSTNAME},
                        "properties": {"ssh_host": sshd.host, "ssh_port": sshd.port},
                    },
                ],
            }
        )
    )
    g.run("discovery", "submit", str(objects))
    return g


@pytest.fixture
def server(group: Group) -> Iterator[Server]:
    s = start_server(group, env={"RUNAS_HEALTH_INTERVAL": "0.5", "RUNAS_EMBEDDED_AGENT": "false"})
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def agent(group: Group, server: Server) -> Iterator[Agent]:
    a = start_agent(group, COMPUTER, [server.agent_url])
    try:
        wait_for("the agent to ask to enrol", lambda: COMPUTER in group.run("agent", "list"))
        group.run("agent", "approve", COMPUTER)
        yield a
    finally:
        a.stop()


def _workflow_state(group: Group, workflow: str) -> dict[str, Any] | None:
    text = group.run("state", "show", TARGET, "--json", check=False)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None
    rows = doc.get("workflows", doc) if isinstance(doc, dict) else doc
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and row.get("workflow") == workflow:
            return row
    return None


def _state_is(group: Group, workflow: str, state: str, text: str = "") -> dict[str, Any] | None:
    row = _workflow_state(group, workflow)
    if row and row.get("state") == state and text in json.dumps(row):
        return row
    return None


def _ran(group: Group) -> dict[str, Any] | None:
    """The monitor's state once it classified the host (it measured the disk over SSH)."""
    row = _workflow_state(group, MONITOR)
    return row if row and row.get("state") in ("healthy", "warning", "critical") else None


def _account_health(group: Group) -> str | None:
    doc = group.json("health", "show", COMPUTER)
    rows = doc.get("accounts", doc) if isinstance(doc, dict) else doc
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and ACCOUNT in (row.get("account"), row.get("account_name")):
            return str(row.get("state"))
    return None


def _open_alerts(group: Group) -> list[dict[str, Any]]:
    alerts = group.json("alert", "list", "--computer", COMPUTER)
    return [a for a in alerts if ACCOUNT in json.dumps(a)]


def _pending(group: Group, sshd: Sshd) -> list[dict[str, Any]]:
    rows = group.json("ssh-host", "list", "--pending")
    return [r for r in rows if r["host"] == sshd.host and r["port"] == sshd.port]


def test_ssh_monitor_host_key_approval_and_run_as_health_end_to_end(
    group: Group, server: Server, agent: Agent, sshd: Sshd
) -> None:
    printed: list[str] = []

    def cli(*args: str, stdin: str | None = None) -> str:
        out = group.run(*args, stdin=stdin)
        printed.append(out)
        return out

    # The throwaway user's real password is the canary: the account logs on with it.
    user = sshd.user("mon")
    canaries = [user.password]
    cli("account", "add", ACCOUNT, "--type", "unix-monitoring", "--user", user.name,
        "--elevation", "none", "--stdin", stdin=user.password + "\n")  # fmt: skip
    cli("profile", "associate", PROFILE, ACCOUNT)
    cli("distribution", "set", ACCOUNT, "--more-secure", "--computer", COMPUTER)

    # 1. No trust on first use: the key is pending, the monitor unknown, nothing was sent.
    pending = wait_for("the host key to be pending", lambda: _pending(group, sshd))
    assert pending[0]["fingerprint"] == sshd.fingerprint
    assert f"{pending[0]['key_type']} {pending[0]['key']}" == sshd.host_key
    approve = "runas ssh-host approve"
    row = wait_for("the monitor to be unknown for the host key",
                   lambda: _state_is(group, MONITOR, "unknown", approve))  # fmt: skip
    assert sshd.fingerprint in json.dumps(row)
    assert f"password for {user.name}" not in sshd.log.read_text()
    scan_processes(canaries)

    # 2. Approved by its fingerprint: the agents receive the key, the monitor runs.
    cli("ssh-host", "approve", f"{sshd.host}:{sshd.port}", "--fingerprint", sshd.fingerprint)
    row = wait_for("the monitor to run over SSH", lambda: _ran(group))
    assert "/ is " in json.dumps(row)
    wait_for("the account's Run As health on the computer to be OK",
             lambda: _account_health(group) == "ok")  # fmt: skip
    scan_processes(canaries)

    # 3. A wrong password: logon failed, with an alert.
    wrong = f"canary-wrong-{secrets.token_urlsafe(16)}"
    canaries.append(wrong)
    cli("account", "update", ACCOUNT, "--stdin", stdin=wrong + "\n")
    wait_for("Run As health logon-failed", lambda: _account_health(group) == "logon-failed")
    alerts = wait_for("an open logon-failed alert", lambda: _open_alerts(group))
    assert any(a.get("status", "open") == "open" for a in alerts)
    scan_processes(canaries)

    # 4. The right password again: health OK, the alert closes.
    cli("account", "update", ACCOUNT, "--stdin", stdin=user.password + "\n")
    wait_for("Run As health OK again", lambda: _account_health(group) == "ok")
    wait_for("the alert to close", lambda: not [
        a for a in _open_alerts(group) if a.get("status", "open") == "open"])  # fmt: skip
    # Not merely the failed check set aside as stale by the new secret version: a run with
    # the fixed secret (version 3: added, broken, fixed) succeeded.
    wait_for("a successful check with the fixed secret", lambda: any(
        r["account"] == ACCOUNT and r["last_report"] == "ok"
        and r["last_report_secret_version"] == 3
        for r in group.json("health", "show", COMPUTER)), timeout=60)  # fmt: skip
    scan_processes(canaries)

    # What the CLI printed (states, alerts, health), then every file, once the processes stop.
    printed.append(group.run("state", "show", TARGET, "--json"))
    printed.append(group.run("alert", "list", "--json"))
    printed.append(group.run("health", "show", COMPUTER, "--json"))
    for text in printed:
        for c in canaries:
            assert c not in text
    agent.stop()
    server.stop()
    files = [p for p in group.root.rglob("*") if p.is_file()]
    assert any(p.name.startswith("agent-") for p in files)
    for path in files:
        data = path.read_bytes()
        for c in canaries:
            for form in encodings(c):
                assert form not in data, f"{path} holds a canary"
