"""Readable full names of objects: ``Class:seg;seg;…`` (issue: objects addressable by name).

The segments are the key values along the hosting chain, from the computer down to the
object: ``System.Computer:abc.contoso.com``, ``Contoso.SQL.Instance:abc.contoso.com;X``,
``Contoso.SQL.Database:abc.contoso.com;X;master``. A ``;`` or ``\\`` inside a value is
escaped with a backslash so every name parses back unambiguously.
"""

from __future__ import annotations

from collections.abc import Sequence

from runas.errors import InvalidInput


def escape_segment(value: str) -> str:
    return value.replace("\\", "\\\\").replace(";", "\\;")


def split_segments(path: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    chars = iter(path)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, None)
            if nxt is None:
                raise InvalidInput(f"object name {path!r} ends with a lone backslash")
            current.append(nxt)
        elif ch == ";":
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def join_segments(segments: Sequence[str]) -> str:
    return ";".join(escape_segment(s) for s in segments)


def full_name(class_id: str, segments: Sequence[str]) -> str:
    return f"{class_id}:{join_segments(segments)}"


def parse_full_name(name: str) -> tuple[str, list[str]]:
    """Split ``Class:seg;seg`` into the class id and its segments."""
    class_id, sep, path = name.partition(":")
    if not sep or not class_id or not path:
        raise InvalidInput(
            f"{name!r} is not an object name (expected Class:host;key, e.g. "
            "Contoso.SQL.Instance:abc.contoso.com;X, or a numeric object id)"
        )
    return class_id, split_segments(path)
