"""Settings: ``RUNAS_*`` environment variables, then the TOML config file, then defaults.

The data directory (default ``./runas-data``) holds the SQLite database, the keyring and the
log. A config file ``runas.toml`` in the data directory (or the file named by
``RUNAS_CONFIG``) may set ``database_url``, ``keyring_file``, ``management_group`` and
``log_file``. A bad value fails loudly with the key's name.
"""

from __future__ import annotations

import getpass
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runas.errors import ConfigurationError

DEFAULT_DATA_DIR = Path("runas-data")
CONFIG_FILE_NAME = "runas.toml"
KEYRING_FILE_NAME = "keyring.json"
DATABASE_FILE_NAME = "runas.db"
LOG_FILE_NAME = "runas.log"

_ENV_KEYS = {
    "RUNAS_DATA_DIR": "data_dir",
    "RUNAS_DATABASE_URL": "database_url",
    "RUNAS_KEYRING_FILE": "keyring_file",
    "RUNAS_MANAGEMENT_GROUP": "management_group",
    "RUNAS_LOG_FILE": "log_file",
    "RUNAS_ACTOR": "actor",
}


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str | None = None
    keyring_file: Path | None = None
    management_group: str = Field(default="default", min_length=1, max_length=128)
    log_file: Path | None = None
    #: who performs changes (recorded as created_by/modified_by); default: the OS user
    actor: str | None = None

    @field_validator("database_url")
    @classmethod
    def _url_has_scheme(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError("must be a URL such as sqlite:///path or postgresql://host/db")
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / DATABASE_FILE_NAME).resolve()}"

    @property
    def resolved_keyring_file(self) -> Path:
        return self.keyring_file or self.data_dir / KEYRING_FILE_NAME

    @property
    def resolved_log_file(self) -> Path:
        return self.log_file or self.data_dir / LOG_FILE_NAME

    @property
    def resolved_actor(self) -> str:
        if self.actor:
            return self.actor
        try:
            return f"local:{getpass.getuser()}"
        except (KeyError, OSError):  # no passwd entry (containers)
            return f"local:uid{os.getuid()}"


def read_toml(path: Path) -> dict[str, Any]:
    """The config file as a dict ({} when absent); any problem is one ConfigurationError line."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as err:
        raise ConfigurationError(f"config file {path}: {err}") from None
    except OSError as err:
        raise ConfigurationError(f"config file {path}: {err.strerror}") from None


def _read_config_file(path: Path) -> dict[str, Any]:
    data = read_toml(path)
    # [server] belongs to the management server's settings (runas.server.settings).
    section = data.get("runas", {k: v for k, v in data.items() if k != "server"})
    if not isinstance(section, dict):
        raise ConfigurationError(f"config file {path}: [runas] must be a table")
    return section


def load_settings(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build settings: explicit overrides (CLI flags) > environment > config file > defaults."""
    env = os.environ if env is None else env
    from_env: dict[str, Any] = {field: env[var] for var, field in _ENV_KEYS.items() if env.get(var)}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    data_dir = Path(given.get("data_dir") or from_env.get("data_dir") or DEFAULT_DATA_DIR)
    config_path = Path(env["RUNAS_CONFIG"]) if env.get("RUNAS_CONFIG") else None
    from_file = _read_config_file(config_path or data_dir / CONFIG_FILE_NAME)
    if config_path is not None and not config_path.exists():
        raise ConfigurationError(f"RUNAS_CONFIG names {config_path}, which does not exist")
    merged: dict[str, Any] = {**from_file, **from_env, **given, "data_dir": data_dir}
    try:
        return Settings(**merged)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "settings"
        origin = (
            "command line"
            if key in given
            else next((v for v, f in _ENV_KEYS.items() if f == key and v in env), "config file")
        )
        raise ConfigurationError(f"setting {key!r} ({origin}): {first['msg']}") from None


_DURATION = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``30s``, ``5m``, ``1h``, ``1d`` or ``0.2s`` (must be > 0): the duration
    syntax of every settings file (server and agent) and of packs."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError("must be a duration such as 30s, 5m or 1h")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError("must be longer than 0s")
    return seconds
