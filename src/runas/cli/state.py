"""What every command shares: the settings and a backend, built on first use."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from runas import logs
from runas.backend import Backend, LocalBackend
from runas.errors import ConfigurationError
from runas.runtime import Runtime
from runas.settings import Settings, load_settings

if TYPE_CHECKING:
    from runas.client import RemoteTarget


@dataclass
class CliState:
    data_dir: Path | None = None
    #: remote mode: the management server (``--server`` / ``RUNAS_SERVER``) and its CA file
    server: str | None = None
    ca_file: Path | None = None
    _settings: Settings | None = None
    _backend: Backend | None = field(default=None, repr=False)
    _log: logging.Handler | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(overrides={"data_dir": self.data_dir})
        return self._settings

    def remote(self) -> RemoteTarget | None:
        """The server to talk to, or None for local mode."""
        if not (self.server or os.environ.get("RUNAS_SERVER")):
            return None
        # Imported on demand: local mode does not pay for the HTTP client's start-up.
        from runas.client import remote_target

        return remote_target(self.server, self.ca_file)

    def backend(self) -> Backend:
        if self._backend is None:
            target = self.remote()
            if target is not None:
                from runas.client import connect

                self._backend = connect(target)
                self._log_remote()
                return self._backend
            settings = self.settings
            self._backend = LocalBackend(Runtime(settings))
            if self._log is None:
                settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._log = logs.configure_file_logging(settings.resolved_log_file)
        return self._backend

    def _log_remote(self) -> None:
        # A client keeps its command log only where a data directory already exists: talking
        # to a server must not create ./runas-data, nor fail over a local setting it never uses.
        if self._log is not None:
            return
        try:
            log_file = self.settings.resolved_log_file
        except ConfigurationError:
            return
        self._log = logs.configure_file_logging(log_file)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        logs.detach(self._log)
        self._log = None


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    obj = root.obj
    if not isinstance(obj, CliState):
        obj = CliState()
        root.obj = obj
    return obj


def backend(ctx: typer.Context) -> Backend:
    return state(ctx).backend()
