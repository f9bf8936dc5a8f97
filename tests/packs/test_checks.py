"""check_pack: a loaded pack against the packs already imported, each refusal at its line."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from runas.domain.model import GroupDef, PackDef, PackReference
from runas.errors import PackError
from runas.packs import builtin_system_pack, check_pack, load_pack_file, load_pack_text

FIXTURES = Path(__file__).parent / "fixtures"

#: four lines; the bodies of the tests below start on line 5
HEADER = "pack:\n  id: T\n  version: 1.0.0\n  display_name: T\n"
#: six lines: the header referencing Contoso.Base; bodies start on line 7
HEADER_WITH_BASE = HEADER + "  references:\n    - {id: Contoso.Base, min_version: 1.1}\n"


def imported(*extra: PackDef) -> dict[str, PackDef]:
    packs = [builtin_system_pack().pack, load_pack_file(FIXTURES / "base-pack.yaml").pack, *extra]
    return {p.id: p for p in packs}


def check(text: str, *extra: PackDef) -> None:
    check_pack(load_pack_text(dedent(text), "t.yaml"), imported(*extra))


def refused(text: str, *extra: PackDef) -> str:
    with pytest.raises(PackError) as info:
        check(text, *extra)
    return str(info.value)


def test_a_pack_may_use_what_it_references() -> None:
    check(
        HEADER_WITH_BASE
        + dedent(
            """\
            classes:
              - id: T.Site
                base: Contoso.Base.WebServer
                properties: [site]
            groups:
              - id: T.Sites
                rules:
                  - class: T.Site
                    where:
                      - {property: environment, op: equals, value: prod}
                      - {property: port, op: in, value: [80, 443]}
                include: [Contoso.Base.AllServices]
                members: ["T.Site:web1.contoso.com;www;default"]
            workflows:
              - id: T.Check
                kind: monitor
                target: T.Site
                profile: Contoso.Base.PublicProfile
                schedule: {interval: 1m}
                probe: {type: command}
            """
        )
    )


def test_upgrade_does_not_collide_with_the_old_version_of_itself() -> None:
    old = PackDef(id="Contoso.Base", version="1.0.0", display_name="old")
    loaded = load_pack_file(FIXTURES / "base-pack.yaml")
    available = imported()
    available["Contoso.Base"] = old
    check_pack(loaded, available)  # passed with the old version by mistake: still fine


# -- references --------------------------------------------------------------------------------

REFERENCE_CASES = [
    pytest.param(
        "  references:\n    - {id: Contoso.Missing}\n",
        "6: referenced pack Contoso.Missing is not imported (import it first)",
        id="not-imported",
    ),
    pytest.param(
        "  references:\n    - {id: T}\n",
        "6: pack T cannot reference itself",
        id="self",
    ),
    pytest.param(
        "  references:\n    - id: Contoso.Base\n      min_version: 1.10.0\n",
        "7: pack Contoso.Base 1.2.0 is imported, but this pack needs version 1.10.0 or later",
        id="version-too-low",
    ),
]


@pytest.mark.parametrize(("references", "expected"), REFERENCE_CASES)
def test_references_are_checked(references: str, expected: str) -> None:
    assert refused(HEADER + references) == f"t.yaml:{expected}"


def test_reference_cycle_is_refused() -> None:
    dependent = PackDef(
        id="Contoso.Web",
        version="1.0.0",
        display_name="W",
        references=(PackReference("T"),),
    )
    text = HEADER + "  references:\n    - {id: Contoso.Base}\n    - {id: Contoso.Web}\n"
    assert refused(text, dependent) == "t.yaml:7: reference cycle: T -> Contoso.Web -> T"


# -- names used by the pack --------------------------------------------------------------------

NAME_CASES = [
    pytest.param(
        "classes:\n  - id: T.X\n    base: Contoso.Base.WebServer\n",
        HEADER,
        "7: class Contoso.Base.WebServer is defined in pack Contoso.Base, which this pack does "
        "not reference (add it under 'references')",
        id="unreferenced-pack",
    ),
    pytest.param(
        "classes:\n  - id: T.X\n    base: System.Entty\n    host: System.Computer\n",
        HEADER,
        "7: unknown class System.Entty (did you mean System.Entity?)",
        id="unknown-class",
    ),
    pytest.param(
        "classes:\n  - id: T.X\n    base: System.Entity\n    host: T.Nowhere\n",
        HEADER,
        "8: unknown class T.Nowhere",
        id="unknown-host",
    ),
    pytest.param(
        "classes:\n  - id: Contoso.Base.Service\n    base: System.Entity\n"
        "    host: System.Computer\n",
        HEADER,
        "6: class Contoso.Base.Service is already defined by pack Contoso.Base",
        id="id-of-another-pack",
    ),
    pytest.param(
        "profiles:\n  - {id: System.SqlProfile, display_name: P}\n",
        HEADER,
        "6: profile id System.SqlProfile: ids starting with 'System.' are reserved for the "
        "built-in pack runas.system",
        id="reserved-namespace",
    ),
    pytest.param(
        "profiles:\n  - id: T.P\n    display_name: P\n    context_class: Contoso.SQL.Instance\n",
        HEADER,
        "8: unknown class Contoso.SQL.Instance",
        id="unknown-context-class",
    ),
]


@pytest.mark.parametrize(("body", "header", "expected"), NAME_CASES)
def test_names_must_be_visible(body: str, header: str, expected: str) -> None:
    assert refused(header + body) == f"t.yaml:{expected}"


# -- classes -----------------------------------------------------------------------------------

CLASS_CASES = [
    pytest.param(
        """\
        classes:
          - id: T.A
            base: T.B
            abstract: true
          - id: T.B
            base: T.A
            abstract: true
        """,
        "7: inheritance cycle: T.A -> T.B -> T.A",
        id="inheritance-cycle",
    ),
    pytest.param(
        """\
        classes:
          - id: T.A
            base: T.A
            abstract: true
        """,
        "7: inheritance cycle: T.A -> T.A",
        id="own-base",
    ),
    pytest.param(
        """\
        classes:
          - id: T.Root
            base: System.Entity
            host: System.Computer
          - id: T.A
            base: System.Entity
            host: T.B
          - id: T.B
            base: System.Entity
            host: T.A
        """,
        "11: hosting cycle: T.A -> T.B -> T.A",
        id="hosting-cycle",
    ),
    pytest.param(
        """\
        classes:
          - id: T.Service
            base: System.Entity
        """,
        "6: concrete class T.Service has no host: give it a 'host' (the class of the object "
        "it lives on) or derive it from System.Computer",
        id="concrete-without-host",
    ),
    pytest.param(
        """\
        classes:
          - id: T.Server
            base: System.Computer
            host: System.Computer
        """,
        "8: class T.Server derives from System.Computer and cannot have a host (computers are "
        "the roots of hosting)",
        id="computer-with-host",
    ),
    pytest.param(
        """\
        classes:
          - id: T.Thing
            base: System.Entity
            host: System.Entity
        """,
        "8: class T.Thing cannot be hosted by System.Entity: a host class must derive from "
        "System.Computer or be hosted itself",
        id="host-that-lives-nowhere",
    ),
    pytest.param(
        """\
        classes:
          - id: T.Instance
            base: System.Entity
            host: System.Computer
          - id: T.Database
            base: System.Entity
            host: T.Instance
          - id: T.Special
            base: T.Database
            host: System.Computer
        """,
        "14: class T.Special is hosted by System.Computer, but its base T.Database is hosted "
        "by T.Instance: a derived class may only narrow its host to a class derived from "
        "T.Instance",
        id="host-not-narrowed",
    ),
    pytest.param(
        """\
        classes:
          - id: T.Server
            base: System.Computer
            key_properties: [name]
        """,
        "8: key property 'name' of class T.Server is already declared by its ancestor "
        "System.Computer",
        id="key-clashes-with-inherited",
    ),
    pytest.param(
        """\
        classes:
          - id: T.Server
            base: System.Computer
            properties:
              - role
              - os
        """,
        "10: property 'os' of class T.Server is already declared by its ancestor System.Computer",
        id="property-clashes-with-inherited",
    ),
]


@pytest.mark.parametrize(("body", "expected"), CLASS_CASES)
def test_classes_are_checked(body: str, expected: str) -> None:
    assert refused(HEADER + dedent(body)) == f"t.yaml:{expected}"


def test_hosting_rules_accept_sensible_classes() -> None:
    check(
        HEADER
        + dedent(
            """\
            classes:
              - id: T.Server
                base: System.Computer          # a computer: no host
              - id: T.Base
                base: System.Entity
                abstract: true                 # abstract: may have no host
              - id: T.Instance
                base: T.Base
                host: T.Server
              - id: T.Database
                base: System.Entity
                host: T.Instance               # hosted by a hosted class
              - id: T.Narrow
                base: T.Database
                host: T.Instance               # same host as its base
            """
        )
    )


# -- groups ------------------------------------------------------------------------------------

GROUP_CASES = [
    pytest.param(
        """\
        groups:
          - id: T.G
            rules:
              - class: System.Computer
                where:
                  - {property: os, op: equals, value: linux}
                  - {property: domian, op: equals, value: corp}
        """,
        "11: class System.Computer has no property 'domian' (did you mean 'domain'?); its "
        "properties: name, domain, os, ip_address, management_server",
        id="condition-property-typo",
    ),
    pytest.param(
        """\
        groups:
          - id: T.G
            rules:
              - class: System.Computers
        """,
        "8: unknown class System.Computers (did you mean System.Computer?)",
        id="rule-class-unknown",
    ),
    pytest.param(
        """\
        groups:
          - id: T.G
            members:
              - "System.Computer:a.contoso.com"
              - "Contoso.SQL.Instance:a.contoso.com;X"
        """,
        "9: unknown class Contoso.SQL.Instance",
        id="member-class-unknown",
    ),
    pytest.param(
        """\
        groups:
          - id: T.G
            members: ["System.Entity:a.contoso.com"]
        """,
        "7: explicit member System.Entity:a.contoso.com names the abstract class "
        "System.Entity: an object is always of a concrete class",
        id="member-of-abstract-class",
    ),
    pytest.param(
        """\
        groups:
          - id: T.G
            include: [T.H]
        """,
        "7: unknown group T.H (did you mean T.G?)",
        id="include-unknown",
    ),
    pytest.param(
        """\
        groups:
          - id: T.A
            include: [T.B]
          - id: T.B
            include: [T.C]
          - id: T.C
            include:
              - T.A
        """,
        "7: group cycle: T.A -> T.B -> T.C -> T.A",
        id="group-cycle",
    ),
    pytest.param(
        """\
        groups:
          - id: T.A
            include: [T.A]
        """,
        "7: group cycle: T.A -> T.A",
        id="group-includes-itself",
    ),
]


@pytest.mark.parametrize(("body", "expected"), GROUP_CASES)
def test_groups_are_checked(body: str, expected: str) -> None:
    assert refused(HEADER + dedent(body)) == f"t.yaml:{expected}"


def test_group_cycle_through_another_pack() -> None:
    # only reachable when stored packs disagree with their references; the check still holds
    other = PackDef(
        id="Contoso.Other",
        version="1.0.0",
        display_name="O",
        groups=(
            GroupDef(
                id="Contoso.Other.G", display_name="G", includes=("T.G",), pack="Contoso.Other"
            ),
        ),
    )
    text = HEADER + dedent(
        """\
          references:
            - {id: Contoso.Other}
        groups:
          - id: T.G
            include: [Contoso.Other.G]
        """
    )
    assert refused(text, other) == "t.yaml:9: group cycle: T.G -> Contoso.Other.G -> T.G"


# -- workflows ---------------------------------------------------------------------------------

WORKFLOW_CASES = [
    pytest.param(
        "    target: T.Nothing\n",
        "10: unknown class T.Nothing",
        id="target-unknown",
    ),
    pytest.param(
        "    target: System.Computer\n    profile: T.Missing\n",
        "11: unknown profile T.Missing",
        id="profile-unknown",
    ),
    pytest.param(
        "    target: System.Computer\n    profile: System.DefaultActionAccount\n",
        "11: workflow T.W names System.DefaultActionAccount: omit 'profile' to run as the "
        "default action account",
        id="default-action-account",
    ),
    pytest.param(
        "    target: System.Computer\n    profile: Contoso.Base.InternalProfile\n",
        "11: profile Contoso.Base.InternalProfile is internal to pack Contoso.Base: only its "
        "own workflows may use it",
        id="internal-profile-of-another-pack",
    ),
]


@pytest.mark.parametrize(("fields", "expected"), WORKFLOW_CASES)
def test_workflows_are_checked(fields: str, expected: str) -> None:
    text = (
        HEADER_WITH_BASE
        + "workflows:\n  - id: T.W\n    kind: task\n"
        + fields
        + "    probe: {type: command}\n"
    )
    assert refused(text) == f"t.yaml:{expected}"


def test_a_workflow_may_use_an_internal_profile_of_its_own_pack() -> None:
    check(
        HEADER
        + dedent(
            """\
            profiles:
              - {id: T.P, display_name: P, accessibility: internal}
            workflows:
              - {id: T.W, kind: task, target: System.Computer, profile: T.P, probe: {type: command}}
            """
        )
    )


# -- probes and the account types they accept ---------------------------------------------------


def _probe_pack(probe: str, allowed: str | None, *, kind: str = "task", extra: str = "") -> str:
    types = f", allowed_account_types: [{allowed}]" if allowed else ""
    return (
        HEADER
        + dedent(
            f"""\
        profiles:
          - {{id: T.P, display_name: P{types}}}
        workflows:
          - id: T.W
            kind: {kind}
            target: System.Computer
            profile: T.P
            probe: {{type: {probe}}}
        """
        )
        + extra
    )


@pytest.mark.parametrize(
    ("probe", "allowed"),
    [
        ("snmp", "community-string, snmpv3"),
        ("sql", "windows, simple"),
        ("ssh", "unix-monitoring"),
        ("command", None),
        ("command", "binary"),
    ],
)
def test_a_probe_may_use_a_profile_whose_types_it_accepts(probe: str, allowed: str | None) -> None:
    check(_probe_pack(probe, allowed))


@pytest.mark.parametrize(
    ("probe", "allowed", "unusable", "allows"),
    [
        ("snmp", "community-string, windows", "windows", "community-string, windows"),
        ("ldap", None, "action, basic, digest, binary", "every account type"),
        ("http", "basic, unix-maintenance", "unix-maintenance", "basic, unix-maintenance"),
    ],
)
def test_a_probe_wired_to_a_profile_allowing_types_it_cannot_use_is_refused(
    probe: str, allowed: str | None, unusable: str, allows: str
) -> None:
    message = refused(_probe_pack(probe, allowed))
    assert message.startswith("t.yaml:11: workflow T.W uses the ")
    assert f"{probe} probe, which cannot use {unusable}" in message
    assert f"its profile T.P allows {allows}: restrict the profile's allowed_account_types" in (
        message
    )


def test_a_probe_type_no_agent_runs_is_refused() -> None:
    message = refused(_probe_pack("powershell", None))
    assert message == (
        "t.yaml:12: workflow T.W uses probe type 'powershell', which no agent runs "
        "(probe types: command, http, ldap, snmp, sql, ssh)"
    )


def test_a_discovery_names_the_classes_it_discovers() -> None:
    pack = HEADER + dedent(
        """\
        workflows:
          - id: T.D
            kind: discovery
            target: System.Computer
            discovers: [System.Computer]
            schedule: {interval: 1h}
            probe: {type: command}
        """
    )
    check(pack)
    assert load_pack_text(pack, "t.yaml").pack.workflows[0].discovers == ("System.Computer",)
    assert refused(pack.replace("[System.Computer]", "[T.Nothing]")) == (
        "t.yaml:9: unknown class T.Nothing"
    )
    monitor = pack.replace("kind: discovery", "kind: monitor")
    with pytest.raises(PackError, match="only discoveries have 'discovers'"):
        load_pack_text(monitor, "t.yaml")
