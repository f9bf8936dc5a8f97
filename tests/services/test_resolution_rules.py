"""The resolution rules of domain.md §5 and the worked examples of §12, through the real CLI on
SQLite and PostgreSQL.

Each test imports a small pack of its own (a three-level class hierarchy hosted on computers,
groups by explicit member, by rule and by nesting, profiles with and without fallback) and a
discovery payload, then asks ``explain`` and ``config show`` what runs as whom.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from support.cli import Cli

#: the same tests, in-process and as the client of a real server
pytestmark = pytest.mark.cli_modes("local", "remote")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

PACK = """\
pack:
  id: T
  version: 1.0.0
  display_name: Resolution test pack
classes:
  - {id: T.Base, base: System.Entity, host: System.Computer, key_properties: [name],
     properties: [env, port]}
  - {id: T.Mid, base: T.Base}
  - {id: T.Leaf, base: T.Mid}
  - {id: T.Other, base: System.Entity, host: System.Computer, key_properties: [name]}
groups:
  - id: T.Explicit
    members: ["T.Leaf:s1.t.test;leaf"]
  - id: T.Prod
    rules:
      - class: T.Base
        where:
          - {property: env, op: equals, value: prod}
  - id: T.Inner
    members: ["T.Mid:s2.t.test;mid"]
  - id: T.Middle
    include: [T.Inner]
  - id: T.Outer
    include: [T.Middle]
profiles:
  - {id: T.P, display_name: Main profile, context_class: T.Base}
  - {id: T.P2, display_name: Second profile}
  - {id: T.Strict, display_name: Cannot fall back, fallback: false}
workflows:
  - {id: T.W.Base, kind: rule, display_name: base rule, target: T.Base, profile: T.P,
     schedule: {interval: 5m}, probe: {type: command, config: {program: check}}}
  - {id: T.W.Leaf, kind: monitor, display_name: leaf monitor, target: T.Leaf, profile: T.P2,
     schedule: {interval: 5m}, probe: {type: command, config: {program: check}}}
  - {id: T.W.Strict, kind: rule, display_name: strict rule, target: T.Base, profile: T.Strict,
     schedule: {interval: 5m}, probe: {type: command, config: {program: check}}}
  - {id: T.W.Plain, kind: rule, display_name: no profile, target: T.Base,
     schedule: {interval: 5m}, probe: {type: command, config: {program: check}}}
"""

S1, S2, S3 = "s1.t.test", "s2.t.test", "s3.t.test"
LEAF = f"T.Leaf:{S1};leaf"
OTHER = f"T.Other:{S1};other"
MID = f"T.Mid:{S2};mid"
BASE = f"T.Base:{S2};base"
OTHER3 = f"T.Other:{S3};other3"
COMPUTER1 = f"System.Computer:{S1}"

#: s1 hosts a Leaf (env prod) and an Other; s2 a Mid (env test) and a Base (no env);
#: s3 only an Other (a class no workflow of T.P targets).
DISCOVERY: list[dict[str, Any]] = [
    {"class": "System.Computer", "key": {"name": S1}},
    {"class": "System.Computer", "key": {"name": S2}},
    {"class": "System.Computer", "key": {"name": S3}},
    {"class": "T.Leaf", "host": COMPUTER1, "key": {"name": "leaf"},
     "properties": {"env": "prod", "port": 1433}},
    {"class": "T.Other", "host": COMPUTER1, "key": {"name": "other"}},
    {"class": "T.Mid", "host": f"System.Computer:{S2}", "key": {"name": "mid"},
     "properties": {"env": "test"}},
    {"class": "T.Base", "host": f"System.Computer:{S2}", "key": {"name": "base"}},
    {"class": "T.Other", "host": f"System.Computer:{S3}", "key": {"name": "other3"}},
]  # fmt: skip


class World:
    """The CLI on a management group holding the test pack, with short-hands for the commands
    the rules are exercised through."""

    def __init__(self, cli: Cli, tmp_path: Path) -> None:
        self.cli = cli
        self.tmp = tmp_path
        self._files = 0

    def file(self, text: str, suffix: str = ".yaml") -> str:
        self._files += 1
        path = self.tmp / f"input-{self._files}{suffix}"
        path.write_text(text, encoding="utf-8")
        return str(path)

    def import_pack(self, text: str = PACK) -> None:
        self.cli.ok("pack", "import", self.file(text))

    def discover(self, objects: list[dict[str, Any]], source: str = "T.Discovery") -> None:
        payload = json.dumps({"source": source, "objects": objects})
        self.cli.ok("discovery", "submit", self.file(payload, ".json"))

    def account(self, name: str, *, type: str = "windows", user: str | None = None) -> None:
        args = ["account", "add", name, "--type", type, "--user", user or name.lower()]
        if type == "windows":
            args += ["--domain", "t.test"]
        self.cli.ok(*args, "--stdin", stdin=f"secret of {name}\n")

    def associate(self, profile: str, account: str, *target: str) -> int:
        out = self.cli.ok("profile", "associate", profile, account, *target, "--json").out
        assoc_id: int = json.loads(out)["id"]
        return assoc_id

    def distribute(self, account: str, *computers: str) -> None:
        args = [a for c in computers for a in ("--computer", c)]
        self.cli.ok("distribution", "set", account, "--more-secure", *args)

    def explain(self, obj: str, *, workflow: str | None = None, profile: str | None = None) -> Any:
        which = ["--workflow", workflow] if workflow else ["--profile", profile or ""]
        return json.loads(self.cli.ok("explain", *which, "--object", obj, "--json").out)

    def explain_text(
        self, obj: str, *, workflow: str | None = None, profile: str | None = None
    ) -> str:
        which = ["--workflow", workflow] if workflow else ["--profile", profile or ""]
        return self.cli.ok("explain", *which, "--object", obj).out

    def object_id(self, full_name: str) -> int:
        object_id: int = json.loads(self.cli.ok("object", "show", full_name, "--json").out)["id"]
        return object_id

    def config(self, computer: str) -> Any:
        return json.loads(self.cli.ok("config", "show", computer, "--json").out)

    def runs_as(self, obj: str, workflow: str = "T.W.Base") -> str | None:
        """The account ``workflow`` runs as for ``obj``; fails unless it runs as a profile
        account that is distributed."""
        doc = self.explain(obj, workflow=workflow)
        assert doc["outcome"] == "account", doc["steps"]
        assert doc["distributed"] is True
        name: str = doc["account"]["name"]
        return name


@pytest.fixture
def world(cli: Cli, tmp_path: Path) -> World:
    w = World(cli, tmp_path)
    w.import_pack()
    w.discover(DISCOVERY)
    return w


def by_account(doc: Any) -> dict[str, dict[str, Any]]:
    """Candidates of an explain document by account name (one association per account)."""
    out = {c["account"]: c for c in doc["candidates"]}
    assert len(out) == len(doc["candidates"])
    return out


def less_secure_all(w: World, *accounts: str) -> None:
    for a in accounts:
        w.cli.ok("distribution", "set", a, "--less-secure")


# -- rule 2: precedence --------------------------------------------------------------------------


def test_enforced_association_beats_non_enforced_of_higher_rank(world: World) -> None:
    world.account("Enforced")
    world.account("Specific")
    less_secure_all(world, "Enforced", "Specific")
    enforced = world.associate("T.P", "Enforced", "--all", "--enforced")
    world.associate("T.P", "Specific", "--object", LEAF)

    doc = world.explain(LEAF, workflow="T.W.Base")
    assert doc["outcome"] == "account"
    assert doc["account"]["name"] == "Enforced"
    cands = by_account(doc)
    assert cands["Enforced"]["status"] == "winner"
    assert cands["Specific"]["status"] == "lost"
    assert cands["Specific"]["reason"] == (f"not enforced, and association #{enforced} is enforced")


def test_object_beats_group_beats_class_beats_all(world: World) -> None:
    """Each new association is one target kind above the previous winner and takes over."""
    ladder = [
        ("All", ("--all",)),
        ("Klass", ("--class", "T.Base")),
        ("Group", ("--group", "T.Prod")),
        ("Object", ("--object", LEAF)),
    ]
    previous: str | None = None
    for name, target in ladder:
        world.account(name)
        less_secure_all(world, name)
        world.associate("T.P", name, *target)
        doc = world.explain(LEAF, workflow="T.W.Base")
        assert doc["outcome"] == "account"
        assert doc["account"]["name"] == name
        if previous is not None:
            loser = by_account(doc)[previous]
            assert loser["covers"] is True
            assert loser["status"] == "lost"
            assert "outranks" in loser["reason"]
        previous = name

    # A lower target still decides for objects the higher ones do not cover: the Mid on s2
    # is no member of T.Prod (env test), so the class association wins there.
    assert world.runs_as(MID) == "Klass"
    # ...and T.Base:s2;base is only an instance of T.Base too.
    assert world.runs_as(BASE) == "Klass"


def test_most_derived_class_wins(world: World) -> None:
    for name in ("OnBase", "OnMid", "OnLeaf"):
        world.account(name)
    less_secure_all(world, "OnBase", "OnMid", "OnLeaf")
    world.associate("T.P", "OnBase", "--class", "T.Base")
    assert world.runs_as(LEAF) == "OnBase"
    on_mid = world.associate("T.P", "OnMid", "--class", "T.Mid")
    assert world.runs_as(LEAF) == "OnMid"
    on_leaf = world.associate("T.P", "OnLeaf", "--class", "T.Leaf")

    doc = world.explain(LEAF, workflow="T.W.Base")
    assert doc["account"]["name"] == "OnLeaf"
    cands = by_account(doc)
    assert cands["OnLeaf"]["coverage"] == "instance of T.Leaf"
    assert cands["OnMid"]["coverage"] == "T.Leaf derives from T.Mid"
    assert cands["OnMid"]["reason"] == f"class T.Leaf (#{on_leaf}) is more derived than T.Mid"
    assert cands["OnBase"]["reason"] == f"class T.Leaf (#{on_leaf}) is more derived than T.Base"

    # The Mid object is not a Leaf: the Leaf association does not apply, the Mid one wins.
    doc = world.explain(MID, workflow="T.W.Base")
    assert doc["account"]["name"] == "OnMid"
    cands = by_account(doc)
    assert cands["OnLeaf"]["covers"] is False
    assert cands["OnLeaf"]["status"] == "not-applicable"
    assert cands["OnBase"]["reason"] == f"class T.Mid (#{on_mid}) is more derived than T.Base"
    assert world.runs_as(BASE) == "OnBase"


# -- rule 1: group membership --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "member", "coverage", "outsider"),
    [
        pytest.param("T.Explicit", LEAF, "member of T.Explicit (explicit member)", MID,
                     id="explicit"),
        pytest.param("T.Prod", LEAF,
                     "member of T.Prod (rule 1: instances of T.Base where env equals 'prod')",
                     MID, id="rule"),
        pytest.param("T.Outer", MID,
                     "member of T.Outer through nested T.Middle > T.Inner (explicit member)",
                     LEAF, id="nested"),
    ],
)  # fmt: skip
def test_group_membership_covers(
    world: World, group: str, member: str, coverage: str, outsider: str
) -> None:
    world.account("G")
    world.account("Fallback")
    less_secure_all(world, "G", "Fallback")
    world.associate("T.P", "G", "--group", group)
    world.associate("T.P", "Fallback", "--class", "T.Base")

    doc = world.explain(member, workflow="T.W.Base")
    assert doc["account"]["name"] == "G"
    assert by_account(doc)["G"]["coverage"] == coverage

    doc = world.explain(outsider, workflow="T.W.Base")
    assert doc["account"]["name"] == "Fallback"
    assert by_account(doc)["G"]["covers"] is False
    assert by_account(doc)["G"]["coverage"] == f"not a member of {group}"


# -- rule 3: conflict ----------------------------------------------------------------------------


def test_two_accounts_at_the_same_rank_conflict(world: World) -> None:
    world.account("One")
    world.account("Two")
    less_secure_all(world, "One", "Two")
    one = world.associate("T.P", "One", "--class", "T.Base")
    two = world.associate("T.P", "Two", "--class", "T.Base")

    doc = world.explain(LEAF, workflow="T.W.Base")
    assert doc["outcome"] == "conflict"
    assert doc["runs"] is False
    assert doc["account"] is None
    assert {(c["association"], c["account"]) for c in doc["conflicting"]} == {
        (one, "One"),
        (two, "Two"),
    }
    assert {c["status"] for c in doc["candidates"]} == {"conflict"}
    assert f"conflict: #{one} One, #{two} Two have the same rank" in "\n".join(doc["steps"])
    assert "DOES NOT RUN (conflict)" in world.explain_text(LEAF, workflow="T.W.Base")

    config = world.config(S1)
    problems = [p for p in config["problems"] if p["workflow"] == "T.W.Base"]
    assert len(problems) == 1
    assert problems[0]["object"] == LEAF
    assert problems[0]["outcome"] == "conflict"
    assert problems[0]["detail"] == f"conflict: #{one} One, #{two} Two"
    # Neither secret is sent for a workflow that does not run.
    assert {a["name"]: a["receives_secret"] for a in config["accounts"]} == {
        "One": False,
        "Two": False,
    }

    # A more specific association ends the conflict.
    world.associate("T.P", "One", "--object", LEAF)
    assert world.runs_as(LEAF) == "One"


def test_same_account_twice_at_the_same_rank_is_no_conflict(world: World) -> None:
    world.account("Same")
    less_secure_all(world, "Same")
    first = world.associate("T.P", "Same", "--group", "T.Explicit")
    second = world.associate("T.P", "Same", "--group", "T.Prod")

    doc = world.explain(LEAF, workflow="T.W.Base")
    assert doc["outcome"] == "account"
    assert doc["account"]["name"] == "Same"
    assert doc["conflicting"] == []
    status = {c["association"]: c["status"] for c in doc["candidates"]}
    assert status == {first: "winner", second: "tied"}
    assert not [p for p in world.config(S1)["problems"] if p["workflow"] == "T.W.Base"]


# -- rule 4: fallback ----------------------------------------------------------------------------


def test_no_candidate_falls_back_to_the_default_action_account(world: World) -> None:
    doc = world.explain(LEAF, workflow="T.W.Base")
    assert doc["outcome"] == "action-account"
    assert doc["runs"] is True
    assert doc["fallback"] is True
    assert doc["account"] is None  # the agent's own identity
    assert "the agent's own identity" in world.explain_text(LEAF, workflow="T.W.Base")

    # An action account associated with the Default Action Account profile for s1.
    world.account("Act", type="action", user="svc-act")
    world.associate("System.DefaultActionAccount", "Act", "--object", COMPUTER1)
    # It must itself be distributed to s1 before anything runs as it.
    doc = world.explain(LEAF, workflow="T.W.Base")
    assert doc["outcome"] == "not-distributed"
    assert doc["account"]["name"] == "Act"
    assert doc["runs"] is False

    world.distribute("Act", S1)
    for workflow, fallback in (("T.W.Base", True), ("T.W.Plain", False)):
        doc = world.explain(LEAF, workflow=workflow)
        assert doc["outcome"] == "action-account"
        assert doc["fallback"] is fallback
        assert doc["account"]["name"] == "Act"
        assert doc["account"]["type"] == "action"
        assert doc["distributed"] is True
    # Only s1's action account changed: s2 still runs as the agent's own identity.
    doc = world.explain(MID, workflow="T.W.Plain")
    assert doc["outcome"] == "action-account"
    assert doc["account"] is None

    config = world.config(S1)
    plain = [e for e in config["entries"] if e["workflow"] == "T.W.Plain" and e["object"] == LEAF]
    assert plain[0]["account"] == "Act"
    assert {a["name"]: a["receives_secret"] for a in config["accounts"]} == {"Act": True}


def test_profile_without_fallback_is_unresolved(world: World) -> None:
    doc = world.explain(LEAF, workflow="T.W.Strict")
    assert doc["outcome"] == "unresolved"
    assert doc["runs"] is False
    assert doc["account"] is None
    assert "DOES NOT RUN (no account, no fallback)" in world.explain_text(
        LEAF, workflow="T.W.Strict"
    )
    problems = {(p["workflow"], p["object"]): p for p in world.config(S1)["problems"]}
    assert problems[("T.W.Strict", LEAF)]["outcome"] == "unresolved"
    # The workflows of the same object that can fall back do run.
    assert ("T.W.Base", LEAF) not in problems

    world.account("Unix", type="simple")
    less_secure_all(world, "Unix")
    world.associate("T.Strict", "Unix")
    assert world.runs_as(LEAF, "T.W.Strict") == "Unix"


# -- rule 5: distribution ------------------------------------------------------------------------


def test_winner_not_distributed_does_not_run_and_explain_names_the_fix(world: World) -> None:
    world.account("A")
    world.associate("T.P", "A", "--class", "T.Base")

    doc = world.explain(LEAF, workflow="T.W.Base")
    assert doc["outcome"] == "not-distributed"
    assert doc["runs"] is False
    assert doc["distributed"] is False
    assert doc["account"]["name"] == "A"
    steps = "\n".join(doc["steps"])
    assert f"distribution: more secure, and {S1} is NOT approved" in steps
    assert "credentials not found: an account specified in the Run As profile T.P" in steps
    assert f'runas distribution set "A" --more-secure --add {S1}' in steps
    assert "DOES NOT RUN (credentials not found)" in world.explain_text(LEAF, workflow="T.W.Base")
    problems = {(p["workflow"], p["object"]): p for p in world.config(S1)["problems"]}
    assert problems[("T.W.Base", LEAF)]["detail"] == (
        f"credentials not found: A is not distributed to {S1}"
    )

    # Approved for s1 only: s1 runs, s2 still does not.
    world.distribute("A", S1)
    assert world.runs_as(LEAF) == "A"
    assert world.explain(MID, workflow="T.W.Base")["outcome"] == "not-distributed"

    # Less secure: distributed to every computer.
    world.cli.ok("distribution", "set", "A", "--less-secure")
    for obj in (LEAF, MID, BASE):
        assert world.runs_as(obj) == "A"
    assert {a["name"] for a in world.config(S3)["accounts"]} == {"A"}


# -- rule 6: profiles are not cumulative ---------------------------------------------------------


def test_profiles_are_not_cumulative(world: World) -> None:
    world.account("Admin")
    less_secure_all(world, "Admin")
    world.associate("T.P", "Admin", "--object", LEAF, "--enforced")
    assert world.runs_as(LEAF, "T.W.Base") == "Admin"

    # T.W.Leaf uses T.P2, which has no association: the T.P account says nothing about it.
    doc = world.explain(LEAF, workflow="T.W.Leaf")
    assert doc["profile"] == "T.P2"
    assert doc["outcome"] == "action-account"
    assert doc["fallback"] is True
    assert doc["candidates"] == []
    assert doc["account"] is None
    # Nor about the profile that cannot fall back.
    assert world.explain(LEAF, workflow="T.W.Strict")["outcome"] == "unresolved"


# -- rule 1: all targeted objects ----------------------------------------------------------------


def test_all_targeted_objects_covers_only_classes_the_profiles_workflows_target(
    world: World,
) -> None:
    world.account("Everything")
    less_secure_all(world, "Everything")
    world.associate("T.P2", "Everything", "--all")
    world.associate("T.P", "Everything", "--all")

    # T.P2's only workflow targets T.Leaf: the Leaf is covered, the Mid and Base are not.
    doc = world.explain(LEAF, profile="T.P2")
    assert doc["outcome"] == "account"
    assert doc["account"]["name"] == "Everything"
    assert doc["candidates"][0]["coverage"] == "targeted: the profile's workflows target T.Leaf"
    for obj in (MID, BASE):
        doc = world.explain(obj, profile="T.P2")
        assert doc["outcome"] == "action-account"
        assert doc["fallback"] is True
        cand = doc["candidates"][0]
        assert cand["covers"] is False
        assert cand["coverage"] == "no workflow of this profile targets this object's class"

    # T.P's workflows target T.Base: every Base, Mid and Leaf, never a T.Other.
    for obj in (LEAF, MID, BASE):
        assert world.explain(obj, profile="T.P")["account"]["name"] == "Everything"
    doc = world.explain(OTHER, profile="T.P")
    assert doc["candidates"][0]["covers"] is False
    assert doc["outcome"] == "action-account"


# -- object targets and rediscovery --------------------------------------------------------------


def test_object_association_survives_rediscovery_and_stops_when_the_object_goes(
    world: World,
) -> None:
    world.account("Obj")
    world.account("Cls")
    less_secure_all(world, "Obj", "Cls")
    first_id = world.object_id(LEAF)
    # Associated by id, stored by full name.
    world.associate("T.P", "Obj", "--object", str(first_id))
    world.associate("T.P", "Cls", "--class", "T.Base")
    assert world.runs_as(LEAF) == "Obj"

    # Discovered again, with changed properties: the association still holds.
    changed = [
        {**o, "properties": {"env": "test", "port": 2433}} if o["key"] == {"name": "leaf"} else o
        for o in DISCOVERY
    ]
    world.discover(changed)
    assert world.runs_as(LEAF) == "Obj"

    # The object disappears from discovery: it is removed, the association no longer matches.
    world.discover([o for o in DISCOVERY if o["key"] != {"name": "leaf"}])
    assert world.cli("explain", "--workflow", "T.W.Base", "--object", LEAF).code == 1
    shown = json.loads(world.cli.ok("profile", "show", "T.P", "--json").out)
    present = {a["account"]: a["target_present"] for a in shown["associations"]}
    assert present == {"Obj": False, "Cls": True}
    entries = {(e["workflow"], e["object"]) for e in world.config(S1)["entries"]}
    assert ("T.W.Base", LEAF) not in entries

    # Discovered anew (a new object row with the same full name): the association applies again.
    world.discover(DISCOVERY)
    assert world.object_id(LEAF) != first_id
    assert world.runs_as(LEAF) == "Obj"
    shown = json.loads(world.cli.ok("profile", "show", "T.P", "--json").out)
    assert all(a["target_present"] for a in shown["associations"])


# -- explain by profile and in words ------------------------------------------------------------


def test_explain_by_profile_and_by_workflow_agree(world: World) -> None:
    world.account("Winner")
    world.account("Loser")
    less_secure_all(world, "Winner", "Loser")
    winner = world.associate("T.P", "Winner", "--group", "T.Prod")
    loser = world.associate("T.P", "Loser", "--class", "T.Mid")

    by_workflow = world.explain(LEAF, workflow="T.W.Base")
    by_profile = world.explain(LEAF, profile="T.P")
    assert by_workflow["workflow"] == "T.W.Base"
    assert by_profile["workflow"] is None
    for doc in (by_workflow, by_profile):
        assert doc["profile"] == "T.P"
        assert doc["outcome"] == "account"
        assert doc["account"]["name"] == "Winner"
        assert doc["candidates"] == by_workflow["candidates"]

    text = world.explain_text(LEAF, profile="T.P")
    assert f"#{winner} Winner -> group T.Prod: applies (" in text
    assert "; wins" in text
    assert (
        f"#{loser} Loser -> class T.Mid: applies (T.Leaf derives from T.Mid); lost: "
        f"a group target (#{winner}) outranks a class target"
    ) in text
    assert f"=> RUNS AS Winner (windows, t.test\\winner, secret version 1) on {S1}" in text

    # A workflow that does not target the object's class is refused in one line.
    error = world.cli.fails("explain", "--workflow", "T.W.Leaf", "--object", MID)
    assert "targets T.Leaf" in error
    assert "never runs for it" in error


# -- distribution suggestions --------------------------------------------------------------------


def test_distribution_suggest_lists_exactly_the_computers_that_need_the_account(
    world: World,
) -> None:
    world.account("Wide")
    world.account("Narrow")
    world.associate("T.P", "Wide", "--all")
    world.associate("T.P", "Narrow", "--object", LEAF)

    # Wide resolves on s2 (Mid and Base); on s1 Narrow wins; s3 hosts nothing T.P targets.
    doc = json.loads(world.cli.ok("distribution", "suggest", "Wide", "--json").out)
    assert doc["suggestions"] == [
        {"computer": S2, "objects": [BASE, MID], "profiles": ["T.P"]},
    ]
    doc = json.loads(world.cli.ok("distribution", "suggest", "Narrow", "--json").out)
    assert [s["computer"] for s in doc["suggestions"]] == [S1]

    # Suggesting changes nothing.
    assert world.explain(MID, workflow="T.W.Base")["outcome"] == "not-distributed"

    applied = json.loads(world.cli.ok("distribution", "suggest", "Wide", "--apply", "--json").out)
    assert applied["applied"] is True
    got = json.loads(world.cli.ok("distribution", "get", "Wide", "--json").out)
    assert got["computers"] == [S2]
    assert world.runs_as(MID) == "Wide"
    assert world.runs_as(BASE) == "Wide"
    after = json.loads(world.cli.ok("distribution", "suggest", "Wide", "--json").out)
    assert after["suggestions"] == []
    assert after["applied"] is False

    # An already approved computer is never suggested again.
    world.distribute("Narrow", S1)
    doc = json.loads(world.cli.ok("distribution", "suggest", "Narrow", "--json").out)
    assert doc["suggestions"] == []


# -- worked examples (domain.md §12) -------------------------------------------------------------

SQL_PROFILE = "Contoso.SQL.MonitoringProfile"
SQL_WORKFLOWS = (
    "Contoso.SQL.DatabaseDiscovery",
    "Contoso.SQL.CollectConnections",
    "Contoso.SQL.InstanceAvailability",
)


def _sql_objects(layout: dict[str, list[str]]) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = [
        {"class": "System.Computer", "key": {"name": c}} for c in layout
    ]
    for computer, instances in layout.items():
        objects.extend(
            {
                "class": "Contoso.SQL.Instance",
                "host": f"System.Computer:{computer}",
                "key": {"instance": i},
                "properties": {"environment": "production", "port": 1433},
            }
            for i in instances
        )
    return objects


def test_example_1_each_computer_receives_only_its_account(cli: Cli, tmp_path: Path) -> None:
    """The seeds' example (also in tests/cli/test_smoke_cli.py), seen from the agents."""
    w = World(cli, tmp_path)
    cli.ok("pack", "import", str(EXAMPLES / "packs" / "contoso-sql.yaml"))
    cli.ok("discovery", "submit", str(EXAMPLES / "discovery" / "contoso-sql.yaml"))
    for n in (1, 2, 3):
        w.account(f"SQL account {n}")
    w.associate(
        SQL_PROFILE, "SQL account 1", "--object", "Contoso.SQL.Instance:a.contoso.com;MSSQLSERVER"
    )
    w.associate(SQL_PROFILE, "SQL account 2", "--group", "Contoso.SQL.ProductionInstances")
    w.associate(SQL_PROFILE, "SQL account 3")
    expected = {"a": "SQL account 1", "b": "SQL account 2", "c": "SQL account 2",
                "d": "SQL account 3"}  # fmt: skip
    # Nothing is distributed yet: suggest proposes exactly the computers of the example.
    for n, computers in ((1, ["a"]), (2, ["b", "c"]), (3, ["d"])):
        doc = json.loads(
            cli.ok("distribution", "suggest", f"SQL account {n}", "--apply", "--json").out
        )
        assert [s["computer"] for s in doc["suggestions"]] == [
            f"{c}.contoso.com" for c in computers
        ]
    for computer, account in expected.items():
        config = w.config(f"{computer}.contoso.com")
        assert config["problems"] == []
        assert {e["account"] for e in config["entries"] if e["profile"] == SQL_PROFILE} == {account}
        assert [(a["name"], a["receives_secret"]) for a in config["accounts"]] == [(account, True)]


def test_example_2_one_computer_two_instances_two_accounts(cli: Cli, tmp_path: Path) -> None:
    w = World(cli, tmp_path)
    cli.ok("pack", "import", str(EXAMPLES / "packs" / "contoso-sql.yaml"))
    abc = "abc.contoso.com"
    w.discover(_sql_objects({abc: ["X", "Y"]}), source="Contoso.SQL.InstanceDiscovery")
    for inst in ("X", "Y"):
        w.account(f"sa {inst}", type="simple", user="sa")
        w.associate(SQL_PROFILE, f"sa {inst}", "--object", f"Contoso.SQL.Instance:{abc};{inst}")
        w.distribute(f"sa {inst}", abc)

    for workflow in SQL_WORKFLOWS:
        for inst in ("X", "Y"):
            doc = w.explain(f"Contoso.SQL.Instance:{abc};{inst}", workflow=workflow)
            assert doc["outcome"] == "account"
            assert doc["account"]["name"] == f"sa {inst}"
            assert doc["distributed"] is True

    config = w.config(abc)
    assert config["problems"] == []
    runs = {
        (e["workflow"], e["object"]): e["account"]
        for e in config["entries"]
        if e["profile"] == SQL_PROFILE
    }
    assert runs == {
        (wf, f"Contoso.SQL.Instance:{abc};{i}"): f"sa {i}" for wf in SQL_WORKFLOWS for i in "XY"
    }
    assert {a["name"]: a["receives_secret"] for a in config["accounts"]} == {
        "sa X": True,
        "sa Y": True,
    }


def test_example_3_two_servers_each_with_its_own_account(cli: Cli, tmp_path: Path) -> None:
    w = World(cli, tmp_path)
    cli.ok("pack", "import", str(EXAMPLES / "packs" / "contoso-sql.yaml"))
    servers = {"s1.contoso.com": "sql S1", "s2.contoso.com": "sql S2"}
    w.discover(
        _sql_objects({s: ["MSSQLSERVER"] for s in servers}), source="Contoso.SQL.InstanceDiscovery"
    )
    for server, account in servers.items():
        w.account(account)
        w.associate(SQL_PROFILE, account, "--object", f"Contoso.SQL.Instance:{server};MSSQLSERVER")
        w.distribute(account, server)

    for server, account in servers.items():
        for workflow in SQL_WORKFLOWS:
            doc = w.explain(f"Contoso.SQL.Instance:{server};MSSQLSERVER", workflow=workflow)
            assert doc["outcome"] == "account"
            assert doc["account"]["name"] == account
        config = w.config(server)
        assert config["problems"] == []
        # Each server receives its own account and only that one.
        assert [a["name"] for a in config["accounts"]] == [account]

    # Cross-check: S1's account is not distributed to S2. Were it targeted at S2's instance,
    # the workflow would not run there.
    got = json.loads(cli.ok("distribution", "get", "sql S1", "--json").out)
    assert got["computers"] == ["s1.contoso.com"]
    w.associate(
        SQL_PROFILE, "sql S1", "--object", "Contoso.SQL.Instance:s2.contoso.com;MSSQLSERVER"
    )
    doc = w.explain("Contoso.SQL.Instance:s2.contoso.com;MSSQLSERVER", workflow=SQL_WORKFLOWS[0])
    assert doc["outcome"] == "conflict"  # two accounts for the same object
    cli.ok("profile", "dissociate", SQL_PROFILE, "sql S2")
    doc = w.explain("Contoso.SQL.Instance:s2.contoso.com;MSSQLSERVER", workflow=SQL_WORKFLOWS[0])
    assert doc["outcome"] == "not-distributed"
    assert doc["account"]["name"] == "sql S1"
    assert doc["distributed"] is False
