"""``runas key …``: rotation keeps every secret readable, old keys can then be retired, and the
keyring and the ciphertexts refuse to be misused (domain.md §11)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import select

from runas.crypto.keyring import KeyringFile
from runas.errors import DecryptionError
from runas.runtime import Runtime
from runas.services import keys as key_service
from runas.services.accounts import decrypt_secrets
from runas.settings import load_settings
from runas.storage.tables import AccountRow, SecretVersionRow
from support.cli import Cli

OPAQUE = "secret could not be decrypted"


@contextmanager
def runtime() -> Iterator[Runtime]:
    """The service layer on the CLI's management group (the Cli set the environment)."""
    rt = Runtime(load_settings())
    try:
        yield rt
    finally:
        rt.close()


def all_secrets() -> dict[tuple[str, int], dict[str, str]]:
    """Every stored secret version, decrypted: (account, version) -> secret fields."""
    with runtime() as rt, rt.unit_of_work() as uow:
        rows = uow.session.execute(
            select(AccountRow.name, SecretVersionRow.account_id, SecretVersionRow.version).join(
                AccountRow, AccountRow.id == SecretVersionRow.account_id
            )
        ).all()
        return {(name, v): decrypt_secrets(uow, aid, v, purpose="test") for name, aid, v in rows}


def key_counts(cli: Cli) -> dict[str, tuple[bool, int]]:
    rows = json.loads(cli.ok("key", "list", "--json").out)
    return {r["id"]: (r["active"], r["secret_versions"]) for r in rows}


def add_accounts(cli: Cli) -> dict[tuple[str, int], dict[str, str]]:
    cli.ok("account", "add", "web", "--type", "basic", "--user", "w", "--stdin", stdin="pw-web-1")
    cli.ok("account", "update", "web", "--new-secret", "--stdin", stdin="pw-web-2")
    cli.ok("account", "add", "snmp", "--type", "snmpv3", "--user", "s", "--auth-protocol", "SHA",
           "--stdin-json", stdin='{"auth_key": "auth-key-123"}')  # fmt: skip
    cli.ok("account", "add", "sql", "--type", "simple", "--user", "sa", "--stdin", stdin="pw-sql")
    return {
        ("web", 1): {"password": "pw-web-1"},
        ("web", 2): {"password": "pw-web-2"},
        ("snmp", 1): {"auth_key": "auth-key-123"},
        ("sql", 1): {"password": "pw-sql"},
    }


def test_rotate_keeps_every_secret_readable_then_the_old_key_retires(cli: Cli) -> None:
    expected = add_accounts(cli)
    assert all_secrets() == expected
    [old] = key_counts(cli)
    assert key_counts(cli) == {old: (True, 4)}

    result = json.loads(cli.ok("key", "rotate", "--json").out)
    new = result["new_key"]
    assert new != old
    assert result["active_key"] == new
    assert result["rewrapped"] == 4
    assert result["remaining"] == 0
    assert key_counts(cli) == {old: (False, 0), new: (True, 4)}
    assert all_secrets() == expected
    # `account update` decrypts the current version to validate a public change
    for name in ("web", "snmp", "sql"):
        cli.ok("account", "update", name, "--description", "after rotation")

    assert "active" in cli.fails("key", "retire", new)
    assert "no key" in cli.fails("key", "retire", "kek-20000101-abcdef")
    cli.ok("key", "retire", old)
    assert key_counts(cli) == {new: (True, 4)}
    assert KeyringFile(cli.data_dir / "keyring.json").load().ids() == [new]
    assert os.stat(cli.data_dir / "keyring.json").st_mode & 0o777 == 0o600

    assert all_secrets() == expected
    for name in ("web", "snmp", "sql"):
        cli.ok("account", "update", name, "--description", "after retirement")
    # new secrets go under the new key
    cli.ok("account", "update", "sql", "--new-secret", "--stdin", stdin="pw-sql-2")
    assert key_counts(cli) == {new: (True, 5)}
    assert all_secrets()[("sql", 2)] == {"password": "pw-sql-2"}


def test_interrupted_rotation_is_finished_by_rewrap(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = add_accounts(cli)
    [old] = key_counts(cli)
    # A rotation that dies after its first batch (of one): that batch is committed, the rest
    # is still under the old key, and the keyring already holds both keys.
    monkeypatch.setattr(key_service, "BATCH", 1)
    real_rewrap = key_service.rewrap
    calls = 0

    def dying_rewrap(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise KeyboardInterrupt
        return real_rewrap(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(key_service, "rewrap", dying_rewrap)
    assert cli("key", "rotate", "--json").code == 130
    monkeypatch.setattr(key_service, "rewrap", real_rewrap)

    counts = key_counts(cli)
    [new] = set(counts) - {old}
    assert counts == {old: (False, 3), new: (True, 1)}
    assert all_secrets() == expected  # both keys are in the keyring: everything opens

    message = cli.fails("key", "retire", old)
    assert "3 secret version(s) are still wrapped by" in message
    assert "rewrap" in message
    assert key_counts(cli) == counts  # refused: nothing changed

    result = json.loads(cli.ok("key", "rewrap", "--json").out)
    assert result["rewrapped"] == 3
    assert result["new_key"] is None
    cli.ok("key", "retire", old)
    assert key_counts(cli) == {new: (True, 4)}
    assert all_secrets() == expected


def test_a_keyring_readable_by_others_is_refused(cli: Cli) -> None:
    add_accounts(cli)
    keyring = cli.data_dir / "keyring.json"
    before = keyring.read_bytes()
    keyring.chmod(0o644)
    for args in (
        ("key", "list"),
        ("key", "rotate"),
        ("account", "add", "new", "--type", "basic", "--user", "u", "--stdin"),
        ("account", "update", "web", "--description", "x"),
    ):
        message = cli.fails(*args, stdin="pw")
        assert "readable by others (mode 0644)" in message, message
        assert str(keyring) in message
    assert keyring.read_bytes() == before
    keyring.chmod(0o600)
    assert "new" not in {r["name"] for r in json.loads(cli.ok("account", "list", "--json").out)}
    assert [r["description"] for r in json.loads(cli.ok("account", "list", "--json").out)] == [
        "",
        "",
        "",
    ]
    assert len(key_counts(cli)) == 1


def _swap(db_url_cli: Cli, a: str, b: str, columns: tuple[str, ...]) -> None:
    """Move version 1's stored columns between two accounts' rows, as an attacker with write
    access to the database (and not the keyring) could."""
    with runtime() as rt, rt.database.session() as s:
        ids = {n: i for n, i in s.execute(select(AccountRow.name, AccountRow.id))}
        ra = s.get(SecretVersionRow, (ids[a], 1))
        rb = s.get(SecretVersionRow, (ids[b], 1))
        assert ra is not None
        assert rb is not None
        for col in columns:
            va, vb = getattr(ra, col), getattr(rb, col)
            setattr(ra, col, vb)
            setattr(rb, col, va)


def _decrypt_error(account: str, version: int = 1) -> str:
    with runtime() as rt, rt.unit_of_work() as uow:
        aid = uow.session.scalar(select(AccountRow.id).where(AccountRow.name == account))
        assert aid is not None
        with pytest.raises(DecryptionError) as info:
            decrypt_secrets(uow, aid, version, purpose="test")
    assert info.value.__cause__ is None
    return str(info.value)


@pytest.mark.parametrize(
    "columns", [("ciphertext", "wrapped_dek"), ("ciphertext",)], ids=["both", "ciphertext"]
)
def test_a_ciphertext_moved_to_another_account_does_not_decrypt(
    cli: Cli, columns: tuple[str, ...]
) -> None:
    cli.ok("account", "add", "alice", "--type", "simple", "--user", "a", "--stdin", stdin="pw-a")
    cli.ok("account", "add", "bob", "--type", "simple", "--user", "b", "--stdin", stdin="pw-b")
    _swap(cli, "alice", "bob", columns)

    assert _decrypt_error("alice") == OPAQUE
    assert _decrypt_error("bob") == OPAQUE
    assert cli.fails("account", "update", "alice", "--description", "x") == OPAQUE
    assert cli.fails("account", "update", "bob", "--user", "b2") == OPAQUE
    shown = json.loads(cli.ok("account", "show", "alice", "--json").out)
    assert shown["description"] == ""
    assert shown["secret_version"] == 1
    assert "pw-a" not in "".join(cli.outputs)
    assert "pw-b" not in "".join(cli.outputs)

    # Rotation cannot re-wrap them either, and says which row stopped it.
    message = cli.fails("key", "rotate")
    assert "could not be decrypted" in message
    assert "'alice'" in message

    # Put back, they open again: the failure was the move, not the data.
    _swap(cli, "alice", "bob", columns)
    cli.ok("key", "rewrap")
    assert {k: v for k, v in all_secrets().items()} == {
        ("alice", 1): {"password": "pw-a"},
        ("bob", 1): {"password": "pw-b"},
    }


def test_every_decryption_failure_reads_the_same(cli: Cli) -> None:
    cli.ok("account", "add", "alice", "--type", "simple", "--user", "a", "--stdin", stdin="pw-a")
    cli.ok("account", "update", "alice", "--new-secret", "--stdin", stdin="pw-a2")
    cli.ok("account", "add", "bob", "--type", "simple", "--user", "b", "--stdin", stdin="pw-b")
    with runtime() as rt, rt.database.session() as s:
        ids = {n: i for n, i in s.execute(select(AccountRow.name, AccountRow.id))}
        # a flipped bit in alice's current ciphertext
        row = s.get(SecretVersionRow, (ids["alice"], 2))
        assert row is not None
        row.ciphertext = row.ciphertext[:-1] + bytes([row.ciphertext[-1] ^ 1])
        # bob's data key relabelled as wrapped by a key the keyring does not hold
        row = s.get(SecretVersionRow, (ids["bob"], 1))
        assert row is not None
        row.kek_id = "kek-20000101-abcdef"
    assert _decrypt_error("alice", 2) == OPAQUE
    assert _decrypt_error("bob") == OPAQUE
    assert cli.fails("account", "update", "alice", "--description", "x") == OPAQUE
    assert cli.fails("account", "update", "bob", "--description", "x") == OPAQUE


def test_init_does_not_replace_a_lost_keyring(cli: Cli) -> None:
    expected = add_accounts(cli)
    keyring = cli.data_dir / "keyring.json"
    saved = keyring.rename(cli.data_dir / "keyring.json.moved")
    # A fresh keyring could open none of the stored secrets: init must say so, not make one.
    message = cli.fails("init")
    assert str(keyring) in message, message
    assert "4 secret version(s)" in message, message
    assert not keyring.exists()
    saved.rename(keyring)
    cli.ok("init")
    assert all_secrets() == expected


def test_init_twice_keeps_the_keyring(cli: Cli) -> None:
    expected = add_accounts(cli)
    before = (cli.data_dir / "keyring.json").read_bytes()
    out = cli.ok("init").out
    assert "(created" not in out
    assert (cli.data_dir / "keyring.json").read_bytes() == before
    assert all_secrets() == expected


def test_a_keyring_given_in_the_environment_cannot_be_rotated(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = add_accounts(cli)
    keyring = cli.data_dir / "keyring.json"
    monkeypatch.setenv("RUNAS_KEYRING", keyring.read_text())
    before = keyring.read_bytes()
    result = cli("key", "rotate")
    assert result.code == 1
    assert result.out == ""  # no progress bar for work that never started
    assert result.err.startswith("runas: error: the keyring comes from RUNAS_KEYRING")
    assert len(result.err.splitlines()) == 1
    assert keyring.read_bytes() == before
    assert all_secrets() == expected  # the environment's keyring opens everything
