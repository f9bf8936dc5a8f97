"""The credential hand-off: the typed document, and the 0600 file that exists only for a run."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from runas.agent.handoff import (
    NO_CREDENTIAL,
    CredentialDocument,
    CredentialFile,
    HandOff,
    credential_document,
    default_directory,
)
from runas.domain.accounts import AccountType
from runas.errors import AccountValidationError, InvalidInput, RunAsError

CANARY = "canary-Secret-7f3a!"


def windows_document() -> CredentialDocument:
    return credential_document(
        AccountType.WINDOWS,
        {"domain": "corp.contoso.com", "user": "svc-sql"},
        {"password": CANARY},
        account_name="SQL monitoring",
        account_id=7,
        secret_version=3,
    )


def test_document_is_typed_json() -> None:
    doc = windows_document()
    assert doc.to_dict() == {
        "version": 1,
        "type": "windows",
        "account": {
            "id": 7,
            "name": "SQL monitoring",
            "secret_version": 3,
            "identity": "corp.contoso.com\\svc-sql",
        },
        "fields": {"domain": "corp.contoso.com", "user": "svc-sql", "password": CANARY},
        "encoding": {},
    }
    assert json.loads(doc.to_json()) == doc.to_dict()
    assert doc.to_json().endswith(b"\n")
    assert doc.has_credential
    assert doc.secret_values() == (CANARY,)


def test_document_without_credential() -> None:
    doc = credential_document(None, {}, {})
    assert doc is NO_CREDENTIAL
    assert doc.to_dict() == {"version": 1, "type": "none"}
    assert not doc.has_credential
    assert doc.secret_values() == ()


def test_bytes_secrets_stay_base64_and_are_marked() -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END ...-----\n"
    encoded = base64.b64encode(key.encode()).decode()
    doc = credential_document(
        "unix-maintenance",
        {"user": "deploy", "elevation": "sudo"},
        {"ssh_key": encoded, "passphrase": "hunter22"},
        account_name="deploy",
        account_id=9,
        secret_version=1,
    )
    payload = doc.to_dict()
    assert payload["type"] == "unix-maintenance"
    assert payload["fields"]["ssh_key"] == encoded
    assert payload["encoding"] == {"ssh_key": "base64"}
    # The scrubber also needs the decoded key: that is what a program would print.
    assert set(doc.secret_values()) == {encoded, key, "hunter22"}


def test_a_secret_given_as_a_public_field_is_refused_without_its_value() -> None:
    with pytest.raises(InvalidInput) as caught:
        credential_document(
            AccountType.SIMPLE,
            {"user": "u", "password": CANARY},
            {},
            account_name="a",
            account_id=1,
            secret_version=1,
        )
    assert "'password' is a secret of a simple account" in str(caught.value)
    assert CANARY not in str(caught.value)


def test_unknown_fields_and_types_are_refused() -> None:
    common = {"account_name": "a", "account_id": 1, "secret_version": 1}
    with pytest.raises(InvalidInput, match="'colour' is not a field"):
        credential_document("simple", {"colour": "red"}, {}, **common)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="'pin' is not a secret"):
        credential_document("simple", {}, {"pin": CANARY}, **common)  # type: ignore[arg-type]
    with pytest.raises(AccountValidationError, match="unknown account type"):
        credential_document("kerberos", {}, {}, **common)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="name, id and secret version"):
        credential_document("simple", {"user": "u"}, {"password": CANARY})
    with pytest.raises(InvalidInput, match="takes no fields"):
        credential_document(None, {}, {"password": CANARY})


def test_repr_and_str_show_no_secret() -> None:
    doc = windows_document()
    for text in (repr(doc), str(doc), f"{doc}", repr([doc])):
        assert CANARY not in text
        assert "**********" in text
    assert repr(NO_CREDENTIAL) == "CredentialDocument(type='none')"


def test_handoff_modes() -> None:
    assert [mode.value for mode in HandOff] == ["stdin", "file"]


# -- the credential file ----------------------------------------------------------------------


def test_file_is_0600_in_a_private_0700_directory_and_gone_after(tmp_path: Path) -> None:
    handle = CredentialFile(windows_document(), directory=tmp_path)
    with handle as path:
        assert path.parent.parent == tmp_path
        file_mode = stat.S_IMODE(path.stat().st_mode)
        dir_mode = stat.S_IMODE(path.parent.stat().st_mode)
        assert (file_mode, dir_mode) == (0o600, 0o700)
        assert path.stat().st_uid == os.geteuid()
        assert json.loads(path.read_bytes())["fields"]["password"] == CANARY
        assert CANARY not in repr(handle)
    assert handle.removed
    assert not path.exists()
    assert not path.parent.exists()
    assert list(tmp_path.iterdir()) == []


def test_file_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        with CredentialFile(windows_document(), directory=tmp_path) as path:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        os.umask(previous)


def test_file_is_removed_when_the_run_raises(tmp_path: Path) -> None:
    with (
        pytest.raises(TimeoutError),
        CredentialFile(windows_document(), directory=tmp_path) as path,
    ):
        raise TimeoutError
    assert not path.parent.exists()


def test_file_is_overwritten_before_it_is_unlinked(tmp_path: Path) -> None:
    # A second link taken from outside the private directory (as a backup tool might) sees the
    # inode's content after removal: it must be zeros, not the secret.
    with CredentialFile(windows_document(), directory=tmp_path) as path:
        size = path.stat().st_size
        fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, size, 0) == bytes(size)
    finally:
        os.close(fd)


def test_everything_the_program_left_behind_is_removed(tmp_path: Path) -> None:
    with CredentialFile(windows_document(), directory=tmp_path) as path:
        (path.parent / "scratch").mkdir()
        (path.parent / "scratch" / "copy").write_text(CANARY)
        (path.parent / "scratch").chmod(0)  # a program that hides its litter
    assert list(tmp_path.iterdir()) == []


def test_a_file_swapped_for_a_link_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    work = tmp_path / "work"
    work.mkdir()
    with CredentialFile(windows_document(), directory=work) as path:
        path.unlink()
        path.symlink_to(victim)
    assert victim.read_text() == "precious"
    assert list(work.iterdir()) == []


def test_a_hard_link_to_another_file_is_not_overwritten(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    work = tmp_path / "work"
    work.mkdir()
    with CredentialFile(windows_document(), directory=work) as path:
        path.unlink()
        os.link(victim, path)
    assert victim.read_text() == "precious"


def test_unremovable_directory_is_reported(tmp_path: Path) -> None:
    handle = CredentialFile(windows_document(), directory=tmp_path)

    def swap_for_link(path: Path) -> None:
        # Replace the private directory by a symlink: rmtree refuses to follow it.
        moved = tmp_path / "moved"
        path.parent.rename(moved)
        path.parent.symlink_to(moved)

    with pytest.raises(RunAsError, match="could not be removed") as caught, handle as path:
        swap_for_link(path)
    assert CANARY not in str(caught.value)
    assert not handle.removed


def test_default_directory_is_memory_backed_when_possible() -> None:
    directory = default_directory()
    assert directory.is_dir()
    if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
        assert directory == Path("/dev/shm")
