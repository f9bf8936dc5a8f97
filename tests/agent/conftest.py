"""Fixtures of the agent's tests: a real CA (:func:`pki`) and real HTTPS servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from support.agent_https import HttpsServer, Pki, Respond, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def https_servers(pki: Pki) -> Iterator[Callable[..., HttpsServer]]:
    """Start HTTPS servers: ``start(respond, require_cert=True)``; all stopped at the end."""
    started: list[HttpsServer] = []

    def start(respond: Respond, *, require_cert: bool = True) -> HttpsServer:
        server = HttpsServer(pki, respond, require_cert)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
