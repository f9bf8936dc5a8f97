"""The agent's main loop against a fake management server over real mutual TLS.

The fake implements the contract of docs/agents.md: enrolment (pending, then approved with a
certificate from the real CA), configuration with an ETag and a bundle sealed to the key the
agent enrolled with, reports, and removal (403 agent-removed)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runas.agent.identity import CONFIG_CACHE, TLS_CERT
from runas.agent.main import Agent, self_discovery
from runas.agent.settings import AgentSettings
from support.agent_documents import account, document, workflow
from support.agent_https import HttpsServer, Pki, Request, Response, problem

PASSWORD = "main-loop-secret-" + "5b1e9d"
TOKEN = "enrol-token-" + "0c8e61"


class FakeManagementServer:
    def __init__(self, pki: Pki, program: str) -> None:
        self.pki = pki
        self.program = program
        self.lock = threading.Lock()
        self.public_key: bytes | None = None
        self.enrolments = 0
        self.pending_polls = 1
        self.removed = False
        self.epoch = 1
        self.reports: dict[str, dict[str, Any]] = {}
        self.report_posts = 0

    def config(self) -> dict[str, Any]:
        assert self.public_key is not None
        return document(
            self.public_key,
            agent="a.contoso.com",
            epoch=self.epoch,
            workflows=[
                workflow(
                    "Contoso.Check",
                    "System.Computer:a.contoso.com",
                    account=account(),
                    program=sys.executable,
                    args=[self.program],
                    interval_s=0.2,
                ),
                workflow("Contoso.Script", "System.Computer:a.contoso.com", probe_type="script"),
            ],
            secrets={(3, 2): PASSWORD},
        )

    def respond(self, request: Request) -> Response:
        with self.lock:
            if request.path == "/agent/v1/enrol":
                self.enrolments += 1
                body = request.body
                assert body["agent_id"] == "a.contoso.com"
                assert body["token"] == TOKEN
                self.public_key = base64.b64decode(body["hpke_public_key"])
                if self.enrolments <= self.pending_polls:
                    return 200, {}, {"status": "pending", "certificate": None}
                self.removed = False
                cert = self.pki.ca.issue_agent_certificate(
                    body["csr"].encode(), agent_id=body["agent_id"], now=datetime.now(UTC)
                )
                return 200, {}, {"status": "approved", "certificate": cert.decode()}
            if request.agent is None:
                return problem(401, "unauthenticated")
            if self.removed:
                return problem(403, "agent-removed", "the agent was removed")
            if request.path == "/agent/v1/config":
                etag = f'"{self.epoch}.0"'
                if request.headers.get("if-none-match") == etag:
                    return 304, {"ETag": etag}, None
                return 200, {"ETag": etag}, self.config()
            if request.path == "/agent/v1/reports":
                self.report_posts += 1
                self.reports[request.body["report_id"]] = request.body
                return 200, {}, {"accepted": len(request.body["results"])}
        return problem(404, "not-found")

    def results(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for report in self.reports.values() for r in report["results"]]

    def discoveries(self) -> list[dict[str, Any]]:
        with self.lock:
            return [rep["discovery"] for rep in self.reports.values() if rep["discovery"]]


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def program(tmp_path: Path) -> str:
    path = tmp_path / "probe.py"
    path.write_text(
        "import hashlib, json, sys\n"
        "doc = json.load(sys.stdin)\n"
        "pw = doc['fields']['password']\n"
        "print(hashlib.sha256(pw.encode()).hexdigest(), pw)\n"
    )
    return str(path)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def settings_for(tmp_path: Path, pki: Pki, token_file: Path, *servers: str) -> AgentSettings:
    return AgentSettings(
        servers=servers,
        name="a.contoso.com",
        data_dir=tmp_path / "agent",
        ca_file=pki.ca_file,
        enrolment_token_file=token_file,
        poll_interval=0.1,
        report_interval=0.1,
        action_user="nobody" if os.geteuid() == 0 else None,
    )


class Running:
    def __init__(self, settings: AgentSettings) -> None:
        self.stop = threading.Event()
        self.agent = Agent(settings, stop_event=self.stop)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.agent.run()
        except BaseException as err:  # pragma: no cover - reported by finish()
            self.error = err

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


@pytest.fixture
def running() -> Iterator[Callable[[AgentSettings], Running]]:
    agents: list[Running] = []

    def start(settings: AgentSettings) -> Running:
        agents.append(Running(settings))
        return agents[-1]

    yield start
    for agent in agents:
        agent.stop.set()
        agent.thread.join(15)


def test_enrol_run_report_remove_and_resume(
    tmp_path: Path,
    pki: Pki,
    https_servers: Callable[..., HttpsServer],
    program: str,
    token_file: Path,
    running: Callable[[AgentSettings], Running],
) -> None:
    fake = FakeManagementServer(pki, program)
    server = https_servers(fake.respond, require_cert=False)
    settings = settings_for(tmp_path, pki, token_file, server.url)
    data = settings.data_dir

    # Enrols (pending, then approved), runs the workflow, reports with the contract's shape.
    agent = running(settings)
    wait_for(lambda: len(fake.results()) >= 3)
    assert fake.enrolments == 2
    assert (data / TLS_CERT).exists()
    results = fake.results()
    checks = [r for r in results if r["workflow"] == "Contoso.Check"]
    digest = hashlib.sha256(PASSWORD.encode()).hexdigest()
    assert checks[0]["message"] == f"{digest} [scrubbed]"
    assert checks[0]["scrubbed"] >= 1
    assert checks[0]["account_id"] == 3
    unavailable = [r for r in results if r["workflow"] == "Contoso.Script"]
    assert len(unavailable) == 1
    assert unavailable[0]["message"] == "probe type not available on this agent"
    assert all(report["epoch"] == 1 for report in fake.reports.values())
    assert fake.discoveries()[0] == self_discovery("a.contoso.com")
    assert fake.discoveries()[0]["objects"][0]["properties"]["domain"] == "contoso.com"

    # Removed: secrets erased (cache too), workflows stopped, back to enrolment.
    with fake.lock:
        fake.removed = True
        fake.pending_polls = fake.enrolments + 3
    wait_for(lambda: fake.enrolments >= fake.pending_polls - 1)
    assert not (data / CONFIG_CACHE).exists()
    assert not (data / TLS_CERT).exists()
    assert agent.agent.store is not None
    assert len(agent.agent.store.secrets) == 0
    assert agent.agent.scheduler is not None
    assert agent.agent.scheduler.keys == frozenset()

    # Approved again: a new configuration, with a higher epoch.
    with fake.lock:
        fake.epoch = 2
    wait_for(lambda: any(r["epoch"] == 2 and r["results"] for r in list(fake.reports.values())))
    agent.finish()

    # Nothing in the data directory holds the secret or the token in clear.
    for path in data.iterdir():
        content = path.read_bytes()
        assert PASSWORD.encode() not in content, path
        assert TOKEN.encode() not in content, path
    log = (data / "agent.log").read_text()
    assert PASSWORD not in log
    assert TOKEN not in log
    assert all(json.loads(line)["event"] for line in log.splitlines())

    # Restart (as after kill -9: the cache is there): runs at once with the cached
    # configuration, before the server says anything new (it answers 304).
    posts = len(fake.results())
    config_gets = sum(1 for r in server.requests if r.path == "/agent/v1/config")
    agent = running(settings)
    wait_for(lambda: len(fake.results()) > posts)
    agent.finish()
    later = [r for r in server.requests if r.path == "/agent/v1/config"][config_gets:]
    assert later
    assert all(r.headers.get("if-none-match") == '"2.0"' for r in later)
    assert fake.enrolments == fake.pending_polls + 1  # no new enrolment


def test_reports_are_retried_with_the_same_id_on_another_server(
    tmp_path: Path,
    pki: Pki,
    https_servers: Callable[..., HttpsServer],
    program: str,
    token_file: Path,
    running: Callable[[AgentSettings], Running],
) -> None:
    fake = FakeManagementServer(pki, program)
    fake.pending_polls = 0
    down: list[str] = []

    def flaky(request: Request) -> Response:
        if request.path == "/agent/v1/reports" and not down:
            down.append(request.body["report_id"])
            return problem(503, "unavailable")
        return fake.respond(request)

    one = https_servers(flaky, require_cert=False)
    two = https_servers(fake.respond, require_cert=False)
    agent = running(settings_for(tmp_path, pki, token_file, one.url, two.url))
    wait_for(lambda: down and down[0] in fake.reports)
    agent.finish()
    assert fake.reports[down[0]]["report_id"] == down[0]


def test_an_unsent_report_keeps_its_id_until_it_goes_through(tmp_path: Path, pki: Pki) -> None:
    from runas.agent.client import ServersUnavailable
    from runas.agent.config import ConfigStore
    from runas.agent.identity import load_identity

    class Client:
        def __init__(self) -> None:
            self.up = False
            self.sent: list[dict[str, Any]] = []

        def send_report(self, report: dict[str, Any]) -> int:
            if not self.up:
                raise ServersUnavailable("down")
            self.sent.append(report)
            return len(report["results"])

    settings = AgentSettings(servers=("https://h:1",), ca_file=pki.ca_file, name="a")
    agent = Agent(settings, stop_event=threading.Event())
    agent.store = ConfigStore(load_identity(tmp_path / "agent", "a"))
    client = Client()
    agent.outgoing.put(0, {"workflow": "W", "n": 1})
    with pytest.raises(ServersUnavailable):
        agent._send(client)  # type: ignore[arg-type]
    first_id = agent.outgoing.outbox[0]["report_id"]
    agent.outgoing.put(0, {"workflow": "W", "n": 2})
    client.up = True
    agent._send(client)  # type: ignore[arg-type]
    assert next(r["report_id"] for r in client.sent) == first_id
    assert [r["results"] for r in client.sent] == [
        [{"workflow": "W", "n": 1}],
        [{"workflow": "W", "n": 2}],
    ]
    assert not agent.outgoing.outbox
