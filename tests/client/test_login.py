"""``runas login`` / ``runas logout`` against a real server."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest

from runas.client import credentials_path
from support.server import Remote


@pytest.fixture
def config_home(remote: Remote, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Logged out: no RUNAS_TOKEN, an empty config directory of the test's own."""
    home = remote.cli.data_dir.parent / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv("RUNAS_TOKEN")
    return home


def test_login_keeps_a_private_token_that_later_commands_use(
    remote: Remote, config_home: Path
) -> None:
    cli = remote.cli
    out = cli.ok("login", "--user", remote.admin, "--password-stdin", stdin=remote.password).out
    assert out.startswith(f"logged in to {remote.server.url} as {remote.admin} until ")
    path = credentials_path()
    assert path.is_relative_to(config_home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cli.ok("account", "list").out.strip() == "(none)"


def test_logout_forgets_and_revokes_the_token(remote: Remote, config_home: Path) -> None:
    cli = remote.cli
    cli.ok("login", "--user", remote.admin, "--password-stdin", stdin=remote.password + "\n")
    token = _stored_token()
    out = cli.ok("logout").out
    assert out.strip() == (
        f"logged out of {remote.server.url}: session token of {remote.admin} revoked and forgotten"
    )
    assert not credentials_path().exists()
    r = httpx.get(f"{remote.server.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert "not logged in" in cli.fails("account", "list")
    again = cli.ok("logout").out.strip()
    assert again == f"not logged in to {remote.server.url}: nothing to forget"


def test_a_wrong_password_is_one_line_and_stores_nothing(remote: Remote, config_home: Path) -> None:
    line = remote.cli.fails(
        "login", "--user", remote.admin, "--password-stdin", stdin="wrong-password"
    )
    assert "wrong-password" not in line
    assert "runas login" not in line  # no advice to do what just failed
    assert not credentials_path().exists()


def test_login_without_a_server_says_how_to_name_one(
    remote: Remote, config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNAS_SERVER")
    line = remote.cli.fails("login", "--password-stdin", stdin="x")
    assert "--server" in line


def test_the_token_never_reaches_a_log_an_output_or_a_url(
    remote: Remote, config_home: Path
) -> None:
    cli = remote.cli
    cli.ok("login", "--user", remote.admin, "--password-stdin", stdin=remote.password)
    token = _stored_token()
    cli.ok("account", "add", "a", "--type", "simple", "--user", "u", "--stdin", stdin="pw")
    cli.ok("account", "list")
    cli.fails("account", "show", "nobody")
    cli.ok("logout")
    logs = [p for p in cli.data_dir.parent.rglob("*") if p.is_file() and "log" in p.name]
    assert logs, "expected the client's and the server's logs"
    for secret in (token, remote.token, remote.password):
        for log in logs:
            assert secret not in log.read_text(errors="replace"), log
        assert all(secret not in text for text in cli.outputs)


def _stored_token() -> str:
    doc = json.loads(credentials_path().read_text())
    (entry,) = doc["servers"].values()
    token: str = entry["token"]
    return token
