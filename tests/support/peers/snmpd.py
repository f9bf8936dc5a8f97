"""A throwaway net-snmp agent for the ``snmp`` probe's tests.

:func:`start_snmpd` runs Debian's ``/usr/sbin/snmpd`` in the foreground (``-f``) on
``udp:127.0.0.1:<free port>`` with only its own configuration (``-C -c <conf>``: the system's
/etc/snmp files are not read), its log in a fresh temporary directory and
``SNMP_PERSISTENT_DIR`` pointing there too, so the USM users it creates from ``createUser``
lines land in that directory and not in /var/lib/snmp. :meth:`Snmpd.stop` stops it and
removes the directory; :func:`snmpd_running` does both around a ``with`` block, also on
failure. It never touches the system's snmpd service.

The configuration holds the community and the USM pass phrases — that is where an agent keeps
them; the file is 0600 in a 0700 directory and deleted afterwards. Nothing secret goes on the
command line or in the environment. snmpd runs as root (the suite does): no OS user is needed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SNMPD = Path("/usr/sbin/snmpd")
START_TIMEOUT_S = 20.0


class SnmpdUnavailable(RuntimeError):
    """The test agent cannot be started; the message says why and what to do."""


@dataclass(frozen=True)
class UsmUser:
    """A USM user: ``createUser name [auth key [priv key]]`` and ``rouser name <level>``."""

    name: str
    auth_protocol: str | None = None
    auth_key: str | None = field(default=None, repr=False)
    priv_protocol: str | None = None
    priv_key: str | None = field(default=None, repr=False)
    #: None: the level the keys allow; or a lower one the agent requires ("noauth", "auth")
    level: str | None = None

    @property
    def min_level(self) -> str:
        if self.level is not None:
            return self.level
        if self.priv_protocol:
            return "priv"
        return "auth" if self.auth_protocol else "noauth"

    def create_line(self) -> str:
        line = f"createUser {self.name}"
        if self.auth_protocol:
            line += f' {self.auth_protocol} "{self.auth_key}"'
            if self.priv_protocol:
                line += f' {self.priv_protocol} "{self.priv_key}"'
        return line


@dataclass
class Snmpd:
    """A running test agent."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    community: str = field(repr=False)
    users: tuple[UsmUser, ...] = ()

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def user(self, name: str) -> UsmUser:
        return next(u for u in self.users if u.name == name)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _config(community: str, users: Sequence[UsmUser]) -> str:
    lines = [
        # v2c for this community from loopback only; the whole tree, read-only.
        f"rocommunity {community} 127.0.0.1",
        *(u.create_line() for u in users),
        *(f"rouser {u.name} {u.min_level}" for u in users),
        # Things the probe tests read: a fixed sysContact, and sysLocation as text.
        "sysContact runas-tests",
        "sysLocation rack 42",
    ]
    return "\n".join(lines) + "\n"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    """The agent answers an SNMPv3 engine-ID discovery request (no credential needed)."""
    from runas.agent.probes.snmp import agent_answers_discovery

    return agent_answers_discovery("127.0.0.1", port, 0.5)


def _check_installed() -> None:
    if not SNMPD.exists():
        raise SnmpdUnavailable(
            f"net-snmp's agent is not installed ({SNMPD} missing): ./scripts/test installs the "
            "Debian packages snmpd and snmp"
        )


def start_snmpd(community: str, users: Sequence[UsmUser] = ()) -> Snmpd:
    """Start an agent that accepts ``community`` (v2c) and ``users`` (v3) on loopback."""
    _check_installed()
    root = Path(tempfile.mkdtemp(prefix="runas-snmpd-"))
    try:
        persistent = root / "persistent"
        persistent.mkdir(mode=0o700)
        conf = root / "snmpd.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(_config(community, users))
        env = {"PATH": "/usr/sbin:/usr/bin:/bin", "SNMP_PERSISTENT_DIR": str(persistent)}
        log = root / "snmpd.log"
        for _attempt in range(5):
            port = _free_udp_port()
            log = root / f"snmpd-{port}.log"
            process = subprocess.Popen(
                [str(SNMPD), "-f", "-C", "-c", str(conf), "-Lf", str(log),
                 "-p", str(root / "snmpd.pid"), f"udp:127.0.0.1:{port}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=env,
            )  # fmt: skip
            agent = Snmpd(root, port, process, log, community, tuple(users))
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and process.poll() is None:
                if _answers(port):
                    return agent
                time.sleep(0.1)
            if process.poll() is None:
                process.kill()
                process.wait()
                raise SnmpdUnavailable(f"snmpd did not answer: {_tail(log)}")
            # It exited: most likely the port was taken meanwhile; try another one.
        raise SnmpdUnavailable(f"snmpd would not start: {_tail(log)}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    # net-snmp complains about every MIB file Debian does not ship (snmp-mibs-downloader)
    useful = [line for line in lines if not line.startswith(("Cannot find module", "Cannot adopt"))]
    return "\n".join(useful[-20:])


@contextlib.contextmanager
def snmpd_running(community: str, users: Sequence[UsmUser] = ()) -> Iterator[Snmpd]:
    agent = start_snmpd(community, users)
    try:
        yield agent
    finally:
        agent.stop()
