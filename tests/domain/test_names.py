"""Readable object full names: escaping, parsing, round trips."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from runas.domain.names import (
    escape_segment,
    full_name,
    join_segments,
    parse_full_name,
    split_segments,
)
from runas.errors import InvalidInput


def test_plain_names() -> None:
    name = full_name("Contoso.SQL.Database", ["abc.contoso.com", "X", "master"])
    assert name == "Contoso.SQL.Database:abc.contoso.com;X;master"
    assert parse_full_name(name) == ("Contoso.SQL.Database", ["abc.contoso.com", "X", "master"])


def test_separators_inside_values_are_escaped() -> None:
    assert escape_segment("a;b") == "a\\;b"
    assert escape_segment("a\\b") == "a\\\\b"
    assert escape_segment("c:\\x;") == "c:\\\\x\\;"
    name = full_name("T.Share", ["host", "D:\\data;old"])
    assert name == "T.Share:host;D:\\\\data\\;old"
    assert parse_full_name(name) == ("T.Share", ["host", "D:\\data;old"])


def test_a_colon_in_a_value_does_not_split_the_class() -> None:
    assert parse_full_name("T.Url:host;http://x:80/") == ("T.Url", ["host", "http://x:80/"])


def test_empty_segments_are_kept() -> None:
    assert split_segments("a;;b") == ["a", "", "b"]
    assert split_segments("a;") == ["a", ""]


@pytest.mark.parametrize("bad", ["", "NoColon", ":host", "T.Class:", "T.X:a\\"])
def test_malformed_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        parse_full_name(bad)


def test_lone_backslash_message() -> None:
    with pytest.raises(InvalidInput, match="ends with a lone backslash"):
        split_segments("abc\\")


SEGMENT = st.text(alphabet=st.sampled_from("ab;\\:. é"), max_size=6) | st.text(max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.lists(SEGMENT, min_size=1, max_size=5))
def test_segments_round_trip(segments: list[str]) -> None:
    assert split_segments(join_segments(segments)) == segments


@settings(max_examples=200, deadline=None)
@given(
    st.from_regex(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+){0,2}", fullmatch=True),
    st.lists(SEGMENT, min_size=1, max_size=5),
)
def test_full_name_round_trip(class_id: str, segments: list[str]) -> None:
    assume(join_segments(segments) != "")
    assert parse_full_name(full_name(class_id, segments)) == (class_id, segments)


@settings(max_examples=100, deadline=None)
@given(st.lists(SEGMENT, min_size=1, max_size=4), st.lists(SEGMENT, min_size=1, max_size=4))
def test_different_segments_give_different_names(a: list[str], b: list[str]) -> None:
    assume(a != b)
    assert join_segments(a) != join_segments(b)
