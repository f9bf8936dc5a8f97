"""Pack files to LoadedPack: the structure checks of the loader, each located at its line."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

import runas.packs
from runas.domain.accounts import AccountType
from runas.domain.model import (
    Accessibility,
    Condition,
    ConditionOp,
    GroupRule,
    Schedule,
    WorkflowKind,
)
from runas.errors import InvalidInput, PackError
from runas.packs import (
    builtin_system_pack,
    check_pack,
    compare_versions,
    load_pack_file,
    load_pack_text,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "packs" / "contoso-sql.yaml"

#: four lines; the snippets of the tests below start on line 5
HEADER = "pack:\n  id: T\n  version: 1.0.0\n  display_name: T\n"


def load(body: str) -> runas.packs.LoadedPack:
    return load_pack_text(HEADER + dedent(body), "t.yaml")


def refused(body: str, *, header: str = HEADER) -> str:
    with pytest.raises(PackError) as info:
        load_pack_text(header + dedent(body), "t.yaml")
    return str(info.value)


def test_public_surface() -> None:
    assert sorted(runas.packs.__all__) == [
        "LoadedPack",
        "builtin_system_pack",
        "check_pack",
        "compare_versions",
        "is_version",
        "load_pack_file",
        "load_pack_text",
        "parse_version",
    ]


# -- the sample and the built-in pack ----------------------------------------------------------


def test_sample_pack_loads_with_its_values_and_lines() -> None:
    loaded = load_pack_file(EXAMPLE)
    pack = loaded.pack
    assert loaded.source == str(EXAMPLE)
    assert loaded.text == EXAMPLE.read_text(encoding="utf-8")
    assert (pack.id, pack.version, pack.display_name) == (
        "Contoso.SQL",
        "1.0.0",
        "Contoso SQL Server monitoring",
    )
    instance, database = pack.classes
    assert instance.host == "System.Computer"
    assert instance.key_properties == ("instance",)
    assert instance.properties == ("environment", "edition", "port")
    assert database.host == "Contoso.SQL.Instance"
    assert instance.pack == "Contoso.SQL"
    (group,) = pack.groups
    assert group.rules == (
        GroupRule(
            "Contoso.SQL.Instance",
            (Condition("environment", ConditionOp.EQUALS, "production"),),
        ),
    )
    (profile,) = pack.profiles
    assert profile.allowed_types == (AccountType.WINDOWS, AccountType.SIMPLE)
    assert profile.context_class == "Contoso.SQL.Instance"
    assert profile.fallback is True
    assert [w.kind for w in pack.workflows] == [
        WorkflowKind.DISCOVERY,
        WorkflowKind.RULE,
        WorkflowKind.MONITOR,
    ]
    assert {w.profile for w in pack.workflows} == {"Contoso.SQL.MonitoringProfile"}
    assert [w.schedule for w in pack.workflows] == [
        Schedule(3600, 300, 120),
        Schedule(300, 30, 60),
        Schedule(60, 0, 30),
    ]
    lines = loaded.text.splitlines()
    line = loaded.line_of("classes", "Contoso.SQL.Database", "host")
    assert line is not None
    assert lines[line - 1].strip() == "host: Contoso.SQL.Instance"
    line = loaded.line_of("groups", "Contoso.SQL.ProductionInstances", "rules", "0", "where", "0")
    assert line is not None
    assert "op: equals" in lines[line - 1]


def test_sample_pack_passes_the_checks_against_the_builtin_pack() -> None:
    system = builtin_system_pack()
    check_pack(load_pack_file(EXAMPLE), {system.pack.id: system.pack})


def test_builtin_pack() -> None:
    loaded = builtin_system_pack()
    pack = loaded.pack
    assert (pack.id, pack.version) == ("runas.system", "1.0.0")
    entity, computer = pack.classes
    assert (entity.id, entity.base, entity.abstract) == ("System.Entity", None, True)
    assert (computer.id, computer.base, computer.host) == ("System.Computer", "System.Entity", None)
    assert computer.key_properties == ("name",)
    assert computer.properties == ("domain", "os", "ip_address", "management_server")
    (profile,) = pack.profiles
    assert profile.id == "System.DefaultActionAccount"
    assert profile.display_name == "Default Action Account"
    assert profile.allowed_types == (AccountType.ACTION,)
    assert (profile.fallback, profile.context_class) == (True, "System.Computer")
    assert pack.workflows == ()
    check_pack(loaded, {})


# -- the line registry -------------------------------------------------------------------------


def test_lines_scheme() -> None:
    loaded = load(
        """\
        classes:
          - id: A.X
            base: System.Entity
            key_properties: [k]
        groups:
          - id: A.G
            include:
              - A.H
        """
    )
    assert loaded.lines["pack"] == 1
    assert loaded.lines["pack/version"] == 3
    assert loaded.lines["classes"] == 5
    assert loaded.lines["classes/A.X"] == 6
    assert loaded.lines["classes/A.X/base"] == 7
    assert loaded.lines["classes/A.X/key_properties/0"] == 8
    assert loaded.lines["groups/A.G/include/0"] == 12
    assert loaded.line_of("classes", "A.X", "base") == 7
    # a key that was omitted falls back to its element
    assert loaded.line_of("classes", "A.X", "host") == 6
    assert loaded.line_of("profiles", "nothing") is None


def test_values_are_read_as_written_and_defaults_apply() -> None:
    loaded = load_pack_text(
        dedent(
            """\
            pack:
              id: T
              version: 1.10
              display_name: 2024
            profiles:
              - id: T.P
                display_name: P
                max_accounts: null
            workflows:
              - id: T.W
                kind: task
                target: System.Computer
                probe: {type: command}
            """
        ),
        "t.yaml",
    )
    pack = loaded.pack
    assert pack.version == "1.10"  # not the float 1.1
    assert pack.display_name == "2024"
    (profile,) = pack.profiles
    assert profile.accessibility is Accessibility.PUBLIC
    assert (profile.allowed_types, profile.fallback, profile.ordered) == ((), True, False)
    assert profile.max_accounts is None
    assert profile.context_class == "System.Entity"
    (workflow,) = pack.workflows
    assert (workflow.schedule, workflow.enabled, workflow.probe_config) == (None, True, {})
    assert workflow.display_name == "T.W"


# -- syntax ------------------------------------------------------------------------------------


def test_malformed_yaml_points_at_the_line() -> None:
    err = refused("classes:\n  - id: [A\n  - id: B\n")
    assert err.startswith("t.yaml:7: malformed YAML: ")


def test_empty_file() -> None:
    with pytest.raises(PackError) as info:
        load_pack_text("# nothing\n", "t.yaml")
    assert str(info.value) == "t.yaml: the file is empty (expected a mapping with a 'pack' key)"


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(PackError) as info:
        load_pack_text("\n- a\n- b\n", "t.yaml")
    assert str(info.value) == "t.yaml:2: the top level of a pack must be a mapping (got a list)"


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PackError) as info:
        load_pack_file(missing)
    assert str(info.value).startswith(f"{missing}: cannot read the file")


def test_errors_of_a_file_name_the_path_as_given(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("pack:\n  id: 1T\n", encoding="utf-8")
    with pytest.raises(PackError) as info:
        load_pack_file(path)
    assert str(info.value).startswith(f"{path}:2: pack id '1T' is not a valid id")


# -- structure: one refusal per case, with its exact line and message -------------------------

CASES = [
    pytest.param(
        "clases: []\n",
        "5: unknown key 'clases' in the top level of a pack (did you mean 'classes'?)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        "classes:\n  - id: Contoso.X\n    bse: System.Entity\n",
        "7: unknown key 'bse' in class Contoso.X (did you mean 'base'?)",
        id="unknown-key-typo",
    ),
    pytest.param(
        "classes:\n  - id: Contoso.X\n    colour: red\n",
        "7: unknown key 'colour' in class Contoso.X",
        id="unknown-key-no-suggestion",
    ),
    pytest.param(
        "classes:\n  - di: Contoso.X\n    base: System.Entity\n",
        "6: unknown key 'di' in class (did you mean 'id'?)",
        id="typo-of-id-reported-before-missing-id",
    ),
    pytest.param(
        "classes:\n  - display_name: X\n",
        "6: missing required key 'id' in class",
        id="missing-id",
    ),
    pytest.param(
        "classes:\n  - id: Contoso.X\n    abstract: true\n",
        "6: missing required key 'base' in class Contoso.X",
        id="missing-base",
    ),
    pytest.param(
        "classes:\n  - id: Contoso.X\n    base:\n",
        "7: missing required key 'base' in class Contoso.X",
        id="null-base-is-missing",
    ),
    pytest.param(
        "classes:\n  - id: System.Entity\n    base: System.Computer\n",
        "7: System.Entity is the root of all classes and has no base",
        id="entity-with-base",
    ),
    pytest.param(
        "classes:\n  - id: Contoso.X\n    base: System.Entity\n    base: System.Computer\n",
        "8: duplicate key 'base' in class (first at line 7)",
        id="duplicate-key",
    ),
    pytest.param(
        "classes:\n  id: Contoso.X\n",
        "6: 'classes' must be a list (got a mapping)",
        id="section-not-a-list",
    ),
    pytest.param(
        "classes:\n  - Contoso.X\n",
        "6: an entry of 'classes' must be a mapping (got a string)",
        id="entry-not-a-mapping",
    ),
    pytest.param(
        "classes:\n  - id: Contoso.X\n    base: System.Entity\n    abstract: maybe\n",
        "8: 'abstract' of class Contoso.X must be true or false (got a string)",
        id="wrong-type-bool",
    ),
    pytest.param(
        "classes:\n  - id: Contoso.X\n    base: System.Entity\n    key_properties: name\n",
        "8: 'key_properties' of class Contoso.X must be a list (got a string)",
        id="wrong-type-list",
    ),
    pytest.param(
        "classes:\n  - id: Contoso..X\n    base: System.Entity\n",
        "6: class id 'Contoso..X' is not a valid id (letters, digits and underscores in "
        "dot-separated parts, starting with a letter)",
        id="bad-id",
    ),
    pytest.param(
        "classes:\n  - id: Contoso.X\n    base: System/Entity\n",
        "7: base of class Contoso.X 'System/Entity' is not a valid id (letters, digits and "
        "underscores in dot-separated parts, starting with a letter)",
        id="bad-reference-id",
    ),
    pytest.param(
        "classes:\n  - id: Contoso.X\n    base: System.Entity\n    properties: [a, 2b]\n",
        "8: an entry of 'properties' of class Contoso.X '2b' is not a valid name (letters, "
        "digits and underscores, not starting with a digit)",
        id="bad-property-name",
    ),
    pytest.param(
        "classes:\n  - id: A.X\n    base: System.Entity\n    properties:\n      - a\n      - a\n",
        "10: 'properties' of class A.X lists 'a' twice (first at line 9)",
        id="duplicate-property",
    ),
    pytest.param(
        "classes:\n  - id: A.X\n    base: System.Entity\n    key_properties: [a]\n"
        "    properties: [a]\n",
        "9: property 'a' of class A.X is already a key property",
        id="property-also-key",
    ),
    pytest.param(
        "classes:\n  - id: A.X\n    base: System.Entity\n  - id: A.Y\n    base: System.Entity\n"
        "  - id: A.X\n    base: System.Entity\n",
        "10: duplicate class id A.X (first defined at line 6)",
        id="duplicate-class-id",
    ),
    pytest.param(
        "profiles:\n  - {id: A.P, display_name: P}\n  - {id: A.P, display_name: Q}\n",
        "7: duplicate profile id A.P (first defined at line 6)",
        id="duplicate-profile-id",
    ),
    pytest.param(
        "profiles:\n  - id: A.P\n",
        "6: missing required key 'display_name' in profile A.P",
        id="profile-needs-display-name",
    ),
    pytest.param(
        "profiles:\n  - id: A.P\n    display_name: P\n"
        "    allowed_account_types: [windows, widows]\n",
        "8: unknown account type 'widows' (did you mean 'windows'? known: windows, action, "
        "basic, digest, simple, binary, community-string, snmpv3, unix-monitoring, "
        "unix-maintenance)",
        id="unknown-account-type",
    ),
    pytest.param(
        "profiles:\n  - id: A.P\n    display_name: P\n    allowed_account_types: []\n",
        "8: 'allowed_account_types' of profile A.P is empty (omit it to allow every account type)",
        id="empty-allowed-types",
    ),
    pytest.param(
        "profiles:\n  - id: A.P\n    display_name: P\n    max_accounts: 0\n",
        "8: 'max_accounts' of profile A.P must be at least 1",
        id="max-accounts-zero",
    ),
    pytest.param(
        "profiles:\n  - id: A.P\n    display_name: P\n    max_accounts: many\n",
        "8: 'max_accounts' of profile A.P must be a whole number (got a string)",
        id="max-accounts-type",
    ),
    pytest.param(
        "profiles:\n  - id: A.P\n    display_name: P\n    accessibility: private\n",
        "8: unknown accessibility 'private' (known: public, internal)",
        id="unknown-accessibility",
    ),
    pytest.param(
        "groups:\n  - id: A.G\n    rules:\n      - class: A.X\n        where:\n"
        "          - {property: env, op: equal, value: prod}\n",
        "10: unknown condition op 'equal' (did you mean 'equals'? known: equals, not_equals, "
        "contains, starts_with, ends_with, matches, in, exists)",
        id="unknown-op",
    ),
    pytest.param(
        "groups:\n  - id: A.G\n    rules:\n      - class: A.X\n        where:\n"
        "          - property: env\n            op: in\n            value: prod\n",
        "12: op 'in' needs a list value (got a string)",
        id="in-needs-list",
    ),
    pytest.param(
        "groups:\n  - id: A.G\n    rules:\n      - class: A.X\n        where:\n"
        "          - property: env\n            op: matches\n            value: 'prod[0-9'\n",
        "12: op 'matches' needs a valid regular expression: unterminated character set at "
        "position 4",
        id="matches-needs-regex",
    ),
    pytest.param(
        "groups:\n  - id: A.G\n    rules:\n      - class: A.X\n        where:\n"
        "          - {property: env, op: exists, value: false}\n",
        "10: op 'exists' takes no value (condition on 'env' in rule 1 of group A.G)",
        id="exists-takes-no-value",
    ),
    pytest.param(
        "groups:\n  - id: A.G\n    rules:\n      - class: A.X\n        where:\n"
        "          - {property: env, op: equals}\n",
        "10: missing required key 'value' in condition on 'env' in rule 1 of group A.G",
        id="condition-needs-value",
    ),
    pytest.param(
        "groups:\n  - id: A.G\n    rules:\n      - klass: A.X\n",
        "8: unknown key 'klass' in rule 1 of group A.G (did you mean 'class'?)",
        id="rule-key-typo",
    ),
    pytest.param(
        "groups:\n  - id: A.G\n    members:\n      - 'A.X:abc;X'\n      - abc.contoso.com\n",
        "9: explicit member 'abc.contoso.com' is not an object name (expected Class:host;key, "
        "e.g. Contoso.SQL.Instance:abc.contoso.com;X, or a numeric object id)",
        id="member-not-a-full-name",
    ),
    pytest.param(
        "groups:\n  - id: A.G\n    members: ['A.X:abc;;X']\n",
        "7: explicit member 'A.X:abc;;X' is not an object name (expected Class:host;key with a "
        "class id and no empty part, e.g. Contoso.SQL.Instance:abc.contoso.com;X)",
        id="member-with-empty-segment",
    ),
    pytest.param(
        "workflows:\n  - id: A.W\n    kind: probe\n",
        "7: unknown workflow kind 'probe' (known: discovery, rule, monitor, task)",
        id="unknown-kind",
    ),
    pytest.param(
        "workflows:\n  - id: A.W\n    kind: task\n    target: A.X\n"
        "    schedule: {interval: 5m}\n    probe: {type: command}\n",
        "9: task A.W cannot have a schedule (tasks run on demand)",
        id="schedule-on-task",
    ),
    pytest.param(
        "workflows:\n  - id: A.W\n    kind: monitor\n    target: A.X\n    probe: {type: command}\n",
        "6: missing required key 'schedule' in monitor A.W (only tasks have none)",
        id="missing-schedule",
    ),
    pytest.param(
        "workflows:\n  - id: A.W\n    kind: rule\n    target: A.X\n"
        "    schedule:\n      interval: 5 minutes\n    probe: {type: command}\n",
        "10: interval of rule A.W '5 minutes' is not a duration (seconds, or a number with s, "
        "m, h or d: 30s, 5m, 1h)",
        id="bad-duration",
    ),
    pytest.param(
        "workflows:\n  - id: A.W\n    kind: rule\n    target: A.X\n"
        "    schedule: {interval: 0}\n    probe: {type: command}\n",
        "9: interval of rule A.W must be longer than 0s",
        id="zero-interval",
    ),
    pytest.param(
        "workflows:\n  - id: A.W\n    kind: rule\n    target: A.X\n"
        "    schedule: {interval: 1m, spread: 60s}\n    probe: {type: command}\n",
        "9: spread of rule A.W must be shorter than its interval",
        id="spread-not-shorter-than-interval",
    ),
    pytest.param(
        "workflows:\n  - id: A.W\n    kind: rule\n    target: A.X\n"
        "    schedule: {interval: 1m, timeout: 2m}\n    probe: {type: command}\n",
        "9: timeout of rule A.W must be between 1s and its interval",
        id="timeout-longer-than-interval",
    ),
    pytest.param(
        "workflows:\n  - id: A.W\n    kind: rule\n    target: A.X\n    schedule: {interval: 1m}\n",
        "6: missing required key 'probe' in rule A.W",
        id="missing-probe",
    ),
    pytest.param(
        "workflows:\n  - id: A.W\n    kind: task\n    target: A.X\n    probe:\n"
        "      type: command\n      config:\n        program: sqlcmd\n"
        "        env: {SQL_PASSWORD: hunter2}\n",
        "13: probe config of task A.W has a key 'SQL_PASSWORD': credentials never go in a pack "
        "(use a Run As profile; the agent hands the account to the probe)",
        id="credential-in-probe-config",
    ),
    pytest.param(
        "workflows:\n  - id: A.W\n    kind: task\n    target: A.X\n    probe:\n"
        "      type: command\n      config: [sqlcmd]\n",
        "11: probe config of task A.W must be a mapping (got a list)",
        id="probe-config-not-mapping",
    ),
    pytest.param(
        "workflows:\n  - id: A.W\n    kind: task\n    target: A.X\n    enabled: 1\n"
        "    probe: {type: command}\n",
        "9: 'enabled' of task A.W must be true or false (got a number)",
        id="enabled-not-bool",
    ),
]


@pytest.mark.parametrize(("body", "expected"), CASES)
def test_structure_is_refused(body: str, expected: str) -> None:
    assert refused(body) == f"t.yaml:{expected}"


HEADER_CASES = [
    pytest.param("pack:\n  version: 1.0.0\n", "2: missing required key 'id' in 'pack'", id="no-id"),
    pytest.param(
        "pack:\n  id: T\n  version: 1.0.0\n",
        "2: missing required key 'display_name' in pack T",
        id="no-display-name",
    ),
    pytest.param(
        "pack:\n  id: T\n  version: v1\n  display_name: T\n",
        "3: version of the pack 'v1' is not a version (dotted numbers such as 1.0.0, at most "
        "four, without leading zeros)",
        id="bad-version",
    ),
    pytest.param(
        "pack:\n  id: T\n  version: 1.02\n  display_name: T\n",
        "3: version of the pack '1.02' is not a version (dotted numbers such as 1.0.0, at most "
        "four, without leading zeros)",
        id="leading-zero",
    ),
    pytest.param(
        "pack:\n  id: T\n  version: 1.0.0\n  display_name: T\n  references:\n"
        "    - {id: A, min_version: 1.x}\n",
        "6: min_version '1.x' is not a version (dotted numbers such as 1.0.0, at most four, "
        "without leading zeros)",
        id="bad-min-version",
    ),
    pytest.param(
        "pack:\n  id: T\n  version: 1.0.0\n  display_name: T\n  references:\n"
        "    - {id: A}\n    - {id: A}\n",
        "7: pack A is referenced twice (first at line 6)",
        id="duplicate-reference",
    ),
    pytest.param(
        "pack:\n  id: T\n  version: 1.0.0\n  display_name: T\n  refs: []\n",
        "5: unknown key 'refs' in 'pack' (did you mean 'references'?)",
        id="header-typo",
    ),
    pytest.param(
        "classes: []\n", "1: missing required key 'pack' in the top level of a pack", id="no-header"
    ),
]


@pytest.mark.parametrize(("text", "expected"), HEADER_CASES)
def test_header_is_refused(text: str, expected: str) -> None:
    assert refused(text, header="") == f"t.yaml:{expected}"


def test_condition_values_keep_their_yaml_types() -> None:
    loaded = load(
        """\
        groups:
          - id: A.G
            rules:
              - class: A.X
                where:
                  - {property: port, op: equals, value: 1433}
                  - {property: name, op: starts_with, value: 10.0}
                  - {property: env, op: in, value: [prod, staging]}
                  - {property: dns, op: exists}
        """
    )
    (rule,) = loaded.pack.groups[0].rules
    assert [c.value for c in rule.conditions] == [1433, "10.0", ("prod", "staging"), None]


# -- versions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.10.0", "1.9.3", 1),
        ("1.9.3", "1.10.0", -1),
        ("1.0", "1.0.0", 0),
        ("2", "1.99.99.99", 1),
        ("7.0.8560.0", "7.0.8560.1", -1),
    ],
)
def test_compare_versions(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected


def test_compare_versions_refuses_a_non_version() -> None:
    with pytest.raises(InvalidInput, match=r"'1\.0-beta' is not a version"):
        compare_versions("1.0-beta", "1.0")
