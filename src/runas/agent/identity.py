"""The agent's identity on disk: its data directory, keys, certificate and a little state.

Layout of the data directory (mode 0700, owned by the agent's user)::

    hpke.key     X25519 HPKE private key, raw 32 bytes, 0600 (opens the sealed bundles)
    tls.key      ECDSA P-256 TLS key, PKCS#8 PEM, 0600 (client authentication)
    tls.crt      the client certificate the management group issued, PEM (after approval)
    state.json   non-secret state: agent id, creation time, last accepted epochs
    config.json  the cached configuration with its still-sealed bundle (runas.agent.config)
    agent.log    JSON-lines log (unless log_file says otherwise)

Everything is created on first start and reloaded afterwards. The keys never change on their
own: a removed agent re-enrols with the same keys (the server refuses other keys for an id
that is still enrolled, and an administrator who wants new keys removes the data directory).

Permissions are checked at every start, not only at creation: a data directory that others
can enter, or any of these files readable or writable by others, means someone may have read
the keys or swapped the certificate, and the agent refuses to start (one line naming the
path and the mode expected) rather than repairing modes silently. Files are written
atomically (a temporary file in the same directory, fsync, rename), so a ``kill -9`` leaves
either the old or the new content, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runas.crypto.ca import TlsKey, generate_tls_key, load_tls_key, tls_key_to_pem
from runas.crypto.sealing import AgentKeyPair
from runas.errors import ConfigurationError, InvalidInput, RunAsError

HPKE_KEY = "hpke.key"
TLS_KEY = "tls.key"
TLS_CERT = "tls.crt"
STATE_FILE = "state.json"
CONFIG_CACHE = "config.json"

#: every file of the data directory that the permission check covers
_CHECKED = (HPKE_KEY, TLS_KEY, TLS_CERT, STATE_FILE, CONFIG_CACHE)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data`` in a new 0600 file (fsync before rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may have taken bits off; never adds any
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot fsync a directory
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def erase_file(path: Path) -> None:
    """Overwrite ``path`` with zeros, then remove it (best effort, as for credential files:
    journaling and copy-on-write file systems may keep old blocks). Missing is fine."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError:
        pass  # a link or unwritable: still unlink it below
    else:
        try:
            size = os.fstat(fd).st_size
            os.write(fd, bytes(size))
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def erase_secrets(data_dir: Path) -> None:
    """Erase the cached configuration (it holds the sealed bundle) and any temporary file a
    write interrupted by ``kill -9`` left behind. Keys and certificate stay."""
    erase_file(data_dir / CONFIG_CACHE)
    for leftover in data_dir.glob(f".{CONFIG_CACHE}.*.tmp"):
        erase_file(leftover)


def _check_directory(path: Path) -> None:
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError as err:
        raise ConfigurationError(f"data directory {path}: {err.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigurationError(f"data directory {path} is not a directory")
    if info.st_uid != os.geteuid():
        raise ConfigurationError(f"data directory {path} must belong to the agent's user")
    if info.st_mode & 0o077:
        raise ConfigurationError(
            f"data directory {path} has mode {stat.S_IMODE(info.st_mode):04o}; it must be 0700"
        )


def _check_file(path: Path) -> bool:
    """True if ``path`` exists (and is safe); raise if it is not a private regular file."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    except OSError as err:
        raise ConfigurationError(f"{path}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigurationError(f"{path} must be a regular file (not a link)")
    if info.st_uid != os.geteuid():
        raise ConfigurationError(f"{path} must belong to the agent's user")
    if info.st_mode & 0o077:
        raise ConfigurationError(
            f"{path} has mode {stat.S_IMODE(info.st_mode):04o}; it must be 0600"
        )
    return True


def check_permissions(data_dir: Path) -> None:
    """Refuse (ConfigurationError) a data directory or file that others may read or write."""
    _check_directory(data_dir)
    for name in _CHECKED:
        _check_file(data_dir / name)


@dataclass
class AgentIdentity:
    """The loaded identity. Its repr shows the id and the directory, no key material."""

    agent_id: str
    data_dir: Path
    keys: AgentKeyPair
    tls_key: TlsKey
    certificate_pem: bytes | None
    state: dict[str, Any]

    def __repr__(self) -> str:
        return (
            f"AgentIdentity(agent_id={self.agent_id!r}, data_dir={str(self.data_dir)!r}, "
            f"approved={self.approved})"
        )

    @property
    def approved(self) -> bool:
        return self.certificate_pem is not None

    @property
    def cert_file(self) -> Path:
        return self.data_dir / TLS_CERT

    @property
    def key_file(self) -> Path:
        return self.data_dir / TLS_KEY

    @property
    def cache_file(self) -> Path:
        return self.data_dir / CONFIG_CACHE

    def save_certificate(self, pem: bytes) -> None:
        write_private(self.cert_file, pem)
        self.certificate_pem = pem
        self.update_state(approved_at=_now())

    def forget_certificate(self) -> None:
        """The agent was removed or un-approved: drop the certificate (back to enrolment)."""
        with contextlib.suppress(FileNotFoundError):
            self.cert_file.unlink()
        self.certificate_pem = None
        self.update_state(approved_at=None)

    def erase_secrets(self) -> None:
        erase_secrets(self.data_dir)

    def update_state(self, **changes: Any) -> None:
        self.state.update(changes)
        write_private(self.data_dir / STATE_FILE, _state_bytes(self.state))


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _state_bytes(state: dict[str, Any]) -> bytes:
    return (json.dumps(state, sort_keys=True, indent=1) + "\n").encode()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigurationError(f"{path}: {err.strerror}") from None


def load_identity(data_dir: Path, agent_id: str) -> AgentIdentity:
    """Create the identity in ``data_dir`` on first start, else load and check it."""
    try:
        if not data_dir.exists():
            data_dir.mkdir(mode=0o700, parents=True)
            os.chmod(data_dir, 0o700)  # mkdir's mode went through the umask
    except OSError as err:
        raise ConfigurationError(f"data directory {data_dir}: {err.strerror}") from None
    check_permissions(data_dir)

    state_path = data_dir / STATE_FILE
    state: dict[str, Any] = {}
    if state_path.exists():
        try:
            loaded = json.loads(_read(state_path))
        except ValueError:
            raise ConfigurationError(f"{state_path} is not valid JSON") from None
        if not isinstance(loaded, dict):
            raise ConfigurationError(f"{state_path} is not a JSON object")
        state = loaded
        owner = state.get("agent_id")
        if owner is not None and owner != agent_id:
            raise ConfigurationError(
                f"data directory {data_dir} belongs to agent {owner!r}, not {agent_id!r} "
                "(set name, or use another data_dir)"
            )

    hpke_path = data_dir / HPKE_KEY
    if hpke_path.exists():
        try:
            keys = AgentKeyPair.from_private_bytes(_read(hpke_path))
        except (InvalidInput, ValueError):
            raise ConfigurationError(f"{hpke_path} is not an agent HPKE key") from None
    else:
        keys = AgentKeyPair.generate()
        write_private(hpke_path, keys.private_bytes())

    tls_path = data_dir / TLS_KEY
    if tls_path.exists():
        try:
            tls_key = load_tls_key(_read(tls_path))
        except RunAsError:
            raise ConfigurationError(f"{tls_path} is not a PEM ECDSA key") from None
    else:
        tls_key = generate_tls_key()
        write_private(tls_path, tls_key_to_pem(tls_key))

    cert_path = data_dir / TLS_CERT
    certificate = _read(cert_path) if cert_path.exists() else None

    if not state:
        state = {"agent_id": agent_id, "created_at": _now()}
        write_private(state_path, _state_bytes(state))
    return AgentIdentity(agent_id, data_dir, keys, tls_key, certificate, state)


__all__ = [
    "CONFIG_CACHE",
    "HPKE_KEY",
    "STATE_FILE",
    "TLS_CERT",
    "TLS_KEY",
    "AgentIdentity",
    "check_permissions",
    "erase_file",
    "erase_secrets",
    "load_identity",
    "write_private",
]
