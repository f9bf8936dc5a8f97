"""The ``ldap`` probe end to end on real processes: a ``runas server``, one ``runas agent run``
standing for the domain controller dc01.contoso.com, and a real OpenLDAP slapd shaped like AD
(tests/support/peers/slapd.py).

The sample pack runas.directory (with short schedules) watches the directory with a windows
account holding a random canary password, distributed to dc01 only. The monitor reaches
healthy and the account's Run As health on dc01 is OK; the AD-style system discovery creates a
Runas.Directory.Computer for each computer entry. A wrong password makes the health
*logon failed* with an open alert; the right one again closes it. Throughout, the canary
passwords are searched for in every process's command line and environment, and afterwards in
every file the test produced and in what the CLI printed.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.canaries import encodings, scan_processes
from support.fleet import Agent, Group, Server, start_agent, start_server, wait_for
from support.peers.slapd import (
    DOMAIN,
    SUFFIX,
    DirectoryComputer,
    DirectoryUser,
    Slapd,
    slapd_running,
)

pytestmark = [pytest.mark.server, pytest.mark.agents, pytest.mark.peer, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "examples" / "packs" / "runas-directory.yaml"
DC = "dc01.contoso.com"
DIRECTORY = f"Runas.Directory.Domain:{DC};{DOMAIN}"
ACCOUNT = "Directory account"
PROFILE = "Runas.Directory.DiscoveryProfile"
WAIT = 90.0
MONITOR = "Runas.Directory.BindAndSearch"
CLASS = "Runas.Directory.Computer"
COMPUTERS = (
    DirectoryComputer("web01.contoso.com", "Windows Server 2022 Datacenter", "10.0 (20348)"),
    DirectoryComputer("sql01.contoso.com", "Windows Server 2019 Standard", "10.0 (17763)"),
)
#: what this test changes in the sample pack: short schedules, and no TLS on loopback
CHANGES = {
    "tls: start": "tls: none",
    "schedule: {interval: 5m, spread: 30s, timeout: 30s}": "schedule: {interval: 1s, timeout: 1s}",
    "schedule: {interval: 1h, spread: 5m, timeout: 2m}": "schedule: {interval: 2s, timeout: 2s}",
}


@pytest.fixture
def password() -> str:
    return f"canary-{secrets.token_urlsafe(16)}"


@pytest.fixture
def directory(password: str) -> Iterator[Slapd]:
    with slapd_running([DirectoryUser("svc-ldap", password)], COMPUTERS) as server:
        yield server


@dataclass
class RecordingGroup(Group):
    """A group whose CLI output is kept, to search it for canaries afterwards."""

    printed: list[str] = field(default_factory=list)

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        out = super().run(*args, stdin=stdin, check=check)
        self.printed.append(out)
        return out


@pytest.fixture
def group(tmp_path: Path, directory: Slapd, password: str) -> RecordingGroup:
    g = RecordingGroup(tmp_path)
    g.run("init", "--name", "contoso")
    pack = PACK.read_text()
    for sample, changed in CHANGES.items():
        assert sample in pack, sample
        pack = pack.replace(sample, changed)
    fast = tmp_path / "runas-directory-fast.yaml"
    fast.write_text(pack)
    g.run("pack", "import", str(fast))
    objects = tmp_path / "directory.json"
    objects.write_text(
        json.dumps(
            {
                "source": "test.directory",
                "objects": [
                    {"class": "System.Computer", "key": {"name": DC}},
                    {
                        "class": "Runas.Directory.Domain",
                        "host": f"System.Computer:{DC}",
                        "key": {"domain": DOMAIN},
                        "properties": {
                            "server": directory.host,
                            "port": directory.port,
                            "base": SUFFIX,
                        },
                    },
                ],
            }
        )
    )
    g.run("discovery", "submit", str(objects))
    g.run("account", "add", ACCOUNT, "--type", "windows", "--domain", DOMAIN,
          "--user", "svc-ldap", "--stdin", stdin=password + "\n")  # fmt: skip
    g.run("profile", "associate", PROFILE, ACCOUNT, "--object", DIRECTORY)
    g.run("distribution", "set", ACCOUNT, "--more-secure", "--computer", DC)
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
    a = start_agent(group, DC, [server.agent_url])
    try:
        wait_for(
            "the agent to ask to enrol", lambda: DC in group.run("agent", "list"), timeout=WAIT
        )
        group.run("agent", "approve", DC)
        yield a
    finally:
        a.stop()


def _workflow_state(group: Group, workflow: str) -> dict[str, Any] | None:
    text = group.run("state", "show", DIRECTORY, "--json", check=False)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None
    rows = doc.get("workflows", doc) if isinstance(doc, dict) else doc
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and row.get("workflow") == workflow:
            return row
    return None


def _health(group: Group) -> list[dict[str, Any]]:
    doc = group.json("health", "show", DC)
    rows = doc.get("accounts", doc) if isinstance(doc, dict) else doc
    return [r for r in rows if isinstance(r, dict)]


def _account_health(group: Group) -> str | None:
    for row in _health(group):
        if row.get("account") == ACCOUNT or row.get("account_name") == ACCOUNT:
            return str(row.get("state"))
    return None


def _open_alerts(group: Group) -> list[dict[str, Any]]:
    return [a for a in group.json("alert", "list", "--computer", DC) if ACCOUNT in json.dumps(a)]


def _names(text: str) -> set[str]:
    return {str(o["full_name"]) for o in json.loads(text)}


def test_ldap_monitor_discovery_and_run_as_health_end_to_end(
    group: RecordingGroup, server: Server, agent: Agent, directory: Slapd, password: str
) -> None:
    # Each CLI call starts a Python process (seconds on a busy machine): generous timeouts.
    # The monitor binds as CONTOSO\svc-ldap (resolved to its DN) and reads the base entry.
    state = wait_for(
        "the directory monitor to be healthy",
        lambda: (s := _workflow_state(group, MONITOR)) and s.get("state") == "healthy" and s,
        timeout=WAIT,
    )
    assert "bound as cn=svc-ldap,ou=Users,dc=contoso,dc=com" in json.dumps(state)
    wait_for("Run As health OK on dc01", lambda: _account_health(group) == "ok", timeout=WAIT)
    # The system discovery created the directory's computers (not hosted by dc01).
    wanted = {f"{CLASS}:{c.host_name}" for c in COMPUTERS}
    listed = wait_for(
        "the directory's computers discovered",
        lambda: (
            (n := _names(group.run("object", "list", "--class", CLASS, "--json")))
            and wanted <= n
            and n
        ),
        timeout=WAIT,
    )
    assert listed == wanted
    web = group.run("object", "show", f"{CLASS}:web01.contoso.com", "--json")
    assert "Windows Server 2022 Datacenter" in web
    scan_processes([password])

    # A wrong password: the directory refuses the bind -> logon failed, with an alert.
    wrong = f"canary-wrong-{secrets.token_urlsafe(16)}"
    group.run("account", "update", ACCOUNT, "--stdin", stdin=wrong + "\n")
    wait_for(
        "Run As health logon-failed",
        lambda: _account_health(group) == "logon-failed",
        timeout=WAIT,
    )
    assert wait_for("an open alert for the account", lambda: _open_alerts(group), timeout=WAIT)
    failed = _workflow_state(group, MONITOR)
    assert failed is not None
    assert failed.get("state") == "critical"
    assert "refused the password" in json.dumps(failed)
    scan_processes([password, wrong])

    # The right password again: the next run logs on and the alert closes.
    group.run("account", "update", ACCOUNT, "--stdin", stdin=password + "\n")
    wait_for("Run As health OK again", lambda: _account_health(group) == "ok", timeout=WAIT)
    wait_for("the alert to close", lambda: not _open_alerts(group), timeout=WAIT)
    # Not merely the failed check set aside as stale by the new secret version: a run with
    # the fixed secret (version 3: added, broken, fixed) succeeded.
    wait_for("a successful check with the fixed secret", lambda: any(
        r["account"] == ACCOUNT and r["last_report"] == "ok"
        and r["last_report_secret_version"] == 3
        for r in group.json("health", "show", DC)), timeout=WAIT)  # fmt: skip
    group.run("state", "show", DIRECTORY, "--json")
    group.run("alert", "list", "--all", "--json")
    scan_processes([password, wrong])

    agent.stop()
    server.stop()
    forms = [e for c in (password, wrong) for e in encodings(c)]
    for text in group.printed:
        for c in (password, wrong):
            assert c not in text, "the CLI printed a canary"
    # Every file the test produced: logs, the agent's data directory (its bundle is sealed),
    # the database. The directory's own data (userPassword hashes) is slapd's, elsewhere.
    for path in group.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for encoded in forms:
                assert encoded not in data, f"{path} holds a canary"
