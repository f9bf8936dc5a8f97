"""What a server knows of the management group's resolution epoch, without asking the
database on every request.

Every change that can alter resolution bumps the epoch in its own transaction. A server
learns of a new epoch two ways:

* its own changes: the runtime calls :meth:`EpochWatcher.advance` as each such change
  commits (``Runtime.on_epoch``), so the next request through this server already sees it;
* everyone else's (another server on the same PostgreSQL database, the local CLI): a
  background thread reads the epoch every :data:`EPOCH_POLL_S` — a primary-key read of one
  row, in a read-only transaction that on SQLite takes no lock.

So a change made anywhere is seen by every server within one poll interval, well inside the
one second the management group promises. Until :meth:`start` runs (an app built by a test
without a server loop), :meth:`known` returns None and callers read the epoch in their own
transaction, as before: correct, only slower.
"""

from __future__ import annotations

import logging
import threading

from runas.services import lookup
from runas.storage.database import Database

#: how often a server reads the epoch that other processes may have bumped
EPOCH_POLL_S = 0.1

_log = logging.getLogger("runas.server.epochs")


class EpochWatcher:
    def __init__(self, database: Database, *, interval: float = EPOCH_POLL_S) -> None:
        self._database = database
        self._interval = interval
        self._lock = threading.Lock()
        self._epoch = -1
        self._running = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def known(self) -> int | None:
        """The newest epoch seen, or None while the watcher is not running (then nobody
        vouches for it, and the caller must read the epoch itself)."""
        return self._epoch if self._running else None

    def advance(self, epoch: int) -> None:
        """Record an epoch seen (never goes back: a poll that read an older value in a
        transaction begun before a commit must not undo what that commit announced)."""
        with self._lock:
            if epoch > self._epoch:
                self._epoch = epoch

    def poll(self) -> int:
        with self._database.session(read_only=True) as session:
            epoch = lookup.epoch(session)
        self.advance(epoch)
        return self._epoch

    def start(self) -> None:
        if self._thread is not None:
            return
        self.poll()  # fails loudly at start-up if the database cannot be read
        self._running = True
        self._thread = threading.Thread(target=self._run, name="runas-epoch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self._interval):
            try:
                self.poll()
            except Exception as exc:  # the loop must outlive a database outage
                # Stop vouching for an epoch we can no longer check: requests fall back to
                # reading it themselves (and fail with the database's own error).
                self._running = False
                if not failing:
                    _log.warning("cannot read the resolution epoch: %s", type(exc).__name__)
                failing = True
            else:
                self._running = True
                failing = False
