"""Management pack files (YAML) to :class:`LoadedPack`: syntax and schema, with a line per error.

This module checks what a pack says on its own: structure, types, unknown keys, id syntax,
duplicates inside the pack. Whether the classes, groups and profiles it names exist, and whether
its hierarchy makes sense, is decided against the imported packs by :mod:`runas.packs.checks`.
The format is documented for pack authors in ``docs/management-packs.md``; keep the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from runas.domain.model import (
    ENTITY_CLASS,
    ClassDef,
    PackDef,
    PackReference,
)
from runas.errors import PackError
from runas.packs.elements import (
    GROUP_KEYS,
    PROFILE_KEYS,
    WORKFLOW_KEYS,
    read_group,
    read_profile,
    read_workflow,
)
from runas.packs.nodes import Fields, Reader
from runas.packs.versions import VERSION_HINT, is_version

TOP_KEYS = ("pack", "classes", "groups", "profiles", "workflows")
PACK_KEYS = ("id", "version", "display_name", "description", "references")
REFERENCE_KEYS = ("id", "min_version")
CLASS_KEYS = (
    "id",
    "display_name",
    "description",
    "base",
    "abstract",
    "host",
    "key_properties",
    "properties",
)
KEYS = {
    "classes": CLASS_KEYS,
    "groups": GROUP_KEYS,
    "profiles": PROFILE_KEYS,
    "workflows": WORKFLOW_KEYS,
}
#: singular names of the sections, for messages ("class Contoso.X")
SECTIONS = {"classes": "class", "groups": "group", "profiles": "profile", "workflows": "workflow"}


@dataclass(frozen=True)
class LoadedPack:
    """A pack as read from its file: the definitions, plus what is needed to point at lines.

    ``lines`` maps element paths to 1-based lines. Paths are ``/``-joined: the section and the id
    of an element (``classes/Contoso.SQL.Instance``), then a key (``.../base``), then a 0-based
    index for list items (``groups/G/rules/0/where/1/property``). The pack header is under
    ``pack`` and its references under ``pack/references/<id>``. A key's line is the line of the
    key itself, a list item's line the line of the item.
    """

    pack: PackDef
    source: str
    text: str
    lines: Mapping[str, int]

    def line_of(self, *path: str) -> int | None:
        """Line of the element at ``path``, or of its nearest recorded ancestor (so a check can
        ask for the exact key and still get a line when the key was omitted and defaulted)."""
        parts = list(path)
        while parts:
            line = self.lines.get("/".join(parts))
            if line is not None:
                return line
            parts.pop()
        return None


def load_pack_file(path: Path) -> LoadedPack:
    """Read and load a pack file; ``source`` (shown in errors) is the path as given."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PackError("not a UTF-8 text file", source=source) from None
    except OSError as exc:
        raise PackError(f"cannot read the file: {exc.strerror or exc}", source=source) from None
    return load_pack_text(text, source)


def load_pack_text(text: str, source: str) -> LoadedPack:
    """Parse pack YAML and check its structure; raises :class:`PackError` at the first problem."""
    try:
        # The constructor already scans the text: a control character fails here.
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise PackError(f"malformed YAML: {exc}".splitlines()[0], source=source) from None
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = int(mark.line) + 1 if mark is not None else None
            problem = exc.problem or exc.context or "unreadable YAML"
            raise PackError(f"malformed YAML: {problem}", source=source, line=line) from None
        except yaml.YAMLError as exc:
            raise PackError(f"malformed YAML: {exc}", source=source) from None
        if root is None:
            raise PackError(
                "the file is empty (expected a mapping with a 'pack' key)", source=source
            )
        reader = Reader(source, loader)
        pack = _read_root(reader, root)
    finally:
        loader.dispose()
    return LoadedPack(pack=pack, source=source, text=text, lines=dict(reader.lines))


def _read_root(reader: Reader, root: yaml.Node) -> PackDef:
    top = reader.mapping(root, "the top level of a pack", "", TOP_KEYS)
    top.check_keys()
    header = _read_header(reader, top.require("pack"))
    pack_id = header.id

    ids: dict[str, dict[str, int]] = {section: {} for section in SECTIONS}

    def section(name: str) -> list[tuple[Fields, str]]:
        node = top.get(name)
        if node is None:
            return []
        out = []
        for item in reader.items(node, f"'{name}'"):
            fields = reader.mapping(item, f"an entry of '{name}'", name, (), SECTIONS[name])
            out.append((fields, _element_id(reader, fields, name, ids[name])))
        return out

    classes = tuple(_read_class(reader, f, i, pack_id) for f, i in section("classes"))
    groups = tuple(read_group(reader, f, i, pack_id) for f, i in section("groups"))
    profiles = tuple(read_profile(reader, f, i, pack_id) for f, i in section("profiles"))
    workflows = tuple(read_workflow(reader, f, i, pack_id) for f, i in section("workflows"))
    return PackDef(
        id=header.id,
        version=header.version,
        display_name=header.display_name,
        description=header.description,
        references=header.references,
        classes=classes,
        groups=groups,
        profiles=profiles,
        workflows=workflows,
    )


def _element_id(reader: Reader, fields: Fields, section: str, seen: dict[str, int]) -> str:
    """Read the id of an element, name the element after it, refuse a duplicate id."""
    kind = SECTIONS[section]
    id_node = fields.get("id")
    fields.allowed = KEYS[section]
    if id_node is None:
        # a typo of 'id' is a likelier cause than a forgotten id: report the typo if there is one
        fields.what = kind
        fields.check_keys()
        reader.fail(fields.node, f"missing required key 'id' in {kind}")
    element_id = reader.ident(id_node, f"{kind} id")
    if element_id in seen:
        reader.fail(
            fields.node,
            f"duplicate {kind} id {element_id} (first defined at line {seen[element_id]})",
        )
    seen[element_id] = fields.line
    fields.what = f"{kind} {element_id}"
    fields.path = f"{section}/{element_id}"
    reader.lines[fields.path] = fields.line
    fields.check_keys()
    return element_id


def _read_header(reader: Reader, node: yaml.Node) -> PackDef:
    fields = reader.mapping(node, "'pack'", "pack", PACK_KEYS)
    fields.check_keys()
    pack_id = reader.ident(fields.require("id"), "pack id")
    fields.what = f"pack {pack_id}"
    version = _version(reader, fields.require("version"), "version of the pack")
    references: list[PackReference] = []
    refs_node = fields.get("references")
    if refs_node is not None:
        seen: dict[str, int] = {}
        for item in reader.items(refs_node, "'references'"):
            ref = reader.mapping(item, "a reference", "pack/references", REFERENCE_KEYS)
            ref_id = reader.ident(ref.require("id"), "referenced pack id")
            if ref_id in seen:
                reader.fail(
                    item, f"pack {ref_id} is referenced twice (first at line {seen[ref_id]})"
                )
            seen[ref_id] = ref.line
            ref.what = f"the reference to {ref_id}"
            ref.path = f"pack/references/{ref_id}"
            reader.lines[ref.path] = ref.line
            ref.check_keys()
            min_node = ref.get("min_version")
            min_version = None if min_node is None else _version(reader, min_node, "min_version")
            references.append(PackReference(id=ref_id, min_version=min_version))
    return PackDef(
        id=pack_id,
        version=version,
        display_name=fields.required_text("display_name"),
        description=fields.text("description"),
        references=tuple(references),
    )


def _version(reader: Reader, node: yaml.Node, what: str) -> str:
    value = reader.text(node, what).strip()
    if not is_version(value):
        reader.fail(node, f"{what} {value!r} is not a version ({VERSION_HINT})")
    return value


def _read_class(reader: Reader, fields: Fields, class_id: str, pack_id: str) -> ClassDef:
    base_node = fields.get("base")
    if class_id == ENTITY_CLASS:
        if base_node is not None:
            reader.fail(base_node, f"{ENTITY_CLASS} is the root of all classes and has no base")
        base = None
    else:
        base = reader.ident(fields.require("base"), f"base of class {class_id}")
    host_node = fields.get("host")
    host = None if host_node is None else reader.ident(host_node, f"host of class {class_id}")

    keys = _names(reader, fields, "key_properties")
    props = _names(reader, fields, "properties")
    for index, name in enumerate(props):
        if name in keys:
            line = reader.lines[f"{fields.path}/properties/{index}"]
            reader.fail(line, f"property {name!r} of class {class_id} is already a key property")
    return ClassDef(
        id=class_id,
        display_name=fields.text("display_name") or class_id,
        base=base,
        abstract=fields.boolean("abstract", False),
        key_properties=keys,
        properties=props,
        host=host,
        description=fields.text("description"),
        pack=pack_id,
    )


def _names(reader: Reader, fields: Fields, key: str) -> tuple[str, ...]:
    node = fields.get(key)
    if node is None:
        return ()
    what = f"{key!r} of {fields.what}"
    return tuple(value for value, _ in reader.unique_list(node, what, fields.sub(key), "name"))
