"""Settings of the management server: ``RUNAS_*`` environment variables, then the ``[server]``
table of the same config file as :mod:`runas.settings` (``runas.toml`` in the data directory,
or ``RUNAS_CONFIG``), then defaults. A bad value fails loudly with the key and where it came
from, in one line, like :func:`runas.settings.load_settings`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from runas.errors import ConfigurationError
from runas.settings import CONFIG_FILE_NAME, Settings, parse_duration, read_toml

MIB = 1024 * 1024
ENV_PREFIX = "RUNAS_"

LogLevel = Literal["debug", "info", "warning", "error"]


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    #: loopback by default: exposing the API is a decision, not an accident
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8765, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: the largest request body accepted by most routes
    max_body_bytes: int = Field(default=MIB, ge=1024)
    #: the largest body of an upload (pack import, discovery snapshot)
    max_upload_bytes: int = Field(default=16 * MIB, ge=1024)
    #: lifetime of the session token that ``POST /login`` returns
    session_token_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    log_level: LogLevel = "info"
    #: the agents' listener (TLS always, mutual TLS after enrolment; docs/agents.md). Off
    #: unless set: which port agents reach is a decision (SCOM's agents use 5723).
    agent_port: int | None = Field(default=None, ge=0, le=65535)
    #: its address (default: ``host``)
    agent_host: str | None = None
    #: names and addresses in the agent listener's certificate (default: its host, localhost
    #: and 127.0.0.1)
    agent_hostnames: list[str] = Field(default_factory=list)
    #: run this server's own agent (with the agent listener), so credentials can be
    #: distributed to management servers like to any computer
    embedded_agent: bool = True
    #: this server's computer name, its agent id (default: the host's FQDN)
    computer_name: str | None = None
    # Run As health (services/run_as_health.py): seconds, or a duration such as 30s, 5m, 1h
    #: how often every computer's Run As health is re-evaluated
    health_interval: float = 30.0
    #: how long an account may be needed but not distributed before "credentials not found"
    credentials_grace: float = 300.0
    #: how long agents' events are kept before the full health sweep deletes them
    event_retention: float = 7 * 86400.0
    # Enrolment (anyone reaching the agent listener may ask): new pending requests accepted
    #: from one source address within ``enrol_window``
    enrol_per_source: int = Field(default=50, ge=1)
    enrol_window: float = 600.0
    #: pending requests in the management group at most (approve or reject to make room)
    max_pending_enrolments: int = Field(default=1000, ge=1)

    @field_validator(
        "health_interval", "credentials_grace", "event_retention", "enrol_window", mode="before"
    )
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        return self

    @property
    def resolved_agent_hostnames(self) -> list[str]:
        if self.agent_hostnames:
            return list(self.agent_hostnames)
        host = self.agent_host or self.host
        names = [host, "localhost", "127.0.0.1"]
        if host in ("0.0.0.0", "::"):  # noqa: S104 - naming the wildcard, not binding it
            names = [socket.getfqdn(), "localhost", "127.0.0.1"]
        return list(dict.fromkeys(names))

    @property
    def resolved_computer_name(self) -> str:
        return (self.computer_name or socket.getfqdn()).strip().lower()

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Init arguments carry command-line flags and the config file's [server] table
        # (merged by load_server_settings); the environment sits between the two.
        return init_settings, env_settings


def _server_table(path: Path) -> dict[str, Any]:
    table = read_toml(path).get("server", {})
    if not isinstance(table, dict):
        raise ConfigurationError(f"config file {path}: [server] must be a table")
    return table


def load_server_settings(
    core: Settings, overrides: Mapping[str, Any] | None = None
) -> ServerSettings:
    """Command-line flags > ``RUNAS_*`` environment > ``[server]`` in the config file > defaults."""
    env = os.environ
    config = (
        Path(env["RUNAS_CONFIG"]) if env.get("RUNAS_CONFIG") else core.data_dir / CONFIG_FILE_NAME
    )
    from_file = _server_table(config)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    # The environment must beat the file, but init arguments beat the environment in
    # pydantic-settings: so file values whose variable is set are dropped here.
    fields = ServerSettings.model_fields
    from_file = {
        k: v for k, v in from_file.items() if not (k in fields and env.get(ENV_PREFIX + k.upper()))
    }
    try:
        return ServerSettings(**{**from_file, **given})
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "server settings"
        if key in given:
            origin = "command line"
        elif env.get(ENV_PREFIX + key.upper()):
            origin = ENV_PREFIX + key.upper()
        elif key in from_file:
            origin = f"config file {config}"
        else:
            origin = "server settings"
        raise ConfigurationError(f"setting {key!r} ({origin}): {first['msg']}") from None
