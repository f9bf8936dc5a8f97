"""Server settings: RUNAS_* variables > [server] in runas.toml > defaults; loud failures."""

from pathlib import Path

import pytest

from runas.errors import ConfigurationError
from runas.server.settings import MIB, load_server_settings
from runas.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RUNAS_HOST", "RUNAS_PORT", "RUNAS_TLS_CERT", "RUNAS_TLS_KEY", "RUNAS_CONFIG",
                "RUNAS_MAX_BODY_BYTES", "RUNAS_LOG_LEVEL"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)


def _core(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_settings(env={"RUNAS_DATA_DIR": str(tmp_path)})


def test_defaults_are_loopback_and_bounded(tmp_path: Path) -> None:
    s = load_server_settings(_core(tmp_path))
    assert (s.host, s.port, s.tls, s.max_body_bytes) == ("127.0.0.1", 8765, False, MIB)
    assert s.max_upload_bytes == 16 * MIB
    assert s.url == "http://127.0.0.1:8765"


def test_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "runas.toml").write_text(
        'management_group = "file"\n[server]\nport = 9000\nhost = "192.0.2.1"\n'
    )
    core = _core(tmp_path)
    assert core.management_group == "file"  # the [server] table does not upset the core
    assert load_server_settings(core).port == 9000
    monkeypatch.setenv("RUNAS_PORT", "9100")
    s = load_server_settings(core)
    assert (s.port, s.host) == (9100, "192.0.2.1")
    assert load_server_settings(core, {"port": 9200}).port == 9200


def test_a_bad_value_names_the_key_and_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNAS_PORT", "eighty")
    with pytest.raises(ConfigurationError, match=r"'port' \(RUNAS_PORT\)"):
        load_server_settings(_core(tmp_path))
    monkeypatch.delenv("RUNAS_PORT")
    (tmp_path / "runas.toml").write_text("[server]\nmax_body_bytes = -1\n")
    with pytest.raises(ConfigurationError, match=r"'max_body_bytes' \(config file .*runas.toml\)"):
        load_server_settings(_core(tmp_path))
    (tmp_path / "runas.toml").write_text('[server]\nlisten = "x"\n')
    with pytest.raises(ConfigurationError, match=r"'listen' \(config file"):
        load_server_settings(_core(tmp_path))


def test_tls_needs_both_certificate_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="tls_cert and tls_key") as err:
        load_server_settings(_core(tmp_path), {"tls_cert": tmp_path / "c.pem"})
    assert "\n" not in str(err.value)
    s = load_server_settings(
        _core(tmp_path), {"tls_cert": tmp_path / "c.pem", "tls_key": tmp_path / "k.pem"}
    )
    assert s.url.startswith("https://")
