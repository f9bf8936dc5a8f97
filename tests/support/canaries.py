"""Canary secrets in the end-to-end tests: the forms a leaked secret would take, and the
search of every process's command line and environment for them (promise 5: never on a
command line, never in the environment of another process)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from pathlib import Path


def encodings(secret: str) -> list[bytes]:
    """The secret in clear, base64 and hex: what a file or a log search looks for."""
    raw = secret.encode()
    return [raw, base64.b64encode(raw), raw.hex().encode()]


def scan_processes(canaries: Iterable[str], skip: Iterable[int] = ()) -> None:
    """Fail if any process's ``/proc/PID/cmdline`` or ``environ`` holds a canary. ``skip``:
    processes whose own job is to hold the secret (a peer server's credential store)."""
    wanted = [c.encode() for c in canaries]
    skipped = set(skip)
    for pid in os.listdir("/proc"):
        if not pid.isdecimal() or int(pid) in skipped:
            continue
        for name in ("cmdline", "environ"):
            try:
                data = (Path("/proc") / pid / name).read_bytes()
            except OSError:
                continue
            for canary in wanted:
                assert canary not in data, f"/proc/{pid}/{name} holds a canary"
