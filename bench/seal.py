"""Sealing to agents: our ``seal_bundle``/``open_bundle`` against raw HPKE from ``cryptography``.

    .venv/bin/python bench/seal.py                  # ~13 s; --seconds 12 --sample 0.1

The bundle is a typical one: 10 accounts of mixed types (Windows, SQL, SNMPv3, a UNIX
maintenance account with an SSH private key, a binary certificate...), about 3 KB of
plaintext. The baseline is ``Suite.encrypt``/``Suite.decrypt`` of the same suite
(X25519 / HKDF-SHA256 / AES-256-GCM) on a random payload of exactly our plaintext's size, with
a 48-byte ``info`` like ours and the recipient key already parsed: the cost that no envelope
around HPKE can avoid. Ours adds the manifest, the deterministic plaintext encoding, the SHA-256
of the header and parsing the raw public key; on opening, the parsing, the manifest check and
building the ``Bundle``.

Timing: the four cases take turns in short samples (``--sample`` seconds each) until
``--seconds`` have passed, so a frequency change or a noisy neighbour hits all of them alike.
Samples are measured in CPU time of this process (``time.process_time``), so time the CPU
spends on other processes does not count. Per case the best and the median sample are printed;
the verdict uses the medians. Run it alone on the machine all the same.

Target: ``seal_bundle`` at least 70 % of the raw seal rate. Opening has no target and is
reported for information: on top of HPKE it parses and checks the plaintext and builds one
Python object per entry and per field set, which for 10 accounts and 23 fields costs about as
nearly as much as the HPKE work itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cryptography
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from runas.crypto.sealing import AgentKeyPair, Bundle, BundleEntry, open_bundle, seal_bundle

TARGET = 0.70
AGENT = "sql-01.corp.contoso.com"


def typical_bundle() -> Bundle:
    ssh_key = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "b3BlbnNzaC1rZXktdjEAAAAA" * 16 + "\n"
    fields: list[tuple[str, dict[str, str]]] = [
        ("windows", {"domain": "corp.contoso.com", "user": "svc_sql", "password": "x" * 24}),
        ("windows", {"domain": "corp.contoso.com", "user": "svc_iis", "password": "y" * 24}),
        ("action", {"domain": "corp.contoso.com", "user": "svc_mon", "password": "z" * 32}),
        ("simple", {"user": "sa", "password": "Sql-P4ss-" * 3}),
        ("basic", {"user": "probe", "password": "w3b-pr0be-pass"}),
        ("community-string", {"community": "n0t-public-42"}),
        (
            "snmpv3",
            {"user": "snmpmon", "auth_key": "a" * 32, "privacy_key": "p" * 32},
        ),
        ("unix-monitoring", {"user": "scxmon", "password": "m0nitor" * 3}),
        ("unix-maintenance", {"user": "scxmaint", "ssh_key": ssh_key, "passphrase": "k" * 20}),
        ("binary", {"data": "MIIC" + "QUJDREVGR0g" * 180}),
    ]
    entries = tuple(
        BundleEntry(1000 + index, 3, kind, values) for index, (kind, values) in enumerate(fields)
    )
    return Bundle(AGENT, 48_213, entries)


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per CPU second of ``fn`` over about ``seconds`` (batches keep the clock out)."""
    calls = 0
    batch = 20
    start = time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        now = time.process_time()
        if now >= deadline:
            return calls / (now - start)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                cpu = row.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; cryptography {cryptography.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="total measuring time")
    parser.add_argument("--sample", type=float, default=0.1, help="seconds per sample")
    args = parser.parse_args()

    agent = AgentKeyPair.generate()
    public = agent.public_bytes()
    bundle = typical_bundle()
    sealed = seal_bundle(public, bundle)
    header_bytes = 4 + 1 + len(AGENT) + 8 + 4 + 12 * len(bundle.entries)
    plaintext_bytes = len(sealed) - header_bytes - 32 - 16
    assert open_bundle(agent, sealed, agent_id=AGENT) == bundle

    suite = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)
    recipient = x25519.X25519PublicKey.from_public_bytes(public)
    private = x25519.X25519PrivateKey.from_private_bytes(agent.private_bytes())
    payload = os.urandom(plaintext_bytes)
    info = os.urandom(48)
    raw_sealed = suite.encrypt(payload, recipient, info=info)

    cases: dict[str, Callable[[], object]] = {
        "raw HPKE seal": lambda: suite.encrypt(payload, recipient, info=info),
        "seal_bundle": lambda: seal_bundle(public, bundle),
        "raw HPKE open": lambda: suite.decrypt(raw_sealed, private, info=info),
        "open_bundle": lambda: open_bundle(agent, sealed, agent_id=AGENT),
    }
    print(f"machine: {machine()}")
    print(
        f"bundle: {len(bundle.entries)} accounts, plaintext {plaintext_bytes} B, "
        f"header {header_bytes} B, sealed {len(sealed)} B; "
        f"{args.seconds:g} s of {args.sample:g} s samples, CPU time"
    )
    for fn in cases.values():  # warm-up
        rate(fn, args.sample)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline:
        for name, fn in cases.items():
            samples[name].append(rate(fn, args.sample))
    median = {name: statistics.median(values) for name, values in samples.items()}
    best = {name: max(values) for name, values in samples.items()}

    print()
    print(f"{'case':<16} {'median':>10} {'':>9} {'best':>10} {'':>9}  samples")
    for name in cases:
        print(
            f"{name:<16} {median[name]:>8,.0f}/s {1e6 / median[name]:>6.1f} µs "
            f"{best[name]:>8,.0f}/s {1e6 / best[name]:>6.1f} µs  {len(samples[name])}"
        )
    print()
    for ours, raw, target in (
        ("seal_bundle", "raw HPKE seal", TARGET),
        ("open_bundle", "raw HPKE open", None),
    ):
        ratio = median[ours] / median[raw]
        if target is None:
            verdict = "no target"
        else:
            verdict = f"target >= {target:.0%}  {'OK' if ratio >= target else 'MISSED'}"
        print(
            f"{ours} / {raw}: {ratio:6.1%} of the median rate "
            f"({best[ours] / best[raw]:.1%} of the best)   {verdict}"
        )


if __name__ == "__main__":
    main()
