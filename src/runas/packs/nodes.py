"""Reading YAML nodes with their line numbers: the typed getters the pack schema is built on.

The loader works on ``yaml.compose`` nodes rather than on ``yaml.safe_load`` output because every
error must name a line, and because values must be read as written: ``version: 1.10`` is the
version 1.10, where ``safe_load`` would hand back the float 1.1. Scalars that are identifiers or
text are therefore taken from their source text; only booleans, integers and free-form values
(probe configuration, condition values) go through YAML's own typing.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import yaml

from runas.errors import PackError

_TAG = "tag:yaml.org,2002:"
NULL_TAG = _TAG + "null"
BOOL_TAG = _TAG + "bool"
INT_TAG = _TAG + "int"
STR_TAG = _TAG + "str"

ID_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
ID_HINT = "letters, digits and underscores in dot-separated parts, starting with a letter"
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NAME_HINT = "letters, digits and underscores, not starting with a digit"


def line_of(node: yaml.Node) -> int:
    """1-based line where ``node`` starts (yaml's marks count from 0)."""
    return int(node.start_mark.line) + 1


def describe(node: yaml.Node) -> str:
    """What a node is, for "must be a list (got a string)" messages."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = str(node.tag)
    if tag == NULL_TAG:
        return "nothing"
    if tag == BOOL_TAG:
        return "true/false"
    if tag in (INT_TAG, _TAG + "float"):
        return "a number"
    return "a string"


def is_null(node: yaml.Node | None) -> bool:
    return node is None or (isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG)


class Reader:
    """Holds what every getter needs: the file name for errors, the line registry, and a YAML
    constructor for the few free-form values that keep YAML's typing."""

    def __init__(self, source: str, loader: yaml.SafeLoader) -> None:
        self.source = source
        self.lines: dict[str, int] = {}
        self._loader = loader

    def fail(self, at: yaml.Node | int, message: str) -> NoReturn:
        line = at if isinstance(at, int) else line_of(at)
        raise PackError(message, source=self.source, line=line)

    def record(self, path: str, node: yaml.Node) -> None:
        self.lines[path] = line_of(node)

    def construct(self, node: yaml.Node) -> Any:
        """The plain Python value of a node (mappings, lists, typed scalars)."""
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:  # e.g. a mapping used as a mapping key
            mark = getattr(exc, "problem_mark", None)
            line = int(mark.line) + 1 if mark is not None else line_of(node)
            self.fail(line, f"unreadable value: {getattr(exc, 'problem', exc)}")

    # -- scalars ------------------------------------------------------------------------------

    def text(self, node: yaml.Node, what: str) -> str:
        """A scalar read as written (any YAML type), e.g. a display name or a version."""
        if not isinstance(node, yaml.ScalarNode) or node.tag == NULL_TAG:
            self.fail(node, f"{what} must be text (got {describe(node)})")
        return str(node.value)

    def ident(self, node: yaml.Node, what: str) -> str:
        value = self.text(node, what).strip()
        if not ID_PATTERN.match(value):
            self.fail(node, f"{what} {value!r} is not a valid id ({ID_HINT})")
        return value

    def name(self, node: yaml.Node, what: str) -> str:
        value = self.text(node, what).strip()
        if not NAME_PATTERN.match(value):
            self.fail(node, f"{what} {value!r} is not a valid name ({NAME_HINT})")
        return value

    def boolean(self, node: yaml.Node, what: str) -> bool:
        if not isinstance(node, yaml.ScalarNode) or node.tag != BOOL_TAG:
            self.fail(node, f"{what} must be true or false (got {describe(node)})")
        return bool(self.construct(node))

    def integer(self, node: yaml.Node, what: str) -> int:
        if not isinstance(node, yaml.ScalarNode) or node.tag != INT_TAG:
            self.fail(node, f"{what} must be a whole number (got {describe(node)})")
        return int(self.construct(node))

    # -- collections --------------------------------------------------------------------------

    def items(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, f"{what} must be a list (got {describe(node)})")
        return list(node.value)

    def mapping(
        self,
        node: yaml.Node,
        what: str,
        path: str,
        allowed: Sequence[str],
        label: str | None = None,
    ) -> Fields:
        """The mapping ``node`` (``what`` names it if it is not one); ``label`` names it in
        later messages when that differs, e.g. "class" for "an entry of 'classes'"."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{what} must be a mapping (got {describe(node)})")
        return Fields(self, node, label or what, path, allowed)

    def unique_list(
        self, node: yaml.Node, what: str, path: str, read: str = "text"
    ) -> Iterator[tuple[str, yaml.Node]]:
        """Items of a list of scalars, each recorded at ``path/<index>``, duplicates refused.

        ``read`` picks the scalar reader: ``text``, ``ident`` or ``name``.
        """
        seen: dict[str, int] = {}
        reader = {"text": self.text, "ident": self.ident, "name": self.name}[read]
        for index, item in enumerate(self.items(node, what)):
            value = reader(item, f"an entry of {what}")
            if value in seen:
                self.fail(item, f"{what} lists {value!r} twice (first at line {seen[value]})")
            seen[value] = line_of(item)
            self.record(f"{path}/{index}", item)
            yield value, item


class Fields:
    """The keys of one YAML mapping, checked for duplicates and typos, read one by one.

    ``what`` names the mapping in messages ("class Contoso.X"); it can be refined once the id
    is known, which is why unknown keys are checked by :meth:`check_keys`, not at construction.
    """

    def __init__(
        self, reader: Reader, node: yaml.MappingNode, what: str, path: str, allowed: Sequence[str]
    ) -> None:
        self.reader = reader
        self.node = node
        self.what = what
        self.path = path
        self.allowed = tuple(allowed)
        self._values: dict[str, yaml.Node] = {}
        self._keys: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = reader.text(key_node, f"a key in {what}")
            if key in self._keys:
                reader.fail(
                    key_node,
                    f"duplicate key {key!r} in {what} (first at line {line_of(self._keys[key])})",
                )
            self._keys[key] = key_node
            self._values[key] = value_node

    @property
    def line(self) -> int:
        return line_of(self.node)

    def check_keys(self) -> None:
        """Refuse keys the schema does not know, suggesting the closest known key."""
        for key, key_node in self._keys.items():
            if key in self.allowed:
                self.reader.record(self.sub(key), key_node)
                continue
            # a lower cutoff than difflib's 0.6: short keys ('di', 'refs') are typos too
            close = difflib.get_close_matches(key, self.allowed, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.reader.fail(key_node, f"unknown key {key!r} in {self.what}{hint}")

    def get(self, key: str) -> yaml.Node | None:
        """The value of ``key``; an explicit null counts as not given."""
        value = self._values.get(key)
        return None if is_null(value) else value

    def require(self, key: str) -> yaml.Node:
        value = self.get(key)
        if value is None:
            at: yaml.Node = self._keys.get(key, self.node)
            self.reader.fail(at, f"missing required key {key!r} in {self.what}")
        return value

    def text(self, key: str, default: str = "") -> str:
        value = self.get(key)
        return default if value is None else self.reader.text(value, f"{key!r} of {self.what}")

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        return default if value is None else self.reader.boolean(value, f"{key!r} of {self.what}")

    def required_text(self, key: str) -> str:
        value = self.reader.text(self.require(key), f"{key!r} of {self.what}").strip()
        if not value:
            self.reader.fail(self.require(key), f"{key!r} of {self.what} must not be empty")
        return value

    def sub(self, key: str) -> str:
        """Line-registry path of a key of this mapping (the top level has no prefix)."""
        return f"{self.path}/{key}" if self.path else key
