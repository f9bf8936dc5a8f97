"""``runas agent run --config PATH``: the agent's entry point on the command line.

:func:`run_command_line` loads the settings, turns SIGTERM and SIGINT into a clean stop and
runs :func:`runas.agent.main.run_agent` in the calling (main) thread. Exit codes follow the
CLI's: 0 after a clean stop, 1 for an error, which is one line on stderr (settings, data
directory permissions, keys, CA file…). The command itself is registered by ``runas.cli``
(:func:`build_app` gives a ready Typer sub-app for that).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from runas.agent.identity import load_identity
from runas.agent.main import run_agent
from runas.agent.settings import load_agent_settings
from runas.errors import RunAsError


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_command_line(config_path: Path | None, *, stop_event: threading.Event | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT (or ``stop_event``); return the exit code."""
    stop = stop_event or threading.Event()
    try:
        settings = load_agent_settings(config_path)
        with _stop_on_signals(stop):
            run_agent(settings, stop_event=stop)
    except RunAsError as err:
        print(f"runas agent: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def reset_epoch_command_line(config_path: Path | None) -> int:
    """Forget the configuration epoch the agent holds, for a management group whose database
    was restored from a backup: its epochs went back, and the agent — which refuses an older
    configuration than the one it holds, so that a replayed one cannot take secrets back to an
    earlier state — would refuse every configuration. The cached configuration goes too (its
    sealed bundle is of the newer epoch). Run it with the agent stopped; returns the exit code."""
    try:
        settings = load_agent_settings(config_path)
        identity = load_identity(settings.data_dir, settings.agent_id)
        held = int(identity.state.get("config_epoch", 0))
        identity.erase_secrets()
        identity.update_state(config_epoch=0, bundle_epoch=0)
    except RunAsError as err:
        print(f"runas agent: {err}", file=sys.stderr)
        return 1
    print(
        f"agent {identity.agent_id}: forgot configuration epoch {held}; the next configuration "
        "from the management group is accepted whatever its epoch (start the agent again)"
    )
    return 0


def build_app() -> typer.Typer:
    """A Typer app with the ``run`` command, for ``runas agent``."""
    app = typer.Typer(help="Run the runas agent on this computer.", no_args_is_help=True)

    @app.command("run")
    def run(
        config: Annotated[
            Path | None, typer.Option("--config", help="agent.toml (see docs/agents.md)")
        ] = None,
    ) -> None:
        """Enrol, then run the workflows the management group gives this computer."""
        raise typer.Exit(run_command_line(config))

    @app.command("reset-epoch")
    def reset_epoch(
        config: Annotated[
            Path | None, typer.Option("--config", help="agent.toml (see docs/agents.md)")
        ] = None,
    ) -> None:
        """After the management group's database was restored: accept its older epochs."""
        raise typer.Exit(reset_epoch_command_line(config))

    return app


__all__ = ["build_app", "reset_epoch_command_line", "run_command_line"]
