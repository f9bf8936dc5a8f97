"""The ``ssh`` probe in-process against a real OpenSSH server (tests/support/peers/sshd.py):
every account type and elevation it accepts, refused credentials and elevations typed as Run As
health wants them, host keys verified with no trust on first use, and no secret in any result or
log line."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml

from runas.agent.handoff import CredentialDocument, credential_document
from runas.agent.probes.base import ProbeContext, parameters_of, probe_for, render_config
from runas.agent.probes.result import ProbeResult, ProbeState
from runas.agent.scrub import Scrubber
from runas.domain.health import AuthFailureKind
from runas.errors import InvalidInput
from support.peers.sshd import Sshd, free_port, running_sshd

pytestmark = [pytest.mark.peer]

PROBE = probe_for("ssh")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with running_sshd(tmp_path_factory.mktemp("ssh-peer")) as server:
        yield server


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    # asyncssh logs at INFO/DEBUG: everything it says is checked for secrets.
    caplog.set_level(logging.DEBUG)


def monitoring(user: str, password: str, elevation: str = "none") -> CredentialDocument:
    return credential_document(
        "unix-monitoring",
        {"user": user, "elevation": elevation},
        {"password": password},
        account_name="Linux monitoring",
        account_id=1,
        secret_version=1,
    )


def maintenance(user: str, elevation: str, **secret: str) -> CredentialDocument:
    return credential_document(
        "unix-maintenance",
        {"user": user, "elevation": elevation},
        secret,
        account_name="Linux maintenance",
        account_id=2,
        secret_version=1,
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def context(
    sshd: Sshd,
    document: CredentialDocument,
    command: str = "echo hello",
    *,
    known_hosts: tuple[str, ...] | None = None,
    timeout_s: float = 15.0,
    **config: Any,
) -> ProbeContext:
    full: Mapping[str, Any] = {"host": sshd.host, "port": str(sshd.port), "command": command,
                               **config}  # fmt: skip
    return ProbeContext(
        workflow="Runas.Linux.Test",
        kind="monitor",
        object=f"System.Computer:{sshd.host}",
        computer="agent.test",
        config=full,
        raw_config=full,
        properties={},
        document=document,
        timeout_s=timeout_s,
        scrubber=Scrubber(document.secret_values()),
        known_hosts=(sshd.known_hosts_line,) if known_hosts is None else known_hosts,
    )


def run(ctx: ProbeContext, caplog: pytest.LogCaptureFixture) -> ProbeResult:
    assert PROBE is not None
    result = PROBE.run(ctx)
    text = json.dumps(result.to_dict())
    logs = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for secret in ctx.document.secret_values():
        assert secret not in text, "a secret in the result"
        assert secret not in logs, "a secret in the logs"
    return result


def test_the_registry_has_the_ssh_probe() -> None:
    assert PROBE is not None
    assert PROBE.type == "ssh"


# -- logon and elevation, every account type ---------------------------------------------------


def test_monitoring_account_with_a_password(sshd: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    user = sshd.user("mon")
    result = run(context(sshd, monitoring(user.name, user.password), "id -un"), caplog)
    assert result.state is ProbeState.HEALTHY
    assert result.message == user.name
    assert result.auth_failure is None
    assert result.host_key is None
    assert result.perf["ssh_logon_s"] > 0


def test_monitoring_account_with_passwordless_sudo(
    sshd: Sshd, caplog: pytest.LogCaptureFixture
) -> None:
    user = sshd.user("mon")
    result = run(context(sshd, monitoring(user.name, user.password, "sudo"), "id -u"), caplog)
    assert (result.state, result.message) == (ProbeState.HEALTHY, "0")


def test_sudo_that_wants_a_password_is_an_elevation_failure(
    sshd: Sshd, caplog: pytest.LogCaptureFixture
) -> None:
    user = sshd.user("pw")
    result = run(context(sshd, monitoring(user.name, user.password, "sudo"), "id -u"), caplog)
    assert result.auth_failure is not None
    assert result.auth_failure.kind is AuthFailureKind.ELEVATION_FAILED
    assert "sudo requires a password: monitoring accounts need NOPASSWD" in result.message


def test_maintenance_password_privileged_runs_as_the_user(
    sshd: Sshd, caplog: pytest.LogCaptureFixture
) -> None:
    user = sshd.user("mon")
    doc = maintenance(user.name, "privileged", password=user.password)
    result = run(context(sshd, doc, "id -un"), caplog)
    assert (result.state, result.message) == (ProbeState.HEALTHY, user.name)


def test_maintenance_password_with_sudo(sshd: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    user = sshd.user("mon")
    doc = maintenance(user.name, "sudo", password=user.password)
    result = run(context(sshd, doc, "id -u; exit 1"), caplog)
    # the command's own exit code 1 (warning) is not mistaken for a refused sudo
    assert (result.state, result.message) == (ProbeState.WARNING, "0")


def test_maintenance_ssh_key(sshd: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    user = sshd.user("key")
    doc = maintenance(user.name, "privileged", ssh_key=b64(sshd.key))
    result = run(context(sshd, doc, "id -un"), caplog)
    assert (result.state, result.message) == (ProbeState.HEALTHY, user.name)


def test_maintenance_encrypted_pem_key_with_its_passphrase(
    sshd: Sshd, caplog: pytest.LogCaptureFixture
) -> None:
    user = sshd.user("key")
    doc = maintenance(user.name, "sudo", ssh_key=b64(sshd.pem_key), passphrase=sshd.key_passphrase)
    result = run(context(sshd, doc, "id -un"), caplog)
    # the key user has no sudoers entry: logged on with the key, then sudo refused
    assert result.auth_failure is not None
    assert result.auth_failure.kind is AuthFailureKind.ELEVATION_FAILED
    doc = maintenance(
        user.name, "privileged", ssh_key=b64(sshd.pem_key), passphrase=sshd.key_passphrase
    )
    result = run(context(sshd, doc, "id -un"), caplog)
    assert (result.state, result.message) == (ProbeState.HEALTHY, user.name)


def test_maintenance_encrypted_openssh_key(sshd: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    """OpenSSH-format encryption uses bcrypt's KDF (bcrypt is a dependency of runas)."""
    user = sshd.user("key")
    doc = maintenance(
        user.name,
        "privileged",
        ssh_key=b64(sshd.openssh_encrypted_key),
        passphrase=sshd.key_passphrase,
    )
    result = run(context(sshd, doc, "id -un"), caplog)
    assert (result.state, result.message) == (ProbeState.HEALTHY, user.name)


def test_su_to_a_throwaway_target(sshd: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    user, target = sshd.user("mon"), sshd.user("tgt")
    doc = maintenance(user.name, "su", password=user.password, su_password=target.password)
    result = run(context(sshd, doc, 'echo "$(id -un) $HOME"; exit 2', su_user=target.name), caplog)
    assert result.state is ProbeState.CRITICAL
    assert result.auth_failure is None
    assert result.message == f"{target.name} /home/{target.name}"


def test_su_with_a_wrong_password_is_an_elevation_failure(
    sshd: Sshd, caplog: pytest.LogCaptureFixture
) -> None:
    user, target = sshd.user("mon"), sshd.user("tgt")
    canary = f"canary-su-{secrets.token_hex(8)}"
    doc = maintenance(user.name, "su", password=user.password, su_password=canary)
    result = run(context(sshd, doc, "id -un", su_user=target.name), caplog)
    assert result.auth_failure is not None
    assert result.auth_failure.kind is AuthFailureKind.ELEVATION_FAILED
    assert "Authentication failure" in result.message
    assert target.name in result.message


# -- refused credentials -------------------------------------------------------------------------


def test_a_wrong_password_is_a_logon_failure(sshd: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    canary = f"canary-{secrets.token_hex(8)}"
    result = run(context(sshd, monitoring(sshd.user("mon").name, canary)), caplog)
    assert result.state is ProbeState.CRITICAL
    assert result.auth_failure is not None
    assert result.auth_failure.kind is AuthFailureKind.LOGON_FAILED
    assert sshd.user("mon").name in result.message


def test_a_key_the_server_does_not_know_is_a_logon_failure(
    sshd: Sshd, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_private_key()
    doc = maintenance(sshd.user("key").name, "privileged", ssh_key=b64(stranger))
    result = run(context(sshd, doc), caplog)
    assert result.auth_failure is not None
    assert result.auth_failure.kind is AuthFailureKind.LOGON_FAILED
    assert "SSH key" in result.message


def test_a_wrong_passphrase_is_a_logon_failure(
    sshd: Sshd, caplog: pytest.LogCaptureFixture
) -> None:
    doc = maintenance(
        sshd.user("key").name,
        "privileged",
        ssh_key=b64(sshd.pem_key),
        passphrase=f"canary-{secrets.token_hex(8)}",
    )
    result = run(context(sshd, doc), caplog)
    assert result.auth_failure is not None
    assert result.auth_failure.kind is AuthFailureKind.LOGON_FAILED
    assert "passphrase" in result.message


# -- host keys -----------------------------------------------------------------------------------


def test_an_unknown_host_key_stops_before_any_credential_is_sent(
    sshd: Sshd, caplog: pytest.LogCaptureFixture
) -> None:
    user = sshd.user("mon")
    seen = len(sshd.log.read_bytes())
    result = run(context(sshd, monitoring(user.name, user.password), known_hosts=()), caplog)
    assert result.state is ProbeState.UNKNOWN
    assert result.auth_failure is None
    assert result.host_key == {"host": sshd.host, "port": sshd.port, "key": sshd.host_key}
    where = f"{sshd.host}:{sshd.port}"
    assert f"runas ssh-host approve {where} --fingerprint {sshd.fingerprint}" in result.message
    # sshd never saw a user-auth request for that user: the password was not sent
    time.sleep(0.2)  # sshd -e writes its log lines as it goes; give the last one a moment
    assert f"password for {user.name}" not in sshd.log.read_bytes()[seen:].decode()


def test_a_changed_host_key_is_critical(sshd: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
    line = f"[{sshd.host}]:{sshd.port} {other[0]} {other[1]}"
    user = sshd.user("mon")
    result = run(context(sshd, monitoring(user.name, user.password), known_hosts=(line,)), caplog)
    assert result.state is ProbeState.CRITICAL
    assert result.auth_failure is None
    assert result.message.startswith("host key changed")
    assert "man-in-the-middle" in result.message
    assert result.host_key is not None
    assert result.host_key["key"] == sshd.host_key


def test_a_trusted_key_of_another_type_makes_an_ordinary_offer(
    sshd: Sshd, caplog: pytest.LogCaptureFixture
) -> None:
    other = asyncssh.generate_private_key("ecdsa-sha2-nistp256").export_public_key()
    kind, data = other.decode().split()[:2]
    line = f"[{sshd.host}]:{sshd.port} {kind} {data}"
    user = sshd.user("mon")
    result = run(context(sshd, monitoring(user.name, user.password), known_hosts=(line,)), caplog)
    assert result.state is ProbeState.UNKNOWN
    assert result.message.startswith("unknown SSH host key")
    assert result.host_key is not None
    assert result.host_key["key"] == sshd.host_key


def test_a_host_name_is_matched_by_name(sshd: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    user = sshd.user("mon")
    line = f"[localhost]:{sshd.port} {sshd.host_key}"
    ctx = context(sshd, monitoring(user.name, user.password), known_hosts=(line,), host="localhost")
    assert run(ctx, caplog).state is ProbeState.HEALTHY


def test_bad_known_hosts_lines_do_not_hide_good_ones(
    sshd: Sshd, caplog: pytest.LogCaptureFixture
) -> None:
    user = sshd.user("mon")
    lines = ("not a known_hosts line", sshd.known_hosts_line)
    result = run(context(sshd, monitoring(user.name, user.password), known_hosts=lines), caplog)
    assert result.state is ProbeState.HEALTHY


# -- what the command says -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "state", "message"),
    [
        ("echo fine; exit 0", ProbeState.HEALTHY, "fine"),
        ("echo low disk; exit 1", ProbeState.WARNING, "low disk"),
        ("echo >&2 full disk; exit 2", ProbeState.CRITICAL, "full disk"),
        ("echo odd; exit 7", ProbeState.UNKNOWN, "exit code 7: odd"),
    ],
)
def test_exit_codes_follow_the_nagios_convention(
    sshd: Sshd, caplog: pytest.LogCaptureFixture, command: str, state: ProbeState, message: str
) -> None:
    user = sshd.user("mon")
    result = run(context(sshd, monitoring(user.name, user.password), command), caplog)
    assert (result.state, result.message, result.exit_code) == (
        state,
        message,
        int(command[-1]),
    )


def test_a_property_bag_sets_state_perf_and_events(
    sshd: Sshd, caplog: pytest.LogCaptureFixture
) -> None:
    bag = {
        "state": "warning",
        "message": "disk 91% full",
        "perf": {"disk_used_pct": 91},
        "events": [{"severity": "warning", "message": "grow /var"}],
        "auth_failure": {"kind": "logon-failed", "message": "a remote command cannot say this"},
    }
    user = sshd.user("mon")
    command = f"printf '%s' '{json.dumps(bag)}'"
    result = run(context(sshd, monitoring(user.name, user.password), command), caplog)
    assert (result.state, result.message) == (ProbeState.WARNING, "disk 91% full")
    assert result.perf["disk_used_pct"] == 91.0
    assert [e.message for e in result.events] == ["grow /var"]
    assert result.auth_failure is None


# -- the peer is not there, or too slow ----------------------------------------------------------


def test_an_unreachable_peer_is_unknown(sshd: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    user = sshd.user("mon")
    ctx = context(sshd, monitoring(user.name, user.password), port=str(free_port()))
    result = run(ctx, caplog)
    assert result.state is ProbeState.UNKNOWN
    assert result.auth_failure is None
    assert "cannot reach" in result.message


def test_a_command_that_hangs_times_out(sshd: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    user = sshd.user("mon")
    # (sshd lets a command that ignores its closed session run on: keep it short)
    ctx = context(sshd, monitoring(user.name, user.password), "sleep 6", timeout_s=1.5)
    result = run(ctx, caplog)
    assert result.state is ProbeState.UNKNOWN
    assert result.timed_out
    assert result.duration_s < 5


def test_config_errors_are_invalid_input(sshd: Sshd) -> None:
    user = sshd.user("mon")
    assert PROBE is not None
    with pytest.raises(InvalidInput, match="needs a command"):
        PROBE.run(context(sshd, monitoring(user.name, user.password), ""))
    with pytest.raises(InvalidInput, match="port"):
        PROBE.run(context(sshd, monitoring(user.name, user.password), port="ssh"))
    with pytest.raises(InvalidInput, match="does not fit a unix-monitoring account"):
        PROBE.run(context(sshd, monitoring(user.name, user.password, "su")))


def test_no_secret_file_is_written(sshd: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    """The key is imported from memory: no file under the usual temporary places holds it."""
    user = sshd.user("key")
    doc = maintenance(user.name, "privileged", ssh_key=b64(sshd.key))
    run(context(sshd, doc), caplog)
    needle = sshd.key.split(b"\n")[1]
    for directory in (Path("/tmp"), Path("/dev/shm")):
        for path in directory.glob("*"):
            if path.is_file() and path.stat().st_size < 1_000_000:
                try:
                    assert needle not in path.read_bytes(), path
                except PermissionError:
                    continue


# -- the sample pack's workflows ---------------------------------------------------------------


def _pack_workflows() -> dict[str, Mapping[str, Any]]:
    pack = yaml.safe_load((EXAMPLES / "packs" / "runas-linux.yaml").read_text())
    return {w["id"]: w["probe"]["config"] for w in pack["workflows"]}


def _pack_context(sshd: Sshd, workflow: str, document: CredentialDocument) -> ProbeContext:
    raw = _pack_workflows()[workflow]
    properties = {"hostname": "peer", "ssh_host": sshd.host, "ssh_port": sshd.port}
    ctx = context(sshd, document)
    return replace(
        ctx,
        workflow=workflow,
        config=render_config(raw, parameters_of(properties)),
        raw_config=raw,
        properties=properties,
    )


def test_the_sample_pack_monitors_run(sshd: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    user = sshd.user("mon")
    doc = monitoring(user.name, user.password)
    disk = run(_pack_context(sshd, "Runas.Linux.RootFilesystem", doc), caplog)
    assert disk.state in (ProbeState.HEALTHY, ProbeState.WARNING, ProbeState.CRITICAL)
    assert disk.message.startswith("/ is ")
    assert 0 <= disk.perf["root_used_pct"] <= 100
    load = run(_pack_context(sshd, "Runas.Linux.LoadAverage", doc), caplog)
    assert load.state is ProbeState.HEALTHY
    assert {"load1", "load5", "load15"} <= set(load.perf)


def test_the_sample_pack_privileged_check(sshd: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    user = sshd.user("mon")
    plain = run(
        _pack_context(sshd, "Runas.Linux.PrivilegedAccess", monitoring(user.name, user.password)),
        caplog,
    )
    assert plain.state is ProbeState.CRITICAL
    assert "not elevated" in plain.message
    elevated = run(
        _pack_context(
            sshd, "Runas.Linux.PrivilegedAccess", monitoring(user.name, user.password, "sudo")
        ),
        caplog,
    )
    assert elevated.state is ProbeState.HEALTHY
    assert elevated.message == "running as root: /etc/shadow is readable"
