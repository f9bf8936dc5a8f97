"""One real ``runas server`` process on a loopback port: it starts, says where it listens, is
ready, serves a login and a call, and stops cleanly on SIGTERM."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from runas.domain.roles import Role
from runas.runtime import Runtime
from server.conftest import PASSWORD, add_user


@pytest.mark.slow
def test_runas_server_serves_and_stops_on_sigterm(runtime: Runtime, tmp_path: Path) -> None:
    add_user(runtime, "admin", [Role.ADMINISTRATOR.value])
    runtime.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNAS_")}
    env.update(
        RUNAS_DATA_DIR=str(runtime.settings.data_dir),
        RUNAS_DATABASE_URL=runtime.settings.resolved_database_url,
        RUNAS_PORT="0",
        PYTHONUNBUFFERED="1",
    )
    command = [sys.executable, "-c", "from runas.cli.main import main; main()", "server"]
    stderr = (tmp_path / "stderr").open("wb")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()
        assert line.startswith("runas server listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[-1]
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.05)
        login = httpx.post(f"{url}/api/v1/login", json={"name": "admin", "password": PASSWORD})
        assert login.status_code == 200, login.text
        token = login.json()["token"]
        me = httpx.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.json()["name"] == "admin"
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stderr.close()
        if process.stdout is not None:
            process.stdout.close()
    log = (tmp_path / "stderr").read_text()
    assert '"route": "/api/v1/me"' in log  # the JSON access log went to stderr
    assert "Traceback" not in log
    assert token not in log
    assert PASSWORD not in log
