"""Tasks on the agent: task documents run through the worker on real processes, results posted
(and posted again after an outage) through a fake client, and once through the whole agent."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.exceptions import StarletteDeprecationWarning

from runas.agent.client import AgentRevoked, ManagementClient, ServersUnavailable
from runas.agent.config import ConfigStore
from runas.agent.identity import load_identity
from runas.agent.main import Agent
from runas.agent.scheduler import Scheduler
from runas.agent.settings import AgentSettings
from runas.agent.tasks import (
    CREDENTIALS_PURPOSE,
    DEADLINE_PASSED,
    OUTPUT_LIMIT,
    TaskRunner,
    parse_task,
)
from runas.agent.worker import Worker
from runas.backend.local import LocalBackend
from runas.crypto.sealing import seal_once
from runas.errors import InvalidInput, NotFound
from runas.runtime import Runtime
from runas.server.agent_app import create_agent_app
from runas.server.agent_listener import TLS_EXTENSION
from runas.server.epochs import EpochWatcher
from runas.server.metrics import Metrics
from runas.server.settings import ServerSettings
from runas.services import setup
from runas.services import tasks as task_service
from runas.services.discovery import DiscoveryPayload
from runas.services.resolution_memory import ResolutionMemory
from runas.settings import Settings
from support.agent_documents import account, document
from support.agent_https import HttpsServer, Pki, Request, Response, problem
from support.enrolling import FakeAgent, enrol_approved

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

AGENT = "a.contoso.com"
RUN = "4d3c2b1a-0000-4000-8000-000000000001"
BUNDLE_PASSWORD = "Bundle-Secret-" + "a91c07e3f2"
SUPPLIED_PASSWORD = "Typed-In-Secret-" + "58d0b6e4c1"

# Proves what it received by SHA-256, prints its arguments and its credential's identity, and
# leaks the password on stdout and stderr (the agent must scrub it from the output).
PROGRAM = textwrap.dedent(
    """
    import hashlib, json, sys
    doc = json.load(sys.stdin)
    fields = doc.get("fields", {})
    password = fields.get("password", "")
    print("type=" + doc["type"], "user=" + fields.get("user", "-"),
          "domain=" + fields.get("domain", "-"), "args=" + ",".join(sys.argv[1:]))
    print("sha256=" + hashlib.sha256(password.encode()).hexdigest())
    print("leak " + password)
    print("err " + password, file=sys.stderr)
    sys.exit(1 if doc["type"] == "none" else 0)
    """
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> ConfigStore:
    store = ConfigStore(load_identity(tmp_path / "agent", AGENT))
    key = store.identity.keys.public_bytes()
    store.accept(document(key, agent=AGENT, secrets={(3, 2): BUNDLE_PASSWORD}))
    return store


@pytest.fixture
def program(tmp_path: Path) -> str:
    path = tmp_path / "task.py"
    path.write_text(PROGRAM)
    return str(path)


class FakeClient:
    """The two calls the runner makes; ``outage`` result posts fail first."""

    def __init__(self, docs: list[Any] | None = None, *, outage: int = 0) -> None:
        self.docs = list(docs or [])
        self.outage = outage
        self.fetches = 0
        self.posted: dict[int, dict[str, Any]] = {}
        self.attempts = 0
        self.refuse: Exception | None = None
        self.lock = threading.Lock()

    def fetch_tasks(self) -> list[Any]:
        self.fetches += 1
        docs, self.docs = self.docs, []
        return docs

    def send_task_result(self, target: int, result: Mapping[str, Any]) -> bool:
        with self.lock:
            self.attempts += 1
            if self.refuse is not None:
                raise self.refuse
            if self.outage > 0:
                self.outage -= 1
                raise ServersUnavailable("no management server answered (last: x: HTTP 503)")
            if target in self.posted:
                return False
            self.posted[target] = json.loads(json.dumps(dict(result)))
            return True


def task_doc(
    program: str,
    *,
    target: int = 17,
    args: list[str] | None = None,
    properties: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    account_doc: Mapping[str, Any] | None = None,
    credentials: Mapping[str, Any] | None = None,
    deadline: datetime | None = None,
    timeout_s: float = 30,
) -> dict[str, Any]:
    return {
        "run": RUN,
        "target": target,
        "task": "Contoso.Task.Check",
        "object": f"System.Computer:{AGENT}",
        "properties": dict(properties or {}),
        "parameters": dict(parameters or {}),
        "probe": {"type": "command", "config": {"program": sys.executable, "args": [program]}}
        if args is None
        else {"type": "command", "config": {"program": sys.executable, "args": [program, *args]}},
        "timeout_s": timeout_s,
        "deadline": (deadline or datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
        "account": dict(account_doc) if account_doc is not None else None,
        "credentials": dict(credentials) if credentials is not None else None,
    }


def supplied(
    store: ConfigStore,
    *,
    target: int = 17,
    user: str = "svc-task",
    domain: str | None = "corp.contoso.com",
    password: str = SUPPLIED_PASSWORD,
    run_id: str | None = None,
) -> dict[str, Any]:
    sealed = seal_once(
        store.identity.keys.public_bytes(),
        agent_id=AGENT,
        purpose=CREDENTIALS_PURPOSE,
        run_id=run_id or f"{RUN}:{target}",
        fields={"password": password},
    )
    return {
        "type": "windows" if domain else "simple",
        "user": user,
        "domain": domain,
        "sealed": base64.b64encode(sealed).decode(),
    }


def runner(store: ConfigStore, **kwargs: Any) -> TaskRunner:
    worker = Worker(AGENT, secrets=lambda: store.secrets, kill_grace_s=0.2)
    return TaskRunner(
        AGENT, worker=worker, secrets=lambda: store.secrets, keys=store.identity.keys, **kwargs
    )


def run_one(store: ConfigStore, doc: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    client = FakeClient([doc])
    assert runner(store, **kwargs).poll(client) == 1
    return client.posted[doc["target"]]


# -- credentials -------------------------------------------------------------------------------


def test_predefined_account_from_the_bundle(store: ConfigStore, program: str) -> None:
    result = run_one(store, task_doc(program, account_doc=account(3, 2, user="svc-sql")))
    assert result["state"] == "healthy"
    assert result["exit_code"] == 0
    output = result["output"]
    assert f"sha256={sha(BUNDLE_PASSWORD)}" in output
    assert "type=simple user=svc-sql" in output
    assert BUNDLE_PASSWORD not in json.dumps(result)
    assert "leak [scrubbed]" in output
    assert "err [scrubbed]" in output  # stderr follows stdout
    assert result["scrubbed"] >= 2
    assert result["timed_out"] is False
    assert result["auth_failure"] is None
    assert result["started_at"].endswith("Z")
    assert set(result) == {
        "state",
        "message",
        "exit_code",
        "timed_out",
        "output",
        "started_at",
        "duration_s",
        "auth_failure",
        "scrubbed",
    }


def test_an_account_version_not_in_the_bundle_does_not_run(
    store: ConfigStore, program: str, tmp_path: Path
) -> None:
    result = run_one(store, task_doc(program, account_doc=account(3, 9)))
    assert result["state"] == "unknown"
    assert "not in this agent's bundle" in result["message"]
    assert result["exit_code"] is None
    assert result["output"] == ""


def test_supplied_credentials_reach_the_program_and_nothing_else(
    store: ConfigStore, program: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    doc = task_doc(program, credentials=supplied(store))
    result = run_one(store, doc)
    output = result["output"]
    assert result["state"] == "healthy"
    assert "type=windows user=svc-task domain=corp.contoso.com" in output
    assert f"sha256={sha(SUPPLIED_PASSWORD)}" in output
    assert "leak [scrubbed]" in output
    assert "err [scrubbed]" in output
    text = json.dumps(result)
    assert SUPPLIED_PASSWORD not in text
    assert BUNDLE_PASSWORD not in text
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert "agent.task_start" in logged
    assert SUPPLIED_PASSWORD not in logged


def test_supplied_credentials_without_a_domain_are_simple(store: ConfigStore, program: str) -> None:
    result = run_one(store, task_doc(program, credentials=supplied(store, domain=None)))
    assert "type=simple user=svc-task domain=-" in result["output"]
    assert f"sha256={sha(SUPPLIED_PASSWORD)}" in result["output"]


def test_supplied_credentials_sealed_for_another_target_do_not_open(
    store: ConfigStore, program: str
) -> None:
    doc = task_doc(program, target=18, credentials=supplied(store, target=17))
    result = run_one(store, doc)
    assert result["state"] == "unknown"
    assert result["message"] == "the supplied credentials could not be opened by this agent"
    assert result["output"] == ""


def test_the_action_account_when_neither_is_given(store: ConfigStore, program: str) -> None:
    result = run_one(store, task_doc(program))
    assert result["state"] == "warning"  # the program exits 1 for a "none" document
    assert "type=none" in result["output"]


def test_the_bundle_password_is_scrubbed_from_a_supplied_run_too(
    store: ConfigStore, tmp_path: Path
) -> None:
    script = tmp_path / "bystander.py"
    script.write_text(f"import sys\nsys.stdin.read()\nprint({BUNDLE_PASSWORD!r})\n")
    result = run_one(store, task_doc(str(script), credentials=supplied(store)))
    assert BUNDLE_PASSWORD not in result["output"]
    assert "[scrubbed]" in result["output"]


# -- parameters, deadline, output -----------------------------------------------------------------


def test_parameters_fill_placeholders_before_properties(store: ConfigStore, program: str) -> None:
    doc = task_doc(
        program,
        args=["{path}", "{host}", "{count}"],
        properties={"path": "/from/property", "host": "db1"},
        parameters={"path": "/from/parameter", "count": 3},
    )
    result = run_one(store, doc)
    assert "args=/from/parameter,db1,3" in result["output"]


def test_a_passed_deadline_is_reported_without_running(store: ConfigStore, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = tmp_path / "touch.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    doc = task_doc(str(script), deadline=datetime.now(UTC) - timedelta(seconds=1))
    result = run_one(store, doc)
    assert result["state"] == "unknown"
    assert result["message"] == DEADLINE_PASSED
    assert not marker.exists()


def test_the_task_timeout_bounds_the_run(store: ConfigStore, tmp_path: Path) -> None:
    script = tmp_path / "hang.py"
    script.write_text("import time\ntime.sleep(30)\n")
    result = run_one(store, task_doc(str(script), timeout_s=0.3))
    assert result["timed_out"] is True
    assert result["state"] == "unknown"
    assert result["duration_s"] < 5


def test_output_is_cut_at_64_kib_after_scrubbing(store: ConfigStore, tmp_path: Path) -> None:
    script = tmp_path / "big.py"
    script.write_text(
        "import sys\nsys.stdin.read()\n"
        f"sys.stdout.write('x' * {OUTPUT_LIMIT - 8} + {SUPPLIED_PASSWORD!r} + 'y' * 100000)\n"
    )
    result = run_one(store, task_doc(str(script), credentials=supplied(store)))
    output = result["output"]
    assert len(output.encode()) <= OUTPUT_LIMIT
    assert output.startswith("x" * 100)
    assert SUPPLIED_PASSWORD[:8] not in output  # a secret across the cut is not half shown


# -- documents --------------------------------------------------------------------------------


def test_parse_refuses_malformed_documents(store: ConfigStore, program: str) -> None:
    good = task_doc(program)
    assert parse_task(good).entry().kind == "task"
    for key, value in [
        ("target", "17"),
        ("probe", None),
        ("timeout_s", 0),
        ("deadline", "tomorrow"),
        ("account", {"id": 1}),
        ("credentials", {"type": "ssh", "user": "u", "sealed": "AA=="}),
    ]:
        with pytest.raises(InvalidInput, match="task document"):
            parse_task({**good, key: value})
    both = {**good, "account": account(), "credentials": supplied(store)}
    with pytest.raises(InvalidInput, match="exclusive"):
        parse_task(both)


def test_a_malformed_document_is_reported_unknown(store: ConfigStore, program: str) -> None:
    client = FakeClient([{**task_doc(program, target=5), "probe": "nope"}, "junk"])
    assert runner(store).poll(client) == 0
    assert client.posted[5]["state"] == "unknown"
    assert "task document: probe must be an object" in client.posted[5]["message"]
    assert list(client.posted) == [5]


# -- posting ----------------------------------------------------------------------------------


def test_results_wait_through_an_outage_and_go_in_order(store: ConfigStore, program: str) -> None:
    client = FakeClient([task_doc(program, target=1), task_doc(program, target=2)], outage=2)
    tasks = runner(store)
    assert tasks.poll(client) == 2
    assert client.posted == {}
    assert tasks.pending == 2  # the first post failed; the second waited behind it
    assert tasks.poll(client) == 0  # the outage goes on: still kept
    assert tasks.pending == 2
    assert client.attempts == 2
    assert tasks.flush(client) == 2
    assert list(client.posted) == [1, 2]
    assert tasks.pending == 0
    assert client.fetches == 2


def test_a_refused_result_is_dropped_and_a_repeat_is_ignored(
    store: ConfigStore, program: str
) -> None:
    client = FakeClient([task_doc(program, target=1)])
    client.refuse = NotFound("no such task target")
    tasks = runner(store)
    tasks.poll(client)
    assert tasks.pending == 0  # a 4xx is final
    client.refuse = None
    client.docs = [task_doc(program, target=1), task_doc(program, target=2)]
    assert tasks.poll(client) == 1  # target 1 was started already: not run twice
    assert list(client.posted) == [2]


def test_revocation_while_fetching_propagates(store: ConfigStore) -> None:
    class Revoked(FakeClient):
        def fetch_tasks(self) -> list[Any]:
            raise AgentRevoked("agent-removed", "the agent was removed")

    with pytest.raises(AgentRevoked):
        runner(store).poll(Revoked())


def test_a_server_without_tasks_is_quiet(store: ConfigStore) -> None:
    class Old(FakeClient):
        def fetch_tasks(self) -> list[Any]:
            raise NotFound("not found")

    assert runner(store).poll(Old()) == 0


def test_tasks_run_in_the_pool_beside_a_busy_workflow(store: ConfigStore, program: str) -> None:
    release = threading.Event()
    scheduler = Scheduler(AGENT, lambda entry: None, max_workers=2)
    try:
        assert scheduler.submit_call(lambda: release.wait(10))  # the pool's other thread is busy
        client = FakeClient([task_doc(program, target=1)])
        assert runner(store, submit=scheduler.submit_call).poll(client) == 1
        deadline = time.monotonic() + 10
        while 1 not in client.posted and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.posted[1]["state"] == "warning"
    finally:
        release.set()
        scheduler.stop(wait=True)
    assert not scheduler.submit_call(lambda: None)


def test_a_stopping_pool_reports_the_task_unknown(store: ConfigStore, program: str) -> None:
    client = FakeClient([task_doc(program, target=1)])
    tasks = runner(store, submit=lambda call: False)
    assert tasks.poll(client) == 0
    tasks.flush(client)
    assert "stopped" in client.posted[1]["message"]


# -- over HTTPS, through the whole agent ----------------------------------------------------------


class TaskServer:
    """Approves the agent at once, serves a configuration with a bundle and one task document
    with supplied credentials; answers the first result post with a 503."""

    def __init__(self, pki: Pki, program: str) -> None:
        self.pki = pki
        self.program = program
        self.lock = threading.Lock()
        self.public_key: bytes | None = None
        self.served = False
        self.results: dict[int, dict[str, Any]] = {}
        self.result_posts = 0

    def respond(self, request: Request) -> Response:
        with self.lock:
            if request.path == "/agent/v1/enrol":
                self.public_key = base64.b64decode(request.body["hpke_public_key"])
                cert = self.pki.ca.issue_agent_certificate(
                    request.body["csr"].encode(), agent_id=AGENT, now=datetime.now(UTC)
                )
                return 200, {}, {"status": "approved", "certificate": cert.decode()}
            if request.agent != AGENT:
                return problem(401, "unauthenticated")
            assert self.public_key is not None
            if request.path == "/agent/v1/config":
                doc = document(self.public_key, agent=AGENT, secrets={(3, 2): BUNDLE_PASSWORD})
                return 200, {"ETag": doc["etag"]}, doc
            if request.path == "/agent/v1/reports":
                return 200, {}, {"accepted": len(request.body["results"])}
            if request.path == "/agent/v1/tasks":
                if self.served:
                    return 200, {}, {"tasks": []}
                self.served = True
                sealed = seal_once(
                    self.public_key,
                    agent_id=AGENT,
                    purpose=CREDENTIALS_PURPOSE,
                    run_id=f"{RUN}:41",
                    fields={"password": SUPPLIED_PASSWORD},
                )
                credentials = {
                    "type": "simple",
                    "user": "svc-task",
                    "domain": None,
                    "sealed": base64.b64encode(sealed).decode(),
                }
                return (
                    200,
                    {},
                    {"tasks": [task_doc(self.program, target=41, credentials=credentials)]},
                )
            if request.path == "/agent/v1/tasks/41/result":
                self.result_posts += 1
                if self.result_posts == 1:
                    return problem(503, "unavailable")
                self.results[41] = request.body
                return 200, {}, {"accepted": True}
        return problem(404, "not-found")


@pytest.fixture
def agent_running(tmp_path: Path, pki: Pki) -> Iterator[Callable[[str], threading.Event]]:
    threads: list[tuple[threading.Event, threading.Thread]] = []

    def start(url: str) -> threading.Event:
        settings = AgentSettings(
            servers=(url,),
            name=AGENT,
            data_dir=tmp_path / "agent",
            ca_file=pki.ca_file,
            poll_interval=0.1,
            report_interval=0.1,
            action_user="nobody" if os.geteuid() == 0 else None,
        )
        stop = threading.Event()
        thread = threading.Thread(target=Agent(settings, stop_event=stop, log_to_file=False).run)
        thread.start()
        threads.append((stop, thread))
        return stop

    yield start
    for stop, thread in threads:
        stop.set()
        thread.join(15)
        assert not thread.is_alive()


def test_the_agent_runs_a_task_at_its_poll_and_posts_again_after_a_5xx(
    pki: Pki,
    https_servers: Callable[..., HttpsServer],
    program: str,
    agent_running: Callable[[str], threading.Event],
) -> None:
    fake = TaskServer(pki, program)
    server = https_servers(fake.respond, require_cert=False)
    agent_running(server.url)
    deadline = time.monotonic() + 15
    while 41 not in fake.results and time.monotonic() < deadline:
        time.sleep(0.05)
    result = fake.results[41]
    assert result["state"] == "healthy"
    assert f"sha256={sha(SUPPLIED_PASSWORD)}" in result["output"]
    assert SUPPLIED_PASSWORD not in json.dumps(result)
    assert fake.result_posts == 2
    assert [r.path for r in server.requests].count("/agent/v1/tasks/41/result") == 2


def test_the_client_fails_over_for_tasks(
    pki: Pki, https_servers: Callable[..., HttpsServer]
) -> None:
    def respond(request: Request) -> Response:
        if request.path == "/agent/v1/tasks":
            return 200, {}, {"tasks": [{"target": 1}]}
        if request.path == "/agent/v1/tasks/1/result":
            return 200, {}, {"accepted": request.body["state"] == "healthy"}
        return problem(404, "not-found")

    broken = https_servers(lambda request: problem(503, "unavailable"))
    good = https_servers(respond)
    cert, key = pki.agent_files(AGENT)
    urls = [broken.url, good.url]
    with ManagementClient(urls, ca_file=pki.ca_file, cert_file=cert, key_file=key) as client:
        assert client.fetch_tasks() == [{"target": 1}]
        assert client.current == good.url
        assert client.send_task_result(1, {"state": "healthy"}) is True
        assert client.send_task_result(1, {"state": "unknown"}) is False


# -- against the real agent listener routes (services/tasks.py, server/agent_app.py) -------------

LISTENER_PACK = """
pack: {id: Test.AgentRunsTasks, version: 1.0.0, display_name: Agent runs tasks}
workflows:
  - id: Test.AgentRunsTasks.Prove
    kind: task
    target: System.Computer
    timeout: 1m
    parameters:
      count: {default: 2, overridable: true}
    probe: {type: command, config: {program: PYTHON, args: [SCRIPT, "{count}", "{name}"]}}
"""


def test_a_task_through_the_real_agent_routes(tmp_path: Path, db_url: str, program: str) -> None:
    settings = Settings(data_dir=tmp_path / "runas-data", database_url=db_url, actor="test")
    runtime = Runtime(settings, env={})
    try:
        setup.init(runtime, "MG1")
        backend = LocalBackend(runtime)
        pack = LISTENER_PACK.replace("PYTHON", json.dumps(sys.executable)).replace(
            "SCRIPT", json.dumps(program)
        )
        backend.pack_import(pack, "tasks.yaml")
        backend.discovery_submit(
            DiscoveryPayload.model_validate(
                {
                    "source": "test",
                    "computer": AGENT,
                    "objects": [{"class": "System.Computer", "key": {"name": AGENT}}],
                }
            )
        )
        fake = FakeAgent(AGENT)
        cert = enrol_approved(runtime, fake)
        app = create_agent_app(
            runtime,
            ServerSettings(),
            epochs=EpochWatcher(runtime.database),
            metrics=Metrics(),
            memory=ResolutionMemory(),
        )

        async def with_cert(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                scope = {**scope, "extensions": {TLS_EXTENSION: {"client_cert_der": cert}}}
            await app(scope, receive, send)

        with runtime.unit_of_work() as uow:
            run = task_service.start(
                uow,
                task_service.TaskStart(
                    task="Test.AgentRunsTasks.Prove",
                    targets=[f"System.Computer:{AGENT}"],
                    overrides={"count": "7"},
                    credentials=task_service.SuppliedCredentials(
                        user="svc-task",
                        domain="corp.contoso.com",
                        password=SecretStr(SUPPLIED_PASSWORD),
                    ),
                ),
                principal=None,
            )

        class ListenerClient:
            def __init__(self, http: TestClient) -> None:
                self.http = http

            def fetch_tasks(self) -> list[Any]:
                answer = self.http.get("/agent/v1/tasks")
                assert answer.status_code == 200, answer.text
                assert SUPPLIED_PASSWORD not in answer.text
                tasks: list[Any] = answer.json()["tasks"]
                return tasks

            def send_task_result(self, target: int, result: Mapping[str, Any]) -> bool:
                answer = self.http.post(f"/agent/v1/tasks/{target}/result", json=dict(result))
                assert answer.status_code == 200, answer.text
                return bool(answer.json()["accepted"])

        store = ConfigStore(load_identity(tmp_path / "agent", AGENT))  # no bundle: none needed
        worker = Worker(AGENT, secrets=lambda: store.secrets)
        runner = TaskRunner(AGENT, worker=worker, secrets=lambda: store.secrets, keys=fake.hpke)
        with TestClient(with_cert, raise_server_exceptions=False) as http:
            client = ListenerClient(http)
            assert runner.poll(client) == 1
            assert runner.poll(client) == 0  # delivered once
        assert runner.pending == 0
        with runtime.unit_of_work(read_only=True) as uow:
            shown = task_service.show(uow.session, run.id, principal=None, with_output=True)
        (target,) = shown.targets
        assert target.status == "succeeded", target.message
        assert target.output is not None
        assert "type=windows user=svc-task domain=corp.contoso.com" in target.output
        assert f"args=7,{AGENT}" in target.output
        assert f"sha256={sha(SUPPLIED_PASSWORD)}" in target.output
        assert SUPPLIED_PASSWORD not in target.output
        assert "leak [scrubbed]" in target.output
    finally:
        runtime.close()
