"""What goes over the wire, and what a user sees when the wire fails.

The server-side cases run against a real server; the two that need an answer no runas server
gives (a proxy's HTML error page) or need to look at the raw request use httpx's
MockTransport, the boundary httpx itself offers for that.
"""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import SecretStr

from runas.client import HttpBackend
from runas.client.transport import normalise_server_url, segment
from runas.errors import ConfigurationError, ServerError
from runas.services.accounts import AccountCreate
from support.cli import Cli
from support.server import free_port


def test_a_server_that_is_not_there_is_one_line(
    sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("RUNAS_SERVER", url)
    monkeypatch.setenv("RUNAS_TOKEN", "runas_whatever")
    assert sqlite_cli.fails("account", "list") == f"cannot reach server {url}: connection refused"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://runas.example:8443/", "https://runas.example:8443"),
        ("https://runas.example/api/v1", "https://runas.example"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://localhost:8765/", "http://localhost:8765"),
        ("http://[::1]:8765", "http://[::1]:8765"),
    ],
)
def test_server_urls_are_normalised(given: str, expected: str) -> None:
    assert normalise_server_url(given) == expected


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ("runas.example", "not an http:// or https:// URL"),
        ("ftp://runas.example", "not an http:// or https:// URL"),
        ("https://admin:hunter2@runas.example", "must not carry credentials"),
        ("http://runas.example:8765", "use https://"),
    ],
)
def test_unusable_server_urls_are_refused_with_the_reason(given: str, words: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        normalise_server_url(given)
    assert words in str(err.value)
    assert "hunter2" not in str(err.value)


def test_plain_http_to_another_host_is_refused_through_the_cli(
    sqlite_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNAS_TOKEN", "runas_whatever")
    line = sqlite_cli.fails("--server", "http://runas.example:8765", "account", "list")
    assert "use https://" in line


def test_path_segments_encode_every_reserved_character() -> None:
    assert segment("a/b;c:d e?f#g%h") == "a%2Fb%3Bc%3Ad%20e%3Ff%23g%25h"


def test_secrets_go_in_the_body_and_the_token_only_in_the_authorization_header() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            404,
            json={
                "type": "urn:runas:problem:not-found",
                "title": "Not Found",
                "status": 404,
                "detail": "stop here",
                "instance": request.url.path,
            },
            headers={"content-type": "application/problem+json"},
        )

    backend = HttpBackend(
        "http://127.0.0.1:9", SecretStr("runas_TOKEN-CANARY"), transport=httpx.MockTransport(answer)
    )
    req = AccountCreate(
        name="canary/acct",
        type="simple",
        fields={"user": "u"},
        secrets={"password": SecretStr("PASSWORD-CANARY")},
    )
    with pytest.raises(Exception, match="stop here"):
        backend.account_add(req)
    with pytest.raises(Exception, match="stop here"):
        backend.account_show("canary/acct")
    add, show = seen
    assert json.loads(add.content)["secrets"] == {"password": "PASSWORD-CANARY"}
    assert show.url.raw_path == b"/api/v1/accounts/canary%2Facct"
    for request in seen:
        assert "CANARY" not in str(request.url)
        assert request.headers["authorization"] == "Bearer runas_TOKEN-CANARY"
        others = {k: v for k, v in request.headers.items() if k != "authorization"}
        assert "CANARY" not in json.dumps(others)
    assert "PASSWORD-CANARY" not in repr(req)


def test_an_answer_that_is_not_a_problem_document_is_one_line() -> None:
    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html><body>Bad Gateway</body></html>")

    backend = HttpBackend(
        "http://127.0.0.1:9", SecretStr("runas_x"), transport=httpx.MockTransport(proxy)
    )
    with pytest.raises(ServerError) as err:
        backend.account_list(None)
    assert str(err.value) == (
        "server http://127.0.0.1:9 answered 502 Bad Gateway to GET /api/v1/accounts"
    )


def test_an_answer_of_the_wrong_shape_blames_the_server() -> None:
    def odd(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[{"name": "a"}])

    backend = HttpBackend(
        "http://127.0.0.1:9", SecretStr("runas_x"), transport=httpx.MockTransport(odd)
    )
    with pytest.raises(ServerError) as err:
        backend.account_list(None)
    assert "sent an unexpected list of AccountSummary" in str(err.value)
