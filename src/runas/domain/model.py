"""The object model of a management group (domain.md §2), as plain immutable values.

Pure: no I/O, no database. Storage maps rows to these; the pack loader produces ``PackDef``;
resolution consumes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from runas.domain.accounts import AccountType

#: The root of every class, abstract. Declared by the built-in ``runas.system`` pack.
ENTITY_CLASS = "System.Entity"
#: The class of managed computers (the root of every hosting chain). Key property ``name``.
COMPUTER_CLASS = "System.Computer"
#: Built-in profile used for workflows without a profile and for fallback (domain.md §6).
DEFAULT_ACTION_PROFILE = "System.DefaultActionAccount"
SYSTEM_PACK = "runas.system"


class WorkflowKind(StrEnum):
    DISCOVERY = "discovery"
    RULE = "rule"
    MONITOR = "monitor"
    TASK = "task"


class TargetKind(StrEnum):
    """What an association targets; the order of precedence is object > group > class > all."""

    ALL = "all"
    CLASS = "class"
    GROUP = "group"
    OBJECT = "object"


#: Precedence of target kinds, higher wins (domain.md §5 rule 2).
TARGET_RANK: dict[TargetKind, int] = {
    TargetKind.ALL: 0,
    TargetKind.CLASS: 1,
    TargetKind.GROUP: 2,
    TargetKind.OBJECT: 3,
}


class Accessibility(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"


class ConditionOp(StrEnum):
    EQUALS = "equals"
    NOT_EQUALS = "not_equals"
    CONTAINS = "contains"
    STARTS_WITH = "starts_with"
    ENDS_WITH = "ends_with"
    MATCHES = "matches"  # a regular expression that must match the whole value
    IN = "in"  # value is a list
    EXISTS = "exists"  # value ignored


@dataclass(frozen=True)
class ClassDef:
    id: str
    display_name: str
    base: str | None  # None only for System.Entity
    abstract: bool = False
    #: key properties declared by this class (inherited ones come from the base)
    key_properties: tuple[str, ...] = ()
    properties: tuple[str, ...] = ()
    #: the class of the object that hosts instances of this class (inherited when None)
    host: str | None = None
    description: str = ""
    pack: str = ""


@dataclass(frozen=True)
class Condition:
    property: str
    op: ConditionOp
    value: Any = None


@dataclass(frozen=True)
class GroupRule:
    """Members: instances of ``class_id`` (or a derived class) meeting every condition."""

    class_id: str
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class GroupDef:
    id: str
    display_name: str
    #: explicit members by object full name (they may not be discovered yet)
    members: tuple[str, ...] = ()
    rules: tuple[GroupRule, ...] = ()
    #: nested groups whose members are members of this group
    includes: tuple[str, ...] = ()
    description: str = ""
    pack: str = ""


@dataclass(frozen=True)
class ProfileDef:
    id: str
    display_name: str
    description: str = ""
    #: the class whose instances the profile is meant for; informs explain and suggestions
    context_class: str = ENTITY_CLASS
    accessibility: Accessibility = Accessibility.PUBLIC
    #: empty = every account type is allowed
    allowed_types: tuple[AccountType, ...] = ()
    #: False: the profile cannot fall back to the action account (UNIX/Linux profiles)
    fallback: bool = True
    #: accounts are an ordered list, tried in turn (site-account catalogue)
    ordered: bool = False
    #: at most this many accounts may be associated (None = no limit)
    max_accounts: int | None = None
    pack: str = ""

    def allows(self, account_type: AccountType) -> bool:
        return not self.allowed_types or account_type in self.allowed_types


@dataclass(frozen=True)
class Schedule:
    interval_seconds: int
    spread_seconds: int = 0
    timeout_seconds: int = 300


#: a task parameter's value as a pack gives it
ParameterValue = str | int | float | bool


@dataclass(frozen=True)
class TaskParameter:
    """A parameter of a task (``parameters`` in a pack): filled into the probe's ``{name}``
    placeholders; an operator may give another value at run time only if it is overridable."""

    name: str
    #: None: no default (the value is empty unless an override gives one)
    default: ParameterValue | None = None
    overridable: bool = False
    description: str = ""


@dataclass(frozen=True)
class WorkflowDef:
    id: str
    kind: WorkflowKind
    display_name: str
    target: str  # class id
    profile: str | None = None
    schedule: Schedule | None = None
    probe_type: str = "command"
    probe_config: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    description: str = ""
    pack: str = ""
    #: discovery workflows: the classes they discover. An agent may submit objects of these
    #: classes (and their subclasses) that are not on its own computer; nothing else.
    discovers: tuple[str, ...] = ()
    #: tasks: their parameters, in the pack's order
    parameters: tuple[TaskParameter, ...] = ()
    #: tasks: how long an agent has to pick a run up, and then to report it (None for others)
    timeout_seconds: int | None = None


@dataclass(frozen=True)
class PackReference:
    id: str
    min_version: str | None = None


@dataclass(frozen=True)
class PackDef:
    id: str
    version: str
    display_name: str
    description: str = ""
    references: tuple[PackReference, ...] = ()
    classes: tuple[ClassDef, ...] = ()
    groups: tuple[GroupDef, ...] = ()
    profiles: tuple[ProfileDef, ...] = ()
    workflows: tuple[WorkflowDef, ...] = ()


@dataclass(frozen=True)
class ObjectRecord:
    """A discovered object. ``computer`` is the name of the computer that hosts it (itself for
    a computer). ``full_name`` is the readable address: ``Class:host;path;key``."""

    id: int
    class_id: str
    full_name: str
    key: tuple[str, ...]
    properties: dict[str, Any]
    host_id: int | None
    computer: str


@dataclass(frozen=True)
class Association:
    id: int
    profile: str
    account_id: int
    account_name: str
    target_kind: TargetKind
    #: class id, group id or object full name; None for ``all``
    target: str | None
    enforced: bool = False
    position: int | None = None

    def describe_target(self) -> str:
        if self.target_kind is TargetKind.ALL:
            return "all targeted objects"
        return f"{self.target_kind.value} {self.target}"
