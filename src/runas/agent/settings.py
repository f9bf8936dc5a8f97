"""Settings of the agent: ``agent.toml`` (``--config PATH``), then ``RUNAS_AGENT_*`` variables.

The keys are those of the "Settings" table of ``docs/agents.md``. The file may hold them at its
top level or in an ``[agent]`` table (so one file can serve a computer that is both a
management server and an agent). Each ``RUNAS_AGENT_<KEY>`` variable overrides the file's key;
``RUNAS_AGENT_SERVERS`` is a comma-separated list.

Durations use the packs' syntax — whole seconds (``30``) or a number with ``s``, ``m``, ``h``
or ``d`` (``30s``, ``5m``) — and additionally accept fractions (``0.2s``), which tests need and
which harm nobody. A bad value fails with one :class:`~runas.errors.ConfigurationError` line
that names the key and where it came from, never the value (it is not secret, but a file
path or a server list can be long, and the message must stay one line).

The enrolment token is deliberately not a setting: only the *file* that holds it is, since a
value in a setting ends up in process listings, shell history and unit files.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runas.agent.handoff import HandOff
from runas.crypto.ca import check_agent_id
from runas.errors import ConfigurationError, InvalidInput
from runas.settings import parse_duration, read_toml

ENV_PREFIX = "RUNAS_AGENT_"
DEFAULT_DATA_DIR = Path("/var/lib/runas-agent")
DEFAULT_ACTION_USER = "runas-action"
LOG_FILE_NAME = "agent.log"


def default_agent_id() -> str:
    """The host's FQDN, lower case (the agent id when ``name`` is not set)."""
    return socket.getfqdn().lower()


class AgentSettings(BaseModel):
    """Everything ``runas agent run`` reads; see ``docs/agents.md`` for each key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    servers: tuple[str, ...] = Field(min_length=1)
    name: str = Field(default_factory=default_agent_id, validate_default=True)
    data_dir: Path = DEFAULT_DATA_DIR
    ca_file: Path
    enrolment_token_file: Path | None = None
    poll_interval: float = 30.0
    report_interval: float = 10.0
    #: None: ``runas-action`` when the agent runs as root, else the agent's own user
    action_user: str | None = None
    handoff: HandOff = HandOff.STDIN
    log_file: Path | None = None
    #: how many workflows run at the same time (an addition to the documented keys)
    max_parallel: int = Field(default=8, ge=1, le=256)

    @field_validator("servers", mode="before")
    @classmethod
    def _split_servers(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("servers")
    @classmethod
    def _https_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] = []
        for server in value:
            parts = urlsplit(server)
            if parts.scheme != "https" or not parts.hostname:
                raise ValueError("each server must be an https://host:port URL")
            if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
                raise ValueError("a server URL is https://host:port, without a path")
            try:
                parts.port  # noqa: B018 - raises ValueError on a bad port
            except ValueError:
                raise ValueError("a server URL has a bad port") from None
            out.append(f"https://{parts.netloc}")
        return tuple(out)

    @field_validator("name", mode="before")
    @classmethod
    def _lower_name(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        try:
            return check_agent_id(value)
        except InvalidInput as err:
            raise ValueError(str(err)) from None

    @field_validator("poll_interval", "report_interval", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)

    @field_validator("action_user")
    @classmethod
    def _user_name(cls, value: str | None) -> str | None:
        if value is not None and re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", value) is None:
            raise ValueError("must be a system user name (lower case, at most 32 characters)")
        return value

    @property
    def agent_id(self) -> str:
        return self.name

    @property
    def resolved_log_file(self) -> Path:
        return self.log_file or self.data_dir / LOG_FILE_NAME


def _file_section(path: Path) -> dict[str, Any]:
    data = read_toml(path)
    section = data.get("agent", data)
    if not isinstance(section, dict):
        raise ConfigurationError(f"config file {path}: [agent] must be a table")
    return section


def load_agent_settings(
    config_path: Path | None, env: Mapping[str, str] | None = None
) -> AgentSettings:
    """Settings from ``config_path`` (None: no file), overridden by ``RUNAS_AGENT_*``."""
    env = os.environ if env is None else env
    from_file: dict[str, Any] = {}
    if config_path is not None:
        if not config_path.is_file():
            raise ConfigurationError(f"config file {config_path} does not exist")
        from_file = _file_section(config_path)
    names = set(AgentSettings.model_fields)
    from_env = {
        key: env[ENV_PREFIX + key.upper()]
        for key in names
        if env.get(ENV_PREFIX + key.upper(), "") != ""
    }
    merged = {**from_file, **from_env}
    try:
        return AgentSettings(**merged)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"][:1]) or "settings"
        origin = f"{ENV_PREFIX}{key.upper()}" if key in from_env else "config file"
        message = str(first["msg"]).splitlines()[0].removeprefix("Value error, ")
        raise ConfigurationError(f"agent setting {key!r} ({origin}): {message}") from None


__all__ = [
    "DEFAULT_ACTION_USER",
    "DEFAULT_DATA_DIR",
    "ENV_PREFIX",
    "AgentSettings",
    "default_agent_id",
    "load_agent_settings",
    "parse_duration",
]
