"""Password hashing and the password policy for local users.

Hashes are argon2id PHC strings (``$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>``): the string
names the algorithm and its parameters, so they can be raised later and old hashes still
verify; :func:`needs_rehash` tells a successful login to store a hash with today's parameters.

Parameters (:data:`DEFAULT_HASHER`) are argon2-cffi's defaults, which are RFC 9106's second
recommended option: time cost 3, memory 64 MiB, parallelism 4, 16-byte salt, 32-byte hash —
about 50 ms per hash on a current server core. Hashing is CPU- and memory-bound: the server
calls these functions from a worker thread, never on the event loop.

Nothing in this module logs, and no error message repeats a password.
"""

from __future__ import annotations

from contextlib import suppress
from functools import cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import SecretStr

from runas.errors import InvalidInput

DEFAULT_HASHER = PasswordHasher(
    time_cost=3, memory_cost=64 * 1024, parallelism=4, hash_len=32, salt_len=16, type=Type.ID
)

MIN_LENGTH = 12
#: long enough for any passphrase; bounds the work one request can cause
MAX_LENGTH = 1024


class PasswordMismatch(Exception):
    """The password does not match the stored hash (or the hash is unusable)."""


def hash_password(password: SecretStr, *, hasher: PasswordHasher = DEFAULT_HASHER) -> str:
    return hasher.hash(password.get_secret_value())


def verify_password(
    stored_hash: str, password: SecretStr, *, hasher: PasswordHasher = DEFAULT_HASHER
) -> None:
    """Raise :class:`PasswordMismatch` unless ``password`` matches ``stored_hash``."""
    try:
        hasher.verify(stored_hash, password.get_secret_value())
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        raise PasswordMismatch from None


def needs_rehash(stored_hash: str, *, hasher: PasswordHasher = DEFAULT_HASHER) -> bool:
    try:
        return hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


@cache
def _dummy_for(time_cost: int, memory_cost: int, parallelism: int) -> str:
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
    return hasher.hash("runas dummy password: verified for unknown users, never matches")


def burn_verification(password: SecretStr, *, hasher: PasswordHasher = DEFAULT_HASHER) -> None:
    """Spend the time of one verification, for a user that does not exist: an unknown name and
    a wrong password then take the same time, so timing does not tell which names exist."""
    dummy = _dummy_for(hasher.time_cost, hasher.memory_cost, hasher.parallelism)
    with suppress(VerifyMismatchError, VerificationError, InvalidHashError):
        hasher.verify(dummy, password.get_secret_value())


def check_policy(password: SecretStr, *, names: tuple[str, ...] = ()) -> None:
    """Refuse a weak password with a message that says what is wrong (never what it was).

    The rules: at least :data:`MIN_LENGTH` characters, at most :data:`MAX_LENGTH`; not one
    character repeated; and not containing the user's name or display name (the first thing
    anyone guesses)."""
    value = password.get_secret_value()
    if len(value) < MIN_LENGTH:
        raise InvalidInput(f"the password is too short: use at least {MIN_LENGTH} characters")
    if len(value) > MAX_LENGTH:
        raise InvalidInput(f"the password is too long: at most {MAX_LENGTH} characters")
    if not value.strip():
        raise InvalidInput("the password cannot be only spaces")
    if len(set(value)) == 1:
        raise InvalidInput("the password cannot be one character repeated")
    folded = value.casefold()
    for name in names:
        clean = name.strip().casefold()
        if len(clean) >= 3 and clean in folded:
            raise InvalidInput("the password cannot contain the user's name or display name")


__all__ = [
    "DEFAULT_HASHER",
    "MAX_LENGTH",
    "MIN_LENGTH",
    "PasswordMismatch",
    "burn_verification",
    "check_policy",
    "hash_password",
    "needs_rehash",
    "verify_password",
]
