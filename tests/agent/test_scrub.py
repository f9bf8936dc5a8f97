"""Output scrubbing: every encoding a secret is searched in, the counting, the short-secret rule,
and scrubbing of JSON-like values (keys included)."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest

from runas.agent.scrub import (
    LONG_PATTERN,
    MARKER,
    MIN_ENCODED_LENGTH,
    MIN_SECRET_LENGTH,
    Scrubber,
    encoded_forms,
)

SECRET = 'Pa$$w0rd/ü+"quoted"\\x'
SCRUBBER = Scrubber([SECRET])


def assert_scrubbed(text: str, hits: int = 1) -> str:
    out, found = SCRUBBER.scrub(f"before {text} after")
    assert found == hits
    assert out == "before " + " ".join([MARKER] * hits) + " after"
    return out


def test_clear_value() -> None:
    assert_scrubbed(SECRET)


def test_every_occurrence_is_replaced_and_counted() -> None:
    out, hits = SCRUBBER.scrub(f"{SECRET}{SECRET} and {SECRET}")
    assert (out, hits) == (f"{MARKER}{MARKER} and {MARKER}", 3)


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda s: json.dumps(s)[1:-1], id="json-ascii"),
        pytest.param(lambda s: json.dumps(s, ensure_ascii=False)[1:-1], id="json-unicode"),
        pytest.param(lambda s: quote(s, safe=""), id="quote-nothing-safe"),
        pytest.param(quote, id="quote"),
        pytest.param(quote_plus, id="quote-plus"),
        pytest.param(
            lambda s: re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(s, safe="")),
            id="quote-lower-case-escapes",
        ),
        pytest.param(lambda s: s.encode().hex(), id="hex"),
        pytest.param(lambda s: s.encode().hex().upper(), id="HEX"),
        pytest.param(lambda s: base64.b64encode(s.encode()).decode(), id="base64"),
        pytest.param(
            lambda s: base64.b64encode(s.encode()).decode().rstrip("="), id="base64-unpadded"
        ),
        pytest.param(lambda s: base64.urlsafe_b64encode(s.encode()).decode(), id="base64url"),
        pytest.param(
            lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
            id="base64url-unpadded",
        ),
    ],
)
def test_encoded_forms(encode: Callable[[str], str]) -> None:
    encoded = encode(SECRET)
    assert encoded != SECRET
    assert_scrubbed(encoded)


@pytest.mark.parametrize("prefix_length", [0, 1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("urlsafe", [False, True], ids=["standard", "urlsafe"])
def test_base64_inside_a_longer_stream_at_every_alignment(
    prefix_length: int, urlsafe: bool
) -> None:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    prefix, suffix = os.urandom(prefix_length), os.urandom(5)
    stream = encode(prefix + SECRET.encode() + suffix).decode()
    out, hits = SCRUBBER.scrub(stream)
    assert hits == 1
    # Only the characters that mix the secret's bits with its neighbours' may remain.
    remaining = len(out) - len(MARKER)
    assert remaining <= len(encode(prefix).decode().rstrip("=")) + len(encode(suffix)) + 2


def test_a_json_document_with_the_secret_is_scrubbed_and_still_parses() -> None:
    document = json.dumps({"password": SECRET, "note": "ok"})
    out, hits = SCRUBBER.scrub(document)
    assert hits == 1
    assert json.loads(out) == {"password": MARKER, "note": "ok"}


def test_lines_of_a_multi_line_secret_are_scrubbed_one_by_one() -> None:
    lines = [base64.b64encode(os.urandom(48)).decode() for _ in range(3)]
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(lines)
    key += "\n-----END OPENSSH PRIVATE KEY-----\n"
    scrubber = Scrubber([key])
    assert scrubber.scrub(key) == (MARKER, 1)
    out, hits = scrubber.scrub(f"line: {lines[1]}\n")
    assert (out, hits) == (f"line: {MARKER}\n", 1)
    # The armour lines are the same in every key: not secret.
    armour = "-----END OPENSSH PRIVATE KEY-----"
    assert scrubber.scrub(armour) == (armour, 0)


def test_longest_form_wins_where_two_start_together() -> None:
    scrubber = Scrubber(["secret-one", "secret-one-longer"])
    assert scrubber.scrub("x secret-one-longer y secret-one z") == (
        f"x {MARKER} y {MARKER} z",
        2,
    )


def test_many_secrets_each_found() -> None:
    secrets = [f"s{i:03d}-{os.urandom(6).hex()}" for i in range(200)]
    scrubber = Scrubber(secrets)
    text = " | ".join(secrets[::7])
    out, hits = scrubber.scrub(text)
    assert hits == len(secrets[::7])
    assert all(s not in out for s in secrets)


def test_text_without_secrets_is_untouched() -> None:
    text = "SELECT 1; -- all good, 42 rows, aGVsbG8gd29ybGQ="
    assert SCRUBBER.scrub(text) == (text, 0)
    assert Scrubber([]).scrub(text) == (text, 0)


# -- short secrets ----------------------------------------------------------------------------


def test_secrets_below_the_minimum_are_not_scrubbed_but_counted() -> None:
    assert MIN_SECRET_LENGTH == 3
    scrubber = Scrubber(["ab", "x", ""])
    assert scrubber.unscrubbable == 3
    assert scrubber.scrub("abc x") == ("abc x", 0)


def test_short_secret_is_scrubbed_by_value_only() -> None:
    scrubber = Scrubber(["abc"])
    assert scrubber.unscrubbable == 0
    assert scrubber.scrub("xabcx") == (f"x{MARKER}x", 1)
    # Its base64 ("YWJj") and hex ("616263") are too short to search for without hitting
    # random identifiers.
    assert scrubber.scrub("YWJj 616263") == ("YWJj 616263", 0)
    assert all(len(form) >= MIN_SECRET_LENGTH for form in encoded_forms("abc"))


def test_encoded_forms_shorter_than_the_minimum_are_left_out() -> None:
    forms = encoded_forms("abcd")
    assert "61626364" in forms  # hex: 8 characters
    assert "YWJjZA==" in forms  # whole base64
    assert all(f == "abcd" or len(f) >= MIN_ENCODED_LENGTH for f in forms)


# -- JSON-like values -------------------------------------------------------------------------


def test_scrub_obj_walks_values_and_keys() -> None:
    value = {
        "message": f"logon as svc with {SECRET}",
        SECRET: "key was a secret",
        "events": [{"message": base64.b64encode(SECRET.encode()).decode()}, ("t", SECRET)],
        "count": 3,
        "ok": True,
        "none": None,
        "ratio": 0.5,
    }
    out, hits = SCRUBBER.scrub_obj(value)
    assert hits == 4
    assert out == {
        "message": f"logon as svc with {MARKER}",
        MARKER: "key was a secret",
        "events": [{"message": MARKER}, ["t", MARKER]],
        "count": 3,
        "ok": True,
        "none": None,
        "ratio": 0.5,
    }
    assert SECRET not in json.dumps(out)


def test_scrub_obj_keeps_keys_that_scrub_alike_apart() -> None:
    scrubber = Scrubber(["secret-a", "secret-b"])
    out, hits = scrubber.scrub_obj({"secret-a": 1, "secret-b": 2, MARKER + "#2": 3})
    assert hits == 2
    assert sorted(out.values()) == [1, 2, 3]
    assert out[MARKER] == 1
    assert out[MARKER + "#2"] == 2


def test_scrub_obj_replaces_a_number_that_spells_a_secret() -> None:
    scrubber = Scrubber(["918273"])
    out, hits = scrubber.scrub_obj({"pin": 918273, "other": 12, "flag": False})
    assert hits == 1
    assert out == {"pin": MARKER, "other": 12, "flag": False}


def test_scrub_obj_refuses_what_is_not_json() -> None:
    with pytest.raises(TypeError, match="cannot scrub a bytes"):
        SCRUBBER.scrub_obj({"raw": b"bytes"})


def test_repr_shows_counts_not_secrets() -> None:
    text = repr(Scrubber([SECRET, "xy"]))
    assert text.startswith("Scrubber(patterns=")
    assert "unscrubbable=1" in text
    assert SECRET not in text
    assert "Pa$$" not in text


def test_long_secrets_are_found_in_every_form() -> None:
    # A key file or certificate: its forms are longer than LONG_PATTERN and are searched for
    # outside the regular expression.
    blob = base64.b64encode(os.urandom(3000)).decode()
    scrubber = Scrubber([blob])
    assert all(len(form) > LONG_PATTERN for form in encoded_forms(blob))
    for text in (
        blob,
        json.dumps(blob)[1:-1],
        blob.encode().hex(),
        base64.b64encode(blob.encode()).decode(),
        base64.b64encode(b"xy" + blob.encode() + b"z").decode(),
    ):
        out, hits = scrubber.scrub(f"<{text}>")
        assert hits == 1
        assert len(out) < 20
    assert scrubber.max_pattern_length >= len(blob.encode().hex())
