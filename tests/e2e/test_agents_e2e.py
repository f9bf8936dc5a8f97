"""The seeds' example (domain.md §12) on real processes: a management server with its agent
listener (mutual TLS), five agents on loopback each standing for one computer, a `command`
workflow that proves on each agent which account it received (by a SHA-256 of the password,
never the password), an agent outside the distribution that receives nothing and raises
*credentials not found* after the grace period, revocation, removal, kill -9 — and canary
passwords searched for everywhere afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runas.crypto.sealing import manifest_of
from support.canaries import scan_processes
from support.fleet import Agent, Group, Server, start_agent, start_server, wait_for

pytestmark = [pytest.mark.server, pytest.mark.agents]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
PROFILE = "Contoso.SQL.MonitoringProfile"
WORKFLOW = "Contoso.SQL.CredentialCheck"
COMPUTERS = ["a.contoso.com", "b.contoso.com", "c.contoso.com", "d.contoso.com", "e.contoso.com"]
#: seeds' example: account 1 → A (object), 2 → production group (B, C), 3 → everything else
#: the management server's own computer: it runs an embedded agent
MANAGEMENT_SERVER = "ms1.contoso.com"
EXPECTED = {"a.contoso.com": 1, "b.contoso.com": 2, "c.contoso.com": 2, "d.contoso.com": 3}


def instance(computer: str) -> str:
    return f"Contoso.SQL.Instance:{computer};MSSQLSERVER"


def proof(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()[:16]


@pytest.fixture
def group(tmp_path: Path) -> Group:
    g = Group(tmp_path)
    g.run("init", "--name", "contoso")
    g.run("pack", "import", str(EXAMPLES / "packs" / "contoso-sql.yaml"))
    g.run("pack", "import", str(EXAMPLES / "packs" / "contoso-sql-agent.yaml"))
    g.run("discovery", "submit", str(EXAMPLES / "discovery" / "contoso-sql.yaml"))
    extra = tmp_path / "e.yaml"
    extra.write_text(
        json.dumps(
            {
                "source": "test.extra",
                "objects": [
                    {"class": "System.Computer", "key": {"name": "e.contoso.com"}},
                    {
                        "class": "Contoso.SQL.Instance",
                        "host": "System.Computer:e.contoso.com",
                        "key": {"instance": "MSSQLSERVER"},
                        "properties": {"environment": "test"},
                    },
                ],
            }
        )
    )
    g.run("discovery", "submit", str(extra))
    return g


@pytest.fixture
def passwords(group: Group) -> dict[int, str]:
    """Three accounts with canary passwords, targeted and distributed as in the seeds."""
    pw = {n: f"canary-{n}-{secrets.token_urlsafe(12)}" for n in (1, 2, 3)}
    for n, password in pw.items():
        group.run("account", "add", f"SQL account {n}", "--type", "windows",
                  "--domain", "contoso.com", "--user", f"sqlmon{n}", "--stdin",
                  stdin=password + "\n")  # fmt: skip
    group.run(
        "profile", "associate", PROFILE, "SQL account 1", "--object", instance("a.contoso.com")
    )
    group.run("profile", "associate", PROFILE, "SQL account 2", "--group",
              "Contoso.SQL.ProductionInstances")  # fmt: skip
    group.run("profile", "associate", PROFILE, "SQL account 3")
    group.run(
        "distribution", "set", "SQL account 1", "--more-secure", "--computer", "a.contoso.com"
    )
    group.run("distribution", "set", "SQL account 2", "--more-secure",
              "--computer", "b.contoso.com", "--computer", "c.contoso.com")  # fmt: skip
    # Account 3 goes to D only: E hosts an instance it would serve, but nobody approved E.
    group.run(
        "distribution", "set", "SQL account 3", "--more-secure", "--computer", "d.contoso.com"
    )
    return pw


@pytest.fixture
def server(group: Group, passwords: dict[int, str]) -> Iterator[Server]:
    s = start_server(
        group,
        env={
            "RUNAS_CREDENTIALS_GRACE": "2",
            "RUNAS_HEALTH_INTERVAL": "0.5",
            "RUNAS_COMPUTER_NAME": MANAGEMENT_SERVER,
        },
    )
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def agents(group: Group, server: Server) -> Iterator[dict[str, Agent]]:
    started = {c: start_agent(group, c, [server.agent_url]) for c in COMPUTERS}
    try:
        wait_for("five pending agents", lambda: len(_agents(group, "pending")) == len(COMPUTERS))
        for c in COMPUTERS:
            group.run("agent", "approve", c)
        yield started
    finally:
        for a in started.values():
            a.stop()


def _agents(group: Group, status: str) -> list[str]:
    return [a["id"] for a in group.json("agent", "list", "--status", status)]


def _state_text(group: Group, computer: str) -> str:
    return group.run("state", "show", instance(computer), "--json", check=False)


def _ran_as(group: Group, computer: str, n: int, password: str) -> bool:
    return f"ran as SQL account {n} (password sha256 {proof(password)})" in _state_text(
        group, computer
    )


def _cached_manifest(agent: Agent) -> list[tuple[int, int]]:
    cache = agent.data_dir / "config.json"
    if not cache.exists():
        return []
    doc = json.loads(cache.read_text())
    return list(manifest_of(base64.b64decode(doc["document"]["bundle"])).entries)


def test_the_seeds_example_runs_on_real_agents(
    group: Group, server: Server, agents: dict[str, Agent], passwords: dict[int, str]
) -> None:
    # Each computer's workflow ran with exactly the account the rules give it.
    for computer, n in EXPECTED.items():
        wait_for(f"{computer} to run as account {n}",
                 lambda c=computer, n=n: _ran_as(group, c, n, passwords[n]))  # fmt: skip
    # E: its workflow needs account 3, which is not distributed to it: nothing runs, its
    # bundle is empty, and after the grace period its Run As health says so, with an alert.
    assert "ran as" not in _state_text(group, "e.contoso.com")
    assert _cached_manifest(agents["e.contoso.com"]) == []
    health = wait_for(
        "credentials not found on E",
        lambda: "not-distributed" in group.run("health", "show", "e.contoso.com", "--json"),
    )
    assert health
    alerts = group.run("alert", "list", "--json")
    assert "e.contoso.com" in alerts
    # Each agent's bundle holds exactly its own account (the manifest is readable without
    # the key): A has 1, B and C have 2, D has 3.
    ids = {n: _account_id(group, f"SQL account {n}") for n in (1, 2, 3)}
    # The management server runs its own agent, registered without an administrator (it holds
    # the CA), which discovered its own computer: credentials can be distributed to it too.
    wait_for("the server's own agent", lambda: MANAGEMENT_SERVER in _agents(group, "approved"))
    wait_for(
        "the server's computer discovered by its agent",
        lambda: MANAGEMENT_SERVER in group.run("object", "list", "--class", "System.Computer"),
    )
    for computer, n in EXPECTED.items():
        assert [a for a, _ in _cached_manifest(agents[computer])] == [ids[n]], computer


def _account_id(group: Group, name: str) -> int:
    return int(group.json("account", "show", name)["id"])


def test_revocation_and_removal_take_secrets_away(
    group: Group, server: Server, agents: dict[str, Agent], passwords: dict[int, str]
) -> None:
    wait_for("B to run as account 2", lambda: _ran_as(group, "b.contoso.com", 2, passwords[2]))
    two = _account_id(group, "SQL account 2")
    # Revocation: B leaves account 2's distribution; its next configuration drops the secret.
    group.run("distribution", "set", "SQL account 2", "--more-secure", "--remove", "b.contoso.com")
    wait_for("B's bundle without account 2",
             lambda: two not in [a for a, _ in _cached_manifest(agents["b.contoso.com"])]
             and (agents["b.contoso.com"].data_dir / "config.json").exists())  # fmt: skip
    assert _ran_as(group, "c.contoso.com", 2, passwords[2]) or wait_for(
        "C still runs as account 2", lambda: _ran_as(group, "c.contoso.com", 2, passwords[2])
    )
    # Removal: C is removed from the management group; it erases what it held and asks to
    # enrol again.
    group.run("agent", "remove", "c.contoso.com")
    wait_for(
        "C's cache erased", lambda: not (agents["c.contoso.com"].data_dir / "config.json").exists()
    )
    wait_for("C pending again", lambda: "c.contoso.com" in _agents(group, "pending"))


def test_an_agent_certificate_gets_its_own_configuration_only(
    group: Group, server: Server, agents: dict[str, Agent], passwords: dict[int, str]
) -> None:
    wait_for("A approved and configured",
             lambda: (agents["a.contoso.com"].data_dir / "config.json").exists())  # fmt: skip
    a_dir = agents["a.contoso.com"].data_dir
    ca = group.data_dir / "agent-listener" / "agent-ca.pem"
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(a_dir / "tls.crt"), str(a_dir / "tls.key"))
    with httpx.Client(verify=ctx, trust_env=False) as client:
        doc = client.get(f"{server.agent_url}/agent/v1/config").json()
        # There is no way to ask for another agent: the identity is the certificate.
        other = client.get(f"{server.agent_url}/agent/v1/config", params={"agent": "b.contoso.com"})
    assert doc["agent"] == "a.contoso.com"
    assert other.json()["agent"] == "a.contoso.com"
    assert {w["object"] for w in doc["workflows"]} <= {
        instance("a.contoso.com"),
        "System.Computer:a.contoso.com",
    }
    # Without a certificate the listener answers enrolment only.
    plain = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(verify=plain, trust_env=False) as client:
        assert client.get(f"{server.agent_url}/agent/v1/config").status_code == 401


def test_kill_9_loses_nothing(
    group: Group, server: Server, agents: dict[str, Agent], passwords: dict[int, str]
) -> None:
    d = agents["d.contoso.com"]
    wait_for("D to run as account 3", lambda: _ran_as(group, "d.contoso.com", 3, passwords[3]))
    d.kill9()
    before = _state_text(group, "d.contoso.com")
    restarted = start_agent(group, "d.contoso.com", [server.agent_url])
    try:
        # Resumed from its cached configuration: runs again without enrolling again.
        wait_for("D to run again after kill -9",
                 lambda: _state_text(group, "d.contoso.com") != before)  # fmt: skip
        assert _ran_as(group, "d.contoso.com", 3, passwords[3])
        assert "d.contoso.com" in _agents(group, "approved")
    finally:
        restarted.stop()


def test_canary_passwords_appear_nowhere(
    group: Group, server: Server, agents: dict[str, Agent], passwords: dict[int, str]
) -> None:
    for computer, n in EXPECTED.items():
        wait_for(f"{computer} to run", lambda c=computer, n=n: _ran_as(group, c, n, passwords[n]))
    canaries = list(passwords.values())
    forms = {c: _encodings(c) for c in canaries}
    # Process command lines and environments of everything running now (agents and their
    # probes included).
    scan_processes(canaries)
    for a in agents.values():
        a.stop()
    server.stop()
    # Every file: logs, agent data directories (the bundle is sealed), the database.
    for path in group.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for encoded in forms.values():
                for e in encoded:
                    assert e not in data, f"{path} holds a canary"


def _encodings(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, base64.b64encode(raw), raw.hex().encode()]


def test_an_agent_fails_over_to_another_management_server(
    group: Group, server: Server, passwords: dict[int, str]
) -> None:
    """Two management servers on one database; the agent knows both. When the one it uses
    dies (kill -9), it carries on through the other: its workflow keeps running and its
    results keep arriving, each stored once."""
    second = start_server(group, env={"RUNAS_EMBEDDED_AGENT": "false"})
    d = start_agent(group, "d.contoso.com", [server.agent_url, second.agent_url])
    try:
        wait_for("D pending", lambda: "d.contoso.com" in _agents(group, "pending"))
        group.run("agent", "approve", "d.contoso.com")
        wait_for("D to run as account 3", lambda: _ran_as(group, "d.contoso.com", 3, passwords[3]))
        server.kill9()
        before = _state_text(group, "d.contoso.com")
        wait_for("D's results through the second server",
                 lambda: _state_text(group, "d.contoso.com") != before)  # fmt: skip
        assert _ran_as(group, "d.contoso.com", 3, passwords[3])
        assert "/agent/v1/reports" in second.log.read_text()
    finally:
        d.stop()
        second.stop()
