"""Agent settings: the TOML file, RUNAS_AGENT_* overrides, durations and one-line failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from runas.agent.handoff import HandOff
from runas.agent.settings import AgentSettings, load_agent_settings, parse_duration
from runas.errors import ConfigurationError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


BASE = 'servers = ["https://ms1:8443", "https://ms2:8443"]\nca_file = "/etc/runas/ca.pem"\n'


def test_file_then_environment(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + 'name = "A.Contoso.com"\npoll_interval = "5m"\n')
    s = load_agent_settings(path, env={})
    assert s.servers == ("https://ms1:8443", "https://ms2:8443")
    assert s.agent_id == "a.contoso.com"
    assert s.poll_interval == 300
    assert s.report_interval == 10
    assert s.handoff is HandOff.STDIN
    assert s.resolved_log_file == Path("/var/lib/runas-agent/agent.log")

    env = {
        "RUNAS_AGENT_SERVERS": "https://ms3:1, https://ms4:2",
        "RUNAS_AGENT_POLL_INTERVAL": "0.2s",
        "RUNAS_AGENT_HANDOFF": "file",
        "RUNAS_AGENT_DATA_DIR": str(tmp_path),
        "RUNAS_AGENT_MAX_PARALLEL": "3",
    }
    s = load_agent_settings(path, env=env)
    assert s.servers == ("https://ms3:1", "https://ms4:2")
    assert s.poll_interval == pytest.approx(0.2)
    assert s.handoff is HandOff.FILE
    assert s.max_parallel == 3
    assert s.resolved_log_file == tmp_path / "agent.log"


def test_an_agent_table_and_environment_only(tmp_path: Path) -> None:
    path = write(tmp_path, "[agent]\n" + BASE)
    assert load_agent_settings(path, env={}).ca_file == Path("/etc/runas/ca.pem")
    s = load_agent_settings(
        None, env={"RUNAS_AGENT_SERVERS": "https://h:1", "RUNAS_AGENT_CA_FILE": "/ca.pem"}
    )
    assert s.servers == ("https://h:1",)
    assert s.name  # the host's FQDN by default


@pytest.mark.parametrize(
    ("text", "env", "match"),
    [
        (BASE + 'poll_interval = "soon"\n', {}, r"'poll_interval' \(config file\): must be a dur"),
        (BASE, {"RUNAS_AGENT_REPORT_INTERVAL": "0s"}, r"RUNAS_AGENT_REPORT_INTERVAL"),
        ('servers = ["http://ms1:80"]\nca_file = "/c"\n', {}, r"'servers'.*https"),
        ('servers = ["https://ms1/x"]\nca_file = "/c"\n', {}, r"'servers'.*without a path"),
        ('servers = []\nca_file = "/c"\n', {}, r"'servers'"),
        ('servers = ["https://ms1:1"]\n', {}, r"'ca_file'"),
        (BASE + 'name = "bad name"\n', {}, r"'name'"),
        (BASE + 'handoff = "env"\n', {}, r"'handoff'"),
        (BASE + 'pol_interval = "5s"\n', {}, r"'pol_interval'"),
        (BASE + 'action_user = "Root User"\n', {}, r"'action_user'"),
    ],
)
def test_bad_values_fail_in_one_line_naming_the_key(
    tmp_path: Path, text: str, env: dict[str, str], match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match) as err:
        load_agent_settings(write(tmp_path, text), env=env)
    assert "\n" not in str(err.value)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_agent_settings(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigurationError, match=r"agent\.toml"):
        load_agent_settings(write(tmp_path, "[agent\n"), env={})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30), ("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), ("0.2s", 0.2), (7, 7)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "-1s", "5 minutes", "0", True, None])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match=r"duration|longer"):
        parse_duration(text)


def test_settings_are_frozen() -> None:
    s = AgentSettings(servers=("https://h:1",), ca_file=Path("/c"), name="x")
    with pytest.raises(ValueError, match="frozen"):
        s.name = "y"  # type: ignore[misc]


def test_the_default_name_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("runas.agent.settings.socket.getfqdn", lambda: "Host With Spaces")
    with pytest.raises(ConfigurationError, match="'name'"):
        load_agent_settings(
            None, env={"RUNAS_AGENT_SERVERS": "https://h:1", "RUNAS_AGENT_CA_FILE": "/c"}
        )
    monkeypatch.setattr("runas.agent.settings.socket.getfqdn", lambda: "DB01.Corp.Example")
    s = load_agent_settings(
        None, env={"RUNAS_AGENT_SERVERS": "https://h:1", "RUNAS_AGENT_CA_FILE": "/c"}
    )
    assert s.agent_id == "db01.corp.example"
