"""The scheduler with an injected clock: spread, interval, no overlap, reconfiguration."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from runas.agent.config import Schedule, WorkflowEntry, parse_config
from runas.agent.scheduler import Scheduler, spread_offset
from runas.crypto.sealing import AgentKeyPair
from support.agent_documents import document, workflow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entries(*specs: dict[str, object]) -> tuple[WorkflowEntry, ...]:
    key = AgentKeyPair.generate().public_bytes()
    return parse_config(document(key, workflows=specs), agent_id="a").workflows


class Recorder:
    """Runs that can be held open (``block``) to test overlap."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str]] = []
        self.block = False
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.lock = threading.Lock()

    def __call__(self, entry: WorkflowEntry) -> None:
        with self.lock:
            self.runs.append(entry.key)
        self.started.release()
        if self.block:
            self.release.wait(10)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.release.set()


@pytest.fixture
def scheduler(clock: Clock, recorder: Recorder) -> Iterator[Scheduler]:
    s = Scheduler("a", recorder, max_workers=4, clock=clock)
    yield s
    recorder.release.set()
    s.stop()


def test_spread_is_deterministic_and_within_bounds() -> None:
    a = spread_offset("a", "W", "O", 10)
    assert a == spread_offset("a", "W", "O", 10)
    assert 0 <= a < 10
    offsets = {spread_offset(f"agent{i}", "W", "O", 10) for i in range(50)}
    assert len(offsets) == 50  # different agents, different phases
    assert spread_offset("a", "W", "O", 0) == 0


def test_first_run_after_the_spread_then_every_interval(
    scheduler: Scheduler, clock: Clock, recorder: Recorder
) -> None:
    (entry,) = entries(workflow("W", "O", interval_s=60, spread_s=10))
    scheduler.configure([entry])
    offset = spread_offset("a", "W", "O", 10)
    assert scheduler.due_at(entry.key) == pytest.approx(1000 + offset)
    assert scheduler.tick() == pytest.approx(1000 + offset)
    assert recorder.runs == []
    clock.now = 1000 + offset
    assert scheduler.tick() == pytest.approx(1060 + offset)
    assert scheduler.wait_idle(5)
    assert recorder.runs == [("W", "O")]
    clock.now = 1059 + offset
    scheduler.tick()
    assert scheduler.wait_idle(5)
    assert len(recorder.runs) == 1
    clock.now = 1060 + offset
    scheduler.tick()
    assert scheduler.wait_idle(5)
    assert len(recorder.runs) == 2
    # Fallen far behind (a suspended machine): one run, then back on the grid.
    clock.now = 1000 + offset + 60 * 10 + 5
    assert scheduler.tick() == pytest.approx(1000 + offset + 60 * 11)
    assert scheduler.wait_idle(5)
    assert len(recorder.runs) == 3


def test_never_two_runs_of_one_slot_at_once(
    scheduler: Scheduler, clock: Clock, recorder: Recorder
) -> None:
    (entry,) = entries(workflow("W", "O", interval_s=5, timeout_s=5))
    recorder.block = True
    scheduler.configure([entry])
    scheduler.tick()
    assert recorder.started.acquire(timeout=5)
    for step in range(1, 4):
        clock.now = 1000 + 5 * step
        scheduler.tick()
    assert scheduler.running() == {("W", "O")}
    assert scheduler.skipped == {("W", "O"): 3}
    assert recorder.runs == [("W", "O")]
    recorder.release.set()
    assert scheduler.wait_idle(5)
    clock.now = 1020
    scheduler.tick()
    assert scheduler.wait_idle(5)
    assert len(recorder.runs) == 2


def test_the_pool_is_bounded(clock: Clock, recorder: Recorder) -> None:
    recorder.block = True
    s = Scheduler("a", recorder, max_workers=2, clock=clock)
    try:
        s.configure(entries(*(workflow(f"W{i}", "O") for i in range(5))))
        s.tick()
        assert recorder.started.acquire(timeout=5)
        assert recorder.started.acquire(timeout=5)
        assert not recorder.started.acquire(timeout=0.2)
        assert len(s.running()) == 5  # queued runs count as running: no second one starts
        recorder.release.set()
        assert s.wait_idle(5)
        assert len(recorder.runs) == 5
    finally:
        recorder.release.set()
        s.stop()


def test_reconfiguration_keeps_unchanged_slots(
    scheduler: Scheduler, clock: Clock, recorder: Recorder
) -> None:
    a, b = entries(
        workflow("A", "O", interval_s=60, spread_s=30), workflow("B", "O", interval_s=60)
    )
    scheduler.configure([a, b])
    due_a = scheduler.due_at(a.key)
    clock.now = 1010
    # A unchanged (a new account version does not reset its timing), B's schedule changed,
    # C is new, and a probe change alone keeps the timing too.
    changed_b = replace(b, schedule=Schedule(interval_s=30, spread_s=0, timeout_s=10))
    (c,) = entries(workflow("C", "O", interval_s=60))
    scheduler.configure([replace(a, detail="new detail"), changed_b, c])
    assert scheduler.due_at(a.key) == due_a
    assert scheduler.due_at(b.key) == 1010
    assert scheduler.due_at(c.key) == 1010
    scheduler.configure([c])
    assert scheduler.keys == {c.key}
    assert scheduler.due_at(a.key) is None


def test_only_running_command_entries_get_slots(clock: Clock, recorder: Recorder) -> None:
    seen: list[str] = []
    s = Scheduler("a", recorder, clock=clock, on_unavailable=lambda e: seen.append(e.workflow))
    try:
        config = entries(
            workflow("Off", "O", runs=False),
            workflow("Script", "O", probe_type="powershell"),
            workflow("On", "O"),
        )
        s.configure(config)
        s.configure(config)  # reported once, not on every configuration
        assert s.keys == {("On", "O")}
        assert seen == ["Script"]
    finally:
        s.stop()


def test_a_failing_run_does_not_stop_the_slot(clock: Clock) -> None:
    calls: list[int] = []

    def boom(entry: WorkflowEntry) -> None:
        calls.append(1)
        raise RuntimeError("probe bug")

    s = Scheduler("a", boom, clock=clock)
    try:
        s.configure(entries(workflow("W", "O", interval_s=1)))
        s.tick()
        assert s.wait_idle(5)
        clock.now += 1
        s.tick()
        assert s.wait_idle(5)
        assert len(calls) == 2
        assert s.running() == frozenset()
    finally:
        s.stop()


def test_the_loop_runs_and_stops(recorder: Recorder) -> None:
    s = Scheduler("a", recorder)
    stop = threading.Event()
    thread = threading.Thread(target=s.run, args=(stop,))
    thread.start()
    try:
        s.configure(entries(workflow("W", "O", interval_s=0.05)))
        for _ in range(3):
            assert recorder.started.acquire(timeout=5)
    finally:
        stop.set()
        s.stop()
        thread.join(5)
    assert not thread.is_alive()
