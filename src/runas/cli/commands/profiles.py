"""``runas profile …`` and ``runas distribution …``."""

from __future__ import annotations

from typing import Annotated

import typer

from runas.cli import output
from runas.cli.state import backend
from runas.domain.accounts import DistributionMode
from runas.domain.model import TargetKind
from runas.errors import InvalidInput
from runas.services.profiles import AssociateRequest, DissociateRequest, ProfileCreate

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ClassOpt = Annotated[str | None, typer.Option("--class", help="Target: instances of a class.")]
GroupOpt = Annotated[str | None, typer.Option("--group", help="Target: members of a group.")]
ObjectOpt = Annotated[
    str | None, typer.Option("--object", help="Target: one object (full name or id).")
]
AllOpt = Annotated[bool, typer.Option("--all", help="Target: all targeted objects.")]

profiles = typer.Typer(help="Run As profiles and their associations with accounts.")
distribution = typer.Typer(help="Which computers may receive an account's secret.")


def _target(
    class_id: str | None, group: str | None, obj: str | None, all_: bool
) -> tuple[TargetKind | None, str | None]:
    given: list[tuple[TargetKind, str | None]] = [
        (k, v)
        for k, v in (
            (TargetKind.CLASS, class_id),
            (TargetKind.GROUP, group),
            (TargetKind.OBJECT, obj),
        )
        if v is not None
    ]
    if all_:
        given.append((TargetKind.ALL, None))
    if len(given) > 1:
        raise InvalidInput("give one target: --class, --group, --object or --all")
    return given[0] if given else (None, None)


@profiles.command("list")
def profile_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List Run As profiles."""
    rows = backend(ctx).profile_list()
    if as_json:
        output.emit_json(rows)
        return
    output.table(
        ["Profile", "Name", "Pack", "Accounts allowed", "Fallback", "Associations", "Workflows"],
        (
            (
                p.id,
                p.display_name,
                p.pack or "(by hand)",
                ", ".join(p.allowed_types) or "any",
                "yes" if p.fallback else "no",
                p.associations,
                p.workflows,
            )
            for p in rows
        ),
    )


@profiles.command("show")
def profile_show(ctx: typer.Context, profile: str, as_json: JsonOpt = False) -> None:
    """Show a profile with its associations and the workflows that use it."""
    p = backend(ctx).profile_show(profile)
    if as_json:
        output.emit_json(p)
        return
    output.fields(
        [
            ("Profile", p.id),
            ("Name", p.display_name),
            ("Description", p.description),
            ("Pack", p.pack or "(created by hand)"),
            ("Context class", p.context_class),
            ("Accessibility", p.accessibility),
            ("Accounts allowed", ", ".join(p.allowed_types) or "any type"),
            (
                "Fallback",
                "may fall back to the action account"
                if p.fallback
                else "cannot fall back: workflows wait for an association",
            ),
            ("Ordered", "yes (accounts tried in turn)" if p.ordered else None),
            ("Max accounts", p.max_accounts),
            ("Workflows", p.workflows),
        ]
    )
    output.line()
    output.table(
        ["Association", "Account", "Type", "Target", "Enforced", "Position", "Present"],
        (
            (
                f"#{a.id}",
                a.account,
                a.account_type,
                "all targeted objects" if a.target_kind == "all" else f"{a.target_kind} {a.target}",
                "yes" if a.enforced else "",
                a.position,
                "yes" if a.target_present else "NO",
            )
            for a in p.associations
        ),
    )


@profiles.command("add")
def profile_add(
    ctx: typer.Context,
    profile_id: Annotated[
        str, typer.Argument(metavar="PROFILE", help="Dotted id, e.g. Corp.Backup")
    ],
    display_name: Annotated[str, typer.Option("--display-name", help="Name shown to people.")],
    description: Annotated[str, typer.Option()] = "",
    context_class: Annotated[str, typer.Option("--context-class")] = "System.Entity",
    allowed_type: Annotated[
        list[str] | None, typer.Option("--allowed-type", help="Account type allowed (repeat).")
    ] = None,
    no_fallback: Annotated[
        bool, typer.Option("--no-fallback", help="Never fall back to the action account.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a profile by hand (packs declare most profiles)."""
    p = backend(ctx).profile_add(
        ProfileCreate(
            id=profile_id,
            display_name=display_name,
            description=description,
            context_class=context_class,
            allowed_types=allowed_type or [],
            fallback=not no_fallback,
        )
    )
    if as_json:
        output.emit_json(p)
    else:
        output.line(f"created profile {p.id}")


@profiles.command("associate")
def associate(
    ctx: typer.Context,
    profile: str,
    account: str,
    class_id: ClassOpt = None,
    group: GroupOpt = None,
    obj: ObjectOpt = None,
    all_: AllOpt = False,
    enforced: Annotated[
        bool, typer.Option("--enforced", help="Takes precedence over non-enforced associations.")
    ] = False,
    position: Annotated[int | None, typer.Option(help="Rank in an ordered profile.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Associate an account with a profile for a target (default: all targeted objects)."""
    kind, target = _target(class_id, group, obj, all_)
    a = backend(ctx).associate(
        AssociateRequest(
            profile=profile,
            account=account,
            target_kind=kind or TargetKind.ALL,
            target=target,
            enforced=enforced,
            position=position,
        )
    )
    if as_json:
        output.emit_json(a)
        return
    what = "all targeted objects" if a.target_kind == "all" else f"{a.target_kind} {a.target}"
    output.line(
        f"associated {a.account!r} with {a.profile} for {what}"
        + (" (enforced)" if a.enforced else "")
        + f" [association #{a.id}]"
    )


@profiles.command("dissociate")
def dissociate(
    ctx: typer.Context,
    profile: str,
    account: str,
    class_id: ClassOpt = None,
    group: GroupOpt = None,
    obj: ObjectOpt = None,
    all_: AllOpt = False,
) -> None:
    """Remove an account's association with a profile (name the target if it has several)."""
    kind, target = _target(class_id, group, obj, all_)
    ids = backend(ctx).dissociate(
        DissociateRequest(profile=profile, account=account, target_kind=kind, target=target)
    )
    output.line(
        f"dissociated {account!r} from {profile} (association {', '.join(f'#{i}' for i in ids)})"
    )


def _show_distribution(view: object, as_json: bool) -> None:
    from runas.services.distribution import DistributionView

    assert isinstance(view, DistributionView)
    if as_json:
        output.emit_json(view)
        return
    if view.mode == DistributionMode.LESS_SECURE.value:
        output.line(
            f"{view.account}: less secure — every computer of the management group receives it"
        )
        if view.computers:
            output.line(
                f"  (approvals kept for a return to more secure: {', '.join(view.computers)})"
            )
    elif view.computers:
        output.line(f"{view.account}: more secure — approved computers:")
        for c in view.computers:
            output.line(f"  {c}")
    else:
        output.line(f"{view.account}: more secure — no computer approved: it reaches no computer")


@distribution.command("get")
def distribution_get(ctx: typer.Context, account: str, as_json: JsonOpt = False) -> None:
    """Show an account's distribution."""
    _show_distribution(backend(ctx).distribution_get(account), as_json)


@distribution.command("set")
def distribution_set(
    ctx: typer.Context,
    account: str,
    more_secure: Annotated[
        bool, typer.Option("--more-secure", help="Only approved computers.")
    ] = False,
    less_secure: Annotated[bool, typer.Option("--less-secure", help="Every computer.")] = False,
    computer: Annotated[
        list[str] | None, typer.Option("--computer", help="Approved computer (replaces the list).")
    ] = None,
    add: Annotated[
        list[str] | None, typer.Option("--add", help="Approve this computer too.")
    ] = None,
    remove: Annotated[
        list[str] | None, typer.Option("--remove", help="Revoke this computer.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set an account's distribution: more secure (approved computers) or less secure."""
    if more_secure == less_secure:
        raise InvalidInput("give --more-secure or --less-secure")
    mode = DistributionMode.MORE_SECURE if more_secure else DistributionMode.LESS_SECURE
    view = backend(ctx).distribution_set(account, mode, computer, add, remove)
    _show_distribution(view, as_json)


@distribution.command("suggest")
def distribution_suggest(
    ctx: typer.Context,
    account: str,
    apply: Annotated[
        bool, typer.Option("--apply", help="Approve the suggested computers.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Computers hosting objects that resolve to the account but are not approved."""
    view = backend(ctx).distribution_suggest(account, apply)
    if as_json:
        output.emit_json(view)
        return
    if not view.suggestions:
        output.line(
            f"{view.account}: nothing to suggest — every computer that needs it is approved"
        )
        return
    verb = "approved" if view.applied else "suggested (approve with --apply)"
    output.line(f"{view.account}: {len(view.suggestions)} computer(s) {verb}:")
    for s in view.suggestions:
        output.line(
            f"  {s.computer}  ({len(s.objects)} object(s): {', '.join(s.objects[:3])}"
            + (" …" if len(s.objects) > 3 else "")
            + f"; profiles {', '.join(s.profiles)})"
        )
