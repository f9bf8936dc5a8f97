"""The audit trail (issue 3, item 6): every change is recorded with who, what, where and when,
in the change's own transaction; records hold no secret; the hash chain shows any edit,
removal, reordering or truncation; two writers on one PostgreSQL database never fork it."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from runas.domain.accounts import DistributionMode
from runas.domain.model import TargetKind
from runas.errors import AlreadyExists
from runas.runtime import Runtime, UnitOfWork
from runas.services import (
    accounts,
    audit,
    discovery,
    distribution,
    keys,
    packs,
    profiles,
    setup,
)
from runas.services.accounts import AccountCreate, AccountUpdate
from runas.services.audit import GENESIS_HASH, HEAD_KEY, AuditAction, UnsafeAuditDetails
from runas.services.discovery import DiscoveryPayload
from runas.services.profiles import AssociateRequest, DissociateRequest, ProfileCreate
from runas.settings import load_settings
from runas.storage.tables import AccountRow, AuditRow, SettingRow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PACK = (EXAMPLES / "packs" / "contoso-sql.yaml").read_text()
DISCOVERY = EXAMPLES / "discovery" / "contoso-sql.yaml"
PROFILE = "Contoso.SQL.MonitoringProfile"
INSTANCE_A = "Contoso.SQL.Instance:a.contoso.com;MSSQLSERVER"
CANARY = "cAnArY-audit-7f3e2a91c4"
BOB = "bob"
CLIENT = "203.0.113.9"


@pytest.fixture
def rt(tmp_path: Path, db_url: str) -> Iterator[Runtime]:
    """An initialised management group on each backend; the configured actor is alice."""
    settings = load_settings(
        env={
            "RUNAS_DATA_DIR": str(tmp_path / "data"),
            "RUNAS_DATABASE_URL": db_url,
            "RUNAS_ACTOR": "alice",
        }
    )
    runtime = Runtime(settings, env={})
    setup.init(runtime, "test")
    try:
        yield runtime
    finally:
        runtime.close()


@contextmanager
def as_bob(rt: Runtime) -> Iterator[UnitOfWork]:
    """A unit of work as the server would open it for a remote user."""
    with rt.unit_of_work(actor=BOB, source=CLIENT) as uow:
        yield uow


def trail(rt: Runtime) -> list[audit.AuditRecordView]:
    with rt.database.session() as s:
        return audit.list_records(s, limit=100_000)


def last_seq(rt: Runtime) -> int:
    return max((r.seq for r in trail(rt)), default=0)


def new_records(rt: Runtime, since_seq: int) -> list[tuple[str, str, str, str, str]]:
    return [
        (r.action, r.target, r.actor, r.source, r.outcome) for r in trail(rt) if r.seq > since_seq
    ]


def verify(rt: Runtime) -> audit.AuditVerifyView:
    with rt.database.session() as s:
        return audit.verify(s)


def add_account(uow: UnitOfWork, name: str = "sql", secret: str = CANARY) -> None:
    accounts.add(
        uow,
        AccountCreate(
            name=name,
            type="windows",
            fields={"domain": "corp.contoso.com", "user": "svc"},
            secrets={"password": SecretStr(secret)},
        ),
    )


def account_exists(rt: Runtime, name: str) -> bool:
    with rt.database.session() as s:
        return s.scalar(select(AccountRow.id).where(AccountRow.name == name)) is not None


# -- what is recorded ------------------------------------------------------------------------


def test_init_records_the_system_pack_and_the_management_group(rt: Runtime) -> None:
    assert new_records(rt, 0) == [
        ("pack:import", "runas.system", "alice", "local", "success"),
        ("mg:init", "test", "alice", "local", "success"),
    ]
    assert verify(rt).ok


def _steps() -> list[tuple[str, Callable[[Runtime], Any], list[tuple[str, str]]]]:
    association = f"{PROFILE}/sql/object:{INSTANCE_A}"

    def in_uow(fn: Callable[[UnitOfWork], Any]) -> Callable[[Runtime], Any]:
        def run(rt: Runtime) -> Any:
            with as_bob(rt) as uow:
                return fn(uow)

        return run

    def discover(uow: UnitOfWork) -> Any:
        payload = DiscoveryPayload.model_validate(yaml.safe_load(DISCOVERY.read_text()))
        return discovery.submit(uow, payload)

    upgraded = PACK.replace("version: 1.0.0", "version: 1.0.1", 1)
    return [
        (
            "pack import",
            in_uow(lambda u: packs.import_pack(u, PACK, "contoso-sql.yaml")),
            [("pack:import", "Contoso.SQL")],
        ),
        ("discovery", in_uow(discover), [("discovery:submit", "Contoso.SQL.InstanceDiscovery")]),
        ("account add", in_uow(add_account), [("account:create", "sql")]),
        (
            "account update (public)",
            in_uow(lambda u: accounts.update(u, "sql", AccountUpdate(description="db"))),
            # validating a public change decrypts the current secret: that use is recorded too
            [("account:secret-use", "sql"), ("account:update", "sql")],
        ),
        (
            "account update (secret)",
            in_uow(
                lambda u: accounts.update(
                    u, "sql", AccountUpdate(secrets={"password": SecretStr(CANARY + "2")})
                )
            ),
            [("account:secret-version", "sql")],
        ),
        (
            "distribution set",
            in_uow(
                lambda u: distribution.set_distribution(
                    u, "sql", mode=DistributionMode.MORE_SECURE, add=["a.contoso.com"]
                )
            ),
            [("distribution:set", "sql")],
        ),
        (
            "profile add",
            in_uow(
                lambda u: profiles.add(u, ProfileCreate(id="Corp.Backup", display_name="Backup"))
            ),
            [("profile:create", "Corp.Backup")],
        ),
        (
            "associate",
            in_uow(
                lambda u: profiles.associate(
                    u,
                    AssociateRequest(
                        profile=PROFILE,
                        account="sql",
                        target_kind=TargetKind.OBJECT,
                        target=INSTANCE_A,
                    ),
                )
            ),
            [("association:create", association)],
        ),
        (
            "distribution suggest --apply",
            in_uow(lambda u: distribution.suggest(u, "sql", apply=True)),
            [("distribution:approve-suggested", "sql")],
        ),
        (
            "dissociate",
            in_uow(
                lambda u: profiles.dissociate(u, DissociateRequest(profile=PROFILE, account="sql"))
            ),
            [("association:remove", association)],
        ),
        (
            "pack upgrade",
            in_uow(lambda u: packs.import_pack(u, upgraded, "contoso-sql.yaml")),
            [("pack:upgrade", "Contoso.SQL")],
        ),
        (
            "account remove",
            in_uow(lambda u: accounts.remove(u, "sql")),
            [("account:remove", "sql")],
        ),
        (
            "pack remove",
            in_uow(lambda u: packs.remove(u, "Contoso.SQL")),
            [("pack:remove", "Contoso.SQL")],
        ),
    ]


def test_every_change_writes_one_record_naming_actor_action_target_and_source(
    rt: Runtime,
) -> None:
    for label, run, expected in _steps():
        before = last_seq(rt)
        run(rt)
        got = new_records(rt, before)
        assert got == [(a, t, BOB, CLIENT, "success") for a, t in expected], label
    assert verify(rt).ok


def test_a_discovery_snapshot_that_changes_nothing_is_not_recorded(rt: Runtime) -> None:
    payload = DiscoveryPayload.model_validate(yaml.safe_load(DISCOVERY.read_text()))
    with as_bob(rt) as uow:
        packs.import_pack(uow, PACK, "contoso-sql.yaml")
    with as_bob(rt) as uow:
        discovery.submit(uow, payload)
    before = last_seq(rt)
    with as_bob(rt) as uow:
        discovery.submit(uow, payload)  # agents resend their snapshots all day
    assert last_seq(rt) == before


def test_key_rotation_rewrap_and_retire_are_recorded(rt: Runtime) -> None:
    with as_bob(rt) as uow:
        add_account(uow)
    old = keys.list_keys(rt)[0].id

    before = last_seq(rt)
    rotated = keys.rotate(rt, actor=BOB, source=CLIENT)
    assert new_records(rt, before) == [("key:rotate", rotated.active_key, BOB, CLIENT, "success")]
    assert trail(rt)[-1].details == {"new_key_id": rotated.active_key, "rewrapped": 1}

    before = last_seq(rt)
    keys.rewrap_all(rt, actor=BOB, source=CLIENT)
    assert new_records(rt, before) == [("key:rewrap", rotated.active_key, BOB, CLIENT, "success")]

    before = last_seq(rt)
    keys.retire(rt, old, actor=BOB, source=CLIENT)
    assert new_records(rt, before) == [("key:retire", old, BOB, CLIENT, "success")]
    assert verify(rt).ok


def test_details_name_what_changed_and_the_secret_version_never_a_value(rt: Runtime) -> None:
    with as_bob(rt) as uow:
        add_account(uow)
    with as_bob(rt) as uow:
        accounts.update(
            uow,
            "sql",
            AccountUpdate(
                fields={"user": "svc2"},
                rename="sql2",
                secrets={"password": SecretStr(CANARY + "x")},
            ),
        )
    created, changed = trail(rt)[-2:]
    assert created.details == {
        "type": "windows",
        "fields": ["domain", "user"],
        "secret_fields": ["password"],
        "secret_version": 1,
    }
    assert changed.action == "account:secret-version"
    assert changed.target == "sql2"
    assert changed.details == {
        "changed": ["user", "name"],
        "renamed_from": "sql",
        "secret_fields": ["password"],
        "secret_version": 2,
    }
    assert "svc2" not in json.dumps([r.model_dump(mode="json") for r in trail(rt)])


# -- the change and its record commit together -----------------------------------------------


def test_a_change_whose_record_is_refused_does_not_happen(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr(audit, "record", refuse)
    before = last_seq(rt)
    with pytest.raises(RuntimeError, match="audit store unavailable"), as_bob(rt) as uow:
        add_account(uow)
    assert not account_exists(rt, "sql")
    assert last_seq(rt) == before


def test_a_record_that_cannot_be_appended_at_commit_rolls_the_change_back(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("chain head unavailable")

    monkeypatch.setattr(audit, "_append", fail)
    with pytest.raises(RuntimeError, match="chain head unavailable"), as_bob(rt) as uow:
        add_account(uow)
    assert not account_exists(rt, "sql")


def _refuse_audit_inserts(rt: Runtime) -> None:
    """A real database failure: a trigger that refuses every new audit record."""
    with rt.database.engine.begin() as conn:
        if rt.database.backend == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER no_audit BEFORE INSERT ON audit_log "
                    "BEGIN SELECT RAISE(ABORT, 'audit log is read-only'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION no_audit() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'audit log is read-only'; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER no_audit BEFORE INSERT ON audit_log "
                    "FOR EACH ROW EXECUTE FUNCTION no_audit()"
                )
            )


def test_when_the_database_refuses_the_record_the_change_is_rolled_back(rt: Runtime) -> None:
    _refuse_audit_inserts(rt)
    with pytest.raises(DBAPIError, match="audit log is read-only"), as_bob(rt) as uow:
        add_account(uow)
    assert not account_exists(rt, "sql")
    with pytest.raises(DBAPIError), as_bob(rt) as uow:
        profiles.add(uow, ProfileCreate(id="Corp.Backup", display_name="Backup"))
    with rt.database.session() as s:
        assert s.scalar(select(SettingRow.value).where(SettingRow.key == HEAD_KEY))["seq"] == 2


def test_a_failed_change_leaves_no_record(rt: Runtime) -> None:
    with as_bob(rt) as uow:
        add_account(uow)
    before = last_seq(rt)
    with pytest.raises(AlreadyExists), as_bob(rt) as uow:
        add_account(uow)
    assert last_seq(rt) == before


# -- details never hold a secret -------------------------------------------------------------


@pytest.mark.parametrize(
    "details",
    [
        {"password": "x"},
        {"new_password": "x"},
        {"fields": {"authKey": "x"}},
        {"items": [{"ssh_key": "x"}]},
        {"token": "x"},
        {"passphrase": "x"},
        {"secret": "x"},
        {"community": "x"},
        {"value": SecretStr("x")},
        {"value": b"x"},
        {"value": 1.5},
        {"value": object()},
        {1: "x"},
    ],
    ids=lambda d: "-".join(f"{k}={type(v).__name__}" for k, v in d.items()),
)
def test_details_that_could_hold_a_secret_are_refused_and_the_change_does_not_happen(
    rt: Runtime, details: dict[Any, Any]
) -> None:
    def change_recording(uow: UnitOfWork) -> None:
        add_account(uow)
        audit.record(uow, AuditAction.ACCOUNT_UPDATE, "sql", details)

    before = last_seq(rt)
    with pytest.raises(UnsafeAuditDetails), as_bob(rt) as uow:
        change_recording(uow)
    assert not account_exists(rt, "sql")
    assert last_seq(rt) == before


def test_names_versions_and_counts_of_secrets_are_allowed(rt: Runtime) -> None:
    details = {
        "secret_version": 3,
        "secret_fields": ["password", "su_password"],
        "token_name": "ci",
        "token_id": 7,
        "new_key_id": "kek-1",
        "key_count": 2,
        "nested": {"ok": [True, None, "text", 1]},
    }
    with as_bob(rt) as uow:
        audit.record(uow, AuditAction.ACCOUNT_UPDATE, "x", details)
    assert trail(rt)[-1].details == details


# -- the hash chain --------------------------------------------------------------------------


def _changes(rt: Runtime, n: int) -> None:
    for i in range(n):
        with as_bob(rt) as uow:
            profiles.add(uow, ProfileCreate(id=f"Corp.P{i}", display_name=f"P{i}"))


def test_records_form_a_hash_chain_from_genesis_to_the_head(rt: Runtime) -> None:
    _changes(rt, 3)
    with rt.database.session() as s:
        rows = list(s.scalars(select(AuditRow).order_by(AuditRow.seq)))
        head = s.get(SettingRow, HEAD_KEY)
        assert head is not None
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
        assert rows[0].prev_hash == GENESIS_HASH
        prev = GENESIS_HASH
        for r in rows:
            assert r.prev_hash == prev
            body = {
                "seq": r.seq,
                "at": r.at.astimezone(UTC).isoformat(timespec="microseconds"),
                "actor": r.actor,
                "source": r.source,
                "action": r.action,
                "target": r.target,
                "outcome": r.outcome,
                "details": r.details,
                "prev_hash": r.prev_hash,
            }
            canonical = json.dumps(
                body, sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
            assert r.hash == hashlib.sha256(canonical).hexdigest()
            prev = r.hash
        assert head.value == {"seq": rows[-1].seq, "hash": rows[-1].hash}
    result = verify(rt)
    assert (result.ok, result.records, result.first_broken) == (True, 5, None)
    assert result.head_hash == rows[-1].hash


def _tamper(rt: Runtime, how: str) -> None:
    with rt.database.session() as s:
        if how == "edited":
            s.execute(update(AuditRow).where(AuditRow.seq == 3).values(actor="mallory"))
        elif how == "edited-details":
            s.execute(update(AuditRow).where(AuditRow.seq == 3).values(details={"x": 1}))
        elif how == "deleted":
            s.execute(delete(AuditRow).where(AuditRow.seq == 3))
        elif how == "reordered":
            s.execute(update(AuditRow).where(AuditRow.seq == 3).values(seq=-1))
            s.execute(update(AuditRow).where(AuditRow.seq == 4).values(seq=3))
            s.execute(update(AuditRow).where(AuditRow.seq == -1).values(seq=4))
        elif how == "truncated":
            s.execute(delete(AuditRow).where(AuditRow.seq >= 6))
        elif how == "rehashed":
            # an edit whose author also recomputed the record's own hash: the next link breaks
            row = s.scalars(select(AuditRow).where(AuditRow.seq == 3)).one()
            row.actor = "mallory"
            row.hash = audit.record_hash(
                seq=row.seq,
                at=row.at,
                actor=row.actor,
                source=row.source,
                action=row.action,
                target=row.target,
                outcome=row.outcome,
                details=row.details,
                prev_hash=row.prev_hash,
            )
        elif how == "appended":
            # a well-formed record added behind runas's back: only the chain head shows it
            last = s.scalars(select(AuditRow).where(AuditRow.seq == 7)).one()
            forged: dict[str, Any] = {
                "seq": 8,
                "at": datetime.now(UTC),
                "actor": "mallory",
                "source": "local",
                "action": "account:create",
                "target": "x",
                "outcome": "success",
                "details": {},
                "prev_hash": last.hash,
            }
            s.add(AuditRow(**forged, hash=audit.record_hash(**forged)))
        else:  # pragma: no cover
            raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "first_broken", "reason"),
    [
        ("edited", 3, "altered"),
        ("edited-details", 3, "altered"),
        ("deleted", 3, "record 3 is missing"),
        ("reordered", 3, "does not follow record 2"),
        ("truncated", 6, "records 6 to 7 are missing"),
        ("rehashed", 4, "does not follow record 3"),
        ("appended", 8, "beyond the chain head"),
    ],
)
def test_verify_reports_the_first_broken_record(
    rt: Runtime, how: str, first_broken: int, reason: str
) -> None:
    _changes(rt, 5)  # records 1-2 from init, 3-7 from the changes
    assert verify(rt).ok
    _tamper(rt, how)
    result = verify(rt)
    assert not result.ok
    assert result.first_broken == first_broken
    assert reason in result.reason


def test_verify_walks_a_trail_longer_than_one_batch(rt: Runtime) -> None:
    _changes(rt, 7)
    with rt.database.session() as s:
        assert audit.verify(s, batch=2).records == 9
    _tamper(rt, "edited")
    with rt.database.session() as s:
        assert audit.verify(s, batch=2).first_broken == 3


def test_verify_notices_a_missing_chain_head(rt: Runtime) -> None:
    with rt.database.session() as s:
        s.execute(delete(SettingRow).where(SettingRow.key == HEAD_KEY))
    result = verify(rt)
    assert (result.ok, result.first_broken) == (False, 1)
    assert "chain head is missing" in result.reason


def test_check_raises_with_one_line(rt: Runtime) -> None:
    with rt.database.session() as s:
        s.execute(update(AuditRow).where(AuditRow.seq == 2).values(target="other"))
    with rt.database.session() as s, pytest.raises(audit.AuditTrailBroken) as info:
        audit.check(s)
    assert str(info.value).startswith("audit trail broken at record 2: ")


# -- failures and refusals -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "outcome"),
    [
        ("forbidden", None, "denied"),
        ("unauthenticated", None, "denied"),
        ("x", 403, "denied"),
        ("not-found", 404, "failure"),
        ("conflict", None, "failure"),
    ],
)
def test_record_failure_writes_its_own_record(
    rt: Runtime, code: str, status: int | None, outcome: str
) -> None:
    audit.record_failure(
        rt,
        actor="carol",
        source=CLIENT,
        action=AuditAction.ACCOUNT_CREATE,
        target="sql",
        code=code,
        status=status,
    )
    last = trail(rt)[-1]
    assert (last.action, last.target, last.actor, last.source, last.outcome) == (
        "account:create",
        "sql",
        "carol",
        CLIENT,
        outcome,
    )
    assert last.details == {"error": code}
    assert verify(rt).ok


def test_an_anonymous_refusal_is_recorded_as_anonymous(rt: Runtime) -> None:
    audit.record_failure(
        rt, actor="", source=CLIENT, action=AuditAction.AUTH_LOGIN, target="", code="x", status=401
    )
    assert trail(rt)[-1].actor == "anonymous"


# -- listing ---------------------------------------------------------------------------------


def test_list_filters(rt: Runtime) -> None:
    with rt.unit_of_work(actor="carol", source=CLIENT) as uow:
        packs.import_pack(uow, PACK, "contoso-sql.yaml")
    with as_bob(rt) as uow:
        add_account(uow)
    with as_bob(rt) as uow:
        profiles.associate(uow, AssociateRequest(profile=PROFILE, account="sql"))

    def seqs(**kw: Any) -> list[int]:
        with rt.database.session() as s:
            return [r.seq for r in audit.list_records(s, **kw)]

    assert seqs() == [1, 2, 3, 4, 5]
    assert seqs(actor="carol") == [3]
    assert seqs(actor="nobody") == []
    assert seqs(action="pack") == [1, 3]
    assert seqs(action="pack:import") == [1, 3]
    assert seqs(action="account:") == [4]
    assert seqs(action="%") == []  # no wildcard
    assert seqs(target="sql") == [4]
    assert seqs(target=PROFILE) == [5]  # a profile finds its associations
    assert seqs(target=f"{PROFILE}/sql/all") == [5]
    assert seqs(limit=2) == [4, 5]  # the newest, oldest first
    assert seqs(since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert seqs(since=datetime.now(UTC) - timedelta(hours=1)) == [1, 2, 3, 4, 5]


# -- two writers on one PostgreSQL database --------------------------------------------------


@pytest.mark.postgres
def test_concurrent_changes_from_two_servers_do_not_fork_the_chain(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {"RUNAS_DATA_DIR": str(tmp_path / "data"), "RUNAS_DATABASE_URL": postgres_url}
    first = Runtime(load_settings(env=env), env={})
    setup.init(first, "test")
    second = Runtime(load_settings(env=env), env={})  # another process's view, same database
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(runtime: Runtime, who: str) -> None:
        try:
            start.wait()
            for i in range(20):
                # Creating a profile does not bump the resolution epoch, whose row lock would
                # serialise the two writers by itself: only the chain head's lock is tested.
                with runtime.unit_of_work(actor=who, source=who) as uow:
                    profiles.add(uow, ProfileCreate(id=f"Corp.{who}{i}", display_name=who))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r, n)) for r, n in ((first, "a"), (second, "b"))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        result = verify(first)
        assert result.ok, result
        assert result.records == 2 + 40
        records = trail(first)
        assert [r.seq for r in records] == list(range(1, 43))
        assert sorted(r.target for r in records[2:]) == sorted(
            f"Corp.{w}{i}" for w in "ab" for i in range(20)
        )
    finally:
        first.close()
        second.close()


def _record_then_fail(uow: UnitOfWork, target: str) -> None:
    audit.record(uow, AuditAction.DISCOVERY_SUBMIT, target, {"objects": 0})
    raise RuntimeError("undo it")


def test_a_rolled_back_savepoint_drops_only_the_records_queued_inside_it(rt: Runtime) -> None:
    since = last_seq(rt)
    with rt.unit_of_work(actor="bob") as uow:
        audit.record(uow, AuditAction.DISCOVERY_SUBMIT, "before", {"objects": 0})
        with pytest.raises(RuntimeError), uow.session.begin_nested():
            _record_then_fail(uow, "inside")
        with uow.session.begin_nested():
            audit.record(uow, AuditAction.DISCOVERY_SUBMIT, "released", {"objects": 0})
        audit.record(uow, AuditAction.DISCOVERY_SUBMIT, "after", {"objects": 0})
    assert [r[1] for r in new_records(rt, since)] == ["before", "released", "after"]

    since = last_seq(rt)
    with pytest.raises(RuntimeError), rt.unit_of_work(actor="bob") as uow:
        _record_then_fail(uow, "rolled back")
    assert new_records(rt, since) == []
    assert verify(rt).ok
