"""``runas init``, ``runas db upgrade`` and ``runas key …``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from runas.cli import output
from runas.cli.state import backend
from runas.services.keys import Progress as ProgressFn
from runas.services.keys import RotateResult

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]

db = typer.Typer(help="The operational database.")
keys = typer.Typer(help="Key-encryption keys: list, rotate, re-wrap, retire.")


def init(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Option("--name", help="Management group name (default: 'default').")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create (or upgrade) the management group: data directory, keyring, database, system pack."""
    r = backend(ctx).init(name)
    if as_json:
        output.emit_json(r)
        return
    output.line(f"management group {r.management_group!r} ready")
    output.fields(
        [
            ("  data directory", r.data_dir),
            ("  database", r.database),
            ("  keyring", r.keyring + (" (created, mode 0600)" if r.keyring_created else "")),
            ("  schema", r.schema_revision),
            ("  system pack", f"runas.system {r.system_pack}"),
        ]
    )


@db.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Run the database migrations up to this version's schema."""
    rev = backend(ctx).db_upgrade()
    output.line(f"database schema at revision {rev}")


@keys.command("list")
def key_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the key-encryption keys and how many secret versions each wraps."""
    rows = backend(ctx).key_list()
    if as_json:
        output.emit_json(rows)
        return
    output.table(
        ["Key", "Created", "Active", "Secret versions"],
        (
            (k.id, f"{k.created:%Y-%m-%d %H:%M}", "yes" if k.active else "", k.secret_versions)
            for k in rows
        ),
    )


def _with_progress(
    run: Callable[[ProgressFn | None], RotateResult], label: str, as_json: bool
) -> RotateResult:
    if as_json:
        return run(None)
    # The bar starts with the first report of progress: a command refused before any work
    # (keyring not writable, rotation already running) prints its one error line and nothing else.
    bar: Progress | None = None
    task: TaskID | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar, task
        if bar is None:
            bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), transient=False)
            bar.start()
            task = bar.add_task(label, total=None)
        assert task is not None
        bar.update(task, completed=done, total=max(total, 1) if total else 1)
        if total == 0:
            bar.update(task, completed=1)

    try:
        return run(progress)
    finally:
        if bar is not None:
            bar.stop()


@keys.command("rotate")
def key_rotate(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Add a new key-encryption key and re-wrap every data key with it, online."""
    r = _with_progress(backend(ctx).key_rotate, "re-wrapping data keys", as_json)
    if as_json:
        output.emit_json(r)
        return
    output.line(f"new active key {r.active_key}; {r.rewrapped} secret version(s) re-wrapped")
    output.line("older keys can be retired: runas key retire KEY")


@keys.command("rewrap")
def key_rewrap(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Re-wrap whatever is not yet under the active key (finishes an interrupted rotation)."""
    r = _with_progress(backend(ctx).key_rewrap, "re-wrapping data keys", as_json)
    if as_json:
        output.emit_json(r)
        return
    output.line(f"{r.rewrapped} secret version(s) re-wrapped under {r.active_key}")


@keys.command("retire")
def key_retire(ctx: typer.Context, key_id: str, as_json: JsonOpt = False) -> None:
    """Remove an old key from the keyring (refused while any secret depends on it)."""
    rows = backend(ctx).key_retire(key_id)
    if as_json:
        output.emit_json(rows)
        return
    output.line(f"retired {key_id}; the keyring now holds {len(rows)} key(s)")
