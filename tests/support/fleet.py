"""A management group with real processes: one ``runas server`` with its agent listener and
any number of ``runas agent run`` processes on loopback, each agent pretending to be one
computer (its ``name``) with its own data directory.

Administration goes through the local CLI on the server host (subprocesses on the same data
directory and database), as an administrator would on a management server. Every process
gets a minimal environment (no secret is ever put in one) and writes its output to a file the
canary checks read afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import forkcli

CLI = [
    sys.executable,
    "-c",
    "import sys; from runas.cli.main import main; sys.argv[0] = 'runas'; main()",
]
_PASSED_ON = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
START_TIMEOUT = 30.0


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _PASSED_ON}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


def run_cli(
    args: Sequence[str], *, env: dict[str, str], stdin: str | None, timeout: float
) -> forkcli.Done | subprocess.CompletedProcess[str]:
    """``runas ARGS`` as a process of its own: forked from an interpreter that has imported
    runas already (support/forkcli.py), or a fresh one with ``RUNAS_TEST_FORK_CLI=0``."""
    if forkcli.enabled():
        return forkcli.server(base_env()).run(args, env=env, stdin=stdin, timeout=timeout)
    return subprocess.run(
        [*CLI, *args], env=env, input=stdin, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def spawn_cli(
    args: Sequence[str],
    *,
    env: dict[str, str],
    stdout: int | None,
    stderr: int,
    new_session: bool = False,
) -> forkcli.ForkedProcess | subprocess.Popen[bytes]:
    """A long-running ``runas ARGS`` (a server, an agent) as a process of its own, forked like
    :func:`run_cli` (or a fresh interpreter with ``RUNAS_TEST_FORK_CLI=0``). ``stdout``: a file
    descriptor, or None for a pipe (``.stdout``); stdin is /dev/null."""
    if forkcli.enabled():
        return forkcli.server(base_env()).spawn(
            args, env=env, stdout=stdout, stderr=stderr, new_session=new_session
        )
    return subprocess.Popen(
        [*CLI, *args], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdout is None else stdout, stderr=stderr,
        start_new_session=new_session,
    )  # fmt: skip


@dataclass
class Group:
    """The management group's data directory and how to run its local CLI."""

    root: Path
    database_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.root / "mg"

    def env(self) -> dict[str, str]:
        env = base_env()
        env["RUNAS_DATA_DIR"] = str(self.data_dir)
        env["XDG_CONFIG_HOME"] = str(self.root / "xdg")
        if self.database_url:
            env["RUNAS_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        done = run_cli(args, env=self.env(), stdin=stdin, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"runas {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json"))


@dataclass
class Process:
    popen: forkcli.ForkedProcess | subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)


@dataclass
class Server(Process):
    url: str = ""
    agent_url: str = ""


def start_server(group: Group, *, env: dict[str, str] | None = None) -> Server:
    log = group.root / f"server-{time.monotonic_ns()}.log"
    with log.open("wb") as err:
        popen = spawn_cli(
            ["server", "--port", "0", "--agent-port", "0"],
            env={**group.env(), **(env or {})},
            stdout=None,
            stderr=err.fileno(),
        )
    assert popen.stdout is not None
    lines = [popen.stdout.readline().decode().strip() for _ in range(2)]
    if not all(" on " in line for line in lines):
        popen.kill()
        raise AssertionError(f"server did not start: {lines!r}; {log.read_text()[-2000:]}")
    url = lines[0].rsplit(" ", 1)[-1]
    agent_url = lines[1].rsplit(" ", 1)[-1]
    return Server(popen, log, url, agent_url)


@dataclass
class Agent(Process):
    name: str = ""
    data_dir: Path = Path()
    config: Path = Path()


def agent_config(
    group: Group, name: str, servers: Sequence[str], *, token_file: Path | None = None
) -> Path:
    directory = group.root / "agents" / name
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "agent.toml"
    lines = [
        "[agent]",
        f"servers = {json.dumps(list(servers))}",
        f'name = "{name}"',
        f'data_dir = "{directory / "data"}"',
        f'ca_file = "{group.data_dir / "agent-listener" / "agent-ca.pem"}"',
        'poll_interval = "0.3s"',
        'report_interval = "0.3s"',
    ]
    if token_file is not None:
        lines.append(f'enrolment_token_file = "{token_file}"')
    config.write_text("\n".join(lines) + "\n")
    return config


def start_agent(group: Group, name: str, servers: Sequence[str], **kw: Any) -> Agent:
    config = agent_config(group, name, servers, **kw)
    log = config.parent / f"agent-{time.monotonic_ns()}.out"
    with log.open("wb") as out:
        popen = spawn_cli(
            ["agent", "run", "--config", str(config)],
            env=base_env(),
            stdout=out.fileno(),
            stderr=out.fileno(),
        )
    return Agent(popen, log, name, config.parent / "data", config)


def running(processes: Sequence[Process]) -> Iterator[None]:
    try:
        yield
    finally:
        for p in processes:
            p.stop()
