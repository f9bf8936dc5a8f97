"""The ``sql`` probe end to end: a real ``runas server`` and one real ``runas agent run`` standing
for a computer that hosts a PostgreSQL database (a real PostgreSQL 15 that wants SCRAM-SHA-256,
tests/support/peers/postgresql.py), the sample pack runas.postgresql with short schedules, and a
basic account whose password is a random canary.

The monitor turns healthy and the account's Run As health on the computer is ok; a wrong
password (a new secret version) makes it *logon failed* with an open alert; the right one again
closes the alert. Neither password is then found in any process's command line or environment,
in any file the test produced, or in what the CLI printed.
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
from support.peers import postgresql
from support.peers.postgresql import ScramPostgres

pytestmark = [pytest.mark.server, pytest.mark.agents, pytest.mark.peer, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "examples" / "packs" / "runas-postgresql.yaml"
COMPUTER = "db1.contoso.com"
DATABASE = "orders"
OBJECT = f"Runas.PostgreSQL.Database:{COMPUTER};{DATABASE}"
PROFILE = "Runas.PostgreSQL.MonitoringProfile"
MONITOR = "Runas.PostgreSQL.DatabaseAvailability"
RULE = "Runas.PostgreSQL.DatabaseStatistics"
ACCOUNT = "PostgreSQL monitor"
FAST = "{interval: 2s, spread: 0s, timeout: 2s}"


@pytest.fixture(scope="module")
def peer() -> Iterator[ScramPostgres]:
    with postgresql.running() as server:
        server.create_database(DATABASE)
        yield server


def _fast_pack(tmp_path: Path) -> Path:
    """The sample pack with schedules of seconds instead of minutes."""
    text = PACK.read_text()
    for schedule in (
        "{interval: 5m, spread: 30s, timeout: 30s}",
        "{interval: 5m, spread: 1m, timeout: 30s}",
    ):
        assert schedule in text, schedule
        text = text.replace(schedule, FAST)
    path = tmp_path / "runas-postgresql-fast.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def group(tmp_path: Path, peer: ScramPostgres) -> Group:
    g = Group(tmp_path)
    g.run("init", "--name", "contoso")
    g.run("pack", "import", str(_fast_pack(tmp_path)))
    discovery = tmp_path / "discovery.json"
    discovery.write_text(
        json.dumps(
            {
                "source": "test.postgresql",
                "objects": [
                    {"class": "System.Computer", "key": {"name": COMPUTER}},
                    {
                        "class": "Runas.PostgreSQL.Database",
                        "host": f"System.Computer:{COMPUTER}",
                        "key": {"database": DATABASE},
                        "properties": {"host": peer.host, "port": peer.port},
                    },
                ],
            }
        )
    )
    g.run("discovery", "submit", str(discovery))
    return g


@pytest.fixture
def canaries() -> dict[str, str]:
    return {
        "right": f"canary-right-{secrets.token_urlsafe(16)}",
        "wrong": f"canary-wrong-{secrets.token_urlsafe(16)}",
    }


@pytest.fixture
def role(peer: ScramPostgres, canaries: dict[str, str]) -> str:
    return peer.create_role(canaries["right"], grants="pg_monitor")


@pytest.fixture
def server(group: Group, role: str, canaries: dict[str, str]) -> Iterator[Server]:
    group.run("account", "add", ACCOUNT, "--type", "basic", "--user", role, "--stdin",
              stdin=canaries["right"] + "\n")  # fmt: skip
    group.run("profile", "associate", PROFILE, ACCOUNT)
    group.run("distribution", "set", ACCOUNT, "--more-secure", "--computer", COMPUTER)
    s = start_server(
        group,
        env={
            "RUNAS_HEALTH_INTERVAL": "0.5",
            "RUNAS_CREDENTIALS_GRACE": "30",
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
        wait_for("the agent to ask to enrol", lambda: COMPUTER in group.run("agent", "pending"))
        group.run("agent", "approve", COMPUTER)
        yield a
    finally:
        a.stop()


def _workflow(group: Group, workflow: str) -> dict[str, Any] | None:
    text = group.run("state", "show", OBJECT, "--json", check=False)
    if not text.strip():
        return None
    for row in json.loads(text).get("workflows", []):
        if row["workflow"] == workflow:
            return dict(row)
    return None


def _health(group: Group) -> str | None:
    for row in group.json("health", "show", COMPUTER):
        if row["account"] == ACCOUNT:
            return str(row["state"])
    return None


def _open_alerts(group: Group) -> list[dict[str, Any]]:
    return [
        a
        for a in group.json("alert", "list", "--computer", COMPUTER)
        if a.get("account") == ACCOUNT
    ]


def test_sql_probe_on_a_real_agent_and_postgresql(
    group: Group, agent: Agent, server: Server, canaries: dict[str, str]
) -> None:
    printed: list[str] = []

    def state_of(workflow: str, want: str) -> dict[str, Any] | None:
        row = _workflow(group, workflow)
        printed.append(json.dumps(row))
        return row if row is not None and row["state"] == want else None

    # The right password: the monitor is healthy, the rule brings perf, health is ok.
    monitor = wait_for("the monitor to be healthy", lambda: state_of(MONITOR, "healthy"), 60)
    assert monitor["account"] == ACCOUNT
    assert "connections_pct" in monitor["perf"]
    rule = wait_for("the rule's perf data", lambda: state_of(RULE, "healthy"), 30)
    assert {"numbackends", "xact_commit", "size_bytes"} <= set(rule["perf"])
    wait_for("Run As health ok", lambda: _health(group) == "ok")
    assert _open_alerts(group) == []

    # While it runs: no process shows a password on its command line or in its environment.
    scan_processes(list(canaries.values()))

    # A wrong password (a new secret version): logon failed, with an open alert.
    group.run("account", "update", ACCOUNT, "--stdin", stdin=canaries["wrong"] + "\n")
    wait_for("Run As health logon-failed", lambda: _health(group) == "logon-failed", 60)
    alerts = wait_for("an open logon-failed alert", lambda: _open_alerts(group))
    printed.append(json.dumps(alerts))
    failed = _workflow(group, MONITOR)
    printed.append(json.dumps(failed))
    assert failed is not None
    assert failed["state"] == "critical"
    scan_processes(list(canaries.values()))

    # The right one again: health ok, the alert closes.
    group.run("account", "update", ACCOUNT, "--stdin", stdin=canaries["right"] + "\n")
    wait_for("Run As health ok again", lambda: _health(group) == "ok", 60)
    wait_for("the alert to close", lambda: _open_alerts(group) == [])
    # Not merely the failed check set aside as stale by the new secret version: a run with
    # the fixed secret (version 3: added, broken, fixed) succeeded.
    wait_for("a successful check with the fixed secret", lambda: any(
        r["account"] == ACCOUNT and r["last_report"] == "ok"
        and r["last_report_secret_version"] == 3
        for r in group.json("health", "show", COMPUTER)), timeout=60)  # fmt: skip
    closed = group.run("alert", "list", "--all", "--json")
    printed.append(closed)
    assert ACCOUNT in closed
    printed.append(group.run("health", "show", COMPUTER, "--json"))
    printed.append(group.run("state", "show", OBJECT, "--json"))
    scan_processes(list(canaries.values()))

    # Afterwards: every file the test produced (logs, agent data, the database) and everything
    # the CLI printed.
    agent.stop()
    server.stop()
    forms = [form for canary in canaries.values() for form in encodings(canary)]
    for path in group.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for form in forms:
                assert form not in data, f"{path} holds a canary"
    output = "\n".join(printed).encode()
    for form in forms:
        assert form not in output
