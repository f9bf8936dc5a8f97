"""Key-encryption-key rotation, online: a new KEK becomes active, then every data key is
re-wrapped in small batches (each its own transaction, so other work goes on meanwhile); the
old KEK can be retired once no secret version depends on it."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import func, select

from runas.crypto.envelope import SealedSecret, rewrap
from runas.crypto.keyring import Keyring, KeyringSource
from runas.errors import DecryptionError, InUse, KeyringError, NotFound, RunAsError
from runas.runtime import Runtime
from runas.services import audit
from runas.services.agents import GROUP_KEY_ACCOUNT_ID, GROUP_KEY_VERSION
from runas.services.audit import AuditAction, Outcome
from runas.storage.tables import AccountRow, GroupKeyRow, SecretVersionRow

Progress = Callable[[int, int], None]
BATCH = 200


class KeyView(BaseModel):
    id: str
    created: datetime
    active: bool
    secret_versions: int


class RotateResult(BaseModel):
    new_key: str | None
    active_key: str
    rewrapped: int
    remaining: int


def _counts(rt: Runtime) -> dict[str, int]:
    with rt.database.session() as s:
        return dict(
            s.execute(
                select(SecretVersionRow.kek_id, func.count()).group_by(SecretVersionRow.kek_id)
            ).all()
        )


def list_keys(rt: Runtime) -> list[KeyView]:
    rt.ensure_initialised()
    keyring = rt.keyring()
    counts = _counts(rt)
    return [
        KeyView(
            id=k,
            created=keyring.get(k).created,
            active=k == keyring.active_id,
            secret_versions=counts.get(k, 0),
        )
        for k in keyring.ids()
    ]


def _audit(
    rt: Runtime,
    actor: str | None,
    source: str,
    action: AuditAction,
    target: str,
    details: dict[str, object],
    outcome: Outcome = "success",
) -> None:
    """Rotation works in many transactions and on the keyring file, outside the database: its
    record is written in a transaction of its own once the outcome is known."""
    with rt.unit_of_work(actor=actor, source=source) as uow:
        audit.record(uow, action, target, details, outcome=outcome)


@contextlib.contextmanager
def _locked(source: KeyringSource) -> Iterator[None]:
    """One rotation at a time: two concurrent saves of the keyring would lose a key."""
    if source.file is None:
        raise KeyringError(
            f"the keyring comes from {source.description} and cannot be changed here; "
            "rotate it where it is managed"
        )
    lock_path = Path(str(source.file.path) + ".lock")
    with lock_path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KeyringError("another key rotation is running") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def rotate(
    rt: Runtime,
    progress: Progress | None = None,
    *,
    actor: str | None = None,
    source: str = "local",
) -> RotateResult:
    rt.ensure_initialised()
    keyring_source = rt.keyring_source()
    with _locked(keyring_source):
        keyring = keyring_source.load()
        new = keyring.add_key(rt.clock())
        # Saved before any row points at it: a crash mid-way leaves a keyring that opens
        # every row, old or re-wrapped. 'runas key rewrap' finishes the job.
        keyring_source.save(keyring)
        rt.forget_keyring()
        details: dict[str, object] = {"new_key_id": new.id}
        done = _rewrap_audited(
            rt, keyring, progress, actor, source, AuditAction.KEY_ROTATE, new.id, details
        )
    return RotateResult(new_key=new.id, active_key=keyring.active_id, rewrapped=done, remaining=0)


def rewrap_all(
    rt: Runtime,
    progress: Progress | None = None,
    *,
    actor: str | None = None,
    source: str = "local",
) -> RotateResult:
    """Re-wrap whatever is not yet under the active KEK (resumes an interrupted rotation)."""
    rt.ensure_initialised()
    keyring_source = rt.keyring_source()
    with _locked(keyring_source):
        keyring = keyring_source.load()
        done = _rewrap_audited(
            rt, keyring, progress, actor, source, AuditAction.KEY_REWRAP, keyring.active_id, {}
        )
    return RotateResult(new_key=None, active_key=keyring.active_id, rewrapped=done, remaining=0)


def _rewrap_audited(
    rt: Runtime,
    keyring: Keyring,
    progress: Progress | None,
    actor: str | None,
    source: str,
    action: AuditAction,
    target: str,
    details: dict[str, object],
) -> int:
    """Re-wrap everything, then record the outcome (with the count, or the error)."""
    try:
        done = _rewrap_all(rt, keyring, progress)
    except RunAsError as err:
        _audit(rt, actor, source, action, target, {**details, "error": err.code}, "failure")
        raise
    _audit(rt, actor, source, action, target, {**details, "rewrapped": done})
    return done


def _rewrap_all(rt: Runtime, keyring: Keyring, progress: Progress | None) -> int:
    active = keyring.active_id
    _rewrap_group_keys(rt, keyring)
    with rt.database.session() as s:
        total = (
            s.scalar(
                select(func.count())
                .select_from(SecretVersionRow)
                .where(SecretVersionRow.kek_id != active)
            )
            or 0
        )
    done = 0
    if progress:
        progress(done, total)
    while True:
        with rt.database.session() as s:
            rows = list(
                s.scalars(
                    select(SecretVersionRow)
                    .where(SecretVersionRow.kek_id != active)
                    .order_by(SecretVersionRow.account_id, SecretVersionRow.version)
                    .limit(BATCH)
                    .with_for_update()
                )
            )
            if not rows:
                break
            for row in rows:
                sealed = SealedSecret(row.kek_id, row.wrapped_dek, row.ciphertext)
                try:
                    new = rewrap(
                        keyring, account_id=row.account_id, version=row.version, sealed=sealed
                    )
                except DecryptionError:
                    name = s.scalar(select(AccountRow.name).where(AccountRow.id == row.account_id))
                    raise DecryptionError(
                        f"secret version {row.version} of account {name!r} could not be "
                        f"decrypted; rotation stopped after {done} re-wrapped"
                    ) from None
                row.kek_id = new.kek_id
                row.wrapped_dek = new.wrapped_dek
                done += 1
        if progress:
            progress(done, total)
    return done


# -- the management group's own keys (the agent CA, services/agents.py) ----------------------
#
# Sealed like a secret version at the envelope place reserved for them (account id 0,
# version 1). Few and small: re-wrapped in one transaction, before the secret versions, and
# not counted in ``rewrapped`` (which counts secret versions).


def _rewrap_group_keys(rt: Runtime, keyring: Keyring) -> None:
    with rt.database.session() as s:
        rows = s.scalars(
            select(GroupKeyRow).where(GroupKeyRow.kek_id != keyring.active_id).with_for_update()
        )
        for row in rows:
            sealed = SealedSecret(row.kek_id, bytes(row.wrapped_dek), bytes(row.ciphertext))
            try:
                new = rewrap(
                    keyring,
                    account_id=GROUP_KEY_ACCOUNT_ID,
                    version=GROUP_KEY_VERSION,
                    sealed=sealed,
                )
            except DecryptionError:
                raise DecryptionError(
                    f"the management group key {row.name!r} could not be decrypted; "
                    "rotation stopped before any secret version"
                ) from None
            row.kek_id = new.kek_id
            row.wrapped_dek = new.wrapped_dek


def _group_key_count(rt: Runtime, key_id: str) -> int:
    with rt.database.session() as s:
        count = s.scalar(
            select(func.count()).select_from(GroupKeyRow).where(GroupKeyRow.kek_id == key_id)
        )
    return int(count or 0)


def retire(
    rt: Runtime, key_id: str, *, actor: str | None = None, source: str = "local"
) -> list[KeyView]:
    rt.ensure_initialised()
    keyring_source = rt.keyring_source()
    with _locked(keyring_source):
        keyring = keyring_source.load()
        if key_id not in keyring:
            raise NotFound(f"no key {key_id!r} in the keyring")
        if key_id == keyring.active_id:
            raise InUse(f"{key_id} is the active key: rotate first ('runas key rotate')")
        still = _counts(rt).get(key_id, 0)
        if still:
            raise InUse(
                f"{still} secret version(s) are still wrapped by {key_id}: run 'runas key rewrap'"
            )
        if _group_key_count(rt, key_id):
            raise InUse(
                f"the management group's agent CA key is still wrapped by {key_id}: "
                "run 'runas key rewrap'"
            )
        keyring.retire(key_id)
        keyring_source.save(keyring)
        rt.forget_keyring()
    _audit(rt, actor, source, AuditAction.KEY_RETIRE, key_id, {"key_count": len(keyring.ids())})
    return list_keys(rt)
