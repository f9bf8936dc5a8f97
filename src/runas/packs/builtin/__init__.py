"""The built-in ``runas.system`` pack, shipped as package data."""

from __future__ import annotations

from importlib import resources

from runas.packs.loader import LoadedPack, load_pack_text

#: the name shown in errors about the built-in pack (it has no path of its own)
SYSTEM_PACK_SOURCE = "<builtin>/system.yaml"


def builtin_system_pack() -> LoadedPack:
    """Load the built-in pack (read on each call: no import-time state)."""
    text = resources.files(__package__).joinpath("system.yaml").read_text(encoding="utf-8")
    return load_pack_text(text, SYSTEM_PACK_SOURCE)
