"""Explain answered from memory is explain: the same answer as a fresh read, for every object,
workflow and profile, before and after each kind of change; a view is only used at its own
epoch; and the server learns epochs from its own commits and from a poll."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy import select

from runas.domain.accounts import DistributionMode
from runas.errors import RunAsError
from runas.runtime import Runtime
from runas.server.epochs import EpochWatcher
from runas.services import (
    accounts,
    discovery,
    distribution,
    explain,
    lookup,
    packs,
    profiles,
    setup,
)
from runas.services.accounts import AccountCreate
from runas.services.discovery import DiscoveryPayload
from runas.services.profiles import AssociateRequest
from runas.services.resolution_memory import ResolutionMemory
from runas.settings import Settings
from runas.storage.tables import ObjectRow, ProfileRow, WorkflowRow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROFILE = "Contoso.SQL.MonitoringProfile"
INSTANCE_A = "Contoso.SQL.Instance:a.contoso.com;MSSQLSERVER"


def _runtime(tmp_path: Path, db_url: str) -> Runtime:
    return Runtime(Settings(data_dir=tmp_path / "data", database_url=db_url, actor="t"), env={})


@pytest.fixture
def runtime(tmp_path: Path, db_url: str) -> Iterator[Runtime]:
    rt = _runtime(tmp_path, db_url)
    setup.init(rt, "test")
    with rt.unit_of_work() as uow:
        packs.import_pack(uow, (EXAMPLES / "packs" / "contoso-sql.yaml").read_text(), "pack")
    with rt.unit_of_work() as uow:
        snapshot = yaml.safe_load((EXAMPLES / "discovery" / "contoso-sql.yaml").read_text())
        discovery.submit(uow, DiscoveryPayload.model_validate(snapshot))
    with rt.unit_of_work() as uow:
        for name in ("one", "two"):
            accounts.add(
                uow,
                AccountCreate(
                    name=name,
                    type="windows",
                    fields={"domain": "contoso.com", "user": name},
                    secrets={"password": SecretStr("pw")},
                ),
            )
    try:
        yield rt
    finally:
        rt.close()


def _questions(rt: Runtime) -> list[tuple[str, str | None, str | None]]:
    with rt.unit_of_work() as uow:
        s = uow.session
        objects = [r.full_name for r in s.scalars(select(ObjectRow))]
        ids = [str(r.id) for r in s.scalars(select(ObjectRow))][:2]
        workflows = [r.id for r in s.scalars(select(WorkflowRow))]
        profile_ids = [r.id for r in s.scalars(select(ProfileRow))]
    qs: list[tuple[str, str | None, str | None]] = []
    for o in objects + ids:
        qs += [(o, w, None) for w in workflows] + [(o, None, p) for p in profile_ids]
    return qs


def _same_everywhere(rt: Runtime, memory: ResolutionMemory) -> int:
    """Every question answered three ways — fresh, through the memory's transaction, then
    from memory alone at the database's epoch — gives one answer. Returns the epoch."""
    questions = _questions(rt)
    assert len(questions) > 20
    answered = 0
    for obj, w, p in questions:
        with rt.unit_of_work(read_only=True) as uow:
            fresh = _outcome(explain.explain, uow.session, obj_ref=obj, workflow=w, profile=p)
            loaded = _outcome(memory.explain, uow.session, obj, workflow=w, profile=p)
            epoch = lookup.epoch(uow.session)
        known = _outcome(memory.explain_known, epoch, obj, workflow=w, profile=p)
        assert known != ("ok", None), (obj, w, p)
        assert fresh == loaded == known, (obj, w, p)
        answered += fresh[0] == "ok"
    assert answered > len(questions) // 2  # most questions have an answer, not an error
    return epoch


def _outcome(ask: Callable[..., object], *args: object, **kwargs: object) -> tuple[str, object]:
    """An answer, or the error a user would see instead (wrong workflow for the object)."""
    try:
        return "ok", ask(*args, **kwargs)
    except RunAsError as exc:
        return type(exc).__name__, str(exc)


def _change_each_way(rt: Runtime) -> Iterator[str]:
    with rt.unit_of_work() as uow:
        profiles.associate(
            uow, AssociateRequest(profile=PROFILE, account="one", target_kind="object",
                                  target=INSTANCE_A),
        )  # fmt: skip
    yield "association"
    with rt.unit_of_work() as uow:
        distribution.set_distribution(
            uow, "one", mode=DistributionMode.MORE_SECURE, computers=["a.contoso.com"]
        )
    yield "distribution"
    with rt.unit_of_work() as uow:
        profiles.associate(
            uow, AssociateRequest(profile=PROFILE, account="two", target_kind="class",
                                  target="Contoso.SQL.Instance"),
        )  # fmt: skip
    yield "class association"
    with rt.unit_of_work() as uow:
        snapshot = yaml.safe_load((EXAMPLES / "discovery" / "contoso-sql.yaml").read_text())
        snapshot["objects"] = [o for o in snapshot["objects"] if "d.contoso.com" not in str(o)]
        discovery.submit(uow, DiscoveryPayload.model_validate(snapshot))
    yield "discovery"
    with rt.unit_of_work() as uow:
        distribution.set_distribution(uow, "two", mode=DistributionMode.LESS_SECURE)
    yield "less secure"


def test_memory_answers_exactly_like_a_fresh_read_across_changes(runtime: Runtime) -> None:
    memory = ResolutionMemory()
    epoch = _same_everywhere(runtime, memory)
    for change in _change_each_way(runtime):
        # the view of the old epoch is not used for the new one ...
        with runtime.unit_of_work(read_only=True) as uow:
            new_epoch = lookup.epoch(uow.session)
        assert new_epoch > epoch, change
        assert memory.explain_known(new_epoch, INSTANCE_A, workflow=None, profile=PROFILE) is None
        # ... and the new one answers like a fresh read again
        epoch = _same_everywhere(runtime, memory)


def test_an_older_epoch_is_never_answered_from_a_newer_view(runtime: Runtime) -> None:
    memory = ResolutionMemory()
    epoch = _same_everywhere(runtime, memory)
    assert memory.explain_known(epoch - 1, INSTANCE_A, workflow=None, profile=PROFILE) is None
    assert memory.explain_known(epoch + 1, INSTANCE_A, workflow=None, profile=PROFILE) is None


def test_the_runtime_announces_each_epoch_it_commits_and_only_those(runtime: Runtime) -> None:
    seen: list[int] = []
    runtime.on_epoch(seen.append)
    changes = _change_each_way(runtime)
    next(changes)
    with runtime.unit_of_work(read_only=True) as uow:
        assert seen == [lookup.epoch(uow.session)]

    def bump_then_fail() -> None:
        with runtime.unit_of_work() as uow:
            lookup.bump_epoch(uow.session)
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        bump_then_fail()
    with runtime.unit_of_work() as uow:
        lookup.setting(uow.session, lookup.EPOCH_KEY)  # commits, changes nothing
    assert len(seen) == 1
    next(changes)
    assert len(seen) == 2
    assert seen[1] > seen[0]


def test_the_watcher_sees_another_process_change_within_its_interval(
    runtime: Runtime, tmp_path: Path, db_url: str
) -> None:
    watcher = EpochWatcher(runtime.database, interval=0.05)
    assert watcher.known() is None  # not running: vouches for nothing
    watcher.start()
    try:
        before = watcher.known()
        assert before is not None
        other = _runtime(tmp_path, db_url)  # another process's connection, same database
        try:
            with other.unit_of_work() as uow:
                written = lookup.bump_epoch(uow.session)
        finally:
            other.close()
        deadline = time.monotonic() + 2
        while watcher.known() != written and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watcher.known() == written > before
        watcher.advance(before)  # an older reading never takes it back
        assert watcher.known() == written
    finally:
        watcher.stop()
    assert watcher.known() is None


def test_sqlite_reads_do_not_wait_for_a_writer(tmp_path: Path, sqlite_url: str) -> None:
    rt = _runtime(tmp_path, sqlite_url)
    setup.init(rt, "test")
    path = sqlite_url.removeprefix("sqlite:///").removeprefix("sqlite+pysqlite:///")
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # holds the write lock
        result: list[float] = []

        def read() -> None:
            started = time.monotonic()
            with rt.unit_of_work(read_only=True) as uow:
                lookup.epoch(uow.session)
            result.append(time.monotonic() - started)

        t = threading.Thread(target=read)
        t.start()
        t.join(timeout=10)
        assert result
        assert result[0] < 1.0  # a writing transaction would wait up to 5 s
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        rt.close()
