"""A real OpenSSH server for the ``ssh`` probe's tests: Debian's ``/usr/sbin/sshd`` on
127.0.0.1 at a free high port, with its own configuration and ed25519 host key in a throwaway
directory, and throwaway OS users (a unique ``rtx<hex>`` prefix) with a
sudoers drop-in. Everything — the daemon, the users and their homes, the drop-in — is removed
by :meth:`Sshd.stop`, which :func:`running_sshd` calls whatever happens.

Needs root (users, sudoers, sshd). Password authentication checks /etc/shadow (``UsePAM
no``). Nothing of the system's own sshd (its service, configuration or host keys) is used.

Users (all with random passwords):

* ``mon`` — sudo without a password (``NOPASSWD: ALL``);
* ``pw`` — sudo *with* a password (for elevation failures);
* ``key`` — logs on with SSH keys (:attr:`Sshd.key` plain; :attr:`Sshd.pem_key` and
  :attr:`Sshd.openssh_encrypted_key` with :attr:`Sshd.key_passphrase`);
* ``tgt`` — the target of ``su`` (the tests never touch root's password).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = Path("/usr/bin/ssh-keygen")
SUDO = Path("/usr/bin/sudo")
SU = Path("/usr/bin/su")
VISUDO = Path("/usr/sbin/visudo")
SUDOERS_D = Path("/etc/sudoers.d")
START_TIMEOUT = 15.0
ROLES = ("mon", "pw", "key", "tgt")
#: the comment (GECOS) of every throwaway user: says which test process made it, so that a
#: later run can remove the users of a run that was killed before it could clean up
OWNER = "runas test peer, pid "


def _need(path: Path, package: str) -> None:
    if not path.exists():
        raise RuntimeError(
            f"{path} is missing: install the Debian package {package} (./scripts/test installs it)"
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run(*argv: str, stdin: str | None = None) -> None:
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")


@dataclass
class SshUser:
    name: str
    password: str = field(repr=False)


@dataclass
class Sshd:
    root: Path
    prefix: str
    port: int = 0
    host: str = "127.0.0.1"
    users: dict[str, SshUser] = field(default_factory=dict)
    #: the host key, "<type> <base64>", and its SHA256 fingerprint ("SHA256:...")
    host_key: str = ""
    fingerprint: str = ""
    #: the ``key`` user's private keys: OpenSSH format without a passphrase; PEM (PKCS#8,
    #: ECDSA) and OpenSSH format (ed25519) encrypted with :attr:`key_passphrase`
    key: bytes = field(default=b"", repr=False)
    pem_key: bytes = field(default=b"", repr=False)
    openssh_encrypted_key: bytes = field(default=b"", repr=False)
    key_passphrase: str = field(default="", repr=False)
    process: subprocess.Popen[bytes] | None = None
    log: Path = Path()
    _created: list[str] = field(default_factory=list)
    _sudoers: Path | None = None

    @property
    def known_hosts_line(self) -> str:
        return f"[{self.host}]:{self.port} {self.host_key}"

    def user(self, role: str) -> SshUser:
        return self.users[role]

    # -- start ---------------------------------------------------------------------------

    def start(self) -> None:
        for path, package in ((SSHD, "openssh-server"), (SSH_KEYGEN, "openssh-client"),
                              (SUDO, "sudo"), (VISUDO, "sudo"), (SU, "util-linux")):  # fmt: skip
            _need(path, package)
        if os.geteuid() != 0:
            raise RuntimeError("the sshd peer needs root (throwaway users and sudoers)")
        remove_stale_users()
        self.root.mkdir(parents=True, exist_ok=True)
        self._host_key()
        self._users()
        self._client_keys()
        self._sudoers_dropin()
        self._daemon()

    def _host_key(self) -> None:
        path = self.root / "ssh_host_ed25519_key"
        _run(str(SSH_KEYGEN), "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path))
        kind, data = path.with_suffix(".pub").read_text().split()[:2]
        self.host_key = f"{kind} {data}"
        done = subprocess.run(
            [str(SSH_KEYGEN), "-l", "-E", "sha256", "-f", str(path.with_suffix(".pub"))],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        self.fingerprint = done.stdout.split()[1]

    def _users(self) -> None:
        for role in ROLES:
            name = f"{self.prefix}{role}"
            _run("/usr/sbin/useradd", "-m", "-s", "/bin/sh", "-c", f"{OWNER}{os.getpid()}", name)
            self._created.append(name)
            user = SshUser(name, f"pw-{secrets.token_urlsafe(12)}")
            _run("/usr/sbin/chpasswd", stdin=f"{name}:{user.password}\n")
            self.users[role] = user

    def _client_keys(self) -> None:
        keys = self.root / "keys"
        keys.mkdir(mode=0o700)
        self.key_passphrase = f"pp-{secrets.token_urlsafe(12)}"
        lines = []
        for name, kind, form, passphrase in (
            ("key", "ed25519", (), ""),
            ("pem_key", "ecdsa", ("-m", "PKCS8"), self.key_passphrase),
            ("openssh_encrypted_key", "ed25519", (), self.key_passphrase),
        ):
            path = keys / name
            _run(str(SSH_KEYGEN), "-q", "-t", kind, *form, "-N", passphrase, "-C", "",
                 "-f", str(path))  # fmt: skip
            lines.append(path.with_suffix(".pub").read_text().strip())
            setattr(self, name, path.read_bytes())
        # The private keys live in the tests' memory only.
        shutil.rmtree(keys)
        # In the user's home (removed with the user): sshd reads authorized_keys with the
        # user's own rights, and the tests' temporary directories are private to root.
        entry = pwd.getpwnam(self.users["key"].name)
        ssh_dir = Path(entry.pw_dir) / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text("\n".join(lines) + "\n")
        for path in (ssh_dir, authorized):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _sudoers_dropin(self) -> None:
        mon, pw = self.users["mon"].name, self.users["pw"].name
        text = (
            f"# runas tests ({self.root}); removed when they end\n"
            f"Defaults:{mon} !requiretty\n"
            f"Defaults:{pw} !requiretty\n"
            f"{mon} ALL=(ALL) NOPASSWD: ALL\n"
            f"{pw} ALL=(ALL) ALL\n"
        )
        staged = self.root / "sudoers"
        staged.write_text(text)
        os.chmod(staged, 0o440)
        _run(str(VISUDO), "-cf", str(staged))
        target = SUDOERS_D / self.prefix
        shutil.copyfile(staged, target)
        os.chmod(target, 0o440)
        self._sudoers = target

    def _daemon(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self.port = free_port()
        config = self.root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}",
                    f"Port {self.port}",
                    f"HostKey {self.root / 'ssh_host_ed25519_key'}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    "AuthorizedKeysFile .ssh/authorized_keys",
                    "PasswordAuthentication yes",
                    "PubkeyAuthentication yes",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin no",
                    f"AllowUsers {self.prefix}*",
                    "MaxStartups 100",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        _run(str(SSHD), "-t", "-f", str(config))
        self.log = self.root / "sshd.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited at start: {self.log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=1) as s,
            ):
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not answer on port {self.port}: {self.log.read_text()}")

    # -- stop ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the daemon and remove everything; each step runs even if another failed."""
        if self.process is not None and self.process.poll() is None:
            # sshd -D leads its own process group (start_new_session); per-connection children
            # in it go too, user sessions end when their connection does.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 15)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, 9)
                self.process.wait()
        if self._sudoers is not None:
            self._sudoers.unlink(missing_ok=True)
            self._sudoers = None
        for name in self._created:
            subprocess.run(["/usr/sbin/userdel", "-r", "-f", name], check=False,
                           capture_output=True, timeout=60)  # fmt: skip
        self._created.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_users() -> list[str]:
    """Remove the throwaway users (and sudoers drop-ins) of test processes that are gone — a
    run killed by a signal or a timeout never reached :meth:`Sshd.stop`. The users of live
    processes (other pytest workers) are left alone. Returns the names removed."""
    removed: list[str] = []
    for entry in pwd.getpwall():
        if not (entry.pw_name.startswith("rtx") and entry.pw_gecos.startswith(OWNER)):
            continue
        pid = entry.pw_gecos.removeprefix(OWNER)
        if pid.isdigit() and not _alive(int(pid)):
            subprocess.run(["/usr/sbin/userdel", "-r", "-f", entry.pw_name], check=False,
                           capture_output=True, timeout=60)  # fmt: skip
            removed.append(entry.pw_name)
    # a drop-in is written after its users and removed before them: one whose users are all
    # gone belongs to nobody
    users = {e.pw_name for e in pwd.getpwall()}
    for dropin in SUDOERS_D.glob("rtx*"):
        if not any(u.startswith(dropin.name) for u in users):
            dropin.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def running_sshd(root: Path) -> Iterator[Sshd]:
    """An sshd with its users, removed afterwards (also when starting it fails halfway)."""
    sshd = Sshd(root / "sshd", f"rtx{secrets.token_hex(3)}")
    try:
        sshd.start()
        yield sshd
    finally:
        sshd.stop()


__all__ = ["ROLES", "SshUser", "Sshd", "free_port", "running_sshd"]
