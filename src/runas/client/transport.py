"""One HTTP conversation with a management server: URLs, bodies, and errors mapped back to
the error tree, so a remote command fails with the same line as a local one.

Secrets travel only in JSON bodies: a :class:`pydantic.SecretStr` is revealed while the body
is encoded, just before it is sent, and never appears in a URL, a header other than the
bearer token, or a log record (httpx logs the method and URL only).
"""

from __future__ import annotations

import ipaddress
import json
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from runas import __version__
from runas.errors import ConfigurationError, RunAsError, ServerError, Unauthenticated, error_for

API_PREFIX = "/api/v1"
PROBLEM_PREFIX = "urn:runas:problem:"
DEFAULT_TIMEOUT = 30.0

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
Query = Mapping[str, str | int | bool | None]
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def normalise_server_url(url: str, *, allow_insecure: bool = False) -> str:
    """The server's root URL without a trailing slash (an ``/api/v1`` suffix is accepted too).

    Plain ``http://`` is refused for anything but a loopback address: the bearer token and
    every secret typed would cross the network in clear text.
    """
    text = url.strip().rstrip("/")
    text = text.removesuffix(API_PREFIX).rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"server URL {url!r} is not an http:// or https:// URL (e.g. https://runas.example:8443)"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(
            f"server URL {_shown(url)!r} must not carry credentials, a query or a fragment"
        )
    if parts.scheme == "http" and not allow_insecure and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            f"server URL {text!r} uses plain http to a host that is not this machine: tokens and "
            "secrets would cross the network unencrypted; use https:// (set "
            "RUNAS_ALLOW_INSECURE_HTTP=1 to override)"
        )
    return text


def _shown(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://***@{host}{port}{parts.path}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def trust(verify: bool | Path) -> bool | ssl.SSLContext:
    """What TLS certificates to trust: the system's CAs (True), none checked (False), or the
    CA certificates in a file (for a server with a certificate from a private CA)."""
    if not isinstance(verify, Path):
        return verify
    try:
        return ssl.create_default_context(cafile=str(verify))
    except (OSError, ssl.SSLError) as err:  # unreadable, or not PEM certificates
        reason = getattr(err, "strerror", None) or getattr(err, "reason", None) or str(err)
        raise ConfigurationError(f"CA file {verify} cannot be used: {reason}") from None


def segment(value: str) -> str:
    """A path segment, every reserved character percent-encoded (names may hold ``/ ; : ? #``
    and spaces; the server's ``{ref:path}`` routes decode them back)."""
    return quote(value, safe="")


def reveal(value: Any) -> Any:
    """A request body as JSON-ready data, with each SecretStr's value revealed — the only
    place a secret leaves its wrapper on the client."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="python", by_alias=True)
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [reveal(v) for v in value]
    return to_jsonable_python(value)


class ApiClient:
    """A connection to one server. ``verify`` is True (system CAs), False, or a CA file."""

    def __init__(
        self,
        base_url: str,
        token: SecretStr | None,
        *,
        verify: bool | Path = True,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self._token = token
        headers = {"User-Agent": f"runas-cli/{__version__}", "Accept": "application/json"}
        self._http = httpx.Client(
            base_url=base_url + API_PREFIX,
            headers=headers,
            verify=trust(verify),
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    # -- requests ---------------------------------------------------------------------------

    def call(
        self,
        method: Method,
        path: str,
        *,
        body: Any = None,
        query: Query | None = None,
        auth: bool = True,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request and return the decoded JSON answer; raise the reported error."""
        send_headers = dict(headers or {})
        if auth:
            if self._token is None:
                raise Unauthenticated(
                    f"not logged in to {self.base_url}: run 'runas login --server "
                    f"{self.base_url}' or set RUNAS_TOKEN"
                )
            send_headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        params = {k: _query_value(v) for k, v in (query or {}).items() if v is not None}
        content = None
        if body is not None:
            content = json.dumps(reveal(body), separators=(",", ":")).encode()
            send_headers["Content-Type"] = "application/json"
        try:
            response = self._http.request(
                method,
                path,
                content=content,
                params=params,
                headers=send_headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException:
            raise ServerError(
                f"server {self.base_url} did not answer in time ({method} {_api(path)})"
            ) from None
        except httpx.TransportError as err:
            raise ConfigurationError(
                f"cannot reach server {self.base_url}: {_reason(err)}"
            ) from None
        except httpx.RequestError as err:  # a response that could not be decoded, …
            raise ServerError(
                f"request to server {self.base_url} failed ({method} {_api(path)}): {_reason(err)}"
            ) from None
        if response.is_success:
            if response.status_code == 204 or not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise ServerError(
                    f"server {self.base_url} sent a response that is not JSON "
                    f"({method} {_api(path)})"
                ) from None
        raise self._error(response, method, path, authenticated=auth)

    def one(self, model: type[M], data: Any) -> M:
        """Validate a response against the view it must be."""
        return self._checked(lambda: model.model_validate(data), model.__name__)

    def many(self, model: type[M], data: Any) -> list[M]:
        adapter = TypeAdapter(list[model])  # type: ignore[valid-type]
        return self._checked(lambda: adapter.validate_python(data), f"list of {model.__name__}")

    def _checked(self, build: Callable[[], T], what: str) -> T:
        # A mismatch is the server's fault, not the user's, and says so.
        try:
            return build()
        except ValidationError as err:
            first = err.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ServerError(
                f"server {self.base_url} sent an unexpected {what} ({loc}: {first['msg']}); "
                "is it the same version of runas as this client?"
            ) from None

    # -- errors -----------------------------------------------------------------------------

    def _error(
        self, response: httpx.Response, method: str, path: str, *, authenticated: bool
    ) -> RunAsError:
        problem = _problem(response)
        if response.status_code == 401 and authenticated:
            detail = problem[1] if problem else "authentication required"
            return Unauthenticated(
                f"{detail} (server {self.base_url}): run 'runas login --server {self.base_url}'"
                " or set RUNAS_TOKEN"
            )
        if problem is not None:
            code, detail = problem
            return error_for(code, detail)
        return ServerError(
            f"server {self.base_url} answered {response.status_code} "
            f"{response.reason_phrase} to {method} {_api(path)}"
        )


def _problem(response: httpx.Response) -> tuple[str, str] | None:
    """(code, detail) of an RFC 9457 problem document, or None for anything else."""
    ctype = response.headers.get("content-type", "")
    if "json" not in ctype:
        return None
    try:
        doc = response.json()
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    kind = doc.get("type")
    detail = doc.get("detail")
    if not isinstance(detail, str) or not detail:
        title = doc.get("title")
        detail = title if isinstance(title, str) and title else None
    if not isinstance(kind, str) or not kind.startswith(PROBLEM_PREFIX) or detail is None:
        return None
    # One line, whatever the server sent.
    return kind.removeprefix(PROBLEM_PREFIX), " ".join(detail.split())


def _query_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _api(path: str) -> str:
    return API_PREFIX + path.split("?", 1)[0]


def _reason(err: httpx.RequestError) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            "its TLS certificate is not trusted (name the CA certificate with --ca-file "
            "or RUNAS_CA_FILE)"
        )
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    return text
