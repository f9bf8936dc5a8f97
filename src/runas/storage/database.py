"""The connection to the operational database: one :class:`Database` per process, built at
start-up from a URL and passed to whoever needs it (no module-level engine).

Two backends are supported:

* **SQLite** (``sqlite:///path/runas.db``, see :func:`sqlite_url_for`) for a single-server
  management group. Every connection enforces foreign keys, uses the WAL journal and waits up to
  5 s for a lock.
* **PostgreSQL** through psycopg 3. ``postgresql://`` and ``postgres://`` URLs are rewritten to
  ``postgresql+psycopg://``.

A URL that cannot be used raises :class:`~runas.errors.ConfigurationError`; the password in the
URL is never shown (see :func:`mask_url`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from runas.errors import ConfigurationError

SQLITE_FILENAME = "runas.db"
#: How long a SQLite connection waits for another writer before "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 5000
#: execution option of the engine behind read-only sessions
_READ_ONLY = "runas_read_only"

_SUPPORTED = "use sqlite:///<path> or postgresql://user@host/dbname"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PASSWORD_IN_QUERY = re.compile(r"(?P<head>[?&]password=)[^&#]*", re.IGNORECASE)


def sqlite_url_for(data_dir: Path) -> str:
    """The URL of the SQLite database kept in ``data_dir`` (the file ``runas.db``)."""
    path = (Path(data_dir) / SQLITE_FILENAME).resolve()
    return URL.create("sqlite+pysqlite", database=str(path)).render_as_string()


def mask_url(url: str | URL) -> str:
    """``url`` fit to show a person: the password, in the authority or in the query, is ``***``.

    A string that does not parse as a URL is shown as its scheme only (``"bad://…"``): where its
    password would be cannot be told.
    """
    if isinstance(url, URL):
        text_ = url.render_as_string(hide_password=True)
    else:
        try:
            text_ = make_url(url).render_as_string(hide_password=True)
        except (ArgumentError, ValueError):
            scheme = _SCHEME.match(url)
            return f"{scheme.group(0)}…" if scheme else "(not a URL)"
    return _PASSWORD_IN_QUERY.sub(r"\g<head>***", text_)


def _normalise(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigurationError(
            f"database URL {mask_url(url)!r} cannot be parsed ({_SUPPORTED})"
        ) from None
    # Read the names from the URL itself: URL.get_driver_name() imports the dialect.
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":  # the spelling of Heroku and libpq
        backend = "postgresql"
    if backend == "postgresql":
        if driver not in ("", "psycopg"):
            raise ConfigurationError(
                f"database URL {mask_url(parsed)!r}: driver {driver!r} is not supported"
                " (use postgresql:// or postgresql+psycopg://)"
            )
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise ConfigurationError(
                f"database URL {mask_url(parsed)!r}: driver {driver!r} is not supported"
                " (use sqlite:///<path>)"
            )
        return parsed
    raise ConfigurationError(
        f"database URL {mask_url(parsed)!r}: {backend!r} databases are not supported ({_SUPPORTED})"
    )


def _configure_sqlite(engine: Engine) -> None:
    """Per-connection settings, and transactions that SQLite itself begins and ends.

    pysqlite (Python < 3.12) begins transactions lazily, only before DML, and commits on its own
    before DDL: SAVEPOINTs and transactional DDL (migrations) would silently misbehave. The
    recipe from the SQLAlchemy SQLite dialect documentation turns that off and emits BEGIN
    ourselves. ``BEGIN IMMEDIATE`` takes the write lock when the transaction starts: a
    read-then-write transaction can then never fail half-way with SQLITE_BUSY because another
    connection wrote in between (busy_timeout does not help in that case), at the cost of
    serialising writing transactions, which suits the single-server deployments SQLite is
    meant for. A transaction opened read-only (``Database.session(read_only=True)``) begins
    deferred instead: in WAL mode readers never wait for the writer nor block it, and see one
    consistent snapshot from their first read.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # no implicit BEGIN/COMMIT from pysqlite
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # Durable across application crashes with WAL; an OS crash may lose the last commits.
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class Database:
    """The operational database: an engine and a session factory.

    ``Database.session()`` is the unit of work: one transaction, committed when the block ends,
    rolled back if it raises. Sessions do not expire objects on commit, so rows read inside the
    block can still be read (not lazily loaded) after it.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url: URL = _normalise(url)
        try:
            if self.url.get_backend_name() == "sqlite":
                # As many pooled connections as the server has worker threads (40) and then
                # some: a connection opened per request beyond the pool would run the PRAGMAs
                # and open the WAL again every time.
                engine = create_engine(self.url, echo=echo, pool_size=48, max_overflow=16)
                _configure_sqlite(engine)
            else:
                engine = create_engine(self.url, echo=echo, pool_pre_ping=True)
        except (ArgumentError, NoSuchModuleError, ImportError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"database URL {mask_url(self.url)!r} cannot be used: {_one_line(exc)}"
            ) from None
        self.engine: Engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_lock = threading.Lock() if self.backend == "sqlite" else None
        self._read_sessions = sessionmaker(
            engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False
        )

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.url.get_backend_name()

    @property
    def display_url(self) -> str:
        """The URL with its password masked: fit for logs and messages."""
        return mask_url(self.url)

    @contextmanager
    def session(self, *, read_only: bool = False) -> Iterator[Session]:
        """A session in one transaction: commit on success, rollback on exception.

        ``read_only`` promises that the transaction only reads. On SQLite it then does not take
        the write lock (see :func:`_configure_sqlite`); a write in it may fail with "database is
        locked" under contention. On PostgreSQL it changes nothing."""
        if read_only or self._write_lock is None:
            factory = self._read_sessions if read_only else self._sessions
            with factory() as session, session.begin():
                yield session
            return
        # SQLite has one writer at a time. Threads of this process queue here for it instead
        # of in SQLite's busy handler, which polls with sleeps of up to 100 ms (a p99 of
        # seconds under a few concurrent writers); other processes still wait in SQLite.
        with self._write_lock, self._sessions() as session, session.begin():
            yield session

    def check_connection(self) -> None:
        """Connect once; raise :class:`ConfigurationError` (one line, no password) if we cannot."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except DBAPIError as exc:
            reason = _one_line(exc.orig if exc.orig is not None else exc)
            if self.url.password:
                reason = reason.replace(str(self.url.password), "***")
            raise ConfigurationError(
                f"cannot connect to database {self.display_url}: {reason}"
            ) from None

    def dispose(self) -> None:
        """Close every pooled connection. The Database must not be used afterwards."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.display_url!r})"


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


__all__ = ["SQLITE_FILENAME", "Database", "mask_url", "sqlite_url_for"]
