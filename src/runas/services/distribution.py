"""Distribution: which computers may receive an account's secret (domain.md §4).

Never derived from discovery: ``suggest`` lists the computers that would need the account
(objects that resolve to it there) and approves them only when asked to.
"""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from runas.domain.accounts import AccountType, DistributionMode
from runas.domain.model import DEFAULT_ACTION_PROFILE
from runas.domain.resolution import Outcome, resolve_for_profile
from runas.errors import InvalidInput, NotFound
from runas.runtime import UnitOfWork
from runas.services import audit, convert, lookup
from runas.services import catalog as catalog_loader
from runas.services.audit import AuditAction
from runas.storage.tables import AccountRow, AssociationRow, DistributionRow, ObjectRow


class DistributionView(BaseModel):
    account: str
    account_id: int
    type: str
    mode: str
    computers: list[str]


class Suggestion(BaseModel):
    computer: str
    objects: list[str]
    profiles: list[str]


class SuggestView(BaseModel):
    account: str
    mode: str
    suggestions: list[Suggestion]
    applied: bool


def _view(session: Session, row: AccountRow) -> DistributionView:
    computers = sorted(
        session.scalars(
            select(DistributionRow.computer_name).where(DistributionRow.account_id == row.id)
        )
    )
    return DistributionView(
        account=row.name,
        account_id=row.id,
        type=row.type,
        mode=row.distribution_mode,
        computers=computers,
    )


def get(session: Session, ref: str) -> DistributionView:
    return _view(session, lookup.account(session, ref))


def set_distribution(
    uow: UnitOfWork,
    ref: str,
    *,
    mode: DistributionMode,
    computers: list[str] | None = None,
    add: list[str] | None = None,
    remove: list[str] | None = None,
) -> DistributionView:
    """Set the mode, and for *more secure* the approved computers.

    ``computers`` replaces the list; ``add``/``remove`` edit it. Removing a computer revokes
    the secret there (the next configuration that computer receives no longer holds it).
    """
    s = uow.session
    row = lookup.account(s, ref, for_update=True)
    if mode is DistributionMode.LESS_SECURE:
        if row.type == AccountType.ACTION.value:
            raise InvalidInput(
                f"{row.name!r} is an action account: its distribution is always more secure"
            )
        if computers or add or remove:
            raise InvalidInput(
                "less secure distribution sends the secret to every computer: list no computers"
            )
    current = set(
        s.scalars(select(DistributionRow.computer_name).where(DistributionRow.account_id == row.id))
    )
    if computers is not None:
        wanted = set(computers)
    elif mode is DistributionMode.LESS_SECURE:
        wanted = current
    else:
        wanted = set(current)
    wanted |= set(add or ())
    missing_removals = set(remove or ()) - wanted
    if missing_removals:
        raise InvalidInput(
            f"not approved for {row.name!r}, so cannot be removed: "
            + ", ".join(sorted(missing_removals))
        )
    wanted -= set(remove or ())
    new = wanted - current
    if new:
        known = lookup.known_computers(s, new)
        unknown = sorted(new - known)
        if unknown:
            raise NotFound(
                "unknown computer(s): "
                + ", ".join(unknown)
                + " (computers appear through discovery)"
            )
    if mode is DistributionMode.LESS_SECURE:
        # The list is kept: switching back to more secure restores the approvals as they were.
        wanted = current
    gone = current - wanted
    if gone:
        s.execute(
            delete(DistributionRow).where(
                DistributionRow.account_id == row.id,
                DistributionRow.computer_name.in_(sorted(gone)),
            )
        )
    for name in sorted(wanted - current):
        s.add(DistributionRow(account_id=row.id, computer_name=name))
    previous_mode = row.distribution_mode
    if row.distribution_mode != mode.value or gone or wanted - current:
        row.distribution_mode = mode.value
        row.modified_at = uow.now
        row.modified_by = uow.actor
        lookup.bump_epoch(s)
    s.flush()
    audit.record(
        uow,
        AuditAction.DISTRIBUTION_SET,
        row.name,
        {
            "mode": mode.value,
            "previous_mode": previous_mode,
            "added": audit.capped(wanted - current),
            "removed": audit.capped(gone),
        },
    )
    return _view(s, row)


def suggest(uow: UnitOfWork, ref: str, *, apply: bool = False) -> SuggestView:
    """Computers hosting objects that resolve to the account but are not approved."""
    s = uow.session
    row = lookup.account(s, ref, for_update=apply)
    profile_ids = sorted(
        set(s.scalars(select(AssociationRow.profile_id).where(AssociationRow.account_id == row.id)))
    )
    by_computer: dict[str, tuple[set[str], set[str]]] = {}
    if row.distribution_mode == DistributionMode.MORE_SECURE.value and profile_ids:
        cat = catalog_loader.load(s, profile_ids)
        h = cat.hierarchy
        for profile_id in profile_ids:
            profile = cat.profile(profile_id)
            if profile_id == DEFAULT_ACTION_PROFILE:
                classes = h.descendants("System.Computer")
            else:
                targets = cat.targeted_classes.get(profile_id) or frozenset({profile.context_class})
                classes = set().union(*(h.descendants(t) for t in targets))
            stmt = select(ObjectRow).where(ObjectRow.class_id.in_(sorted(classes)))
            for obj_row in s.scalars(stmt.order_by(ObjectRow.id)):
                obj = convert.object_record(obj_row)
                res = resolve_for_profile(profile, obj, cat)
                if (
                    res.outcome is Outcome.NOT_DISTRIBUTED
                    and res.account is not None
                    and res.account.id == row.id
                ):
                    objs, profs = by_computer.setdefault(obj.computer, (set(), set()))
                    objs.add(obj.full_name)
                    profs.add(profile_id)
    suggestions = [
        Suggestion(computer=c, objects=sorted(o), profiles=sorted(p))
        for c, (o, p) in sorted(by_computer.items())
    ]
    if apply and suggestions:
        for sug in suggestions:
            s.add(DistributionRow(account_id=row.id, computer_name=sug.computer))
        row.modified_at = uow.now
        row.modified_by = uow.actor
        lookup.bump_epoch(s)
        s.flush()
    if apply:
        audit.record(
            uow,
            AuditAction.DISTRIBUTION_APPROVE_SUGGESTED,
            row.name,
            {"added": audit.capped(sug.computer for sug in suggestions)},
        )
    return SuggestView(
        account=row.name,
        mode=row.distribution_mode,
        suggestions=suggestions,
        applied=apply and bool(suggestions),
    )
