"""Group commit of what configuration deliveries leave behind.

Before a configuration leaves the agent listener, the use of every secret in its bundle must be
in the audit trail (``account:secret-use``) and the agent's last contact noted. One transaction
per delivery made those writes the serial part of a credential roll-out: after a password
change every agent fetches a configuration at once, and each waited for its own commit (the
audit chain's head lock, SQLite's single writer). :class:`DeliveryWriter` writes the deliveries
that are waiting in one transaction: the first caller to find no writer at work becomes the
writer and commits what has queued up — its own delivery and those that arrived meanwhile —
in batches until the queue is empty; every caller returns only once its own records are
committed, so the promise holds (nothing is sent before its audit record is durable).

A writer that finds no other delivery waiting commits at once, but in the middle of a
roll-out (a batch was committed less than :data:`FLOW_S` ago) it first lets the batch fill
for up to :data:`LINGER_S`: configurations are built two at a time (server/agent_app.py), so
without that pause each batch held one or two deliveries and every delivery paid a whole
transaction (the write lock, the audit chain's head, the commit) — a fifth of the server's
time in a roll-out. A lone delivery waits for nothing.

A batch that fails is retried one delivery at a time, so one bad delivery (an account removed
meanwhile, say) fails only its own request. Each record keeps its own actor and source.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from runas.runtime import Runtime, UnitOfWork
from runas.services import agent_config, agents
from runas.services.agent_config import BuiltConfig

#: deliveries per transaction at most (bounds a transaction's length and the writer's latency)
MAX_BATCH = 256
#: a roll-out is over once no configuration was delivered for this long
QUIET_S = 1.0
#: a batch committed less than this long ago means deliveries are flowing: let the next fill
FLOW_S = 0.1
#: how long a writer lets a batch fill while deliveries flow (each waiting delivery holds a
#: worker thread, so this stays short)
LINGER_S = 0.015


@dataclass
class _Delivery:
    built: BuiltConfig
    agent_id: str
    source: str
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class DeliveryWriter:
    """Thread-safe; :meth:`record` blocks until the delivery's records are committed."""

    def __init__(
        self, runtime: Runtime, *, max_batch: int = MAX_BATCH, linger_s: float = LINGER_S
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._runtime = runtime
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._lock = threading.Lock()
        self._filled = threading.Condition(self._lock)
        self._flowing_until = -float("inf")
        self._queue: list[_Delivery] = []
        self._writing = False
        #: batches committed and deliveries in them (for tests and metrics)
        self.batches = 0
        self.written = 0
        self._last = -float("inf")

    def record(self, built: BuiltConfig, agent_id: str, source: str) -> None:
        """Audit the secrets ``built`` carries and note the agent's contact; raises what the
        write raised when it could not be committed (the configuration must not be sent)."""
        item = _Delivery(built, agent_id, source)
        self._last = time.monotonic()
        with self._lock:
            self._queue.append(item)
            lead = not self._writing
            self._writing = True
            if len(self._queue) >= self._max_batch:
                self._filled.notify()
        if lead:
            self._write_queue()
        item.done.wait()
        if item.error is not None:
            raise item.error

    def busy(self, quiet_s: float = QUIET_S) -> bool:
        """Whether a configuration was delivered in the last ``quiet_s`` seconds: a roll-out
        is under way (the Run As health sweeper waits for it)."""
        return time.monotonic() - self._last < quiet_s

    def _write_queue(self) -> None:
        while True:
            with self._lock:
                if self._queue and self._linger_s > 0 and time.monotonic() < self._flowing_until:
                    # wait_for re-checks the predicate whenever record() notifies
                    self._filled.wait_for(
                        lambda: len(self._queue) >= self._max_batch, self._linger_s
                    )
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                if not batch:
                    self._writing = False
                    return
            try:
                self._write(batch)
            except Exception as err:
                if len(batch) == 1:
                    batch[0].error = err
                else:
                    for item in batch:
                        self._write_one(item)
            finally:
                for item in batch:
                    item.done.set()

    def _write_one(self, item: _Delivery) -> None:
        try:
            self._write([item])
        except Exception as err:
            item.error = err

    def _write(self, batch: list[_Delivery]) -> None:
        first = batch[0]
        with self._runtime.unit_of_work(
            actor=f"agent:{first.agent_id}", source=first.source
        ) as uow:
            notes: list[tuple[str, datetime, str, int]] = []
            for item in batch:
                _record(uow, item, notes)
            agents.touch_many(uow.session, notes)
        with self._lock:
            self.batches += 1
            self.written += len(batch)
            self._flowing_until = time.monotonic() + FLOW_S


def _record(uow: UnitOfWork, item: _Delivery, notes: list[tuple[str, datetime, str, int]]) -> None:
    # each audit record names its own agent and address, as its own transaction would have
    uow.actor = f"agent:{item.agent_id}"
    uow.source = item.source
    agent_config.record_delivery(uow, item.built)
    epoch = item.built.epoch
    seen = item.built.seen
    if seen is None:
        agents.touch(uow.session, item.agent_id, now=uow.now, source=item.source, epoch=epoch)
    elif agents.needs_touch(seen, uow.now, item.source, epoch):
        # the agent's last contact as the build read it: no need to read it again; noted
        # with the batch's other agents in one statement
        notes.append((item.agent_id, uow.now, item.source, epoch))


__all__ = ["LINGER_S", "MAX_BATCH", "DeliveryWriter"]
