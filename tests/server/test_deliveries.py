"""DeliveryWriter: the secret-use audit records of many configuration deliveries in one
transaction, each caller back only once its own records are committed, failures isolated."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from runas.runtime import Runtime
from runas.server import deliveries
from runas.server.deliveries import DeliveryWriter
from runas.services import agent_config, setup
from runas.services.agent_config import BuiltConfig
from runas.settings import Settings
from runas.storage.tables import AuditRow


@pytest.fixture
def runtime(tmp_path: Path, db_url: str) -> Iterator[Runtime]:
    rt = Runtime(Settings(data_dir=tmp_path / "data", database_url=db_url, actor="test"), env={})
    setup.init(rt, "test")
    try:
        yield rt
    finally:
        rt.close()


def built(agent_id: str) -> BuiltConfig:
    return BuiltConfig(
        agent_id=agent_id,
        epoch=1,
        etag='"1"',
        body=b"{}",
        delivered=((7, 1),),
        uses=((7, 1, ("password",), "sql"),),
    )


def until(condition: Any) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def secret_uses(rt: Runtime) -> list[tuple[str, str, str]]:
    with rt.unit_of_work() as uow:
        rows = uow.session.scalars(
            select(AuditRow).where(AuditRow.action == "account:secret-use").order_by(AuditRow.seq)
        )
        return [(r.actor, r.source, r.details["purpose"]) for r in rows]


def test_concurrent_deliveries_are_committed_together_each_under_its_own_name(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = DeliveryWriter(runtime)
    # Hold the first writer inside its transaction until every other caller has queued, so
    # that grouping is certain rather than a matter of timing.
    release = threading.Event()
    original = agent_config.record_delivery

    def slow_first(uow: Any, item: BuiltConfig) -> None:
        if item.agent_id == "a00":
            release.wait(10)
        original(uow, item)

    monkeypatch.setattr(deliveries.agent_config, "record_delivery", slow_first)
    names = [f"a{i:02d}" for i in range(12)]
    returned: list[str] = []
    threads = [
        threading.Thread(
            target=lambda n=n: (writer.record(built(n), n, f"10.0.0.{n[1:]}"), returned.append(n))
        )
        for n in names
    ]
    threads[0].start()
    until(lambda: writer._writing)  # the first caller is now the writer
    for t in threads[1:]:
        t.start()
    until(lambda: len(writer._queue) == len(names) - 1)
    assert returned == []  # nobody is back before their records are committed
    release.set()
    for t in threads:
        t.join(10)
    assert sorted(returned) == names
    assert (writer.batches, writer.written) == (2, 12)  # the first alone, then the other 11
    uses = secret_uses(runtime)
    assert sorted(uses) == sorted(
        (f"agent:{n}", f"10.0.0.{n[1:]}", f"configuration of agent {n}") for n in names
    )
    with runtime.unit_of_work() as uow:
        from runas.services import audit

        assert audit.verify(uow.session).ok


def test_a_failing_delivery_fails_only_its_own_caller(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = DeliveryWriter(runtime, max_batch=50)
    original = agent_config.record_delivery

    def broken_for_b(uow: Any, item: BuiltConfig) -> None:
        if item.agent_id == "b":
            raise RuntimeError("cannot write b")
        original(uow, item)

    monkeypatch.setattr(deliveries.agent_config, "record_delivery", broken_for_b)
    # queue three deliveries behind a held writer, so they are written as one batch
    writer._writing = True
    errors: dict[str, BaseException] = {}

    def deliver(name: str) -> None:
        try:
            writer.record(built(name), name, "src")
        except RuntimeError as err:
            errors[name] = err

    threads = [threading.Thread(target=deliver, args=(n,)) for n in "abc"]
    for t in threads:
        t.start()
    until(lambda: len(writer._queue) == 3)
    writer._write_queue()  # what the held writer does next
    for t in threads:
        t.join(10)
    assert list(errors) == ["b"]
    assert sorted(actor for actor, _, _ in secret_uses(runtime)) == ["agent:a", "agent:c"]
    assert writer._writing is False
    writer.record(built("d"), "d", "src")  # and the next caller writes again
    assert len(secret_uses(runtime)) == 3


def test_deliveries_note_the_agents_contact_from_what_the_build_read(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from runas.services import agents
    from runas.storage.tables import AgentRow
    from support.enrolling import FakeAgent

    for name in ("n1", "n2"):
        with runtime.unit_of_work() as uow:
            agents.enrol(uow, FakeAgent(name).request())
    with runtime.unit_of_work() as uow:
        now = uow.now

    def row_read_again(*args: Any, **kwargs: Any) -> bool:
        raise AssertionError("the agent's row is read again")

    monkeypatch.setattr(deliveries.agents, "touch", row_read_again)
    writer = DeliveryWriter(runtime)
    writer._writing = True  # both in one batch: one statement notes them
    threads = [
        threading.Thread(
            target=writer.record,
            args=(replace(built(n), seen=(None, None, None)), n, f"10.0.0.{n[1]}"),
        )
        for n in ("n1", "n2")
    ]
    for t in threads:
        t.start()
    until(lambda: len(writer._queue) == 2)
    writer._write_queue()
    for t in threads:
        t.join(10)
    assert writer.batches == 1

    def seen(name: str) -> tuple[Any, ...]:
        with runtime.unit_of_work(read_only=True) as uow:
            row = uow.session.get(AgentRow, name)
            assert row is not None
            return (row.last_seen_at is not None, row.last_seen_from, row.last_epoch)

    assert seen("n1") == (True, "10.0.0.1", 1)
    assert seen("n2") == (True, "10.0.0.2", 1)
    # noted a moment ago from the same address at the same epoch: nothing to write
    with runtime.unit_of_work() as uow:
        uow.session.execute(
            AgentRow.__table__.update().where(AgentRow.id == "n1").values(last_epoch=99)
        )
    writer.record(replace(built("n1"), seen=(now, "10.0.0.1", 1)), "n1", "10.0.0.1")
    assert seen("n1") == (True, "10.0.0.1", 99)


def test_a_lone_delivery_is_written_at_once_and_a_flowing_roll_out_fills_its_batches(
    runtime: Runtime,
) -> None:
    writer = DeliveryWriter(runtime, max_batch=3, linger_s=2.0)
    started = time.monotonic()
    writer.record(built("lone"), "lone", "10.0.0.1")
    assert time.monotonic() - started < 1.0  # not held for the linger
    assert writer.batches == 1

    # Right after a commit deliveries are flowing: the next writer waits for its batch to
    # fill (max_batch 3) instead of committing one delivery alone, and goes as soon as it is
    # full rather than at the end of the linger.
    threads = [
        threading.Thread(target=writer.record, args=(built(n), n, "10.0.0.2"))
        for n in ("b1", "b2", "b3")
    ]
    started = time.monotonic()
    threads[0].start()
    until(lambda: writer._writing)
    time.sleep(0.02)
    assert writer.batches == 1  # b1 waits for company
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(10)
    assert time.monotonic() - started < 1.5
    assert (writer.batches, writer.written) == (2, 4)
    actors = [u[0] for u in secret_uses(runtime)]
    assert actors[0] == "agent:lone"
    assert sorted(actors[1:]) == ["agent:b1", "agent:b2", "agent:b3"]
