"""``runas pack …``, ``runas discovery submit``, ``runas object …``, ``runas group …``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from runas.cli import output
from runas.cli.state import backend
from runas.errors import InvalidInput
from runas.services.discovery import DiscoveryPayload

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
MAX_FILE_BYTES = 16 * 1024 * 1024

packs = typer.Typer(help="Management packs: classes, groups, Run As profiles, workflows.")
discovery = typer.Typer(help="Discovery data: computers and the objects they host.")
objects = typer.Typer(help="Discovered objects.")
groups = typer.Typer(help="Groups of objects (declared by packs).")


def read_text(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InvalidInput(f"{path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path}: not UTF-8 text") from None
    except OSError as err:
        raise InvalidInput(f"{path}: {err.strerror}") from None


@packs.command("import")
def pack_import(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="Pack YAML files.")],
    as_json: JsonOpt = False,
) -> None:
    """Import or upgrade packs (an upgrade needs a higher version). Each file is one change."""
    be = backend(ctx)
    results = []
    for f in files:
        result = be.pack_import(read_text(f), str(f))
        results.append(result)
        if not as_json:
            prev = f" (was {result.previous_version})" if result.previous_version else ""
            output.line(
                f"{result.action} {result.id} {result.version}{prev}: {result.classes} classes, "
                f"{result.groups} groups, {result.profiles} profiles, "
                f"{result.workflows} workflows"
            )
            if result.removed_objects:
                output.line(f"  removed {len(result.removed_objects)} object(s) of removed classes")
    if as_json:
        output.emit_json(results)


@packs.command("list")
def pack_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List imported packs."""
    rows = backend(ctx).pack_list()
    if as_json:
        output.emit_json(rows)
        return
    output.table(
        ["Pack", "Version", "Name", "Classes", "Groups", "Profiles", "Workflows"],
        (
            (r.id, r.version, r.display_name, r.classes, r.groups, r.profiles, r.workflows)
            for r in rows
        ),
    )


@packs.command("show")
def pack_show(
    ctx: typer.Context,
    pack: str,
    as_yaml: Annotated[bool, typer.Option("--yaml", help="Print the pack as imported.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show a pack's contents."""
    view = backend(ctx).pack_show(pack, with_source=as_yaml)
    if as_json:
        output.emit_json(view)
        return
    if as_yaml:
        output.line((view.source_text or "").rstrip("\n"))
        return
    output.fields(
        [
            ("Pack", view.id),
            ("Version", view.version),
            ("Name", view.display_name),
            ("Description", view.description),
            (
                "References",
                [f"{r['id']} {r.get('min_version') or ''}".strip() for r in view.references],
            ),
            ("Referenced by", view.referenced_by),
            ("Classes", view.classes),
            ("Groups", view.groups),
            ("Profiles", view.profiles),
            ("Workflows", view.workflows),
            ("Imported", f"{view.imported_at} by {view.imported_by}"),
        ]
    )


@packs.command("remove")
def pack_remove(ctx: typer.Context, pack: str) -> None:
    """Remove a pack (refused while other packs or associations depend on it)."""
    removed = backend(ctx).pack_remove(pack)
    extra = f", and {len(removed)} object(s) of its classes" if removed else ""
    output.line(f"removed pack {pack}{extra}")


def load_payload(path: Path) -> DiscoveryPayload:
    text = read_text(path)
    try:
        doc: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as err:
        raise InvalidInput(f"{path}:{err.lineno}: {err.msg}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise InvalidInput(
            f"{where}: {getattr(err, 'problem', None) or 'malformed YAML'}"
        ) from None
    try:
        return DiscoveryPayload.model_validate(doc)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{path}: {loc or 'payload'}: {first['msg']}") from None


@discovery.command("submit")
def discovery_submit(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Discovery payload, JSON or YAML.")],
    as_json: JsonOpt = False,
) -> None:
    """Submit discovery data (the payload agents send). Objects this source discovered before
    in the same scope and no longer lists are removed."""
    payload = load_payload(file)
    try:
        result = backend(ctx).discovery_submit(payload)
    except InvalidInput as err:
        # Name the file too: payload problems are located as "object N" within it.
        raise InvalidInput(f"{file}: {err.message}") from None
    if as_json:
        output.emit_json(result)
        return
    scope = f" on {result.scope}" if result.scope else ""
    output.line(
        f"discovery {result.source}{scope}: {len(result.added)} added, "
        f"{len(result.updated)} updated, {result.unchanged} unchanged, "
        f"{len(result.removed)} removed"
    )
    for name in result.removed:
        output.line(f"  removed {name}")


@objects.command("list")
def object_list(
    ctx: typer.Context,
    class_id: Annotated[
        str | None, typer.Option("--class", help="Instances of this class.")
    ] = None,
    computer: Annotated[str | None, typer.Option(help="Objects on this computer.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """List discovered objects."""
    rows = backend(ctx).object_list(class_id, computer, limit)
    if as_json:
        output.emit_json(rows)
        return
    output.table(
        ["Id", "Object", "Class", "Computer"],
        ((r.id, r.full_name, r.class_id, r.computer) for r in rows),
    )


@objects.command("show")
def object_show(ctx: typer.Context, obj: str, as_json: JsonOpt = False) -> None:
    """Show an object (by full name or id): properties, host, groups, discovery sources."""
    v = backend(ctx).object_show(obj)
    if as_json:
        output.emit_json(v)
        return
    output.fields(
        [
            ("Object", v.full_name),
            ("Id", v.id),
            ("Class", v.class_id),
            ("Computer", v.computer),
            ("Host", v.host),
            *((f"  {k}", val) for k, val in sorted(v.properties.items())),
            ("Groups", v.groups),
            ("Hosts", v.hosts),
            ("Discovered by", v.discovered_by),
        ]
    )


@groups.command("list")
def group_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List groups."""
    rows = backend(ctx).group_list()
    if as_json:
        output.emit_json(rows)
        return
    output.table(
        ["Group", "Name", "Pack", "Rules", "Explicit", "Includes"],
        (
            (
                g.id,
                g.display_name,
                g.pack,
                len(g.rules),
                len(g.explicit_members),
                ", ".join(g.includes),
            )
            for g in rows
        ),
    )


@groups.command("show")
def group_show(ctx: typer.Context, group: str, as_json: JsonOpt = False) -> None:
    """Show a group and its current members."""
    g = backend(ctx).group_show(group)
    if as_json:
        output.emit_json(g)
        return
    output.fields(
        [
            ("Group", g.id),
            ("Name", g.display_name),
            ("Pack", g.pack),
            ("Rules", g.rules),
            ("Explicit", g.explicit_members),
            ("Includes", g.includes),
            ("Members", g.member_count),
        ]
    )
    for m in g.members or []:
        output.line(f"  {m}")
