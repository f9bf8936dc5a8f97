"""``runas server``: the management server (REST API) on this management group."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from runas.cli.state import state
from runas.runtime import Runtime


def _announce(line: str) -> None:
    # Flushed at once: whoever started the server (a test, a service manager) reads the URL
    # from a pipe.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def server(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to listen on (default 127.0.0.1; RUNAS_HOST)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="Port (default 8765; 0 picks a free one; RUNAS_PORT)."),
    ] = None,
    agent_port: Annotated[
        int | None,
        typer.Option(
            "--agent-port",
            help="Also listen for agents on this port (TLS; 0 picks a free one; "
            "RUNAS_AGENT_PORT). Off by default.",
        ),
    ] = None,
) -> None:
    """Serve the REST API until SIGTERM or Ctrl-C. Configure with the server table of
    runas.toml or RUNAS_* variables; create the first administrator with 'runas user add NAME
    --role administrator'."""
    # Imported here: the web stack (FastAPI, uvicorn) costs every other command ~0.2 s to load.
    from runas.server.serve import configure_logging, detach_logging, serve
    from runas.server.settings import load_server_settings

    core = state(ctx).settings
    settings = load_server_settings(core, {"host": host, "port": port, "agent_port": agent_port})
    runtime = Runtime(core)
    handlers = configure_logging(settings, core.resolved_log_file)
    try:
        serve(runtime, settings, announce=_announce)
    finally:
        detach_logging(handlers)
