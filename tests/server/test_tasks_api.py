"""The task routes: who may start a run, what a run looks like over HTTP, overrides refused,
and the Tasks Execution setting (read by everyone, changed by administrators only)."""

from __future__ import annotations

import json

import pytest

from runas.domain.roles import Role
from server.conftest import EXAMPLES, INSTANCE_A, Served

TASK = "Contoso.SQL.Task.CheckCredential"
CANARY = "canary-Pa55word-for-the-task-api"
AGENT_PACK = (EXAMPLES / "packs" / "contoso-sql-agent.yaml").read_text()
SETTING = "/api/v1/settings/tasks-execution"


@pytest.fixture
def with_task(seeded: Served) -> Served:
    r = seeded.client.post(
        "/api/v1/packs",
        json={"text": AGENT_PACK, "source": "contoso-sql-agent.yaml"},
        headers=seeded.admin,
    )
    assert r.status_code == 201, r.text
    return seeded


def start(s: Served, who: str, **body: object) -> tuple[int, dict[str, object]]:
    payload = {"task": TASK, "targets": [INSTANCE_A], **body}
    r = s.client.post("/api/v1/task-runs", json=payload, headers=s.as_user(who))
    return r.status_code, r.json()


def test_tasks_are_listed_with_their_parameters(with_task: Served) -> None:
    c = with_task.client
    h = with_task.as_user(Role.READ_ONLY_OPERATOR.value)
    r = c.get("/api/v1/tasks", headers=h)
    assert r.status_code == 200, r.text
    (task,) = [t for t in r.json() if t["id"] == TASK]
    assert task["target_class"] == "Contoso.SQL.Instance"
    assert task["timeout_seconds"] == 60
    params = {p["name"]: (p["default"], p["overridable"]) for p in task["parameters"]}
    assert params == {"label": ("check", True), "mode": ("safe", False)}
    r = c.get("/api/v1/tasks", params={"target": INSTANCE_A}, headers=h)
    assert TASK in [t["id"] for t in r.json()]


def test_an_operator_starts_a_run_and_sees_it(with_task: Served) -> None:
    c, op = with_task.client, Role.OPERATOR.value
    status, run = start(with_task, op, overrides={"label": "hello"})
    assert status == 201, run
    assert run["task"] == TASK
    assert run["requested_by"] == op
    assert run["credential_mode"] == "predefined"
    assert run["supplied_user"] is None
    assert run["overrides"] == {"label": "hello"}
    assert [t["object"] for t in run["targets"]] == [INSTANCE_A]  # type: ignore[union-attr]
    run_id = run["id"]
    h = with_task.as_user(op)
    shown = c.get(f"/api/v1/task-runs/{run_id}", headers=h)
    assert shown.status_code == 200
    assert shown.json()["id"] == run_id
    out = c.get(f"/api/v1/task-runs/{run_id}/output", headers=h)
    assert out.status_code == 200
    assert out.json()["id"] == run_id
    listed = c.get("/api/v1/task-runs", params={"limit": 5}, headers=h)
    assert [r["id"] for r in listed.json()] == [run_id]
    # administrators see everyone's runs; another operator does not see this one
    assert c.get(f"/api/v1/task-runs/{run_id}", headers=with_task.admin).status_code == 200
    other = with_task.as_user(Role.ADVANCED_OPERATOR.value)
    assert c.get(f"/api/v1/task-runs/{run_id}", headers=other).status_code == 404
    assert run_id not in [r["id"] for r in c.get("/api/v1/task-runs", headers=other).json()]
    assert c.get("/api/v1/task-runs/no-such-run", headers=h).status_code == 404


def test_a_read_only_operator_cannot_start_a_run(with_task: Served) -> None:
    status, body = start(with_task, Role.READ_ONLY_OPERATOR.value)
    assert status == 403
    assert body["type"] == "urn:runas:problem:forbidden"
    assert "tasks:run" in str(body["detail"])
    history = with_task.client.get("/api/v1/task-runs", headers=with_task.admin).json()
    assert history == []


def test_overriding_a_fixed_or_unknown_parameter_is_refused(with_task: Served) -> None:
    for name in ("mode", "nope"):
        status, body = start(with_task, Role.OPERATOR.value, overrides={name: "x"})
        assert status == 422, body
        assert name in str(body["detail"])
    assert with_task.client.get("/api/v1/task-runs", headers=with_task.admin).json() == []


def test_the_tasks_execution_setting(with_task: Served) -> None:
    c, admin = with_task.client, with_task.admin
    op = Role.OPERATOR.value
    ro = with_task.as_user(Role.READ_ONLY_OPERATOR.value)
    assert c.get(SETTING, headers=ro).json() == {"tasks_execution": "enabled"}
    # only administrators change it
    for who in (op, Role.AUTHOR.value, Role.READ_ONLY_ADMINISTRATOR.value):
        r = c.put(SETTING, json={"tasks_execution": "disabled"}, headers=with_task.as_user(who))
        assert r.status_code == 403, who
    assert c.put(SETTING, json={"tasks_execution": "off"}, headers=admin).status_code == 422
    r = c.put(SETTING, json={"tasks_execution": "disabled"}, headers=admin)
    assert r.status_code == 200
    assert r.json() == {"tasks_execution": "disabled"}
    assert c.get(SETTING, headers=ro).json() == {"tasks_execution": "disabled"}

    # disabled: an operator must supply credentials...
    status, body = start(with_task, op)
    assert status == 403, body
    assert "Tasks Execution is disabled" in str(body["detail"])
    assert "--user" in str(body["detail"])
    creds = {"user": "alice", "domain": "CONTOSO", "password": CANARY}
    status, run = start(with_task, op, credentials=creds)
    assert status == 201, run
    assert run["credential_mode"] == "supplied"
    assert "alice" in str(run["supplied_user"])
    assert CANARY not in json.dumps(run)
    shown = c.get(f"/api/v1/task-runs/{run['id']}/output", headers=with_task.as_user(op))
    assert CANARY not in shown.text
    # ...administrators may still use the predefined account
    status, run = start(with_task, Role.ADMINISTRATOR.value)
    assert status == 201, run
    assert run["credential_mode"] == "predefined"

    r = c.put(SETTING, json={"tasks_execution": "enabled"}, headers=admin)
    assert r.json() == {"tasks_execution": "enabled"}
    assert start(with_task, op)[0] == 201


def test_the_password_is_never_in_the_audit_trail(with_task: Served) -> None:
    creds = {"user": "alice", "password": CANARY}
    status, _ = start(with_task, Role.OPERATOR.value, credentials=creds)
    assert status == 201
    trail = with_task.client.get("/api/v1/audit", params={"limit": 50}, headers=with_task.admin)
    assert trail.status_code == 200
    assert "task:start" in trail.text
    assert CANARY not in trail.text
    assert CANARY not in with_task.log.getvalue()
