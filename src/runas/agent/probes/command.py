"""The ``command`` probe: run one program with a credential hand-off and type what it says.

What the program gets:

* ``argv`` from the workflow definition, with ``{name}`` placeholders filled from
  :attr:`CommandSpec.parameters` (``{{`` and ``}}`` for literal braces). Parameters are
  non-secret by construction, and as a second line of defence an argument or environment value
  that contains a secret of the credential — in clear or encoded — is refused before anything
  starts: command lines are world-readable in ``/proc``.
* A minimal environment built from nothing (never the agent's own): ``PATH`` (a fixed system
  path), ``LANG=C.UTF-8``, ``HOME``/``USER``/``LOGNAME`` of the user it runs as, and the
  non-secret context ``RUNAS_WORKFLOW``, ``RUNAS_OBJECT``, ``RUNAS_COMPUTER``, ``RUNAS_ACCOUNT``,
  ``RUNAS_CREDENTIAL_TYPE``, ``RUNAS_HANDOFF`` (``stdin`` or ``file``) and, in file mode,
  ``RUNAS_CREDENTIAL_FILE`` (a path). The working directory is that user's home (``/`` if it
  has none) and the umask 077.
* The credential document (:mod:`runas.agent.handoff`) on stdin, or in a 0600 file that exists
  only for the run. With ``run_as=(uid, gid)`` the program runs as that user with no
  supplementary groups — the default action account when the agent runs as root — and the file
  belongs to that user. Switching users needs root.

How it runs: in a new session (so in its own process group). At the timeout the whole group
gets SIGTERM, then SIGKILL after ``kill_grace_s``, so a grandchild cannot outlive it; and when
the program exits, whatever it left in its group is killed too — a probe leaves nothing behind.
The group is signalled while the program's own process is still unreaped, so its number cannot
have been reused by then. stdout and stderr are kept up to ``output_limit`` bytes each (64 KiB);
the rest is read and dropped (so the program never blocks on a full pipe) and ``truncated`` is
set.

What it means — the program reports either way:

* a *property bag*: stdout is one JSON object (nothing else but whitespace), for example
  ``{"state": "warning", "message": "3 jobs late", "perf": {"late_jobs": 3},
  "events": [{"severity": "warning", "message": "…"}],
  "auth_failure": {"kind": "logon-failed", "message": "login failed for user 'svc'"}}``.
  Every key is optional; ``state`` is healthy/warning/critical/unknown and, when absent, comes
  from the exit code; event severities are information/warning/error. Any other key, or a
  value of the wrong type, makes the bag invalid: state ``unknown``, with a message saying what
  is wrong — a typo such as ``"stat"`` must not read as healthy. Never an exception.
* no bag: the exit code, as Nagios plugins do — 0 healthy, 1 warning, 2 critical, anything else
  (3 included) unknown; the message is the first non-empty line of stdout (else stderr).

Exit code 77 (``EX_NOPERM`` in sysexits.h) is *not* read as a failed logon: a wrapper script
often passes on the exit code of a tool that uses 77 for an unrelated permission problem, and a
false "logon failed" sends an administrator to rotate a password that works. A logon or
elevation failure is only ever what a bag says in ``auth_failure``; that is what Run As health
(:mod:`runas.domain.health`) acts on.

A timeout gives state ``unknown``, ``timed_out=True`` and no exit code. Every text of the
result (message, events, performance data names, stdout, stderr) is scrubbed of the
credential's secrets, and of every secret of ``scrubber`` when one is given, before it is
returned; ``scrubbed`` counts the hits. The call is synchronous: the agent runs it in a thread.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pwd
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from runas.agent.handoff import (
    CREDENTIAL_FILE_ENV,
    HANDOFF_ENV,
    CredentialDocument,
    CredentialFile,
    HandOff,
)
from runas.agent.probes.base import ProbeContext, parameters_of
from runas.agent.probes.result import (
    EXIT_CODE_STATES,
    AuthFailure,
    EventSeverity,
    ProbeEvent,
    ProbeResult,
    ProbeState,
)
from runas.agent.scrub import Scrubber
from runas.domain.health import AuthFailureKind
from runas.errors import InvalidInput

OUTPUT_LIMIT = 64 * 1024
DEFAULT_TIMEOUT_S = 60.0
KILL_GRACE_S = 2.0
#: a message longer than this is cut (alerts and events are read by people)
MESSAGE_LIMIT = 1024
#: a fixed system path: the agent's own PATH may name directories the program's user can write
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_TICK_S = 0.05
_READ_SIZE = 64 * 1024


@dataclass(frozen=True)
class CommandSpec:
    """What to run, from the workflow definition; nothing in it is secret."""

    argv: tuple[str, ...]
    #: values for the ``{name}`` placeholders of ``argv``
    parameters: Mapping[str, str] = field(default_factory=dict)
    workflow: str = ""
    #: full name of the object the workflow runs for
    object: str = ""
    computer: str = ""


# -- the command line and the environment ----------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_.-]*)\}|[{}]")


def expand_argv(argv: tuple[str, ...], parameters: Mapping[str, str]) -> tuple[str, ...]:
    """``argv`` with its ``{name}`` placeholders filled from ``parameters``."""
    if not argv:
        raise InvalidInput("the command has no program to run")
    out: list[str] = []
    for index, arg in enumerate(argv):

        def fill(match: re.Match[str], index: int = index) -> str:
            token = match.group(0)
            if token in ("{{", "}}"):
                return token[0]
            name = match.group(1)
            if name is None:
                raise InvalidInput(
                    f"argument {index} of the command has an unmatched brace "
                    "(write {{ or }} for a literal one)"
                )
            if name not in parameters:
                raise InvalidInput(
                    f"argument {index} of the command uses unknown parameter {{{name}}}"
                )
            return parameters[name]

        out.append(_PLACEHOLDER.sub(fill, arg))
    return tuple(out)


def _check_no_secret(what: str, value: str, guards: tuple[Scrubber, ...]) -> None:
    if "\0" in value:
        raise InvalidInput(f"{what} contains a NUL character")
    for guard in guards:
        if guard.scrub(value)[1]:
            raise InvalidInput(
                f"{what} would carry a secret; secrets reach a program only by the hand-off"
            )


def _user_of(uid: int) -> tuple[str, str]:
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return str(uid), "/"
    return entry.pw_name, entry.pw_dir or "/"


def _environment(
    spec: CommandSpec, document: CredentialDocument, handoff: HandOff, user: str, home: str
) -> dict[str, str]:
    env = {
        "PATH": SAFE_PATH,
        "LANG": "C.UTF-8",
        "HOME": home,
        "USER": user,
        "LOGNAME": user,
        HANDOFF_ENV: handoff.value,
        "RUNAS_CREDENTIAL_TYPE": document.type,
    }
    context = {
        "RUNAS_WORKFLOW": spec.workflow,
        "RUNAS_OBJECT": spec.object,
        "RUNAS_COMPUTER": spec.computer,
        "RUNAS_ACCOUNT": document.account_name or "",
    }
    env.update({k: v for k, v in context.items() if v})
    return env


# -- running ---------------------------------------------------------------------------------


class _Pump:
    """Moves bytes between the agent and the program without ever blocking on either: the
    document into stdin, stdout and stderr into bounded buffers (the excess is drained)."""

    def __init__(self, proc: subprocess.Popen[bytes], stdin_data: bytes | None, cap: int) -> None:
        self.proc = proc
        self.cap = cap
        self.selector = selectors.DefaultSelector()
        #: stdout's buffer, then stderr's, by file descriptor
        self.buffers: dict[int, bytearray] = {}
        #: bytes read past the cap, by file descriptor
        self.dropped: dict[int, int] = {}
        self._pending = memoryview(stdin_data or b"")
        for stream in (proc.stdout, proc.stderr):
            assert stream is not None
            self.buffers[stream.fileno()] = bytearray()
            self.dropped[stream.fileno()] = 0
            self.selector.register(stream, selectors.EVENT_READ)
        if proc.stdin is not None:
            if self._pending:
                os.set_blocking(proc.stdin.fileno(), False)
                self.selector.register(proc.stdin, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()

    @property
    def outputs_open(self) -> bool:
        return any(key.events & selectors.EVENT_READ for key in self.selector.get_map().values())

    def _close_stdin(self, stdin: IO[bytes]) -> None:
        self.selector.unregister(stdin)
        self._pending = memoryview(b"")
        with contextlib.suppress(BrokenPipeError):
            stdin.close()

    def step(self, timeout: float) -> None:
        for key, _ in self.selector.select(max(timeout, 0.0)):
            stream = key.fileobj
            if stream is self.proc.stdin:
                assert self.proc.stdin is not None
                try:
                    written = os.write(key.fd, self._pending[:_READ_SIZE])
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    # The program did not read its document: its choice, not an error here.
                    self._close_stdin(self.proc.stdin)
                    continue
                self._pending = self._pending[written:]
                if not self._pending:
                    self._close_stdin(self.proc.stdin)
                continue
            chunk = os.read(key.fd, _READ_SIZE)
            if not chunk:
                self.selector.unregister(stream)
                continue
            buffer = self.buffers[key.fd]
            room = max(self.cap - len(buffer), 0)
            buffer += chunk[:room]
            self.dropped[key.fd] += len(chunk) - min(room, len(chunk))

    def run_until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Pump until ``done()`` or the deadline; True if ``done()`` was reached."""
        while True:
            if done():
                return True
            now = time.monotonic()
            if now >= deadline:
                return False
            self.step(min(deadline - now, _TICK_S))

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self._close_stdin(self.proc.stdin)
        self.selector.close()


def _exited(pid: int) -> bool:
    # WNOWAIT: look without reaping, so the process stays a zombie and its pid (the process
    # group's id) cannot be reused while the group is signalled.
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


@dataclass
class _Raw:
    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool
    stdout_truncated: bool
    stderr_truncated: bool

    @property
    def truncated(self) -> bool:
        return self.stdout_truncated or self.stderr_truncated


def _run(
    argv: tuple[str, ...],
    env: dict[str, str],
    cwd: str,
    stdin_data: bytes | None,
    run_as: tuple[int, int] | None,
    timeout_s: float,
    kill_grace_s: float,
    cap: int,
    limit: int,
) -> _Raw:
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
        close_fds=True,
        umask=0o077,
        user=run_as[0] if run_as else None,
        group=run_as[1] if run_as else None,
        extra_groups=[] if run_as else None,
    )
    pgid = proc.pid  # start_new_session: the program leads its own session and group
    timed_out = False
    pump: _Pump | None = None
    try:
        pump = _Pump(proc, stdin_data, cap)
        deadline = start + timeout_s
        exited = pump.run_until(lambda: _exited(proc.pid), deadline)
        if exited:
            # Give output still in flight a moment; a process left behind holding the pipes
            # open must not hold the result until the timeout.
            pump.run_until(
                lambda: not pump.outputs_open,
                min(deadline, time.monotonic() + kill_grace_s),
            )
        else:
            timed_out = True
            _signal_group(pgid, signal.SIGTERM)
            pump.run_until(lambda: _exited(proc.pid), time.monotonic() + kill_grace_s)
        # Whatever is left in the group — the program on a timeout, or what it left behind
        # either way — is killed, while the unreaped leader still holds the group id.
        _signal_group(pgid, signal.SIGKILL)
        pump.run_until(lambda: not pump.outputs_open, time.monotonic() + kill_grace_s)
    finally:
        if pump is not None:
            pump.close()
        # Again, for an exception above: nothing started here may outlive the call.
        _signal_group(pgid, signal.SIGKILL)
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    (stdout, stdout_cut), (stderr, stderr_cut) = (
        (bytes(buffer), len(buffer) > limit or pump.dropped[fd] > 0)
        for fd, buffer in pump.buffers.items()
    )
    return _Raw(proc.returncode, stdout, stderr, timed_out, stdout_cut, stderr_cut)


# -- what it means ---------------------------------------------------------------------------


class _BagError(Exception):
    """An invalid property bag (internal: it becomes an ``unknown`` result, never escapes)."""


_BAG_KEYS = frozenset({"state", "message", "perf", "events", "auth_failure", "discovery"})
_OBJECT_KEYS = frozenset({"class", "key", "properties", "host"})


@dataclass(frozen=True)
class _Bag:
    state: ProbeState | None
    message: str | None
    perf: dict[str, float]
    events: tuple[ProbeEvent, ...]
    auth_failure: AuthFailure | None
    discovery: tuple[dict[str, Any], ...] | None = None


def _choice(value: Any, kind: type[StrEnum], what: str) -> Any:
    # Values are not echoed: the message names the key and what it accepts.
    known = ", ".join(member.value for member in kind)
    if not isinstance(value, str):
        raise _BagError(f"{what} must be a string, one of: {known}")
    try:
        return kind(value)
    except ValueError:
        raise _BagError(f"{what} must be one of: {known}") from None


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _BagError(f"{what} must be a string")
    return value


def _perf(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise _BagError("'perf' must be an object of name → number")
    perf: dict[str, float] = {}
    for name, number in value.items():
        if not name:
            raise _BagError("'perf' has an empty name")
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise _BagError(f"'perf' value {name!r} must be a number")
        if not math.isfinite(number):
            raise _BagError(f"'perf' value {name!r} must be a finite number")
        perf[name] = float(number)
    return perf


def _events(value: Any) -> tuple[ProbeEvent, ...]:
    if not isinstance(value, list):
        raise _BagError("'events' must be a list")
    events: list[ProbeEvent] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - {"severity", "message"}:
            raise _BagError(f"event {index} must be an object with 'severity' and 'message'")
        severity = _choice(item.get("severity"), EventSeverity, f"event {index} 'severity'")
        events.append(
            ProbeEvent(severity, _cut(_text(item.get("message"), f"event {index} 'message'")))
        )
    return tuple(events)


def _auth_failure(value: Any) -> AuthFailure | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"kind", "message"}:
        raise _BagError("'auth_failure' must be null or an object with 'kind' and 'message'")
    kind = _choice(value.get("kind"), AuthFailureKind, "'auth_failure' 'kind'")
    return AuthFailure(kind, _cut(_text(value.get("message", ""), "'auth_failure' 'message'")))


def _scalars(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _BagError(f"{what} must be an object")
    for name, item in value.items():
        if item is not None and not isinstance(item, str | int | float | bool):
            raise _BagError(f"{what} {name!r} must be a string, number, boolean or null")
    return dict(value)


def _discovery(value: Any) -> tuple[dict[str, Any], ...] | None:
    """Objects a discovery found, in the shape of ``runas discovery submit`` (the server checks
    classes, keys and hosts; here only the shape)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise _BagError("'discovery' must be a list of objects")
    found: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        what = f"discovery object {index}"
        if not isinstance(item, dict) or set(item) - _OBJECT_KEYS:
            raise _BagError(f"{what} must be an object with {', '.join(sorted(_OBJECT_KEYS))}")
        obj: dict[str, Any] = {"class": _text(item.get("class"), f"{what} 'class'")}
        obj["key"] = _scalars(item.get("key", {}), f"{what} 'key'")
        obj["properties"] = _scalars(item.get("properties", {}), f"{what} 'properties'")
        if item.get("host") is not None:
            obj["host"] = _text(item["host"], f"{what} 'host'")
        found.append(obj)
    return tuple(found)


def _parse_bag(text: str) -> _Bag:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise _BagError(
            f"not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        ) from None
    except RecursionError:
        raise _BagError("nested too deeply") from None
    if not isinstance(value, dict):
        raise _BagError("stdout must be one JSON object")
    unknown = sorted(set(value) - _BAG_KEYS)
    if unknown:
        raise _BagError(
            f"unknown key {', '.join(map(repr, unknown))} (known: {', '.join(sorted(_BAG_KEYS))})"
        )
    state = value.get("state")
    message = value.get("message")
    return _Bag(
        state=None if state is None else _choice(state, ProbeState, "'state'"),
        message=None if message is None else _cut(_text(message, "'message'")),
        perf=_perf(value.get("perf", {})),
        events=_events(value.get("events", [])),
        auth_failure=_auth_failure(value.get("auth_failure")),
        discovery=_discovery(value.get("discovery")),
    )


def _cut(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _first_line(*texts: str) -> str:
    for text in texts:
        for line in text.splitlines():
            if line.strip():
                return _cut(line.strip())
    return ""


def _interpret(raw: _Raw, stdout: str, stderr: str, timeout_s: float) -> ProbeResult:
    def unknown(message: str, exit_code: int | None) -> ProbeResult:
        return ProbeResult(
            ProbeState.UNKNOWN,
            message,
            exit_code,
            timed_out=raw.timed_out,
            truncated=raw.truncated,
            stdout=stdout,
            stderr=stderr,
        )

    code = raw.returncode
    if raw.timed_out:
        return unknown(
            f"timed out after {timeout_s:g} s; the program and its process group were killed",
            None,
        )
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return unknown(f"killed by {name}", code)

    by_code = EXIT_CODE_STATES.get(code, ProbeState.UNKNOWN)
    if stdout.lstrip().startswith("{"):
        if raw.stdout_truncated:
            return unknown(
                "the output went over the limit, so the property bag could not be read", code
            )
        try:
            bag = _parse_bag(stdout)
        except _BagError as err:
            return unknown(f"invalid property bag: {err}", code)
        return ProbeResult(
            bag.state or by_code,
            bag.message if bag.message is not None else f"exit code {code}",
            code,
            perf=bag.perf,
            events=bag.events,
            auth_failure=bag.auth_failure,
            discovery=bag.discovery,
            truncated=raw.truncated,
            stdout=stdout,
            stderr=stderr,
        )

    line = _first_line(stdout, stderr)
    if by_code is ProbeState.UNKNOWN and code != 3:
        message = f"exit code {code}" + (f": {line}" if line else "")
    else:
        message = line or f"exit code {code}"
    return ProbeResult(
        by_code, _cut(message), code, truncated=raw.truncated, stdout=stdout, stderr=stderr
    )


def _scrub_text(text: str, guards: tuple[Scrubber, ...]) -> tuple[str, int]:
    total = 0
    for guard in guards:
        text, hits = guard.scrub(text)
        total += hits
    return text, total


def _cut_bytes(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def _scrubbed(result: ProbeResult, guards: tuple[Scrubber, ...], limit: int) -> ProbeResult:
    """Every text of ``result`` scrubbed, then stdout and stderr cut to ``limit`` bytes (in
    that order, so a secret that straddles the cut is still found whole)."""
    hits = 0

    def clean(text: str) -> str:
        nonlocal hits
        text, found = _scrub_text(text, guards)
        hits += found
        return text

    perf: dict[str, float] = {}
    for name, value in result.perf.items():
        if _scrub_text(repr(value), guards)[1]:
            hits += 1  # a number that spells a secret is dropped, not reported
            continue
        perf[clean(name)] = value
    auth = result.auth_failure
    return replace(
        result,
        message=clean(result.message),
        perf=perf,
        events=tuple(ProbeEvent(e.severity, clean(e.message)) for e in result.events),
        auth_failure=AuthFailure(auth.kind, clean(auth.message)) if auth else None,
        stdout=_cut_bytes(clean(result.stdout), limit),
        stderr=_cut_bytes(clean(result.stderr), limit),
        scrubbed=hits,
    )


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return type(err).__name__


def run_command(
    spec: CommandSpec,
    document: CredentialDocument,
    *,
    handoff: HandOff = HandOff.STDIN,
    run_as: tuple[int, int] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    scrubber: Scrubber | None = None,
    output_limit: int = OUTPUT_LIMIT,
    kill_grace_s: float = KILL_GRACE_S,
    file_directory: str | os.PathLike[str] | None = None,
) -> ProbeResult:
    """Run ``spec`` with ``document`` handed off by ``handoff`` and return what it reported.

    ``scrubber`` holds every secret the agent holds (the document's own are always scrubbed).
    Raises :class:`~runas.errors.InvalidInput` before starting anything when the spec is
    wrong (unknown placeholder, a secret in an argument); a program that cannot start, fails,
    hangs or talks nonsense gives an ``unknown`` result, never an exception. The one exception
    after the start is a :class:`~runas.errors.RunAsError` when the credential file could not
    be removed: that must not pass unnoticed.
    """
    if timeout_s <= 0 or output_limit <= 0 or kill_grace_s < 0:
        raise InvalidInput("timeout and output limit must be positive, the kill grace not negative")
    guards = (Scrubber(document.secret_values()),) + ((scrubber,) if scrubber else ())
    argv = expand_argv(spec.argv, spec.parameters)
    for index, arg in enumerate(argv):
        _check_no_secret(f"argument {index} of the command", arg, guards)
    user, home = _user_of(run_as[0] if run_as else os.geteuid())
    env = _environment(spec, document, handoff, user, home)
    for name, value in env.items():
        _check_no_secret(f"environment variable {name}", value, guards)
    cwd = home if Path(home).is_dir() else "/"
    cap = output_limit + max(guard.max_pattern_length for guard in guards)

    stdin_data = document.to_json() if handoff is HandOff.STDIN else None

    start = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            if handoff is HandOff.FILE:
                credential = CredentialFile(document, owner=run_as, directory=file_directory)
                env[CREDENTIAL_FILE_ENV] = str(stack.enter_context(credential))
            raw = _run(
                argv, env, cwd, stdin_data, run_as, timeout_s, kill_grace_s, cap, output_limit
            )
    except (OSError, subprocess.SubprocessError) as err:
        reason = _reason(err)
        if run_as is not None and os.geteuid() != 0:
            reason += " (running as another user needs root)"
        failed = ProbeResult(ProbeState.UNKNOWN, f"cannot run {argv[0]}: {reason}", None)
        return replace(_scrubbed(failed, guards, output_limit), duration_s=time.monotonic() - start)
    stdout = raw.stdout.decode("utf-8", "replace")
    stderr = raw.stderr.decode("utf-8", "replace")
    result = _scrubbed(_interpret(raw, stdout, stderr, timeout_s), guards, output_limit)
    return replace(result, duration_s=time.monotonic() - start)


class CommandProbe:
    """The ``command`` probe in the registry's shape (:mod:`runas.agent.probes.base`)."""

    type = "command"

    def run(self, context: ProbeContext) -> ProbeResult:
        config = context.raw_config
        program = config.get("program")
        args = config.get("args", ())
        if not isinstance(program, str) or not program:
            raise InvalidInput("the command probe needs a program")
        if not isinstance(args, list | tuple) or not all(isinstance(a, str) for a in args):
            raise InvalidInput("the command probe's args must be a list of strings")
        spec = CommandSpec(
            argv=(program, *args),
            parameters=parameters_of(context.properties),
            workflow=context.workflow,
            object=context.object,
            computer=context.computer,
        )
        run_as = context.action_user if not context.document.has_credential else None
        return run_command(
            spec,
            context.document,
            handoff=context.handoff,
            run_as=run_as,
            timeout_s=context.timeout_s,
            scrubber=context.scrubber,
            kill_grace_s=context.kill_grace_s,
        )


PROBE = CommandProbe()

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "EXIT_CODE_STATES",
    "KILL_GRACE_S",
    "MESSAGE_LIMIT",
    "OUTPUT_LIMIT",
    "PROBE",
    "SAFE_PATH",
    "AuthFailure",
    "CommandProbe",
    "CommandSpec",
    "EventSeverity",
    "ProbeEvent",
    "ProbeResult",
    "ProbeState",
    "expand_argv",
    "run_command",
]
