"""Account types: required fields, secrets kept apart from public fields, per-type rules."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runas.domain.accounts import (
    SNMP_MIN_KEY_LENGTH,
    AccountType,
    display_identity,
    elevation_of,
    parse_account_type,
    public_field_names,
    secret_field_names,
    validate_account,
)
from runas.errors import AccountValidationError, InvalidInput

T = AccountType
KEY = base64.b64encode(b"-----BEGIN OPENSSH PRIVATE KEY-----\n...").decode()

#: one valid account of every type: (public fields, secrets)
VALID: dict[AccountType, tuple[dict[str, str | None], dict[str, str]]] = {
    T.WINDOWS: ({"domain": "corp.contoso.com", "user": "svc"}, {"password": "pw"}),
    T.ACTION: ({"user": "svc"}, {"password": "pw"}),
    T.BASIC: ({"user": "web"}, {"password": "pw"}),
    T.DIGEST: ({"user": "web"}, {"password": "pw"}),
    T.SIMPLE: ({"user": "sa"}, {"password": "pw"}),
    T.BINARY: ({}, {"data": base64.b64encode(b"\x00\x01cert").decode()}),
    T.COMMUNITY_STRING: ({}, {"community": "public"}),
    T.SNMPV3: (
        {"user": "snmp", "auth_protocol": "sha", "priv_protocol": "aes"},
        {"auth_key": "authpass1", "priv_key": "privpass1"},
    ),
    T.UNIX_MONITORING: ({"user": "mon"}, {"password": "pw"}),
    T.UNIX_MAINTENANCE: ({"user": "root", "elevation": "sudo"}, {"ssh_key": KEY}),
}


def refused(
    account_type: AccountType,
    public: dict[str, str | None],
    secrets: dict[str, str],
    *,
    require_secrets: bool = True,
) -> str:
    with pytest.raises(AccountValidationError) as info:
        validate_account(account_type, public, secrets, require_secrets=require_secrets)
    message = str(info.value)
    for value in secrets.values():
        if len(value) >= 4:
            assert value not in message, "a secret leaked into an error message"
    return message


def test_every_type_has_a_valid_example() -> None:
    assert set(VALID) == set(AccountType)
    for account_type, (public, secrets) in VALID.items():
        pub, sec = validate_account(account_type, public, secrets)
        assert set(pub) <= set(public_field_names(account_type))
        assert set(sec) <= set(secret_field_names(account_type))


def test_account_validation_error_is_invalid_input() -> None:
    assert issubclass(AccountValidationError, InvalidInput)


def test_unknown_type() -> None:
    with pytest.raises(AccountValidationError, match=r"unknown account type 'kerberos' \(known: "):
        parse_account_type("kerberos")
    assert parse_account_type("unix-maintenance") is T.UNIX_MAINTENANCE


# -- common rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account_type", "secret"),
    [(T.WINDOWS, "password"), (T.SIMPLE, "password"), (T.COMMUNITY_STRING, "community"),
     (T.BINARY, "data"), (T.SNMPV3, "auth_key"), (T.UNIX_MAINTENANCE, "su_password")],
)  # fmt: skip
def test_a_secret_given_as_a_public_field_is_refused(
    account_type: AccountType, secret: str
) -> None:
    public = {**VALID[account_type][0], secret: "hunter22"}
    message = refused(account_type, public, VALID[account_type][1])
    assert f"{secret!r} is a secret of a {account_type} account" in message
    assert "hunter22" not in message


def test_unknown_public_field_and_unknown_secret() -> None:
    assert "has no field 'shell'" in refused(
        T.SIMPLE, {"user": "sa", "shell": "x"}, {"password": "p"}
    )
    message = refused(T.SIMPLE, {"user": "sa"}, {"password": "p", "token": "secret-token"})
    assert "has no secret 'token' (secrets: password)" in message
    message = refused(T.BASIC, {"user": "a"}, {"password": "p", "community": "c"})
    assert "no secret 'community'" in message


@pytest.mark.parametrize("account_type", [T.WINDOWS, T.BASIC, T.SIMPLE, T.UNIX_MONITORING])
def test_required_secret(account_type: AccountType) -> None:
    public = VALID[account_type][0]
    assert "needs the secret 'password'" in refused(account_type, public, {})
    # an empty value is no value
    assert "needs the secret 'password'" in refused(account_type, public, {"password": ""})
    # updates of public fields need no secret
    validate_account(account_type, public, {}, require_secrets=False)


def test_required_public_fields_and_whitespace() -> None:
    assert "needs 'user'" in refused(T.SIMPLE, {"user": "   "}, {"password": "p"})
    pub, _ = validate_account(T.SIMPLE, {"user": "  sa  ", "description": None}, {"password": "p"})
    assert pub == {"user": "sa"}


def test_bytes_secrets_must_be_base64() -> None:
    message = refused(T.BINARY, {}, {"data": "not base64!!"})
    assert "secret 'data' must be base64" in message
    message = refused(T.UNIX_MAINTENANCE, {"user": "r", "elevation": "sudo"}, {"ssh_key": "%%%%"})
    assert "secret 'ssh_key' must be base64" in message


# -- windows and action -----------------------------------------------------------------------


def test_windows_needs_a_domain_in_fqdn_form() -> None:
    assert "needs 'domain'" in refused(T.WINDOWS, {"user": "svc"}, {"password": "p"})
    message = refused(T.WINDOWS, {"domain": "CORP", "user": "svc"}, {"password": "p"})
    assert "domain 'CORP' must be given in FQDN form" in message


@pytest.mark.parametrize(
    "domain",
    [".", "corp.", ".com", "corp..com", "corp contoso.com", "corp.contoso.com\\x",
     "corp\n.com", "-corp.com", "corp.com-", "a" * 64 + ".com"],
)  # fmt: skip
def test_windows_domain_that_only_looks_like_an_fqdn(domain: str) -> None:
    message = refused(T.WINDOWS, {"domain": domain, "user": "svc"}, {"password": "p"})
    assert "must be given in FQDN form" in message


@pytest.mark.parametrize("domain", ["contoso.com", "CORP.Contoso.com", "eu-west.corp-1.example"])
def test_windows_fqdn_domains(domain: str) -> None:
    pub, _ = validate_account(T.WINDOWS, {"domain": domain, "user": "svc"}, {"password": "p"})
    assert pub["domain"] == domain


@pytest.mark.parametrize("user", ["CORP\\svc", "svc@corp.contoso.com"])
def test_windows_user_without_its_domain(user: str) -> None:
    message = refused(T.WINDOWS, {"domain": "corp.contoso.com", "user": user}, {"password": "p"})
    assert "without its domain" in message


def test_action_domain_is_optional() -> None:
    validate_account(T.ACTION, {"user": "svc"}, {"password": "p"})
    validate_account(T.ACTION, {"domain": "corp.contoso.com", "user": "svc"}, {"password": "p"})
    assert "without its domain" in refused(T.ACTION, {"user": "CORP\\svc"}, {"password": "p"})


# -- SNMP -------------------------------------------------------------------------------------


def test_snmpv3_normalises_protocols() -> None:
    pub, _ = validate_account(T.SNMPV3, *VALID[T.SNMPV3])
    assert pub["auth_protocol"] == "SHA"
    assert pub["priv_protocol"] == "AES"
    # no authentication, no privacy: a user alone is valid
    assert validate_account(T.SNMPV3, {"user": "snmp"}, {}) == ({"user": "snmp"}, {})


def test_snmpv3_privacy_needs_authentication() -> None:
    message = refused(T.SNMPV3, {"user": "s", "priv_protocol": "AES"}, {"priv_key": "privpass1"})
    assert message == "SNMPv3 privacy needs authentication: set an auth protocol and key as well"


@pytest.mark.parametrize(
    ("public", "secrets", "expected"),
    [
        ({"auth_protocol": "SHA1000"}, {"auth_key": "authpass1"},
         "unknown SNMPv3 authentication protocol 'SHA1000'"),
        ({"auth_protocol": "SHA", "priv_protocol": "ROT13"},
         {"auth_key": "authpass1", "priv_key": "privpass1"}, "unknown SNMPv3 privacy protocol"),
        ({}, {"auth_key": "authpass1"},
         "an SNMPv3 authentication key was given without an authentication protocol"),
        ({"auth_protocol": "MD5"}, {},
         "SNMPv3 authentication protocol MD5 needs the secret 'auth_key'"),
        ({"auth_protocol": "SHA", "priv_protocol": "DES"}, {"auth_key": "authpass1"},
         "SNMPv3 privacy protocol DES needs the secret 'priv_key'"),
        ({"auth_protocol": "SHA"}, {"auth_key": "x" * (SNMP_MIN_KEY_LENGTH - 1)},
         "the SNMPv3 authentication key must be at least 8 characters"),
        ({"auth_protocol": "SHA", "priv_protocol": "AES"},
         {"auth_key": "authpass1", "priv_key": "short77"},
         "the SNMPv3 privacy key must be at least 8 characters"),
    ],
)  # fmt: skip
def test_snmpv3_rules(public: dict[str, str], secrets: dict[str, str], expected: str) -> None:
    assert expected in refused(T.SNMPV3, {"user": "s", **public}, secrets)


def test_snmpv3_key_of_exactly_the_minimum_length() -> None:
    validate_account(T.SNMPV3, {"user": "s", "auth_protocol": "SHA-256"}, {"auth_key": "x" * 8})


def test_community_string() -> None:
    assert "needs the secret 'community'" in refused(T.COMMUNITY_STRING, {}, {})


# -- UNIX -------------------------------------------------------------------------------------


def test_unix_monitoring_elevation() -> None:
    pub, _ = validate_account(T.UNIX_MONITORING, {"user": "mon"}, {"password": "p"})
    assert pub["elevation"] == "none"
    pub, _ = validate_account(
        T.UNIX_MONITORING, {"user": "mon", "elevation": "SUDO"}, {"password": "p"}
    )
    assert pub["elevation"] == "sudo"
    message = refused(T.UNIX_MONITORING, {"user": "mon", "elevation": "su"}, {"password": "p"})
    assert "unknown elevation 'su' for a unix-monitoring account" in message


MAINT = {"user": "root", "elevation": "sudo"}


@pytest.mark.parametrize(
    ("public", "secrets", "expected"),
    [
        (MAINT, {"password": "pw", "ssh_key": KEY}, "a password or an SSH key, not both"),
        (MAINT, {}, "needs a password or an SSH key"),
        ({"user": "root", "elevation": "su"}, {"password": "pw"},
         "elevation su needs the secret 'su_password'"),
        ({"user": "root", "elevation": "doas"}, {"password": "pw"},
         "unknown elevation 'doas' for a unix-maintenance account"),
        ({"user": "root"}, {"password": "pw"}, "needs 'elevation'"),
        (MAINT, {"password": "pw", "su_password": "rootpw"},
         "'su_password' is only used with elevation su"),
        (MAINT, {"password": "pw", "passphrase": "keypass"},
         "a passphrase was given without an SSH key"),
    ],
)  # fmt: skip
def test_unix_maintenance_rules(
    public: dict[str, str], secrets: dict[str, str], expected: str
) -> None:
    assert expected in refused(T.UNIX_MAINTENANCE, public, secrets)


def test_unix_maintenance_valid_forms() -> None:
    for public, secrets in (
        ({"user": "root", "elevation": "privileged"}, {"password": "pw"}),
        ({"user": "root", "elevation": "SU"}, {"password": "pw", "su_password": "rootpw"}),
        ({"user": "root", "elevation": "sudo"}, {"ssh_key": KEY, "passphrase": "kp"}),
    ):
        pub, sec = validate_account(T.UNIX_MAINTENANCE, public, secrets)
        assert pub["elevation"] in ("privileged", "su", "sudo")
        assert sec == secrets
    # an update that changes only public fields does not need the secrets again
    validate_account(
        T.UNIX_MAINTENANCE, {"user": "root", "elevation": "su"}, {}, require_secrets=False
    )


# -- identity ---------------------------------------------------------------------------------


def test_display_identity_and_elevation() -> None:
    assert display_identity(T.WINDOWS, {"domain": "corp.contoso.com", "user": "svc"}) == (
        "corp.contoso.com\\svc"
    )
    assert display_identity(T.SIMPLE, {"user": "sa"}) == "sa"
    assert display_identity(T.COMMUNITY_STRING, {}) == "(community string)"
    assert display_identity(T.BINARY, {}) == "(binary data)"
    assert display_identity(T.SNMPV3, {}) == "-"
    assert elevation_of(T.UNIX_MAINTENANCE, {"elevation": "su"}) == "su"
    assert elevation_of(T.WINDOWS, {"elevation": "su"}) is None


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=6))
def test_secret_values_never_appear_in_validation_errors(text: str) -> None:
    # a too-short SNMP key, a secret in a public field, an unexpected secret: all refused
    # without echoing the value (marked with a character no message contains)
    secret = f"\N{SNOWMAN}{text}"
    cases = [
        (T.SNMPV3, {"user": "s"}, {"auth_key": secret}),
        (T.SIMPLE, {"user": "u", "password": secret}, {}),
        (T.BASIC, {"user": "u"}, {"password": "p", "community": secret}),
    ]
    for account_type, public, secrets in cases:
        with pytest.raises(AccountValidationError) as info:
            validate_account(account_type, public, secrets)
        assert "\N{SNOWMAN}" not in str(info.value)
