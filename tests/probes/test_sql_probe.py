"""The ``sql`` probe in-process against a real PostgreSQL 15 that wants SCRAM-SHA-256 over TCP
(tests/support/peers/postgresql.py): every account type it accepts logs on, a wrong or refused
credential is a typed logon failure, an unreachable server is unknown, thresholds and the
``state``/``message`` columns classify, the query runs read-only and within the timeout, and
the canary password is in no result and no log line."""

from __future__ import annotations

import json
import logging
import secrets
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from psycopg import sql

from runas.agent.handoff import NO_CREDENTIAL, CredentialDocument, credential_document
from runas.agent.probes.base import ProbeContext, probe_for
from runas.agent.probes.result import ProbeResult, ProbeState
from runas.agent.probes.sql import PROBE, parse_config
from runas.agent.scrub import MARKER, Scrubber
from runas.domain.health import AuthFailureKind
from runas.errors import InvalidInput
from support.peers import postgresql
from support.peers.postgresql import ScramPostgres

pytestmark = [pytest.mark.peer]

DATABASE = "appdb"


@pytest.fixture(scope="module")
def peer() -> Iterator[ScramPostgres]:
    with postgresql.running() as server:
        server.create_database(DATABASE)
        yield server


@pytest.fixture(scope="module")
def canary() -> str:
    return f"canary-{secrets.token_urlsafe(16)}"


@pytest.fixture(scope="module")
def role(peer: ScramPostgres, canary: str) -> str:
    return peer.create_role(canary, grants="pg_monitor")


def _document(kind: str, user: str, password: str) -> CredentialDocument:
    public = {"user": user}
    if kind == "windows":
        public["domain"] = "corp.example.com"
    return credential_document(
        kind, public, {"password": password}, account_name="pg monitor", account_id=7,
        secret_version=1,
    )  # fmt: skip


def _context(
    peer: ScramPostgres | None,
    document: CredentialDocument,
    *,
    port: int | None = None,
    timeout_s: float = 10.0,
    **config: Any,
) -> ProbeContext:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": str(port if port is not None else peer.port if peer else 1),
        "database": DATABASE,
    }
    base.update(config)
    return ProbeContext(
        workflow="Runas.PostgreSQL.Test",
        kind="monitor",
        object="Runas.PostgreSQL.Database:db.example.com;appdb",
        computer="db.example.com",
        config=base,
        raw_config=base,
        properties={},
        document=document,
        timeout_s=timeout_s,
        scrubber=Scrubber(document.secret_values()),
    )


def _run(context: ProbeContext) -> ProbeResult:
    return PROBE.run(context)


def _assert_clean(result: ProbeResult, *secrets_: str) -> None:
    text = json.dumps(result.to_dict())
    for secret in secrets_:
        assert secret not in text


def test_the_registry_finds_the_probe() -> None:
    assert probe_for("sql") is PROBE


@pytest.mark.parametrize("kind", ["simple", "basic", "windows"])
def test_every_account_type_logs_on(peer: ScramPostgres, role: str, canary: str, kind: str) -> None:
    result = _run(_context(peer, _document(kind, role, canary)))
    assert result.state is ProbeState.HEALTHY, result.message
    assert result.auth_failure is None
    assert result.perf == {"up": 1.0, "rows": 1.0}
    assert f"127.0.0.1:{peer.port}/{DATABASE}" in result.message
    _assert_clean(result, canary)


def test_a_wrong_password_is_a_logon_failure(
    peer: ScramPostgres, role: str, canary: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = f"canary-wrong-{secrets.token_urlsafe(16)}"
    result = _run(_context(peer, _document("basic", role, wrong)))
    assert result.state is ProbeState.CRITICAL
    assert result.auth_failure is not None
    assert result.auth_failure.kind is AuthFailureKind.LOGON_FAILED
    assert role in result.message
    assert f"127.0.0.1:{peer.port}" in result.message
    assert "28P01" in result.message
    _assert_clean(result, wrong, canary)
    assert wrong not in caplog.text
    assert canary not in caplog.text


def test_an_unknown_role_is_a_logon_failure(peer: ScramPostgres, canary: str) -> None:
    result = _run(_context(peer, _document("simple", "rtxnobody", canary)))
    assert result.auth_failure is not None
    assert "rtxnobody" in result.message


def test_a_role_that_may_not_log_in_is_a_logon_failure(peer: ScramPostgres) -> None:
    password = f"canary-{secrets.token_urlsafe(12)}"
    name = peer.create_role(password)
    peer.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(name)))
    result = _run(_context(peer, _document("simple", name, password)))
    assert result.auth_failure is not None
    assert result.auth_failure.kind is AuthFailureKind.LOGON_FAILED
    assert "28000" in result.message
    _assert_clean(result, password)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_an_unreachable_server_is_unknown(canary: str) -> None:
    result = _run(_context(None, _document("basic", "someone", canary), port=_free_port()))
    assert result.state is ProbeState.UNKNOWN
    assert result.auth_failure is None
    assert "cannot reach PostgreSQL at 127.0.0.1:" in result.message
    _assert_clean(result, canary)


def test_a_silent_server_times_out_as_unknown(canary: str) -> None:
    with socket.socket() as listener:  # accepts, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = _run(_context(None, _document("basic", "someone", canary), port=port,
                               timeout_s=1.0))  # fmt: skip
    assert result.state is ProbeState.UNKNOWN
    assert result.auth_failure is None
    assert "timeout" in result.message
    # libpq's floor for a connection timeout is 2 s (docs/probes/sql.md)
    assert result.duration_s < 3


def test_a_workflow_without_an_account_is_unknown(peer: ScramPostgres) -> None:
    result = _run(_context(peer, NO_CREDENTIAL))
    assert result.state is ProbeState.UNKNOWN
    assert "needs a Run As account" in result.message


QUERY = (
    "SELECT numbackends, xact_commit, 42.5::numeric AS ratio, 'x' AS label "
    "FROM pg_stat_database WHERE datname = current_database()"
)


def test_numeric_columns_become_perf(peer: ScramPostgres, role: str, canary: str) -> None:
    result = _run(_context(peer, _document("basic", role, canary), query=QUERY))
    assert result.state is ProbeState.HEALTHY, result.message
    assert set(result.perf) == {"numbackends", "xact_commit", "ratio", "rows"}
    assert result.perf["ratio"] == 42.5
    assert result.perf["numbackends"] >= 1  # this very connection


@pytest.mark.parametrize(
    ("limits", "state"),
    [
        ({"warning": 50, "critical": 60}, ProbeState.HEALTHY),
        ({"warning": 40, "critical": 60}, ProbeState.WARNING),
        ({"warning": 30, "critical": 40}, ProbeState.CRITICAL),
        ({"warning": 40, "critical": 30, "direction": "below"}, ProbeState.HEALTHY),
        ({"warning": 45, "critical": 40, "direction": "below"}, ProbeState.WARNING),
        ({"warning": 50, "critical": 43, "direction": "below"}, ProbeState.CRITICAL),
        ({"critical": 43, "direction": "below"}, ProbeState.CRITICAL),
    ],
)
def test_thresholds_classify(
    peer: ScramPostgres, role: str, canary: str, limits: Mapping[str, Any], state: ProbeState
) -> None:
    context = _context(peer, _document("basic", role, canary), query=QUERY,
                       thresholds={"ratio": dict(limits)})  # fmt: skip
    result = _run(context)
    assert result.state is state, result.message
    if state is not ProbeState.HEALTHY:
        assert f"ratio 42.5 {'>=' if 'direction' not in limits else '<='}" in result.message


def test_a_threshold_on_a_missing_column_is_unknown(
    peer: ScramPostgres, role: str, canary: str
) -> None:
    context = _context(peer, _document("basic", role, canary), thresholds={"nope": {"warning": 1}})
    result = _run(context)
    assert result.state is ProbeState.UNKNOWN
    assert "'nope'" in result.message


def test_state_and_message_columns(peer: ScramPostgres, role: str, canary: str) -> None:
    query = "SELECT 'warning' AS state, 'replica is 3 s behind' AS message, 3 AS lag_s"
    result = _run(_context(peer, _document("basic", role, canary), query=query))
    assert result.state is ProbeState.WARNING
    assert result.message == "replica is 3 s behind"
    assert result.perf == {"lag_s": 3.0, "rows": 1.0}


def test_an_empty_result_takes_empty_state(peer: ScramPostgres, role: str, canary: str) -> None:
    query = "SELECT 1 AS n WHERE false"
    healthy = _run(_context(peer, _document("basic", role, canary), query=query))
    assert healthy.state is ProbeState.HEALTHY
    assert healthy.perf == {"rows": 0.0}
    critical = _run(_context(peer, _document("basic", role, canary), query=query,
                             empty_state="critical"))  # fmt: skip
    assert critical.state is ProbeState.CRITICAL
    assert "no rows" in critical.message


@pytest.mark.parametrize(
    "query",
    [
        "CREATE TABLE rtx_written (i int)",
        "SET TRANSACTION READ WRITE; CREATE TABLE rtx_written (i int)",
        "SELECT set_config('default_transaction_read_only', 'off', false); "
        "CREATE TABLE rtx_written (i int)",
    ],
)
def test_the_query_runs_read_only(peer: ScramPostgres, role: str, canary: str, query: str) -> None:
    peer.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role)),
                 dbname=DATABASE)  # fmt: skip
    result = _run(_context(peer, _document("basic", role, canary), query=query))
    assert result.state is ProbeState.UNKNOWN, result.message
    assert result.auth_failure is None
    assert "the query failed" in result.message


def test_a_slow_query_is_cancelled_within_the_timeout(
    peer: ScramPostgres, role: str, canary: str
) -> None:
    context = _context(peer, _document("basic", role, canary), query="SELECT pg_sleep(30)",
                       timeout_s=1.5)  # fmt: skip
    result = _run(context)
    assert result.state is ProbeState.UNKNOWN
    assert "statement timeout" in result.message
    assert result.duration_s < 3


def test_a_missing_privilege_is_critical_not_a_logon_failure(
    peer: ScramPostgres, canary: str
) -> None:
    password = f"canary-{secrets.token_urlsafe(12)}"
    name = peer.create_role(password)
    peer.execute(sql.SQL("CREATE TABLE IF NOT EXISTS rtx_private (i int)"), dbname=DATABASE)
    context = _context(peer, _document("basic", name, password),
                       query="SELECT count(*) FROM rtx_private")  # fmt: skip
    result = _run(context)
    assert result.state is ProbeState.CRITICAL
    assert result.auth_failure is None
    assert "lacks a privilege" in result.message


def test_no_connect_privilege_is_critical_not_a_logon_failure(
    peer: ScramPostgres, role: str, canary: str
) -> None:
    peer.create_database("rtx_closed")
    peer.execute(sql.SQL("REVOKE CONNECT ON DATABASE rtx_closed FROM PUBLIC"))
    result = _run(_context(peer, _document("basic", role, canary), database="rtx_closed"))
    assert result.state is ProbeState.CRITICAL, result.message
    assert result.auth_failure is None
    assert "may not connect to database 'rtx_closed'" in result.message


def test_a_query_error_is_unknown_and_names_the_sqlstate(
    peer: ScramPostgres, role: str, canary: str
) -> None:
    result = _run(_context(peer, _document("basic", role, canary), query="SELEKT 1"))
    assert result.state is ProbeState.UNKNOWN
    assert "42601" in result.message


def test_a_missing_database_is_unknown(peer: ScramPostgres, role: str, canary: str) -> None:
    result = _run(_context(peer, _document("basic", role, canary), database="rtx_nowhere"))
    assert result.state is ProbeState.UNKNOWN
    assert result.auth_failure is None
    assert "does not exist" in result.message


def test_the_canary_is_in_no_result_and_no_log(
    peer: ScramPostgres, role: str, canary: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = f"SELECT '{canary}' AS message, '{canary}' AS state"
    results = [
        _run(_context(peer, _document("basic", role, canary), query=QUERY)),
        _run(_context(peer, _document("windows", role, canary), query="SELECT 1/0")),
        _run(_context(peer, _document("simple", role, canary + "x"))),
        _run(_context(None, _document("simple", role, canary), port=_free_port())),
        # A query that reads the password back: scrubbed before it leaves the probe.
        _run(_context(peer, _document("basic", role, canary), query=echo)),
    ]
    for result in results:
        _assert_clean(result, canary)
    assert MARKER in results[-1].message
    assert canary not in caplog.text


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({}, "'host' is required"),
        ({"host": "h", "port": "x"}, "'port' must be a whole number"),
        ({"host": "h", "sslmode": "maybe"}, "'sslmode'"),
        ({"host": "h", "thresholds": {"n": {"warning": "1"}}}, "must be a number"),
        ({"host": "h", "thresholds": {"n": {"direction": "up", "warning": 1}}}, "'direction'"),
        ({"host": "h", "thresholds": {"n": {}}}, "needs 'warning' or 'critical'"),
        ({"host": "h", "querry": "x"}, "unknown config key 'querry'"),
        ({"host": "h", "empty_state": "fine"}, "'empty_state'"),
    ],
)
def test_bad_configuration_is_refused(config: dict[str, Any], error: str) -> None:
    with pytest.raises(InvalidInput, match=error):
        parse_config(config)
