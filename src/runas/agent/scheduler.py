"""Runs the agent's workflows on their schedules.

Each (workflow, object) pair of the configuration is one *slot*. Its first run waits a
deterministic **spread**: ``spread_s`` times a fraction taken from SHA-256 of the agent id,
the workflow and the object — so a thousand agents restarted together do not all hit their
targets in the same second, and one agent's runs keep the same phase across restarts (unlike
a random delay). After that a slot is due every ``interval_s`` on a fixed grid (the start of
the previous run plus the interval, not its end, so runs do not drift); when the agent fell
behind (a suspended laptop, a busy pool) the missed beats are dropped, not caught up in a burst.

**Never two runs of one slot at once.** A slot is busy from the moment its run is handed to
the pool until the run returns; a beat that finds it busy is skipped and counted
(:attr:`Scheduler.skipped`). The pool (``max_workers`` threads) bounds how many workflows run
at the same time; each run's own timeout (the schedule's ``timeout_s``) is enforced by the
probe, which kills the program's whole process group.

**Reconfiguration** (:meth:`Scheduler.configure`) compares slots by key: a slot whose entry
is unchanged keeps its timing; a changed one takes the new entry (and a new first run if its
schedule changed); a dropped one is forgotten (a run in flight finishes, its result is still
reported); a new one starts with its spread. Only ``runs: true`` entries with a probe type
this agent has (``command``) get a slot; an unknown probe type is reported once per slot
through ``on_unavailable``.

Time is injectable: ``clock`` (monotonic seconds) and :meth:`Scheduler.tick`, which starts
whatever is due and returns when the next slot is due, let tests drive the scheduler without
sleeping; :meth:`Scheduler.run` is the loop the agent uses, waking on the next due time, on a
new configuration or on stop.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass

from runas.agent.config import WorkflowEntry
from runas.agent.probes.base import available as probe_available

UNAVAILABLE_MESSAGE = "probe type not available on this agent"
#: the longest the loop sleeps without looking at the clock (a clock that jumped, say)
MAX_WAIT_S = 60.0

_log = logging.getLogger("runas.agent.scheduler")

Key = tuple[str, str]


def spread_offset(agent_id: str, workflow: str, obj: str, spread_s: float) -> float:
    """The first-run delay of a slot: a stable fraction of ``spread_s`` in [0, spread_s)."""
    if spread_s <= 0:
        return 0.0
    digest = hashlib.sha256(f"{agent_id}\0{workflow}\0{obj}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * spread_s


@dataclass
class _Slot:
    entry: WorkflowEntry
    due: float


class Scheduler:
    """See the module docstring. ``run_entry`` is called in a pool thread for each run."""

    def __init__(
        self,
        agent_id: str,
        run_entry: Callable[[WorkflowEntry], None],
        *,
        max_workers: int = 8,
        clock: Callable[[], float] = time.monotonic,
        executor: Executor | None = None,
        on_unavailable: Callable[[WorkflowEntry], None] | None = None,
    ) -> None:
        self._agent_id = agent_id
        self._run_entry = run_entry
        self._clock = clock
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="runas-workflow"
        )
        self._on_unavailable = on_unavailable
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._slots: dict[Key, _Slot] = {}
        self._running: set[Key] = set()
        self._futures: set[Future[None]] = set()
        self._unavailable: set[Key] = set()
        #: beats skipped because the slot's previous run was still going, by slot
        self.skipped: dict[Key, int] = {}
        #: runs started, by slot
        self.started: dict[Key, int] = {}

    def __repr__(self) -> str:
        return f"Scheduler(slots={len(self._slots)}, running={len(self._running)})"

    # -- configuration ----------------------------------------------------------------------

    def configure(self, entries: Iterable[WorkflowEntry]) -> None:
        """Take a new configuration's entries (see the module docstring)."""
        now = self._clock()
        report: list[WorkflowEntry] = []
        with self._lock:
            wanted: dict[Key, WorkflowEntry] = {}
            unavailable: set[Key] = set()
            for entry in entries:
                if not entry.runs:
                    continue
                if not probe_available(entry.probe.type):
                    unavailable.add(entry.key)
                    if entry.key not in self._unavailable:
                        report.append(entry)
                    continue
                wanted[entry.key] = entry
            self._unavailable = unavailable
            for key in list(self._slots):
                if key not in wanted:
                    del self._slots[key]
            for key, entry in wanted.items():
                slot = self._slots.get(key)
                if slot is None or slot.entry.schedule != entry.schedule:
                    offset = spread_offset(self._agent_id, *key, entry.schedule.spread_s)
                    self._slots[key] = _Slot(entry, now + offset)
                else:
                    slot.entry = entry  # same timing, new details (account version, probe…)
        for entry in report:
            _log.warning(
                "agent.probe_unavailable",
                extra={"fields": {"workflow": entry.workflow, "probe": entry.probe.type}},
            )
            if self._on_unavailable is not None:
                self._on_unavailable(entry)
        self._wake.set()

    @property
    def keys(self) -> frozenset[Key]:
        with self._lock:
            return frozenset(self._slots)

    def running(self) -> frozenset[Key]:
        with self._lock:
            return frozenset(self._running)

    def due_at(self, key: Key) -> float | None:
        with self._lock:
            slot = self._slots.get(key)
            return slot.due if slot else None

    # -- running ----------------------------------------------------------------------------

    def tick(self) -> float | None:
        """Start every slot that is due; return when the next one is due (None: no slots)."""
        now = self._clock()
        start: list[WorkflowEntry] = []
        with self._lock:
            if self._stopped:
                return None
            for key, slot in self._slots.items():
                if slot.due > now:
                    continue
                if key in self._running:
                    self.skipped[key] = self.skipped.get(key, 0) + 1
                    _log.info(
                        "agent.run_skipped",
                        extra={"fields": {"workflow": key[0], "object": key[1]}},
                    )
                else:
                    self._running.add(key)
                    self.started[key] = self.started.get(key, 0) + 1
                    start.append(slot.entry)
                interval = slot.entry.schedule.interval_s
                # Next beat on the grid, past now: missed beats are dropped, not bunched.
                beats = max(1, math.floor((now - slot.due) / interval) + 1)
                slot.due += beats * interval
            next_due = min((slot.due for slot in self._slots.values()), default=None)
        for entry in start:
            self._submit(entry)
        return next_due

    def _submit(self, entry: WorkflowEntry) -> None:
        try:
            future = self._executor.submit(self._run_one, entry)
        except RuntimeError:  # the pool is shutting down
            with self._lock:
                self._running.discard(entry.key)
            return
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def submit_call(self, call: Callable[[], None]) -> bool:
        """Run ``call`` in the pool now, outside any slot (a task run: no schedule, no
        no-overlap rule). False when the scheduler is stopping; ``call`` must not raise."""
        with self._lock:
            if self._stopped:
                return False
        try:
            future = self._executor.submit(call)
        except RuntimeError:  # the pool is shutting down
            return False
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return True

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _run_one(self, entry: WorkflowEntry) -> None:
        try:
            self._run_entry(entry)
        except Exception as err:  # one failing run must not stop the others
            _log.error(
                "agent.run_failed",
                extra={
                    "fields": {
                        "workflow": entry.workflow,
                        "object": entry.object,
                        "error": type(err).__name__,
                    }
                },
            )
        finally:
            with self._lock:
                self._running.discard(entry.key)
            self._wake.set()

    def run(self, stop_event: threading.Event) -> None:
        """Loop until ``stop_event`` is set (or :meth:`stop`): start runs as they fall due."""
        while not stop_event.is_set() and not self._stopped:
            next_due = self.tick()
            wait = MAX_WAIT_S if next_due is None else next_due - self._clock()
            if wait > 0:
                self._wake.wait(min(wait, MAX_WAIT_S))
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, *, wait: bool = True) -> None:
        """Stop starting runs; with ``wait``, wait for the runs in flight (each has its
        timeout). Queued runs that have not started are cancelled."""
        with self._lock:
            self._stopped = True
            self._slots.clear()
        self._wake.set()
        if self._own_executor:
            self._executor.shutdown(wait=wait, cancel_futures=True)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no run is in flight (for tests and a clean stop)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                futures = list(self._futures)
            if not futures:
                return True
            for future in futures:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    future.result(timeout=remaining)
                except TimeoutError:
                    return False
                except Exception:  # noqa: S112 - _run_one logs; only completion matters here
                    continue


__all__ = [
    "UNAVAILABLE_MESSAGE",
    "Scheduler",
    "spread_offset",
]
