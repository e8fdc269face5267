"""`zhiku backup DEST` and `zhiku restore SRC` (docs/backup.md)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from core.backup import BackupError, ProgressFn, restore_backup
from core.settings import Settings, get_settings
from workers.backup import create_backup

BYTE_STAGES = {"indexes", "verifying", "files"}


@contextmanager
def _bars(quiet: bool) -> Iterator[ProgressFn]:
    """One bar per stage (originals, database, indexes; verifying, files, database)."""
    progress = Progress(
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        TextColumn("{task.fields[amount]}"),
        TimeElapsedColumn(),
        disable=quiet,
    )
    tasks: dict[str, TaskID] = {}
    count, size = MofNCompleteColumn(), DownloadColumn()

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total or None, amount="")
        task_id = tasks[stage]
        progress.update(task_id, completed=done, total=total or None)
        task = progress.tasks[task_id]
        column = size if stage in BYTE_STAGES else count
        progress.update(task_id, amount=column.render(task))

    with progress:
        yield update


class _Result(Protocol):
    def as_json(self) -> dict[str, object]: ...


R = TypeVar("R", bound=_Result)


def _carry_out(
    action: Callable[[Settings, Path, ProgressFn], R], path: Path, as_json: bool
) -> R | None:
    """Run a backup or a restore with progress bars; its result, or None once printed as
    JSON. A BackupError ends the command with its message (exit 1)."""
    try:
        with _bars(as_json) as progress:
            result = action(get_settings(), path, progress)
    except BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(result.as_json(), ensure_ascii=False))
        return None
    return result


def backup(
    dest: Path = typer.Argument(..., help="A new (or empty) directory to write the backup to"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON"),
) -> None:
    """Back up the database, the originals, the search indexes and the instance secrets while
    the system runs. The backup holds secrets: keep it as safe as the server."""
    result = _carry_out(create_backup, dest, as_json)
    if result is None:
        return
    m = result.manifest
    c = m.counts
    typer.echo(
        f"backup written to {result.dest}: {c['libraries']} libraries, {c['documents']} "
        f"documents ({c['documents_ready']} ready), {c['chunks']} chunks, {c['originals']} "
        f"originals, {len(m.files)} files, {m.total_bytes / 1e6:.1f} MB in {m.seconds:.1f} s"
    )
    for warning in m.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo("It contains the instance secrets and password hashes: store it like the server.")


def restore(
    src: Path = typer.Argument(..., help="A directory written by `zhiku backup`"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON"),
) -> None:
    """Restore a backup into an empty data dir (ZHIKU_DATA_DIR) and an empty database
    (ZHIKU_DATABASE_URL). Every file is checked against its sha256 first. Stop the api and
    the workers of the target first."""
    settings = get_settings()
    result = _carry_out(restore_backup, src, as_json)
    if result is None:
        return
    c = result.manifest.counts
    typer.echo(
        f"restored the backup of {result.manifest.created_at} into {settings.data_dir}: "
        f"{c['libraries']} libraries, {c['documents']} documents, {c['chunks']} chunks, "
        f"{result.bytes / 1e6:.1f} MB in {result.seconds:.1f} s. Start the api and the workers."
    )
