"""What a process builds once at start-up: database, keyring source, clock, actor.

Services receive a :class:`UnitOfWork` (one session = one transaction) instead of reaching
for globals. The CLI builds one :class:`Runtime` per invocation; the server will build one per
process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from runas.crypto.keyring import Keyring, KeyringSource, locate_keyring
from runas.errors import ConfigurationError
from runas.services.lookup import EPOCH_WRITTEN
from runas.settings import Settings
from runas.storage import migrate
from runas.storage.database import Database

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class UnitOfWork:
    """One transaction: everything a service changes commits together or not at all."""

    session: Session
    actor: str
    now: datetime
    #: where the request came from: "local" for the CLI on this host, else the client address
    source: str
    _keyring: Callable[[], Keyring] = field(repr=False)
    _keyring_source: Callable[[], KeyringSource] = field(repr=False)

    def keyring(self) -> Keyring:
        return self._keyring()

    def keyring_source(self) -> KeyringSource:
        return self._keyring_source()


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        env: Mapping[str, str] | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.clock = clock
        self._database: Database | None = None
        self._keyring: Keyring | None = None
        self._checked = False
        self._epoch_listeners: list[Callable[[int], None]] = []

    def on_epoch(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(epoch)`` after each unit of work of this runtime that committed a
        new resolution epoch: a server learns of its own changes at once, before any poll."""
        self._epoch_listeners.append(listener)

    @property
    def actor(self) -> str:
        return self.settings.resolved_actor

    @property
    def database(self) -> Database:
        if self._database is None:
            database = Database(self.settings.resolved_database_url)
            # Fail here with one line ("cannot connect to database …", password masked)
            # rather than deep inside the first query.
            database.check_connection()
            self._database = database
        return self._database

    def keyring_source(self) -> KeyringSource:
        return locate_keyring(path=self.settings.resolved_keyring_file, env=self.env)

    def keyring(self) -> Keyring:
        if self._keyring is None:
            self._keyring = self.keyring_source().load()
        return self._keyring

    def forget_keyring(self) -> None:
        """Drop the cached keyring (after rotation wrote a new one)."""
        self._keyring = None

    def ensure_initialised(self) -> None:
        """Refuse to work on a database that was never initialised or is not at this
        version's schema, with a message that says what to run."""
        if self._checked:
            return
        url = self.settings.resolved_database_url
        if url.startswith("sqlite:///") and not os.path.exists(url.removeprefix("sqlite:///")):
            raise ConfigurationError(
                f"no management group in {self.settings.data_dir}: run 'runas init' first"
            )
        if migrate.current_revision(self.database) is None:
            raise ConfigurationError("the database is not initialised: run 'runas init' first")
        if not migrate.is_at_head(self.database):
            raise ConfigurationError(
                "the database schema is older than this version of runas: run 'runas db upgrade'"
            )
        self._checked = True

    @contextmanager
    def unit_of_work(
        self, *, actor: str | None = None, source: str = "local", read_only: bool = False
    ) -> Iterator[UnitOfWork]:
        """One transaction. The server passes the authenticated user and the client address;
        the CLI in local mode acts as the configured actor from "local". ``read_only``: the
        work only reads (see ``Database.session``)."""
        self.ensure_initialised()
        with self.database.session(read_only=read_only) as session:
            yield UnitOfWork(
                session=session,
                actor=actor or self.actor,
                now=self.clock(),
                source=source,
                _keyring=self.keyring,
                _keyring_source=self.keyring_source,
            )
        written = session.info.get(EPOCH_WRITTEN)
        if written is not None:
            for listener in self._epoch_listeners:
                listener(int(written))

    def close(self) -> None:
        if self._database is not None:
            self._database.dispose()
            self._database = None
