"""The ``snmp`` probe on real processes: a management server, one agent standing for the
computer that polls a device (a real net-snmp agent on loopback), the runas.network sample
pack, and a community-string account with a canary community. The availability monitor reaches
its state (warning: the agent was started seconds ago, under the pack's 5-minute sysUpTime
threshold) and the account's Run As health on that computer is OK; a wrong community — which
snmpd silently drops — turns it to *logon failed* with an alert (the probe's engine-ID discovery
shows the agent is alive), the right one closes the alert. Canary communities are then searched
for in every process's command line and environment, and in every file runas produced.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.canaries import encodings, scan_processes
from support.fleet import Agent, Group, Server, start_agent, start_server, wait_for
from support.peers.snmpd import Snmpd, start_snmpd

pytestmark = [pytest.mark.server, pytest.mark.agents, pytest.mark.peer, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "examples" / "packs" / "runas-network.yaml"
COMPUTER = "nms1.runas.test"
DEVICE = f"Runas.Network.Device:{COMPUTER};core-sw1"
PROFILE = "Runas.Network.SnmpProfile"
MONITOR = "Runas.Network.DeviceAvailability"
ACCOUNT = "SNMP read-only"
#: the test variant of the sample pack runs every second or two
FAST = {"interval": "2s", "spread": "1s", "timeout": "2s"}


@pytest.fixture
def communities() -> dict[str, str]:
    return {
        "right": f"canary-snmp-{secrets.token_urlsafe(12)}",
        "wrong": f"canary-bad-{secrets.token_urlsafe(12)}",
    }


@pytest.fixture
def snmpd(communities: dict[str, str]) -> Iterator[Snmpd]:
    agent = start_snmpd(communities["right"])
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def group(tmp_path: Path, snmpd: Snmpd, communities: dict[str, str]) -> Group:
    g = Group(tmp_path)
    g.run("init", "--name", "network")
    pack = yaml.safe_load(PACK.read_text())
    for workflow in pack["workflows"]:
        workflow["schedule"] = dict(FAST)
    fast_pack = tmp_path / "runas-network-fast.yaml"
    fast_pack.write_text(json.dumps(pack))  # JSON is YAML
    g.run("pack", "import", str(fast_pack))
    discovery = tmp_path / "devices.yaml"
    discovery.write_text(
        json.dumps(
            {
                "source": "test.network",
                "objects": [
                    {"class": "System.Computer", "key": {"name": COMPUTER}},
                    {
                        "class": "Runas.Network.Device",
                        "host": f"System.Computer:{COMPUTER}",
                        "key": {"device": "core-sw1"},
                        "properties": {"address": snmpd.host, "port": snmpd.port},
                    },
                ],
            }
        )
    )
    g.run("discovery", "submit", str(discovery))
    g.run("account", "add", ACCOUNT, "--type", "community-string", "--stdin",
          stdin=communities["right"] + "\n")  # fmt: skip
    g.run("profile", "associate", PROFILE, ACCOUNT, "--object", DEVICE)
    g.run("distribution", "set", ACCOUNT, "--more-secure", "--computer", COMPUTER)
    return g


@pytest.fixture
def server(group: Group) -> Iterator[Server]:
    s = start_server(
        group,
        env={
            "RUNAS_CREDENTIALS_GRACE": "2",
            "RUNAS_HEALTH_INTERVAL": "0.5",
            "RUNAS_EMBEDDED_AGENT": "false",
        },
    )
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def agent(group: Group, server: Server) -> Iterator[Agent]:
    a = start_agent(group, COMPUTER, [server.agent_url])
    try:
        wait_for("the agent pending", lambda: COMPUTER in group.run("agent", "list"))
        group.run("agent", "approve", COMPUTER)
        yield a
    finally:
        a.stop()


def _monitor(group: Group) -> dict[str, Any] | None:
    doc = json.loads(group.run("state", "show", DEVICE, "--json", check=False) or "null")
    rows = doc if isinstance(doc, list) else (doc or {}).get("workflows", [])
    for row in rows:
        if row.get("workflow") == MONITOR:
            return dict(row)
    return None


def _health(group: Group) -> dict[str, Any] | None:
    doc = json.loads(group.run("health", "show", COMPUTER, "--json"))
    rows = doc if isinstance(doc, list) else doc.get("accounts", [])
    for row in rows:
        if row.get("account") == ACCOUNT or row.get("account_name") == ACCOUNT:
            return dict(row)
    return None


def _health_state(group: Group) -> str | None:
    row = _health(group)
    return None if row is None else str(row.get("state"))


def _open_alerts(group: Group) -> list[dict[str, Any]]:
    alerts = json.loads(group.run("alert", "list", "--computer", COMPUTER, "--json"))
    return [a for a in alerts if ACCOUNT in json.dumps(a)]


def test_community_account_health_follows_the_device(
    group: Group, server: Server, agent: Agent, snmpd: Snmpd, communities: dict[str, str]
) -> None:
    outputs: list[str] = []
    canaries = list(communities.values())
    # The right community: the monitor classifies the device (warning: sysUpTime is seconds,
    # under the pack's 5-minute threshold) and the account is OK on the computer.
    row = wait_for(
        "the device monitor classified",
        lambda: (m := _monitor(group)) is not None and m.get("state") == "warning" and m,
    )
    assert row["message"].startswith("sysUpTime = "), row["message"]
    assert "Linux" in row["message"]  # sysDescr
    wait_for("Run As health OK", lambda: _health_state(group) == "ok")
    assert _open_alerts(group) == []

    # A wrong community: snmpd drops the requests; the agent still answers SNMPv3 discovery,
    # so the probe reports logon failed; health follows and an alert opens.
    group.run("account", "update", ACCOUNT, "--stdin", stdin=communities["wrong"] + "\n")
    wait_for("Run As health logon-failed", lambda: _health_state(group) == "logon-failed")
    alert = wait_for("an open alert", lambda: _open_alerts(group))
    # (a run on a loaded machine may end unknown — out of time — in between: it proves nothing)
    monitor = wait_for(
        "the monitor critical",
        lambda: (m := _monitor(group)) is not None and m.get("state") == "critical" and m,
    )
    assert "community refused" in monitor["message"], monitor["message"]
    scan_processes(canaries, skip=[snmpd.process.pid])  # snmpd holds the v3 keys itself
    outputs += [json.dumps(alert), json.dumps(monitor), json.dumps(_health(group))]

    # The right community again: the next successful run closes the alert.
    group.run("account", "update", ACCOUNT, "--stdin", stdin=communities["right"] + "\n")
    wait_for("Run As health OK again", lambda: _health_state(group) == "ok")
    wait_for("the alert closed", lambda: _open_alerts(group) == [])
    # Not merely the failed check set aside as stale by the new secret version: a run with
    # the fixed secret (version 3: added, broken, fixed) succeeded.
    wait_for("a successful check with the fixed secret", lambda: any(
        r["account"] == ACCOUNT and r["last_report"] == "ok"
        and r["last_report_secret_version"] == 3
        for r in group.json("health", "show", COMPUTER)), timeout=60)  # fmt: skip
    scan_processes(canaries, skip=[snmpd.process.pid])  # snmpd holds the v3 keys itself
    outputs += [
        group.run("state", "show", DEVICE, "--json"),
        group.run("alert", "list", "--all", "--json"),
        group.run("health", "show", COMPUTER, "--json"),
    ]

    agent.stop()
    server.stop()
    forms = [e for c in canaries for e in encodings(c)]
    for text in outputs:
        for e in forms:
            assert e not in text.encode(), "a state or alert output holds a canary"
    # Every file runas produced (logs, the agent's data directory, the database); snmpd's own
    # configuration lives in its own temporary directory, outside tmp_path.
    for path in group.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for e in forms:
                assert e not in data, f"{path} holds a canary"
