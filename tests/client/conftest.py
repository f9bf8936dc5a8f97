"""A real server on a fresh SQLite management group, and the CLI as its client."""

from __future__ import annotations

import pytest

from support.cli import Cli
from support.server import Remote, serve


@pytest.fixture
def remote(sqlite_cli: Cli, request: pytest.FixtureRequest) -> Remote:
    """``remote.cli`` talks to a real ``runas server`` as an administrator."""
    return serve(sqlite_cli, request)
