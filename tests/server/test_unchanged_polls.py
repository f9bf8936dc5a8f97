"""Unchanged polls answered before the framework (server/unchanged_polls.py): exactly when the
agent app would answer 304, observed like any other request, and never otherwise."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from starlette.exceptions import StarletteDeprecationWarning

from runas.backend.local import LocalBackend
from runas.domain.accounts import DistributionMode
from runas.domain.model import TargetKind
from runas.runtime import Runtime
from runas.server.agent_app import create_agent_app
from runas.server.epochs import EpochWatcher
from runas.server.metrics import Metrics
from runas.server.middleware import ACCESS_LOGGER
from runas.server.settings import ServerSettings
from runas.server.unchanged_polls import CONFIG_PATH, UnchangedPolls
from runas.services import setup
from runas.services.accounts import AccountCreate, AccountUpdate
from runas.services.discovery import DiscoveryPayload
from runas.services.profiles import AssociateRequest
from runas.services.resolution_memory import ResolutionMemory
from runas.settings import Settings
from support.agent_asgi import CERT_HEADER, WithClientCertificate
from support.enrolling import FakeAgent, enrol_approved

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
A, B = "a.contoso.com", "b.contoso.com"


@dataclass
class Listener:
    backend: LocalBackend
    client: TestClient
    polls: UnchangedPolls
    metrics: Metrics
    epochs: EpochWatcher

    def get(self, agent: str, etag: str | None = None) -> Any:
        headers = {CERT_HEADER: agent}
        if etag is not None:
            headers["If-None-Match"] = etag
        return self.client.get(CONFIG_PATH, headers=headers)


@pytest.fixture
def listener(tmp_path: Path, sqlite_url: str) -> Iterator[Listener]:
    settings = Settings(data_dir=tmp_path / "runas-data", database_url=sqlite_url, actor="test")
    runtime = Runtime(settings, env={})
    setup.init(runtime, "MG1")
    backend = LocalBackend(runtime)
    backend.pack_import((EXAMPLES / "packs" / "contoso-sql.yaml").read_text(), "sql.yaml")
    payload = yaml.safe_load((EXAMPLES / "discovery" / "contoso-sql.yaml").read_text())
    backend.discovery_submit(DiscoveryPayload.model_validate(payload))
    backend.account_add(
        AccountCreate(
            name="sqlmon",
            type="windows",
            fields={"domain": "contoso.com", "user": "sqlmon"},
            secrets={"password": SecretStr("first-c4n4ry-pw")},
        )
    )
    backend.associate(
        AssociateRequest(
            profile="Contoso.SQL.MonitoringProfile",
            account="sqlmon",
            target_kind=TargetKind.ALL,
            target=None,
        )
    )
    backend.distribution_set("sqlmon", DistributionMode.LESS_SECURE, None, None, None)
    certificates = {name: enrol_approved(runtime, FakeAgent(name)) for name in (A, B)}
    epochs = EpochWatcher(runtime.database, interval=0.05)
    metrics = Metrics()
    app = create_agent_app(
        runtime, ServerSettings(), epochs=epochs, metrics=metrics, memory=ResolutionMemory()
    )
    polls = UnchangedPolls(
        app,
        identities=app.state.identities,
        epochs=epochs,
        configs=app.state.configs,
        metrics=metrics,
    )
    client = TestClient(WithClientCertificate(polls, certificates), raise_server_exceptions=False)
    epochs.start()
    try:
        with client:
            yield Listener(backend, client, polls, metrics, epochs)
    finally:
        epochs.stop()
        app.state.plaintexts.clear()
        runtime.close()


def requests_seen(metrics: Metrics, status: int) -> int:
    return metrics._requests[(CONFIG_PATH, "GET", status)]


def test_an_unchanged_poll_is_answered_as_the_app_would_and_observed(
    listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    first = listener.get(A)
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert listener.polls.answered == 0  # the first poll: the app builds it

    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        caplog.clear()  # only this poll's line (another test may have left the logger at INFO)
        again = listener.get(A, etag)
    assert again.status_code == 304
    assert again.headers["etag"] == etag
    assert again.content == b""
    assert listener.polls.answered == 1
    assert requests_seen(listener.metrics, 304) == 1
    (line,) = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    fields = line.fields  # type: ignore[attr-defined]
    assert (fields["route"], fields["status"], fields["actor"]) == (CONFIG_PATH, 304, f"agent:{A}")


def test_anything_else_goes_to_the_app(listener: Listener) -> None:
    etag = listener.get(A).headers["etag"]
    # another ETag than the one built: the app answers, with the configuration
    assert listener.get(A, '"0"').status_code == 200
    # no ETag, no certificate
    assert listener.get(A).status_code == 200
    assert listener.client.get(CONFIG_PATH, headers={"If-None-Match": etag}).status_code == 401
    # a certificate this listener has not identified yet (b's first poll, with a's ETag)
    assert listener.get(B, etag).status_code == 304  # the app identified it and answered
    assert listener.polls.answered == 0

    # a change: once the watcher sees the new epoch, the old ETag gets the new configuration
    before = listener.epochs.known()
    assert before is not None
    listener.backend.account_update(
        "sqlmon", AccountUpdate(secrets={"password": SecretStr("second-c4n4ry-pw")})
    )
    deadline = time.monotonic() + 10
    while (listener.epochs.known() or 0) <= before:
        assert time.monotonic() < deadline, "the watcher did not see the change"
        time.sleep(0.02)
    changed = listener.get(A, etag)
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert listener.polls.answered == 0
    assert listener.get(A, changed.headers["etag"]).status_code == 304
    assert listener.polls.answered == 1
