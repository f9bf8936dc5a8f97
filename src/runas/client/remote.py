"""Which server the CLI talks to, with which token, trusting which certificate; and the
login/logout conversations that obtain and give back a session token.

Precedence: ``--server`` over ``RUNAS_SERVER``; ``RUNAS_TOKEN`` over the credentials file;
``--ca-file`` over ``RUNAS_CA_FILE`` over the system's certificate authorities.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, SecretStr

from runas.client.backend import HttpBackend
from runas.client.credentials import CredentialStore, StoredLogin, credentials_path
from runas.client.transport import ApiClient, normalise_server_url, segment
from runas.errors import ConfigurationError, RunAsError, Unauthenticated, error_for


@dataclass(frozen=True)
class RemoteTarget:
    url: str
    token: SecretStr | None
    verify: bool | Path


class LoginAnswer(BaseModel):
    token: SecretStr
    expires_at: datetime | None = None
    user: str | dict[str, object] | None = None
    token_id: int | None = None


def server_url(server: str | None, env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    raw = server or env.get("RUNAS_SERVER")
    if not raw:
        return None
    return normalise_server_url(raw, allow_insecure=env.get("RUNAS_ALLOW_INSECURE_HTTP") == "1")


def ca_verify(ca_file: Path | None, env: Mapping[str, str] | None = None) -> bool | Path:
    env = os.environ if env is None else env
    path = ca_file or (Path(env["RUNAS_CA_FILE"]) if env.get("RUNAS_CA_FILE") else None)
    if path is None:
        return True
    if not path.is_file():
        origin = "--ca-file" if ca_file else "RUNAS_CA_FILE"
        raise ConfigurationError(f"{origin} names {path}, which is not a readable file")
    return path


def store(env: Mapping[str, str] | None = None) -> CredentialStore:
    return CredentialStore(credentials_path(env))


def remote_target(
    server: str | None, ca_file: Path | None, env: Mapping[str, str] | None = None
) -> RemoteTarget | None:
    """The server named by ``--server`` or ``RUNAS_SERVER``, or None for local mode."""
    env = os.environ if env is None else env
    url = server_url(server, env)
    if url is None:
        return None
    token: SecretStr | None = None
    if env.get("RUNAS_TOKEN"):
        token = SecretStr(env["RUNAS_TOKEN"].strip())
    else:
        stored = store(env).get(url)
        token = stored.token if stored is not None else None
    return RemoteTarget(url=url, token=token, verify=ca_verify(ca_file, env))


def connect(target: RemoteTarget) -> HttpBackend:
    return HttpBackend(target.url, target.token, verify=target.verify)


def login(
    url: str, name: str, password: SecretStr, *, verify: bool | Path, credentials: CredentialStore
) -> StoredLogin:
    """Exchange a name and password for a session token and keep it in the credentials file."""
    api = ApiClient(url, None, verify=verify)
    try:
        data = api.call("POST", "/login", body={"name": name, "password": password}, auth=False)
        answer = api.one(LoginAnswer, data)
    finally:
        api.close()
    user = answer.user
    shown = user.get("name") if isinstance(user, dict) else user
    stored = StoredLogin(
        server=url,
        user=str(shown or name),
        token=answer.token,
        token_id=answer.token_id,
        expires_at=answer.expires_at,
    )
    credentials.put(stored)
    return stored


def logout(url: str, *, verify: bool | Path, credentials: CredentialStore) -> StoredLogin | None:
    """Forget the stored token for ``url`` and revoke it on the server.

    The local copy is removed whatever the server says: a token the user asked to forget must
    not stay on disk because the server was down. With the token's id the server revokes it
    by ``DELETE /tokens/{id}``; without, ``POST /logout`` revokes the token that calls it."""
    stored = credentials.get(url)
    if stored is None:
        return None
    credentials.remove(url)
    api = ApiClient(url, stored.token, verify=verify)
    try:
        if stored.token_id is not None:
            api.call("DELETE", f"/tokens/{segment(str(stored.token_id))}")
        else:
            api.call("POST", "/logout")
    except Unauthenticated:
        pass  # already expired or revoked: nothing left to revoke
    except RunAsError as err:
        raise error_for(
            err.code, f"forgot the token for {url}, but the server did not revoke it: {err}"
        ) from None
    finally:
        api.close()
    return stored
