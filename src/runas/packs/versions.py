"""Pack versions: dotted numbers, compared numerically (``1.10.0`` is newer than ``1.9.3``).

One to four components, as SCOM's ``7.0.8560.0``; missing components count as zero, so ``1.0``
and ``1.0.0`` are the same version. Leading zeros are refused: ``1.01`` would otherwise read
as ``1.1`` to the machine and as something else to a person.
"""

from __future__ import annotations

import re

from runas.errors import InvalidInput

VERSION_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*)){0,3}$")
VERSION_HINT = "dotted numbers such as 1.0.0, at most four, without leading zeros"


def is_version(text: str) -> bool:
    return VERSION_PATTERN.match(text) is not None


def parse_version(text: str) -> tuple[int, int, int, int]:
    """The version as four numbers, zero-padded, for comparison."""
    if not is_version(text):
        raise InvalidInput(f"{text!r} is not a version ({VERSION_HINT})")
    parts = [int(p) for p in text.split(".")]
    parts += [0] * (4 - len(parts))
    return (parts[0], parts[1], parts[2], parts[3])


def compare_versions(a: str, b: str) -> int:
    """-1 if ``a`` is older than ``b``, 0 if they are the same version, 1 if newer."""
    va, vb = parse_version(a), parse_version(b)
    return (va > vb) - (va < vb)
