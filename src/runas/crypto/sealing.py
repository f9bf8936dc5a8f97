"""Secrets in transit to agents: HPKE (RFC 9180) sealed to the agent's X25519 public key.

A management server sends each agent one **bundle** per configuration: every secret version the
agent is allowed to hold (its distribution, domain.md §4), for one configuration **epoch**. It
also seals credentials typed in for a single task run (**once** blobs, issue 6) the same way.

Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, base mode, single-shot. AES-256-GCM
rather than ChaCha20-Poly1305 because it is the AEAD runas already uses at rest (one primitive
to review and to approve: FIPS 140 matters to the Windows estates runas manages), it is
hardware-accelerated on every server and current agent CPU (AES-NI, ARMv8 crypto extensions),
and each bundle is opened once, so ChaCha's edge on CPUs without AES instructions does not
matter. HPKE derives a fresh key and nonce per message from the ephemeral key exchange, so GCM's
random-nonce limits do not apply.

Sealed bundle (integers unsigned big-endian)::

    b"RA" | format version (1 byte, 0x01) | type (1 byte, 0x03)     ┐
    | len(agent_id) (1 byte) | agent_id (ASCII)                     │ header: the manifest,
    | epoch (8 bytes) | count (4 bytes)                             │ readable without the key
    | count × (account_id (8 bytes) | version (4 bytes))            ┘ (manifest_of)
    | enc (32 bytes: the HPKE encapsulated key)
    | AES-256-GCM ciphertext of the entries || tag (16 bytes)

The manifest lists the (account_id, version) pairs in strictly increasing order. Plaintext::

    count (4 bytes) | count × entry
    entry: account_id (8) | version (4) | len(type) (1) | type (ASCII) | field count (1)
           | fields sorted by name: len(name) (1) | name (ASCII) | len(value) (4) | value (UTF-8)

in the manifest's order, so the same bundle always serialises to the same plaintext.

Sealed once (credentials for one task run)::

    b"RA" | 0x01 | type 0x04 | len(agent_id) (1) | agent_id | len(run_id) (1) | run_id
    | len(purpose) (1) | purpose | enc (32) | ciphertext of the fields (as above) || tag

**Binding.** The HPKE ``info`` is ``b"runas:bundle:v1\\x00"`` (or ``b"runas:once:v1\\x00"``)
followed by the SHA-256 of the whole header, magic to last manifest byte. ``info`` feeds the HPKE
key schedule, so a header changed in any way — agent id swapped, epoch lowered, a version
changed, an entry added or removed, another type byte — derives another key and the ciphertext
does not open. (The digest, not the header itself, keeps ``info`` at 48 bytes: RFC 9180 only
requires implementations to accept 64, and agents in other languages must interoperate.) The
single-shot API has no associated-data argument, and ``info`` already authenticates everything
AAD would. After decryption the entries must list exactly the manifest's pairs, in order, and
``open_bundle``/``open_once`` refuse a header naming another agent (or run) than the caller's:
a bundle sealed for X, even when sealed to Y's key by mistake, never opens as Y's.

**What sealing does not prove.** Base-mode HPKE is anonymous: anyone holding an agent's public
key can seal a bundle for it. That a bundle comes from the management group is proved by the
channel it arrives on (mutual TLS with the group's CA, :mod:`runas.crypto.ca`). Nor does
``open_bundle`` know the agent's current epoch: the agent refuses a bundle whose epoch is lower
than the last one it accepted (``manifest_of`` lets it do so before decrypting, and the epoch of
the opened ``Bundle`` is authenticated).

Every failure to open — wrong key, another agent, tampering, truncation, unknown format, entries
that disagree with the manifest — raises the same ``DecryptionError`` with no cause or context.
``manifest_of`` raises it too for a blob it cannot parse. Bad arguments when sealing (an invalid
agent id, an unusable public key) raise ``InvalidInput``; caller bugs in the objects themselves
(wrong types, ids out of range, duplicate entries) raise ``TypeError``/``ValueError``, as in
:mod:`runas.crypto.envelope`. No message and no ``repr`` ever contains a secret value or key
material; :class:`SecretFields` shows field names only.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from runas.crypto.ca import check_agent_id
from runas.errors import DecryptionError, InvalidInput, RunAsError

MAGIC = b"RA"
FORMAT_VERSION = 0x01
TYPE_BUNDLE = 0x03  # 0x01 and 0x02 are envelope.py's blobs at rest
TYPE_ONCE = 0x04
KEY_BYTES = 32  # X25519 public and private keys
ENC_BYTES = 32  # DHKEM(X25519) encapsulated key
TAG_BYTES = 16

BUNDLE_INFO_LABEL = b"runas:bundle:v1\x00"
ONCE_INFO_LABEL = b"runas:once:v1\x00"

_MAX_ACCOUNT_ID = 2**64 - 1
_MAX_VERSION = 2**32 - 1
_MAX_EPOCH = 2**64 - 1
_MAX_FIELDS = 255
# Account types ("unix-maintenance"), run ids (a UUID) and purposes ("task-credentials") share
# the agent id's shape: they go into headers in clear, length-prefixed by one byte.
_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A task target's run id is "<run uuid>:<target id>" (docs/agents.md, Tasks): ':' is allowed
# there only; the header is length-prefixed, so no character of it can be ambiguous.
_RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_FIELD_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")

_BUNDLE_PREFIX = MAGIC + bytes((FORMAT_VERSION, TYPE_BUNDLE))
_U32 = struct.Struct(">I")
_KEY = struct.Struct(">QI")  # (account_id, version)
_EPOCH_COUNT = struct.Struct(">QI")
_ENTRY_HEAD = struct.Struct(">QIB")  # account_id, version, len(type)
# Everything a malformed blob or plaintext can raise while parsing (UnicodeDecodeError is a
# ValueError); the openers turn all of it into one DecryptionError.
_PARSE_ERRORS = (InvalidTag, ValueError, IndexError, struct.error, RunAsError)


# -- keys ---------------------------------------------------------------------------------------


class AgentKeyPair:
    """An agent's X25519 key pair for HPKE. Its repr shows no key material; it cannot be
    pickled (that would copy the private key wherever the pickle goes)."""

    __slots__ = ("_private",)

    def __init__(self, private: x25519.X25519PrivateKey) -> None:
        if not isinstance(private, x25519.X25519PrivateKey):
            raise TypeError("AgentKeyPair needs an X25519PrivateKey")
        self._private = private

    @classmethod
    def generate(cls) -> AgentKeyPair:
        return cls(x25519.X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> AgentKeyPair:
        """Load the raw 32-byte private key written by :meth:`private_bytes`."""
        if len(data) != KEY_BYTES:
            raise InvalidInput(f"an agent private key is {KEY_BYTES} raw bytes")
        return cls(x25519.X25519PrivateKey.from_private_bytes(bytes(data)))

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key (for the agent's 0600 key file only)."""
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def public_bytes(self) -> bytes:
        """The raw 32-byte public key, which the agent sends when it enrols."""
        return self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def __repr__(self) -> str:
        return "AgentKeyPair(X25519, <private key hidden>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("an AgentKeyPair cannot be pickled")


def check_public_key(public_key: bytes) -> bytes:
    """Return ``public_key`` if it is a usable X25519 public key, else raise ``InvalidInput``.

    Enrolment should call this: 32 bytes is not enough, a low-order point (all zeros, say)
    makes every seal fail, since HPKE refuses an all-zero shared secret.
    """
    recipient = _recipient(public_key)
    try:
        x25519.X25519PrivateKey.generate().exchange(recipient)
    except ValueError:
        pass
    else:
        return bytes(public_key)
    raise InvalidInput("the agent public key is not usable (a low-order X25519 point)")


# -- what is sealed -----------------------------------------------------------------------------


class SecretFields(Mapping[str, str]):
    """Immutable field name → value mapping of secret values. Its repr and str show the names
    only, so an entry, a bundle or these fields can go into a log line or an assertion message
    without leaking a value. ``dict(fields)`` gives the plain values (and no such protection)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, str]) -> None:
        items = dict(data)
        if len(items) > _MAX_FIELDS:
            raise ValueError(f"at most {_MAX_FIELDS} secret fields")
        for name, value in items.items():
            # The message never repeats a name that failed the check: a caller that swapped
            # names and values would otherwise print a secret.
            if type(name) is not str or _FIELD_NAME_RE.fullmatch(name) is None:
                raise ValueError(
                    "secret field names are 1 to 64 of [A-Za-z0-9_.-], not a digit first"
                )
            if type(value) is not str:
                raise TypeError(f"secret field {name!r} must be a str, not {type(value).__name__}")
        self._data = items

    @classmethod
    def _checked(cls, items: dict[str, str]) -> SecretFields:
        # For the parser, which has already checked every name and decoded every value.
        fields = object.__new__(cls)
        fields._data = items
        return fields

    def __getitem__(self, name: str) -> str:
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return "SecretFields(" + ", ".join(f"{name}=<hidden>" for name in sorted(self._data)) + ")"


@dataclass(frozen=True, eq=True)
class BundleEntry:
    """The decrypted secret fields of one account version, e.g. ``{"password": ...}``.

    ``fields`` is stored as :class:`SecretFields` (a copy), so the repr shows names only.
    """

    account_id: int
    version: int
    account_type: str
    fields: Mapping[str, str]

    def __post_init__(self) -> None:
        _check_uint("account_id", self.account_id, _MAX_ACCOUNT_ID)
        _check_uint("version", self.version, _MAX_VERSION)
        if type(self.account_type) is not str or _LABEL_RE.fullmatch(self.account_type) is None:
            raise ValueError("account_type must be a short label such as 'windows'")
        if not isinstance(self.fields, SecretFields):
            object.__setattr__(self, "fields", SecretFields(self.fields))

    @property
    def key(self) -> tuple[int, int]:
        return (self.account_id, self.version)

    @classmethod
    def _checked(
        cls, account_id: int, version: int, account_type: str, fields: SecretFields
    ) -> BundleEntry:
        # For the parser: the ids come from the authenticated manifest (fixed width, so in
        # range), the type and field names were checked while parsing.
        entry = object.__new__(cls)
        # One dict update instead of four frozen-dataclass setattr calls: this runs per entry.
        entry.__dict__.update(
            account_id=account_id, version=version, account_type=account_type, fields=fields
        )
        return entry


@dataclass(frozen=True)
class Manifest:
    """The clear header of a sealed bundle: whose it is, which epoch, which account versions
    (sorted). Read with :func:`manifest_of` before decrypting; authenticated only once the
    bundle opens."""

    agent_id: str
    epoch: int
    entries: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Bundle:
    """Every secret one agent holds for one configuration epoch. ``entries`` (any order) are
    kept sorted by (account_id, version), each pair at most once; an empty bundle means "hold
    no secrets" (the agent erases what it holds)."""

    agent_id: str
    epoch: int
    entries: tuple[BundleEntry, ...] = ()

    def __post_init__(self) -> None:
        check_agent_id(self.agent_id)
        _check_uint("epoch", self.epoch, _MAX_EPOCH)
        entries = tuple(self.entries)
        for entry in entries:
            if not isinstance(entry, BundleEntry):
                raise TypeError(f"bundle entries must be BundleEntry, not {type(entry).__name__}")
        entries = tuple(sorted(entries, key=lambda entry: entry.key))
        for before, after in pairwise(entries):
            if before.key == after.key:
                raise ValueError(
                    f"bundle holds account {after.account_id} version {after.version} twice"
                )
        object.__setattr__(self, "entries", entries)

    @property
    def manifest(self) -> Manifest:
        return Manifest(self.agent_id, self.epoch, tuple(entry.key for entry in self.entries))


# -- bundles ------------------------------------------------------------------------------------


def seal_bundle(public_key: bytes, bundle: Bundle) -> bytes:
    """Seal ``bundle`` to the agent public key (raw 32 bytes); see the module docstring."""
    if not isinstance(bundle, Bundle):
        raise TypeError(f"seal_bundle needs a Bundle, not {type(bundle).__name__}")
    recipient = _recipient(public_key)
    header = _bundle_header(bundle)
    plaintext = bytearray(_U32.pack(len(bundle.entries)))
    try:
        for entry in bundle.entries:
            kind = entry.account_type.encode("ascii")
            plaintext += _ENTRY_HEAD.pack(entry.account_id, entry.version, len(kind))
            plaintext += kind
            _encode_fields(plaintext, entry.fields)
        return header + _hpke_seal(recipient, plaintext, BUNDLE_INFO_LABEL, header)
    finally:
        _wipe(plaintext)


def manifest_of(sealed: bytes) -> Manifest:
    """The manifest of a sealed bundle, read without the key. Not authenticated until the bundle
    opens: use it to skip a stale bundle early, never to trust one. ``DecryptionError`` if the
    blob is not a sealed bundle."""
    try:
        manifest, _ = _parse_bundle_header(bytes(sealed))
    except _PARSE_ERRORS:
        pass
    else:
        return manifest
    raise DecryptionError()


def open_bundle(private: AgentKeyPair, sealed: bytes, *, agent_id: str) -> Bundle:
    """Open a bundle sealed to ``private``'s public key for ``agent_id``; any failure raises the
    same ``DecryptionError``. The returned bundle's epoch and entries are authenticated."""
    check_agent_id(agent_id)
    _check_private(private)
    blob = bytes(sealed)  # transports may hand back memoryview or bytearray
    try:
        bundle = _open_bundle(private, blob, agent_id)
    except _PARSE_ERRORS:
        pass
    else:
        return bundle
    # Raised outside the handler so no cause or context (which check failed) travels with it.
    raise DecryptionError()


def _open_bundle(private: AgentKeyPair, blob: bytes, agent_id: str) -> Bundle:
    manifest, header_end = _parse_bundle_header(blob)
    if manifest.agent_id != agent_id:
        raise DecryptionError()
    data = _hpke_open(private, blob, header_end, BUNDLE_INFO_LABEL)
    if _U32.unpack_from(data, 0)[0] != len(manifest.entries):
        raise DecryptionError()
    pos = 4
    entries = []
    # The plaintext lists exactly the manifest's pairs, in the same order.
    for key in manifest.entries:
        account_id, version, size = _ENTRY_HEAD.unpack_from(data, pos)
        pos += _ENTRY_HEAD.size
        if (account_id, version) != key:
            raise DecryptionError()
        kind = data[pos : pos + size].decode("ascii")
        pos += size
        if _LABEL_RE.fullmatch(kind) is None:
            raise DecryptionError()
        fields, pos = _decode_fields(data, pos)  # see there for short reads
        entries.append(BundleEntry._checked(account_id, version, kind, fields))
    if pos != len(data):
        raise DecryptionError()
    # Parsing the manifest made Bundle's checks (agent id, epoch range, sorted unique pairs),
    # so its constructor would only sort again what is already in order.
    bundle = object.__new__(Bundle)
    bundle.__dict__.update(agent_id=manifest.agent_id, epoch=manifest.epoch, entries=tuple(entries))
    return bundle


def _bundle_header(bundle: Bundle) -> bytes:
    agent = bundle.agent_id.encode("ascii")
    out = bytearray(_BUNDLE_PREFIX)
    out.append(len(agent))
    out += agent
    out += _EPOCH_COUNT.pack(bundle.epoch, len(bundle.entries))
    pack = _KEY.pack
    for entry in bundle.entries:
        out += pack(entry.account_id, entry.version)
    return bytes(out)


def _parse_bundle_header(blob: bytes) -> tuple[Manifest, int]:
    prefix = len(_BUNDLE_PREFIX)
    if blob[:prefix] != _BUNDLE_PREFIX:
        raise DecryptionError()
    pos = prefix + 1 + blob[prefix]
    if pos > len(blob):
        raise DecryptionError()
    agent_id = check_agent_id(blob[prefix + 1 : pos].decode("ascii"))
    epoch, count = _EPOCH_COUNT.unpack_from(blob, pos)
    pos += _EPOCH_COUNT.size
    end = pos + count * _KEY.size
    if end > len(blob):  # a forged count must not make us read past the blob
        raise DecryptionError()
    entries = tuple(_KEY.iter_unpack(blob[pos:end]))
    # Strictly increasing: one canonical header per bundle, no duplicates.
    if any(before >= after for before, after in pairwise(entries)):
        raise DecryptionError()
    return Manifest(agent_id, epoch, entries), end


# -- once ---------------------------------------------------------------------------------------


def seal_once(
    public_key: bytes, *, agent_id: str, purpose: str, run_id: str, fields: Mapping[str, str]
) -> bytes:
    """Seal credentials typed in for one task run to the executing agent's public key, bound to
    the agent, the run and a purpose label (e.g. ``"task-credentials"``)."""
    recipient = _recipient(public_key)
    header = _once_header(agent_id, run_id, purpose)
    plaintext = bytearray()
    try:
        _encode_fields(plaintext, fields)
        return header + _hpke_seal(recipient, plaintext, ONCE_INFO_LABEL, header)
    finally:
        _wipe(plaintext)


def open_once(
    private: AgentKeyPair, sealed: bytes, *, agent_id: str, purpose: str, run_id: str
) -> SecretFields:
    """Open a :func:`seal_once` blob; the agent, purpose and run must be the ones it was sealed
    for. Any failure raises the same ``DecryptionError``."""
    expected = _once_header(agent_id, run_id, purpose)
    _check_private(private)
    blob = bytes(sealed)
    try:
        if blob[: len(expected)] != expected:
            raise DecryptionError()
        data = _hpke_open(private, blob, len(expected), ONCE_INFO_LABEL)
        fields, pos = _decode_fields(data, 0)
        if pos != len(data):
            raise DecryptionError()
    except _PARSE_ERRORS:
        pass
    else:
        return fields
    raise DecryptionError()


def _once_header(agent_id: str, run_id: str, purpose: str) -> bytes:
    check_agent_id(agent_id)
    if type(run_id) is not str or _RUN_ID_RE.fullmatch(run_id) is None:
        raise InvalidInput("run_id must be 1 to 64 letters, digits, '.', '_', '-' or ':'")
    if type(purpose) is not str or _LABEL_RE.fullmatch(purpose) is None:
        raise InvalidInput("purpose must be 1 to 64 letters, digits, '.', '_' or '-'")
    out = bytearray(MAGIC + bytes((FORMAT_VERSION, TYPE_ONCE)))
    for value in (agent_id, run_id, purpose):
        out.append(len(value))
        out += value.encode("ascii")
    return bytes(out)


# -- shared -------------------------------------------------------------------------------------


def _suite() -> Suite:
    return Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)


def _info(label: bytes, header: bytes | memoryview) -> bytes:
    return label + hashlib.sha256(header).digest()


def _recipient(public_key: bytes) -> x25519.X25519PublicKey:
    if not isinstance(public_key, bytes | bytearray | memoryview) or len(public_key) != KEY_BYTES:
        raise InvalidInput(f"an agent public key is {KEY_BYTES} raw bytes")
    return x25519.X25519PublicKey.from_public_bytes(bytes(public_key))


def _check_private(private: AgentKeyPair) -> None:
    # A caller bug, so not folded into the opaque DecryptionError.
    if not isinstance(private, AgentKeyPair):
        raise TypeError(f"opening needs an AgentKeyPair, not {type(private).__name__}")


def _hpke_seal(
    recipient: x25519.X25519PublicKey, plaintext: bytearray, label: bytes, header: bytes
) -> bytes:
    try:
        return _suite().encrypt(plaintext, recipient, info=_info(label, header))
    except ValueError:
        # The only ValueError here is a low-order public key ("Error computing shared key").
        pass
    raise InvalidInput("the agent public key is not usable (a low-order X25519 point)")


def _hpke_open(private: AgentKeyPair, blob: bytes, header_end: int, label: bytes) -> bytes:
    if len(blob) < header_end + ENC_BYTES + TAG_BYTES:
        raise DecryptionError()
    info = _info(label, memoryview(blob)[:header_end])
    return _suite().decrypt(blob[header_end:], private._private, info=info)


def _encode_fields(out: bytearray, fields: Mapping[str, str]) -> None:
    # Always SecretFields (BundleEntry converts), whose names and value types are checked.
    data = fields._data if isinstance(fields, SecretFields) else SecretFields(fields)._data
    # Names are ASCII (SecretFields checks), so sorting the str sorts the encoded bytes too.
    names = sorted(data)
    out.append(len(names))
    pack = _U32.pack  # refuses a value of 4 GiB or more (struct.error)
    try:
        for name in names:
            value = data[name].encode("utf-8")
            out.append(len(name))
            out += name.encode("ascii")
            out += pack(len(value))
            out += value
    except UnicodeEncodeError:
        # A lone surrogate. The exception holds the whole value: leave the handler first.
        bad = name
    else:
        return
    raise InvalidInput(f"secret field {bad!r} is not valid Unicode text")


def _wipe(buffer: bytearray) -> None:
    # Best effort: the str values and the bytes objects made from them stay in memory until
    # collected, but at least the one contiguous copy of every secret does not.
    buffer[:] = bytes(len(buffer))


def _decode_fields(data: bytes, pos: int) -> tuple[SecretFields, int]:
    """Fields encoded at ``pos`` and the position after them.

    Written for speed (it is most of open_bundle's cost beyond HPKE): a slice past the end is
    silently short rather than an error, but it leaves ``pos`` past the end, so the caller's next
    read (IndexError, struct.error) or its final ``pos == len(data)`` check fails.
    """
    unpack_u32, name_ok = _U32.unpack_from, _FIELD_NAME_RE.fullmatch
    count = data[pos]
    pos += 1
    items: dict[str, str] = {}
    previous = ""
    for _ in range(count):
        size = data[pos]
        pos += 1
        name = data[pos : pos + size].decode("ascii")
        pos += size
        # Sorted and unique (the one canonical encoding), and a valid name.
        if name <= previous or name_ok(name) is None:
            raise DecryptionError()
        (size,) = unpack_u32(data, pos)
        pos += 4
        items[name] = data[pos : pos + size].decode("utf-8")
        pos += size
        previous = name
    return SecretFields._checked(items), pos


def _check_uint(name: str, value: int, maximum: int) -> None:
    # Caller bugs, not data problems: TypeError/ValueError, as in envelope.py.
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} out of range")


__all__ = [
    "AgentKeyPair",
    "Bundle",
    "BundleEntry",
    "Manifest",
    "SecretFields",
    "check_public_key",
    "manifest_of",
    "open_bundle",
    "open_once",
    "seal_bundle",
    "seal_once",
]
