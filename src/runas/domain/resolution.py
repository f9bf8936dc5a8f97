"""Resolution: which identity a workflow uses for an object, and why (domain.md §5).

This module is the contract. For a workflow W using profile P, running for object O hosted on
computer C:

1. candidates are P's associations whose target covers O (all targeted objects, a class O is
   an instance of, a group O is a member of, or O itself);
2. precedence: enforced before not enforced, then object > group > class > all, and among
   class targets the most derived class;
3. two different accounts left at the top rank are a conflict: W does not run for O;
4. no candidate: W runs as C's default action account, unless P cannot fall back;
5. the chosen account must be distributed to C, or W does not run for O;
6. profiles are not cumulative (only P's associations are looked at).

Every decision is recorded as a step so ``explain`` can show the whole chain. Pure: the
:class:`Catalog` is filled by the caller (from the database, or from a bulk snapshot).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from runas.domain.accounts import AccountType, DistributionMode
from runas.domain.classes import ClassHierarchy
from runas.domain.groups import GroupCatalog
from runas.domain.model import (
    DEFAULT_ACTION_PROFILE,
    TARGET_RANK,
    Association,
    ObjectRecord,
    ProfileDef,
    TargetKind,
    WorkflowDef,
)
from runas.errors import InvalidInput, NotFound

#: (enforced, target kind rank, class depth): a greater tuple wins.
Rank = tuple[int, int, int]


@dataclass(frozen=True)
class AccountInfo:
    """What resolution needs to know about an account (never its secret)."""

    id: int
    name: str
    type: AccountType
    identity: str
    secret_version: int
    distribution_mode: DistributionMode
    approved: frozenset[str] = frozenset()
    elevation: str | None = None

    def distributed_to(self, computer: str) -> bool:
        # Less secure: every agent-managed computer of the management group receives it.
        return self.distribution_mode is DistributionMode.LESS_SECURE or computer in self.approved

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type.value,
            "identity": self.identity,
            "secret_version": self.secret_version,
            "distribution": self.distribution_mode.value,
            "elevation": self.elevation,
        }


@dataclass
class Catalog:
    """The slice of a management group that resolution looks at.

    Callers may fill only what a question needs (the associations of one profile, the groups
    they name, the accounts they use): resolution never asks for anything else.
    """

    hierarchy: ClassHierarchy
    groups: GroupCatalog
    profiles: Mapping[str, ProfileDef]
    accounts: Mapping[int, AccountInfo]
    associations: Mapping[str, Sequence[Association]]
    #: profile id -> classes targeted by the workflows that use it
    targeted_classes: Mapping[str, frozenset[str]]
    computers: Mapping[str, ObjectRecord] = field(default_factory=dict)

    def profile(self, profile_id: str) -> ProfileDef:
        try:
            return self.profiles[profile_id]
        except KeyError:
            raise NotFound(f"unknown profile {profile_id!r}") from None

    def account(self, account_id: int) -> AccountInfo:
        return self.accounts[account_id]

    def associations_of(self, profile_id: str) -> Sequence[Association]:
        return self.associations.get(profile_id, ())


class CandidateStatus(StrEnum):
    WINNER = "winner"
    TIED = "tied"  # same rank and same account as the winner: harmless
    CONFLICT = "conflict"
    LOST = "lost"
    NOT_APPLICABLE = "not-applicable"


@dataclass(frozen=True)
class Candidate:
    association: Association
    covers: bool
    #: why the target covers O, or why it does not
    coverage: str
    rank: Rank | None
    status: CandidateStatus
    #: why it lost (empty for winners and non-covering associations)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        a = self.association
        return {
            "association": a.id,
            "account": a.account_name,
            "target_kind": a.target_kind.value,
            "target": a.target,
            "enforced": a.enforced,
            "covers": self.covers,
            "coverage": self.coverage,
            "status": self.status.value,
            "reason": self.reason,
        }


class ProfileOutcome(StrEnum):
    ACCOUNT = "account"
    CONFLICT = "conflict"
    NO_CANDIDATE = "no-candidate"


@dataclass(frozen=True)
class ProfileResolution:
    profile: ProfileDef
    object: ObjectRecord
    candidates: tuple[Candidate, ...]
    outcome: ProfileOutcome
    winner: Association | None
    conflicting: tuple[Association, ...] = ()


class Outcome(StrEnum):
    ACCOUNT = "account"  # runs as the profile's account
    ACTION_ACCOUNT = "action-account"  # runs as the computer's default action account
    CONFLICT = "conflict"  # does not run
    UNRESOLVED = "unresolved"  # no account, and the profile cannot fall back: does not run
    NOT_DISTRIBUTED = "not-distributed"  # the account is not distributed to C: does not run


@dataclass(frozen=True)
class Resolution:
    workflow: str | None
    profile: str | None
    object: ObjectRecord
    computer: str
    outcome: Outcome
    #: the account W runs as; for NOT_DISTRIBUTED the account that would have been used;
    #: for ACTION_ACCOUNT the action account, or None for the agent's built-in identity
    account: AccountInfo | None
    candidates: tuple[Candidate, ...] = ()
    conflicting: tuple[Association, ...] = ()
    #: True when W has a profile but ran out of candidates and fell back
    fallback: bool = False
    #: the default-action-account resolution behind an ACTION_ACCOUNT (or a failure in it)
    action: ProfileResolution | None = None
    steps: tuple[str, ...] = ()

    @property
    def runs(self) -> bool:
        return self.outcome in (Outcome.ACCOUNT, Outcome.ACTION_ACCOUNT)

    @property
    def via_action_account(self) -> bool:
        return self.action is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "profile": self.profile,
            "object": self.object.full_name,
            "object_id": self.object.id,
            "computer": self.computer,
            "outcome": self.outcome.value,
            "runs": self.runs,
            "fallback": self.fallback,
            "account": self.account.to_dict() if self.account else None,
            "distributed": (
                self.account.distributed_to(self.computer) if self.account is not None else None
            ),
            "candidates": [c.to_dict() for c in self.candidates],
            "conflicting": [
                {"association": a.id, "account": a.account_name, "target": a.describe_target()}
                for a in self.conflicting
            ],
            "action_account_candidates": (
                [c.to_dict() for c in self.action.candidates] if self.action else []
            ),
            "steps": list(self.steps),
        }


# ---------------------------------------------------------------------------------------------
# coverage and rank


def all_targets_cover(profile: ProfileDef, obj: ObjectRecord, catalog: Catalog) -> tuple[bool, str]:
    """Does an *all targeted objects* association of ``profile`` cover ``obj``?

    The objects a profile targets are the instances of the classes its workflows target. The
    Default Action Account profile targets every computer. A profile no workflow uses (created
    by hand) targets the instances of its context class.
    """
    h = catalog.hierarchy
    if profile.id == DEFAULT_ACTION_PROFILE:
        if h.is_computer(obj.class_id):
            return True, "every computer runs as its default action account"
        return False, "the default action account profile targets computers only"
    targeted = catalog.targeted_classes.get(profile.id, frozenset())
    if not targeted:
        if h.is_a(obj.class_id, profile.context_class):
            return True, f"instance of the profile's context class {profile.context_class}"
        return False, f"not an instance of the profile's context class {profile.context_class}"
    for cls in sorted(targeted):
        if h.is_a(obj.class_id, cls):
            return True, f"targeted: the profile's workflows target {cls}"
    return False, "no workflow of this profile targets this object's class"


def coverage(
    assoc: Association, profile: ProfileDef, obj: ObjectRecord, catalog: Catalog
) -> tuple[bool, str]:
    kind = assoc.target_kind
    if kind is TargetKind.ALL:
        return all_targets_cover(profile, obj, catalog)
    target = assoc.target or ""
    if kind is TargetKind.CLASS:
        if target not in catalog.hierarchy:
            return False, f"class {target} no longer exists"
        if catalog.hierarchy.is_a(obj.class_id, target):
            how = "instance of" if obj.class_id == target else f"{obj.class_id} derives from"
            return True, f"{how} {target}"
        return False, f"not an instance of {target}"
    if kind is TargetKind.GROUP:
        if target not in catalog.groups:
            return False, f"group {target} no longer exists"
        member = catalog.groups.membership(target, obj)
        if member is not None:
            return True, member.describe()
        return False, f"not a member of {target}"
    if target == obj.full_name:
        return True, "this object"
    return False, "another object"


def rank_of(assoc: Association, catalog: Catalog) -> Rank:
    depth = 0
    target = assoc.target
    if assoc.target_kind is TargetKind.CLASS and target is not None and target in catalog.hierarchy:
        depth = catalog.hierarchy.depth(target)
    return (1 if assoc.enforced else 0, TARGET_RANK[assoc.target_kind], depth)


def _a(kind: TargetKind) -> str:
    return f"an {kind.value}" if kind is TargetKind.OBJECT else f"a {kind.value}"


def why_lost(loser: Association, loser_rank: Rank, winner: Association, top: Rank) -> str:
    if loser_rank[0] != top[0]:
        return f"not enforced, and association #{winner.id} is enforced"
    if loser_rank[1] != top[1]:
        beaten = (
            "all targeted objects"
            if loser.target_kind is TargetKind.ALL
            else f"{_a(loser.target_kind)} target"
        )
        return f"{_a(winner.target_kind)} target (#{winner.id}) outranks {beaten}"
    return f"class {winner.target} (#{winner.id}) is more derived than {loser.target}"


def resolve_profile(profile: ProfileDef, obj: ObjectRecord, catalog: Catalog) -> ProfileResolution:
    """Rules 1–3 of domain.md §5 for one profile and one object."""
    covering: list[tuple[Association, str, Rank]] = []
    not_covering: list[tuple[Association, str]] = []
    for assoc in catalog.associations_of(profile.id):
        covers, why = coverage(assoc, profile, obj, catalog)
        if covers:
            covering.append((assoc, why, rank_of(assoc, catalog)))
        else:
            not_covering.append((assoc, why))

    if not covering:
        candidates = tuple(
            Candidate(a, False, why, None, CandidateStatus.NOT_APPLICABLE)
            for a, why in not_covering
        )
        return ProfileResolution(profile, obj, candidates, ProfileOutcome.NO_CANDIDATE, None)

    # Stable order: best rank first, then (ordered profiles) position, then association id,
    # so explain output is reproducible.
    def order(item: tuple[Association, str, Rank]) -> tuple[int, ...]:
        assoc, _, rank = item
        position = assoc.position if profile.ordered and assoc.position is not None else 0
        return (*(-r for r in rank), position, assoc.id)

    covering.sort(key=order)
    top = covering[0][2]
    winner = covering[0][0]
    at_top = [a for a, _, r in covering if r == top]
    accounts_at_top = {a.account_id for a in at_top}
    # An ordered profile's accounts are a list tried in turn (site accounts such as client
    # push): several at the top rank are its order, not a conflict.
    conflict = len(accounts_at_top) > 1 and not profile.ordered

    out: list[Candidate] = []
    for assoc, why, rank in covering:
        if rank == top:
            if conflict:
                status = CandidateStatus.CONFLICT
                reason = "same rank as another association with a different account"
            elif assoc is winner:
                status, reason = CandidateStatus.WINNER, ""
            elif assoc.account_id == winner.account_id:
                status, reason = CandidateStatus.TIED, "same rank and same account as the winner"
            else:
                status = CandidateStatus.TIED
                reason = (
                    f"ordered profile: tried in turn after #{winner.id} ({winner.account_name})"
                )
        else:
            status, reason = CandidateStatus.LOST, why_lost(assoc, rank, winner, top)
        out.append(Candidate(assoc, True, why, rank, status, reason))
    out.extend(
        Candidate(a, False, why, None, CandidateStatus.NOT_APPLICABLE) for a, why in not_covering
    )
    if conflict:
        return ProfileResolution(
            profile, obj, tuple(out), ProfileOutcome.CONFLICT, None, tuple(at_top)
        )
    return ProfileResolution(profile, obj, tuple(out), ProfileOutcome.ACCOUNT, winner)


# ---------------------------------------------------------------------------------------------
# workflows


def _account_line(acc: AccountInfo) -> str:
    return f"{acc.name} ({acc.type.value}, {acc.identity}), secret version {acc.secret_version}"


def _distribution_line(acc: AccountInfo, computer: str) -> str:
    if acc.distribution_mode is DistributionMode.LESS_SECURE:
        return f"distribution: less secure, so {computer} receives it"
    if computer in acc.approved:
        return f"distribution: more secure, {computer} is approved"
    return f"distribution: more secure, and {computer} is NOT approved"


def _not_distributed_fix(acc: AccountInfo, profile_id: str, obj: ObjectRecord, c: str) -> str:
    return (
        f"credentials not found: an account specified in the Run As profile {profile_id} cannot "
        f"be resolved on {c} (account {acc.name}, object {obj.full_name}); fix: "
        f'runas distribution set "{acc.name}" --more-secure --add {c}, '
        "or narrow the association"
    )


def _candidate_steps(pr: ProfileResolution) -> list[str]:
    steps = [f"{len(pr.candidates)} association(s) of {pr.profile.id} considered"]
    for c in pr.candidates:
        a = c.association
        head = f"#{a.id} {a.account_name} -> {a.describe_target()}" + (
            " [enforced]" if a.enforced else ""
        )
        if not c.covers:
            steps.append(f"  {head}: does not apply ({c.coverage})")
        elif c.status is CandidateStatus.WINNER:
            steps.append(f"  {head}: applies ({c.coverage}); wins")
        else:
            steps.append(f"  {head}: applies ({c.coverage}); {c.status.value}: {c.reason}")
    return steps


def resolve_action_account(
    computer_obj: ObjectRecord, catalog: Catalog
) -> tuple[ProfileResolution | None, AccountInfo | None, list[str]]:
    """Resolve the Default Action Account profile for a computer (domain.md §6)."""
    profile = catalog.profiles.get(DEFAULT_ACTION_PROFILE)
    if profile is None:
        return None, None, ["no Default Action Account profile: the agent's own identity"]
    pr = resolve_profile(profile, computer_obj, catalog)
    steps = [f"default action account of {computer_obj.computer}:"]
    steps.extend("  " + s for s in _candidate_steps(pr))
    if pr.outcome is ProfileOutcome.ACCOUNT and pr.winner is not None:
        acc = catalog.account(pr.winner.account_id)
        steps.append(f"  action account: {_account_line(acc)}")
        return pr, acc, steps
    if pr.outcome is ProfileOutcome.NO_CANDIDATE:
        steps.append("  no action account associated: the agent's own low-privilege identity")
    return pr, None, steps


def resolve_workflow(workflow: WorkflowDef, obj: ObjectRecord, catalog: Catalog) -> Resolution:
    h = catalog.hierarchy
    if not h.is_a(obj.class_id, workflow.target):
        raise InvalidInput(
            f"workflow {workflow.id} targets {workflow.target}; {obj.full_name} is a "
            f"{obj.class_id}, so the workflow never runs for it"
        )
    head = (
        f"workflow {workflow.id} ({workflow.kind.value}) for {obj.full_name}, "
        f"which runs on {obj.computer}"
    )
    if workflow.profile is None:
        return _run_as_action_account(
            workflow.id, None, obj, catalog, [head, "no Run As profile: default action account"]
        )
    return resolve_for_profile(
        catalog.profile(workflow.profile), obj, catalog, workflow=workflow.id, head=head
    )


def resolve_for_profile(
    profile: ProfileDef,
    obj: ObjectRecord,
    catalog: Catalog,
    *,
    workflow: str | None = None,
    head: str | None = None,
) -> Resolution:
    c = obj.computer
    steps = [head or f"profile {profile.id} for {obj.full_name}, which runs on {c}"]
    steps.append(f"Run As profile {profile.id} ({profile.display_name})")
    pr = resolve_profile(profile, obj, catalog)
    steps.extend(_candidate_steps(pr))
    common: dict[str, Any] = {
        "workflow": workflow,
        "profile": profile.id,
        "object": obj,
        "computer": c,
        "candidates": pr.candidates,
    }

    if pr.outcome is ProfileOutcome.CONFLICT:
        names = ", ".join(f"#{a.id} {a.account_name}" for a in pr.conflicting)
        steps.append(
            f"conflict: {names} have the same rank; runas does not guess: the workflow does "
            f"not run for this object (Run As conflict alert)"
        )
        return Resolution(
            outcome=Outcome.CONFLICT,
            account=None,
            conflicting=pr.conflicting,
            steps=tuple(steps),
            **common,
        )

    if pr.outcome is ProfileOutcome.NO_CANDIDATE:
        if not profile.fallback:
            steps.append(
                f"no account applies and {profile.id} cannot fall back to the action account: "
                "the workflow does not run until an account is associated"
            )
            return Resolution(
                outcome=Outcome.UNRESOLVED, account=None, steps=tuple(steps), **common
            )
        steps.append("no account applies: fall back to the default action account")
        return _run_as_action_account(
            workflow, profile.id, obj, catalog, steps, candidates=pr.candidates, fallback=True
        )

    assert pr.winner is not None
    acc = catalog.account(pr.winner.account_id)
    steps.append(f"winner: {_account_line(acc)}")
    steps.append(_distribution_line(acc, c))
    if not acc.distributed_to(c):
        steps.append(_not_distributed_fix(acc, profile.id, obj, c))
        return Resolution(
            outcome=Outcome.NOT_DISTRIBUTED, account=acc, steps=tuple(steps), **common
        )
    if acc.elevation is not None:
        steps.append(f"elevation: {acc.elevation}")
    steps.append(f"result: runs as {acc.name}")
    return Resolution(outcome=Outcome.ACCOUNT, account=acc, steps=tuple(steps), **common)


def _run_as_action_account(
    workflow: str | None,
    profile: str | None,
    obj: ObjectRecord,
    catalog: Catalog,
    steps: list[str],
    *,
    candidates: tuple[Candidate, ...] = (),
    fallback: bool = False,
) -> Resolution:
    c = obj.computer
    common: dict[str, Any] = {
        "workflow": workflow,
        "profile": profile,
        "object": obj,
        "computer": c,
        "candidates": candidates,
        "fallback": fallback,
    }
    computer_obj = catalog.computers.get(c)
    if computer_obj is None:
        steps.append(f"computer {c} is not known: the agent's own identity")
        return Resolution(
            outcome=Outcome.ACTION_ACCOUNT, account=None, steps=tuple(steps), **common
        )
    pr, acc, more = resolve_action_account(computer_obj, catalog)
    steps.extend(more)
    if pr is not None and pr.outcome is ProfileOutcome.CONFLICT:
        steps.append("conflict in the default action account profile: the workflow does not run")
        return Resolution(
            outcome=Outcome.CONFLICT,
            account=None,
            conflicting=pr.conflicting,
            action=pr,
            steps=tuple(steps),
            **common,
        )
    if acc is not None:
        steps.append("  " + _distribution_line(acc, c))
        if not acc.distributed_to(c):
            steps.append(_not_distributed_fix(acc, DEFAULT_ACTION_PROFILE, computer_obj, c))
            return Resolution(
                outcome=Outcome.NOT_DISTRIBUTED,
                account=acc,
                action=pr,
                steps=tuple(steps),
                **common,
            )
        steps.append(f"result: runs as the default action account {acc.name}")
    else:
        steps.append("result: runs as the agent's own identity (default action account)")
    return Resolution(
        outcome=Outcome.ACTION_ACCOUNT, account=acc, action=pr, steps=tuple(steps), **common
    )


def targeted_classes_by_profile(workflows: Iterable[WorkflowDef]) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for w in workflows:
        if w.profile is not None:
            out.setdefault(w.profile, set()).add(w.target)
    return {k: frozenset(v) for k, v in out.items()}
