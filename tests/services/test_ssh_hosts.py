"""SSH host keys the management group trusts (services/ssh_hosts.py): offers from agents'
reports stay pending until an administrator approves the exact fingerprint; changed keys are
audited loudly and alerted; every change of the trusted set reaches agents through a new epoch
and their configuration's ``known_hosts`` — on SQLite and PostgreSQL, with real keys."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from sqlalchemy import select

from runas.agent.config import parse_config
from runas.errors import Conflict, InvalidInput, NotFound
from runas.runtime import Runtime
from runas.services import agent_config, agents, alerts, lookup, monitoring, setup, ssh_hosts
from runas.services.audit import AuditRecordView, list_records
from runas.services.monitoring import AgentReport
from runas.services.resolution_memory import ResolutionMemory
from runas.services.ssh_hosts import SshHostKeyAdd, parse_public_key, parse_target
from runas.settings import Settings
from runas.storage.tables import AgentRow
from support.enrolling import FakeAgent

AGENT = "a.contoso.com"
HOST = "web1.contoso.com"


def ed25519_key() -> str:
    return _openssh(ed25519.Ed25519PrivateKey.generate().public_key())


def ecdsa_key() -> str:
    return _openssh(ec.generate_private_key(ec.SECP256R1()).public_key())


def rsa_key() -> str:
    return _openssh(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())


def _openssh(public: Any) -> str:
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")


def ssh_keygen_fingerprint(key: str, tmp_path: Path) -> str:
    """What OpenSSH itself prints for the key (``ssh-keygen -lf``)."""
    path = tmp_path / f"{uuid.uuid4().hex}.pub"
    path.write_text(key + " comment\n")
    out = subprocess.run(
        ["ssh-keygen", "-lf", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return out.split()[1]


@pytest.fixture
def rt(tmp_path: Path, db_url: str) -> Iterator[Runtime]:
    settings = Settings(data_dir=tmp_path / "runas-data", database_url=db_url, actor="test:admin")
    runtime = Runtime(settings, env={})
    setup.init(runtime, "Contoso")
    try:
        yield runtime
    finally:
        runtime.close()


def offer(rt: Runtime, key: str, host: str = HOST, port: int = 22, agent: str = AGENT) -> bool:
    with rt.unit_of_work(actor=f"agent:{agent}") as uow:
        return ssh_hosts.record_offer(uow, agent, host, port, key)


def approve(rt: Runtime, target: str, fingerprint: str) -> ssh_hosts.SshHostKeyView:
    with rt.unit_of_work() as uow:
        return ssh_hosts.approve(uow, target, fingerprint)


def add(rt: Runtime, target: str, key: str) -> ssh_hosts.SshHostKeyView:
    with rt.unit_of_work() as uow:
        return ssh_hosts.add(uow, SshHostKeyAdd(host=target, key=key))


def remove(
    rt: Runtime, target: str, fingerprint: str | None = None
) -> list[ssh_hosts.SshHostKeyView]:
    with rt.unit_of_work() as uow:
        return ssh_hosts.remove(uow, target, fingerprint)


def listed(rt: Runtime, status: str | None = None) -> list[ssh_hosts.SshHostKeyView]:
    with rt.unit_of_work(read_only=True) as uow:
        return ssh_hosts.list_keys(uow.session, status)


def known_hosts(rt: Runtime) -> list[str]:
    with rt.unit_of_work(read_only=True) as uow:
        return ssh_hosts.known_hosts(uow.session)


def epoch(rt: Runtime) -> int:
    with rt.unit_of_work(read_only=True) as uow:
        return lookup.epoch(uow.session)


def records(rt: Runtime) -> list[AuditRecordView]:
    with rt.unit_of_work(read_only=True) as uow:
        return [r for r in list_records(uow.session) if r.action.startswith("ssh-host-key:")]


def open_alerts(rt: Runtime) -> list[alerts.AlertView]:
    with rt.unit_of_work(read_only=True) as uow:
        return alerts.list_alerts(uow.session, source=ssh_hosts.ALERT_SOURCE)


# -- parsing (no database) -------------------------------------------------------------------


def test_fingerprints_are_the_ones_openssh_prints(tmp_path: Path) -> None:
    for key in (ed25519_key(), ecdsa_key(), rsa_key()):
        parsed = parse_public_key(key)
        assert parsed.fingerprint == ssh_keygen_fingerprint(key, tmp_path)
        assert f"{parsed.key_type} {parsed.key}" == key


def test_public_keys_are_read_from_the_forms_administrators_paste() -> None:
    key = ed25519_key()
    kind, b64 = key.split()
    expected = parse_public_key(key)
    assert parse_public_key(f"  {key} root@web1  \n") == expected  # a .pub file
    assert parse_public_key(f"# web1:22 SSH-2.0-OpenSSH\n{HOST} {key}\n") == expected  # keyscan
    assert parse_public_key(f"[{HOST}]:2222 {kind} {b64}") == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no SSH public key given"),
        ("ssh-ed25519", "not an OpenSSH public key"),
        ("ssh-ed25519 !!!notbase64", "not valid base64"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "'ssh-dss' is not accepted as a host key"),
        (
            "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQ=",
            "is not accepted as a host key",
        ),
        ("ssh-ed25519 " + "A" * 3000, "too long"),
    ],
)
def test_what_is_not_a_host_key_is_refused_in_one_line(text: str, error: str) -> None:
    with pytest.raises(InvalidInput, match=error) as caught:
        parse_public_key(text)
    assert "\n" not in str(caught.value)


def test_a_key_whose_data_is_another_type_or_broken_is_refused() -> None:
    _, ecdsa_b64 = ecdsa_key().split()
    with pytest.raises(InvalidInput, match="not a ssh-ed25519 key"):
        parse_public_key(f"ssh-ed25519 {ecdsa_b64}")
    _, ed_b64 = ed25519_key().split()
    truncated = ed_b64[:-8] + "AAAA"
    with pytest.raises(InvalidInput):
        parse_public_key(f"ssh-ed25519 {truncated}")
    with pytest.raises(InvalidInput, match="2 keys given"):
        parse_public_key(f"{ed25519_key()}\n{ed25519_key()}")


def test_targets() -> None:
    assert parse_target("web1") == ("web1", 22)
    assert parse_target(" web1:2222 ") == ("web1", 2222)
    assert parse_target("[web1]:2222") == ("web1", 2222)
    assert parse_target("[::1]:2222") == ("::1", 2222)
    assert parse_target("::1") == ("::1", 22)
    assert parse_target("192.0.2.7", 2200) == ("192.0.2.7", 2200)
    for bad, error in [
        ("web1:0", "port"),
        ("web1:http", "port"),
        ("*.contoso.com", "not a host name"),
        ("web1,web2", "not a host name"),
        ("[web1", "missing"),
        ("", "needs a name"),
    ]:
        with pytest.raises(InvalidInput, match=error):
            parse_target(bad)
    with pytest.raises(InvalidInput, match="names port 2222"):
        parse_target("web1:2222", 22)
    assert ssh_hosts.known_hosts_line("web1", 22, "ssh-ed25519", "AAAA") == "web1 ssh-ed25519 AAAA"
    assert ssh_hosts.known_hosts_line("::1", 2222, "ssh-rsa", "B") == "[::1]:2222 ssh-rsa B"
    assert ssh_hosts.format_target("::1", 2222) == "[::1]:2222"


# -- offers and approval ---------------------------------------------------------------------


def test_an_offer_is_pending_once_and_reaches_no_agent(rt: Runtime) -> None:
    key = ed25519_key()
    before = epoch(rt)
    assert offer(rt, key) is True
    assert offer(rt, key) is False  # once per distinct key
    assert offer(rt, key, agent="b.contoso.com") is False

    (view,) = listed(rt)
    parsed = parse_public_key(key)
    assert (view.host, view.port, view.key_type, view.status) == (
        HOST,
        22,
        "ssh-ed25519",
        "pending",
    )
    assert view.fingerprint == parsed.fingerprint
    assert view.reported_by == AGENT
    assert view.changed is False
    assert known_hosts(rt) == []
    assert epoch(rt) == before  # nothing any agent receives changed
    (offered,) = records(rt)
    assert (offered.action, offered.target, offered.actor) == (
        "ssh-host-key:offer",
        HOST,
        f"agent:{AGENT}",
    )
    assert offered.details["fingerprint"] == parsed.fingerprint


def test_approval_needs_the_exact_fingerprint_of_a_pending_key(rt: Runtime) -> None:
    key, other = ed25519_key(), ecdsa_key()
    offer(rt, key, port=2222)
    offer(rt, other, port=2222)
    fp = parse_public_key(key).fingerprint
    other_fp = parse_public_key(other).fingerprint

    with pytest.raises(NotFound, match=r"no SSH host key was offered or added for web1\.contoso"):
        approve(rt, HOST, fp)  # port 22: nothing offered there
    with pytest.raises(Conflict) as wrong:
        approve(rt, f"{HOST}:2222", "SHA256:" + "A" * 43)
    # ordered by key type
    assert str(wrong.value) == (
        f"no pending SSH host key of {HOST}:2222 has fingerprint SHA256:{'A' * 43}; pending: "
        f"{other_fp} (ecdsa-sha2-nistp256), {fp} (ssh-ed25519)"
    )
    with pytest.raises(Conflict):
        approve(rt, f"{HOST}:2222", fp[:7] + fp[7:].swapcase())  # exactly, not case-folded
    with pytest.raises(InvalidInput, match="SHA256"):
        approve(rt, f"{HOST}:2222", fp.removeprefix("SHA256:"))
    assert known_hosts(rt) == []

    before = epoch(rt)
    view = approve(rt, f"{HOST.upper()}:2222", f" {fp} ")  # hosts ignore case, fp is trimmed
    assert (view.status, view.approved_by) == ("trusted", "test:admin")
    assert view.approved_at is not None
    assert epoch(rt) == before + 1
    b64 = key.split()[1]
    assert known_hosts(rt) == [f"[{HOST}]:2222 ssh-ed25519 {b64}"]
    assert [v.status for v in listed(rt, "pending")] == ["pending"]

    # again: nothing changes
    assert approve(rt, f"{HOST}:2222", fp).id == view.id
    assert epoch(rt) == before + 1
    approved = [r for r in records(rt) if r.action == "ssh-host-key:approve"]
    assert len(approved) == 1
    assert approved[0].details["fingerprint"] == fp
    assert approved[0].target == f"{HOST}:2222"


def test_a_changed_key_is_pending_audited_alerted_and_replaces_the_old_on_approval(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    old = add(rt, HOST, ed25519_key())
    new_key = ed25519_key()
    new_fp = parse_public_key(new_key).fingerprint

    with caplog.at_level(logging.WARNING, logger="runas"):
        assert offer(rt, new_key) is True
    assert any(r.getMessage() == "ssh_host_key.changed" for r in caplog.records)

    pending = listed(rt, "pending")
    assert [(v.fingerprint, v.changed) for v in pending] == [(new_fp, True)]
    changed = [r for r in records(rt) if r.action == "ssh-host-key:changed"]
    assert len(changed) == 1
    assert changed[0].outcome == "denied"
    assert changed[0].details["trusted_fingerprints"] == [old.fingerprint]
    (alert,) = open_alerts(rt)
    assert (alert.computer, alert.severity, alert.state) == (AGENT, "critical", "host-key-changed")
    assert new_fp in alert.message
    assert old.fingerprint in alert.message
    assert f"runas ssh-host approve {HOST} --fingerprint {new_fp}" in alert.message
    # the old key is still the only one trusted
    assert known_hosts(rt) == [old.known_hosts_line]

    # reported again (every run of the probe): no second alert, no second record
    assert offer(rt, new_key) is False
    assert len(open_alerts(rt)) == 1

    approved = approve(rt, HOST, new_fp)
    assert known_hosts(rt) == [approved.known_hosts_line]
    assert [v.fingerprint for v in listed(rt)] == [new_fp]
    assert open_alerts(rt) == []
    record = next(r for r in records(rt) if r.action == "ssh-host-key:approve")
    assert record.details["replaced_fingerprints"] == [old.fingerprint]


def test_a_key_of_another_type_is_not_a_changed_key(rt: Runtime) -> None:
    add(rt, HOST, ed25519_key())
    offer(rt, rsa_key())
    (pending,) = listed(rt, "pending")
    assert pending.changed is False
    assert open_alerts(rt) == []


def test_removing_a_changed_key_closes_its_alert(rt: Runtime) -> None:
    trusted = add(rt, HOST, ed25519_key())
    rogue = ed25519_key()
    offer(rt, rogue)
    assert len(open_alerts(rt)) == 1
    before = epoch(rt)
    (gone,) = remove(rt, HOST, parse_public_key(rogue).fingerprint)
    assert (gone.status, gone.changed) == ("pending", True)
    assert open_alerts(rt) == []
    assert epoch(rt) == before  # the trusted set did not change
    assert known_hosts(rt) == [trusted.known_hosts_line]


# -- administrators adding and removing ------------------------------------------------------


def test_an_added_key_is_trusted_at_once(rt: Runtime) -> None:
    key = ecdsa_key()
    before = epoch(rt)
    view = add(rt, "[192.0.2.7]:2200", key + " root@db1")
    assert (view.host, view.port, view.status, view.reported_by) == (
        "192.0.2.7",
        2200,
        "trusted",
        None,
    )
    assert epoch(rt) == before + 1
    assert known_hosts(rt) == [f"[192.0.2.7]:2200 {key}"]
    # adding it again changes nothing
    assert add(rt, "192.0.2.7:2200", key).id == view.id
    assert epoch(rt) == before + 1
    (added,) = [r for r in records(rt) if r.action == "ssh-host-key:add"]
    assert added.details == {
        "host": "192.0.2.7",
        "port": 2200,
        "algorithm": "ecdsa-sha2-nistp256",
        "fingerprint": view.fingerprint,
        "was_pending": False,
    }


def test_adding_an_offered_key_trusts_the_pending_entry(rt: Runtime) -> None:
    key = ed25519_key()
    offer(rt, key)
    view = add(rt, HOST, key)
    assert (view.status, view.reported_by) == ("trusted", AGENT)
    assert len(listed(rt)) == 1


def test_remove_by_fingerprint_or_everything(rt: Runtime) -> None:
    first, second = add(rt, HOST, ed25519_key()), add(rt, HOST, rsa_key())
    offer(rt, ecdsa_key())
    with pytest.raises(NotFound, match="no SSH host key was offered or added for other"):
        remove(rt, "other")
    with pytest.raises(
        NotFound, match=f"has fingerprint SHA256:nope; known: .*{re.escape(first.fingerprint)}"
    ):
        remove(rt, HOST, "SHA256:nope")

    before = epoch(rt)
    assert [v.fingerprint for v in remove(rt, HOST, second.fingerprint)] == [second.fingerprint]
    assert epoch(rt) == before + 1
    assert known_hosts(rt) == [first.known_hosts_line]
    assert {v.status for v in remove(rt, HOST)} == {"pending", "trusted"}
    assert listed(rt) == []
    assert known_hosts(rt) == []
    assert epoch(rt) == before + 2
    (last,) = [r for r in records(rt) if r.action == "ssh-host-key:remove"][-1:]
    assert len(last.details["removed"]) == 2


def test_list_filters(rt: Runtime) -> None:
    add(rt, HOST, ed25519_key())
    offer(rt, ed25519_key(), host="db1", port=2222)
    assert [v.host for v in listed(rt)] == ["db1", HOST]
    assert [v.host for v in listed(rt, "pending")] == ["db1"]
    with rt.unit_of_work(read_only=True) as uow:
        assert [v.port for v in ssh_hosts.list_keys(uow.session, None, "DB1:2222")] == [2222]
        with pytest.raises(InvalidInput, match="unknown host key status 'lost'"):
            ssh_hosts.list_keys(uow.session, "lost")


def test_an_invalid_offer_is_dropped_and_logged(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="runas"):
        assert offer(rt, "ssh-ed25519 AAAA") is False
        assert offer(rt, ed25519_key(), host="*.contoso.com") is False
    assert [r.getMessage() for r in caplog.records] == ["ssh_host_key.offer_refused"] * 2
    assert listed(rt) == []
    assert records(rt) == []


# -- what agents send and receive ------------------------------------------------------------


def test_a_report_with_a_host_key_creates_one_pending_entry(rt: Runtime) -> None:
    key = ed25519_key()
    result = {
        "workflow": "Runas.Ssh.Command",
        "object": f"Runas.Ssh.Target:{AGENT};{HOST}",
        "started_at": datetime.now(UTC).isoformat(),
        "duration_s": 0.2,
        "state": "unknown",
        "message": "unknown SSH host key",
        "host_key": {"host": HOST, "port": 2222, "key": key},
    }
    report = AgentReport.model_validate(
        {"report_id": str(uuid.uuid4()), "epoch": 1, "results": [result, result]}
    )
    with rt.unit_of_work(actor=f"agent:{AGENT}") as uow:
        monitoring.record_report(uow, AGENT, report)
    (view,) = listed(rt, "pending")
    assert (view.host, view.port, view.reported_by) == (HOST, 2222, AGENT)
    assert view.fingerprint == parse_public_key(key).fingerprint


def test_the_configuration_document_carries_the_trusted_keys(rt: Runtime) -> None:
    agent = FakeAgent(AGENT)
    with rt.unit_of_work(source="192.0.2.7") as uow:
        agents.enrol(uow, agent.request())
    with rt.unit_of_work() as uow:
        agents.approve(uow, AGENT)
    trusted = add(rt, HOST, ed25519_key())
    offer(rt, ecdsa_key(), host="db1")  # pending: not sent
    other = add(rt, "db1:2222", rsa_key())

    memory = ResolutionMemory()
    with rt.unit_of_work(read_only=True) as uow:
        row = uow.session.scalars(select(AgentRow).where(AgentRow.id == AGENT)).one()
        built = agent_config.build(uow, row, memory=memory)
        current = lookup.epoch(uow.session)
    document = json.loads(built.body)
    assert built.epoch == current
    assert document["known_hosts"] == [other.known_hosts_line, trusted.known_hosts_line]
    parsed = parse_config(document, agent_id=AGENT, etag=built.etag)
    assert parsed.known_hosts == (other.known_hosts_line, trusted.known_hosts_line)
