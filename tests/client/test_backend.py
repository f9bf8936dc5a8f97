"""HttpBackend against a real server: the same views and the same errors as LocalBackend."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from runas.backend import LocalBackend
from runas.client import HttpBackend
from runas.errors import InUse, NotFound, RunAsError
from runas.runtime import Runtime
from runas.settings import load_settings
from support.cli import Cli
from support.server import Remote, create_user, login_token


def local_backend(cli: Cli) -> LocalBackend:
    env = {
        "RUNAS_DATA_DIR": str(cli.data_dir),
        "RUNAS_DATABASE_URL": cli.db_url,
        "RUNAS_ACTOR": "test:admin",
    }
    return LocalBackend(Runtime(load_settings(env=env)))


def local_line(cli: Cli, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    """The error line the same command prints in local mode, on the same management group."""
    with monkeypatch.context() as m:
        m.delenv("RUNAS_SERVER")
        m.delenv("RUNAS_TOKEN")
        return cli.fails(*args)


FAILING = [
    ("account", "show", "nobody"),
    ("profile", "show", "Nope.Profile"),
    ("explain", "--object", "System.Computer:nowhere.test"),
    ("config", "show", "nowhere.test"),
    ("key", "retire", "kek-20000101-abcdef"),
    ("account", "add", "x", "--type", "windows", "--user", "u", "--stdin"),
    ("distribution", "set", "nobody", "--more-secure", "--computer", "a.test"),
]


def test_a_failure_prints_the_same_line_remotely_as_locally(
    remote: Remote, monkeypatch: pytest.MonkeyPatch, subtests: pytest.Subtests
) -> None:
    for args in FAILING:
        with subtests.test(" ".join(args)):
            assert remote.cli.fails(*args) == local_line(remote.cli, monkeypatch, *args)


def test_a_reported_error_is_rebuilt_as_the_same_class(remote: Remote) -> None:
    cli = remote.cli
    cli.ok("account", "add", "used", "--type", "action", "--user", "u", "--stdin", stdin="pw")
    cli.ok("profile", "associate", "System.DefaultActionAccount", "used", "--all")
    http = HttpBackend(remote.server.url, SecretStr(remote.token))
    local = local_backend(cli)
    try:
        for call in (
            lambda b: b.account_show("nobody"),
            lambda b: b.account_remove("used"),
            lambda b: b.group_show("Nope.Group"),
        ):
            with pytest.raises(RunAsError) as there:
                call(http)
            with pytest.raises(RunAsError) as here:
                call(local)
            assert type(there.value) is type(here.value)
            assert str(there.value) == str(here.value)
        with pytest.raises(InUse):
            http.account_remove("used")
        with pytest.raises(NotFound):
            http.object_show("System.Computer:nowhere.test")
    finally:
        http.close()
        local.close()


def test_names_with_reserved_characters_reach_the_right_account(remote: Remote) -> None:
    cli = remote.cli
    name = "ops/db;x:y z?a=b#c%20"
    cli.ok("account", "add", name, "--type", "simple", "--user", "u", "--stdin", stdin="pw")
    shown = json.loads(cli.ok("account", "show", name, "--json").out)
    assert shown["name"] == name
    cli.ok("account", "update", name, "--description", "reserved characters")
    cli.ok("distribution", "set", name, "--less-secure")
    assert json.loads(cli.ok("distribution", "get", name, "--json").out)["mode"] == "less-secure"
    out = cli.ok("account", "remove", name).out
    assert out.strip() == f"removed account {name!r} and every version of its secret"
    assert name in cli.fails("account", "show", name)


def test_local_only_commands_are_refused_in_one_line(remote: Remote) -> None:
    assert remote.cli.fails("init", "--name", "x") == (
        "'runas init' runs on the server host, against its data directory and database; "
        "run it there without --server or RUNAS_SERVER"
    )
    assert remote.cli.fails("db", "upgrade").startswith(
        "'runas db upgrade' runs on the server host"
    )
    line = remote.cli.fails("token", "list", "--user", "someone")
    assert line.startswith("--user is for local mode")


def test_key_rotation_completes_through_the_server(remote: Remote) -> None:
    cli = remote.cli
    cli.ok("account", "add", "a", "--type", "simple", "--user", "u", "--stdin", stdin="pw")
    out = cli.ok("key", "rotate").out
    assert "1 secret version(s) re-wrapped" in out
    doc = json.loads(cli.ok("key", "list", "--json").out)
    assert [k["secret_versions"] for k in doc if k["active"]] == [1]


def test_a_bad_token_gets_one_line_that_says_how_to_log_in(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNAS_TOKEN", "runas_not-a-real-token")
    line = remote.cli.fails("account", "list")
    assert "runas login --server" in line
    assert "runas_not-a-real-token" not in line


def test_no_token_at_all_fails_before_any_request(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNAS_TOKEN")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(remote.cli.data_dir.parent / "config"))
    line = remote.cli.fails("account", "list")
    assert line.startswith(f"not logged in to {remote.server.url}")


def test_a_refusal_by_role_is_one_line(remote: Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    password = "a long enough passphrase 1"
    create_user(remote.cli, "reader", password, ["read-only-operator"])
    monkeypatch.setenv("RUNAS_TOKEN", login_token(remote.server.url, "reader", password))
    line = remote.cli.fails("account", "list")
    assert line == "your roles do not grant runas:read"
    assert remote.cli.fails("account", "show", "nobody") == line  # nothing told about what exists
    assert remote.cli.ok("pack", "list").out
