"""Envelope encryption of secret versions: AES-256-GCM, one data key (DEK) per secret version,
the DEK wrapped by the keyring's active key-encryption key (KEK).

Blob format (both blobs)::

    b"RA" | format version (1 byte, 0x01) | type (1 byte) | nonce (12 bytes) | ciphertext || tag

with type 0x01 = secret ciphertext (under the DEK) and 0x02 = wrapped DEK (under a KEK).

Associated data, which binds each blob to where it is stored (integers unsigned big-endian)::

    secret:      b"runas:secret:v1\\x00" | account_id (8 bytes) | version (4 bytes)
    wrapped DEK: b"runas:dek:v1\\x00" | len(kek_id) (1 byte) | kek_id (ASCII)
                 | account_id (8 bytes) | version (4 bytes)

So a ciphertext or wrapped DEK copied to another account's row, to another version, or
relabelled with another KEK id fails to open. Every failure to open raises the same
``DecryptionError`` with no chained cause: callers (and attackers) learn nothing but "no".

Each DEK encrypts exactly one message, so its random nonce can never repeat under it; KEK nonces
are random too, and a KEK would need ~2**32 wraps before that becomes a concern.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from runas.crypto.keyring import KEY_BYTES, Keyring, Rng
from runas.errors import DecryptionError

MAGIC = b"RA"
FORMAT_VERSION = 0x01
TYPE_SECRET = 0x01
TYPE_WRAPPED_DEK = 0x02
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = len(MAGIC) + 2

SECRET_AAD_LABEL = b"runas:secret:v1\x00"
DEK_AAD_LABEL = b"runas:dek:v1\x00"

_MAX_ACCOUNT_ID = 2**64 - 1
_MAX_VERSION = 2**32 - 1


@dataclass(frozen=True)
class SealedSecret:
    """What storage keeps for one secret version. Not secret itself, but repr stays short."""

    kek_id: str
    wrapped_dek: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return (
            f"SealedSecret(kek_id={self.kek_id!r}, wrapped_dek=<{len(self.wrapped_dek)} bytes>, "
            f"ciphertext=<{len(self.ciphertext)} bytes>)"
        )


def secret_aad(account_id: int, version: int) -> bytes:
    """Associated data of a secret ciphertext (see the module docstring)."""
    return SECRET_AAD_LABEL + account_id.to_bytes(8, "big") + version.to_bytes(4, "big")


def dek_aad(kek_id: str, account_id: int, version: int) -> bytes:
    """Associated data of a wrapped DEK (see the module docstring)."""
    kid = kek_id.encode("ascii")
    return (
        DEK_AAD_LABEL
        + len(kid).to_bytes(1, "big")
        + kid
        + account_id.to_bytes(8, "big")
        + version.to_bytes(4, "big")
    )


def seal_secret(
    keyring: Keyring, *, account_id: int, version: int, plaintext: bytes, rng: Rng = os.urandom
) -> SealedSecret:
    """Encrypt one secret version under a fresh DEK wrapped by the active KEK.

    ``rng`` is called three times, in this order: DEK (32 bytes), secret nonce (12), wrap nonce
    (12). The known-answer vectors depend on that order.
    """
    _check_place(account_id, version)
    kek = keyring.active()
    dek = _random(rng, KEY_BYTES)
    ciphertext = _seal(
        dek, TYPE_SECRET, _random(rng, NONCE_BYTES), plaintext, secret_aad(account_id, version)
    )
    wrapped = _wrap(kek.id, kek.material, dek, account_id, version, rng)
    return SealedSecret(kek_id=kek.id, wrapped_dek=wrapped, ciphertext=ciphertext)


def open_secret(keyring: Keyring, *, account_id: int, version: int, sealed: SealedSecret) -> bytes:
    """Decrypt a secret version stored for ``account_id``/``version``; any failure (unknown KEK,
    tampering, wrong row, unknown format) raises the same ``DecryptionError``."""
    _check_place(account_id, version)
    try:
        dek = _unwrap(keyring, sealed, account_id, version)
        return _open(dek, TYPE_SECRET, sealed.ciphertext, secret_aad(account_id, version))
    except (InvalidTag, DecryptionError, ValueError):
        pass
    # Raised outside the handler so no cause or context (which part failed) travels with it.
    raise DecryptionError()


def rewrap(
    keyring: Keyring,
    *,
    account_id: int,
    version: int,
    sealed: SealedSecret,
    rng: Rng = os.urandom,
) -> SealedSecret:
    """Re-wrap the DEK with the keyring's active KEK; the ciphertext stays byte-identical.

    The ciphertext is authenticated first, so rotation stops at a damaged or misplaced row
    instead of blessing it under the new key. Already under the active KEK: returns ``sealed``
    itself (callers can skip the write with an ``is`` check). ``rng`` gives the wrap nonce.
    """
    _check_place(account_id, version)
    try:
        dek = _unwrap(keyring, sealed, account_id, version)
        _open(dek, TYPE_SECRET, sealed.ciphertext, secret_aad(account_id, version))
    except (InvalidTag, DecryptionError, ValueError):
        pass
    else:
        kek = keyring.active()
        if sealed.kek_id == kek.id:
            return sealed
        wrapped = _wrap(kek.id, kek.material, dek, account_id, version, rng)
        return SealedSecret(kek_id=kek.id, wrapped_dek=wrapped, ciphertext=sealed.ciphertext)
    raise DecryptionError()


def _check_place(account_id: int, version: int) -> None:
    # Caller bugs, not data problems, so plain TypeError/ValueError (they say nothing about a blob).
    # A common one: sealing before the account row was flushed, so its id is still None.
    for name, value in (("account_id", account_id), ("version", version)):
        if type(value) is not int:
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= account_id <= _MAX_ACCOUNT_ID:
        raise ValueError("account_id out of range for the associated data")
    if not 0 <= version <= _MAX_VERSION:
        raise ValueError("version out of range for the associated data")


def _random(rng: Rng, size: int) -> bytes:
    data = rng(size)
    if len(data) != size:
        raise ValueError("rng returned the wrong number of bytes")
    return data


def _wrap(kek_id: str, kek: bytes, dek: bytes, account_id: int, version: int, rng: Rng) -> bytes:
    nonce = _random(rng, NONCE_BYTES)
    return _seal(kek, TYPE_WRAPPED_DEK, nonce, dek, dek_aad(kek_id, account_id, version))


def _unwrap(keyring: Keyring, sealed: SealedSecret, account_id: int, version: int) -> bytes:
    kek = keyring.get(sealed.kek_id)
    aad = dek_aad(kek.id, account_id, version)
    dek = _open(kek.material, TYPE_WRAPPED_DEK, sealed.wrapped_dek, aad)
    if len(dek) != KEY_BYTES:
        raise DecryptionError()
    return dek


def _seal(key: bytes, blob_type: int, nonce: bytes, data: bytes, aad: bytes) -> bytes:
    header = MAGIC + bytes((FORMAT_VERSION, blob_type))
    return header + nonce + AESGCM(key).encrypt(nonce, data, aad)


def _open(key: bytes, blob_type: int, blob: bytes, aad: bytes) -> bytes:
    blob = bytes(blob)  # storage drivers may hand back memoryview
    if len(blob) < HEADER_BYTES + NONCE_BYTES + TAG_BYTES:
        raise DecryptionError()
    if blob[:HEADER_BYTES] != MAGIC + bytes((FORMAT_VERSION, blob_type)):
        raise DecryptionError()
    nonce = blob[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES]
    return AESGCM(key).decrypt(nonce, blob[HEADER_BYTES + NONCE_BYTES :], aad)
