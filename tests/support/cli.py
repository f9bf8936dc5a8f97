"""Run the real ``runas`` CLI in-process, as a user would type it, and capture what it prints.

``Cli`` points the CLI at a data directory (keyring, log) and a database URL through the
same environment variables an administrator would set, feeds standard input when a command
reads secrets from it, and returns the exit code with stdout and stderr.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from runas.cli.main import run


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    def ok(self) -> CliResult:
        assert self.code == 0, f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"
        return self


class Cli:
    def __init__(
        self,
        data_dir: Path,
        db_url: str,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        self.data_dir = data_dir
        self.db_url = db_url
        self._monkeypatch = monkeypatch
        self._capsys = capsys
        self.outputs: list[str] = []
        #: who the management group records as having made a change
        self.actor = "test:admin"
        #: the server this CLI is a client of (None: local mode)
        self.server_url: str | None = None
        monkeypatch.setenv("RUNAS_DATA_DIR", str(data_dir))
        monkeypatch.setenv("RUNAS_DATABASE_URL", db_url)
        monkeypatch.setenv("RUNAS_ACTOR", "test:admin")
        # A developer's own remote settings must not turn a local test into a remote one.
        for var in ("RUNAS_KEYRING", "RUNAS_KEYRING_FILE", "RUNAS_CONFIG", "RUNAS_SERVER",
                    "RUNAS_TOKEN", "RUNAS_CA_FILE"):  # fmt: skip
            monkeypatch.delenv(var, raising=False)

    def remote(self, url: str, token: str, *, actor: str) -> None:
        """From now on, talk to the server at ``url`` with ``token`` (as ``actor``)."""
        self.server_url = url
        self.actor = actor
        self._monkeypatch.setenv("RUNAS_SERVER", url)
        self._monkeypatch.setenv("RUNAS_TOKEN", token)

    def __call__(self, *args: str, stdin: str | bytes | None = None) -> CliResult:
        raw = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
        self._monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
        self._capsys.readouterr()
        code = run(list(args))
        captured = self._capsys.readouterr()
        self.outputs.extend([captured.out, captured.err])
        return CliResult(code, captured.out, captured.err)

    def ok(self, *args: str, stdin: str | bytes | None = None) -> CliResult:
        return self(*args, stdin=stdin).ok()

    def fails(self, *args: str, stdin: str | bytes | None = None) -> str:
        """Run a command that must fail with exit 1 and exactly one error line; return it."""
        result = self(*args, stdin=stdin)
        assert result.code == 1, f"expected exit 1, got {result.code}: {result.out}{result.err}"
        lines = [line for line in result.err.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one error line, got: {result.err!r}"
        assert lines[0].startswith("runas: error: "), lines[0]
        assert "Traceback" not in result.err + result.out
        return lines[0].removeprefix("runas: error: ")
