"""The CLI's remote mode: the Backend protocol spoken over HTTP to a management server, and
the credentials ``runas login`` keeps."""

from __future__ import annotations

from runas.client.backend import HttpBackend
from runas.client.credentials import CredentialStore, StoredLogin, credentials_path
from runas.client.remote import RemoteTarget, connect, login, logout, remote_target

__all__ = [
    "CredentialStore",
    "HttpBackend",
    "RemoteTarget",
    "StoredLogin",
    "connect",
    "credentials_path",
    "login",
    "logout",
    "remote_target",
]
