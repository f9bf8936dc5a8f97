"""The ``snmp`` probe in-process against a real net-snmp agent (tests/support/peers/snmpd.py):
a v2c community and SNMPv3 users at every security level (and several protocol pairs) get
their values; a wrong community, key, user or level is a typed logon failure — for v2c thanks
to the engine-ID discovery that tells a refusing agent from an absent one; an unreachable agent
is unknown within the timeout; walks, perf and thresholds classify; and no canary secret is in
a result or a log line."""

from __future__ import annotations

import json
import logging
import secrets
import socket
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from runas.agent.handoff import NO_CREDENTIAL, CredentialDocument, credential_document
from runas.agent.probes.base import ProbeContext, probe_for
from runas.agent.probes.result import ProbeResult, ProbeState
from runas.agent.probes.snmp import PROBE, agent_answers_discovery, parse_config
from runas.agent.scrub import Scrubber
from runas.domain.health import AuthFailureKind
from runas.errors import InvalidInput
from support.peers.snmpd import Snmpd, UsmUser, snmpd_running

pytestmark = [pytest.mark.peer]

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
SYS_LOCATION = "1.3.6.1.2.1.1.6.0"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_IN_OCTETS = "1.3.6.1.2.1.2.2.1.10"
#: module-wide canaries: the community and every pass phrase the agent knows
CANARIES = {
    "community": f"canary-community-{secrets.token_hex(8)}",
    **{f"k{n}": f"canary-key{n}-{secrets.token_hex(8)}" for n in range(1, 11)},
}
USERS = (
    UsmUser("rtxpriv", "SHA", CANARIES["k1"], "AES", CANARIES["k2"]),
    UsmUser("rtxauth", "SHA", CANARIES["k3"]),
    UsmUser("rtxnoauth"),
    UsmUser("rtxmd5des", "MD5", CANARIES["k4"], "DES", CANARIES["k5"]),
    UsmUser("rtxsha256", "SHA-256", CANARIES["k6"], "AES-192", CANARIES["k7"]),
    UsmUser("rtxsha512", "SHA-512", CANARIES["k8"], "AES-256", CANARIES["k9"]),
)


@pytest.fixture(scope="module")
def peer() -> Iterator[Snmpd]:
    with snmpd_running(CANARIES["community"], USERS) as agent:
        yield agent


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for canary in CANARIES.values():
        assert canary not in text


def _community(community: str) -> CredentialDocument:
    return credential_document(
        "community-string", {}, {"community": community}, account_name="snmp ro",
        account_id=3, secret_version=1,
    )  # fmt: skip


def _v3(user: UsmUser, **override: str | None) -> CredentialDocument:
    values: dict[str, str | None] = {
        "user": user.name,
        "auth_protocol": user.auth_protocol,
        "auth_key": user.auth_key,
        "priv_protocol": user.priv_protocol,
        "priv_key": user.priv_key,
        "context": None,
    }
    values.update(override)
    public = {k: values[k] for k in ("user", "auth_protocol", "priv_protocol", "context")}
    secret = {k: v for k in ("auth_key", "priv_key") if (v := values[k]) is not None}
    return credential_document(
        "snmpv3", public, secret, account_name="snmp v3", account_id=4, secret_version=2
    )


def _context(
    port: int, document: CredentialDocument, *, timeout_s: float = 5.0, **config: Any
) -> ProbeContext:
    base: dict[str, Any] = {"host": "127.0.0.1", "port": str(port)}
    base.update(config)
    return ProbeContext(
        workflow="Runas.Network.Test",
        kind="monitor",
        object="Runas.Network.Device:gw.example.com;127.0.0.1",
        computer="gw.example.com",
        config=base,
        raw_config=base,
        properties={},
        document=document,
        timeout_s=timeout_s,
        scrubber=Scrubber(CANARIES.values()),
    )


def _run(context: ProbeContext) -> ProbeResult:
    result = PROBE.run(context)
    text = json.dumps(result.to_dict())
    for canary in CANARIES.values():
        assert canary not in text
    return result


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _assert_logon_failed(result: ProbeResult, *words: str) -> None:
    assert result.state is ProbeState.CRITICAL, result.message
    assert result.auth_failure is not None, result.message
    assert result.auth_failure.kind is AuthFailureKind.LOGON_FAILED
    for word in words:
        assert word in result.message


def test_the_registry_finds_the_probe() -> None:
    assert probe_for("snmp") is PROBE


# -- logging on -------------------------------------------------------------------------------


def test_a_community_gets_its_values(peer: Snmpd) -> None:
    result = _run(
        _context(peer.port, _community(peer.community), perf={"sysUpTime": SYS_UPTIME},
                 message_oid=SYS_DESCR)
    )  # fmt: skip
    assert result.state is ProbeState.HEALTHY, result.message
    assert result.auth_failure is None
    assert result.perf["sysUpTime"] >= 0
    assert result.message.startswith("Linux")  # sysDescr of this machine


@pytest.mark.parametrize("name", [u.name for u in USERS])
def test_every_snmpv3_user_gets_its_values(peer: Snmpd, name: str) -> None:
    result = _run(
        _context(peer.port, _v3(peer.user(name)), perf={"sysUpTime": SYS_UPTIME},
                 message_oid=SYS_LOCATION)
    )  # fmt: skip
    assert result.state is ProbeState.HEALTHY, result.message
    assert result.message == "rack 42"
    assert "sysUpTime" in result.perf


def test_a_bare_config_proves_the_logon(peer: Snmpd) -> None:
    result = _run(_context(peer.port, _v3(peer.user("rtxpriv"))))
    assert result.state is ProbeState.HEALTHY
    assert result.message == f"1 value from 127.0.0.1:{peer.port} (SNMPv3 authPriv)"


# -- refused ----------------------------------------------------------------------------------


def test_a_wrong_community_is_a_logon_failure_not_a_timeout(peer: Snmpd) -> None:
    result = _run(
        _context(peer.port, _community("canary-wrong-" + secrets.token_hex(6)), timeout_s=2)
    )
    _assert_logon_failed(result, "answers SNMPv3 discovery", "community refused")
    assert not result.timed_out


def test_a_wrong_auth_key_is_a_logon_failure(peer: Snmpd) -> None:
    result = _run(_context(peer.port, _v3(peer.user("rtxauth"), auth_key="wrong-key-123456")))
    _assert_logon_failed(result, "usmStatsWrongDigests", "rtxauth")


def test_a_wrong_auth_protocol_is_a_logon_failure(peer: Snmpd) -> None:
    result = _run(_context(peer.port, _v3(peer.user("rtxauth"), auth_protocol="MD5")))
    _assert_logon_failed(result, "usmStatsWrongDigests")


def test_an_unknown_user_is_a_logon_failure(peer: Snmpd) -> None:
    result = _run(_context(peer.port, _v3(UsmUser("rtxnobody"))))
    _assert_logon_failed(result, "usmStatsUnknownUserNames", "rtxnobody")


def test_a_security_level_the_user_lacks_is_a_logon_failure(peer: Snmpd) -> None:
    user = peer.user("rtxnoauth")
    result = _run(_context(peer.port, _v3(user, auth_protocol="SHA", auth_key="some-key-123")))
    _assert_logon_failed(result, "usmStatsUnsupportedSecLevels")


def test_a_level_below_the_required_one_is_refused_by_access_control(peer: Snmpd) -> None:
    result = _run(_context(peer.port, _v3(peer.user("rtxauth"), auth_protocol=None, auth_key=None)))
    _assert_logon_failed(result, "authorizationError")


def test_a_wrong_privacy_key_is_a_logon_failure(peer: Snmpd) -> None:
    # net-snmp drops what it cannot decrypt (no usmStatsDecryptionErrors report): the engine-ID
    # discovery shows the agent is there, so the silence is about the credential.
    result = _run(
        _context(peer.port, _v3(peer.user("rtxpriv"), priv_key="wrong-priv-9876"), timeout_s=2)
    )
    _assert_logon_failed(result, "answers SNMPv3 discovery", "request dropped")


def test_an_unknown_context_is_a_logon_failure(peer: Snmpd) -> None:
    result = _run(_context(peer.port, _v3(peer.user("rtxauth"), context="nosuchctx"), timeout_s=2))
    _assert_logon_failed(result, "context 'nosuchctx'")


# -- unreachable, timeouts, the action account ------------------------------------------------


@pytest.mark.parametrize("kind", ["v2c", "v3"])
def test_an_unreachable_agent_is_unknown_within_the_timeout(kind: str) -> None:
    document = _community(CANARIES["community"]) if kind == "v2c" else _v3(USERS[0])
    start = time.monotonic()
    result = _run(_context(_free_udp_port(), document, timeout_s=1.5))
    assert time.monotonic() - start < 2.0
    assert result.state is ProbeState.UNKNOWN
    assert result.auth_failure is None
    assert "unreachable" in result.message


def test_discovery_tells_a_live_agent_from_none(peer: Snmpd) -> None:
    assert agent_answers_discovery("127.0.0.1", peer.port, 1.0)
    assert not agent_answers_discovery("127.0.0.1", _free_udp_port(), 0.3)


def test_an_unresolvable_host_is_unknown() -> None:
    result = _run(
        _context(161, _community(CANARIES["community"]), host="no-such-host.invalid", timeout_s=2)
    )
    assert result.state is ProbeState.UNKNOWN
    assert result.auth_failure is None


def test_the_action_account_cannot_run_it(peer: Snmpd) -> None:
    result = _run(_context(peer.port, NO_CREDENTIAL))
    assert result.state is ProbeState.UNKNOWN
    assert "community-string or snmpv3" in result.message


# -- what is measured -------------------------------------------------------------------------


def test_a_walk_gives_perf_per_row(peer: Snmpd) -> None:
    result = _run(
        _context(peer.port, _community(peer.community),
                 walk={"ifInOctets": IF_IN_OCTETS, "ifDescr": IF_DESCR})
    )  # fmt: skip
    assert result.state is ProbeState.HEALTHY, result.message
    assert "ifInOctets.1" in result.perf  # lo is interface 1
    assert not any(name.startswith("ifDescr") for name in result.perf)  # text, not numbers


def test_a_walk_is_cut_at_max_rows(peer: Snmpd) -> None:
    result = _run(_context(peer.port, _v3(peer.user("rtxauth")), walk="1.3.6.1.2.1.1", max_rows=2))
    assert "walk cut at 2 rows" in result.message
    assert len(result.perf) <= 2


@pytest.mark.parametrize(
    ("threshold", "state"),
    [
        ({"warning": 1e12, "critical": 1e13}, ProbeState.HEALTHY),
        ({"warning": 0}, ProbeState.WARNING),
        ({"warning": 0, "critical": 0}, ProbeState.CRITICAL),
        ({"critical": 1e12, "below": True}, ProbeState.CRITICAL),
        ({"warning": "1e12", "below": "true"}, ProbeState.WARNING),  # placeholders render text
    ],
)
def test_thresholds_classify(peer: Snmpd, threshold: Mapping[str, Any], state: ProbeState) -> None:
    result = _run(
        _context(peer.port, _community(peer.community), perf={"sysUpTime": SYS_UPTIME},
                 thresholds={"sysUpTime": threshold})
    )  # fmt: skip
    assert result.state is state, result.message
    assert result.auth_failure is None
    if state is not ProbeState.HEALTHY:
        assert result.message.startswith("sysUpTime = ")


def test_thresholds_apply_to_every_walked_row(peer: Snmpd) -> None:
    result = _run(
        _context(peer.port, _community(peer.community), walk={"ifInOctets": IF_IN_OCTETS},
                 thresholds={"ifInOctets": {"critical": 0}})
    )  # fmt: skip
    assert result.state is ProbeState.CRITICAL
    assert "ifInOctets.1 = " in result.message


def test_a_missing_oid_is_unknown(peer: Snmpd) -> None:
    result = _run(
        _context(peer.port, _community(peer.community), perf={"nothing": "1.3.6.1.2.1.1.99.0"})
    )
    assert result.state is ProbeState.UNKNOWN
    assert "no value at 1.3.6.1.2.1.1.99.0 (nothing)" in result.message
    assert result.auth_failure is None


def test_a_text_value_cannot_be_perf(peer: Snmpd) -> None:
    result = _run(_context(peer.port, _community(peer.community), perf={"descr": SYS_DESCR}))
    assert result.state is ProbeState.UNKNOWN
    assert "descr (1.3.6.1.2.1.1.1.0) is not a number" in result.message


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({}, "host is required"),
        ({"host": "h", "port": "x"}, "port must be a number"),
        ({"host": "h", "port": 70000}, "port must be a whole number"),
        ({"host": "h", "get": ["SNMPv2-MIB::sysDescr.0"]}, "numeric OID"),
        ({"host": "h", "walk": {"bad name": "1.3.6"}}, "identifiers"),
        ({"host": "h", "thresholds": {"x": {"critical": 1}}}, "names no perf or walk value"),
        ({"host": "h", "perf": {"x": "1.3.6.1"}, "thresholds": {"x": {}}}, "warning and/or"),
        (
            {
                "host": "h",
                "perf": {"x": "1.3.6.1"},
                "thresholds": {"x": {"warning": 5, "critical": 1}},
            },
            "critical must be at or above warning",
        ),
        ({"host": "h", "bogus": 1}, "unknown key 'bogus'"),
    ],
)
def test_config_errors_name_the_key(config: dict[str, Any], error: str) -> None:
    with pytest.raises(InvalidInput, match=error):
        parse_config(config)


def test_perf_and_message_oids_are_fetched() -> None:
    cfg = parse_config({"host": "h", "get": [SYS_DESCR], "perf": {"up": SYS_UPTIME},
                        "message_oid": "." + SYS_LOCATION})  # fmt: skip
    assert cfg.get == (SYS_DESCR, SYS_UPTIME, SYS_LOCATION)
    assert cfg.port == 161
