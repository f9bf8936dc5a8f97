"""The sshd peer's throwaway OS users outlive a test run that is killed (SIGKILL, a CI
timeout) before it can remove them; the next run removes them, and never another live
worker's."""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
import sys

import pytest

from support.peers.sshd import OWNER, SUDOERS_D, remove_stale_users

pytestmark = [pytest.mark.peer]


def _add(name: str, pid: int) -> None:
    subprocess.run(["/usr/sbin/useradd", "-M", "-s", "/bin/sh", "-c", f"{OWNER}{pid}", name],
                   check=True, capture_output=True, timeout=60)  # fmt: skip


def _exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_users_of_a_dead_run_are_removed_and_a_live_ones_kept() -> None:
    if os.geteuid() != 0:
        pytest.fail("the sshd peer needs root (./scripts/test runs as root in CI)")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(gone.stdout)
    prefix = f"rtx{secrets.token_hex(3)}"
    dead, live = f"{prefix}mon", f"rtx{secrets.token_hex(3)}mon"
    dropin = SUDOERS_D / prefix
    try:
        _add(dead, dead_pid)
        _add(live, os.getpid())
        dropin.write_text(f"{dead} ALL=(ALL) NOPASSWD: ALL\n")
        dropin.chmod(0o440)
        removed = remove_stale_users()
        assert dead in removed
        assert not _exists(dead)
        assert not dropin.exists()
        assert _exists(live)
        assert live not in removed
    finally:
        dropin.unlink(missing_ok=True)
        for name in (dead, live):
            subprocess.run(["/usr/sbin/userdel", "-f", name], capture_output=True, check=False)
