"""Every account variant of issue 5's probe table, end to end on real processes.

The ``test_<probe>_probe_e2e.py`` modules prove one variant per probe (basic on PostgreSQL and
Apache, a unix-monitoring password on OpenSSH, a ``DOMAIN\\user`` windows account on OpenLDAP, a
community on net-snmp). This module proves the others the same way: one ``runas server``, one
``runas agent run`` standing for the computer that reaches the peer, the sample pack with short
schedules, and one object per variant on that computer, each with its own Run As account
(associated to that object only, distributed to that computer only):

* sql — simple, windows (user part);
* http — digest, binary (a PEM client certificate and its key);
* ssh — unix-monitoring with passwordless sudo; unix-maintenance with a password (privileged),
  with an SSH key, with an encrypted SSH key and its passphrase, with sudo, and with su (its own
  password, to a throwaway target user);
* ldap — windows resolved by its UPN (the entry's sAMAccountName differs), simple with a DN,
  simple with a UPN;
* snmp — SNMPv3 noAuthNoPriv, authNoPriv (SHA), authPriv (SHA + AES).

For each variant: the workflow on its object classifies it and the account's Run As health on
the computer is ok; a wrong password / key / passphrase / user makes that health *logon failed*
(a wrong su password: *elevation failed*) with an open alert for that account; the right one
again closes the alert *and* the health shows a successful check made with the fixed credential
(not merely a stale report set aside). Every canary secret (right and wrong) is searched for in
every process's command line and environment while everything runs, then in every file runas
produced and everything the CLI printed.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from support.canaries import encodings, scan_processes
from support.fleet import Agent, Group, Server, start_agent, start_server, wait_for
from support.peers import postgresql
from support.peers.apache import Apache
from support.peers.postgresql import ScramPostgres
from support.peers.slapd import (
    DOMAIN,
    SUFFIX,
    USERS_OU,
    DirectoryComputer,
    DirectoryUser,
    slapd_running,
)
from support.peers.snmpd import UsmUser, snmpd_running
from support.peers.sshd import Sshd, running_sshd

pytestmark = [pytest.mark.server, pytest.mark.agents, pytest.mark.peer, pytest.mark.slow]

PACKS = Path(__file__).resolve().parents[2] / "examples" / "packs"
#: each CLI call is a Python process (seconds on a busy machine): generous waits
WAIT = 120.0
SCHEDULE = re.compile(r"schedule: \{[^}]*\}")


@dataclass
class Row:
    """One account variant: its object on the computer, its account and how to break it."""

    account: str
    #: the object's key and properties (its class is the test's)
    key: dict[str, Any]
    properties: dict[str, Any]
    #: ``account add`` options after the name (type, user, …) and the secrets (JSON on stdin)
    add: list[str]
    right: dict[str, str]
    #: how to break it: ``account update`` options and secrets (None: no new secret version)
    wrong_options: list[str] = field(default_factory=list)
    wrong: dict[str, str] | None = None
    #: how to fix it: ``account update`` options (the right secrets are given again if any)
    fix_options: list[str] = field(default_factory=list)
    #: the Run As health state a wrong credential gives
    failed: str = "logon-failed"
    #: texts that must never leave the agent's memory (both the right and the wrong secrets)
    canaries: list[str] = field(default_factory=list)


@dataclass
class RecordingGroup(Group):
    """A group whose CLI output is kept, to search it for canaries afterwards."""

    printed: list[str] = field(default_factory=list)

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        out = super().run(*args, stdin=stdin, check=check)
        self.printed.append(out)
        return out


def _fast_pack(group: Group, pack: Path, schedule: str, edit: Callable[[str], str] | None) -> Path:
    text = pack.read_text()
    assert SCHEDULE.search(text)
    text = SCHEDULE.sub(f"schedule: {schedule}", text)
    if edit is not None:
        text = edit(text)
    path = group.root / f"{pack.stem}-fast.yaml"
    path.write_text(text)
    return path


def _object_name(cls: str, computer: str, key: dict[str, Any]) -> str:
    return f"{cls}:{computer};{';'.join(str(v) for v in key.values())}"


def _set_up(
    group: RecordingGroup,
    *,
    pack: Path,
    schedule: str,
    cls: str,
    profile: str,
    computer: str,
    rows: Sequence[Row],
    edit: Callable[[str], str] | None = None,
) -> None:
    group.root.mkdir(parents=True, exist_ok=True)
    group.run("init", "--name", "rows")
    group.run("pack", "import", str(_fast_pack(group, pack, schedule, edit)))
    objects = [{"class": "System.Computer", "key": {"name": computer}}]
    objects += [
        {"class": cls, "host": f"System.Computer:{computer}", "key": row.key,
         "properties": row.properties}
        for row in rows
    ]  # fmt: skip
    discovery = group.root / "objects.json"
    discovery.write_text(json.dumps({"source": "test.rows", "objects": objects}))
    group.run("discovery", "submit", str(discovery))
    for row in rows:
        group.run("account", "add", row.account, *row.add, "--stdin-json",
                  stdin=json.dumps(row.right))  # fmt: skip
        group.run("profile", "associate", profile, row.account, "--object",
                  _object_name(cls, computer, row.key))  # fmt: skip
        group.run("distribution", "set", row.account, "--more-secure", "--computer", computer)


@pytest.fixture
def fleet() -> Iterator[Callable[[Group, str], tuple[Server, Agent]]]:
    """Start the server and one approved agent for a computer; stopped afterwards."""
    started: list[Server | Agent] = []

    def start(group: Group, computer: str) -> tuple[Server, Agent]:
        server = start_server(
            group, env={"RUNAS_HEALTH_INTERVAL": "0.5", "RUNAS_EMBEDDED_AGENT": "false"}
        )
        started.append(server)
        agent = start_agent(group, computer, [server.agent_url])
        started.append(agent)
        wait_for("the agent to ask to enrol", lambda: computer in group.run("agent", "list"),
                 timeout=WAIT)  # fmt: skip
        group.run("agent", "approve", computer)
        return server, agent

    try:
        yield start
    finally:
        for process in reversed(started):
            process.stop()


def _health(group: Group, computer: str) -> dict[str, dict[str, Any]]:
    return {str(r["account"]): r for r in group.json("health", "show", computer)}


def _open_alerts(group: Group, computer: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for alert in group.json("alert", "list", "--computer", computer):
        out.setdefault(str(alert.get("account")), []).append(alert)
    return out


def _wait_all(
    what: str, rows: Sequence[Row], refresh: Callable[[], object], check: Callable[[Row], bool]
) -> None:
    """Poll: ``refresh`` once, then ``check`` every row; fail naming the rows still left."""

    def left() -> list[str]:
        refresh()
        return [row.account for row in rows if not check(row)]

    last: list[str] = []

    def done() -> bool:
        last[:] = left()
        return not last

    try:
        wait_for(what, done, timeout=WAIT, every=0.5)
    except AssertionError as err:
        raise AssertionError(f"{err}; still waiting for {last}") from None


def _workflow(group: Group, full_name: str, workflow: str) -> dict[str, Any] | None:
    """The object's state for one workflow, or None while it has none."""
    text = group.run("state", "show", full_name, "--json", check=False)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None
    for row in doc.get("workflows", []) if isinstance(doc, dict) else []:
        if row.get("workflow") == workflow:
            return dict(row)
    return None


def _exercise(
    group: RecordingGroup,
    server: Server,
    agent: Agent,
    computer: str,
    cls: str,
    monitor: str,
    rows: Sequence[Row],
    *,
    classified: Sequence[str] = ("healthy",),
    skip_pids: Sequence[int] = (),
) -> None:
    """Right → ok; wrong → failed state with an alert; right again → a new ok check, closed."""
    canaries = [c for row in rows for c in row.canaries]
    assert all(canaries), "a row without canaries proves nothing"
    health: dict[str, dict[str, Any]] = {}

    def refresh_health() -> dict[str, dict[str, Any]]:
        health.clear()
        health.update(_health(group, computer))
        return health

    def state_of(row: Row) -> dict[str, Any] | None:
        return _workflow(group, _object_name(cls, computer, row.key), monitor)

    # 1. The right credentials: every monitor classifies its object, every account is ok.
    def ok_now(row: Row) -> bool:
        got = health.get(row.account, {})
        return got.get("state") == "ok" and got.get("last_report") == "ok"

    _wait_all("every account checked ok", rows, refresh_health, ok_now)
    for row in rows:
        state = wait_for(f"{monitor} on {row.account}'s object classified",
                         lambda r=row: (s := state_of(r)) and s.get("state") in classified and s,
                         timeout=WAIT)  # fmt: skip
        assert state["account"] == row.account, state
    assert not (set(_open_alerts(group, computer)) & {r.account for r in rows})
    scan_processes(canaries, skip_pids)

    # 2. The wrong ones: each account's health turns to its failed state, with an alert.
    for row in rows:
        secrets_in = [] if row.wrong is None else ["--stdin-json"]
        group.run("account", "update", row.account, *row.wrong_options, *secrets_in,
                  stdin=None if row.wrong is None else json.dumps(row.wrong))  # fmt: skip

    def failed_now(row: Row) -> bool:
        return health.get(row.account, {}).get("state") == row.failed

    _wait_all("every account's health failed", rows, refresh_health, failed_now)
    failed_versions = {
        row.account: health[row.account].get("last_report_secret_version") for row in rows
    }
    alerts: dict[str, list[dict[str, Any]]] = {}

    def alerted(row: Row) -> bool:
        return any(a.get("state") == row.failed for a in alerts.get(row.account, []))

    def refresh_alerts() -> None:
        alerts.clear()
        alerts.update(_open_alerts(group, computer))

    _wait_all("an open alert per account", rows, refresh_alerts, alerted)
    for row in rows:
        assert health[row.account]["last_report"] == row.failed, health[row.account]
        # (a run on a loaded machine may end unknown — out of time — in between: it proves
        # nothing about the credential, the next one is critical again)
        seen: list[dict[str, Any] | None] = [None]

        def critical(row: Row = row, seen: list[dict[str, Any] | None] = seen) -> bool:
            seen[0] = state_of(row)
            return seen[0] is not None and seen[0].get("state") == "critical"

        try:
            wait_for(f"{monitor} critical for {row.account}", critical, timeout=WAIT)
        except AssertionError as err:
            raise AssertionError(f"{err}; the last state: {seen[0]}") from None
    scan_processes(canaries, skip_pids)

    # 3. The right ones again: a successful check with the fixed credential, the alert closed.
    for row in rows:
        secrets_in = ["--stdin-json"] if row.wrong is not None else []
        group.run("account", "update", row.account, *row.fix_options, *secrets_in,
                  stdin=json.dumps(row.right) if row.wrong is not None else None)  # fmt: skip

    def fixed_now(row: Row) -> bool:
        got = health.get(row.account, {})
        version = got.get("last_report_secret_version")
        before = failed_versions[row.account]
        newer = version is None or before is None or version > before or row.wrong is None
        return got.get("state") == "ok" and got.get("last_report") == "ok" and newer

    _wait_all("every account checked ok again", rows, refresh_health, fixed_now)
    _wait_all("every alert closed", rows, refresh_alerts, lambda r: not alerts.get(r.account))
    closed = group.json("alert", "list", "--all", "--computer", computer)
    for row in rows:
        mine = [a for a in closed if a.get("account") == row.account]
        assert mine, f"no alert was ever raised for {row.account}"
        assert all(a.get("closed_at") for a in mine), mine
    scan_processes(canaries, skip_pids)
    for row in rows:
        group.run("state", "show", _object_name(cls, computer, row.key), "--json")
    group.run("health", "show", computer, "--json")

    # 4. Afterwards: every file runas produced, everything the CLI printed.
    agent.stop()
    server.stop()
    printed = "\n".join(group.printed).encode()
    files = [p for p in group.root.rglob("*") if p.is_file()]
    assert any(p.name.startswith("agent-") for p in files)
    for canary in canaries:
        for form in encodings(canary):
            assert form not in printed, "the CLI printed a canary"
            for path in files:
                assert form not in path.read_bytes(), f"{path} holds a canary"


def _canary(label: str) -> str:
    return f"canary-{label}-{secrets.token_urlsafe(12)}"


# -- sql ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[ScramPostgres]:
    with postgresql.running() as server:
        yield server


def test_sql_simple_and_windows_accounts(
    tmp_path: Path, pg: ScramPostgres, fleet: Callable[[Group, str], tuple[Server, Agent]]
) -> None:
    computer = "db2.contoso.com"
    rows = []
    for kind, extra in (("simple", []), ("windows", ["--domain", "contoso.com"])):
        right, wrong = _canary(f"pg-{kind}"), _canary(f"pg-{kind}-wrong")
        role = pg.create_role(right, grants="pg_monitor")
        database = f"rows_{kind}"
        pg.create_database(database)
        rows.append(
            Row(f"PostgreSQL {kind}", {"database": database},
                {"host": pg.host, "port": pg.port},
                ["--type", kind, *extra, "--user", role], {"password": right},
                wrong={"password": wrong}, canaries=[right, wrong])
        )  # fmt: skip
    group = RecordingGroup(tmp_path / "runas")
    cls = "Runas.PostgreSQL.Database"
    _set_up(group, pack=PACKS / "runas-postgresql.yaml", schedule="{interval: 3s, timeout: 3s}",
            cls=cls, profile="Runas.PostgreSQL.MonitoringProfile", computer=computer,
            rows=rows)  # fmt: skip
    server, agent = fleet(group, computer)
    _exercise(group, server, agent, computer, cls, "Runas.PostgreSQL.DatabaseAvailability", rows)


# -- http --------------------------------------------------------------------------------------


def _key_lines(pem: bytes) -> list[str]:
    """The base64 lines of the private key in a PEM bundle (what must never leak)."""
    text = pem.decode()
    start = text.index("PRIVATE KEY-----")
    body = text[start:].split("\n")[1:]
    return [line for line in body if line and not line.startswith("-----")][:2]


def test_http_digest_and_client_certificate_accounts(
    tmp_path: Path, fleet: Callable[[Group, str], tuple[Server, Agent]]
) -> None:
    computer = "web2.runas.test"
    right, wrong = _canary("digest"), _canary("digest-wrong")
    apache = Apache.start(basic_users={}, digest_users={"digestmon": right})
    try:
        good = apache.pki.client.bundle
        foreign = apache.pki.foreign_client.bundle
        rows = [
            Row("Web digest", {"site": "digest"},
                {"url": f"{apache.http_url}/digest/", "expect": "digest ok", "ca_file": ""},
                ["--type", "digest", "--user", "digestmon"], {"password": right},
                wrong={"password": wrong}, canaries=[right, wrong]),
            Row("Web certificate", {"site": "certificate"},
                {"url": f"{apache.https_url}/", "expect": "open page",
                 "ca_file": str(apache.ca_file)},
                ["--type", "binary"], {"data": good.decode()},
                wrong={"data": foreign.decode()},
                canaries=[*_key_lines(good), *_key_lines(foreign)]),
        ]  # fmt: skip
        group = RecordingGroup(tmp_path / "runas")
        cls = "Runas.Web.Site"
        _set_up(group, pack=PACKS / "runas-web.yaml", schedule="{interval: 3s, timeout: 3s}",
                cls=cls, profile="Runas.Web.SiteProfile", computer=computer,
                rows=rows)  # fmt: skip
        server, agent = fleet(group, computer)
        _exercise(group, server, agent, computer, cls, "Runas.Web.SiteAvailability", rows)
    finally:
        apache.stop()


# -- ssh ---------------------------------------------------------------------------------------


def _b64_key_lines(key: bytes) -> list[str]:
    lines = [line for line in key.decode().splitlines() if line and not line.startswith("-")]
    return [line for line in lines if ":" not in line][:2]


def test_ssh_elevations_keys_and_maintenance_accounts(
    tmp_path: Path, fleet: Callable[[Group, str], tuple[Server, Agent]]
) -> None:
    computer = "mon2.contoso.com"
    with running_sshd(tmp_path / "peer") as sshd:
        _ssh_rows(tmp_path, sshd, computer, fleet)


def _ssh_rows(
    tmp_path: Path, sshd: Sshd, computer: str, fleet: Callable[[Group, str], tuple[Server, Agent]]
) -> None:
    mon, target = sshd.user("mon"), sshd.user("tgt")
    key_user = sshd.user("key").name
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_private_key()
    wrong_pw = {name: _canary(f"ssh-{name}-wrong") for name in ("sudo", "priv", "msudo")}
    wrong_passphrase = _canary("passphrase-wrong")
    wrong_su = _canary("su-wrong")
    where = {"ssh_host": sshd.host, "ssh_port": sshd.port}

    def host(name: str) -> dict[str, Any]:
        return {"hostname": f"{name}.linux.test"}

    rows = [
        Row("Linux monitoring sudo", host("sudo"), where,
            ["--type", "unix-monitoring", "--user", mon.name, "--elevation", "sudo"],
            {"password": mon.password}, wrong={"password": wrong_pw["sudo"]},
            canaries=[mon.password, wrong_pw["sudo"]]),
        Row("Linux maintenance password", host("priv"), where,
            ["--type", "unix-maintenance", "--user", mon.name, "--elevation", "privileged"],
            {"password": mon.password}, wrong={"password": wrong_pw["priv"]},
            canaries=[mon.password, wrong_pw["priv"]]),
        Row("Linux maintenance sudo", host("msudo"), where,
            ["--type", "unix-maintenance", "--user", mon.name, "--elevation", "sudo"],
            {"password": mon.password}, wrong={"password": wrong_pw["msudo"]},
            canaries=[mon.password, wrong_pw["msudo"]]),
        Row("Linux maintenance key", host("key"), where,
            ["--type", "unix-maintenance", "--user", key_user, "--elevation", "privileged"],
            {"ssh_key": sshd.key.decode()}, wrong={"ssh_key": stranger.decode()},
            canaries=[*_b64_key_lines(sshd.key), *_b64_key_lines(stranger)]),
        Row("Linux maintenance key passphrase", host("passphrase"), where,
            ["--type", "unix-maintenance", "--user", key_user, "--elevation", "privileged"],
            {"ssh_key": sshd.openssh_encrypted_key.decode(), "passphrase": sshd.key_passphrase},
            wrong={"ssh_key": sshd.openssh_encrypted_key.decode(),
                   "passphrase": wrong_passphrase},
            canaries=[*_b64_key_lines(sshd.openssh_encrypted_key), sshd.key_passphrase,
                      wrong_passphrase]),
        Row("Linux maintenance su", host("su"), where,
            ["--type", "unix-maintenance", "--user", mon.name, "--elevation", "su"],
            {"password": mon.password, "su_password": target.password},
            wrong={"password": mon.password, "su_password": wrong_su},
            failed="elevation-failed", canaries=[mon.password, target.password, wrong_su]),
    ]  # fmt: skip
    # su elevates to a throwaway target, never to root (whose password the tests never touch):
    # every workflow of the pack says so.
    port = '        port: "{ssh_port}"\n'

    def edit(text: str) -> str:
        assert text.count(port) == 3
        return text.replace(port, f"{port}        su_user: {target.name}\n")

    group = RecordingGroup(tmp_path / "runas")
    cls = "Runas.Linux.Host"
    _set_up(group, pack=PACKS / "runas-linux.yaml", schedule="{interval: 8s, timeout: 8s}",
            cls=cls, profile="Runas.Linux.MonitoringProfile", computer=computer, rows=rows,
            edit=edit)  # fmt: skip
    server, agent = fleet(group, computer)
    # No trust on first use: nothing runs until the host key is approved by its fingerprint.
    wait_for("the host key pending",
             lambda: [r for r in group.json("ssh-host", "list", "--pending")
                      if r["port"] == sshd.port], timeout=WAIT)  # fmt: skip
    group.run("ssh-host", "approve", f"{sshd.host}:{sshd.port}", "--fingerprint", sshd.fingerprint)
    _exercise(group, server, agent, computer, cls, "Runas.Linux.RootFilesystem", rows,
              classified=("healthy", "warning", "critical"))  # fmt: skip


# -- ldap --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpnOnlyUser(DirectoryUser):
    """A user whose UPN is not its sAMAccountName: only a UPN lookup finds it."""

    upn_name: str = ""

    @property
    def upn(self) -> str:
        return f"{self.upn_name}@{DOMAIN}"


def test_ldap_upn_and_simple_accounts(
    tmp_path: Path, fleet: Callable[[Group, str], tuple[Server, Agent]]
) -> None:
    computer = "dc02.contoso.com"
    pw = {name: _canary(f"ldap-{name}") for name in ("upn", "dn", "simple-upn")}
    wrong = {name: _canary(f"ldap-{name}-wrong") for name in pw}
    users = [
        UpnOnlyUser("svc-upn", pw["upn"], upn_name="monitor.upn"),
        DirectoryUser("svc-dn", pw["dn"]),
        DirectoryUser("svc-simple", pw["simple-upn"]),
    ]
    computers = (DirectoryComputer("app01.contoso.com", "Windows Server 2022 Standard"),)
    with slapd_running(users, computers) as directory:
        where = {"server": directory.host, "port": directory.port, "base": SUFFIX}

        def domain(name: str) -> dict[str, Any]:
            return {"domain": f"{name}.{DOMAIN}"}

        rows = [
            Row("Directory windows UPN", domain("upn"), where,
                ["--type", "windows", "--domain", DOMAIN, "--user", "monitor.upn"],
                {"password": pw["upn"]}, wrong={"password": wrong["upn"]},
                canaries=[pw["upn"], wrong["upn"]]),
            Row("Directory simple DN", domain("dn"), where,
                ["--type", "simple", "--user", f"cn=svc-dn,{USERS_OU}"],
                {"password": pw["dn"]}, wrong={"password": wrong["dn"]},
                canaries=[pw["dn"], wrong["dn"]]),
            Row("Directory simple UPN", domain("simple"), where,
                ["--type", "simple", "--user", f"svc-simple@{DOMAIN}"],
                {"password": pw["simple-upn"]}, wrong={"password": wrong["simple-upn"]},
                canaries=[pw["simple-upn"], wrong["simple-upn"]]),
        ]  # fmt: skip
        group = RecordingGroup(tmp_path / "runas")
        cls = "Runas.Directory.Domain"
        _set_up(group, pack=PACKS / "runas-directory.yaml",
                schedule="{interval: 3s, timeout: 3s}", cls=cls,
                profile="Runas.Directory.DiscoveryProfile", computer=computer, rows=rows,
                edit=lambda text: text.replace("tls: start", "tls: none"))  # fmt: skip
        server, agent = fleet(group, computer)
        # Each account binds as its own entry (the windows one found by its UPN alone).
        monitor = "Runas.Directory.BindAndSearch"
        for row, dn in zip(rows, ("svc-upn", "svc-dn", "svc-simple"), strict=True):
            name = _object_name(cls, computer, row.key)
            state = wait_for(f"{row.account} bound",
                             lambda n=name: (w := _workflow(group, n, monitor))
                             and w.get("state") == "healthy" and w, timeout=WAIT)  # fmt: skip
            assert f"bound as cn={dn},{USERS_OU}" in state["message"], state
        # The system discovery turned the directory's computer entry into a computer object.
        wait_for("the directory's computer discovered",
                 lambda: "Runas.Directory.Computer:app01.contoso.com"
                 in group.run("object", "list", "--class", "Runas.Directory.Computer", "--json"),
                 timeout=WAIT)  # fmt: skip
        _exercise(group, server, agent, computer, cls, monitor, rows)


# -- snmp --------------------------------------------------------------------------------------


def test_snmpv3_security_levels(
    tmp_path: Path, fleet: Callable[[Group, str], tuple[Server, Agent]]
) -> None:
    computer = "nms2.runas.test"
    keys = {name: _canary(f"snmp-{name}") for name in ("auth", "priv-auth", "priv")}
    wrong = {name: _canary(f"snmp-{name}-wrong") for name in ("auth", "priv")}
    users = (
        UsmUser("rtxrownoauth"),
        UsmUser("rtxrowauth", "SHA", keys["auth"]),
        UsmUser("rtxrowpriv", "SHA", keys["priv-auth"], "AES", keys["priv"]),
    )
    community = _canary("community")
    with snmpd_running(community, users) as agent_peer:
        where = {"address": agent_peer.host, "port": agent_peer.port}
        rows = [
            # noAuthNoPriv has no secret: the wrong credential is a user the agent does not know.
            Row("SNMPv3 noAuthNoPriv", {"device": "noauth"}, where,
                ["--type", "snmpv3", "--user", "rtxrownoauth"], {},
                wrong_options=["--user", "rtxrownobody"], wrong=None,
                fix_options=["--user", "rtxrownoauth"], canaries=[community]),
            Row("SNMPv3 authNoPriv", {"device": "auth"}, where,
                ["--type", "snmpv3", "--user", "rtxrowauth", "--auth-protocol", "SHA"],
                {"auth_key": keys["auth"]}, wrong={"auth_key": wrong["auth"]},
                canaries=[keys["auth"], wrong["auth"]]),
            Row("SNMPv3 authPriv", {"device": "priv"}, where,
                ["--type", "snmpv3", "--user", "rtxrowpriv", "--auth-protocol", "SHA",
                 "--priv-protocol", "AES"],
                {"auth_key": keys["priv-auth"], "priv_key": keys["priv"]},
                wrong={"auth_key": keys["priv-auth"], "priv_key": wrong["priv"]},
                canaries=[keys["priv-auth"], keys["priv"], wrong["priv"]]),
        ]  # fmt: skip
        group = RecordingGroup(tmp_path / "runas")
        cls = "Runas.Network.Device"
        _set_up(group, pack=PACKS / "runas-network.yaml",
                schedule="{interval: 5s, timeout: 5s}", cls=cls,
                profile="Runas.Network.SnmpProfile", computer=computer, rows=rows)  # fmt: skip
        server, agent = fleet(group, computer)
        # (the device monitor is warning: sysUpTime is seconds, under the pack's threshold)
        monitor = "Runas.Network.DeviceAvailability"
        skip = [agent_peer.process.pid]
        _exercise(group, server, agent, computer, cls, monitor, rows,
                  classified=("healthy", "warning"), skip_pids=skip)  # fmt: skip
