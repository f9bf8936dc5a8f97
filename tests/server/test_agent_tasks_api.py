"""The agent listener's task routes: ``GET /agent/v1/tasks`` and
``POST /agent/v1/tasks/{target}/result``, called with a real agent certificate of the group's CA
(the TLS layer's hand-off of the client certificate is played by a tiny ASGI wrapper)."""

from __future__ import annotations

import base64
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy import select
from starlette.exceptions import StarletteDeprecationWarning

from runas.backend.local import LocalBackend
from runas.crypto.sealing import open_once
from runas.runtime import Runtime
from runas.server.agent_app import agent_routes_rules, create_agent_app
from runas.server.epochs import EpochWatcher
from runas.server.metrics import Metrics
from runas.server.settings import ServerSettings
from runas.services import agents, setup, tasks
from runas.services.discovery import DiscoveryPayload
from runas.services.resolution_memory import ResolutionMemory
from runas.services.tasks import TaskStart
from runas.settings import Settings
from runas.storage.tables import TaskTargetRow
from support.agent_asgi import CERT_HEADER, WithClientCertificate
from support.enrolling import FakeAgent, enrol_approved

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
A, B = "a.contoso.com", "b.contoso.com"
PACK = """
pack: {id: Test.AgentTasks, version: 1.0.0, display_name: Agent tasks}
workflows:
  - id: Test.AgentTasks.Ping
    kind: task
    target: System.Computer
    timeout: 1m
    parameters:
      count: {default: 2, overridable: true}
    probe: {type: command, config: {program: ping, args: ["-c", "{count}", "{name}"]}}
"""


@dataclass
class Listener:
    runtime: Runtime
    client: TestClient
    agents: dict[str, FakeAgent]

    def get(self, agent: str | None) -> Any:
        headers = {CERT_HEADER: agent} if agent else {}
        return self.client.get("/agent/v1/tasks", headers=headers)

    def post(self, agent: str, target: int | str, body: dict[str, Any]) -> Any:
        return self.client.post(
            f"/agent/v1/tasks/{target}/result", json=body, headers={CERT_HEADER: agent}
        )

    def start(self, *computers: str, **kw: Any) -> tasks.TaskRunView:
        req = TaskStart(
            task="Test.AgentTasks.Ping",
            targets=[f"System.Computer:{c}" for c in computers],
            **kw,
        )
        with self.runtime.unit_of_work() as uow:
            return tasks.start(uow, req, principal=None)


@pytest.fixture
def listener(tmp_path: Path, sqlite_url: str) -> Iterator[Listener]:
    settings = Settings(data_dir=tmp_path / "runas-data", database_url=sqlite_url, actor="test")
    runtime = Runtime(settings, env={})
    setup.init(runtime, "MG1")
    backend = LocalBackend(runtime)
    backend.pack_import((EXAMPLES / "packs" / "contoso-sql.yaml").read_text(), "sql.yaml")
    backend.pack_import(PACK, "tasks.yaml")
    payload = yaml.safe_load((EXAMPLES / "discovery" / "contoso-sql.yaml").read_text())
    backend.discovery_submit(DiscoveryPayload.model_validate(payload))
    fakes = {name: FakeAgent(name) for name in (A, B)}
    certificates = {name: enrol_approved(runtime, fake) for name, fake in fakes.items()}
    app = create_agent_app(
        runtime,
        ServerSettings(),
        epochs=EpochWatcher(runtime.database),
        metrics=Metrics(),
        memory=ResolutionMemory(),
    )
    client = TestClient(WithClientCertificate(app, certificates), raise_server_exceptions=False)
    try:
        with client:
            yield Listener(runtime, client, fakes)
    finally:
        runtime.close()


def result(**fields: Any) -> dict[str, Any]:
    return {
        "state": "healthy",
        "message": "2 packets",
        "exit_code": 0,
        "timed_out": False,
        "output": "PING ok",
        "started_at": datetime.now(UTC).isoformat(),
        "duration_s": 0.25,
        "auth_failure": None,
        "scrubbed": 0,
        **fields,
    }


def test_an_agent_takes_its_documents_once_and_reports_each(listener: Listener) -> None:
    assert listener.get(A).json() == {"tasks": []}
    run = listener.start(A, B, overrides={"count": "5"})
    answer = listener.get(A)
    assert answer.status_code == 200, answer.text
    (doc,) = answer.json()["tasks"]
    assert (doc["run"], doc["object"]) == (run.id, f"System.Computer:{A}")
    assert doc["parameters"] == {"count": "5"}
    assert doc["probe"]["config"]["args"] == ["-c", "{count}", "{name}"]
    assert (doc["timeout_s"], doc["account"], doc["credentials"]) == (60, None, None)
    assert listener.get(A).json() == {"tasks": []}  # not served again

    # only the agent the target belongs to may report it
    assert listener.post(B, doc["target"], result()).status_code == 404
    assert listener.post(A, 999_999, result()).status_code == 404
    accepted = listener.post(A, doc["target"], result())
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"accepted": True}
    assert listener.post(A, doc["target"], result(state="critical")).json() == {"accepted": False}

    (doc_b,) = listener.get(B).json()["tasks"]
    assert listener.post(B, doc_b["target"], result(state="critical")).json() == {"accepted": True}
    with listener.runtime.unit_of_work(read_only=True) as uow:
        shown = tasks.show(uow.session, run.id, principal=None, with_output=True)
    assert [(t.computer, t.status, t.output) for t in shown.targets] == [
        (A, "succeeded", "PING ok"),
        (B, "failed", "PING ok"),
    ]
    assert shown.status == "failed"


def test_supplied_credentials_reach_the_agent_sealed(listener: Listener) -> None:
    canary = "agent-route-canary-91b2"
    run = listener.start(
        A,
        credentials=tasks.SuppliedCredentials(user="ops", password=SecretStr(canary)),
    )
    answer = listener.get(A)
    assert canary not in answer.text
    (doc,) = answer.json()["tasks"]
    creds = doc["credentials"]
    assert (creds["type"], creds["user"], creds["domain"]) == ("simple", "ops", None)
    opened = open_once(
        listener.agents[A].hpke,
        base64.b64decode(creds["sealed"]),
        agent_id=A,
        purpose="task-credentials",
        run_id=f"{run.id}:{doc['target']}",
    )
    assert opened["password"] == canary


def test_the_routes_need_an_approved_agents_certificate(listener: Listener) -> None:
    assert listener.get(None).status_code == 401
    assert listener.client.post("/agent/v1/tasks/1/result", json=result()).status_code == 401
    listener.start(A)
    with listener.runtime.unit_of_work() as uow:
        agents.reject(uow, A)
    refused = listener.get(A)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("agent-not-approved")
    with listener.runtime.unit_of_work(read_only=True) as uow:
        (pending,) = uow.session.scalars(
            select(TaskTargetRow.status).where(TaskTargetRow.computer == A)
        )
    assert pending == "pending"  # nothing was handed out


def test_a_malformed_result_is_refused(listener: Listener) -> None:
    listener.start(A)
    (doc,) = listener.get(A).json()["tasks"]
    for bad in (result(state="fine"), result(duration_s=-1), result(extra=1)):
        assert listener.post(A, doc["target"], bad).status_code == 422
    assert listener.post(A, "x", result()).status_code == 422


def test_each_task_route_has_exactly_the_agent_rule(listener: Listener) -> None:
    app = create_agent_app(
        listener.runtime,
        ServerSettings(),
        epochs=EpochWatcher(listener.runtime.database),
        metrics=Metrics(),
        memory=ResolutionMemory(),
    )
    found = agent_routes_rules(app)
    for path in ("/agent/v1/tasks", "/agent/v1/tasks/{target}/result"):
        (rule,) = found[path]
        assert rule.agent


def test_configurations_are_built_a_few_at_a_time(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from runas.server import agent_app

    active = 0
    most = 0
    lock = threading.Lock()
    original = agent_app.agent_config.build

    def slow_build(*args: Any, **kwargs: Any) -> Any:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.2)
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(agent_app.agent_config, "build", slow_build)
    codes: list[int] = []

    def fetch(agent: str) -> None:
        answer = listener.client.get("/agent/v1/config", headers={CERT_HEADER: agent})
        codes.append(answer.status_code)

    threads = [threading.Thread(target=fetch, args=(n,)) for n in (A, B, A, B, A, B)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert codes == [200] * 6
    assert most == agent_app.BUILDERS < len(threads)
