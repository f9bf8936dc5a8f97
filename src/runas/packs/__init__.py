"""Management packs: YAML files of classes, groups, Run As profiles and workflows.

``load_pack_text`` / ``load_pack_file`` read a pack and check its structure; ``check_pack``
checks it against the packs already imported. Both raise :class:`~runas.errors.PackError`
located as ``file:line: message``. The format is documented in ``docs/management-packs.md``.
"""

from runas.packs.builtin import builtin_system_pack
from runas.packs.checks import check_pack
from runas.packs.loader import LoadedPack, load_pack_file, load_pack_text
from runas.packs.versions import compare_versions, is_version, parse_version

__all__ = [
    "LoadedPack",
    "builtin_system_pack",
    "check_pack",
    "compare_versions",
    "is_version",
    "load_pack_file",
    "load_pack_text",
    "parse_version",
]
