"""The typed credential hand-off: how a credential reaches a workflow process (domain.md §11).

A workflow program receives its credential as one JSON document, the *credential document*:

    {"version": 1, "type": "windows",
     "account": {"id": 7, "name": "SQL sa", "secret_version": 3,
                 "identity": "corp.contoso.com\\\\svc"},
     "fields": {"domain": "corp.contoso.com", "user": "svc", "password": "…"},
     "encoding": {}}

``type`` is the account type (domain.md §3) and ``fields`` holds its public and secret fields
under the names of :mod:`runas.domain.accounts` (``user``, ``domain``, ``password``, ``ssh_key``,
``passphrase``, ``community``, ``auth_key``…). Secrets kept as bytes (``data`` of a binary account,
``ssh_key``) stay base64 text and are listed in ``encoding`` as ``"base64"``. A workflow that runs
as the computer's own action identity gets ``{"version": 1, "type": "none"}``: a program always
reads one document and branches on its type.

The document reaches the program by one of two :class:`HandOff` modes, never on a command line,
in a script body or in an environment variable (all three are readable by other local users or
end up in logs, ``ps`` and ``/proc/<pid>/environ``):

* ``stdin`` — written to the program's standard input, which is then closed;
* ``file`` — written to a 0600 file in a private 0700 directory, whose *path* (not a secret) is
  given in ``RUNAS_CREDENTIAL_FILE``; see :class:`CredentialFile` for its life cycle.

Both are the only ways the document is serialised. :class:`CredentialDocument` keeps the
secrets out of its repr, so a log line or a traceback that shows it shows no secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

from runas.domain.accounts import (
    AccountType,
    display_identity,
    field_specs,
    parse_account_type,
    public_field_names,
    secret_field_names,
)
from runas.errors import InvalidInput, RunAsError

DOCUMENT_VERSION = 1
NO_CREDENTIAL_TYPE = "none"

#: environment variable naming the hand-off mode the program should read ("stdin" or "file")
HANDOFF_ENV = "RUNAS_HANDOFF"
#: environment variable holding the path of the credential file (file mode only)
CREDENTIAL_FILE_ENV = "RUNAS_CREDENTIAL_FILE"

#: tmpfs: a credential file there never reaches a disk (a world-writable directory, but files
#: go in a private directory that mkdtemp creates with a random name and mode 0700)
_SHM = Path("/dev/shm")  # noqa: S108


class HandOff(StrEnum):
    STDIN = "stdin"
    FILE = "file"


class CredentialDocument:
    """A credential document, ready to hand to one program. Build it with
    :func:`credential_document` (or use :data:`NO_CREDENTIAL`); it is immutable."""

    __slots__ = ("_payload", "_secrets", "account_id", "account_name", "secret_version", "type")

    def __init__(
        self,
        payload: Mapping[str, Any],
        secrets: tuple[str, ...],
        *,
        account_name: str | None,
        account_id: int | None,
        secret_version: int | None,
    ) -> None:
        self._payload = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        self._secrets = secrets
        self.type: str = str(payload["type"])
        self.account_name = account_name
        self.account_id = account_id
        self.secret_version = secret_version

    @property
    def has_credential(self) -> bool:
        return self.type != NO_CREDENTIAL_TYPE

    def to_dict(self) -> dict[str, Any]:
        """A fresh JSON-ready copy of the document (with its secrets: handle with care)."""
        doc: dict[str, Any] = json.loads(self._payload)
        return doc

    def to_json(self) -> bytes:
        """The document as the program reads it: UTF-8 JSON and a final newline."""
        return (self._payload + "\n").encode("utf-8")

    def secret_values(self) -> tuple[str, ...]:
        """The secret values the document carries, for a :class:`~runas.agent.scrub.Scrubber`
        and for the checks that keep them off command lines. A base64 secret also gives its
        decoded text when it is text (a PEM key), since that is what a program would print."""
        return self._secrets

    def __repr__(self) -> str:
        if not self.has_credential:
            return "CredentialDocument(type='none')"
        return (
            f"CredentialDocument(type={self.type!r}, account={self.account_name!r}, "
            f"secret_version={self.secret_version}, secrets=**********)"
        )

    __str__ = __repr__


NO_CREDENTIAL = CredentialDocument(
    {"version": DOCUMENT_VERSION, "type": NO_CREDENTIAL_TYPE},
    (),
    account_name=None,
    account_id=None,
    secret_version=None,
)


def _decoded_text(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def credential_document(
    account_type: AccountType | str | None,
    public_fields: Mapping[str, str | None],
    secret_fields: Mapping[str, str],
    *,
    account_name: str | None = None,
    account_id: int | None = None,
    secret_version: int | None = None,
) -> CredentialDocument:
    """The credential document of one account version (``account_type`` None: no credential).

    Field names are checked against the account type, so a secret cannot slip into a public
    field or the other way round; errors name the field, never a value. Values are not
    re-validated: the server did that when the account was saved.
    """
    if account_type is None:
        if any(v is not None for v in public_fields.values()) or secret_fields:
            raise InvalidInput("a hand-off without a credential takes no fields")
        return NO_CREDENTIAL
    kind = parse_account_type(account_type) if isinstance(account_type, str) else account_type
    if not account_name or account_id is None or secret_version is None:
        raise InvalidInput("a credential document needs the account's name, id and secret version")

    public_names = public_field_names(kind)
    secret_names = secret_field_names(kind)
    fields: dict[str, str] = {}
    public: dict[str, str] = {}
    for name, value in public_fields.items():
        if value is None:
            continue
        if name not in public_names:
            where = "a secret" if name in secret_names else "not a field"
            raise InvalidInput(f"{name!r} is {where} of a {kind} account, not a public field")
        public[name] = fields[name] = value
    for name in secret_fields:
        if name not in secret_names:
            raise InvalidInput(f"{name!r} is not a secret of a {kind} account")
    fields.update(secret_fields)

    encoding: dict[str, str] = {}
    secrets: list[str] = []
    for spec in field_specs(kind):
        if not spec.secret or spec.name not in secret_fields:
            continue
        value = secret_fields[spec.name]
        secrets.append(value)
        if spec.kind == "bytes":
            encoding[spec.name] = "base64"
            text = _decoded_text(value)
            if text is not None:
                secrets.append(text)

    payload = {
        "version": DOCUMENT_VERSION,
        "type": kind.value,
        "account": {
            "id": account_id,
            "name": account_name,
            "secret_version": secret_version,
            "identity": display_identity(kind, public),
        },
        "fields": fields,
        "encoding": encoding,
    }
    return CredentialDocument(
        payload,
        tuple(secrets),
        account_name=account_name,
        account_id=account_id,
        secret_version=secret_version,
    )


def default_directory() -> Path:
    """Where credential files go: ``/dev/shm`` (memory only) when usable, else the system
    temporary directory."""
    if _SHM.is_dir() and os.access(_SHM, os.W_OK | os.X_OK):
        return _SHM
    return Path(tempfile.gettempdir())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class CredentialFile:
    """A credential document in a 0600 file, for the ``file`` hand-off; use it as a context
    manager around the program's whole run.

    On entry: a fresh directory (mode 0700, random name) is made under ``directory``, the file
    is created in it with O_EXCL and mode 0600, and both are given to ``owner`` (uid, gid) when
    the program runs as another user — which needs root. On exit, whatever happened (a timeout,
    an exception): the file is overwritten with zeros, then the directory is removed with
    everything the program left in it. The overwrite is best effort (tmpfs, copy-on-write and
    journaling file systems may keep old blocks), which is why the default directory is tmpfs.

    The directory belongs to the program's user, who could swap the file for a link to another
    file before exit; the overwrite therefore checks that it opens the very inode it created,
    with no other link, and never follows a symbolic link. Its repr shows the path only.
    """

    __slots__ = ("_directory", "_document", "_identity", "_owner", "_private", "path", "removed")

    def __init__(
        self,
        document: CredentialDocument,
        *,
        owner: tuple[int, int] | None = None,
        directory: str | os.PathLike[str] | None = None,
    ) -> None:
        self._document = document
        self._owner = owner
        self._directory = Path(directory) if directory is not None else None
        self._private: Path | None = None
        self._identity: tuple[int, int] | None = None
        self.path: Path | None = None
        #: set on exit: the file and its directory are gone
        self.removed = False

    def __repr__(self) -> str:
        return f"CredentialFile(path={str(self.path)!r}, removed={self.removed})"

    def __enter__(self) -> Path:
        base = self._directory if self._directory is not None else default_directory()
        private = Path(tempfile.mkdtemp(prefix="runas-cred-", dir=base))  # mode 0700
        self._private = private
        try:
            path = private / "credential.json"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path, flags, 0o600)
            try:
                # The mode given to open() is masked by the umask; fchmod makes it exact.
                os.fchmod(fd, 0o600)
                if self._owner is not None:
                    os.fchown(fd, *self._owner)
                info = os.fstat(fd)
                self._identity = (info.st_dev, info.st_ino)
                _write_all(fd, self._document.to_json())
            finally:
                os.close(fd)
            if self._owner is not None:
                os.chown(private, *self._owner)
            self.path = path
            return path
        except BaseException:
            self._remove()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._remove()

    def _overwrite(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return  # gone, replaced by a link or a directory: nothing of ours to overwrite
        try:
            info = os.fstat(fd)
            if (
                (info.st_dev, info.st_ino) != self._identity
                or not stat.S_ISREG(info.st_mode)
                or info.st_nlink != 1
            ):
                return
            _write_all(fd, bytes(info.st_size))
            os.fsync(fd)
        except OSError:
            return  # best effort: unlinking below is what matters
        finally:
            os.close(fd)

    def _remove(self) -> None:
        private = self._private
        if private is None:
            return
        self._overwrite(private / "credential.json")
        try:
            shutil.rmtree(private)
        except FileNotFoundError:
            pass
        except OSError:
            # Without root, the program runs as the agent's own user and may have taken the
            # permissions off its directory: give them back and try once more. As root nothing
            # is refused for lack of permission, and chmod would follow a link the program's
            # user planted, so there the failure is reported as it is.
            try:
                if os.geteuid() == 0:
                    raise
                _restore_modes(private)
                shutil.rmtree(private)
            except FileNotFoundError:
                pass
            except OSError as err:
                raise RunAsError(
                    f"the credential file directory {private} could not be removed "
                    f"({os.strerror(err.errno) if err.errno else type(err).__name__})"
                ) from None
        self.removed = True
        self._private = None


def _restore_modes(root: Path) -> None:
    # Same user only (see CredentialFile._remove): links are skipped, never followed.
    if root.is_symlink():
        return
    os.chmod(root, 0o700)
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            sub = os.path.join(dirpath, name)
            if not os.path.islink(sub):
                os.chmod(sub, 0o700)


__all__ = [
    "CREDENTIAL_FILE_ENV",
    "DOCUMENT_VERSION",
    "HANDOFF_ENV",
    "NO_CREDENTIAL",
    "CredentialDocument",
    "CredentialFile",
    "HandOff",
    "credential_document",
    "default_directory",
]
