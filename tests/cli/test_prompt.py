"""Secrets typed at the prompt: the real console script on a pseudo-terminal, as a person
would use it. What is typed must not be echoed, and must be what gets stored."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from runas.runtime import Runtime
from runas.services.accounts import decrypt_secrets
from runas.settings import load_settings

RUNAS = str(Path(sys.executable).with_name("runas"))


class Terminal:
    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [RUNAS, *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        self.screen = b""
        self._seen = 0  # what earlier expectations matched is not matched again

    def expect(self, text: bytes, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen[self._seen :]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not shown; screen: {self.screen!r}")
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.screen += os.read(self.master, 4096)
                except OSError:  # the child closed the terminal
                    break
        self._seen = self.screen.index(text, self._seen) + len(text)

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self) -> int:
        code = self.proc.wait(timeout=30)
        # Drain what the program printed before it exited (EIO once the terminal is closed).
        while select.select([self.master], [], [], 0.5)[0]:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.screen += chunk
        os.close(self.master)
        return code


def test_prompted_secret_is_hidden_confirmed_and_stored(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "RUNAS_DATA_DIR": str(data)}
    for var in ("RUNAS_DATABASE_URL", "RUNAS_KEYRING", "RUNAS_KEYRING_FILE", "RUNAS_CONFIG"):
        env.pop(var, None)
    subprocess.run([RUNAS, "init"], env=env, check=True, capture_output=True)
    canary = "prompted-Canary-7f3a"

    term = Terminal(["account", "add", "typed", "--type", "simple", "--user", "u"], env)
    term.expect(b"Password: ")
    term.type(canary)
    term.expect(b"Repeat for confirmation: ")
    term.type(canary)
    assert term.finish() == 0
    assert b"created simple account 'typed'" in term.screen
    assert canary.encode() not in term.screen  # hidden input: nothing echoed

    runtime = Runtime(load_settings(env={"RUNAS_DATA_DIR": str(data)}))
    try:
        with runtime.unit_of_work() as uow:
            assert decrypt_secrets(uow, 1, 1, purpose="test") == {"password": canary}
    finally:
        runtime.close()


def test_a_mistyped_confirmation_is_asked_again(tmp_path: Path) -> None:
    env = {**os.environ, "RUNAS_DATA_DIR": str(tmp_path / "data")}
    env.pop("RUNAS_DATABASE_URL", None)
    subprocess.run([RUNAS, "init"], env=env, check=True, capture_output=True)
    term = Terminal(["account", "add", "t", "--type", "community-string"], env)
    term.expect(b"SNMP community string (community): ")
    term.type("first-try")
    term.expect(b"Repeat for confirmation: ")
    term.type("different")
    term.expect(b"do not match")
    term.expect(b"SNMP community string (community): ")
    term.type("second-try")
    term.expect(b"Repeat for confirmation: ")
    term.type("second-try")
    assert term.finish() == 0
    assert b"created community-string account 't'" in term.screen
