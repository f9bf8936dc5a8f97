"""The credentials file ``runas login`` writes: one session token per server URL.

``$XDG_CONFIG_HOME/runas/credentials.json`` (default ``~/.config/runas/credentials.json``),
mode 0600 in a 0700 directory, replaced atomically. A file that group or others can read is
refused rather than used: a token there may already have been copied.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from runas.errors import ConfigurationError

FILE_NAME = "credentials.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class StoredLogin:
    server: str
    user: str
    token: SecretStr
    #: the session token's id on the server, so ``runas logout`` can revoke it
    token_id: int | None = None
    expires_at: datetime | None = None


def credentials_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "runas" / FILE_NAME


class CredentialStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, server: str) -> StoredLogin | None:
        entry = self._read().get(server)
        if not isinstance(entry, dict):
            return None
        token = entry.get("token")
        if not isinstance(token, str) or not token:
            return None
        token_id = entry.get("token_id")
        expires = entry.get("expires_at")
        return StoredLogin(
            server=server,
            user=str(entry.get("user", "")),
            token=SecretStr(token),
            token_id=token_id if isinstance(token_id, int) else None,
            expires_at=_parse_time(expires),
        )

    def put(self, login: StoredLogin) -> None:
        servers = self._read()
        servers[login.server] = {
            "user": login.user,
            "token": login.token.get_secret_value(),
            "token_id": login.token_id,
            "expires_at": login.expires_at.isoformat() if login.expires_at else None,
        }
        self._write(servers)

    def remove(self, server: str) -> bool:
        servers = self._read()
        if server not in servers:
            return False
        del servers[server]
        if servers:
            self._write(servers)
        else:
            self.path.unlink(missing_ok=True)
        return True

    # -- the file ---------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise ConfigurationError(
                f"credentials file {self.path}: {err.strerror or err}"
            ) from None
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            # Checked on the open file, not the path: no window to swap the file in between.
            if info.st_uid != os.getuid():
                raise ConfigurationError(
                    f"credentials file {self.path} belongs to another user: refusing to use it"
                )
            if info.st_mode & 0o077:
                raise ConfigurationError(
                    f"credentials file {self.path} is readable by others "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}): refusing to use it; its tokens may "
                    f"have been copied: run 'chmod 600 {self.path}' and consider "
                    "'runas logout' + 'runas login'"
                )
            raw = fh.read()
        try:
            doc = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigurationError(f"credentials file {self.path} is not valid JSON") from None
        servers = doc.get("servers") if isinstance(doc, dict) else None
        if not isinstance(servers, dict):
            raise ConfigurationError(f"credentials file {self.path} has no 'servers' table")
        return servers

    def _write(self, servers: dict[str, Any]) -> None:
        directory = self.path.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".credentials-", dir=directory)  # 0600
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump({"version": FORMAT_VERSION, "servers": servers}, fh, indent=2)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as err:
            raise ConfigurationError(
                f"cannot write credentials file {self.path}: {err.strerror or err}"
            ) from None


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
