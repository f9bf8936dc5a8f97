"""The ``sql`` probe: log on to PostgreSQL with the workflow's Run As account, run one
read-only query, and turn its first row into a state and performance data (docs/probes/sql.md).

How the credential is handed over: the user name and password go to psycopg 3 as keyword
arguments of ``psycopg.connect`` (never a conninfo string, never ``PGPASSWORD``), so they
live only in this process's memory and in libpq's connection object. libpq answers the
server's SCRAM-SHA-256 challenge with them: the password itself never crosses the wire.
``require_auth`` (default ``scram-sha-256``) makes libpq refuse a server that asks for the
password in clear text or as MD5, so an impostor listening on the port cannot collect it.
``passfile`` points at ``/dev/null`` so that no ``~/.pgpass`` is ever consulted.

Account types: ``simple`` and ``basic`` (user + password) and ``windows``, of which only the
user part is used: PostgreSQL roles have no domain.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from runas.agent.probes.base import ProbeContext
from runas.agent.probes.result import (
    ProbeResult,
    ProbeState,
    logon_failed,
    unknown,
)
from runas.agent.scrub import Scrubber
from runas.errors import InvalidInput

DEFAULT_PORT = 5432
DEFAULT_DATABASE = "postgres"
DEFAULT_QUERY = "SELECT 1 AS up"
DEFAULT_REQUIRE_AUTH = "scram-sha-256"
#: rows read from the result at most (the count is reported as perf ``rows``)
MAX_ROWS = 1000
#: longest message taken from the query's ``message`` column or the server's error text
MESSAGE_LIMIT = 300
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
#: SQLSTATEs that mean the server refused the credential (class 28, invalid authorization)
AUTH_SQLSTATES = frozenset({"28P01", "28000"})
#: libpq does not expose the SQLSTATE of a failed connection (only its text), so a refused
#: logon is recognised by the server's own messages for SQLSTATE 28P01 and 28000, and a missing
#: CONNECT privilege by 42501's (PostgreSQL's English texts: a server with a translated
#: ``lc_messages`` gives ``unknown`` instead)
_CONNECTION_SQLSTATES = (
    (re.compile(r"\bpassword authentication failed for user\b"), "28P01"),
    (
        re.compile(
            r"\bauthentication failed for user\b|\bno pg_hba\.conf entry for\b"
            r"|\bpg_hba\.conf rejects connection\b|\bis not permitted to log in\b"
            r'|\brole "[^"]*" does not exist\b'
        ),
        "28000",
    ),
    # Authenticated, but without CONNECT on the database: the credential itself works.
    (re.compile(r"\bpermission denied for database\b"), "42501"),
)
_CONNECTION_PREFIX = re.compile(
    r"^(connection (failed|is bad):\s*)?(connection to server at .*?, port \d+ failed:\s*)?"
)
#: SQLSTATE of a statement cancelled by statement_timeout
QUERY_CANCELED = "57014"
INSUFFICIENT_PRIVILEGE = "42501"
#: the share of the run's timeout the connection may take (the query gets what is left)
CONNECT_SHARE = 0.6
ACCOUNT_TYPES = ("simple", "basic", "windows")
_CONFIG_KEYS = frozenset(
    {"host", "port", "database", "query", "sslmode", "require_auth", "thresholds", "empty_state"}
)
_STATE_WORDS = {
    "healthy": ProbeState.HEALTHY,
    "ok": ProbeState.HEALTHY,
    "warning": ProbeState.WARNING,
    "critical": ProbeState.CRITICAL,
    "unknown": ProbeState.UNKNOWN,
}
_SEVERITY = {
    ProbeState.HEALTHY: 0,
    ProbeState.WARNING: 1,
    ProbeState.CRITICAL: 2,
    ProbeState.UNKNOWN: 3,
}


@dataclass(frozen=True)
class Threshold:
    """``warning``/``critical`` limits of one column; ``above``: a value at or over the limit
    is bad (the default), ``below``: at or under."""

    column: str
    warning: float | None
    critical: float | None
    direction: str = "above"

    def state(self, value: float) -> ProbeState:
        def crossed(limit: float | None) -> bool:
            if limit is None:
                return False
            return value >= limit if self.direction == "above" else value <= limit

        if crossed(self.critical):
            return ProbeState.CRITICAL
        if crossed(self.warning):
            return ProbeState.WARNING
        return ProbeState.HEALTHY


@dataclass(frozen=True)
class SqlConfig:
    host: str
    port: int
    database: str
    query: str
    sslmode: str | None
    require_auth: str
    thresholds: tuple[Threshold, ...]
    empty_state: ProbeState

    @property
    def where(self) -> str:
        return f"PostgreSQL at {self.host}:{self.port}"


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{what} must be a number")
    return float(value)


def _thresholds(value: Any) -> tuple[Threshold, ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise InvalidInput("sql probe: 'thresholds' must map column names to limits")
    out: list[Threshold] = []
    for column, limits in value.items():
        what = f"sql probe: threshold of column {column!r}"
        if not isinstance(limits, Mapping) or set(limits) - {"warning", "critical", "direction"}:
            raise InvalidInput(f"{what} takes 'warning', 'critical' and 'direction'")
        direction = limits.get("direction", "above")
        if direction not in ("above", "below"):
            raise InvalidInput(f"{what}: 'direction' must be 'above' or 'below'")
        warning = limits.get("warning")
        critical = limits.get("critical")
        if warning is None and critical is None:
            raise InvalidInput(f"{what} needs 'warning' or 'critical'")
        out.append(
            Threshold(
                str(column),
                None if warning is None else _number(warning, f"{what}: 'warning'"),
                None if critical is None else _number(critical, f"{what}: 'critical'"),
                direction,
            )
        )
    return tuple(out)


def parse_config(config: Mapping[str, Any]) -> SqlConfig:
    """The probe's configuration, checked; InvalidInput names the key that is wrong."""
    unknown_keys = sorted(set(config) - _CONFIG_KEYS)
    if unknown_keys:
        raise InvalidInput(
            f"sql probe: unknown config key {', '.join(map(repr, unknown_keys))} "
            f"(known: {', '.join(sorted(_CONFIG_KEYS))})"
        )
    host = config.get("host")
    if not isinstance(host, str) or not host.strip():
        raise InvalidInput("sql probe: 'host' is required (a host name or address)")
    raw_port = config.get("port", DEFAULT_PORT)
    try:
        port = int(str(raw_port).strip())
    except ValueError:
        raise InvalidInput("sql probe: 'port' must be a whole number") from None
    if not 0 < port < 65536:
        raise InvalidInput("sql probe: 'port' must be between 1 and 65535")
    database = config.get("database", DEFAULT_DATABASE)
    query = config.get("query", DEFAULT_QUERY)
    for name, text in (("database", database), ("query", query)):
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(f"sql probe: {name!r} must be a non-empty string")
    sslmode = config.get("sslmode")
    if sslmode is not None and sslmode not in SSL_MODES:
        raise InvalidInput(f"sql probe: 'sslmode' must be one of: {', '.join(SSL_MODES)}")
    require_auth = config.get("require_auth", DEFAULT_REQUIRE_AUTH)
    if not isinstance(require_auth, str) or not require_auth.strip():
        raise InvalidInput("sql probe: 'require_auth' must be a libpq require_auth list")
    empty = config.get("empty_state", "healthy")
    if empty not in _STATE_WORDS:
        raise InvalidInput(
            "sql probe: 'empty_state' must be one of: healthy, warning, critical, unknown"
        )
    return SqlConfig(
        host=host.strip(),
        port=port,
        database=database,
        query=query,
        sslmode=sslmode,
        require_auth=require_auth.strip(),
        thresholds=_thresholds(config.get("thresholds")),
        empty_state=_STATE_WORDS[empty],
    )


# -- results ----------------------------------------------------------------------------------


def _worst(states: Sequence[ProbeState]) -> ProbeState:
    return max(states, key=_SEVERITY.__getitem__, default=ProbeState.HEALTHY)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def evaluate(
    config: SqlConfig, columns: Sequence[str], rows: Sequence[Sequence[Any]], more: bool
) -> tuple[ProbeState, str, dict[str, float]]:
    """State, message and perf of a query result: the first row's numeric columns are perf,
    ``thresholds`` classify them, a ``state`` column (healthy/ok, warning, critical, unknown)
    and a ``message`` column are taken as given; the worst state wins."""
    count = len(rows)
    perf: dict[str, float] = {}
    states: list[ProbeState] = []
    notes: list[str] = []
    given_message: str | None = None
    first = dict(zip(columns, rows[0], strict=False)) if rows else {}
    for name, value in first.items():
        number = _as_number(value)
        if number is not None and name not in ("state", "message"):
            perf[name] = number
    if "rows" not in perf:
        perf["rows"] = float(count)
    if not rows:
        states.append(config.empty_state)
        notes.append("the query returned no rows")
    else:
        if "state" in first:
            word = str(first["state"]).strip().lower()
            if word in _STATE_WORDS:
                states.append(_STATE_WORDS[word])
            else:
                states.append(ProbeState.UNKNOWN)
                notes.append("the 'state' column is not healthy, ok, warning, critical or unknown")
        if first.get("message") is not None:
            given_message = _cut(str(first["message"]))
    for threshold in config.thresholds:
        if threshold.column not in perf:
            if rows:  # an empty result has nothing to compare (empty_state decides)
                states.append(ProbeState.UNKNOWN)
                notes.append(f"threshold column {threshold.column!r} is not a number in the result")
            continue
        value = perf[threshold.column]
        state = threshold.state(value)
        states.append(state)
        if state is not ProbeState.HEALTHY:
            limit = threshold.critical if state is ProbeState.CRITICAL else threshold.warning
            sign = ">=" if threshold.direction == "above" else "<="
            notes.append(f"{threshold.column} {value:g} {sign} {state.value} {limit:g}")
    state = _worst(states)
    if given_message is not None:
        message = given_message
    else:
        shown = ", ".join(f"{k}={v:g}" for k, v in list(perf.items())[:8] if k != "rows")
        rows_text = f"{count}{'+' if more else ''} row{'s' if count != 1 or more else ''}"
        message = f"{config.where}/{config.database}: {rows_text}" + (f"; {shown}" if shown else "")
    if notes:
        message += " (" + "; ".join(notes) + ")"
    return state, message, perf


# -- the probe --------------------------------------------------------------------------------


def _user_and_password(document: Mapping[str, Any]) -> tuple[str, str] | str:
    """(user, password) from the credential document, or why there is none."""
    kind = document.get("type")
    if kind not in ACCOUNT_TYPES:
        if kind == "none":
            return (
                "the sql probe needs a Run As account (simple, basic or windows); "
                "this workflow has none"
            )
        return f"the sql probe cannot use a {kind} account (only simple, basic, windows)"
    fields = document.get("fields", {})
    user = fields.get("user")
    password = fields.get("password")
    if not isinstance(user, str) or not user or not isinstance(password, str):
        return f"the {kind} account has no user name or no password"
    # A windows account's domain has no meaning to PostgreSQL: its roles are not in a domain.
    return user, password


def _server_text(err: Exception, guard: Scrubber) -> str:
    """The server's (or libpq's) first line about ``err``, scrubbed of the run's secrets: the
    server never echoes a password, but a message is no place to find out it did."""
    diag = getattr(err, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else type(err).__name__
    # libpq's 'connection failed: connection to server at "h", port p failed: <why>': the
    # probe's own message names the server already, so keep <why> (and the server's words).
    line = _CONNECTION_PREFIX.sub("", line).replace("FATAL:  ", "").strip() or line
    return _cut(guard.scrub(line)[0])


def _connection_sqlstate(text: str) -> str | None:
    """The SQLSTATE (28P01, 28000 or 42501) of a connection the server refused, from libpq's
    text of a failed connection; None for anything else. Only the server's FATAL message
    counts, never libpq's own (a ``require_auth`` refusal is the probe's policy, not the
    credential's)."""
    for line in text.splitlines():
        _, fatal, message = line.partition("FATAL:")
        if not fatal:
            continue
        for pattern, sqlstate in _CONNECTION_SQLSTATES:
            if pattern.search(message):
                return sqlstate
    return None


def _connect_timeout(seconds: float) -> int:
    # Most of the run's time, leaving the rest to the query; libpq takes whole seconds and
    # treats anything under 2 as 2.
    return max(2, math.floor(seconds * CONNECT_SHARE))


class SqlProbe:
    """The ``sql`` probe in the registry's shape (:mod:`runas.agent.probes.base`)."""

    type = "sql"

    def run(self, context: ProbeContext) -> ProbeResult:
        start = time.monotonic()
        config = parse_config(context.config)
        credential = _user_and_password(context.document.to_dict())
        if isinstance(credential, str):
            return unknown(credential)
        user, password = credential
        guard = Scrubber(context.document.secret_values())

        def spent() -> float:
            return time.monotonic() - start

        if not password:
            # libpq would then read a password file; PostgreSQL refuses empty passwords anyway.
            return logon_failed(
                f"cannot log on user {user!r} to {config.where}: the account's password is empty",
                duration_s=spent(),
            )
        # Imported on first use: an agent without sql workflows never loads libpq.
        import psycopg

        statement_ms = max(1, int(context.timeout_s * 1000 * 0.8))
        options = f"-c default_transaction_read_only=on -c statement_timeout={statement_ms}"
        try:
            conn = psycopg.connect(
                host=config.host,
                port=config.port,
                dbname=config.database,
                user=user,
                password=password,
                passfile=os.devnull,
                require_auth=config.require_auth,
                connect_timeout=_connect_timeout(context.timeout_s),
                options=options,
                application_name="runas-sql-probe",
                # No Kerberos: the credential is a password (and no GSSAPI negotiation delay).
                gssencmode="disable",
                sslmode=config.sslmode,  # None: libpq's default (prefer)
            )
        except psycopg.OperationalError as err:
            return self._connect_failed(err, config, user, guard, spent())
        except psycopg.Error as err:
            return unknown(
                f"cannot connect to {config.where}: {_server_text(err, guard)}",
                duration_s=spent(),
            )
        try:
            with conn:
                return self._query(conn, config, guard, start, context.timeout_s)
        except psycopg.Error as err:
            # Closing a broken connection can fail too; the run still proved the logon.
            return unknown(f"{config.where}: {_server_text(err, guard)}", duration_s=spent())

    @staticmethod
    def _connect_failed(
        err: Exception, config: SqlConfig, user: str, guard: Scrubber, duration_s: float
    ) -> ProbeResult:
        sqlstate = getattr(err, "sqlstate", None) or _connection_sqlstate(str(err))
        reason = _server_text(err, guard)
        if sqlstate in AUTH_SQLSTATES:
            return logon_failed(
                f"{config.where} refused the logon of user {user!r} "
                f"(SQLSTATE {sqlstate}: {reason})",
                duration_s=duration_s,
            )
        if sqlstate == INSUFFICIENT_PRIVILEGE:
            # Authenticated, but not allowed into this database: the credential works.
            return ProbeResult(
                ProbeState.CRITICAL,
                f"user {user!r} logged on to {config.where} but may not connect to database "
                f"{config.database!r}: {reason}",
                None,
                duration_s=duration_s,
            )
        if sqlstate:
            return unknown(
                f"{config.where} refused the connection (SQLSTATE {sqlstate}: {reason})",
                duration_s=duration_s,
            )
        if "FATAL:" in str(err):
            # The server answered and refused for a reason other than the credential
            # (database missing, too many connections, starting up).
            return unknown(
                f"{config.where} refused the connection: {reason}", duration_s=duration_s
            )
        return unknown(f"cannot reach {config.where}: {reason}", duration_s=duration_s)

    @staticmethod
    def _query(
        conn: Any, config: SqlConfig, guard: Scrubber, start: float, timeout_s: float
    ) -> ProbeResult:
        import psycopg

        def spent() -> float:
            return time.monotonic() - start

        # What the connection left of the run's time, for the query (at least 100 ms).
        statement_ms = max(100, int((timeout_s - spent()) * 1000 * 0.9))
        try:
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION READ ONLY")
                cur.execute(f"SET LOCAL statement_timeout = {statement_ms}".encode())
                # binary=True: the extended protocol, which runs exactly one statement, so a
                # query cannot switch the transaction back to read-write before its own work.
                cur.execute(config.query.encode(), binary=True)
                if cur.description is None:
                    return unknown(
                        f"{config.where}: the query returned no result set", duration_s=spent()
                    )
                columns = [column.name for column in cur.description]
                fetched = cur.fetchmany(MAX_ROWS + 1)
            conn.rollback()  # read-only anyway; nothing of the run is kept
        except psycopg.Error as err:
            sqlstate = getattr(err, "sqlstate", None)
            reason = _server_text(err, guard)
            if sqlstate == QUERY_CANCELED:
                return unknown(
                    f"{config.where}: the query was cancelled by the statement timeout",
                    duration_s=spent(),
                )
            if sqlstate == INSUFFICIENT_PRIVILEGE:
                return ProbeResult(
                    ProbeState.CRITICAL,
                    f"{config.where}: the account lacks a privilege the query needs: {reason}",
                    None,
                    duration_s=spent(),
                )
            return unknown(
                f"{config.where}: the query failed (SQLSTATE {sqlstate or '-'}: {reason})",
                duration_s=spent(),
            )
        more = len(fetched) > MAX_ROWS
        rows = fetched[:MAX_ROWS]
        state, message, perf = evaluate(config, columns, rows, more)
        message = guard.scrub(message)[0]
        return ProbeResult(state, message, None, perf=perf, duration_s=spent())


PROBE = SqlProbe()

__all__ = ["PROBE", "SqlConfig", "SqlProbe", "Threshold", "evaluate", "parse_config"]
