"""The keyring: key-encryption keys (KEKs) that wrap the per-secret data keys.

A keyring holds every KEK still needed to unwrap a stored data key, and names one of them
*active*: new secrets (and re-wrapped ones) use the active KEK. Rotation is ``add_key`` (new
active KEK), then re-wrapping every stored data key, then ``retire`` of the old KEK (see
docs/security-model.md, "Key rotation").

On disk and in ``RUNAS_KEYRING`` the keyring is JSON::

    {"format": "runas-keyring", "version": 1, "active": "<id>",
     "keys": [{"id": "kek-20261121-1a2b3c", "created": "2026-11-21T10:00:00+00:00",
               "key": "<base64 of 32 bytes>"}]}

Every error message names the source and the problem and never contains key material.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runas.errors import DecryptionError, KeyringError

#: Source of random bytes; tests pass a deterministic one instead of monkeypatching.
Rng = Callable[[int], bytes]

KEY_BYTES = 32  # AES-256
KEYRING_FORMAT = "runas-keyring"
KEYRING_VERSION = 1
ENV_KEYRING = "RUNAS_KEYRING"
ENV_KEYRING_FILE = "RUNAS_KEYRING_FILE"

# Key ids go into associated data and log lines, so they are kept to a fixed, printable shape.
_KEY_ID_RE = re.compile(r"kek-[0-9]{8}-[0-9a-f]{6}")
_KEY_FIELDS = frozenset({"id", "created", "key"})
_TOP_FIELDS = frozenset({"format", "version", "active", "keys"})
# A fresh id collides only if the same day already has a key with the same 24 random bits;
# a few retries make that practically impossible while a broken rng still fails instead of looping.
_ID_ATTEMPTS = 8


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class KeyEncryptionKey:
    """One KEK. ``material`` never appears in ``repr``/``str``."""

    id: str
    created: datetime
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        # Programming errors, not user input: ``Keyring.from_json`` validates before building.
        if not _KEY_ID_RE.fullmatch(self.id):
            raise ValueError("key id must look like kek-YYYYMMDD-xxxxxx")
        if len(self.material) != KEY_BYTES:
            raise ValueError(f"key material must be {KEY_BYTES} bytes")
        object.__setattr__(self, "material", bytes(self.material))
        object.__setattr__(self, "created", _as_utc(self.created))

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(id={self.id!r}, created={self.created.isoformat()!r})"

    __str__ = __repr__


def new_key(now: datetime | None = None, *, rng: Rng = os.urandom) -> KeyEncryptionKey:
    """A fresh random KEK, its id stamped with the (UTC) date of ``now``."""
    created = _as_utc(now) if now is not None else _utc_now()
    material = rng(KEY_BYTES)
    if len(material) != KEY_BYTES:
        raise ValueError("rng returned the wrong number of bytes")
    return KeyEncryptionKey(id=_new_id(created, rng), created=created, material=material)


def _new_id(created: datetime, rng: Rng) -> str:
    return f"kek-{created:%Y%m%d}-{rng(3).hex()}"


class Keyring:
    """The KEKs in use and which one is active. Mutable: ``add_key`` and ``retire`` change it;
    persist the result with ``KeyringFile.save`` (or ``KeyringSource.save``)."""

    def __init__(self, keys: Iterable[KeyEncryptionKey], active_id: str) -> None:
        self._keys: dict[str, KeyEncryptionKey] = {}
        for key in keys:
            if key.id in self._keys:
                raise KeyringError(f"keyring has two keys with id {key.id}")
            self._keys[key.id] = key
        if active_id not in self._keys:
            raise KeyringError(f"keyring active key {active_id} is not in the keyring")
        self._active_id = active_id

    @classmethod
    def generate(cls, now: datetime | None = None, *, rng: Rng = os.urandom) -> Keyring:
        """A new keyring with one fresh active KEK."""
        key = new_key(now, rng=rng)
        return cls([key], key.id)

    @property
    def active_id(self) -> str:
        return self._active_id

    def active(self) -> KeyEncryptionKey:
        return self._keys[self._active_id]

    def get(self, key_id: str) -> KeyEncryptionKey:
        """The KEK with this id. Unknown ids raise the opaque ``DecryptionError``: this is called
        while decrypting, and the caller must not learn more than "could not decrypt"."""
        key = self._keys.get(key_id)
        if key is None:
            raise DecryptionError()
        return key

    def ids(self) -> list[str]:
        """Key ids, oldest first (in the order they were added)."""
        return list(self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def add_key(self, now: datetime | None = None, *, rng: Rng = os.urandom) -> KeyEncryptionKey:
        """Add a fresh random KEK and make it active. Existing KEKs stay to unwrap old data keys."""
        created = _as_utc(now) if now is not None else _utc_now()
        for _ in range(_ID_ATTEMPTS):
            key = new_key(created, rng=rng)
            if key.id not in self._keys:
                self._keys[key.id] = key
                self._active_id = key.id
                return key
        raise KeyringError("could not generate a key id that is not already in the keyring")

    def retire(self, key_id: str) -> None:
        """Forget a KEK and its material. Data keys still wrapped by it can no longer be opened,
        so re-wrap everything first; the keyring cannot check that, the caller (storage) must."""
        if key_id not in self._keys:
            raise KeyringError(f"keyring has no key {key_id}")
        if key_id == self._active_id:
            raise KeyringError(f"cannot retire the active key {key_id}; add a new key first")
        del self._keys[key_id]

    def __repr__(self) -> str:
        return f"Keyring(active={self._active_id!r}, ids={self.ids()!r})"

    __str__ = __repr__

    def to_json(self) -> str:
        """The keyring as JSON text. This text *is* key material: write it only to a 0600 file."""
        doc = {
            "format": KEYRING_FORMAT,
            "version": KEYRING_VERSION,
            "active": self._active_id,
            "keys": [
                {
                    "id": key.id,
                    "created": key.created.isoformat(),
                    "key": base64.b64encode(key.material).decode("ascii"),
                }
                for key in self._keys.values()
            ],
        }
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> Keyring:
        """Parse and strictly validate keyring JSON; any problem is a ``KeyringError`` naming
        ``source`` (a path or an environment variable name)."""
        problem: str | None = None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            # Keep only position info: the exception's ``doc`` attribute is the whole keyring.
            problem = f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        if problem is not None:
            # Raised outside the ``except`` so the JSONDecodeError (and its text) is not chained.
            raise KeyringError(f"keyring {source} {problem}")
        return _parse_doc(doc, source)


def _parse_doc(doc: Any, source: str) -> Keyring:
    def fail(problem: str) -> KeyringError:
        return KeyringError(f"keyring {source} {problem}")

    if not isinstance(doc, dict):
        raise fail("is not a JSON object")
    unknown = sorted(set(doc) - _TOP_FIELDS)
    if unknown:
        raise fail(f"has unknown fields: {', '.join(unknown)}")
    if doc.get("format") != KEYRING_FORMAT:
        raise fail(f'is not a runas keyring ("format" must be "{KEYRING_FORMAT}")')
    version = doc.get("version")
    if type(version) is not int or version != KEYRING_VERSION:
        raise fail(f"has unsupported version {version!r} (this runas reads {KEYRING_VERSION})")
    raw_keys = doc.get("keys")
    if not isinstance(raw_keys, list) or not raw_keys:
        raise fail('has no "keys" list')
    keys = [_parse_key(entry, index, fail) for index, entry in enumerate(raw_keys)]
    seen: set[str] = set()
    for key in keys:
        if key.id in seen:
            raise fail(f"has two keys with id {key.id}")
        seen.add(key.id)
    active = doc.get("active")
    if not isinstance(active, str):
        raise fail('has no "active" key id')
    if active not in seen:
        raise fail(f"names active key {active!r} but has no key with that id")
    return Keyring(keys, active)


def _parse_key(entry: Any, index: int, fail: Callable[[str], KeyringError]) -> KeyEncryptionKey:
    where = f"keys[{index}]"
    if not isinstance(entry, dict):
        raise fail(f"{where} is not a JSON object")
    if set(entry) != _KEY_FIELDS:
        raise fail(f'{where} must have exactly the fields "id", "created" and "key"')
    key_id, created_text, key_text = entry["id"], entry["created"], entry["key"]
    if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
        raise fail(f"{where} has an invalid id (expected kek-YYYYMMDD-xxxxxx)")
    where = f"key {key_id}"
    created: datetime | None = None
    if isinstance(created_text, str):
        try:
            created = datetime.fromisoformat(created_text)
        except ValueError:
            created = None
    if created is None or created.tzinfo is None:
        raise fail(f'{where} has an invalid "created" (expected ISO 8601 with a UTC offset)')
    material: bytes | None = None
    if isinstance(key_text, str):
        try:
            material = base64.b64decode(key_text, validate=True)
        except (binascii.Error, ValueError):
            material = None
    # Never echo the value: it is (or is meant to be) key material.
    if material is None or len(material) != KEY_BYTES:
        raise fail(f'{where} "key" is not {KEY_BYTES} bytes of base64')
    return KeyEncryptionKey(id=key_id, created=created, material=material)


class KeyringFile:
    """A keyring stored in a file only its owner can read or write (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"KeyringFile({str(self.path)!r})"

    def create(self, now: datetime | None = None, *, rng: Rng = os.urandom) -> Keyring:
        """Generate a new keyring and write it; refuse if the file exists (never clobber keys)."""
        keyring = Keyring.generate(now, rng=rng)
        parent = self.path.parent
        try:
            if not parent.exists():
                parent.mkdir(mode=0o700, parents=True)
            # O_EXCL: fails if anything (even a dangling symlink) is already there.
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise KeyringError(
                f"keyring {self.path} already exists; refusing to overwrite it"
            ) from None
        except OSError as exc:
            raise KeyringError(f"keyring {self.path} cannot be created: {exc.strerror}") from None
        try:
            _write_and_close(fd, keyring.to_json())
        except BaseException:
            # A half-written keyring would make the next ``create`` refuse and ``load`` fail.
            self.path.unlink(missing_ok=True)
            raise
        _fsync_dir(parent)
        return keyring

    def load(self) -> Keyring:
        """Read the keyring, refusing a file that others can read or write."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KeyringError(f"keyring {self.path} does not exist") from None
        except OSError as exc:
            raise KeyringError(f"keyring {self.path} cannot be opened: {exc.strerror}") from None
        # Check the mode of the file we actually opened (fstat), not of whatever the path names now.
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            _check_mode(self.path, info)
            data = handle.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise KeyringError(f"keyring {self.path} is not UTF-8 text") from None
        return Keyring.from_json(text, str(self.path))

    def save(self, keyring: Keyring) -> None:
        """Replace the file atomically: a crash leaves either the old or the new keyring."""
        directory = self.path.parent
        tmp = directory / f".{self.path.name}.{os.urandom(6).hex()}.tmp"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise KeyringError(f"keyring {self.path} cannot be written: {exc.strerror}") from None
        try:
            _write_and_close(fd, keyring.to_json())
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise KeyringError(f"keyring {self.path} cannot be written: {exc.strerror}") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(directory)


def _check_mode(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise KeyringError(f"keyring {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o044:
        raise KeyringError(f"keyring {path} is readable by others (mode {mode:04o}); chmod 600 it")
    if mode & 0o022:
        raise KeyringError(f"keyring {path} is writable by others (mode {mode:04o}); chmod 600 it")


def _write_and_close(fd: int, text: str) -> None:
    with os.fdopen(fd, "wb") as handle:
        handle.write(text.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    # Makes the new directory entry durable; without it a crash can lose a freshly written key.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class KeyringSource:
    """Where the keyring comes from. ``file`` is None when the JSON came from ``RUNAS_KEYRING``:
    such a keyring can be used but not saved, so ``key rotate`` must refuse (check ``writable``
    before changing anything, or let ``save`` raise)."""

    description: str
    file: KeyringFile | None
    text: str | None = field(default=None, repr=False)

    @property
    def writable(self) -> bool:
        return self.file is not None

    def load(self) -> Keyring:
        if self.file is not None:
            return self.file.load()
        return Keyring.from_json(self.text or "", self.description)

    def save(self, keyring: Keyring) -> None:
        if self.file is None:
            raise KeyringError(
                f"keyring comes from {self.description} and cannot be saved; "
                f"use a keyring file ({ENV_KEYRING_FILE} or the data directory) to rotate keys"
            )
        self.file.save(keyring)


def locate_keyring(*, path: Path | None, env: Mapping[str, str]) -> KeyringSource:
    """Pick the keyring source: ``RUNAS_KEYRING`` (the JSON itself), else ``RUNAS_KEYRING_FILE``
    (a path), else ``path`` (the data directory's keyring file). A variable that is set but empty
    is an error rather than silently skipped: it usually means a secret failed to render."""
    if ENV_KEYRING in env:
        text = env[ENV_KEYRING]
        if not text.strip():
            raise KeyringError(f"{ENV_KEYRING} is set but empty")
        return KeyringSource(description=ENV_KEYRING, file=None, text=text)
    if ENV_KEYRING_FILE in env:
        value = env[ENV_KEYRING_FILE]
        if not value.strip():
            raise KeyringError(f"{ENV_KEYRING_FILE} is set but empty")
        file_path = Path(value)
        return KeyringSource(description=str(file_path), file=KeyringFile(file_path))
    if path is None:
        raise KeyringError(
            f"no keyring configured: set {ENV_KEYRING} or {ENV_KEYRING_FILE}, "
            "or initialise the data directory"
        )
    return KeyringSource(description=str(path), file=KeyringFile(path))


def load_keyring(*, path: Path | None, env: Mapping[str, str]) -> Keyring:
    """Load the production keyring from the first configured source (see ``locate_keyring``)."""
    return locate_keyring(path=path, env=env).load()
