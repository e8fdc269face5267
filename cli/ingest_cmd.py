from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from api import admission
from api.multipart import ReceivedFile
from core import db
from core.models import DocStatus, Document
from core.repo import documents, libraries
from core.settings import Settings, get_settings
from core.storage import hash_stream
from core.tasks import enqueue_ingest
from workers.batch import run_inline


@dataclass
class IngestSummary:
    library_id: int
    ready: int
    duplicates: int
    failures: list[dict[str, str]]
    chunks: int
    seconds: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "ready": self.ready,
            "failed": len(self.failures),
            "duplicates": self.duplicates,
            "failures": self.failures,
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
        }


def collect(paths: list[Path]) -> list[ReceivedFile]:
    """Files to upload; a folder contributes every file below it with its relative path."""
    out: list[ReceivedFile] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
            for f in files:
                out.append(_received(f, f"{path.name}/{f.relative_to(path).as_posix()}"))
        elif path.is_file():
            out.append(_received(path, path.name))
        else:
            raise typer.BadParameter(f"{path} does not exist")
    return out


def _received(path: Path, name: str) -> ReceivedFile:
    with path.open("rb") as f:
        sha, size = hash_stream(f)
    return ReceivedFile(field="files", filename=name, path=path, size=size, sha256=sha)


def _load(settings: Settings, ids: list[int]) -> dict[int, Document]:
    with db.session_scope(settings) as session:
        return {i: d for i in ids if (d := documents.get(session, i)) is not None}


def progress_bar(quiet: bool, *, transient: bool = False) -> Progress:
    """The CLI's progress bar (off when the output is JSON)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=quiet,
        transient=transient,
    )


def ingest(
    paths: list[Path] = typer.Argument(..., help="Files, folders or .zip archives"),
    library: str = typer.Option(..., "--library", "-l", help="Library name"),
    create: bool = typer.Option(False, "--create", help="Create the library if it is missing"),
    inline: bool = typer.Option(False, "--inline", help="Run the pipeline here, no broker"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary"),
    timeout: float = typer.Option(3600, help="Seconds to wait for the workers"),
) -> None:
    settings = get_settings()
    db.migrate(settings)
    started = time.perf_counter()
    summary = ingest_paths(settings, paths, library, create, inline, as_json, timeout)
    summary.seconds = time.perf_counter() - started
    if as_json:
        typer.echo(json.dumps(summary.as_json(), ensure_ascii=False))
    else:
        typer.echo(
            f"ready {summary.ready}, failed {len(summary.failures)}, duplicates "
            f"{summary.duplicates}, chunks {summary.chunks} in {summary.seconds:.1f} s"
        )
        for f in summary.failures:
            typer.echo(f"  failed: {f['file']}: {f['reason']}")
    if summary.failures:
        raise typer.Exit(2)


def ingest_paths(
    settings: Settings,
    paths: list[Path],
    library: str,
    create: bool,
    inline: bool,
    quiet: bool,
    timeout: float,
) -> IngestSummary:
    files = collect(paths)
    with db.session_scope(settings) as session:
        lib = libraries.get_by_name(session, library)
        if lib is None:
            if not create:
                raise typer.BadParameter(f"no library named {library!r}; add --create")
            lib = libraries.create(session, library, "", None)
        assert lib.id is not None
        library_id = lib.id
        report, queued = admission.admit(session, settings, library_id, files, None)
    failures = [
        {"file": i.file, "reason": i.reason or ""} for i in report.items if i.status == "rejected"
    ]
    names = {i.document_id: i.file for i in report.items if i.document_id is not None}
    ids = [i for i, _ in queued]
    with progress_bar(quiet) as progress:
        task = progress.add_task("ingesting", total=len(queued))
        if inline:
            run_inline(settings, library_id, queued, on_done=lambda _: progress.advance(task))
            docs = _load(settings, ids)
        else:
            for doc_id, version in queued:
                enqueue_ingest(doc_id, version, settings)
            deadline = time.monotonic() + timeout
            while True:
                docs = _load(settings, ids)
                done = sum(d.status in (DocStatus.ready, DocStatus.failed) for d in docs.values())
                progress.update(task, completed=done)
                if done == len(ids) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
    ready = [d for d in docs.values() if d.status == DocStatus.ready]
    failed = [d for d in docs.values() if d.status == DocStatus.failed]
    unfinished = [d for d in docs.values() if d.status not in (DocStatus.ready, DocStatus.failed)]
    failures += [
        {"file": names.get(d.id or 0, d.filename), "reason": d.reason or ""} for d in failed
    ]
    failures += [
        {"file": names.get(d.id or 0, d.filename), "reason": f"unfinished ({d.status})"}
        for d in unfinished
    ]
    return IngestSummary(
        library_id=library_id,
        ready=len(ready),
        duplicates=report.duplicates,
        failures=failures,
        chunks=sum(d.chunk_count for d in ready),
    )
