"""The end-to-end tests' search of process command lines and environments for canaries
(support/canaries.py) finds a canary where it is, and skips only the processes it is told to."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

from support.canaries import encodings, scan_processes

CANARY = f"canary-{secrets.token_urlsafe(12)}"


@pytest.fixture
def holder() -> Iterator[subprocess.Popen[bytes]]:
    # the canary in a child's environment (the leak the scan exists to catch); the child
    # prints nothing, so the canary stays out of the test output
    env = {**os.environ, "LEAKED": CANARY}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def test_a_canary_in_another_process_environment_is_found(
    holder: subprocess.Popen[bytes],
) -> None:
    with pytest.raises(AssertionError, match=rf"/proc/{holder.pid}/environ holds a canary"):
        scan_processes([CANARY])
    scan_processes([CANARY], skip=[holder.pid])  # a peer's own store is not a leak
    scan_processes([f"absent-{secrets.token_urlsafe(12)}"])


def test_encodings_are_clear_base64_and_hex() -> None:
    assert encodings("ab") == [b"ab", b"YWI=", b"6162"]
