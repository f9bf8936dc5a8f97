"""Run As account types (domain.md §3): their fields, which of them are secret, and validation.

Pure: no I/O. An account is split into *public* fields (stored in clear, shown by ``show``) and
*secret* fields (encrypted at rest, write-only, never returned). Validation returns normalised
copies and raises :class:`~runas.errors.AccountValidationError` with a message that names the
problem and never the secret value.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from runas.errors import AccountValidationError


class AccountType(StrEnum):
    WINDOWS = "windows"
    ACTION = "action"
    BASIC = "basic"
    DIGEST = "digest"
    SIMPLE = "simple"
    BINARY = "binary"
    COMMUNITY_STRING = "community-string"
    SNMPV3 = "snmpv3"
    UNIX_MONITORING = "unix-monitoring"
    UNIX_MAINTENANCE = "unix-maintenance"


class DistributionMode(StrEnum):
    MORE_SECURE = "more-secure"
    LESS_SECURE = "less-secure"


SNMP_AUTH_PROTOCOLS = ("MD5", "SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512")
SNMP_PRIV_PROTOCOLS = ("DES", "3DES", "AES", "AES-192", "AES-256")
#: RFC 3414 / net-snmp: pass phrases shorter than 8 characters are refused by agents.
SNMP_MIN_KEY_LENGTH = 8

UNIX_MONITORING_ELEVATIONS = ("none", "sudo")
UNIX_MAINTENANCE_ELEVATIONS = ("privileged", "sudo", "su")

SecretKind = Literal["text", "bytes"]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    secret: bool
    required: bool
    help: str
    #: secrets only: "bytes" fields come from files (certificates, key files) and are kept as base64
    kind: SecretKind = "text"


def _f(name: str, help: str, *, secret: bool = False, required: bool = True) -> FieldSpec:
    return FieldSpec(name=name, secret=secret, required=required, help=help)


_USER = _f("user", "user name")
_PASSWORD = _f("password", "password", secret=True)

FIELDS: dict[AccountType, tuple[FieldSpec, ...]] = {
    AccountType.WINDOWS: (
        _f("domain", "domain, in FQDN form (corp.contoso.com)"),
        _USER,
        _PASSWORD,
    ),
    AccountType.ACTION: (_f("domain", "domain (optional)", required=False), _USER, _PASSWORD),
    AccountType.BASIC: (_USER, _PASSWORD),
    AccountType.DIGEST: (_USER, _PASSWORD),
    AccountType.SIMPLE: (_USER, _PASSWORD),
    AccountType.BINARY: (
        FieldSpec("data", secret=True, required=True, help="file content", kind="bytes"),
    ),
    AccountType.COMMUNITY_STRING: (_f("community", "SNMP community string", secret=True),),
    AccountType.SNMPV3: (
        _USER,
        _f("context", "SNMP context name", required=False),
        _f("auth_protocol", "authentication protocol", required=False),
        _f("auth_key", "authentication pass phrase", secret=True, required=False),
        _f("priv_protocol", "privacy protocol", required=False),
        _f("priv_key", "privacy pass phrase", secret=True, required=False),
    ),
    AccountType.UNIX_MONITORING: (
        _USER,
        _PASSWORD,
        _f("elevation", "none or sudo (passwordless)", required=False),
    ),
    AccountType.UNIX_MAINTENANCE: (
        _USER,
        _f("password", "password (or an SSH key)", secret=True, required=False),
        FieldSpec(
            "ssh_key",
            secret=True,
            required=False,
            help="SSH private key (PEM/OpenSSH)",
            kind="bytes",
        ),
        _f("passphrase", "passphrase of the SSH key", secret=True, required=False),
        _f("elevation", "privileged, sudo or su"),
        _f("su_password", "root password for su", secret=True, required=False),
    ),
}


def field_specs(account_type: AccountType) -> tuple[FieldSpec, ...]:
    return FIELDS[account_type]


def public_field_names(account_type: AccountType) -> tuple[str, ...]:
    return tuple(f.name for f in FIELDS[account_type] if not f.secret)


def secret_field_names(account_type: AccountType) -> tuple[str, ...]:
    return tuple(f.name for f in FIELDS[account_type] if f.secret)


def parse_account_type(value: str) -> AccountType:
    try:
        return AccountType(value)
    except ValueError:
        known = ", ".join(t.value for t in AccountType)
        raise AccountValidationError(f"unknown account type {value!r} (known: {known})") from None


def _clean_public(account_type: AccountType, public: Mapping[str, str | None]) -> dict[str, str]:
    names = public_field_names(account_type)
    out: dict[str, str] = {}
    for key, value in public.items():
        if value is None:
            continue
        if key not in names:
            if key in secret_field_names(account_type):
                raise AccountValidationError(
                    f"{key!r} is a secret of a {account_type} account: give it by prompt, "
                    "stdin or file, never as a plain field"
                )
            raise AccountValidationError(
                f"a {account_type} account has no field {key!r} "
                f"(fields: {', '.join(f.name for f in FIELDS[account_type])})"
            )
        text = value.strip()
        if text:
            out[key] = text
    return out


def _check_secret_names(account_type: AccountType, secrets: Mapping[str, str]) -> None:
    names = secret_field_names(account_type)
    for key in secrets:
        if key not in names:
            raise AccountValidationError(
                f"a {account_type} account has no secret {key!r}"
                + (f" (secrets: {', '.join(names)})" if names else " (it has no secrets)")
            )


def _check_bytes_fields(account_type: AccountType, secrets: Mapping[str, str]) -> None:
    for spec in FIELDS[account_type]:
        if spec.kind == "bytes" and spec.name in secrets:
            try:
                base64.b64decode(secrets[spec.name], validate=True)
            except (binascii.Error, ValueError):
                raise AccountValidationError(
                    f"secret {spec.name!r} must be base64 (the CLI encodes files for you)"
                ) from None


def validate_account(
    account_type: AccountType,
    public: Mapping[str, str | None],
    secrets: Mapping[str, str],
    *,
    require_secrets: bool = True,
) -> tuple[dict[str, str], dict[str, str]]:
    """Check the fields of an account of ``account_type`` and return normalised copies.

    ``require_secrets=False`` is for updates that change only public fields: the secret
    rules that need values are then checked against the public fields alone.
    """
    pub = _clean_public(account_type, public)
    _check_secret_names(account_type, secrets)
    sec = {k: v for k, v in secrets.items() if v != ""}
    _check_bytes_fields(account_type, sec)

    for spec in FIELDS[account_type]:
        if not spec.required:
            continue
        if spec.secret:
            if require_secrets and spec.name not in sec:
                raise AccountValidationError(
                    f"a {account_type} account needs the secret {spec.name!r} ({spec.help}); "
                    "give it by prompt, stdin or file"
                )
        elif spec.name not in pub:
            raise AccountValidationError(
                f"a {account_type} account needs {spec.name!r} ({spec.help})"
            )

    _TYPE_RULES[account_type](pub, sec, require_secrets)
    return pub, sec


#: one DNS label: letters, digits and inner hyphens (RFC 1123), at most 63 characters
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _is_fqdn(domain: str) -> bool:
    # "." alone, "corp.", "corp..com" or "corp contoso.com" contain a dot but name no domain.
    labels = domain.split(".")
    return len(labels) >= 2 and all(_DNS_LABEL.fullmatch(label) for label in labels)


def _rules_windows(pub: dict[str, str], sec: dict[str, str], full: bool) -> None:
    if "\\" in pub["user"] or "@" in pub["user"]:
        raise AccountValidationError(
            "give the user name without its domain; the domain goes in 'domain'"
        )
    if not _is_fqdn(pub["domain"]):
        raise AccountValidationError(
            f"domain {pub['domain']!r} must be given in FQDN form (e.g. corp.contoso.com)"
        )


def _rules_action(pub: dict[str, str], sec: dict[str, str], full: bool) -> None:
    if "\\" in pub["user"]:
        raise AccountValidationError(
            "give the user name without its domain; the domain goes in 'domain'"
        )


def _rules_none(pub: dict[str, str], sec: dict[str, str], full: bool) -> None:
    return None


def _rules_snmpv3(pub: dict[str, str], sec: dict[str, str], full: bool) -> None:
    auth = pub.get("auth_protocol")
    priv = pub.get("priv_protocol")
    if auth is not None:
        auth = auth.upper()
        if auth not in SNMP_AUTH_PROTOCOLS:
            raise AccountValidationError(
                f"unknown SNMPv3 authentication protocol {pub['auth_protocol']!r} "
                f"(known: {', '.join(SNMP_AUTH_PROTOCOLS)})"
            )
        pub["auth_protocol"] = auth
    if priv is not None:
        priv = priv.upper()
        if priv not in SNMP_PRIV_PROTOCOLS:
            raise AccountValidationError(
                f"unknown SNMPv3 privacy protocol {pub['priv_protocol']!r} "
                f"(known: {', '.join(SNMP_PRIV_PROTOCOLS)})"
            )
        pub["priv_protocol"] = priv
    if priv is not None and auth is None:
        raise AccountValidationError(
            "SNMPv3 privacy needs authentication: set an auth protocol and key as well"
        )
    for proto_field, key_field, label in (
        ("auth_protocol", "auth_key", "authentication"),
        ("priv_protocol", "priv_key", "privacy"),
    ):
        if key_field in sec and proto_field not in pub:
            raise AccountValidationError(
                f"an SNMPv3 {label} key was given without an {label} protocol"
            )
        if full and proto_field in pub and key_field not in sec:
            raise AccountValidationError(
                f"SNMPv3 {label} protocol {pub[proto_field]} needs the secret {key_field!r}"
            )
        if key_field in sec and len(sec[key_field]) < SNMP_MIN_KEY_LENGTH:
            raise AccountValidationError(
                f"the SNMPv3 {label} key must be at least {SNMP_MIN_KEY_LENGTH} characters"
            )


def _rules_unix_monitoring(pub: dict[str, str], sec: dict[str, str], full: bool) -> None:
    elevation = pub.setdefault("elevation", "none").lower()
    if elevation not in UNIX_MONITORING_ELEVATIONS:
        raise AccountValidationError(
            f"unknown elevation {pub['elevation']!r} for a unix-monitoring account "
            f"(known: {', '.join(UNIX_MONITORING_ELEVATIONS)}; sudo must be passwordless)"
        )
    pub["elevation"] = elevation


def _rules_unix_maintenance(pub: dict[str, str], sec: dict[str, str], full: bool) -> None:
    elevation = pub["elevation"].lower()
    if elevation not in UNIX_MAINTENANCE_ELEVATIONS:
        raise AccountValidationError(
            f"unknown elevation {pub['elevation']!r} for a unix-maintenance account "
            f"(known: {', '.join(UNIX_MAINTENANCE_ELEVATIONS)})"
        )
    pub["elevation"] = elevation
    if "password" in sec and "ssh_key" in sec:
        raise AccountValidationError(
            "a unix-maintenance account takes a password or an SSH key, not both"
        )
    if full and "password" not in sec and "ssh_key" not in sec:
        raise AccountValidationError(
            "a unix-maintenance account needs a password or an SSH key (secret 'password' or "
            "'ssh_key')"
        )
    if "passphrase" in sec and "ssh_key" not in sec and full:
        raise AccountValidationError("a passphrase was given without an SSH key")
    if elevation == "su" and full and "su_password" not in sec:
        raise AccountValidationError("elevation su needs the secret 'su_password'")
    if elevation != "su" and "su_password" in sec:
        raise AccountValidationError("'su_password' is only used with elevation su")


_TYPE_RULES = {
    AccountType.WINDOWS: _rules_windows,
    AccountType.ACTION: _rules_action,
    AccountType.BASIC: _rules_none,
    AccountType.DIGEST: _rules_none,
    AccountType.SIMPLE: _rules_none,
    AccountType.BINARY: _rules_none,
    AccountType.COMMUNITY_STRING: _rules_none,
    AccountType.SNMPV3: _rules_snmpv3,
    AccountType.UNIX_MONITORING: _rules_unix_monitoring,
    AccountType.UNIX_MAINTENANCE: _rules_unix_maintenance,
}


def display_identity(account_type: AccountType, public: Mapping[str, str]) -> str:
    """The identity an account presents, for people: ``CORP\\user``, ``user``, ``(community)``."""
    user = public.get("user")
    domain = public.get("domain")
    if user and domain:
        return f"{domain}\\{user}"
    if user:
        return user
    if account_type is AccountType.COMMUNITY_STRING:
        return "(community string)"
    if account_type is AccountType.BINARY:
        return "(binary data)"
    return "-"


def elevation_of(account_type: AccountType, public: Mapping[str, str]) -> str | None:
    if account_type in (AccountType.UNIX_MONITORING, AccountType.UNIX_MAINTENANCE):
        return public.get("elevation")
    return None
