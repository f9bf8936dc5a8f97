"""Envelope encryption: frozen known-answer vectors, binding to the row, tamper resistance, rewrap.

The vectors in ``vectors.json`` were generated once, *independently of runas*, straight from
``cryptography``'s AESGCM and the format in docs/security-model.md, then frozen::

    def blob(key, blob_type, nonce, data, aad):
        return b"RA\\x01" + bytes([blob_type]) + nonce + AESGCM(key).encrypt(nonce, data, aad)

    place = account_id.to_bytes(8, "big") + version.to_bytes(4, "big")
    secret_aad = b"runas:secret:v1\\x00" + place
    dek_aad = b"runas:dek:v1\\x00" + bytes([len(kek_id)]) + kek_id.encode("ascii") + place
    wrapped_dek = blob(kek, 0x02, wrap_nonce, dek, dek_aad)
    ciphertext = blob(dek, 0x01, secret_nonce, plaintext, secret_aad)

with hand-picked KEK/DEK/nonce bytes (``bytes(range(...))`` and the like). Never regenerate them:
a mismatch means the on-disk format changed, which needs a new format version instead.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

import runas.crypto
from runas.crypto.envelope import SealedSecret, open_secret, rewrap, seal_secret
from runas.crypto.keyring import KeyEncryptionKey, Keyring
from runas.errors import DecryptionError

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "vectors.json").read_text(encoding="utf-8")
)["vectors"]
NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
OPAQUE = "secret could not be decrypted"


def scripted_rng(*chunks: bytes) -> Callable[[int], bytes]:
    """An rng that hands out ``chunks`` in order and checks each request's size."""
    pending: Iterator[bytes] = iter(chunks)

    def rng(size: int) -> bytes:
        chunk = next(pending)
        assert len(chunk) == size
        return chunk

    return rng


def seeded_rng(seed: str) -> Callable[[int], bytes]:
    """Deterministic bytes (SHA-256 counter stream), distinct per seed, so tests do not depend
    on os.urandom and two keys made from different seeds never coincide."""
    counter = itertools.count()

    def rng(size: int) -> bytes:
        out = b""
        while len(out) < size:
            out += hashlib.sha256(f"{seed}:{next(counter)}".encode()).digest()
        return out[:size]

    return rng


def vector_keyring(vector: dict[str, Any]) -> Keyring:
    kek = KeyEncryptionKey(
        id=vector["kek_id"], created=NOW, material=bytes.fromhex(vector["kek_hex"])
    )
    return Keyring([kek], kek.id)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate(NOW, rng=seeded_rng("first"))


def assert_opaque(excinfo: pytest.ExceptionInfo[DecryptionError]) -> None:
    err = excinfo.value
    assert type(err) is DecryptionError
    assert str(err) == OPAQUE
    # No detail of what failed may travel with the error, not even as implicit context.
    assert err.__cause__ is None
    assert err.__context__ is None


# --- known-answer vectors --------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_sealing_reproduces_the_frozen_vector(vector: dict[str, Any]) -> None:
    rng = scripted_rng(
        bytes.fromhex(vector["dek_hex"]),
        bytes.fromhex(vector["secret_nonce_hex"]),
        bytes.fromhex(vector["wrap_nonce_hex"]),
    )
    sealed = seal_secret(
        vector_keyring(vector),
        account_id=vector["account_id"],
        version=vector["version"],
        plaintext=bytes.fromhex(vector["plaintext_hex"]),
        rng=rng,
    )
    assert sealed.kek_id == vector["kek_id"]
    assert sealed.wrapped_dek.hex() == vector["wrapped_dek_hex"]
    assert sealed.ciphertext.hex() == vector["ciphertext_hex"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_opening_the_frozen_vector_gives_the_plaintext(vector: dict[str, Any]) -> None:
    sealed = SealedSecret(
        kek_id=vector["kek_id"],
        wrapped_dek=bytes.fromhex(vector["wrapped_dek_hex"]),
        ciphertext=bytes.fromhex(vector["ciphertext_hex"]),
    )
    plaintext = open_secret(
        vector_keyring(vector),
        account_id=vector["account_id"],
        version=vector["version"],
        sealed=sealed,
    )
    assert plaintext == bytes.fromhex(vector["plaintext_hex"])


def test_vectors_cover_empty_and_non_ascii_plaintexts() -> None:
    plaintexts = [bytes.fromhex(v["plaintext_hex"]) for v in VECTORS]
    assert b"" in plaintexts
    assert any(not p.isascii() for p in plaintexts)


def test_documented_associated_data_opens_a_sealed_secret_with_plain_aesgcm(
    keyring: Keyring,
) -> None:
    # Pins the format described in docs/security-model.md, independently of runas's helpers.
    sealed = seal_secret(keyring, account_id=7, version=3, plaintext=b"hunter2")
    kek_id = keyring.active_id.encode("ascii")
    place = (7).to_bytes(8, "big") + (3).to_bytes(4, "big")
    assert sealed.wrapped_dek[:4] == b"RA\x01\x02"
    assert sealed.ciphertext[:4] == b"RA\x01\x01"
    dek = AESGCM(keyring.active().material).decrypt(
        sealed.wrapped_dek[4:16],
        sealed.wrapped_dek[16:],
        b"runas:dek:v1\x00" + bytes([len(kek_id)]) + kek_id + place,
    )
    plaintext = AESGCM(dek).decrypt(
        sealed.ciphertext[4:16], sealed.ciphertext[16:], b"runas:secret:v1\x00" + place
    )
    assert plaintext == b"hunter2"


# --- round trip --------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    plaintext=st.binary(max_size=2048),
    account_id=st.integers(min_value=0, max_value=2**64 - 1),
    version=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_round_trip(plaintext: bytes, account_id: int, version: int) -> None:
    keyring = Keyring.generate(NOW)
    sealed = seal_secret(keyring, account_id=account_id, version=version, plaintext=plaintext)
    assert sealed.kek_id == keyring.active_id
    assert len(sealed.ciphertext) == 4 + 12 + len(plaintext) + 16
    assert len(sealed.wrapped_dek) == 4 + 12 + 32 + 16
    assert open_secret(keyring, account_id=account_id, version=version, sealed=sealed) == plaintext


def test_each_seal_uses_a_fresh_data_key_and_nonce(keyring: Keyring) -> None:
    first = seal_secret(keyring, account_id=1, version=1, plaintext=b"same")
    second = seal_secret(keyring, account_id=1, version=1, plaintext=b"same")
    assert first.ciphertext != second.ciphertext
    assert first.wrapped_dek != second.wrapped_dek


# --- a sealed secret only opens where it was stored --------------------------------------------


def test_ciphertext_moved_to_another_account_does_not_open(keyring: Keyring) -> None:
    sealed = seal_secret(keyring, account_id=1, version=1, plaintext=b"s3cret")
    with pytest.raises(DecryptionError) as excinfo:
        open_secret(keyring, account_id=2, version=1, sealed=sealed)
    assert_opaque(excinfo)


def test_ciphertext_moved_to_another_version_does_not_open(keyring: Keyring) -> None:
    sealed = seal_secret(keyring, account_id=1, version=1, plaintext=b"s3cret")
    with pytest.raises(DecryptionError) as excinfo:
        open_secret(keyring, account_id=1, version=2, sealed=sealed)
    assert_opaque(excinfo)


def test_wrapped_keys_swapped_between_rows_do_not_open(keyring: Keyring) -> None:
    row_a = seal_secret(keyring, account_id=1, version=1, plaintext=b"alpha")
    row_b = seal_secret(keyring, account_id=2, version=1, plaintext=b"bravo")
    swapped_a = SealedSecret(row_a.kek_id, row_b.wrapped_dek, row_a.ciphertext)
    swapped_b = SealedSecret(row_b.kek_id, row_b.wrapped_dek, row_a.ciphertext)
    with pytest.raises(DecryptionError) as excinfo:
        open_secret(keyring, account_id=1, version=1, sealed=swapped_a)
    assert_opaque(excinfo)
    with pytest.raises(DecryptionError) as excinfo:
        open_secret(keyring, account_id=2, version=1, sealed=swapped_b)
    assert_opaque(excinfo)


def test_versions_of_one_account_cannot_be_swapped(keyring: Keyring) -> None:
    v1 = seal_secret(keyring, account_id=5, version=1, plaintext=b"old")
    v2 = seal_secret(keyring, account_id=5, version=2, plaintext=b"new")
    # Moving a whole (wrapped DEK, ciphertext) pair to the other version's row fails too.
    for sealed, version in ((v1, 2), (v2, 1)):
        with pytest.raises(DecryptionError) as excinfo:
            open_secret(keyring, account_id=5, version=version, sealed=sealed)
        assert_opaque(excinfo)


def test_wrapped_key_relabelled_with_another_kek_id_does_not_open(keyring: Keyring) -> None:
    sealed = seal_secret(keyring, account_id=1, version=1, plaintext=b"s3cret")
    keyring.add_key(NOW, rng=seeded_rng("second"))
    relabelled = SealedSecret(keyring.active_id, sealed.wrapped_dek, sealed.ciphertext)
    with pytest.raises(DecryptionError) as excinfo:
        open_secret(keyring, account_id=1, version=1, sealed=relabelled)
    assert_opaque(excinfo)


def test_unknown_kek_id_does_not_open(keyring: Keyring) -> None:
    sealed = seal_secret(keyring, account_id=1, version=1, plaintext=b"s3cret")
    other = Keyring.generate(NOW, rng=scripted_rng(b"\x07" * 32, b"\x99\x99\x99"))
    with pytest.raises(DecryptionError) as excinfo:
        open_secret(other, account_id=1, version=1, sealed=sealed)
    assert_opaque(excinfo)


# --- tampering -------------------------------------------------------------------------------


def _sealed_short(keyring: Keyring) -> SealedSecret:
    return seal_secret(keyring, account_id=9, version=4, plaintext=b"pw")


@pytest.mark.parametrize("part", ["wrapped_dek", "ciphertext"])
def test_flipping_any_single_byte_is_detected(keyring: Keyring, part: str) -> None:
    sealed = _sealed_short(keyring)
    blob: bytes = getattr(sealed, part)
    for position in range(len(blob)):
        for flip in (0x01, 0x80):
            damaged = bytearray(blob)
            damaged[position] ^= flip
            tampered = SealedSecret(
                sealed.kek_id,
                bytes(damaged) if part == "wrapped_dek" else sealed.wrapped_dek,
                bytes(damaged) if part == "ciphertext" else sealed.ciphertext,
            )
            with pytest.raises(DecryptionError) as excinfo:
                open_secret(keyring, account_id=9, version=4, sealed=tampered)
            assert_opaque(excinfo)


@pytest.mark.parametrize("part", ["wrapped_dek", "ciphertext"])
def test_truncated_or_extended_blobs_are_rejected(keyring: Keyring, part: str) -> None:
    sealed = _sealed_short(keyring)
    blob: bytes = getattr(sealed, part)
    variants = [blob[:length] for length in range(len(blob))] + [blob + b"\x00"]
    for variant in variants:
        tampered = SealedSecret(
            sealed.kek_id,
            variant if part == "wrapped_dek" else sealed.wrapped_dek,
            variant if part == "ciphertext" else sealed.ciphertext,
        )
        with pytest.raises(DecryptionError) as excinfo:
            open_secret(keyring, account_id=9, version=4, sealed=tampered)
        assert_opaque(excinfo)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"XA\x01\x01", "wrong magic"),
        (b"RA\x02\x01", "unknown format version"),
        (b"RA\x00\x01", "format version zero"),
        (b"RA\x01\x02", "wrapped-DEK type on a ciphertext"),
        (b"RA\x01\x7f", "unknown type"),
    ],
)
def test_bad_headers_are_rejected(keyring: Keyring, header: bytes, reason: str) -> None:
    sealed = _sealed_short(keyring)
    tampered = SealedSecret(sealed.kek_id, sealed.wrapped_dek, header + sealed.ciphertext[4:])
    with pytest.raises(DecryptionError) as excinfo:
        open_secret(keyring, account_id=9, version=4, sealed=tampered)
    assert_opaque(excinfo)


def test_wrapped_dek_and_ciphertext_cannot_stand_in_for_each_other(keyring: Keyring) -> None:
    sealed = _sealed_short(keyring)
    crossed = SealedSecret(sealed.kek_id, sealed.ciphertext, sealed.wrapped_dek)
    with pytest.raises(DecryptionError) as excinfo:
        open_secret(keyring, account_id=9, version=4, sealed=crossed)
    assert_opaque(excinfo)


def test_memoryview_blobs_from_storage_open(keyring: Keyring) -> None:
    sealed = _sealed_short(keyring)
    as_views = SealedSecret(
        sealed.kek_id,
        memoryview(sealed.wrapped_dek),  # type: ignore[arg-type]
        memoryview(sealed.ciphertext),  # type: ignore[arg-type]
    )
    assert open_secret(keyring, account_id=9, version=4, sealed=as_views) == b"pw"


@pytest.mark.parametrize(("account_id", "version"), [(-1, 1), (2**64, 1), (1, -1), (1, 2**32)])
def test_out_of_range_places_are_caller_errors(
    keyring: Keyring, account_id: int, version: int
) -> None:
    with pytest.raises(ValueError, match="out of range"):
        seal_secret(keyring, account_id=account_id, version=version, plaintext=b"x")


def test_an_unflushed_row_id_is_a_clear_caller_error(keyring: Keyring) -> None:
    with pytest.raises(TypeError, match="account_id must be an int, not NoneType"):
        seal_secret(keyring, account_id=None, version=1, plaintext=b"x")  # type: ignore[arg-type]


# --- rotation ----------------------------------------------------------------------------------


def test_rewrap_moves_the_data_key_to_the_active_kek(keyring: Keyring) -> None:
    old_id = keyring.active_id
    sealed = seal_secret(keyring, account_id=3, version=2, plaintext=b"rotate me")
    new_key = keyring.add_key(NOW, rng=seeded_rng("second"))
    rewrapped = rewrap(keyring, account_id=3, version=2, sealed=sealed)
    assert rewrapped.kek_id == new_key.id != old_id
    assert rewrapped.ciphertext == sealed.ciphertext  # byte-identical: rotation is cheap
    assert rewrapped.wrapped_dek != sealed.wrapped_dek
    assert open_secret(keyring, account_id=3, version=2, sealed=rewrapped) == b"rotate me"


def test_after_retiring_the_old_kek_only_rewrapped_secrets_open(keyring: Keyring) -> None:
    old_id = keyring.active_id
    moved = seal_secret(keyring, account_id=1, version=1, plaintext=b"moved")
    left = seal_secret(keyring, account_id=2, version=1, plaintext=b"left behind")
    keyring.add_key(NOW, rng=seeded_rng("second"))
    moved = rewrap(keyring, account_id=1, version=1, sealed=moved)
    keyring.retire(old_id)
    assert open_secret(keyring, account_id=1, version=1, sealed=moved) == b"moved"
    with pytest.raises(DecryptionError) as excinfo:
        open_secret(keyring, account_id=2, version=1, sealed=left)
    assert_opaque(excinfo)


def test_rewrap_under_the_active_kek_returns_the_same_object(keyring: Keyring) -> None:
    sealed = seal_secret(keyring, account_id=1, version=1, plaintext=b"x")
    assert rewrap(keyring, account_id=1, version=1, sealed=sealed) is sealed


@pytest.mark.parametrize("damage", ["wrong row", "damaged ciphertext"])
def test_rewrap_refuses_what_would_not_open(keyring: Keyring, damage: str) -> None:
    sealed = seal_secret(keyring, account_id=1, version=1, plaintext=b"x")
    keyring.add_key(NOW, rng=seeded_rng("second"))
    account_id = 2 if damage == "wrong row" else 1
    if damage == "damaged ciphertext":
        broken = bytearray(sealed.ciphertext)
        broken[-1] ^= 1
        sealed = SealedSecret(sealed.kek_id, sealed.wrapped_dek, bytes(broken))
    with pytest.raises(DecryptionError) as excinfo:
        rewrap(keyring, account_id=account_id, version=1, sealed=sealed)
    assert_opaque(excinfo)


# --- presentation and public surface ---------------------------------------------------------


def test_sealed_secret_repr_is_short_and_has_no_bytes(keyring: Keyring) -> None:
    sealed = seal_secret(keyring, account_id=1, version=1, plaintext=b"x" * 100)
    text = repr(sealed)
    assert text == (
        f"SealedSecret(kek_id={keyring.active_id!r}, wrapped_dek=<64 bytes>, "
        "ciphertext=<132 bytes>)"
    )


def test_public_surface_is_pinned() -> None:
    assert sorted(runas.crypto.__all__) == [
        "KeyEncryptionKey",
        "Keyring",
        "KeyringFile",
        "KeyringSource",
        "SealedSecret",
        "load_keyring",
        "locate_keyring",
        "open_secret",
        "rewrap",
        "seal_secret",
    ]
    for name in runas.crypto.__all__:
        assert hasattr(runas.crypto, name)
