"""``runas agent …`` as an administrator types it, on the server host and against a server:
the same output in both modes. Agents enrol through the service, as the agent listener does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509

from runas.runtime import Runtime
from runas.services import agents
from runas.settings import load_settings
from support.cli import Cli
from support.enrolling import FakeAgent

pytestmark = pytest.mark.cli_modes("local", "remote")

A = "a.contoso.com"


@contextmanager
def runtime() -> Iterator[Runtime]:
    """The service layer on the CLI's management group (the Cli set the environment)."""
    rt = Runtime(load_settings())
    try:
        yield rt
    finally:
        rt.close()


def enrol(agent: FakeAgent, token: str | None = None) -> agents.EnrolAnswer:
    with runtime() as rt, rt.unit_of_work(source="192.0.2.7") as uow:
        return agents.enrol(uow, agent.request(token))


def test_enrolment_requests_are_approved_rejected_and_removed(cli: Cli) -> None:
    assert cli.ok("agent", "pending").out.strip() == "(none)"
    agent = FakeAgent(A)
    enrol(agent)
    enrol(FakeAgent("b"))
    pending = cli.ok("agent", "pending")
    assert A in pending.out
    assert "b" in pending.out
    assert "approve" in pending.err

    out = cli.ok("agent", "approve", A).out
    assert out.startswith(f"approved agent '{A}'; its certificate ends ")
    assert enrol(agent).status == "approved"
    listed = json.loads(cli.ok("agent", "list", "--json").out)
    assert [(a["id"], a["status"]) for a in listed] == [(A, "approved"), ("b", "pending")]
    assert listed[0]["decided_by"] == cli.actor
    approved = json.loads(cli.ok("agent", "list", "--status", "approved", "--json").out)
    assert [a["id"] for a in approved] == [A]
    shown = cli.ok("agent", "show", A).out
    assert "Status             approved" in shown
    assert f"TLS key SHA-256    {listed[0]['key_fingerprint']}" in shown

    assert cli.ok("agent", "reject", "b").out.strip() == (
        "rejected agent 'b': it receives no configuration and no secrets"
    )
    assert cli.ok("agent", "remove", A).out.startswith(f"removed agent '{A}'")
    assert [a["id"] for a in json.loads(cli.ok("agent", "list", "--json").out)] == ["b"]

    assert cli.fails("agent", "approve", "ghost") == "no agent named 'ghost'"
    assert cli.fails("agent", "list", "--status", "lost") == (
        "unknown agent status 'lost' (use pending, approved, rejected)"
    )


def test_an_enrolment_token_is_printed_once_and_approves_its_computer(cli: Cli) -> None:
    made = cli.ok("agent", "token", "create", A, "--expires", "2d")
    token = made.out.strip()
    assert token.startswith("rae_")
    assert made.out == token + "\n"
    assert "enrolment_token_file" in made.err
    assert "not shown again" in made.err
    assert enrol(FakeAgent(A), token).status == "approved"

    doc = json.loads(cli.ok("agent", "token", "create", "b", "--json").out)
    assert doc["computer"] == "b"
    assert doc["token"].startswith("rae_")
    assert cli.fails("agent", "token", "create", "b", "--expires", "8d") == (
        "--expires must be between 1m and 7d"
    )
    assert "is not a duration" in cli.fails("agent", "token", "create", "b", "--expires", "soon")
    # The audit trail names the tokens, never holds them.
    trail = cli.ok("audit", "list", "--action", "agent", "--json").out
    assert token not in trail
    assert doc["token"] not in trail


def test_the_agent_ca_is_printed_as_pem(cli: Cli) -> None:
    first = cli.ok("agent", "ca")
    cert = x509.load_pem_x509_certificate(first.out.encode())
    assert cert.subject.rfc4514_string() == "CN=runas test agent CA"
    assert first.err.startswith("CN=runas test agent CA, SHA-256 ")
    assert cli.ok("agent", "ca").out == first.out
    doc = json.loads(cli.ok("agent", "ca", "--json").out)
    assert doc["certificate"] == first.out


def test_agent_run_is_the_agent_itself(cli: Cli, tmp_path: Path) -> None:
    result = cli("agent", "run", "--config", str(tmp_path / "missing.toml"))
    assert result.code == 1
    assert result.err.startswith("runas agent: ")
