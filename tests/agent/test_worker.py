"""One run on real processes: the credential reaches the program, never the result."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from runas.agent.config import AgentConfig, ConfigStore, Secrets, WorkflowEntry
from runas.agent.handoff import HandOff
from runas.agent.identity import load_identity
from runas.agent.scheduler import UNAVAILABLE_MESSAGE
from runas.agent.worker import Worker, resolve_action_user
from runas.errors import ConfigurationError
from support.agent_documents import account, document, workflow

PASSWORD = "Worker-Secret-" + "7f3a9c1d2e"
BYSTANDER = "bystander-secret-from-another-account"

# Prints the sha256 of the password it read (stdin or file), then leaks both secrets in its
# message, events and perf names.
PROGRAM = textwrap.dedent(
    """
    import hashlib, json, os, sys
    if os.environ["RUNAS_HANDOFF"] == "file":
        with open(os.environ["RUNAS_CREDENTIAL_FILE"]) as fh:
            doc = json.load(fh)
    else:
        doc = json.load(sys.stdin)
    if doc["type"] == "none":
        print(json.dumps({"state": "healthy", "message": "no credential"}))
        sys.exit(0)
    password = doc["fields"]["password"]
    print(json.dumps({
        "state": "warning",
        "message": hashlib.sha256(password.encode()).hexdigest() + " user=" + doc["fields"]["user"],
        "events": [{"severity": "warning", "message": "oops " + password}],
        "perf": {"leak " + password: 1.0, "ok": 2.0},
    }))
    """
)


@pytest.fixture
def store(tmp_path: Path) -> ConfigStore:
    return ConfigStore(load_identity(tmp_path / "agent", "a"))


def configure(store: ConfigStore, *specs: dict[str, object]) -> AgentConfig:
    key = store.identity.keys.public_bytes()
    raw = document(key, agent="a", workflows=specs, secrets={(3, 2): PASSWORD, (9, 1): BYSTANDER})
    return store.accept(raw)


def program(tmp_path: Path) -> str:
    path = tmp_path / "probe.py"
    path.write_text(PROGRAM)
    return str(path)


@pytest.mark.parametrize("handoff", [HandOff.STDIN, HandOff.FILE])
def test_a_run_with_an_account(tmp_path: Path, store: ConfigStore, handoff: HandOff) -> None:
    config = configure(
        store,
        workflow(
            "W",
            "O",
            account=account(),
            program=sys.executable,
            args=[program(tmp_path)],
        ),
    )
    entry = config.workflows[0]
    worker = Worker("a", secrets=lambda: store.secrets, handoff=handoff)
    result = worker.run(entry)
    assert result["state"] == "warning"
    assert result["message"] == hashlib.sha256(PASSWORD.encode()).hexdigest() + " user=svc-sql"
    assert result["events"] == [{"severity": "warning", "message": "oops [scrubbed]"}]
    assert result["perf"] == {"leak [scrubbed]": 1.0, "ok": 2.0}
    assert result["scrubbed"] >= 2
    assert result["account_id"] == 3
    assert result["secret_version"] == 2
    assert result["exit_code"] == 0
    assert result["timed_out"] is False
    assert result["auth_failure"] is None
    assert result["started_at"].endswith("Z")
    text = json.dumps(result)
    assert PASSWORD not in text
    assert BYSTANDER not in text


def test_every_secret_held_is_scrubbed(tmp_path: Path, store: ConfigStore) -> None:
    script = tmp_path / "leak.py"
    script.write_text(f"print({BYSTANDER!r})\n")
    config = configure(store, workflow("W", "O", program=sys.executable, args=[str(script)]))
    result = Worker("a", secrets=lambda: store.secrets).run(config.workflows[0])
    assert result["message"] == "[scrubbed]"
    assert result["scrubbed"] >= 1  # the message, and stdout (not reported) too
    assert result["account_id"] is None


def test_missing_credentials_do_not_run(store: ConfigStore) -> None:
    config = configure(store, workflow("W", "O", account=account(5, 1, name="gone")))
    result = Worker("a", secrets=lambda: store.secrets).run(config.workflows[0])
    assert result["state"] == "unknown"
    assert "'gone' (version 1) are not in this agent's bundle" in result["message"]
    assert result["exit_code"] is None


def test_timeout_comes_from_the_schedule(tmp_path: Path, store: ConfigStore) -> None:
    script = tmp_path / "hang.py"
    script.write_text("import time\ntime.sleep(30)\n")
    config = configure(
        store, workflow("W", "O", program=sys.executable, args=[str(script)], timeout_s=0.3)
    )
    entry: WorkflowEntry = config.workflows[0]
    result = Worker("a", secrets=lambda: store.secrets, kill_grace_s=0.2).run(entry)
    assert result["timed_out"] is True
    assert result["state"] == "unknown"
    assert result["duration_s"] < 5


def test_bad_probe_configs_give_unknown(store: ConfigStore) -> None:
    config = configure(
        store,
        workflow("A", "O", args=["{missing}"]),
        workflow("B", "O", probe_type="powershell"),
        workflow("C", "O", program=""),
    )
    worker = Worker("a", secrets=lambda: store.secrets)
    a, b, c = (worker.run(entry) for entry in config.workflows)
    assert "unknown parameter {missing}" in a["message"]
    assert b["message"] == UNAVAILABLE_MESSAGE
    assert "needs a program" in c["message"]
    assert {a["state"], b["state"], c["state"]} == {"unknown"}


def test_properties_fill_placeholders(store: ConfigStore) -> None:
    config = configure(
        store,
        workflow(
            "W",
            "O",
            program="/bin/echo",
            args=["--port", "{port}", "{on}"],
            properties={"port": 1433, "on": True},
        ),
    )
    result = Worker("a", secrets=lambda: store.secrets).run(config.workflows[0])
    assert result["message"] == "--port 1433 true"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_workflows_without_an_account_run_as_the_action_user(store: ConfigStore) -> None:
    nobody = resolve_action_user("nobody", create=False)
    assert nobody is not None
    config = configure(store, workflow("W", "O", program="/usr/bin/id", args=["-u"]))
    worker = Worker("a", secrets=lambda: store.secrets, action_user=nobody)
    result = worker.run(config.workflows[0])
    assert result["message"] == str(nobody[0])
    # A workflow with an account runs as the agent's own user.
    config = configure(
        store, workflow("W", "O", program="/usr/bin/id", args=["-u"], account=account())
    )
    assert worker.run(config.workflows[0])["message"] == str(os.geteuid())


@pytest.mark.skipif(os.geteuid() != 0, reason="only root has an action user")
def test_action_user_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="'runas-test-none' does not exist"):
        resolve_action_user("runas-test-none", create=False)
    with pytest.raises(ConfigurationError, match="is root"):
        resolve_action_user("root", create=False)
    fake = tmp_path / "useradd"
    fake.write_text("#!/bin/sh\necho 'useradd: cannot lock /etc/passwd' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr("runas.agent.worker.USERADD", str(fake))
    with pytest.raises(ConfigurationError, match="cannot lock /etc/passwd"):
        resolve_action_user("runas-test-none")


def test_not_root_means_no_action_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert resolve_action_user(None) is None


def test_secrets_of_an_erased_store_are_not_used(store: ConfigStore) -> None:
    config = configure(store, workflow("W", "O", account=account()))
    store.erase()
    result = Worker("a", secrets=lambda: store.secrets).run(config.workflows[0])
    assert result["state"] == "unknown"
    assert isinstance(store.secrets, Secrets)
