"""The agent's identity on disk: created once, reloaded, refused when others can read it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runas.agent.identity import (
    CONFIG_CACHE,
    HPKE_KEY,
    STATE_FILE,
    TLS_CERT,
    TLS_KEY,
    erase_secrets,
    load_identity,
    write_private,
)
from runas.crypto.ca import tls_key_to_pem
from runas.errors import ConfigurationError


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_first_start_creates_private_files_and_a_restart_reloads_them(tmp_path: Path) -> None:
    data = tmp_path / "agent"
    first = load_identity(data, "a.contoso.com")
    assert mode(data) == 0o700
    for name in (HPKE_KEY, TLS_KEY, STATE_FILE):
        assert mode(data / name) == 0o600
    assert len((data / HPKE_KEY).read_bytes()) == 32
    assert (data / TLS_KEY).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert not first.approved
    assert json.loads((data / STATE_FILE).read_text())["agent_id"] == "a.contoso.com"
    assert repr(first) == (
        f"AgentIdentity(agent_id='a.contoso.com', data_dir='{data}', approved=False)"
    )

    again = load_identity(data, "a.contoso.com")
    assert again.keys.public_bytes() == first.keys.public_bytes()
    assert tls_key_to_pem(again.tls_key) == tls_key_to_pem(first.tls_key)

    again.save_certificate(b"-----BEGIN CERTIFICATE-----\n")
    assert mode(data / TLS_CERT) == 0o600
    assert load_identity(data, "a.contoso.com").approved
    again.forget_certificate()
    assert not (data / TLS_CERT).exists()
    assert not load_identity(data, "a.contoso.com").approved


def test_another_agent_id_is_refused(tmp_path: Path) -> None:
    load_identity(tmp_path / "d", "a")
    with pytest.raises(ConfigurationError, match="belongs to agent 'a'"):
        load_identity(tmp_path / "d", "b")


@pytest.mark.parametrize("name", [HPKE_KEY, TLS_KEY, STATE_FILE])
def test_loose_file_permissions_are_refused(tmp_path: Path, name: str) -> None:
    data = tmp_path / "agent"
    load_identity(data, "a")
    os.chmod(data / name, 0o644)
    with pytest.raises(ConfigurationError, match=f"{name} has mode 0644; it must be 0600") as err:
        load_identity(data, "a")
    assert "\n" not in str(err.value)


def test_loose_directory_and_links_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "agent"
    load_identity(data, "a")
    os.chmod(data, 0o755)  # noqa: S103 - the loose mode under test
    with pytest.raises(ConfigurationError, match="mode 0755; it must be 0700"):
        load_identity(data, "a")
    os.chmod(data, 0o700)
    (data / TLS_KEY).rename(tmp_path / "elsewhere")
    (data / TLS_KEY).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigurationError, match="regular file"):
        load_identity(data, "a")


def test_a_corrupt_key_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "agent"
    load_identity(data, "a")
    write_private(data / HPKE_KEY, b"short")
    with pytest.raises(ConfigurationError, match="not an agent HPKE key"):
        load_identity(data, "a")


def test_write_private_is_atomic_and_erase_removes_the_cache(tmp_path: Path) -> None:
    data = tmp_path / "agent"
    load_identity(data, "a")
    old = os.umask(0o000)  # a permissive umask must not loosen the file
    try:
        write_private(data / CONFIG_CACHE, b"sealed")
    finally:
        os.umask(old)
    assert mode(data / CONFIG_CACHE) == 0o600
    assert not list(data.glob(".*.tmp"))
    (data / f".{CONFIG_CACHE}.123.tmp").write_bytes(b"half")
    erase_secrets(data)
    assert not (data / CONFIG_CACHE).exists()
    assert not list(data.glob(".*.tmp"))
    assert (data / HPKE_KEY).exists()
