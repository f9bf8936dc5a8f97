"""How secrets enter the CLI: a hidden prompt, standard input, or a file — never a flag value
(a flag is visible in the process list and the shell history)."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import typer
from pydantic import SecretStr

from runas.domain.accounts import AccountType, FieldSpec, field_specs
from runas.errors import InvalidInput

#: the secret ``--stdin`` fills, per account type
PRIMARY_SECRET: dict[AccountType, str] = {
    AccountType.WINDOWS: "password",
    AccountType.ACTION: "password",
    AccountType.BASIC: "password",
    AccountType.DIGEST: "password",
    AccountType.SIMPLE: "password",
    AccountType.BINARY: "data",
    AccountType.COMMUNITY_STRING: "community",
    AccountType.SNMPV3: "auth_key",
    AccountType.UNIX_MONITORING: "password",
    AccountType.UNIX_MAINTENANCE: "password",
}


def _spec(account_type: AccountType, name: str) -> FieldSpec:
    for spec in field_specs(account_type):
        if spec.name == name and spec.secret:
            return spec
    names = ", ".join(s.name for s in field_specs(account_type) if s.secret)
    raise InvalidInput(f"a {account_type} account has no secret {name!r} (secrets: {names})")


def _encode(spec: FieldSpec, raw: bytes, origin: str) -> str:
    if spec.kind == "bytes":
        if not raw:
            raise InvalidInput(f"{origin} is empty")
        return base64.b64encode(raw).decode("ascii")
    return without_final_newline(decoded(raw, origin))


def decoded(raw: bytes, origin: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{origin} is not UTF-8 text") from None


def without_final_newline(text: str) -> str:
    # One trailing newline is what `echo` and editors add; it is never part of a password.
    return text[:-1] if text.endswith("\n") else text


def stdin_text() -> str:
    """Standard input as one secret: UTF-8, without the trailing newline."""
    return without_final_newline(decoded(sys.stdin.buffer.read(), "standard input"))


def read_secrets(
    account_type: AccountType,
    *,
    stdin: bool,
    stdin_json: bool,
    files: list[str],
    needed: list[str],
    interactive: bool,
) -> dict[str, SecretStr]:
    """Collect secrets from the allowed channels; prompt for ``needed`` ones still missing."""
    out: dict[str, str] = {}
    if stdin and stdin_json:
        raise InvalidInput("use --stdin or --stdin-json, not both")
    if stdin:
        spec = _spec(account_type, PRIMARY_SECRET[account_type])
        out[spec.name] = _encode(spec, sys.stdin.buffer.read(), "standard input")
    elif stdin_json:
        try:
            doc = json.loads(sys.stdin.buffer.read() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InvalidInput("standard input is not a JSON object of secrets") from None
        if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
            raise InvalidInput('standard input must be a JSON object {"secret": "value", …}')
        for k, v in doc.items():
            spec = _spec(account_type, k)
            out[k] = base64.b64encode(v.encode()).decode() if spec.kind == "bytes" else v
    for item in files:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InvalidInput("--secret-file takes SECRET=PATH, e.g. ssh_key=~/.ssh/id_ed25519")
        spec = _spec(account_type, name)
        file_path = Path(path).expanduser()
        try:
            raw = file_path.read_bytes()
        except OSError as err:
            raise InvalidInput(f"cannot read {file_path}: {err.strerror}") from None
        if name in out:
            raise InvalidInput(f"secret {name!r} given twice")
        out[name] = _encode(spec, raw, str(file_path))
    for name in needed:
        if name in out or (name == "password" and "ssh_key" in out):
            continue
        spec = _spec(account_type, name)
        if spec.kind == "bytes" or not interactive:
            continue  # validation names what is missing and how to give it
        label = spec.help[:1].upper() + spec.help[1:]
        if spec.help.lower() != name.replace("_", " "):
            label += f" ({name})"
        out[name] = typer.prompt(label, hide_input=True, confirmation_prompt=True)
    return {k: SecretStr(v) for k, v in out.items()}


def needed_secrets(account_type: AccountType, public: dict[str, str | None]) -> list[str]:
    """The secrets an account of this type needs, given its public fields."""
    names = [s.name for s in field_specs(account_type) if s.secret and s.required]
    if account_type is AccountType.SNMPV3:
        if public.get("auth_protocol"):
            names.append("auth_key")
        if public.get("priv_protocol"):
            names.append("priv_key")
    if account_type is AccountType.UNIX_MAINTENANCE:
        names.append("password")
        if (public.get("elevation") or "").lower() == "su":
            names.append("su_password")
    return names
