"""The ``ldap`` probe in-process against a real OpenLDAP slapd shaped like Active Directory
(tests/support/peers/slapd.py): a windows account (user + domain, resolved by sAMAccountName
or UPN) and simple accounts (a bind DN, a plain name, a UPN) log on; a wrong password or an
unknown user is a typed logon failure; an unreachable or silent directory is unknown;
thresholds classify; the system discovery returns computer objects; and the canary password
is in no result and no log line."""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from runas.agent.handoff import NO_CREDENTIAL, CredentialDocument, credential_document
from runas.agent.probes.base import ProbeContext, probe_for, render_config
from runas.agent.probes.ldap import PROBE
from runas.agent.probes.result import ProbeResult, ProbeState
from runas.agent.scrub import Scrubber
from runas.domain.health import AuthFailureKind
from runas.errors import InvalidInput
from support.peers.slapd import (
    DOMAIN,
    SUFFIX,
    USERS_OU,
    DirectoryComputer,
    DirectoryUser,
    Slapd,
    slapd_running,
)

pytestmark = [pytest.mark.peer]

COMPUTERS = (
    DirectoryComputer("web01.contoso.com", "Windows Server 2022 Datacenter", "10.0 (20348)"),
    DirectoryComputer("sql01.contoso.com", "Windows Server 2019 Standard", "10.0 (17763)"),
    DirectoryComputer("build01.contoso.com", "Windows 11 Enterprise"),
)
DISCOVER = {
    "base": f"ou=Computers,{SUFFIX}",
    "filter": "(objectClass=computer)",
    "class": "Runas.Directory.Computer",
    "key": {"name": "dNSHostName"},
    "properties": {
        "operating_system": "operatingSystem",
        "operating_system_version": "operatingSystemVersion",
        "distinguished_name": "dn",
    },
}


@pytest.fixture(scope="module")
def canary() -> str:
    return f"canary-{secrets.token_urlsafe(16)}"


@pytest.fixture(scope="module")
def peer(canary: str) -> Iterator[Slapd]:
    users = [
        DirectoryUser("svc-ldap", canary),
        DirectoryUser("monitor", f"other-{secrets.token_urlsafe(12)}"),
    ]
    with slapd_running(users, COMPUTERS) as server:
        yield server


def _document(kind: str, user: str, password: str, domain: str = DOMAIN) -> CredentialDocument:
    public = {"user": user}
    if kind == "windows":
        public["domain"] = domain
    return credential_document(
        kind, public, {"password": password}, account_name="directory", account_id=3,
        secret_version=1,
    )  # fmt: skip


def _context(
    peer_port: int,
    document: CredentialDocument,
    *,
    kind: str = "monitor",
    timeout_s: float = 10.0,
    **config: Any,
) -> ProbeContext:
    # No TLS on loopback unless a test asks for it (the probe's default is StartTLS).
    full: dict[str, Any] = {
        "host": "127.0.0.1", "port": str(peer_port), "base": SUFFIX, "tls": "none",
    }  # fmt: skip
    full.update(config)
    full = {k: v for k, v in full.items() if v is not None}
    return ProbeContext(
        workflow="Runas.Directory.Test",
        kind=kind,
        object="Runas.Directory.Domain:dc01.contoso.com;contoso.com",
        computer="dc01.contoso.com",
        config=full,
        raw_config=full,
        properties={},
        document=document,
        timeout_s=timeout_s,
        scrubber=Scrubber(document.secret_values()),
    )


def _text_of(result: ProbeResult) -> str:
    return json.dumps(result.to_dict())


def _assert_no_canary(result: ProbeResult, canary: str, caplog: pytest.LogCaptureFixture) -> None:
    assert canary not in _text_of(result)
    assert canary not in caplog.text
    for record in caplog.records:
        assert canary not in record.getMessage()
        assert canary not in repr(record.__dict__)


# -- logon ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "user"),
    [
        pytest.param("windows", "svc-ldap", id="windows-domain-user"),
        pytest.param("simple", f"cn=svc-ldap,{USERS_OU}", id="simple-dn"),
        pytest.param("simple", "svc-ldap", id="simple-name"),
        pytest.param("simple", f"svc-ldap@{DOMAIN}", id="simple-upn"),
        pytest.param("simple", "CONTOSO\\svc-ldap", id="simple-down-level"),
    ],
)
def test_every_account_variant_binds(
    peer: Slapd, canary: str, kind: str, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    result = PROBE.run(_context(peer.port, _document(kind, user, canary)))
    assert result.state is ProbeState.HEALTHY, result.message
    assert result.auth_failure is None
    assert f"bound as cn=svc-ldap,{USERS_OU}" in result.message
    assert result.perf["entries"] >= 1
    assert {"connect_ms", "bind_ms", "search_ms", "entries"} <= set(result.perf)
    _assert_no_canary(result, canary, caplog)


def test_the_registry_finds_the_probe() -> None:
    assert probe_for("ldap") is PROBE


def test_a_wrong_password_is_a_logon_failure(
    peer: Slapd, canary: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = canary + "-wrong"
    for kind, user in (("windows", "svc-ldap"), ("simple", f"cn=svc-ldap,{USERS_OU}")):
        result = PROBE.run(_context(peer.port, _document(kind, user, wrong)))
        assert result.state is ProbeState.CRITICAL
        assert result.auth_failure is not None
        assert result.auth_failure.kind is AuthFailureKind.LOGON_FAILED
        assert "invalidCredentials" in result.message
        assert result.discovery is None
        _assert_no_canary(result, wrong, caplog)
        _assert_no_canary(result, canary, caplog)


def test_a_password_of_another_user_is_refused(peer: Slapd, canary: str) -> None:
    result = PROBE.run(_context(peer.port, _document("windows", "monitor", canary)))
    assert result.auth_failure is not None
    assert result.auth_failure.kind is AuthFailureKind.LOGON_FAILED


def test_an_unknown_user_is_a_logon_failure_without_the_secret(
    peer: Slapd, canary: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    result = PROBE.run(_context(peer.port, _document("windows", "nobody", canary)))
    assert result.auth_failure is not None
    assert result.auth_failure.kind is AuthFailureKind.LOGON_FAILED
    assert "was not found" in result.message
    assert "contoso.com\\nobody" in result.message
    _assert_no_canary(result, canary, caplog)


def test_filter_characters_in_a_user_name_are_escaped(peer: Slapd, canary: str) -> None:
    # "*" unescaped would match every entry with a sAMAccountName and bind the first one.
    result = PROBE.run(_context(peer.port, _document("simple", "svc-*", canary)))
    assert result.auth_failure is not None
    assert "was not found" in result.message


def test_a_custom_user_filter_and_base(peer: Slapd, canary: str) -> None:
    ctx = _context(
        peer.port, _document("windows", "svc-ldap", canary),
        user_base=USERS_OU, user_filter="(&(objectClass=adUser)(userPrincipalName={upn}))",
    )  # fmt: skip
    assert PROBE.run(ctx).state is ProbeState.HEALTHY


def test_a_user_filter_written_in_a_pack_survives_placeholder_filling(
    peer: Slapd, canary: str
) -> None:
    # In a pack, {name} is an object property: the login placeholders are written doubled.
    raw = {"user_filter": "(sAMAccountName={{user}})", "user_base": "{base}"}
    rendered = render_config(raw, {"base": USERS_OU})
    ctx = _context(peer.port, _document("windows", "svc-ldap", canary), **rendered)
    assert PROBE.run(ctx).state is ProbeState.HEALTHY


def test_bind_name_binds_without_a_search(peer: Slapd, canary: str) -> None:
    ok = _context(
        peer.port, _document("windows", "svc-ldap", canary), bind_name=f"cn={{user}},{USERS_OU}"
    )
    result = PROBE.run(ok)
    assert result.state is ProbeState.HEALTHY
    assert "resolve_ms" not in result.perf
    wrong = _context(
        peer.port, _document("windows", "svc-ldap", "nope-" + canary),
        bind_name=f"cn={{user}},{USERS_OU}",
    )  # fmt: skip
    failed = PROBE.run(wrong)
    assert failed.auth_failure is not None
    assert failed.auth_failure.kind is AuthFailureKind.LOGON_FAILED


# -- unreachable ------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_directory_is_unknown(canary: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    result = PROBE.run(_context(_closed_port(), _document("windows", "svc-ldap", canary)))
    assert result.state is ProbeState.UNKNOWN
    assert result.auth_failure is None
    assert "cannot connect to ldap://127.0.0.1:" in result.message
    assert result.credential_report(_now(), 1) is None
    _assert_no_canary(result, canary, caplog)


def test_a_silent_directory_times_out_as_unknown(canary: str) -> None:
    # A listener that accepts and never answers: the probe gives up at the run's timeout.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        held: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    held.append(listener.accept()[0])
                except OSError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            ctx = _context(port, _document("windows", "svc-ldap", canary), timeout_s=1.0)
            result = PROBE.run(ctx)
        finally:
            stop.set()
            thread.join()
            for conn in held:
                conn.close()
    assert result.state is ProbeState.UNKNOWN, result.message
    assert result.timed_out
    assert result.duration_s < 3.0


def _now() -> datetime:
    return datetime.now(UTC)


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_peer(canary: str) -> Iterator[Slapd]:
    with slapd_running([DirectoryUser("svc-ldap", canary)], tls=True) as server:
        yield server


def test_starttls_with_the_directory_ca(tls_peer: Slapd, canary: str) -> None:
    ctx = _context(
        tls_peer.port, _document("windows", "svc-ldap", canary), host="localhost", tls="start",
        ca_file=str(tls_peer.ca_file),
    )  # fmt: skip
    result = PROBE.run(ctx)
    assert result.state is ProbeState.HEALTHY, result.message


def test_starttls_is_the_default_and_an_unknown_ca_is_refused_before_the_bind(
    tls_peer: Slapd, canary: str
) -> None:
    ctx = _context(tls_peer.port, _document("windows", "svc-ldap", canary), tls=None)
    result = PROBE.run(ctx)
    assert result.state is ProbeState.UNKNOWN
    assert result.auth_failure is None
    assert "StartTLS" in result.message
    assert "certificate verify failed" in result.message
    assert "bind_ms" not in result.perf


def test_starttls_checks_the_host_name(tls_peer: Slapd, canary: str) -> None:
    # The certificate names localhost, not 127.0.0.1.
    doc = _document("windows", "svc-ldap", canary)
    ca = str(tls_peer.ca_file)
    wrong_name = PROBE.run(_context(tls_peer.port, doc, tls="start", ca_file=ca))
    assert wrong_name.state is ProbeState.UNKNOWN
    assert "127.0.0.1" in wrong_name.message
    assert "bind_ms" not in wrong_name.perf
    # verify: false accepts any certificate (tests only).
    unchecked = PROBE.run(_context(tls_peer.port, doc, tls="start", verify=False))
    assert unchecked.state is ProbeState.HEALTHY, unchecked.message


def test_no_clear_text_fallback_when_starttls_is_refused(peer: Slapd, canary: str) -> None:
    # The plain directory offers no StartTLS: the probe stops there, it does not bind in clear.
    result = PROBE.run(_context(peer.port, _document("windows", "svc-ldap", canary), tls=None))
    assert result.state is ProbeState.UNKNOWN
    assert "StartTLS" in result.message
    assert "bind_ms" not in result.perf


# -- the monitor ------------------------------------------------------------------------------


def test_bind_only_when_no_base_is_given(peer: Slapd, canary: str) -> None:
    ctx = _context(peer.port, _document("simple", f"cn=svc-ldap,{USERS_OU}", canary), base=None)
    result = PROBE.run(ctx)
    assert result.state is ProbeState.HEALTHY
    assert result.message.startswith(f"bound as cn=svc-ldap,{USERS_OU}")
    assert "entries" not in result.perf


def test_thresholds_on_the_entry_count(peer: Slapd, canary: str) -> None:
    doc = _document("windows", "svc-ldap", canary)
    search = {"filter": "(objectClass=computer)", "scope": "sub"}
    healthy = PROBE.run(
        _context(peer.port, doc, **search, thresholds={"entries": {"critical_below": 1}})
    )
    assert healthy.state is ProbeState.HEALTHY
    assert healthy.perf["entries"] == len(COMPUTERS)
    warning = PROBE.run(
        _context(peer.port, doc, **search, thresholds={"entries": {"warning_above": 2}})
    )
    assert warning.state is ProbeState.WARNING
    assert "3 entries > 2" in warning.message
    critical = PROBE.run(
        _context(
            peer.port, doc, filter="(cn=no-such-thing)",
            thresholds={"entries": {"critical_below": 1, "warning_below": 5}},
        )
    )  # fmt: skip
    assert critical.state is ProbeState.CRITICAL
    assert "0 entries < 1" in critical.message
    # The bind worked: a critical search still proves the credential.
    report = critical.credential_report(_now(), 1)
    assert report is not None
    assert report.failure is None


def test_a_missing_search_base_is_critical_not_a_logon_failure(peer: Slapd, canary: str) -> None:
    # The account is found under the suffix; the monitored base does not exist.
    ctx = _context(
        peer.port, _document("windows", "svc-ldap", canary), base="ou=Nowhere," + SUFFIX,
        user_base=SUFFIX,
    )  # fmt: skip
    result = PROBE.run(ctx)
    assert result.state is ProbeState.CRITICAL
    assert result.auth_failure is None
    assert "noSuchObject" in result.message


@pytest.mark.parametrize(
    "config",
    [
        {"host": None},
        {"port": "not-a-port"},
        {"tls": "sometimes"},
        {"scope": "everything"},
        {"thresholds": {"entries": {"below": 1}}},
    ],
)
def test_a_wrong_configuration_is_refused(peer: Slapd, canary: str, config: Any) -> None:
    with pytest.raises(InvalidInput, match="ldap probe"):
        PROBE.run(_context(peer.port, _document("windows", "svc-ldap", canary), **config))


def test_an_account_the_probe_cannot_use_is_unknown(peer: Slapd) -> None:
    result = PROBE.run(_context(peer.port, NO_CREDENTIAL))
    assert result.state is ProbeState.UNKNOWN
    assert "needs a windows or simple account" in result.message


# -- discovery --------------------------------------------------------------------------------


def test_the_system_discovery_returns_the_directory_computers(
    peer: Slapd, canary: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ctx = _context(
        peer.port, _document("windows", "svc-ldap", canary), kind="discovery", discover=DISCOVER
    )
    result = PROBE.run(ctx)
    assert result.state is ProbeState.HEALTHY, result.message
    assert result.discovery is not None
    found = {o["key"]["name"]: o for o in result.discovery}
    assert set(found) == {c.host_name for c in COMPUTERS}
    web = found["web01.contoso.com"]
    assert web["class"] == "Runas.Directory.Computer"
    assert web["properties"] == {
        "operating_system": "Windows Server 2022 Datacenter",
        "operating_system_version": "10.0 (20348)",
        "distinguished_name": f"cn=WEB01,ou=Computers,{SUFFIX}",
    }
    # An attribute the entry lacks is left out, not reported empty.
    assert "operating_system_version" not in found["build01.contoso.com"]["properties"]
    assert "host" not in web
    assert result.perf["entries"] == len(COMPUTERS)
    assert f"discovered {len(COMPUTERS)} Runas.Directory.Computer objects" in result.message
    _assert_no_canary(result, canary, caplog)


def test_discovery_skips_entries_without_the_key_and_pages(peer: Slapd, canary: str) -> None:
    spec = {**DISCOVER, "base": SUFFIX, "filter": "(objectClass=*)"}
    ctx = _context(
        peer.port, _document("windows", "svc-ldap", canary), kind="discovery", discover=spec
    )
    result = PROBE.run(ctx)
    assert result.discovery is not None
    assert len(result.discovery) == len(COMPUTERS)
    assert "entries without dNSHostName skipped" in result.message


def test_discovery_over_the_limit_reports_nothing(peer: Slapd, canary: str) -> None:
    spec = {**DISCOVER, "max_objects": 2}
    ctx = _context(
        peer.port, _document("windows", "svc-ldap", canary), kind="discovery", discover=spec
    )
    result = PROBE.run(ctx)
    assert result.state is ProbeState.UNKNOWN
    assert result.discovery is None


def test_discovery_with_a_wrong_password_discovers_nothing(peer: Slapd, canary: str) -> None:
    ctx = _context(
        peer.port, _document("windows", "svc-ldap", "x" + canary), kind="discovery",
        discover=DISCOVER,
    )  # fmt: skip
    result = PROBE.run(ctx)
    assert result.auth_failure is not None
    assert result.discovery is None


def test_discover_belongs_to_discovery_workflows(peer: Slapd, canary: str) -> None:
    doc = _document("windows", "svc-ldap", canary)
    with pytest.raises(InvalidInput, match="discovery workflows only"):
        PROBE.run(_context(peer.port, doc, discover=DISCOVER))
    with pytest.raises(InvalidInput, match="needs 'discover'"):
        PROBE.run(_context(peer.port, doc, kind="discovery"))
