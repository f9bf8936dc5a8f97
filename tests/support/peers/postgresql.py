"""A throwaway PostgreSQL server that wants SCRAM-SHA-256 passwords over TCP, for the ``sql``
probe's tests.

It is :class:`support.postgres.PostgresCluster` (Debian's binaries, 127.0.0.1, a free high
port, its own directory under /dev/shm or /tmp, removed by ``stop()``) with its
``pg_hba.conf`` replaced: TCP connections from loopback must authenticate with
``scram-sha-256``; only the Unix socket in the cluster's own directory trusts the superuser,
which the fixture uses to create roles. A role's password is set the way ``psql``'s
``\\password`` does it: the SCRAM verifier is computed here (libpq's
``PQencryptPasswordConn``) and only the verifier is sent, so the password is in no statement,
no server log and no command line.

No OS user is needed: the server runs as Debian's ``postgres`` user (PostgreSQL refuses root),
and the probe's roles exist in the cluster only.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from support.postgres import SUPERUSER, PostgresCluster, PostgresUnavailable

_HBA = f"""\
# written by tests/support/peers/postgresql.py
local   all   {SUPERUSER}   trust
host    all   all           127.0.0.1/32   scram-sha-256
"""


class PeerUnavailable(RuntimeError):
    """The peer cannot be started; the message says why and how to get it."""


@dataclass
class ScramPostgres:
    cluster: PostgresCluster
    roles: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self.cluster.port

    def _admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        # The Unix socket in the cluster's directory: the one way in without a password.
        return psycopg.connect(
            host=str(self.cluster.base_dir), port=self.port, user=SUPERUSER, dbname=dbname,
            autocommit=True,
        )  # fmt: skip

    def execute(self, statement: sql.SQL | sql.Composed, dbname: str = "postgres") -> None:
        with self._admin(dbname) as conn:
            conn.execute(statement)

    def create_role(self, password: str, *, prefix: str = "rtx", grants: str = "") -> str:
        """A new login role with ``password`` (SCRAM verifier only); returns its name.
        ``grants``: role names it becomes a member of (e.g. ``pg_monitor``)."""
        name = f"{prefix}{secrets.token_hex(4)}"
        with self._admin() as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            verifier = conn.pgconn.encrypt_password(
                password.encode(), name.encode(), b"scram-sha-256"
            ).decode()
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(verifier)
                )
            )
            if grants:
                conn.execute(
                    sql.SQL("GRANT {} TO {}").format(sql.SQL(grants), sql.Identifier(name))
                )
        self.roles.append(name)
        return name

    def set_password(self, name: str, password: str) -> None:
        with self._admin() as conn:
            verifier = conn.pgconn.encrypt_password(
                password.encode(), name.encode(), b"scram-sha-256"
            ).decode()
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(verifier)
                )
            )

    def create_database(self, name: str) -> None:
        self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def stop(self) -> None:
        self.cluster.stop()


def start() -> ScramPostgres:
    try:
        cluster = PostgresCluster.start()
    except PostgresUnavailable as err:
        raise PeerUnavailable(
            "PostgreSQL (Debian package postgresql) is needed for the sql probe's tests; "
            f"./scripts/test installs it. ({str(err).splitlines()[0]})"
        ) from None
    peer = ScramPostgres(cluster)
    try:
        (cluster.data_dir / "pg_hba.conf").write_text(_HBA)
        with peer._admin() as conn:
            conn.execute("ALTER SYSTEM SET password_encryption = 'scram-sha-256'")
            conn.execute("SELECT pg_reload_conf()")
            # The reload is asynchronous: wait until the new rules answer a TCP logon.
        _wait_for_scram(peer)
    except BaseException:
        cluster.stop()
        raise
    return peer


def _wait_for_scram(peer: ScramPostgres) -> None:
    """Until the server asks a TCP client for a password (the trust rules are gone)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(
                host=peer.host, port=peer.port, user=SUPERUSER, dbname="postgres",
                password="-", passfile=os.devnull, connect_timeout=2, gssencmode="disable",
            ):  # fmt: skip
                pass
        except psycopg.OperationalError as err:
            # libpq gives a failed connection's text only, not its SQLSTATE (28P01).
            if "password authentication failed" in str(err):
                return
        if time.monotonic() > deadline:
            raise PeerUnavailable("PostgreSQL did not switch to scram-sha-256 within 30 s")
        time.sleep(0.05)


@contextmanager
def running() -> Iterator[ScramPostgres]:
    """A started peer, stopped and removed afterwards (also on failure)."""
    peer = start()
    try:
        yield peer
    finally:
        peer.stop()
