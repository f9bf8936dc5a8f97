"""Agents: enrolment, approval, one-time tokens, the group CA and who a certificate is — on
SQLite and PostgreSQL, with real keys, certificates and keyring."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import select

from runas.crypto.ca import CertificateAuthority, agent_id_of
from runas.errors import (
    AgentNotApproved,
    AgentRemoved,
    Conflict,
    DecryptionError,
    InUse,
    InvalidInput,
    NotFound,
)
from runas.runtime import Runtime, UnitOfWork
from runas.services import agents, keys, lookup
from runas.services.audit import AuditRecordView, list_records
from runas.settings import Settings
from runas.storage.tables import AgentRow, EnrolmentTokenRow, GroupKeyRow
from support.db import every_row
from support.enrolling import FakeAgent, der

HERE = "192.0.2.7"
A = "a.contoso.com"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rt(tmp_path: Path, db_url: str, clock: Clock) -> Iterator[Runtime]:
    settings = Settings(data_dir=tmp_path / "runas-data", database_url=db_url, actor="test:admin")
    runtime = Runtime(settings, env={}, clock=clock)
    from runas.services import setup

    setup.init(runtime, "Contoso Production")
    try:
        yield runtime
    finally:
        runtime.close()


@contextmanager
def unit(rt: Runtime, *, source: str = "local", actor: str | None = None) -> Iterator[UnitOfWork]:
    with rt.unit_of_work(actor=actor, source=source) as uow:
        yield uow


def enrol(rt: Runtime, agent: FakeAgent, token: str | None = None) -> agents.EnrolAnswer:
    with unit(rt, source=HERE, actor="system:agent-listener") as uow:
        return agents.enrol(uow, agent.request(token))


def approve(rt: Runtime, agent_id: str) -> agents.AgentView:
    with unit(rt) as uow:
        return agents.approve(uow, agent_id)


def identify(rt: Runtime, certificate: str | bytes) -> AgentRow:
    with rt.unit_of_work(read_only=True) as uow:
        return agents.identify(uow.session, der(certificate), now=uow.now)


def records(rt: Runtime, action: str = "agent") -> list[AuditRecordView]:
    with rt.unit_of_work(read_only=True) as uow:
        return list_records(uow.session, action=action)


def epoch(rt: Runtime) -> int:
    with rt.unit_of_work(read_only=True) as uow:
        return lookup.epoch(uow.session)


def enrolled_and_approved(rt: Runtime, agent: FakeAgent) -> str:
    enrol(rt, agent)
    approve(rt, agent.agent_id)
    answer = enrol(rt, agent)
    assert answer.status == "approved"
    assert answer.certificate is not None
    return answer.certificate


# -- enrolment and approval ------------------------------------------------------------------


def test_an_agent_waits_for_approval_then_gets_its_certificate(rt: Runtime) -> None:
    agent = FakeAgent("A.Contoso.com")
    first = enrol(rt, agent)
    assert first == agents.EnrolAnswer(status="pending", certificate=None)
    # Agents repeat the request every poll: nothing changes, nothing more is recorded.
    assert enrol(rt, agent) == first
    (enrolled,) = records(rt)
    assert (enrolled.action, enrolled.target, enrolled.actor, enrolled.source) == (
        "agent:enrol",
        A,
        f"agent:{A}",
        HERE,
    )
    with unit(rt) as uow:
        (pending,) = agents.list_agents(uow.session, "pending")
    assert (pending.id, pending.enrolled_from, pending.agent_version) == (A, HERE, "1.0.0")

    before = epoch(rt)
    view = approve(rt, A)
    assert view.status == "approved"
    assert view.decided_by == "test:admin"
    assert epoch(rt) == before + 1
    answer = enrol(rt, agent)
    assert answer.status == "approved"
    assert answer.certificate is not None
    cert = x509.load_pem_x509_certificate(answer.certificate.encode())
    assert agent_id_of(cert) == A
    assert cert.public_key() == agent.tls.public_key()
    assert view.cert_not_after == cert.not_valid_after_utc
    assert identify(rt, answer.certificate).id == A
    # Approving again changes nothing: same certificate, no new record.
    assert approve(rt, A).cert_not_after == view.cert_not_after
    assert [r.action for r in records(rt)] == ["agent:enrol", "agent:ca-create", "agent:approve"]


def test_enrolment_refuses_bad_requests(rt: Runtime) -> None:
    agent = FakeAgent(A)
    good = agent.request()
    bad = [
        good.model_copy(update={"agent_id": "a contoso"}),
        good.model_copy(update={"agent_id": "-a"}),
        good.model_copy(update={"hpke_public_key": "not base64!"}),
        good.model_copy(update={"hpke_public_key": base64.b64encode(b"short").decode()}),
        # a low-order X25519 point: every seal to it would fail
        good.model_copy(update={"hpke_public_key": base64.b64encode(bytes(32)).decode()}),
        good.model_copy(update={"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"}),
        good.model_copy(update={"csr": good.csr.replace("A", "B", 1)}),
    ]
    for req in bad:
        with pytest.raises(InvalidInput), unit(rt, source=HERE) as uow:
            agents.enrol(uow, req)
    with unit(rt) as uow:
        assert agents.list_agents(uow.session) == []


def test_the_same_id_with_other_keys_is_refused_until_removed(rt: Runtime) -> None:
    agent = FakeAgent(A)
    enrol(rt, agent)
    impostor = agent.with_new_keys()
    with pytest.raises(Conflict, match=f"agent {A} is already enrolled with other keys"):
        enrol(rt, impostor)
    # Only the HPKE key, or only the TLS key, differing is refused too.
    half = FakeAgent(A, hpke=agent.hpke)
    with pytest.raises(Conflict):
        enrol(rt, half)
    with unit(rt) as uow:
        assert agents.remove(uow, A) == A
    assert enrol(rt, impostor).status == "pending"


def test_a_removed_agents_certificate_is_refused(rt: Runtime) -> None:
    agent = FakeAgent(A)
    old = enrolled_and_approved(rt, agent)
    before = epoch(rt)
    with unit(rt) as uow:
        agents.remove(uow, A)
    assert epoch(rt) == before + 1
    with pytest.raises(AgentRemoved, match="not in this management group"):
        identify(rt, old)
    # Enrolled again (same keys) and approved: a new serial, and the old certificate names an
    # agent that no longer exists.
    new = enrolled_and_approved(rt, agent)
    assert identify(rt, new).id == A
    with pytest.raises(AgentRemoved, match="removed and enrolled again"):
        identify(rt, old)


def test_rejecting_stops_an_agent_and_approving_again_issues_a_new_certificate(
    rt: Runtime,
) -> None:
    agent = FakeAgent(A)
    old = enrolled_and_approved(rt, agent)
    with unit(rt) as uow:
        assert agents.reject(uow, A).status == "rejected"
    with pytest.raises(AgentNotApproved, match=f"agent {A} is rejected"):
        identify(rt, old)
    assert enrol(rt, agent) == agents.EnrolAnswer(status="rejected", certificate=None)
    new = enrolled_and_approved(rt, agent)
    assert identify(rt, new).id == A
    with pytest.raises(AgentRemoved):
        identify(rt, old)


def test_a_pending_agent_is_not_approved(rt: Runtime) -> None:
    agent = FakeAgent(A)
    cert = enrolled_and_approved(rt, agent)
    with unit(rt) as uow:
        row = uow.session.get(AgentRow, A)
        assert row is not None
        row.status = "pending"  # as if un-approved behind runas's back
    with pytest.raises(AgentNotApproved):
        identify(rt, cert)


def test_a_certificate_from_another_ca_is_refused(rt: Runtime, clock: Clock) -> None:
    enrolled_and_approved(rt, FakeAgent(A))
    other = CertificateAuthority.create("someone else", now=clock.now)
    forged = other.issue_agent_certificate(FakeAgent(A).csr(), agent_id=A, now=clock.now)
    with pytest.raises(AgentRemoved, match="not usable here"):
        identify(rt, forged)


def test_unknown_agents(rt: Runtime) -> None:
    with unit(rt) as uow:
        for call in (agents.approve, agents.reject, agents.remove):
            with pytest.raises(NotFound, match="no agent named 'ghost'"):
                call(uow, "ghost")
        with pytest.raises(NotFound):
            agents.show(uow.session, "ghost")
        with pytest.raises(InvalidInput, match="unknown agent status"):
            agents.list_agents(uow.session, "lost")


def test_lists_filter_by_status_and_never_show_keys(rt: Runtime) -> None:
    for name in ("b", "a", "c"):
        enrol(rt, FakeAgent(name))
    approve(rt, "b")
    with unit(rt) as uow:
        agents.reject(uow, "c")
        assert [a.id for a in agents.list_agents(uow.session)] == ["a", "b", "c"]
        assert [a.id for a in agents.list_agents(uow.session, "pending")] == ["a"]
        assert [a.id for a in agents.list_agents(uow.session, "approved")] == ["b"]
        shown = agents.show(uow.session, "B").model_dump()
    assert "hpke_public_key" not in shown
    assert "csr_pem" not in shown
    assert "cert_pem" not in shown
    assert len(shown["key_fingerprint"]) == 64


def test_an_approved_agent_close_to_its_certificates_end_gets_a_new_one(
    rt: Runtime, clock: Clock
) -> None:
    agent = FakeAgent(A)
    old = enrolled_and_approved(rt, agent)
    assert enrol(rt, agent).certificate == old  # far from its end: the same one
    clock.advance(timedelta(days=340))
    renewed = enrol(rt, agent).certificate
    assert renewed is not None
    assert renewed != old
    assert identify(rt, renewed).id == A
    assert records(rt)[-1].action == "agent:renew"


def test_last_seen_is_written_at_most_every_30_seconds(rt: Runtime, clock: Clock) -> None:
    enrolled_and_approved(rt, FakeAgent(A))

    def touch(epoch: int, source: str = HERE) -> bool:
        with unit(rt) as uow:
            return agents.touch(uow.session, A, now=uow.now, source=source, epoch=epoch)

    with unit(rt) as uow:
        version = uow.session.get(AgentRow, A).row_version  # type: ignore[union-attr]
    assert touch(3)
    assert not touch(3)
    clock.advance(timedelta(seconds=10))
    assert not touch(3)
    assert touch(4)  # a new epoch is worth a write
    assert touch(4, "192.0.2.8")  # so is a new address
    clock.advance(timedelta(seconds=31))
    assert touch(4, "192.0.2.8")
    with unit(rt) as uow:
        view = agents.show(uow.session, A)
        row = uow.session.get(AgentRow, A)
        assert row is not None
        assert row.row_version == version
    assert (view.last_seen_at, view.last_seen_from, view.last_epoch) == (
        clock.now,
        "192.0.2.8",
        4,
    )
    with unit(rt) as uow:
        assert not agents.touch(uow.session, "ghost", now=uow.now, source=HERE, epoch=1)


# -- enrolment tokens ------------------------------------------------------------------------


def make_token(rt: Runtime, computer: str = A, lifetime: timedelta = timedelta(hours=1)) -> str:
    with unit(rt) as uow:
        made = agents.create_enrolment_token(uow, computer, lifetime)
    assert made.computer == computer.lower()
    return made.token


def test_a_token_approves_its_computer_at_once_and_only_once(rt: Runtime, db_url: str) -> None:
    token = make_token(rt, "A.Contoso.COM")
    assert token.startswith("rae_")
    assert len(token) == 4 + 43
    agent = FakeAgent(A)
    answer = enrol(rt, agent, token)
    assert answer.status == "approved"
    assert answer.certificate is not None
    assert identify(rt, answer.certificate).id == A
    with unit(rt) as uow:
        view = agents.show(uow.session, A)
        used = uow.session.scalars(select(EnrolmentTokenRow)).one()
    assert view.decided_by == f"test:admin (enrolment token {used.id})"
    assert used.used_at is not None
    approval = records(rt, "agent:approve")[-1]
    assert approval.details["token_id"] == used.id
    assert approval.actor == f"agent:{A}"

    # Removed, then enrolling again with the same token: it was spent.
    with unit(rt) as uow:
        agents.remove(uow, A)
    assert enrol(rt, agent.with_new_keys(), token).status == "pending"
    assert records(rt, "agent:enrol")[-1].details["refusal"] == (
        f"enrolment token {used.id} was already used"
    )

    # Nothing stored or recorded anywhere holds the token.
    everything = json.dumps(every_row(db_url), default=str)
    assert token not in everything
    assert token[4:] not in everything


def test_a_token_for_another_computer_or_expired_or_unknown_approves_nothing(
    rt: Runtime, clock: Clock
) -> None:
    other = make_token(rt, "b.contoso.com")
    assert enrol(rt, FakeAgent(A), other).status == "pending"
    assert "for another computer" in records(rt, "agent:enrol")[-1].details["refusal"]

    expiring = make_token(rt, "c", timedelta(minutes=5))
    clock.advance(timedelta(minutes=6))
    assert enrol(rt, FakeAgent("c"), expiring).status == "pending"
    assert "has expired" in records(rt, "agent:enrol")[-1].details["refusal"]

    assert enrol(rt, FakeAgent("d"), "rae_" + "x" * 43).status == "pending"
    assert records(rt, "agent:enrol")[-1].details["refusal"] == "unknown enrolment token"


def test_a_pending_agent_that_gets_a_token_is_approved_on_its_next_request(rt: Runtime) -> None:
    agent = FakeAgent(A)
    assert enrol(rt, agent).status == "pending"
    token = make_token(rt)
    assert enrol(rt, agent, token).status == "approved"


def test_token_lifetimes_and_computers_are_checked(rt: Runtime) -> None:
    with unit(rt) as uow:
        for lifetime in (timedelta(seconds=30), timedelta(days=8)):
            with pytest.raises(InvalidInput, match="1 minute to 7 days"):
                agents.create_enrolment_token(uow, A, lifetime)
        with pytest.raises(InvalidInput, match="agent id"):
            agents.create_enrolment_token(uow, "not a name", timedelta(hours=1))
    created = records(rt, "agent:token-create")
    assert created == []


def test_creating_a_token_is_recorded_without_it(rt: Runtime) -> None:
    token = make_token(rt)
    (made,) = records(rt, "agent:token-create")
    assert made.target == A
    assert set(made.details) == {"token_id", "expires_at"}
    assert token not in json.dumps(made.model_dump(mode="json"))


# -- the group CA and key rotation -----------------------------------------------------------


def test_the_ca_is_made_once_named_for_the_group_and_sealed(rt: Runtime, clock: Clock) -> None:
    with unit(rt) as uow:
        ca = agents.group_ca(uow)
        view = agents.ca_view(uow)
    with unit(rt) as uow:
        again = agents.group_ca(uow)
        row = uow.session.get(GroupKeyRow, agents.CA_KEY_NAME)
        assert row is not None
    assert ca.certificate == again.certificate
    assert view.subject == "CN=runas Contoso Production agent CA"
    assert view.certificate.encode() == ca.certificate_pem()
    assert b"PRIVATE KEY" not in bytes(row.ciphertext)
    assert [r.action for r in records(rt)] == ["agent:ca-create"]
    # The sealed key is bound to its place: another place does not open it.
    from runas.crypto import envelope

    sealed = envelope.SealedSecret(row.kek_id, bytes(row.wrapped_dek), bytes(row.ciphertext))
    with pytest.raises(DecryptionError):
        envelope.open_secret(rt.keyring(), account_id=1, version=1, sealed=sealed)


def test_server_certificates_are_issued_by_the_group_ca(rt: Runtime) -> None:
    with unit(rt) as uow:
        cert_pem, key_pem = agents.server_certificate(
            uow, hostnames=["mgmt.contoso.com"], ips=["127.0.0.1"]
        )
        ca = agents.group_ca(uow)
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(ca.certificate)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mgmt.contoso.com"]
    assert b"PRIVATE KEY" in key_pem


def test_the_ca_survives_key_rotation_and_the_old_key_retires(rt: Runtime) -> None:
    agent = FakeAgent(A)
    cert = enrolled_and_approved(rt, agent)
    old_key = rt.keyring().active_id
    result = keys.rotate(rt)
    with unit(rt) as uow:
        row = uow.session.get(GroupKeyRow, agents.CA_KEY_NAME)
        assert row is not None
        assert row.kek_id == result.active_key != old_key
    keys.retire(rt, old_key)
    assert old_key not in rt.keyring()
    # The CA still opens and issues; the agent's certificate is still its own.
    assert identify(rt, cert).id == A
    enrol(rt, FakeAgent("b"))
    assert approve(rt, "b").status == "approved"


def test_an_old_key_wrapping_the_ca_cannot_retire_until_rewrapped(rt: Runtime) -> None:
    with unit(rt) as uow:
        agents.group_ca(uow)
    source = rt.keyring_source()
    keyring = source.load()
    old_key = keyring.active_id
    keyring.add_key(rt.clock())
    assert source.file is not None
    source.save(keyring)
    rt.forget_keyring()
    with pytest.raises(InUse, match="agent CA key is still wrapped"):
        keys.retire(rt, old_key)
    keys.rewrap_all(rt)
    keys.retire(rt, old_key)
    with unit(rt) as uow:
        agents.group_ca(uow)


# -- a management server's own agent ---------------------------------------------------------


def register(rt: Runtime, agent: FakeAgent) -> bytes:
    with unit(rt, actor="system:server") as uow:
        return agents.register_management_server(
            uow, agent.agent_id, agent.hpke.public_bytes(), agent.csr()
        )


def test_a_management_server_registers_its_own_agent(rt: Runtime) -> None:
    server = FakeAgent("MGMT1")
    cert = register(rt, server)
    row = identify(rt, cert)
    assert row.id == "mgmt1"
    assert row.management_server
    assert register(rt, server) == cert  # again, same keys: the same certificate
    assert [r.action for r in records(rt)] == ["agent:ca-create", "agent:enrol", "agent:approve"]
    # A new data directory (new keys): registered again, the old certificate is refused.
    renewed = register(rt, server.with_new_keys())
    assert identify(rt, renewed).id == "mgmt1"
    with pytest.raises(AgentRemoved):
        identify(rt, cert)
    with pytest.raises(Conflict, match="cannot be rejected"), unit(rt) as uow:
        agents.reject(uow, "mgmt1")


def test_a_management_server_does_not_take_over_an_agents_name(rt: Runtime) -> None:
    enrol(rt, FakeAgent("mgmt2"))
    with pytest.raises(Conflict, match="ordinary agent"):
        register(rt, FakeAgent("mgmt2"))


# -- enrolment limits --------------------------------------------------------------------------


def enrol_from(
    rt: Runtime, agent: FakeAgent, source: str, limits: agents.EnrolLimits, token: str | None = None
) -> agents.EnrolAnswer:
    with unit(rt, source=source, actor="system:agent-listener") as uow:
        return agents.enrol(uow, agent.request(token), limits=limits)


def agent_ids(rt: Runtime) -> list[str]:
    with rt.unit_of_work(read_only=True) as uow:
        return sorted(uow.session.scalars(select(AgentRow.id)))


def test_new_enrolment_requests_are_limited_per_source_and_in_total(
    rt: Runtime, clock: Clock
) -> None:
    limits = agents.EnrolLimits(per_source=3, window=timedelta(minutes=10), max_pending=5)
    here = [FakeAgent(f"h{i}.contoso.com") for i in range(4)]
    for agent in here[:3]:
        assert enrol_from(rt, agent, HERE, limits).status == "pending"
    clock.advance(timedelta(minutes=4))
    with pytest.raises(agents.EnrolmentRateLimited) as refused:
        enrol_from(rt, here[3], HERE, limits)
    assert HERE in str(refused.value)
    assert "enrolment token" in str(refused.value)
    # until the oldest counted request leaves the window
    assert refused.value.retry_after == 6 * 60
    assert "h3.contoso.com" not in agent_ids(rt)  # nothing written
    # an agent asking again is never refused, nor one that brings its token
    assert enrol_from(rt, here[0], HERE, limits).status == "pending"
    with unit(rt) as uow:
        token = agents.create_enrolment_token(uow, "t.contoso.com").token
    assert enrol_from(rt, FakeAgent("t.contoso.com"), HERE, limits, token).status == "approved"

    # another address has its own allowance, up to the total of pending requests (5)
    elsewhere = [FakeAgent(f"e{i}.contoso.com") for i in range(3)]
    for agent in elsewhere[:2]:
        assert enrol_from(rt, agent, "198.51.100.9", limits).status == "pending"
    with pytest.raises(agents.EnrolmentRateLimited, match="5 enrolment requests are waiting"):
        enrol_from(rt, elsewhere[2], "198.51.100.9", limits)
    # deciding makes room
    approve(rt, "h0.contoso.com")
    assert enrol_from(rt, elsewhere[2], "198.51.100.9", limits).status == "pending"
    # and time makes room for the first address again (once the total allows)
    approve(rt, "h1.contoso.com")
    clock.advance(timedelta(minutes=7))
    assert enrol_from(rt, here[3], HERE, limits).status == "pending"
    # the administrator's own tools pass no limits
    with unit(rt, source=HERE) as uow:
        assert agents.enrol(uow, FakeAgent("x.contoso.com").request(), limits=None)
