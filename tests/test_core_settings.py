"""Settings: command line > environment > config file > defaults, and loud failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from runas.errors import ConfigurationError
from runas.settings import load_settings


def test_defaults_live_in_the_data_directory(tmp_path: Path) -> None:
    s = load_settings(env={"RUNAS_DATA_DIR": str(tmp_path)})
    assert s.resolved_database_url == f"sqlite:///{(tmp_path / 'runas.db').resolve()}"
    assert s.resolved_keyring_file == tmp_path / "keyring.json"
    assert s.resolved_log_file == tmp_path / "runas.log"


def test_config_file_then_environment_then_command_line(tmp_path: Path) -> None:
    (tmp_path / "runas.toml").write_text(
        '[runas]\ndatabase_url = "postgresql://db/from-file"\nmanagement_group = "file"\n'
    )
    env = {"RUNAS_DATA_DIR": str(tmp_path)}
    assert load_settings(env=env).database_url == "postgresql://db/from-file"
    assert load_settings(env=env).management_group == "file"
    env["RUNAS_DATABASE_URL"] = "postgresql://db/from-env"
    assert load_settings(env=env).database_url == "postgresql://db/from-env"
    other = tmp_path / "elsewhere"
    assert load_settings(env=env, overrides={"data_dir": other}).data_dir == other


def test_a_bad_value_names_the_key_and_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"'database_url' \(RUNAS_DATABASE_URL\)"):
        load_settings(env={"RUNAS_DATA_DIR": str(tmp_path), "RUNAS_DATABASE_URL": "nonsense"})
    (tmp_path / "runas.toml").write_text('[runas]\nlog_flie = "x"\n')
    with pytest.raises(ConfigurationError, match=r"'log_flie' \(config file\)"):
        load_settings(env={"RUNAS_DATA_DIR": str(tmp_path)})


def test_broken_toml_and_a_missing_named_config_fail_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "runas.toml").write_text("[runas\n")
    with pytest.raises(ConfigurationError, match=r"runas\.toml") as err:
        load_settings(env={"RUNAS_DATA_DIR": str(tmp_path)})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings(env={"RUNAS_CONFIG": str(tmp_path / "missing.toml")})
