"""What every command shares: the settings and a backend, built on first use."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import typer

from runas import logs
from runas.backend import Backend, LocalBackend
from runas.runtime import Runtime
from runas.settings import Settings, load_settings


@dataclass
class CliState:
    data_dir: Path | None = None
    _settings: Settings | None = None
    _backend: Backend | None = field(default=None, repr=False)
    _log: logging.Handler | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(overrides={"data_dir": self.data_dir})
        return self._settings

    def backend(self) -> Backend:
        if self._backend is None:
            settings = self.settings
            # The management-server issue chooses an HTTP backend here when a server is named.
            self._backend = LocalBackend(Runtime(settings))
            if self._log is None:
                settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._log = logs.configure_file_logging(settings.resolved_log_file)
        return self._backend

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
