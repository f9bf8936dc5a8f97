"""``runas agent run``: exit codes and one-line errors."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from runas.agent.cli import build_app, reset_epoch_command_line, run_command_line
from runas.agent.config import ConfigStore
from runas.agent.identity import load_identity
from support.agent_https import Pki


def config(tmp_path: Path, pki: Pki, **extra: str) -> Path:
    lines = {
        "servers": '["https://127.0.0.1:9"]',
        "ca_file": f'"{pki.ca_file}"',
        "data_dir": f'"{tmp_path / "agent"}"',
        "name": '"a"',
        "action_user": '"nobody"',
        **extra,
    }
    path = tmp_path / "agent.toml"
    path.write_text("".join(f"{k} = {v}\n" for k, v in lines.items()))
    return path


def test_a_clean_stop_exits_0(tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    stop = threading.Event()
    stop.set()
    assert run_command_line(config(tmp_path, pki), stop_event=stop) == 0
    assert capsys.readouterr().err == ""
    assert (tmp_path / "agent" / "hpke.key").exists()


def test_errors_are_one_line_and_exit_1(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_command_line(config(tmp_path, pki, poll_interval='"never"')) == 1
    err = capsys.readouterr().err
    assert err.startswith("runas agent: agent setting 'poll_interval' (config file)")
    assert err.count("\n") == 1

    (tmp_path / "agent").mkdir(mode=0o755)
    os.chmod(tmp_path / "agent", 0o755)  # noqa: S103 - the loose mode under test
    assert run_command_line(config(tmp_path, pki)) == 1
    err = capsys.readouterr().err
    assert "must be 0700" in err
    assert err.count("\n") == 1


def test_the_typer_app_has_run_and_reset_epoch() -> None:
    app = build_app()
    assert [c.name for c in app.registered_commands] == ["run", "reset-epoch"]


def test_reset_epoch_forgets_the_held_epoch_and_the_cache(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, pki)
    identity = load_identity(tmp_path / "agent", "a")
    identity.update_state(config_epoch=42, bundle_epoch=41)
    identity.cache_file.write_bytes(b"{}")
    identity.cache_file.chmod(0o600)
    assert reset_epoch_command_line(path) == 0
    assert capsys.readouterr().out.startswith("agent a: forgot configuration epoch 42;")
    state = load_identity(tmp_path / "agent", "a").state
    assert (state["config_epoch"], state["bundle_epoch"]) == (0, 0)
    assert not identity.cache_file.exists()
    store = ConfigStore(load_identity(tmp_path / "agent", "a"))
    assert store.held_epoch == 0


def test_reset_epoch_errors_are_one_line(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reset_epoch_command_line(config(tmp_path, pki, poll_interval='"never"')) == 1
    err = capsys.readouterr().err
    assert err.startswith("runas agent: ")
    assert err.count("\n") == 1
