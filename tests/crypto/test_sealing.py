"""Sealing to agents (HPKE): round trips, binding to agent/epoch/versions/run, tamper resistance,
and that no secret value leaks into reprs, messages or the sealed bytes.

The format is pinned independently of runas: ``header_bytes``, ``plaintext_bytes``,
``once_header`` and ``hpke`` below build blobs straight from the module docstring with
``cryptography``'s HPKE ``Suite``, and runas must open them; ``FROZEN_BUNDLE_HEX`` is one such
blob, generated once and never to be regenerated (a mismatch means the wire format changed,
which needs a new format version instead).
"""

from __future__ import annotations

import base64
import hashlib
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite
from hypothesis import given, settings
from hypothesis import strategies as st

from runas.crypto import sealing
from runas.crypto.sealing import (
    AgentKeyPair,
    Bundle,
    BundleEntry,
    Manifest,
    SecretFields,
    check_public_key,
    manifest_of,
    open_bundle,
    open_once,
    seal_bundle,
    seal_once,
)
from runas.errors import DecryptionError, InvalidInput

OPAQUE = "secret could not be decrypted"
CANARY = "Canary-7f3a9c-Sekr3t!"
SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)

# Generated once with assemble_bundle() (not runas code) from this private key; see the docstring.
FROZEN_PRIVATE_HEX = "a8" + "ab" * 30 + "6b"
FROZEN_BUNDLE_HEX = (
    "524101030a6167656e742d30303031000000000000002a000000020000000000000007000000030000000000"
    "000009000000011ab8fb9a0a2598d6b5b820477fe114f66839d9ee267b818d50afa6ad563fe067f566a81305"
    "6dda696069bc06b1c2919724df6e9c52a9d0466073b34168111b3e977d621a63588a2a5662a858de1ee84509"
    "94e6ce263c93f043dd2a4d4d2d66cb14a4cf556669be91adfa39bb7e120f07101de5051d84351a818f7bb226"
    "2e12c95e501cbc48fe404ccfe141304fb141e67130fabc87b631"
)


def canary_bundle(agent_id: str = "agent-x", epoch: int = 42) -> Bundle:
    return Bundle(
        agent_id,
        epoch,
        (
            BundleEntry(9, 1, "simple", {"user": "svc_sql", "password": CANARY + "-sql"}),
            BundleEntry(7, 3, "windows", {"domain": "corp", "user": "x", "password": CANARY}),
            BundleEntry(7, 4, "windows", {"domain": "corp", "user": "x", "password": "é€😀"}),
            BundleEntry(12, 1, "binary", {"data": CANARY * 3}),
            BundleEntry(13, 2, "snmpv3", {"user": "u", "auth_key": "", "privacy_key": CANARY}),
        ),
    )


# --- an independent implementation of the documented format ---------------------------------


def header_bytes(
    agent_id: str, epoch: int, entries: list[tuple[int, int]], **override: Any
) -> bytes:
    """The bundle header exactly as the module docstring draws it; ``override`` corrupts parts."""
    magic = override.get("magic", b"RA")
    version = override.get("version", 1)
    kind = override.get("type", 3)
    count = override.get("count", len(entries))
    agent = agent_id.encode("ascii")
    out = magic + bytes([version, kind, len(agent)]) + agent
    out += epoch.to_bytes(8, "big") + count.to_bytes(4, "big")
    for account_id, account_version in entries:
        out += account_id.to_bytes(8, "big") + account_version.to_bytes(4, "big")
    return out


def fields_bytes(fields: dict[str, str], *, sort: bool = True) -> bytes:
    names = sorted(fields) if sort else list(fields)
    out = bytes([len(names)])
    for name in names:
        value = fields[name].encode("utf-8")
        out += bytes([len(name)]) + name.encode("ascii") + len(value).to_bytes(4, "big") + value
    return out


def entry_bytes(account_id: int, version: int, kind: str, encoded_fields: bytes) -> bytes:
    head = account_id.to_bytes(8, "big") + version.to_bytes(4, "big")
    return head + bytes([len(kind)]) + kind.encode("ascii") + encoded_fields


def plaintext_bytes(entries: list[tuple[int, int, str, dict[str, str]]]) -> bytes:
    out = len(entries).to_bytes(4, "big")
    for account_id, version, kind, fields in entries:
        out += entry_bytes(account_id, version, kind, fields_bytes(fields))
    return out


def hpke(public: bytes, header: bytes, plaintext: bytes, label: bytes) -> bytes:
    info = label + hashlib.sha256(header).digest()
    recipient = x25519.X25519PublicKey.from_public_bytes(public)
    return header + SUITE.encrypt(plaintext, recipient, info=info)


def assemble_bundle(
    public: bytes,
    agent_id: str,
    epoch: int,
    entries: list[tuple[int, int, str, dict[str, str]]],
    *,
    manifest: list[tuple[int, int]] | None = None,
    plaintext: bytes | None = None,
) -> bytes:
    listed = [(e[0], e[1]) for e in entries] if manifest is None else manifest
    header = header_bytes(agent_id, epoch, listed)
    body = plaintext_bytes(entries) if plaintext is None else plaintext
    return hpke(public, header, body, b"runas:bundle:v1\x00")


def once_header(agent_id: str, run_id: str, purpose: str) -> bytes:
    out = b"RA\x01\x04"
    for value in (agent_id, run_id, purpose):
        out += bytes([len(value)]) + value.encode("ascii")
    return out


def split(sealed: bytes) -> tuple[bytes, bytes]:
    """(header, enc || ciphertext) of a sealed bundle, using the clear manifest's length."""
    manifest = manifest_of(sealed)
    end = 4 + 1 + len(manifest.agent_id) + 8 + 4 + 12 * len(manifest.entries)
    return sealed[:end], sealed[end:]


def assert_opaque(excinfo: pytest.ExceptionInfo[DecryptionError]) -> None:
    err = excinfo.value
    assert type(err) is DecryptionError
    assert str(err) == OPAQUE
    # Nothing about what failed may travel with the error, not even as implicit context.
    assert err.__cause__ is None
    assert err.__context__ is None


@pytest.fixture
def agent() -> AgentKeyPair:
    return AgentKeyPair.generate()


@pytest.fixture
def other() -> AgentKeyPair:
    return AgentKeyPair.generate()


# --- round trips and the documented format --------------------------------------------------


def test_round_trip(agent: AgentKeyPair) -> None:
    bundle = canary_bundle()
    opened = open_bundle(agent, seal_bundle(agent.public_bytes(), bundle), agent_id="agent-x")
    assert opened == bundle
    assert [e.key for e in opened.entries] == [(7, 3), (7, 4), (9, 1), (12, 1), (13, 2)]
    assert opened.entries[1].fields["password"] == "é€😀"
    assert opened.entries[4].fields["auth_key"] == ""


def test_an_empty_bundle_round_trips(agent: AgentKeyPair) -> None:
    sealed = seal_bundle(agent.public_bytes(), Bundle("agent-x", 5))
    assert manifest_of(sealed) == Manifest("agent-x", 5, ())
    assert open_bundle(agent, sealed, agent_id="agent-x") == Bundle("agent-x", 5, ())


def test_manifest_is_readable_without_the_key(agent: AgentKeyPair) -> None:
    sealed = seal_bundle(agent.public_bytes(), canary_bundle(epoch=77))
    assert manifest_of(sealed) == Manifest(
        "agent-x", 77, ((7, 3), (7, 4), (9, 1), (12, 1), (13, 2))
    )


def test_sealed_bytes_follow_the_documented_format(agent: AgentKeyPair) -> None:
    bundle = canary_bundle()
    sealed = seal_bundle(agent.public_bytes(), bundle)
    header, rest = split(sealed)
    assert header == header_bytes("agent-x", 42, [e.key for e in bundle.entries])
    info = b"runas:bundle:v1\x00" + hashlib.sha256(header).digest()
    private = x25519.X25519PrivateKey.from_private_bytes(agent.private_bytes())
    plaintext = SUITE.decrypt(rest, private, info=info)
    expected = plaintext_bytes(
        [(e.account_id, e.version, e.account_type, dict(e.fields)) for e in bundle.entries]
    )
    assert plaintext == expected
    assert len(rest) == 32 + len(expected) + 16


def test_a_bundle_assembled_from_the_documentation_opens(agent: AgentKeyPair) -> None:
    entries = [(3, 1, "basic", {"user": "web", "password": CANARY}), (8, 2, "binary", {"data": ""})]
    sealed = assemble_bundle(agent.public_bytes(), "agent-x", 9, entries)
    opened = open_bundle(agent, sealed, agent_id="agent-x")
    assert opened == Bundle("agent-x", 9, tuple(BundleEntry(a, v, k, f) for a, v, k, f in entries))


def test_the_frozen_bundle_still_opens() -> None:
    key = AgentKeyPair.from_private_bytes(bytes.fromhex(FROZEN_PRIVATE_HEX))
    opened = open_bundle(key, bytes.fromhex(FROZEN_BUNDLE_HEX), agent_id="agent-0001")
    assert opened == Bundle(
        "agent-0001",
        42,
        (
            BundleEntry(7, 3, "simple", {"password": "p\u00e4ss", "user": "sa"}),
            BundleEntry(9, 1, "community-string", {"community": "public"}),
        ),
    )


def test_plaintext_serialisation_is_deterministic(agent: AgentKeyPair) -> None:
    private = x25519.X25519PrivateKey.from_private_bytes(agent.private_bytes())
    reordered = Bundle("agent-x", 42, tuple(reversed(canary_bundle().entries)))
    plaintexts = set()
    for bundle in (canary_bundle(), canary_bundle(), reordered):
        header, rest = split(seal_bundle(agent.public_bytes(), bundle))
        info = b"runas:bundle:v1\x00" + hashlib.sha256(header).digest()
        plaintexts.add(SUITE.decrypt(rest, private, info=info))
    assert len(plaintexts) == 1


def test_each_seal_is_fresh(agent: AgentKeyPair) -> None:
    first = seal_bundle(agent.public_bytes(), canary_bundle())
    second = seal_bundle(agent.public_bytes(), canary_bundle())
    assert first != second
    assert split(first)[0] == split(second)[0]  # same manifest, new ephemeral key


@settings(max_examples=40, deadline=None)
@given(
    epoch=st.integers(0, 2**64 - 1),
    entries=st.dictionaries(
        st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)),
        st.dictionaries(
            st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,10}", fullmatch=True),
            st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
            max_size=4,
        ),
        max_size=6,
    ),
)
def test_round_trip_property(epoch: int, entries: dict[tuple[int, int], dict[str, str]]) -> None:
    agent = AgentKeyPair.from_private_bytes(bytes(range(1, 33)))
    bundle = Bundle(
        "agent-p", epoch, tuple(BundleEntry(a, v, "simple", f) for (a, v), f in entries.items())
    )
    assert (
        open_bundle(agent, seal_bundle(agent.public_bytes(), bundle), agent_id="agent-p") == bundle
    )


def test_memoryview_and_bytearray_blobs_open(agent: AgentKeyPair) -> None:
    sealed = seal_bundle(agent.public_bytes(), canary_bundle())
    assert open_bundle(agent, memoryview(sealed), agent_id="agent-x") == canary_bundle()
    assert open_bundle(agent, bytearray(sealed), agent_id="agent-x") == canary_bundle()


# --- binding to the agent --------------------------------------------------------------------


def test_another_agents_key_does_not_open(agent: AgentKeyPair, other: AgentKeyPair) -> None:
    sealed = seal_bundle(agent.public_bytes(), canary_bundle())
    with pytest.raises(DecryptionError) as excinfo:
        open_bundle(other, sealed, agent_id="agent-x")
    assert_opaque(excinfo)


def test_a_bundle_for_x_does_not_open_as_y(agent: AgentKeyPair) -> None:
    sealed = seal_bundle(agent.public_bytes(), canary_bundle(agent_id="agent-x"))
    with pytest.raises(DecryptionError) as excinfo:
        open_bundle(agent, sealed, agent_id="agent-y")
    assert_opaque(excinfo)


def test_a_bundle_for_x_sealed_to_ys_key_by_mistake_does_not_open_as_y(
    other: AgentKeyPair,
) -> None:
    # The server mixed up keys: X's bundle went to Y's public key. Y holds the right key, but
    # the bundle names X.
    sealed = seal_bundle(other.public_bytes(), canary_bundle(agent_id="agent-x"))
    with pytest.raises(DecryptionError) as excinfo:
        open_bundle(other, sealed, agent_id="agent-y")
    assert_opaque(excinfo)
    # ... and rewriting the header to name Y changes the HPKE info, so it does not open either.
    rest = split(sealed)[1]
    manifest = manifest_of(sealed)
    swapped = header_bytes("agent-y", manifest.epoch, list(manifest.entries)) + rest
    assert manifest_of(swapped).agent_id == "agent-y"
    with pytest.raises(DecryptionError) as excinfo:
        open_bundle(other, swapped, agent_id="agent-y")
    assert_opaque(excinfo)


# --- tampering -------------------------------------------------------------------------------

ENTRIES = [(7, 3), (7, 4), (9, 1), (12, 1), (13, 2)]
TAMPERED_HEADERS: dict[str, Callable[[], bytes]] = {
    "agent id": lambda: header_bytes("agent-y", 42, ENTRIES),
    "agent id, same length": lambda: header_bytes("agent-X", 42, ENTRIES),
    "epoch lowered": lambda: header_bytes("agent-x", 41, ENTRIES),
    "epoch raised": lambda: header_bytes("agent-x", 43, ENTRIES),
    "version changed": lambda: header_bytes("agent-x", 42, [(7, 3), (7, 5), *ENTRIES[2:]]),
    "account changed": lambda: header_bytes("agent-x", 42, [(6, 3), *ENTRIES[1:]]),
    "entry removed": lambda: header_bytes("agent-x", 42, ENTRIES[1:]),
    "last entry removed": lambda: header_bytes("agent-x", 42, ENTRIES[:-1]),
    "entry added": lambda: header_bytes("agent-x", 42, [*ENTRIES, (14, 1)]),
    "all entries removed": lambda: header_bytes("agent-x", 42, []),
    "format version": lambda: header_bytes("agent-x", 42, ENTRIES, version=2),
    "type": lambda: header_bytes("agent-x", 42, ENTRIES, type=4),
    "magic": lambda: header_bytes("agent-x", 42, ENTRIES, magic=b"RB"),
    "unsorted": lambda: header_bytes("agent-x", 42, [ENTRIES[1], ENTRIES[0], *ENTRIES[2:]]),
    "duplicate": lambda: header_bytes("agent-x", 42, [ENTRIES[0], *ENTRIES]),
    "count too high": lambda: header_bytes("agent-x", 42, ENTRIES, count=6),
}


@pytest.mark.parametrize("change", list(TAMPERED_HEADERS))
def test_every_manifest_change_fails_to_open(agent: AgentKeyPair, change: str) -> None:
    sealed = seal_bundle(agent.public_bytes(), canary_bundle())
    rest = split(sealed)[1]
    tampered = TAMPERED_HEADERS[change]() + rest
    assert tampered != sealed
    for agent_id in ("agent-x", "agent-y", "agent-X"):
        with pytest.raises(DecryptionError) as excinfo:
            open_bundle(agent, tampered, agent_id=agent_id)
        assert_opaque(excinfo)


def test_the_untampered_header_builder_reproduces_the_header(agent: AgentKeyPair) -> None:
    # Control for the test above: the builder alone changes nothing.
    sealed = seal_bundle(agent.public_bytes(), canary_bundle())
    header, rest = split(sealed)
    assert header_bytes("agent-x", 42, ENTRIES) == header
    assert open_bundle(agent, header + rest, agent_id="agent-x") == canary_bundle()


def test_flipping_any_bit_of_any_byte_fails(agent: AgentKeyPair) -> None:
    sealed = seal_bundle(agent.public_bytes(), canary_bundle())
    for index in range(len(sealed)):
        for bit in (0x01, 0x80):
            damaged = bytearray(sealed)
            damaged[index] ^= bit
            with pytest.raises(DecryptionError) as excinfo:
                open_bundle(agent, bytes(damaged), agent_id="agent-x")
            assert_opaque(excinfo)


def test_truncated_or_extended_blobs_fail(agent: AgentKeyPair) -> None:
    sealed = seal_bundle(agent.public_bytes(), Bundle("agent-x", 1, canary_bundle().entries[:1]))
    for cut in range(len(sealed)):
        with pytest.raises(DecryptionError) as excinfo:
            open_bundle(agent, sealed[:cut], agent_id="agent-x")
        assert_opaque(excinfo)
    for extra in (b"\x00", b"\x00" * 16):
        with pytest.raises(DecryptionError) as excinfo:
            open_bundle(agent, sealed + extra, agent_id="agent-x")
        assert_opaque(excinfo)


def test_manifest_of_refuses_what_is_not_a_bundle(agent: AgentKeyPair) -> None:
    once = seal_once(
        agent.public_bytes(), agent_id="agent-x", purpose="task", run_id="r1", fields={"p": "v"}
    )
    for blob in (b"", b"RA", b"RA\x01\x03", b"garbage" * 10, once):
        with pytest.raises(DecryptionError) as excinfo:
            manifest_of(blob)
        assert_opaque(excinfo)


# Someone holding only the public key can seal (base-mode HPKE is anonymous), so the plaintext
# must agree with the manifest on its own. Each case is correctly sealed with the right info.
GOOD = [(3, 1, "basic", {"user": "w", "password": CANARY}), (8, 2, "binary", {"data": "d"})]
MISMATCHES: dict[str, dict[str, Any]] = {
    "extra entry in plaintext": {"manifest": [(3, 1)]},
    "entry missing from plaintext": {"manifest": [(3, 1), (8, 2), (9, 1)]},
    "other version in plaintext": {"manifest": [(3, 1), (8, 3)]},
    "plaintext out of order": {
        "manifest": [(3, 1), (8, 2)],
        "plaintext": plaintext_bytes([GOOD[1], GOOD[0]]),
    },
    "plaintext count lies": {"plaintext": (3).to_bytes(4, "big") + plaintext_bytes(GOOD)[4:]},
    "trailing bytes": {"plaintext": plaintext_bytes(GOOD) + b"\x00"},
    "unsorted fields": {
        "plaintext": (2).to_bytes(4, "big")
        + entry_bytes(3, 1, "basic", fields_bytes({"user": "w", "password": CANARY}, sort=False))
        + entry_bytes(8, 2, "binary", fields_bytes({"data": "d"}))
    },
    "duplicate field": {
        "plaintext": (2).to_bytes(4, "big")
        + entry_bytes(3, 1, "basic", b"\x02" + fields_bytes({"user": "w"})[1:] * 2)
        + entry_bytes(8, 2, "binary", fields_bytes({"data": "d"}))
    },
    "invalid UTF-8 value": {
        "plaintext": (1).to_bytes(4, "big")
        + entry_bytes(3, 1, "basic", b"\x01\x08password" + (2).to_bytes(4, "big") + b"\xc3\x28"),
        "manifest": [(3, 1)],
    },
    "invalid field name": {
        "plaintext": (1).to_bytes(4, "big")
        + entry_bytes(3, 1, "basic", b"\x01\x00" + (1).to_bytes(4, "big") + b"x"),
        "manifest": [(3, 1)],
    },
}


def test_correctly_assembled_control_opens(agent: AgentKeyPair) -> None:
    sealed = assemble_bundle(agent.public_bytes(), "agent-x", 9, GOOD)
    assert len(open_bundle(agent, sealed, agent_id="agent-x").entries) == 2


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_plaintext_that_disagrees_with_the_manifest_fails(agent: AgentKeyPair, case: str) -> None:
    sealed = assemble_bundle(agent.public_bytes(), "agent-x", 9, GOOD, **MISMATCHES[case])
    with pytest.raises(DecryptionError) as excinfo:
        open_bundle(agent, sealed, agent_id="agent-x")
    assert_opaque(excinfo)


def test_every_truncation_of_a_correctly_sealed_plaintext_fails(agent: AgentKeyPair) -> None:
    # The parser relies on short slices leaving its position past the end; check every cut,
    # sealed correctly (right info) so that only the plaintext's shape is wrong.
    full = plaintext_bytes(GOOD)
    for cut in range(len(full)):
        sealed = assemble_bundle(agent.public_bytes(), "agent-x", 9, GOOD, plaintext=full[:cut])
        with pytest.raises(DecryptionError) as excinfo:
            open_bundle(agent, sealed, agent_id="agent-x")
        assert_opaque(excinfo)


# --- once -------------------------------------------------------------------------------------


def seal_run(agent: AgentKeyPair, **override: str) -> bytes:
    args = {"agent_id": "agent-x", "purpose": "task-credentials", "run_id": "run-0001"}
    args.update(override)
    return seal_once(agent.public_bytes(), fields={"user": "ops", "password": CANARY}, **args)


def test_once_round_trip(agent: AgentKeyPair) -> None:
    fields = open_once(
        agent, seal_run(agent), agent_id="agent-x", purpose="task-credentials", run_id="run-0001"
    )
    assert fields == {"user": "ops", "password": CANARY}
    assert isinstance(fields, SecretFields)


def test_once_follows_the_documented_format(agent: AgentKeyPair) -> None:
    header = once_header("agent-x", "run-0001", "task-credentials")
    sealed = seal_run(agent)
    assert sealed.startswith(header)
    info = b"runas:once:v1\x00" + hashlib.sha256(header).digest()
    private = x25519.X25519PrivateKey.from_private_bytes(agent.private_bytes())
    assert SUITE.decrypt(sealed[len(header) :], private, info=info) == fields_bytes(
        {"user": "ops", "password": CANARY}
    )


@pytest.mark.parametrize(
    "expected",
    [
        {"agent_id": "agent-y"},
        {"run_id": "run-0002"},
        {"purpose": "other"},
    ],
)
def test_once_is_bound_to_agent_run_and_purpose(
    agent: AgentKeyPair, expected: dict[str, str]
) -> None:
    args = {"agent_id": "agent-x", "purpose": "task-credentials", "run_id": "run-0001"}
    args.update(expected)
    with pytest.raises(DecryptionError) as excinfo:
        open_once(agent, seal_run(agent), **args)
    assert_opaque(excinfo)


def test_once_header_rewritten_for_another_run_fails(agent: AgentKeyPair) -> None:
    sealed = seal_run(agent)
    old = once_header("agent-x", "run-0001", "task-credentials")
    new = once_header("agent-x", "run-0002", "task-credentials")
    with pytest.raises(DecryptionError) as excinfo:
        open_once(
            agent,
            new + sealed[len(old) :],
            agent_id="agent-x",
            purpose="task-credentials",
            run_id="run-0002",
        )
    assert_opaque(excinfo)


def test_once_with_another_key_or_any_flipped_byte_fails(
    agent: AgentKeyPair, other: AgentKeyPair
) -> None:
    sealed = seal_run(agent)
    args = {"agent_id": "agent-x", "purpose": "task-credentials", "run_id": "run-0001"}
    with pytest.raises(DecryptionError):
        open_once(other, sealed, **args)
    for index in range(len(sealed)):
        damaged = bytearray(sealed)
        damaged[index] ^= 0x01
        with pytest.raises(DecryptionError) as excinfo:
            open_once(agent, bytes(damaged), **args)
        assert_opaque(excinfo)


def test_every_truncation_of_a_once_plaintext_fails(agent: AgentKeyPair) -> None:
    header = once_header("agent-x", "run-0001", "task-credentials")
    full = fields_bytes({"user": "ops", "password": CANARY})
    for cut in range(len(full)):
        sealed = hpke(agent.public_bytes(), header, full[:cut], b"runas:once:v1\x00")
        with pytest.raises(DecryptionError):
            open_once(
                agent, sealed, agent_id="agent-x", purpose="task-credentials", run_id="run-0001"
            )
    sealed = hpke(agent.public_bytes(), header, full, b"runas:once:v1\x00")  # control
    assert open_once(
        agent, sealed, agent_id="agent-x", purpose="task-credentials", run_id="run-0001"
    ) == {"user": "ops", "password": CANARY}


def test_bundles_and_once_blobs_cannot_stand_in_for_each_other(agent: AgentKeyPair) -> None:
    with pytest.raises(DecryptionError):
        open_bundle(agent, seal_run(agent), agent_id="agent-x")
    bundle = seal_bundle(agent.public_bytes(), canary_bundle())
    with pytest.raises(DecryptionError):
        open_once(agent, bundle, agent_id="agent-x", purpose="task-credentials", run_id="r")


# --- keys --------------------------------------------------------------------------------------


def test_key_pair_round_trips_through_raw_bytes(agent: AgentKeyPair) -> None:
    private = agent.private_bytes()
    assert len(private) == 32
    assert len(agent.public_bytes()) == 32
    again = AgentKeyPair.from_private_bytes(private)
    assert again.public_bytes() == agent.public_bytes()
    sealed = seal_bundle(agent.public_bytes(), canary_bundle())
    assert open_bundle(again, sealed, agent_id="agent-x") == canary_bundle()


def test_key_pair_repr_and_pickle_do_not_expose_the_key(agent: AgentKeyPair) -> None:
    text = repr(agent) + str(agent)
    for material in (agent.private_bytes(), agent.public_bytes()):
        assert material.hex() not in text.lower()
        assert base64.b64encode(material).decode() not in text
    with pytest.raises(TypeError):
        pickle.dumps(agent)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_wrong_key_sizes_are_invalid_input(agent: AgentKeyPair, size: int) -> None:
    with pytest.raises(InvalidInput):
        AgentKeyPair.from_private_bytes(bytes(size))
    with pytest.raises(InvalidInput):
        seal_bundle(bytes(size), canary_bundle())
    with pytest.raises(InvalidInput):
        check_public_key(bytes(size))


def test_a_low_order_public_key_is_refused() -> None:
    for key in (bytes(32), b"\x01" + bytes(31)):
        with pytest.raises(InvalidInput, match="not usable"):
            check_public_key(key)
        with pytest.raises(InvalidInput, match="not usable"):
            seal_bundle(key, canary_bundle())


def test_check_public_key_accepts_a_real_key(agent: AgentKeyPair) -> None:
    assert check_public_key(agent.public_bytes()) == agent.public_bytes()


# --- objects and caller errors -----------------------------------------------------------------


def test_bundle_refuses_duplicates_and_bad_values() -> None:
    entry = BundleEntry(1, 1, "simple", {"password": "p"})
    with pytest.raises(ValueError, match="twice"):
        Bundle("agent-x", 1, (entry, BundleEntry(1, 1, "simple", {"password": "q"})))
    with pytest.raises(InvalidInput):
        Bundle("agent x", 1, (entry,))
    with pytest.raises(InvalidInput):
        Bundle("agent-x\n", 1, (entry,))
    with pytest.raises(TypeError):
        Bundle("agent-x", True, (entry,))
    with pytest.raises(ValueError, match="epoch"):
        Bundle("agent-x", -1, (entry,))
    with pytest.raises(ValueError, match="account_id"):
        BundleEntry(2**64, 1, "simple", {})
    with pytest.raises(ValueError, match="version"):
        BundleEntry(1, 2**32, "simple", {})
    with pytest.raises(ValueError, match="account_type"):
        BundleEntry(1, 1, "no spaces", {})


@pytest.mark.parametrize(
    "args",
    [
        {"agent_id": "bad id"},
        {"run_id": ""},
        {"run_id": "run/1"},
        {"purpose": "x" * 65},
    ],
)
def test_once_refuses_bad_labels(agent: AgentKeyPair, args: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        seal_run(agent, **args)


def test_opening_with_an_invalid_agent_id_is_a_caller_error(agent: AgentKeyPair) -> None:
    sealed = seal_bundle(agent.public_bytes(), canary_bundle())
    with pytest.raises(InvalidInput):
        open_bundle(agent, sealed, agent_id="")


def test_secret_fields_are_immutable_and_compare_like_dicts() -> None:
    fields = SecretFields({"password": CANARY})
    assert fields == {"password": CANARY}
    assert dict(fields) == {"password": CANARY}
    assert not hasattr(fields, "__setitem__")
    source = {"password": "one"}
    entry = BundleEntry(1, 1, "simple", source)
    source["password"] = "two"
    assert entry.fields["password"] == "one"


# --- no secret anywhere it should not be ------------------------------------------------------


def canary_forms() -> list[bytes]:
    """The canary in clear, hex and base64 (every alignment, both alphabets), as bytes."""
    raw = CANARY.encode()
    forms = [raw, raw.hex().encode(), raw.hex().upper().encode(), CANARY.encode("utf-16-le")]
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(bytes(pad) + raw)
            # Skip the characters that also encode the padding bytes and the (padded) tail.
            forms.append(encoded[(pad * 4 + 2) // 3 + 1 : -4])
    return forms


def test_the_canary_detector_finds_every_encoding() -> None:
    # Control for the test below: each way a careless format could carry the value is caught.
    raw = CANARY.encode()
    carriers = [raw, raw.hex().encode(), raw.hex().upper().encode(), CANARY.encode("utf-16-le")]
    for pad in range(3):
        carriers.append(base64.b64encode(b"x" * pad + raw))
        carriers.append(base64.urlsafe_b64encode(b"xyz"[:pad] + raw + b"tail"))
    for carrier in carriers:
        blob = b"prefix" + carrier + b"suffix"
        assert any(form in blob for form in canary_forms()), carrier


def test_the_canary_is_nowhere_in_sealed_bytes(agent: AgentKeyPair) -> None:
    blobs = [seal_bundle(agent.public_bytes(), canary_bundle()), seal_run(agent)]
    for blob in blobs:
        for form in canary_forms():
            assert len(form) >= 16
            assert form not in blob
            assert form.lower() not in blob.lower()


def test_the_canary_is_in_no_repr_or_str(agent: AgentKeyPair) -> None:
    bundle = open_bundle(
        agent, seal_bundle(agent.public_bytes(), canary_bundle()), agent_id="agent-x"
    )
    once = open_once(
        agent, seal_run(agent), agent_id="agent-x", purpose="task-credentials", run_id="run-0001"
    )
    objects: list[object] = [bundle, bundle.manifest, once, agent, *bundle.entries]
    objects += [entry.fields for entry in bundle.entries]
    for obj in objects:
        for text in (repr(obj), str(obj), f"{obj}", f"{obj!r}"):
            assert CANARY not in text
            assert "Sekr3t" not in text
    assert "password=<hidden>" in repr(bundle.entries[0])


def test_the_canary_is_in_no_exception(agent: AgentKeyPair, other: AgentKeyPair) -> None:
    errors: list[BaseException] = []

    def capture(action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as exc:
            errors.append(exc)
        else:
            pytest.fail("expected an error")

    sealed = seal_bundle(agent.public_bytes(), canary_bundle())
    capture(lambda: open_bundle(other, sealed, agent_id="agent-x"))
    capture(lambda: open_bundle(agent, sealed[:-1], agent_id="agent-x"))
    bad_utf8 = MISMATCHES["invalid UTF-8 value"]
    capture(
        lambda: open_bundle(
            agent,
            assemble_bundle(agent.public_bytes(), "agent-x", 9, GOOD, **bad_utf8),
            agent_id="agent-x",
        )
    )
    # A lone surrogate cannot be encoded; UnicodeEncodeError would carry the whole value.
    capture(
        lambda: seal_bundle(
            agent.public_bytes(),
            Bundle("agent-x", 1, (BundleEntry(1, 1, "simple", {"password": CANARY + "\ud800"}),)),
        )
    )
    capture(lambda: seal_run(agent, run_id=CANARY))
    capture(lambda: SecretFields({"password": CANARY.encode()}))  # type: ignore[dict-item]
    capture(lambda: SecretFields({CANARY: "swapped name and value"}))
    capture(lambda: Bundle("agent-x", 1, ({"password": CANARY},)))  # type: ignore[arg-type]
    for err in errors:
        chain: BaseException | None = err
        while chain is not None:
            assert "Sekr3t" not in str(chain)
            assert "Sekr3t" not in repr(chain)
            assert all("Sekr3t" not in repr(arg) for arg in chain.args)
            chain = chain.__cause__ or chain.__context__
    surrogate = errors[3]
    assert isinstance(surrogate, InvalidInput)
    assert surrogate.__context__ is None


def test_public_surface_is_pinned() -> None:
    assert sorted(sealing.__all__) == [
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
