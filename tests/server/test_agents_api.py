"""The administrators' agent routes: enrolment requests, approval, tokens, the agent CA."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from fastapi.testclient import TestClient

from runas.domain.roles import Role
from runas.server.agent_app import create_agent_app
from runas.server.epochs import EpochWatcher
from runas.server.metrics import Metrics
from runas.server.settings import ServerSettings
from runas.services import agents
from runas.services.audit import list_records
from runas.services.resolution_memory import ResolutionMemory
from server.conftest import NO_ROLE, Served
from support.enrolling import FakeAgent

A = "a.contoso.com"
PROBLEM = "application/problem+json"


def enrol(served: Served, agent: FakeAgent) -> agents.EnrolAnswer:
    with served.runtime.unit_of_work(actor="system:agent-listener", source="192.0.2.7") as uow:
        return agents.enrol(uow, agent.request())


def test_an_administrator_approves_rejects_and_removes_agents(served: Served) -> None:
    c, admin = served.client, served.admin
    agent = FakeAgent(A)
    enrol(served, agent)
    listed = c.get("/api/v1/agents", params={"status": "pending"}, headers=admin)
    assert listed.status_code == 200
    assert [a["id"] for a in listed.json()] == [A]
    assert "hpke_public_key" not in listed.text
    assert "csr" not in listed.text

    approved = c.post(f"/api/v1/agents/{A}/approve", headers=admin)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert approved.json()["decided_by"] == Role.ADMINISTRATOR.value
    assert enrol(served, agent).status == "approved"

    shown = c.get(f"/api/v1/agents/{A.upper()}", headers=admin).json()
    assert shown["id"] == A
    assert shown["cert_not_after"] is not None
    assert c.get("/api/v1/agents", params={"status": "pending"}, headers=admin).json() == []

    rejected = c.post(f"/api/v1/agents/{A}/reject", headers=admin)
    assert rejected.json()["status"] == "rejected"
    removed = c.delete(f"/api/v1/agents/{A}", headers=admin)
    assert removed.json() == {"removed": A}

    missing = c.delete(f"/api/v1/agents/{A}", headers=admin)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM
    assert missing.json()["type"] == "urn:runas:problem:not-found"
    bad = c.get("/api/v1/agents", params={"status": "lost"}, headers=admin)
    assert bad.status_code == 422

    with served.runtime.unit_of_work(read_only=True) as uow:
        trail = [
            (r.action, r.actor, r.outcome)
            for r in list_records(uow.session, action="agent")
            if r.action != "agent:ca-create"
        ]
    admin_name = Role.ADMINISTRATOR.value
    assert trail == [
        ("agent:enrol", f"agent:{A}", "success"),
        ("agent:approve", admin_name, "success"),
        ("agent:reject", admin_name, "success"),
        ("agent:remove", admin_name, "success"),
        ("agent:remove", admin_name, "failure"),  # the second, of an agent no longer there
    ]


def test_only_administrators_decide_and_only_they_and_read_only_administrators_look(
    served: Served,
) -> None:
    c = served.client
    enrol(served, FakeAgent(A))
    for who in (Role.READ_ONLY_OPERATOR, Role.OPERATOR, Role.ADVANCED_OPERATOR, Role.AUTHOR):
        h = served.as_user(who.value)
        assert c.get("/api/v1/agents", headers=h).status_code == 403
        assert c.get("/api/v1/agent-ca", headers=h).status_code == 403
    h = served.as_user(NO_ROLE)
    assert c.get(f"/api/v1/agents/{A}", headers=h).status_code == 403
    reader = served.as_user(Role.READ_ONLY_ADMINISTRATOR.value)
    assert c.get("/api/v1/agents", headers=reader).status_code == 200
    for method, path, body in (
        ("POST", f"/api/v1/agents/{A}/approve", None),
        ("POST", f"/api/v1/agents/{A}/reject", None),
        ("DELETE", f"/api/v1/agents/{A}", None),
        ("POST", "/api/v1/enrolment-tokens", {"computer": A}),
    ):
        r = c.request(method, path, headers=reader, json=body)
        assert r.status_code == 403, (method, path)
        assert r.json()["type"] == "urn:runas:problem:forbidden"
    # ...and nothing changed
    (still,) = c.get("/api/v1/agents", headers=reader).json()
    assert still["status"] == "pending"
    with served.runtime.unit_of_work(read_only=True) as uow:
        denied = list_records(uow.session, action="agent:approve")
    assert [r.outcome for r in denied] == ["denied"]


def test_a_403_says_nothing_about_which_agents_exist(served: Served) -> None:
    c = served.client
    h = served.as_user(Role.AUTHOR.value)
    requests = [
        ("GET", "/api/v1/agents/b"),
        ("POST", "/api/v1/agents/b/approve"),
        ("DELETE", "/api/v1/agents/b"),
    ]
    before = [c.request(m, p, headers=h) for m, p in requests]
    enrol(served, FakeAgent("b"))
    after = [c.request(m, p, headers=h) for m, p in requests]
    for b, a in zip(before, after, strict=True):
        assert b.status_code == a.status_code == 403
        assert b.content == a.content


def test_an_enrolment_token_is_shown_once_and_recorded_without_it(served: Served) -> None:
    c, admin = served.client, served.admin
    made = c.post("/api/v1/enrolment-tokens", json={"computer": "B.contoso.com"}, headers=admin)
    assert made.status_code == 201, made.text
    body = made.json()
    token = body["token"]
    assert token.startswith("rae_")
    assert body["computer"] == "b.contoso.com"
    with served.runtime.unit_of_work(read_only=True) as uow:
        (record,) = list_records(uow.session, action="agent:token-create")
        expires = datetime.fromisoformat(body["expires_at"])
        assert uow.now + timedelta(minutes=59) < expires <= uow.now + timedelta(hours=1)
    assert token not in json.dumps(record.model_dump(mode="json"))
    assert token not in served.log.getvalue()
    for lifetime in (10, 8 * 86400):
        refused = c.post(
            "/api/v1/enrolment-tokens",
            json={"computer": "b", "expires_in": lifetime},
            headers=admin,
        )
        assert refused.status_code == 422


def test_the_agent_ca_is_made_on_first_use(served: Served) -> None:
    c = served.client
    reader = served.as_user(Role.READ_ONLY_ADMINISTRATOR.value)
    first = c.get("/api/v1/agent-ca", headers=reader)
    assert first.status_code == 200, first.text
    again = c.get("/api/v1/agent-ca", headers=served.admin)
    assert first.json() == again.json()
    cert = x509.load_pem_x509_certificate(first.json()["certificate"].encode())
    assert cert.subject.rfc4514_string() == first.json()["subject"] == "CN=runas test agent CA"
    with served.runtime.unit_of_work(read_only=True) as uow:
        made = list_records(uow.session, action="agent:ca-create")
    assert [r.actor for r in made] == [Role.READ_ONLY_ADMINISTRATOR.value]


def test_the_agent_listener_limits_new_enrolment_requests_with_a_problem(served: Served) -> None:
    app = create_agent_app(
        served.runtime,
        ServerSettings(enrol_per_source=2, max_pending_enrolments=100),
        epochs=EpochWatcher(served.runtime.database),
        metrics=Metrics(),
        memory=ResolutionMemory(),
    )
    with TestClient(app, raise_server_exceptions=False) as listener:

        def ask(agent: FakeAgent) -> Any:
            req = agent.request()
            body = req.model_dump(mode="json") | {"token": None}
            return listener.post("/agent/v1/enrol", json=body)

        first, second = FakeAgent("a1.contoso.com"), FakeAgent("a2.contoso.com")
        assert ask(first).json()["status"] == "pending"
        assert ask(second).json()["status"] == "pending"
        refused = ask(FakeAgent("a3.contoso.com"))
        assert refused.status_code == 429
        assert refused.headers["content-type"] == PROBLEM
        assert int(refused.headers["Retry-After"]) > 500  # the 10-minute window
        problem = refused.json()
        assert problem["type"] == "urn:runas:problem:too-many-requests"
        assert "too many new enrolment requests" in problem["detail"]
        assert "\n" not in problem["detail"]
        assert "Traceback" not in refused.text
        # the first agents asking again are answered as before
        assert ask(first).json()["status"] == "pending"
    with served.runtime.unit_of_work(read_only=True) as uow:
        pending = agents.list_agents(uow.session, "pending")
    assert sorted(a.id for a in pending) == ["a1.contoso.com", "a2.contoso.com"]
