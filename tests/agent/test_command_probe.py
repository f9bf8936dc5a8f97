"""The ``command`` probe on real processes: the programs are small scripts that report what
they received (a hash of the credential, their identity, their environment), and the test looks
at them from outside while they run (``/proc``, the credential file)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runas.agent.handoff import CredentialDocument, HandOff, credential_document
from runas.agent.probes.command import (
    OUTPUT_LIMIT,
    SAFE_PATH,
    AuthFailure,
    CommandSpec,
    EventSeverity,
    ProbeEvent,
    ProbeResult,
    ProbeState,
    expand_argv,
    run_command,
)
from runas.agent.scrub import MARKER, Scrubber
from runas.domain.health import AuthFailureKind
from runas.errors import InvalidInput

CANARY = "canary-Pw-" + secrets.token_hex(8)
CANARY_SHA = hashlib.sha256(CANARY.encode()).hexdigest()
FAST = {"timeout_s": 10.0, "kill_grace_s": 0.5}


def document(password: str = CANARY) -> CredentialDocument:
    return credential_document(
        "simple",
        {"user": "svc"},
        {"password": password},
        account_name="db monitor",
        account_id=4,
        secret_version=2,
    )


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str], Path]:
    """Write a Python program to ``tmp_path`` and return its path."""
    count = 0

    def write(body: str) -> Path:
        nonlocal count
        count += 1
        path = tmp_path / f"program{count}.py"
        path.write_text(textwrap.dedent(body))
        return path

    return write


def python(path: Path, *args: str) -> CommandSpec:
    return CommandSpec((sys.executable, str(path), *args), workflow="W.Check", object="db01/sql")


READ_DOCUMENT = """
import hashlib, json, os, sys
if os.environ["RUNAS_HANDOFF"] == "file":
    with open(os.environ["RUNAS_CREDENTIAL_FILE"], "rb") as f:
        doc = json.load(f)
else:
    doc = json.load(sys.stdin)
password = doc["fields"]["password"]
"""


# -- the hand-off -----------------------------------------------------------------------------


@pytest.mark.parametrize("handoff", list(HandOff))
def test_program_receives_the_credential(script: Callable[[str], Path], handoff: HandOff) -> None:
    program = script(
        READ_DOCUMENT
        + """
print(json.dumps({"message": hashlib.sha256(password.encode()).hexdigest(),
                  "perf": {"fields": len(doc["fields"])}}))
print("type", doc["type"], doc["account"]["name"], file=sys.stderr)
"""
    )
    result = run_command(python(program), document(), handoff=handoff, **FAST)
    assert result.state is ProbeState.HEALTHY
    assert result.message == CANARY_SHA
    assert result.perf == {"fields": 2.0}
    assert result.stderr == "type simple db monitor\n"
    assert result.exit_code == 0


def test_program_without_credential_reads_type_none(script: Callable[[str], Path]) -> None:
    program = script("import sys, json; print(json.load(sys.stdin)['type'])")
    result = run_command(python(program), credential_document(None, {}, {}), **FAST)
    assert (result.state, result.message) == (ProbeState.HEALTHY, "none")


def test_program_that_ignores_its_document_is_fine(script: Callable[[str], Path]) -> None:
    program = script("print('did not read stdin')")
    big = credential_document(
        "binary",
        {},
        {"data": "QUJD" * 100_000},  # 400 KB: more than a pipe holds
        account_name="blob",
        account_id=1,
        secret_version=1,
    )
    result = run_command(python(program), big, **FAST)
    assert (result.state, result.message) == (ProbeState.HEALTHY, "did not read stdin")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Callable[..., tuple[Future[ProbeResult], int]]]:
    """Start ``run_command`` in a thread on a program that writes its pid and waits for a
    ``go`` file; yield (future, pid) while the program runs. The test lets it go with
    ``(tmp_path / "go").touch()``."""
    pool = ThreadPoolExecutor(max_workers=1)
    pid_file, go = tmp_path / "pid", tmp_path / "go"
    program = tmp_path / "waiting.py"
    program.write_text(
        READ_DOCUMENT
        + textwrap.dedent(
            """
            import time
            open(sys.argv[1], "w").write(str(os.getpid()))
            while not os.path.exists(sys.argv[2]):
                time.sleep(0.02)
            print(hashlib.sha256(password.encode()).hexdigest())
            """
        )
    )

    def start(**kwargs: object) -> tuple[Future[ProbeResult], int]:
        spec = python(program, "{pid_file}", "{go}")
        spec = CommandSpec(
            spec.argv,
            {"pid_file": str(pid_file), "go": str(go)},
            workflow="W.Check",
            object="db01/sql",
        )
        future = pool.submit(run_command, spec, document(), **kwargs)  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the program did not start"
            assert not future.done(), future.result()
            time.sleep(0.02)
        return future, int(pid_file.read_text())

    try:
        yield start
    finally:
        go.touch()
        pool.shutdown(wait=True)


@pytest.mark.parametrize("handoff", list(HandOff))
def test_secret_is_not_on_the_command_line_or_in_the_environment(
    running: Callable[..., tuple[Future[ProbeResult], int]],
    tmp_path: Path,
    handoff: HandOff,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENT_ONLY_SETTING", "agent-environment-must-not-leak")
    future, pid = running(handoff=handoff, timeout_s=20.0)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert CANARY.encode() not in cmdline
    assert CANARY.encode() not in environ
    env = dict(item.split(b"=", 1) for item in environ.split(b"\0") if item)
    expected = {
        b"PATH",
        b"LANG",
        b"HOME",
        b"USER",
        b"LOGNAME",
        b"RUNAS_HANDOFF",
        b"RUNAS_CREDENTIAL_TYPE",
        b"RUNAS_WORKFLOW",
        b"RUNAS_OBJECT",
        b"RUNAS_ACCOUNT",
    }
    if handoff is HandOff.FILE:
        expected.add(b"RUNAS_CREDENTIAL_FILE")
    assert set(env) == expected
    assert env[b"PATH"] == SAFE_PATH.encode()
    assert env[b"LANG"] == b"C.UTF-8"
    assert env[b"RUNAS_HANDOFF"] == handoff.value.encode()
    assert env[b"RUNAS_OBJECT"] == b"db01/sql"

    credential_file = None
    if handoff is HandOff.FILE:
        credential_file = Path(env[b"RUNAS_CREDENTIAL_FILE"].decode())
        info = credential_file.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600
        assert stat.S_IMODE(credential_file.parent.stat().st_mode) == 0o700
        assert info.st_uid == os.geteuid()
        assert json.loads(credential_file.read_bytes())["fields"]["password"] == CANARY

    (tmp_path / "go").touch()
    result = future.result(timeout=20)
    assert (result.state, result.message) == (ProbeState.HEALTHY, CANARY_SHA)
    if credential_file is not None:
        assert not credential_file.exists()
        assert not credential_file.parent.exists()


def test_credential_file_is_removed_after_a_timeout(
    running: Callable[..., tuple[Future[ProbeResult], int]],
) -> None:
    future, pid = running(handoff=HandOff.FILE, timeout_s=1.0, kill_grace_s=0.2)
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    env = dict(item.split(b"=", 1) for item in environ.split(b"\0") if item)
    credential_file = Path(env[b"RUNAS_CREDENTIAL_FILE"].decode())
    assert credential_file.exists()
    result = future.result(timeout=20)
    assert result.timed_out
    assert not credential_file.exists()
    assert not credential_file.parent.exists()


# -- timeouts and process groups -------------------------------------------------------------


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for init to reap it counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return status.rsplit(")", 1)[1].split()[0] in ("Z", "X")


SPAWN_GRANDCHILD = """
import os, signal, subprocess, sys, time
if {ignore_term}:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen(
    [sys.executable, "-c",
     "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"],
    stdout=subprocess.DEVNULL if {detach_output} else None,
)
open(sys.argv[1], "w").write(str(grandchild.pid))
print("started", flush=True)
time.sleep({sleep})
"""


@pytest.mark.parametrize("ignore_term", [False, True], ids=["term", "term-ignored"])
def test_timeout_kills_the_whole_process_group(
    script: Callable[[str], Path], tmp_path: Path, ignore_term: bool
) -> None:
    program = script(
        SPAWN_GRANDCHILD.format(ignore_term=ignore_term, detach_output=False, sleep=120)
    )
    pid_file = tmp_path / "grandchild"
    started = time.monotonic()
    result = run_command(
        python(program, str(pid_file)), document(), timeout_s=1.5, kill_grace_s=0.5
    )
    elapsed = time.monotonic() - started
    assert result.timed_out
    assert result.state is ProbeState.UNKNOWN
    assert result.exit_code is None
    assert "timed out after 1.5 s" in result.message
    assert result.stdout == "started\n"  # output before the kill is kept
    assert elapsed < 1.5 + 0.5 + 2.0
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not gone(grandchild):
        assert time.monotonic() < deadline, "the grandchild survived the timeout"
        time.sleep(0.05)


@pytest.mark.parametrize("detach_output", [False, True], ids=["holds-stdout", "detached"])
def test_processes_left_behind_are_killed_and_do_not_hold_the_result(
    script: Callable[[str], Path], tmp_path: Path, detach_output: bool
) -> None:
    program = script(
        SPAWN_GRANDCHILD.format(ignore_term=False, detach_output=detach_output, sleep=0)
    )
    pid_file = tmp_path / "grandchild"
    started = time.monotonic()
    result = run_command(
        python(program, str(pid_file)), document(), timeout_s=30.0, kill_grace_s=0.5
    )
    assert time.monotonic() - started < 5
    assert not result.timed_out
    assert (result.state, result.exit_code, result.message) == (ProbeState.HEALTHY, 0, "started")
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not gone(grandchild):
        assert time.monotonic() < deadline, "a process left behind survived"
        time.sleep(0.05)


def test_killed_by_a_signal_is_unknown(script: Callable[[str], Path]) -> None:
    program = script("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    result = run_command(python(program), document(), **FAST)
    assert result.state is ProbeState.UNKNOWN
    assert result.exit_code == -signal.SIGKILL
    assert result.message == "killed by SIGKILL"
    assert not result.timed_out


# -- what the program says --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "state", "message"),
    [
        (0, ProbeState.HEALTHY, "line one"),
        (1, ProbeState.WARNING, "line one"),
        (2, ProbeState.CRITICAL, "line one"),
        (3, ProbeState.UNKNOWN, "line one"),
        (4, ProbeState.UNKNOWN, "exit code 4: line one"),
        (77, ProbeState.UNKNOWN, "exit code 77: line one"),
        (255, ProbeState.UNKNOWN, "exit code 255: line one"),
    ],
)
def test_exit_code_without_a_bag(
    script: Callable[[str], Path], code: int, state: ProbeState, message: str
) -> None:
    program = script(f"import sys; print('\\n  line one\\nline two'); sys.exit({code})")
    result = run_command(python(program), document(), **FAST)
    assert (result.state, result.message, result.exit_code) == (state, message, code)
    # Exit code 77 is not read as a failed logon (see the module docstring).
    assert result.auth_failure is None
    assert result.perf == {}


def test_message_falls_back_to_stderr_then_to_the_exit_code(script: Callable[[str], Path]) -> None:
    program = script("import sys; print('only on stderr', file=sys.stderr); sys.exit(2)")
    assert run_command(python(program), document(), **FAST).message == "only on stderr"
    silent = script("import sys; sys.exit(1)")
    assert run_command(python(silent), document(), **FAST).message == "exit code 1"


def test_full_property_bag(script: Callable[[str], Path]) -> None:
    bag = {
        "state": "critical",
        "message": "cannot log on to db01",
        "perf": {"latency_ms": 12.5, "connections": 3},
        "events": [
            {"severity": "error", "message": "login failed"},
            {"severity": "information", "message": "retrying"},
        ],
        "auth_failure": {"kind": "logon-failed", "message": "Login failed for user 'svc'"},
    }
    program = script(f"import json; print(json.dumps({bag!r}, indent=2))")
    result = run_command(python(program), document(), **FAST)
    assert result.state is ProbeState.CRITICAL
    assert result.message == "cannot log on to db01"
    assert result.perf == {"latency_ms": 12.5, "connections": 3.0}
    assert result.events == (
        ProbeEvent(EventSeverity.ERROR, "login failed"),
        ProbeEvent(EventSeverity.INFORMATION, "retrying"),
    )
    assert result.auth_failure == AuthFailure(
        AuthFailureKind.LOGON_FAILED, "Login failed for user 'svc'"
    )
    assert result.to_dict()["auth_failure"] == bag["auth_failure"]


def test_a_discovery_bag_lists_objects(script: Callable[[str], Path]) -> None:
    found = [
        {"class": "Contoso.SQL.Database", "host": "Contoso.SQL.Instance:a;X",
         "key": {"database": "sales"}, "properties": {"size_mb": 12}},
        {"class": "System.Computer", "key": {"name": "b"}},
    ]  # fmt: skip
    program = script(f"import json; print(json.dumps({{'discovery': {found!r}}}))")
    result = run_command(python(program), document(), **FAST)
    assert result.state is ProbeState.HEALTHY
    assert result.discovery == (found[0], {**found[1], "properties": {}})
    assert run_command(python(script("print('{}')")), document(), **FAST).discovery is None


def test_bag_without_state_takes_it_from_the_exit_code(script: Callable[[str], Path]) -> None:
    program = script(
        'import sys; print(\'{"message": "sudo refused", "auth_failure": '
        '{"kind": "elevation-failed"}}\'); sys.exit(1)'
    )
    result = run_command(python(program), document(), **FAST)
    assert (result.state, result.message) == (ProbeState.WARNING, "sudo refused")
    assert result.auth_failure == AuthFailure(AuthFailureKind.ELEVATION_FAILED, "")


def test_bag_state_wins_over_the_exit_code(script: Callable[[str], Path]) -> None:
    program = script('import sys; print(\'{"state": "healthy"}\'); sys.exit(2)')
    result = run_command(python(program), document(), **FAST)
    assert (result.state, result.message, result.exit_code) == (
        ProbeState.HEALTHY,
        "exit code 2",
        2,
    )


@pytest.mark.parametrize(
    ("stdout", "reason"),
    [
        ("{not json", "not valid JSON"),
        ('{"state": "healthy"} trailing', "not valid JSON"),
        ("{" * 100_000 + "}" * 100_000, "over the limit"),
        ('{"stat": "critical"}', "unknown key 'stat'"),
        ('{"state": "fine"}', "'state' must be one of: healthy, warning, critical, unknown"),
        ('{"state": 2}', "'state' must be a string"),
        ('{"message": ["a"]}', "'message' must be a string"),
        ('{"perf": [1, 2]}', "'perf' must be an object"),
        ('{"perf": {"x": "1"}}', "'perf' value 'x' must be a number"),
        ('{"perf": {"x": true}}', "'perf' value 'x' must be a number"),
        ('{"perf": {"x": NaN}}', "'perf' value 'x' must be a finite number"),
        ('{"perf": {"": 1}}', "'perf' has an empty name"),
        ('{"events": {}}', "'events' must be a list"),
        ('{"events": [{"severity": "fatal", "message": "m"}]}', "event 0 'severity' must be"),
        ('{"events": [{"severity": "error"}]}', "event 0 'message' must be a string"),
        ('{"events": ["text"]}', "event 0 must be an object"),
        ('{"auth_failure": {"kind": "locked-out"}}', "'auth_failure' 'kind' must be one of"),
        ('{"auth_failure": "logon-failed"}', "'auth_failure' must be null or an object"),
        ('{"discovery": {}}', "'discovery' must be a list of objects"),
        ('{"discovery": [{"class": "C", "name": "x"}]}', "discovery object 0 must be an object"),
        ('{"discovery": [{"key": {"name": "x"}}]}', "discovery object 0 'class' must be a string"),
        ('{"discovery": [{"class": "C", "key": {"n": [1]}}]}', "'key' 'n' must be a string"),
    ],
)
def test_invalid_bag_is_unknown_with_a_reason(
    script: Callable[[str], Path], tmp_path: Path, stdout: str, reason: str
) -> None:
    (tmp_path / "bag.txt").write_text(stdout)
    program = script(f"import sys; sys.stdout.write(open({str(tmp_path / 'bag.txt')!r}).read())")
    result = run_command(python(program), document(), **FAST)
    assert result.state is ProbeState.UNKNOWN
    assert reason in result.message
    assert result.exit_code == 0
    assert result.auth_failure is None


def test_null_auth_failure_is_none(script: Callable[[str], Path]) -> None:
    program = script('print(\'{"state": "warning", "auth_failure": null}\')')
    result = run_command(python(program), document(), **FAST)
    assert (result.state, result.auth_failure) == (ProbeState.WARNING, None)


# -- output limits and scrubbing -------------------------------------------------------------


def test_output_is_cut_at_the_limit_without_blocking_the_program(
    script: Callable[[str], Path],
) -> None:
    program = script(
        """
        import sys
        sys.stdout.write("o" * 4_000_000)
        sys.stderr.write("e" * 4_000_000)
        print("done", file=sys.stderr)
        """
    )
    result = run_command(python(program), document(), **FAST)
    assert result.truncated
    assert result.state is ProbeState.HEALTHY
    assert result.stdout == "o" * OUTPUT_LIMIT
    assert result.stderr == "e" * OUTPUT_LIMIT
    assert not run_command(python(script("print('short')")), document(), **FAST).truncated


def test_secrets_are_scrubbed_from_every_output_and_counted(script: Callable[[str], Path]) -> None:
    agent_secret = "other-account-" + secrets.token_hex(6)
    program = script(
        READ_DOCUMENT
        + f"""
import base64
other = {agent_secret!r}
print(json.dumps({{
    "message": "password is " + password,
    "perf": {{password: 1, "fine": 2}},
    "events": [{{"severity": "warning", "message": "b64 " + base64.b64encode(password.encode())
                                                              .decode()}}],
    "auth_failure": {{"kind": "logon-failed", "message": "other " + other}},
}}))
print("stderr too", password, other, file=sys.stderr)
"""
    )
    result = run_command(
        python(program), document(), scrubber=Scrubber([agent_secret, "unrelated-x"]), **FAST
    )
    assert result.state is ProbeState.HEALTHY
    assert result.message == f"password is {MARKER}"
    assert result.perf == {MARKER: 1.0, "fine": 2.0}
    assert result.events[0].message == f"b64 {MARKER}"
    assert result.auth_failure is not None
    assert result.auth_failure.message == f"other {MARKER}"
    assert result.stderr == f"stderr too {MARKER} {MARKER}\n"
    # message, perf name, event, auth failure and stdout carry them once each, stderr twice
    assert result.scrubbed >= 6
    dumped = json.dumps(result.to_dict())
    assert CANARY not in dumped
    assert agent_secret not in dumped
    assert CANARY not in repr(result)


def test_bag_is_read_when_only_stderr_went_over_the_limit(
    script: Callable[[str], Path],
) -> None:
    program = script('import sys; sys.stderr.write("e" * 200_000); print(\'{"state": "warning"}\')')
    result = run_command(python(program), document(), **FAST)
    assert result.truncated
    assert result.state is ProbeState.WARNING


def test_a_secret_straddling_the_output_limit_is_still_scrubbed(
    script: Callable[[str], Path],
) -> None:
    program = script(READ_DOCUMENT + "sys.stdout.write('x' * 100 + password + 'y' * 100)")
    result = run_command(python(program), document(), output_limit=110, **FAST)
    assert result.truncated
    assert CANARY[:10] not in result.stdout
    assert result.stdout.startswith("x" * 100 + "[scrubbe")
    assert len(result.stdout.encode()) == 110
    assert result.scrubbed == 2  # stdout, and the message taken from its first line


def test_perf_value_that_spells_a_secret_is_dropped(script: Callable[[str], Path]) -> None:
    program = script('print(\'{"perf": {"pin": 918273, "ok": 5}}\')')
    result = run_command(python(program), document("918273"), **FAST)
    assert result.perf == {"ok": 5.0}
    assert result.scrubbed >= 1


# -- the command line -------------------------------------------------------------------------


def test_placeholders_are_filled_from_parameters() -> None:
    argv = ("check", "--db={db}", "{{literal}}", "{host}:{port}")
    assert expand_argv(argv, {"db": "master", "host": "db01", "port": "1433"}) == (
        "check",
        "--db=master",
        "{literal}",
        "db01:1433",
    )


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        ((), "no program"),
        (("check", "{missing}"), "argument 1 of the command uses unknown parameter {missing}"),
        (("check", "{oops"), "argument 1 of the command has an unmatched brace"),
        (("check", "a}b"), "unmatched brace"),
    ],
)
def test_bad_command_lines_are_refused(argv: tuple[str, ...], reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason.replace("{", r"\{").replace("}", r"\}")):
        expand_argv(argv, {})


@pytest.mark.parametrize(
    "value",
    [CANARY, f"--password={CANARY}", CANARY.encode().hex(), "x" + CANARY + "y"],
    ids=["clear", "in-option", "hex", "inside"],
)
def test_a_secret_in_an_argument_is_refused_before_anything_runs(
    tmp_path: Path, value: str
) -> None:
    marker = tmp_path / "ran"
    spec = CommandSpec(("touch", str(marker), "{value}"), {"value": value})
    with pytest.raises(InvalidInput, match="argument 2 of the command would carry a secret") as e:
        run_command(spec, document(), **FAST)
    assert CANARY not in str(e.value)
    assert not marker.exists()


def test_a_secret_of_the_agent_in_the_context_is_refused(tmp_path: Path) -> None:
    spec = CommandSpec(("true",), object="db01/held-secret-value")
    with pytest.raises(InvalidInput, match="environment variable RUNAS_OBJECT"):
        run_command(spec, document(), scrubber=Scrubber(["held-secret-value"]), **FAST)


def test_a_program_that_cannot_start_is_unknown(tmp_path: Path) -> None:
    result = run_command(CommandSpec(("no-such-program-runas",)), document(), **FAST)
    assert result.state is ProbeState.UNKNOWN
    assert result.message == "cannot run no-such-program-runas: No such file or directory"
    assert result.exit_code is None
    not_executable = tmp_path / "plain.txt"
    not_executable.write_text("x")
    result = run_command(CommandSpec((str(not_executable),)), document(), **FAST)
    assert result.message.endswith("Permission denied")


def test_bad_limits_are_refused() -> None:
    with pytest.raises(InvalidInput, match="must be positive"):
        run_command(CommandSpec(("true",)), document(), timeout_s=0)


# -- Run As health ---------------------------------------------------------------------------


def test_credential_report_for_run_as_health() -> None:
    at = datetime(2025, 6, 1, tzinfo=UTC)
    failed = ProbeResult(
        ProbeState.CRITICAL, "m", 2, auth_failure=AuthFailure(AuthFailureKind.LOGON_FAILED, "no")
    )
    report = failed.credential_report(at, 3)
    assert report is not None
    assert (report.failure, report.message, report.secret_version) == (
        AuthFailureKind.LOGON_FAILED,
        "no",
        3,
    )
    ran = ProbeResult(ProbeState.CRITICAL, "disk full", 2).credential_report(at, 3)
    assert ran is not None
    assert ran.failure is None
    assert ProbeResult(ProbeState.UNKNOWN, "?", 9).credential_report(at, 3) is None
    timed_out = ProbeResult(ProbeState.UNKNOWN, "t", None, timed_out=True)
    assert timed_out.credential_report(at, 3) is None


# -- running as another user ------------------------------------------------------------------


@pytest.fixture
def throwaway_user() -> Iterator[tuple[int, int]]:
    """A local user made for this test (needs root), removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    name = f"runas-t-{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        import pwd

        entry = pwd.getpwnam(name)
        yield entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


WHO_AM_I = """\
#!/bin/sh
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) user=$USER"
if [ "$RUNAS_HANDOFF" = file ]; then
  stat -c 'file=%u:%g:%a' "$RUNAS_CREDENTIAL_FILE"
  stat -c 'dir=%u:%a' "$(dirname "$RUNAS_CREDENTIAL_FILE")"
  printf 'sha=%s\\n' "$(sha256sum < "$RUNAS_CREDENTIAL_FILE" | cut -d' ' -f1)"
else
  printf 'sha=%s\\n' "$(sha256sum | cut -d' ' -f1)"
fi
"""


@pytest.mark.parametrize("handoff", list(HandOff))
def test_runs_as_another_user_with_no_extra_groups(
    throwaway_user: tuple[int, int], handoff: HandOff
) -> None:
    uid, gid = throwaway_user
    # The user cannot read pytest's private tmp_path: the program goes in a readable directory.
    directory = Path(tempfile.mkdtemp(prefix="runas-t-"))
    try:
        directory.chmod(0o755)
        program = directory / "who.sh"
        program.write_text(WHO_AM_I)
        program.chmod(0o755)
        doc = document()
        result = run_command(
            CommandSpec(("/bin/sh", str(program))), doc, handoff=handoff, run_as=(uid, gid), **FAST
        )
    finally:
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert result.state is ProbeState.HEALTHY, result.stderr
    assert lines["uid"].startswith(f"{uid} gid={gid} groups={gid} user=runas-t-")
    assert lines["sha"] == hashlib.sha256(doc.to_json()).hexdigest()
    if handoff is HandOff.FILE:
        assert lines["file"] == f"{uid}:{gid}:600"
        assert lines["dir"] == f"{uid}:700"


def test_threads_can_run_probes_side_by_side(script: Callable[[str], Path]) -> None:
    program = script(READ_DOCUMENT + "print(hashlib.sha256(password.encode()).hexdigest())")
    results: list[ProbeResult] = []
    lock = threading.Lock()

    def one(password: str) -> None:
        result = run_command(python(program), document(password), **FAST)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=one, args=(f"pw-{i}-{CANARY}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.message for r in results) == sorted(
        hashlib.sha256(f"pw-{i}-{CANARY}".encode()).hexdigest() for i in range(6)
    )
