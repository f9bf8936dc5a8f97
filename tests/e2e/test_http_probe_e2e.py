"""The ``http`` probe on real processes: a management server, one agent standing for the
computer that serves a site (a real Apache httpd on loopback), the runas.web sample pack, and
a basic account with a canary password. The site monitor turns healthy and the account's Run
As health on that computer OK; a wrong password turns it to *logon failed* with an alert, the
right one closes the alert. Canary passwords are searched for in every process's command line
and environment while everything runs, and afterwards in every file the test produced and in
what the CLI printed.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.canaries import scan_processes
from support.fleet import Agent, Group, Server, start_agent, start_server, wait_for
from support.peers.apache import Apache

pytestmark = [pytest.mark.server, pytest.mark.agents, pytest.mark.peer, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "examples" / "packs" / "runas-web.yaml"
COMPUTER = "web1.runas.test"
SITE = f"Runas.Web.Site:{COMPUTER};intranet"
PROFILE = "Runas.Web.SiteProfile"
MONITOR = "Runas.Web.SiteAvailability"
ACCOUNT = "Web monitor"
USER = "webmon"
#: the test variant of the sample pack runs every two seconds
FAST = {"interval": "2s", "spread": "1s", "timeout": "2s"}


@pytest.fixture
def passwords() -> dict[str, str]:
    return {
        "right": f"canary-web-{secrets.token_urlsafe(12)}",
        "wrong": f"canary-bad-{secrets.token_urlsafe(12)}",
    }


@pytest.fixture
def apache(passwords: dict[str, str]) -> Iterator[Apache]:
    server = Apache.start(basic_users={USER: passwords["right"]}, digest_users={})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def group(tmp_path: Path, apache: Apache, passwords: dict[str, str]) -> Group:
    g = Group(tmp_path)
    g.run("init", "--name", "web")
    pack = yaml.safe_load(PACK.read_text())
    for workflow in pack["workflows"]:
        workflow["schedule"] = dict(FAST)
    fast_pack = tmp_path / "runas-web-fast.yaml"
    fast_pack.write_text(json.dumps(pack))  # JSON is YAML
    g.run("pack", "import", str(fast_pack))
    discovery = tmp_path / "sites.yaml"
    discovery.write_text(
        json.dumps(
            {
                "source": "test.web",
                "objects": [
                    {"class": "System.Computer", "key": {"name": COMPUTER}},
                    {
                        "class": "Runas.Web.Site",
                        "host": f"System.Computer:{COMPUTER}",
                        "key": {"site": "intranet"},
                        "properties": {
                            "url": f"{apache.http_url}/basic/",
                            "expect": "basic ok",
                            "ca_file": "",
                        },
                    },
                ],
            }
        )
    )
    g.run("discovery", "submit", str(discovery))
    g.run("account", "add", ACCOUNT, "--type", "basic", "--user", USER, "--stdin",
          stdin=passwords["right"] + "\n")  # fmt: skip
    g.run("profile", "associate", PROFILE, ACCOUNT, "--object", SITE)
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
    doc = json.loads(group.run("state", "show", SITE, "--json", check=False) or "null")
    rows = doc if isinstance(doc, list) else (doc or {}).get("workflows", [])
    for row in rows:
        if row.get("workflow") == MONITOR:
            return dict(row)
    return None


def _health(group: Group) -> dict[str, Any] | None:
    doc = json.loads(group.run("health", "show", COMPUTER, "--json"))
    rows = doc if isinstance(doc, list) else doc.get("accounts", [])
    for row in rows:
        if ACCOUNT in (row.get("account"), row.get("account_name")):
            return dict(row)
    return None


def _health_state(group: Group) -> str | None:
    row = _health(group)
    return None if row is None else str(row.get("state"))


def _open_alerts(group: Group) -> list[dict[str, Any]]:
    alerts = json.loads(group.run("alert", "list", "--computer", COMPUTER, "--json"))
    return [a for a in alerts if ACCOUNT in json.dumps(a)]


def _encodings(secret: str) -> list[bytes]:
    raw = secret.encode()
    # clear, base64, hex, and the Authorization header's own form
    return [raw, base64.b64encode(raw), raw.hex().encode(), base64.b64encode(b"webmon:" + raw)]


def test_basic_account_health_follows_the_site(
    group: Group, server: Server, agent: Agent, apache: Apache, passwords: dict[str, str]
) -> None:
    outputs: list[str] = []
    # The right password: the monitor is healthy and the account OK on the computer.
    row = wait_for(
        "the site monitor healthy",
        lambda: (m := _monitor(group)) is not None and m.get("state") == "healthy" and m,
    )
    assert "HTTP 200" in row["message"]
    wait_for("Run As health OK", lambda: _health_state(group) == "ok")
    assert _open_alerts(group) == []

    # A wrong password: the server refuses it, health says logon failed, an alert opens.
    group.run("account", "update", ACCOUNT, "--stdin", stdin=passwords["wrong"] + "\n")
    wait_for("Run As health logon-failed", lambda: _health_state(group) == "logon-failed")
    alert = wait_for("an open alert", lambda: _open_alerts(group))
    assert "could not log on" in json.dumps(alert)
    monitor = _monitor(group)
    assert monitor is not None
    assert monitor["state"] == "critical"
    assert "HTTP 401" in monitor["message"]
    scan_processes(list(passwords.values()))
    outputs += [json.dumps(alert), json.dumps(monitor), json.dumps(_health(group))]

    # The right password again: the next successful run closes the alert.
    group.run("account", "update", ACCOUNT, "--stdin", stdin=passwords["right"] + "\n")
    wait_for("Run As health OK again", lambda: _health_state(group) == "ok")
    wait_for("the alert closed", lambda: _open_alerts(group) == [])
    # Not merely the failed check set aside as stale by the new secret version: a run with
    # the fixed secret (version 3: added, broken, fixed) succeeded.
    wait_for("a successful check with the fixed secret", lambda: any(
        r["account"] == ACCOUNT and r["last_report"] == "ok"
        and r["last_report_secret_version"] == 3
        for r in group.json("health", "show", COMPUTER)), timeout=60)  # fmt: skip
    scan_processes(list(passwords.values()))
    outputs += [
        group.run("state", "show", SITE, "--json"),
        group.run("alert", "list", "--all", "--json"),
        group.run("health", "show", COMPUTER, "--json"),
    ]

    agent.stop()
    server.stop()
    forms = [e for p in passwords.values() for e in _encodings(p)]
    for text in outputs:
        for e in forms:
            assert e not in text.encode(), "a state or alert output holds a canary"
    # Every file: logs and agent output, the agent's data directory (the bundle is sealed),
    # the database, the test variant of the pack.
    for path in group.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for e in forms:
                assert e not in data, f"{path} holds a canary"
