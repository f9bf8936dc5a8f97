"""Running the app: bind the socket, configure JSON logs, serve with uvicorn until a signal.

The socket is bound here, before uvicorn starts, so that "address in use" or a bad host is one
``ConfigurationError`` line, and the URL printed is the real one (``port = 0`` picks a free
port, which tests use).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Generator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

import uvicorn

from runas import logs
from runas.errors import ConfigurationError
from runas.runtime import Runtime
from runas.server.app import create_app
from runas.server.epochs import EpochWatcher
from runas.server.settings import ServerSettings

_LOGGERS = ("runas", "uvicorn")


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn's own version raises the signal again after the graceful shutdown, so the
        # process would die of SIGTERM; for a service manager, a requested stop that went well
        # is a success (exit 0).
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        # Listening now: a client that reads the printed URL can connect at once (it waits in
        # the backlog until the event loop accepts).
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def check_tls(settings: ServerSettings) -> None:
    if settings.tls_cert is None or settings.tls_key is None:
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as err:
        reason = getattr(err, "strerror", None) or getattr(err, "reason", None) or err
        raise ConfigurationError(
            f"cannot use tls_cert {settings.tls_cert} / tls_key {settings.tls_key}: {reason}"
        ) from None


def configure_logging(settings: ServerSettings, log_file: Path | None) -> list[logging.Handler]:
    """JSON lines to stderr (for a service manager) and to the log file when its directory
    exists, written by a background thread (``logs.BackgroundLog``). Returns the handlers so
    the caller can detach them."""
    level = getattr(logging, settings.log_level.upper())
    streams: list[TextIO] = [sys.stderr]
    owned: list[TextIO] = []
    if log_file is not None and log_file.parent.is_dir():
        owned.append(logs.open_log_file(log_file))
    handler = logs.BackgroundLog(streams + owned, owned=owned)
    # Fields our JSON lines never show, which the logging module would otherwise compute for
    # every record (the caller's source line, thread, process): per request, on the event loop.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False
        logger.addHandler(handler)
    return [handler]


def detach_logging(handlers: list[logging.Handler]) -> None:
    for name in _LOGGERS:
        for h in handlers:
            logging.getLogger(name).removeHandler(h)
    for h in handlers:
        h.close()


def url_of(settings: ServerSettings, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in str(host) else str(host)
    return f"{'https' if settings.tls else 'http'}://{shown}:{port}"


class _QuietServer(uvicorn.Server):
    """A second listener in the same loop: the main server owns the signals and tells it
    when to stop."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _uvicorn_config(app: Any, **extra: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        # Our own access log (JSON, route templates, no query strings) replaces uvicorn's.
        access_log=False,
        log_config=None,
        server_header=False,
        # No lifespan events: the runtime is built before and closed after serving.
        lifespan="off",
        timeout_graceful_shutdown=10,
        **extra,
    )


def serve(
    runtime: Runtime,
    settings: ServerSettings,
    *,
    announce: Callable[[str], None],
) -> None:
    """Serve until SIGTERM or SIGINT, then finish the requests in flight and return."""
    runtime.ensure_initialised()
    check_tls(settings)
    app = create_app(runtime, settings)
    epochs: EpochWatcher = app.state.epochs
    sock = bind(settings.host, settings.port)
    server = _Server(
        _uvicorn_config(
            app,
            ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
            ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        )
    )
    agent_sock: socket.socket | None = None
    agent_server: uvicorn.Server | None = None
    sweeper: Any = None
    embedded: Any = None
    try:
        if settings.agent_port is not None:
            # Imported here: the agent side (HPKE, the CA, reports, Run As health) is not
            # needed by a server that does not accept agents.
            from runas.server.agent_app import create_agent_app
            from runas.server.agent_listener import prepare_tls, ssl_options
            from runas.server.unchanged_polls import UnchangedPolls
            from runas.services.run_as_health import HealthSweeper

            files = prepare_tls(
                runtime,
                runtime.settings.data_dir / "agent-listener",
                hostnames=settings.resolved_agent_hostnames,
            )
            agent_app = create_agent_app(
                runtime,
                settings,
                epochs=epochs,
                metrics=app.state.metrics,
                memory=app.state.resolution,
            )
            agent_sock = bind(settings.agent_host or settings.host, settings.agent_port)
            agent_server = _QuietServer(
                # Agents keep their connection between polls (runas.agent.client.KEEPALIVE_S).
                _uvicorn_config(
                    # unchanged polls answered before the framework (server/unchanged_polls.py)
                    UnchangedPolls(
                        agent_app,
                        identities=agent_app.state.identities,
                        epochs=epochs,
                        configs=agent_app.state.configs,
                        metrics=app.state.metrics,
                    ),
                    timeout_keep_alive=120,
                    **ssl_options(files),
                )
            )
            sweeper = HealthSweeper(
                runtime,
                interval_s=settings.health_interval,
                grace=timedelta(seconds=settings.credentials_grace),
                event_retention=timedelta(seconds=settings.event_retention),
                # configuration roll-outs first: the sweep waits while agents fetch a change
                yield_to=agent_app.state.deliveries.busy,
            )
        # Everything built so far lives as long as the process: keep it out of the
        # collector's full passes, which would otherwise walk it again and again while
        # requests wait.
        gc.collect()
        gc.freeze()
        epochs.start()
        if sweeper is not None:
            sweeper.start()
        announce(f"runas server listening on {url_of(settings, sock)}")
        if agent_sock is not None:
            host, port = agent_sock.getsockname()[:2]
            announce(f"runas agent listener on https://{host}:{port}")
            if settings.embedded_agent:
                from runas.server.embedded_agent import EmbeddedAgent

                # It connects once the loop below serves; until then it retries.
                embedded = EmbeddedAgent(
                    runtime,
                    name=settings.resolved_computer_name,
                    agent_url=f"https://localhost:{port}",
                    ca_file=runtime.settings.data_dir / "agent-listener" / "agent-ca.pem",
                    data_dir=runtime.settings.data_dir / "server-agent",
                    poll_interval=5.0,
                )
                embedded.start()
        asyncio.run(_serve_all(server, sock, agent_server, agent_sock))
    finally:
        if embedded is not None:
            embedded.stop()
        if sweeper is not None:
            sweeper.stop()
        epochs.stop()
        sock.close()
        if agent_sock is not None:
            agent_sock.close()
        runtime.close()


async def _serve_all(
    server: uvicorn.Server,
    sock: socket.socket,
    agent_server: uvicorn.Server | None,
    agent_sock: socket.socket | None,
) -> None:
    if agent_server is None or agent_sock is None:
        await server.serve(sockets=[sock])
        return
    agents = asyncio.create_task(agent_server.serve(sockets=[agent_sock]))
    try:
        await server.serve(sockets=[sock])
    finally:
        agent_server.should_exit = True
        await agents
