"""The ``ssh`` probe: run a shell command on a UNIX/Linux host over SSH, with the Run As
account's identity and elevation (domain.md §3; docs/probes/ssh.md).

How the credential is handed over — only ever inside the SSH protocol or to sudo/su's own
prompt, never on a command line, in an environment variable, a log line or a message:

* **password** (unix-monitoring, unix-maintenance): the SSH ``password`` user-auth request,
  inside the encrypted transport, after the server's host key was verified.
* **SSH key** (unix-maintenance): the key is imported from the document's base64 text in
  memory (``asyncssh.import_private_key``, decrypted with the passphrase when there is one)
  and used for ``publickey`` user-auth; it is never written to a file.
* **elevation** ``sudo``: ``sudo -n`` (never prompts: a sudo that wants a password is an
  elevation failure, as SCOM requires passwordless sudo); ``su``: ``su - <target> -c ...`` on a
  pseudo-terminal, the su password written to su's own password prompt (su turns echo off);
  ``privileged`` and ``none``: the command runs as the account's user.

No trust on first use: the server's host key must be one of ``context.known_hosts`` (the lines
the management group trusts). An unknown key stops the run before any credential is sent
(state unknown, the key in ``ProbeResult.host_key`` for the server to record as pending); a key
that differs from the trusted one is critical ("host key changed").

The command's result follows the ``command`` probe: the Nagios exit-code convention or a JSON
property bag on stdout (its parser is reused). A bag cannot report an ``auth_failure``: the
remote command never saw the credential, so it cannot speak for it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import secrets
import shlex
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from runas.agent.probes.base import ProbeContext
from runas.agent.probes.command import OUTPUT_LIMIT, _interpret, _Raw
from runas.agent.probes.result import (
    ProbeResult,
    ProbeState,
    elevation_failed,
    logon_failed,
    unknown,
)
from runas.domain.accounts import UNIX_MAINTENANCE_ELEVATIONS, UNIX_MONITORING_ELEVATIONS
from runas.errors import InvalidInput

if TYPE_CHECKING:  # asyncssh is imported on first use (docs/probes/README.md)
    import asyncssh

#: the account types this probe uses (as in runas.domain.probes.PROBE_ACCOUNT_TYPES) -> the
#: elevations each may ask for (runas.domain.accounts; the first is the default)
ELEVATIONS = {
    "unix-monitoring": UNIX_MONITORING_ELEVATIONS,
    "unix-maintenance": UNIX_MAINTENANCE_ELEVATIONS,
}
DEFAULT_PORT = 22
DEFAULT_SU_USER = "root"
#: how much of the reason a peer gives (a disconnect message) goes into a result message
_REASON_LIMIT = 200
#: su's password prompt ("Password: ", "Passwort: ", "root's password:") at the end of output
_PROMPT = re.compile(r"(?i)(password|passwort|mot de passe|contraseña)[^\n]*:\s*$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*\$?$")


@dataclass(frozen=True)
class _Settings:
    host: str
    port: int
    command: str
    su_user: str


@dataclass(frozen=True)
class _Credential:
    """The account's fields, as read from the document (repr-free: never printed)."""

    user: str
    elevation: str
    password: str | None
    key: bytes | None
    passphrase: str | None
    su_password: str | None

    def __repr__(self) -> str:
        return f"_Credential(user={self.user!r}, elevation={self.elevation!r}, secrets=***)"


class _Refused(Exception):
    """The run ends with this result (internal: never escapes the probe)."""

    def __init__(self, result: ProbeResult) -> None:
        super().__init__(result.message)
        self.result = result


# -- configuration and credential -------------------------------------------------------------


def _settings(config: Mapping[str, Any]) -> _Settings:
    host = config.get("host")
    if not isinstance(host, str) or not host.strip():
        raise InvalidInput("the ssh probe needs a host")
    raw_port = config.get("port", DEFAULT_PORT)
    try:
        # A placeholder filled from a property arrives as text ("2222").
        port = int(raw_port) if isinstance(raw_port, int | str) else -1
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise InvalidInput("the ssh probe's port must be a number from 1 to 65535")
    command = config.get("command")
    if not isinstance(command, str) or not command.strip():
        raise InvalidInput("the ssh probe needs a command")
    su_user = config.get("su_user", DEFAULT_SU_USER)
    if not isinstance(su_user, str) or not _USER.match(su_user):
        raise InvalidInput("the ssh probe's su_user must be a user name")
    return _Settings(host.strip(), port, command, su_user)


def _credential(context: ProbeContext) -> _Credential:
    doc = context.document.to_dict()
    kind = doc.get("type")
    if kind not in ELEVATIONS:
        # Pack import refuses such profiles; a workflow without an account gets "none".
        raise InvalidInput(
            "the ssh probe needs a unix-monitoring or unix-maintenance account "
            f"(got {'no account' if kind == 'none' else kind})"
        )
    fields: Mapping[str, Any] = doc.get("fields", {})
    user = fields.get("user")
    if not isinstance(user, str) or not user:
        raise InvalidInput("the account has no user name")
    elevation = str(fields.get("elevation") or ELEVATIONS[kind][0]).lower()
    key: bytes | None = None
    if fields.get("ssh_key"):
        try:
            key = base64.b64decode(str(fields["ssh_key"]), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("the account's SSH key is not base64") from None
    password = fields.get("password") or None
    if password is None and key is None:
        raise InvalidInput("the account has neither a password nor an SSH key")
    return _Credential(
        user=user,
        elevation=elevation,
        password=password,
        key=key,
        passphrase=fields.get("passphrase") or None,
        su_password=fields.get("su_password") or None,
    )


# -- host keys --------------------------------------------------------------------------------


def _known_hosts(lines: tuple[str, ...]) -> asyncssh.SSHKnownHosts:
    import asyncssh

    good: list[str] = []
    for line in lines:
        # One bad line must not stop the others from being trusted (the server checks lines
        # when they are added; this is the agent's safety net).
        try:
            asyncssh.import_known_hosts(line)
        except (ValueError, asyncssh.KeyImportError):
            continue
        good.append(line)
    return asyncssh.import_known_hosts("\n".join(good) + "\n" if good else "")


def _key_text(key: asyncssh.SSHKey) -> str:
    return f"{key.get_algorithm()} {base64.b64encode(key.public_data).decode('ascii')}"


def _host_port(host: str, port: int) -> str:
    return host if port == DEFAULT_PORT else f"{host}:{port}"


def _host_key_result(settings: _Settings, key: asyncssh.SSHKey, changed: bool) -> ProbeResult:
    where = _host_port(settings.host, settings.port)
    fingerprint = key.get_fingerprint("sha256")
    approve = f"runas ssh-host approve {where} --fingerprint {fingerprint}"
    if changed:
        state = ProbeState.CRITICAL
        message = (
            f"host key changed: {where} offered {key.get_algorithm()} {fingerprint}, which is not "
            "the key the management group trusts (possible man-in-the-middle); nothing was sent. "
            f"If the host was really re-keyed: {approve}"
        )
    else:
        state = ProbeState.UNKNOWN
        message = (
            f"unknown SSH host key for {where}: {key.get_algorithm()} {fingerprint}; nothing was "
            f"sent. Check it on the host and approve it: {approve}"
        )
    return ProbeResult(
        state,
        message,
        None,
        host_key={"host": settings.host, "port": settings.port, "key": _key_text(key)},
    )


def _client_class(
    known: asyncssh.SSHKnownHosts, offered: list[tuple[asyncssh.SSHKey, bool]]
) -> type[asyncssh.SSHClient]:
    """An SSH client that records a host key that is not trusted in ``offered`` (with whether
    it replaces a trusted key) and never accepts it: no trust on first use."""
    import asyncssh

    class _Client(asyncssh.SSHClient):
        def validate_host_public_key(
            self, host: str, addr: str, port: int, key: asyncssh.SSHKey
        ) -> bool:
            # "Changed" when another key of the same type is trusted for this host; a key of
            # another type is an ordinary new offer (docs/probes/ssh-host-keys.md).
            trusted = known.match(host, addr, port)[0]
            kind = key.get_algorithm()
            offered.append((key, any(t.get_algorithm() == kind for t in trusted)))
            return False

    return _Client


def _host_key_algs(known: asyncssh.SSHKnownHosts, settings: _Settings) -> list[str]:
    """The host key algorithms to offer: those of the trusted keys first (so a host with
    several keys shows the trusted one), then every other default one. asyncssh alone would
    offer the trusted types only, and a host re-keyed to another type would fail the key
    exchange with no key to report; this way its new key is offered for approval."""
    from asyncssh.public_key import get_default_public_key_algs

    # (the address is not known before connecting: "" lets asyncssh read an IP from host)
    trusted = known.match(settings.host, "", settings.port)[0]
    algs = [alg for key in trusted for alg in key.sig_algorithms]
    algs += get_default_public_key_algs()
    return list(dict.fromkeys(alg.decode("ascii") for alg in algs))


# -- the run ----------------------------------------------------------------------------------


def _reason(err: BaseException) -> str:
    text = getattr(err, "reason", "") or getattr(err, "strerror", "") or ""
    text = " ".join(str(text).split())
    if not text:
        return type(err).__name__
    return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 1] + "…"


def _client_key(cred: _Credential) -> asyncssh.SSHKey:
    import asyncssh

    assert cred.key is not None
    try:
        return asyncssh.import_private_key(cred.key, cred.passphrase)
    except ValueError as err:  # KeyImportError and KeyEncryptionError are ValueErrors
        # The library's texts name the problem, never the key; still, they are not echoed.
        said = str(err).lower()
        if "bcrypt" in said:
            # Says nothing about the credential: this agent lacks what decrypting needs.
            raise _Refused(
                unknown(
                    f"the SSH key of {cred.user} is an encrypted OpenSSH-format key and this "
                    "agent cannot decrypt it (the Python package bcrypt is missing): install "
                    "bcrypt on the agent, or store the key as encrypted PEM (PKCS#8)"
                )
            ) from None
        if "passphrase" in said or "decrypt" in said or cred.passphrase:
            why = "it is encrypted and the passphrase is wrong or missing"
        else:
            why = "it is not an OpenSSH or PEM private key"
        raise _Refused(logon_failed(f"the SSH key of {cred.user} cannot be used: {why}")) from None


def _wrapped(settings: _Settings, cred: _Credential, marker: str) -> str:
    """The remote command line. With elevation, the command is prefixed by an echo of a
    random marker: seeing it proves sudo/su let us through, whatever the command exits with."""
    inner = shlex.quote(f"echo {marker}; {settings.command}")
    if cred.elevation == "sudo":
        return f"sudo -n -- sh -c {inner}"
    if cred.elevation == "su":
        return f"su - {shlex.quote(settings.su_user)} -c {inner}"
    return settings.command


async def _read_all(stream: asyncssh.SSHReader[bytes], limit: int) -> tuple[bytes, bool]:
    kept = bytearray()
    cut = False
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return bytes(kept), cut
        room = limit - len(kept)
        if len(chunk) > room:
            cut = True
        kept += chunk[: max(room, 0)]


async def _run_plain(
    conn: asyncssh.SSHClientConnection, command: str
) -> tuple[int | None, str | None, bytes, bytes, bool]:
    import asyncssh

    process = await conn.create_process(command, stdin=asyncssh.DEVNULL, encoding=None)
    try:
        (out, out_cut), (err, err_cut) = await asyncio.gather(
            _read_all(process.stdout, OUTPUT_LIMIT), _read_all(process.stderr, OUTPUT_LIMIT)
        )
        await process.wait_closed()
    finally:
        # Not ``async with``: on a timeout its exit would wait for the remote command to end.
        process.close()
    signal = process.exit_signal[0] if process.exit_signal else None
    return process.exit_status, signal, out, err, out_cut or err_cut


async def _run_su(
    conn: asyncssh.SSHClientConnection, command: str, su_password: str
) -> tuple[int | None, str | None, bytes, bool]:
    """su on a pseudo-terminal (it reads the password from the terminal only): the password
    goes to its prompt once; stdout and stderr arrive merged, as on any terminal."""
    process = await conn.create_process(
        command, term_type="dumb", term_size=(200, 24), request_pty="force", encoding=None
    )
    kept = bytearray()
    cut = False
    answered = False
    try:
        while True:
            chunk = await process.stdout.read(65536)
            if not chunk:
                break
            room = OUTPUT_LIMIT - len(kept)
            cut = cut or len(chunk) > room
            kept += chunk[: max(room, 0)]
            if not answered and _PROMPT.search(kept.decode("utf-8", "replace")[-200:]):
                answered = True
                process.stdin.write(su_password.encode("utf-8") + b"\n")
        await process.wait_closed()
    finally:
        process.close()  # see _run_plain
    signal = process.exit_signal[0] if process.exit_signal else None
    return process.exit_status, signal, bytes(kept), cut


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")


def _strip_marker(stdout: str, marker: str) -> tuple[str, bool, str]:
    """(output after the marker line, whether it was there, output before it)."""
    lines = stdout.split("\n")
    for index, line in enumerate(lines):
        if line.strip() == marker:
            return "\n".join(lines[index + 1 :]), True, "\n".join(lines[:index])
    return stdout, False, stdout


def _first_line(*texts: str) -> str:
    for text in texts:
        for line in text.splitlines():
            if line.strip():
                return line.strip()
    return ""


def _elevation_refused(cred: _Credential, settings: _Settings, said: str) -> ProbeResult:
    said = " ".join(said.split())[:_REASON_LIMIT]
    if cred.elevation == "sudo":
        if "password is required" in said:
            return elevation_failed(
                "sudo requires a password: monitoring accounts need NOPASSWD "
                f"(the sudoers entry of {cred.user})"
            )
        return elevation_failed(f"sudo refused {cred.user}" + (f": {said}" if said else ""))
    return elevation_failed(
        f"su to {settings.su_user} refused for {cred.user}" + (f": {said}" if said else "")
    )


async def _probe(context: ProbeContext, settings: _Settings, cred: _Credential) -> ProbeResult:
    # The agent's first import of asyncssh (2.24) touches cryptography's DSA names, which
    # cryptography 51 deprecates with a warning in every agent log: not ours to fix, and the
    # probe never offers or accepts DSA keys. Only that warning is silenced.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DSA is deprecated")
        import asyncssh

    known = _known_hosts(context.known_hosts)
    offered: list[tuple[asyncssh.SSHKey, bool]] = []
    client = _client_class(known, offered)
    key = _client_key(cred) if cred.key is not None else None
    if cred.elevation == "su" and not cred.su_password:
        raise InvalidInput("elevation su needs the account's su password")
    options: dict[str, Any] = {
        "username": cred.user,
        "known_hosts": known,
        "server_host_key_algs": _host_key_algs(known, settings),
        "client_factory": client,
        # Nothing from the agent's own environment: no ~/.ssh/config, default keys, ssh-agent,
        # GSSAPI or X.509 trust; only the account's credential and the group's known hosts.
        "config": [],
        "agent_path": None,
        "agent_forwarding": False,
        "gss_host": None,
        "x509_trusted_certs": None,
        "x509_trusted_cert_paths": [],
        "login_timeout": max(context.timeout_s, 1.0),
        "connect_timeout": max(context.timeout_s, 1.0),
    }
    if key is not None:
        options.update(client_keys=[key], password=None, preferred_auth="publickey")
    else:
        options.update(
            client_keys=None,
            password=cred.password,
            preferred_auth="password,keyboard-interactive",
        )
    where = _host_port(settings.host, settings.port)
    started = time.monotonic()
    try:
        conn = await asyncssh.connect(settings.host, settings.port, **options)
    except asyncssh.HostKeyNotVerifiable as err:
        if offered:
            return _host_key_result(settings, *offered[-1])
        return unknown(f"the SSH host key of {where} could not be verified: {_reason(err)}")
    except asyncssh.PermissionDenied:
        how = "SSH key" if key is not None else "password"
        return logon_failed(f"{where} refused the {how} of {cred.user} (SSH authentication failed)")
    except asyncssh.Error as err:  # a protocol error, or the server hung up
        return unknown(f"SSH connection to {where} failed: {_reason(err)}")
    except OSError as err:
        return unknown(f"cannot reach {where}: {_reason(err)}")
    logon_s = time.monotonic() - started
    marker = f"runas-elevated-{secrets.token_hex(8)}"
    command = _wrapped(settings, cred, marker)
    async with conn:
        try:
            if cred.elevation == "su":
                assert cred.su_password is not None
                status, signal, out, cut = await _run_su(conn, command, cred.su_password)
                err_bytes = b""
            else:
                status, signal, out, err_bytes, cut = await _run_plain(conn, command)
        except asyncssh.ChannelOpenError as err:
            return unknown(f"{where} refused a session for {cred.user}: {_reason(err)}")
        except (asyncssh.Error, OSError) as err:
            return unknown(f"SSH connection to {where} lost: {_reason(err)}")
    stdout, stderr = _text(out), _text(err_bytes)
    if cred.elevation in ("sudo", "su"):
        stdout, elevated, before = _strip_marker(stdout, marker)
        if not elevated:
            if cred.elevation == "sudo":
                said = _first_line(stderr, before)
            else:  # the last thing su printed after its prompt ("su: Authentication failure")
                said = _first_line(*reversed(before.split("\n")))
            return _elevation_refused(cred, settings, said)
    if status is None or status < 0:
        name = signal or "a signal"
        return ProbeResult(
            ProbeState.UNKNOWN,
            f"the command on {where} was killed by {name}",
            None,
            perf={"ssh_logon_s": round(logon_s, 6)},
        )
    raw = _Raw(status, b"", b"", False, cut, False)
    result = _interpret(raw, stdout, stderr, context.timeout_s)
    perf = {**result.perf, "ssh_logon_s": round(logon_s, 6)}
    return replace(result, perf=perf, auth_failure=None, stdout="", stderr="")


class SshProbe:
    """The ``ssh`` probe in the registry's shape (:mod:`runas.agent.probes.base`)."""

    type = "ssh"

    def run(self, context: ProbeContext) -> ProbeResult:
        settings = _settings(context.config)
        cred = _credential(context)
        allowed = ELEVATIONS[context.document.type]
        if cred.elevation not in allowed:
            raise InvalidInput(
                f"elevation {cred.elevation!r} does not fit a {context.document.type} account "
                f"(known: {', '.join(allowed)})"
            )
        started = time.monotonic()

        async def bounded() -> ProbeResult:
            return await asyncio.wait_for(_probe(context, settings, cred), context.timeout_s)

        try:
            result = asyncio.run(bounded())
        except _Refused as refused:
            result = refused.result
        except TimeoutError:
            result = replace(
                unknown(
                    f"timed out after {context.timeout_s:g} s talking to "
                    f"{_host_port(settings.host, settings.port)}"
                ),
                timed_out=True,
            )
        return replace(result, duration_s=time.monotonic() - started)


PROBE = SshProbe()

__all__ = ["ELEVATIONS", "PROBE", "SshProbe"]
