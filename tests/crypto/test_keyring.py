"""The keyring: KEK lifecycle, strict JSON parsing, the 0600 keyring file and source selection."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from runas.crypto.keyring import (
    KeyEncryptionKey,
    Keyring,
    KeyringFile,
    load_keyring,
    locate_keyring,
)
from runas.errors import DecryptionError, KeyringError

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
LATER = datetime(2027, 2, 3, 4, 5, tzinfo=UTC)


def seeded_rng(seed: str) -> Callable[[int], bytes]:
    """Deterministic bytes (SHA-256 counter stream), distinct per seed."""
    counter = itertools.count()

    def rng(size: int) -> bytes:
        out = b""
        while len(out) < size:
            out += hashlib.sha256(f"{seed}:{next(counter)}".encode()).digest()
        return out[:size]

    return rng


def material_forms(material: bytes) -> list[str]:
    """Every way key bytes could leak into text."""
    return [
        material.hex(),
        material.hex().upper(),
        base64.b64encode(material).decode(),
        base64.urlsafe_b64encode(material).decode(),
        repr(material),
    ]


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate(NOW, rng=seeded_rng("first"))


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    # With umask 000 nothing but our own mode arguments keeps the keyring private.
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# --- keys and the keyring ----------------------------------------------------------------------


def test_generated_key_has_a_dated_id_and_32_random_bytes() -> None:
    keyring = Keyring.generate(NOW, rng=seeded_rng("x"))
    key = keyring.active()
    assert re.fullmatch(r"kek-20261121-[0-9a-f]{6}", key.id)
    assert key.created == NOW
    assert len(key.material) == 32
    assert keyring.ids() == [key.id]


def test_key_created_is_normalised_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    key = KeyEncryptionKey(
        id="kek-20261121-aaaaaa",
        created=datetime(2026, 11, 21, 12, tzinfo=plus_two),
        material=bytes(32),
    )
    assert key.created == NOW
    assert key.created.tzinfo is UTC


def test_naive_timestamps_are_refused(keyring: Keyring) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        keyring.add_key(datetime(2026, 1, 1))  # naive on purpose


def test_add_key_makes_the_new_key_active_and_keeps_the_old(keyring: Keyring) -> None:
    old = keyring.active()
    new = keyring.add_key(LATER, rng=seeded_rng("second"))
    assert new.id.startswith("kek-20270203-")
    assert keyring.active() == new
    assert keyring.active_id == new.id
    assert keyring.ids() == [old.id, new.id]
    assert keyring.get(old.id) == old
    assert new.material != old.material


def test_add_key_retries_an_id_collision() -> None:
    # Same first 3 id bytes twice, then different: the colliding id must not replace a key.
    chunks = iter(
        [
            b"\x01" * 32,
            b"\xab\xcd\xef",
            b"\x02" * 32,
            b"\xab\xcd\xef",
            b"\x03" * 32,
            b"\x00\x00\x01",
        ]
    )
    keyring = Keyring.generate(NOW, rng=lambda size: next(chunks))
    new = keyring.add_key(NOW, rng=lambda size: next(chunks))
    assert keyring.ids() == ["kek-20261121-abcdef", "kek-20261121-000001"]
    assert new.material == b"\x03" * 32
    assert keyring.get("kek-20261121-abcdef").material == b"\x01" * 32


def test_unknown_key_id_is_the_opaque_decryption_error(keyring: Keyring) -> None:
    with pytest.raises(DecryptionError) as excinfo:
        keyring.get("kek-20000101-000000")
    assert str(excinfo.value) == "secret could not be decrypted"


def test_retire_removes_an_old_key(keyring: Keyring) -> None:
    old_id = keyring.active_id
    keyring.add_key(LATER, rng=seeded_rng("second"))
    keyring.retire(old_id)
    assert old_id not in keyring.ids()
    assert old_id not in keyring.to_json()
    with pytest.raises(DecryptionError):
        keyring.get(old_id)


def test_retire_refuses_the_active_key(keyring: Keyring) -> None:
    with pytest.raises(KeyringError, match=f"cannot retire the active key {keyring.active_id}"):
        keyring.retire(keyring.active_id)
    assert keyring.ids() == [keyring.active_id]


def test_retire_refuses_an_unknown_key(keyring: Keyring) -> None:
    with pytest.raises(KeyringError, match="no key kek-20000101-000000"):
        keyring.retire("kek-20000101-000000")


def test_repr_and_str_never_show_key_material(keyring: Keyring) -> None:
    keyring.add_key(LATER, rng=seeded_rng("second"))
    texts = [repr(keyring), str(keyring), f"{keyring}"]
    for key_id in keyring.ids():
        key = keyring.get(key_id)
        texts += [repr(key), str(key), f"{key!r}", repr([key])]
    joined = "\n".join(texts)
    for key_id in keyring.ids():
        assert key_id in joined
        for form in material_forms(keyring.get(key_id).material):
            assert form not in joined


# --- JSON --------------------------------------------------------------------------------------


def test_json_round_trip(keyring: Keyring) -> None:
    keyring.add_key(LATER, rng=seeded_rng("second"))
    doc = json.loads(keyring.to_json())
    assert doc["format"] == "runas-keyring"
    assert doc["version"] == 1
    assert doc["active"] == keyring.active_id
    again = Keyring.from_json(keyring.to_json(), "test")
    assert again.ids() == keyring.ids()
    assert again.active_id == keyring.active_id
    for key_id in keyring.ids():
        assert again.get(key_id) == keyring.get(key_id)


def _doc(keyring: Keyring) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(keyring.to_json())
    return doc


BROKEN_DOCS: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("not an object", lambda d: [d], "is not a JSON object"),
    ("wrong format", lambda d: {**d, "format": "fernet"}, "is not a runas keyring"),
    ("future version", lambda d: {**d, "version": 2}, "unsupported version 2"),
    ("boolean version", lambda d: {**d, "version": True}, "unsupported version True"),
    ("unknown field", lambda d: {**d, "extra": 1}, "unknown fields: extra"),
    ("no keys", lambda d: {**d, "keys": []}, 'no "keys" list'),
    ("missing active", lambda d: {k: v for k, v in d.items() if k != "active"}, 'no "active"'),
    ("active not a key", lambda d: {**d, "active": "kek-20000101-000000"}, "no key with that id"),
    ("key not an object", lambda d: {**d, "keys": ["x"]}, r"keys\[0\] is not a JSON object"),
    ("bad id", lambda d: {**d, "keys": [{**d["keys"][0], "id": "k1"}]}, "invalid id"),
    ("extra key field", lambda d: {**d, "keys": [{**d["keys"][0], "x": 1}]}, "exactly the fields"),
    (
        "naive created",
        lambda d: {**d, "keys": [{**d["keys"][0], "created": "2026-11-21T10:00:00"}]},
        'invalid "created"',
    ),
    (
        "garbage created",
        lambda d: {**d, "keys": [{**d["keys"][0], "created": "yesterday"}]},
        'invalid "created"',
    ),
    (
        "short key",
        lambda d: {**d, "keys": [{**d["keys"][0], "key": base64.b64encode(bytes(16)).decode()}]},
        "is not 32 bytes of base64",
    ),
    (
        "long key",
        lambda d: {**d, "keys": [{**d["keys"][0], "key": base64.b64encode(bytes(33)).decode()}]},
        "is not 32 bytes of base64",
    ),
    (
        "not base64",
        lambda d: {**d, "keys": [{**d["keys"][0], "key": "!" * 44}]},
        "is not 32 bytes of base64",
    ),
    (
        "duplicate ids",
        lambda d: {**d, "keys": [d["keys"][0], {**d["keys"][0], "key": d["keys"][0]["key"]}]},
        "two keys with id",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [(mutate, problem) for _, mutate, problem in BROKEN_DOCS],
    ids=[name for name, _, _ in BROKEN_DOCS],
)
def test_invalid_keyring_json_is_refused_naming_the_source(
    keyring: Keyring, mutate: Callable[[dict[str, Any]], Any], problem: str
) -> None:
    text = json.dumps(mutate(_doc(keyring)))
    with pytest.raises(KeyringError, match=problem) as excinfo:
        Keyring.from_json(text, "/srv/runas/keyring.json")
    message = str(excinfo.value)
    assert message.startswith("keyring /srv/runas/keyring.json ")
    assert "\n" not in message
    for form in material_forms(keyring.active().material):
        assert form not in message


def test_malformed_json_is_refused_without_chaining_the_text(keyring: Keyring) -> None:
    text = keyring.to_json()[:-5]
    with pytest.raises(KeyringError, match=r"^keyring RUNAS_KEYRING is not valid JSON") as excinfo:
        Keyring.from_json(text, "RUNAS_KEYRING")
    # json.JSONDecodeError keeps the whole document (the keys) on ``.doc``: it must not ride along.
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__context__ is None


# --- the keyring file --------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
def test_create_writes_a_0600_file_in_a_new_0700_directory(tmp_path: Path) -> None:
    path = tmp_path / "data" / "keyring.json"
    created = KeyringFile(path).create(NOW, rng=seeded_rng("x"))
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    loaded = KeyringFile(path).load()
    assert loaded.ids() == created.ids()
    assert loaded.active() == created.active()


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    original = KeyringFile(path).create(NOW)
    with pytest.raises(KeyringError, match=re.escape(f"keyring {path} already exists")):
        KeyringFile(path).create(NOW)
    assert KeyringFile(path).load().active() == original.active()


def test_load_refuses_a_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    KeyringFile(path).create(NOW)
    path.chmod(0o644)
    with pytest.raises(KeyringError) as excinfo:
        KeyringFile(path).load()
    assert str(excinfo.value) == f"keyring {path} is readable by others (mode 0644); chmod 600 it"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o660])
def test_load_refuses_any_group_or_other_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "keyring.json"
    KeyringFile(path).create(NOW)
    path.chmod(mode)
    with pytest.raises(KeyringError, match=rf"by others \(mode {mode:04o}\); chmod 600 it"):
        KeyringFile(path).load()


def test_load_accepts_a_read_only_owner_file(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    created = KeyringFile(path).create(NOW)
    path.chmod(0o400)
    assert KeyringFile(path).load().active() == created.active()


def test_load_of_a_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(KeyringError, match=rf"^keyring {re.escape(str(path))} does not exist$"):
        KeyringFile(path).load()


def test_load_of_a_corrupt_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    KeyringFile(path).create(NOW)
    path.write_text('{"format": "runas-keyring"')
    with pytest.raises(KeyringError, match=rf"^keyring {re.escape(str(path))} is not valid JSON"):
        KeyringFile(path).load()


@pytest.mark.usefixtures("permissive_umask")
def test_save_replaces_atomically_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    file = KeyringFile(path)
    keyring = file.create(NOW)
    path.chmod(0o644)  # even a loosened file comes back private after a save
    keyring.add_key(LATER)
    file.save(keyring)
    assert _mode(path) == 0o600
    assert file.load().ids() == keyring.ids()
    assert file.load().active_id == keyring.active_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keyring.json"]  # no temp files left


def test_failed_save_leaves_no_temp_file_behind(tmp_path: Path, keyring: Keyring) -> None:
    path = tmp_path / "keyring.json"
    path.mkdir()  # os.replace cannot put a file over a directory
    with pytest.raises(KeyringError, match=rf"^keyring {re.escape(str(path))} cannot be written"):
        KeyringFile(path).save(keyring)
    assert [p.name for p in tmp_path.iterdir()] == ["keyring.json"]


# --- where the production keyring comes from ---------------------------------------------------


def test_env_json_takes_precedence_over_file_and_data_dir(tmp_path: Path) -> None:
    env_ring = Keyring.generate(NOW, rng=seeded_rng("env"))
    file_path = tmp_path / "file.json"
    KeyringFile(file_path).create(NOW, rng=seeded_rng("file"))
    data_path = tmp_path / "data.json"
    KeyringFile(data_path).create(NOW, rng=seeded_rng("data"))
    env = {"RUNAS_KEYRING": env_ring.to_json(), "RUNAS_KEYRING_FILE": str(file_path)}
    loaded = load_keyring(path=data_path, env=env)
    assert loaded.active() == env_ring.active()


def test_env_file_takes_precedence_over_data_dir(tmp_path: Path) -> None:
    file_path = tmp_path / "file.json"
    file_ring = KeyringFile(file_path).create(NOW, rng=seeded_rng("file"))
    data_path = tmp_path / "data.json"
    KeyringFile(data_path).create(NOW, rng=seeded_rng("data"))
    loaded = load_keyring(path=data_path, env={"RUNAS_KEYRING_FILE": str(file_path)})
    assert loaded.active() == file_ring.active()


def test_data_dir_keyring_is_the_fallback(tmp_path: Path) -> None:
    data_path = tmp_path / "data.json"
    data_ring = KeyringFile(data_path).create(NOW)
    assert load_keyring(path=data_path, env={}).active() == data_ring.active()


def test_env_keyring_file_is_held_to_the_same_permissions(tmp_path: Path) -> None:
    file_path = tmp_path / "file.json"
    KeyringFile(file_path).create(NOW)
    file_path.chmod(0o644)
    with pytest.raises(KeyringError, match="readable by others"):
        load_keyring(path=None, env={"RUNAS_KEYRING_FILE": str(file_path)})


def test_env_keyring_errors_name_the_variable() -> None:
    with pytest.raises(KeyringError, match=r"^keyring RUNAS_KEYRING is not a JSON object$"):
        load_keyring(path=None, env={"RUNAS_KEYRING": "[]"})


@pytest.mark.parametrize("name", ["RUNAS_KEYRING", "RUNAS_KEYRING_FILE"])
def test_empty_env_variables_are_errors_not_skipped(tmp_path: Path, name: str) -> None:
    data_path = tmp_path / "data.json"
    KeyringFile(data_path).create(NOW)
    with pytest.raises(KeyringError, match=f"^{name} is set but empty$"):
        load_keyring(path=data_path, env={name: ""})


def test_no_keyring_source_is_an_error() -> None:
    with pytest.raises(KeyringError, match="no keyring configured"):
        load_keyring(path=None, env={})


def test_env_keyring_can_be_used_but_not_saved(keyring: Keyring) -> None:
    source = locate_keyring(path=None, env={"RUNAS_KEYRING": keyring.to_json()})
    assert not source.writable
    loaded = source.load()
    loaded.add_key(LATER)
    with pytest.raises(KeyringError, match="comes from RUNAS_KEYRING and cannot be saved"):
        source.save(loaded)
    for form in material_forms(keyring.active().material):
        assert form not in repr(source)


def test_file_sources_are_writable(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    KeyringFile(path).create(NOW)
    for env in ({}, {"RUNAS_KEYRING_FILE": str(path)}):
        source = locate_keyring(path=path, env=env)
        assert source.writable
        keyring = source.load()
        keyring.add_key(LATER)
        source.save(keyring)
        assert KeyringFile(path).load().active_id == keyring.active_id
