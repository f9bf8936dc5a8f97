"""``runas ssh-host …`` as an administrator types it, on the server host and against a server:
the same output in both modes. Offers arrive through the service, as agents' reports do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from runas.runtime import Runtime
from runas.services import ssh_hosts
from runas.settings import load_settings
from support.cli import Cli

pytestmark = pytest.mark.cli_modes("local", "remote")

AGENT = "a.contoso.com"
HOST = "web1.contoso.com"


def ed25519_key() -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")


def ecdsa_key() -> str:
    public = ec.generate_private_key(ec.SECP384R1()).public_key()
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")


@contextmanager
def runtime() -> Iterator[Runtime]:
    """The service layer on the CLI's management group (the Cli set the environment)."""
    rt = Runtime(load_settings())
    try:
        yield rt
    finally:
        rt.close()


def offer(key: str, host: str = HOST, port: int = 22) -> None:
    with runtime() as rt, rt.unit_of_work(actor=f"agent:{AGENT}") as uow:
        assert ssh_hosts.record_offer(uow, AGENT, host, port, key)


def test_an_offered_key_is_approved_by_its_fingerprint(cli: Cli) -> None:
    assert cli.ok("ssh-host", "list").out.strip() == "(none)"
    key = ed25519_key()
    fp = ssh_hosts.parse_public_key(key).fingerprint
    offer(key)

    pending = cli.ok("ssh-host", "list", "--pending")
    assert HOST in pending.out
    assert fp in pending.out
    assert "pending" in pending.out
    assert "ssh-keygen -lf" in pending.err

    wrong = "SHA256:" + "x" * 43
    assert cli.fails("ssh-host", "approve", HOST, "--fingerprint", wrong) == (
        f"no pending SSH host key of {HOST} has fingerprint {wrong}; pending: {fp} (ssh-ed25519)"
    )
    assert cli.fails("ssh-host", "approve", "ghost:2222", "--fingerprint", fp) == (
        "no SSH host key was offered or added for ghost:2222"
    )
    out = cli.ok("ssh-host", "approve", HOST, "--fingerprint", fp).out.strip()
    assert out == (
        f"trusted ssh-ed25519 key {fp} of {HOST}; agents receive it with their next configuration"
    )
    (view,) = json.loads(cli.ok("ssh-host", "list", "--json").out)
    assert (view["status"], view["approved_by"], view["reported_by"]) == (
        "trusted",
        cli.actor,
        AGENT,
    )
    assert view["known_hosts_line"] == f"{HOST} {key}"
    assert json.loads(cli.ok("ssh-host", "list", "--pending", "--json").out) == []

    # a different key of the same type later: CHANGED
    rogue = ed25519_key()
    offer(rogue)
    listed = cli.ok("ssh-host", "list", "--pending")
    assert "pending (CHANGED)" in listed.out
    assert "man-in-the-middle" in listed.err
    alerts = json.loads(cli.ok("alert", "list", "--json").out)
    assert [a["source"] for a in alerts] == ["ssh-host-key"]
    rogue_fp = ssh_hosts.parse_public_key(rogue).fingerprint
    assert cli.ok("ssh-host", "remove", HOST, "--fingerprint", rogue_fp).out.strip() == (
        f"removed pending ssh-ed25519 key {rogue_fp} of {HOST}"
    )
    assert json.loads(cli.ok("alert", "list", "--json").out) == []


def test_keys_are_added_and_removed_by_administrators(cli: Cli, tmp_path: Path) -> None:
    key = ecdsa_key()
    fp = ssh_hosts.parse_public_key(key).fingerprint
    assert cli.ok("ssh-host", "add", "db1:2222", "--key", key).out.strip() == (
        f"trusted ecdsa-sha2-nistp384 key {fp} of db1:2222; agents receive it with their next "
        "configuration"
    )
    pub = tmp_path / "ssh_host_ed25519_key.pub"
    other = ed25519_key()
    pub.write_text(f"{other} root@db1\n")
    added = json.loads(
        cli.ok("ssh-host", "add", "[::1]:2200", "--key-file", str(pub), "--json").out
    )
    assert added["known_hosts_line"] == f"[::1]:2200 {other}"

    rows = json.loads(cli.ok("ssh-host", "list", "--host", "db1:2222", "--json").out)
    assert [r["fingerprint"] for r in rows] == [fp]

    assert cli.fails("ssh-host", "add", "db1") == (
        "give the key with exactly one of --key or --key-file"
    )
    assert cli.fails("ssh-host", "add", "db1", "--key", "ssh-ed25519 AAAA") == (
        "the SSH key's data is not a ssh-ed25519 key"
    )
    assert cli.fails("ssh-host", "add", "*.contoso.com", "--key", key).startswith(
        "'*.contoso.com' is not a host name or address"
    )
    assert cli.fails("ssh-host", "add", "db1", "--key-file", str(tmp_path / "none")).startswith(
        "cannot read"
    )

    assert cli.ok("ssh-host", "remove", "db1:2222").out.strip() == (
        f"removed trusted ecdsa-sha2-nistp384 key {fp} of db1:2222"
    )
    assert cli.fails("ssh-host", "remove", "db1:2222") == (
        "no SSH host key was offered or added for db1:2222"
    )
    assert [r["host"] for r in json.loads(cli.ok("ssh-host", "list", "--json").out)] == ["::1"]
