"""Encryption at rest: the keyring of key-encryption keys and per-secret envelope encryption.

See docs/security-model.md for the formats, the associated data and how key rotation works.
"""

from runas.crypto.envelope import SealedSecret, open_secret, rewrap, seal_secret
from runas.crypto.keyring import (
    KeyEncryptionKey,
    Keyring,
    KeyringFile,
    KeyringSource,
    load_keyring,
    locate_keyring,
)

__all__ = [
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
