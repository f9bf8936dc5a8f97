"""A server with a certificate from a private CA: refused until the client is told the CA."""

from __future__ import annotations

import pytest

from support.cli import Cli
from support.server import Remote, make_tls_files, serve


@pytest.fixture
def tls_remote(sqlite_cli: Cli, request: pytest.FixtureRequest) -> Remote:
    tls = make_tls_files(sqlite_cli.data_dir.parent / "tls")
    return serve(sqlite_cli, request, tls=tls)


def test_an_untrusted_certificate_is_one_line_naming_the_fix(tls_remote: Remote) -> None:
    line = tls_remote.cli.fails("account", "list")
    assert line == (
        f"cannot reach server {tls_remote.server.url}: its TLS certificate is not trusted "
        "(name the CA certificate with --ca-file or RUNAS_CA_FILE)"
    )


def test_the_ca_file_makes_the_server_trusted(
    tls_remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = str(tls_remote.cli.data_dir.parent / "tls" / "ca.pem")
    assert tls_remote.cli.ok("--ca-file", ca, "account", "list").out.strip() == "(none)"
    monkeypatch.setenv("RUNAS_CA_FILE", ca)
    assert tls_remote.cli.ok("account", "list").out.strip() == "(none)"


def test_a_missing_ca_file_is_named(tls_remote: Remote) -> None:
    missing = tls_remote.cli.data_dir.parent / "nope.pem"
    line = tls_remote.cli.fails("--ca-file", str(missing), "account", "list")
    assert line == f"--ca-file names {missing}, which is not a readable file"


def test_a_ca_file_that_is_not_a_certificate_is_named(tls_remote: Remote) -> None:
    bogus = tls_remote.cli.data_dir.parent / "bogus.pem"
    bogus.write_text("not a certificate\n")
    line = tls_remote.cli.fails("--ca-file", str(bogus), "account", "list")
    assert line.startswith(f"CA file {bogus} cannot be used: ")
