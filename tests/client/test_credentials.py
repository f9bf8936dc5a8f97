"""The credentials file: private to its owner, one token per server, refused when exposed."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from runas.client import CredentialStore, StoredLogin, credentials_path
from runas.errors import ConfigurationError
from support.cli import Cli


def login_for(server: str, token: str) -> StoredLogin:
    return StoredLogin(server=server, user="alice", token=SecretStr(token), token_id=7)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_file_lives_under_xdg_config_home_or_home(tmp_path: Path) -> None:
    assert credentials_path({"XDG_CONFIG_HOME": str(tmp_path)}) == (
        tmp_path / "runas" / "credentials.json"
    )
    # A relative XDG_CONFIG_HOME is invalid by the spec and ignored.
    assert credentials_path({"XDG_CONFIG_HOME": "rel"}) == (
        Path.home() / ".config" / "runas" / "credentials.json"
    )


def test_tokens_are_kept_per_server_in_a_private_file(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "runas" / "credentials.json")
    store.put(login_for("https://a.example", "runas_A"))
    store.put(login_for("https://b.example", "runas_B"))
    assert mode(store.path) == 0o600
    assert mode(store.path.parent) == 0o700
    a = store.get("https://a.example")
    assert a is not None
    assert (a.token.get_secret_value(), a.user, a.token_id) == ("runas_A", "alice", 7)
    assert "runas_A" not in repr(a)
    assert store.remove("https://a.example")
    assert store.get("https://a.example") is None
    assert store.get("https://b.example") is not None
    assert store.remove("https://b.example")
    assert not store.path.exists()
    assert not store.remove("https://b.example")


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604])
def test_a_file_others_can_read_is_refused(tmp_path: Path, bad_mode: int) -> None:
    store = CredentialStore(tmp_path / "credentials.json")
    store.put(login_for("https://a.example", "runas_A"))
    store.path.chmod(bad_mode)
    with pytest.raises(ConfigurationError) as err:
        store.get("https://a.example")
    assert f"mode {bad_mode:04o}" in str(err.value)
    assert "chmod 600" in str(err.value)
    with pytest.raises(ConfigurationError):
        store.put(login_for("https://a.example", "runas_A2"))  # never rewritten in place


def test_the_cli_refuses_an_exposed_file_in_one_line(
    sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    server = "http://127.0.0.1:9"
    store = CredentialStore(credentials_path())
    store.put(login_for(server, "runas_A"))
    store.path.chmod(0o644)
    line = sqlite_cli.fails("--server", server, "account", "list")
    assert line.startswith(f"credentials file {store.path} is readable by others (mode 0644)")
    assert "runas_A" not in line


def test_a_damaged_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text("{not json")
    path.chmod(0o600)
    with pytest.raises(ConfigurationError, match="is not valid JSON"):
        CredentialStore(path).get("https://a.example")
    path.write_text(json.dumps({"version": 1}))
    with pytest.raises(ConfigurationError, match="no 'servers' table"):
        CredentialStore(path).get("https://a.example")
