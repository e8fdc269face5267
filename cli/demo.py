"""`zhiku demo load`: a small library about using Zhiku itself, in Chinese and English, so a new
installation can answer a first question within minutes.

The documents ship inside the package (`cli/demo_docs/`) and go through the ordinary ingest
path. Loading is idempotent: documents are content-addressed, so a second load finds them
already in the library and adds nothing. When it creates the library, the load grants `read`
to every top-level department (a department's grant reaches its sub-departments), so everyone
filed in a department can try it; administrators read every library anyway. `--no-grant`
leaves access to the admin.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import typer
from sqlmodel import col, select

from cli.ingest_cmd import IngestSummary, ingest_paths
from core import db
from core.models import DocStatus, Document, Permission
from core.repo import audit, groups, libraries
from core.settings import Settings, get_settings
from core.storage import hash_stream
from retrieval import index_store

app = typer.Typer(no_args_is_help=True)

DEMO_DIR = Path(__file__).resolve().parent / "demo_docs"
DEFAULT_LIBRARY = "Zhiku demo"
DESCRIPTION = (
    "Zhiku's own user guide (中文/English): signing in, uploads and formats, questions and "
    "citations, access control, API keys, administration and backups. Loaded by "
    "`zhiku demo load`."
)
EXAMPLE_QUESTIONS = (
    "知库支持上传哪些文件格式？",
    "回答中的引用标记 [1] 是什么意思？",
    "知库的数据保存在哪里？如何备份？",
    "How do I give a department access to a library?",
    "Which scopes can an API key have?",
    "What does the Sources panel show?",
)


def demo_files() -> list[Path]:
    files = sorted(p for p in DEMO_DIR.iterdir() if p.is_file() and p.suffix == ".md")
    if not files:
        raise FileNotFoundError(f"no demo documents in {DEMO_DIR}")
    return files


@dataclass
class DemoLoad:
    library: str
    library_id: int
    created: bool  # the library was created by this load
    files: int  # demo documents shipped
    added: int  # documents ingested by this load
    ready: int  # demo documents ready in the library now
    failures: list[dict[str, str]]
    granted: list[str] = field(default_factory=list)  # departments given `read` now
    seconds: float = 0.0

    @property
    def already_loaded(self) -> bool:
        return self.added == 0 and self.ready == self.files and not self.failures

    def as_json(self) -> dict[str, object]:
        return {
            "library": self.library,
            "library_id": self.library_id,
            "created": self.created,
            "files": self.files,
            "added": self.added,
            "ready": self.ready,
            "already_loaded": self.already_loaded,
            "failures": self.failures,
            "granted": self.granted,
            "seconds": round(self.seconds, 3),
            "example_questions": list(EXAMPLE_QUESTIONS),
        }


def _create_library(settings: Settings, name: str, grant: bool) -> tuple[int, bool, list[str]]:
    """The library's id, whether it was created now, and the departments granted `read`."""
    with db.session_scope(settings) as session:
        lib = libraries.get_by_name(session, name)
        if lib is not None:
            assert lib.id is not None
            return lib.id, False, []
        lib = libraries.create(session, name, DESCRIPTION, None)
        assert lib.id is not None
        # As the api does: index files under this id can only be a deleted library's leftovers.
        with index_store.writer_lock(settings.indexes_dir, lib.id):
            index_store.drop_library(settings.indexes_dir, lib.id)
        audit.record(
            session, "library.create", target_type="library", target_id=lib.id, name=name, via="cli"
        )
        granted: list[str] = []
        if grant:
            for group in groups.list_all(session):
                if group.parent_id is not None or group.id is None:
                    continue
                libraries.grant(
                    session,
                    lib.id,
                    Permission.read,
                    user_id=None,
                    group_id=group.id,
                    created_by=None,
                )
                audit.record(
                    session,
                    "grant.set",
                    target_type="library",
                    target_id=lib.id,
                    group_id=group.id,
                    permission=Permission.read.value,
                    via="cli",
                )
                granted.append(group.name)
        return lib.id, True, granted


def _ready_count(settings: Settings, library_id: int, files: list[Path]) -> int:
    digests = []
    for path in files:
        with path.open("rb") as f:
            digests.append(hash_stream(f)[0])
    with db.session_scope(settings) as session:
        rows = session.exec(
            select(Document).where(
                Document.library_id == library_id,
                col(Document.sha256).in_(digests),
                Document.status == DocStatus.ready,
            )
        ).all()
    return len({d.sha256 for d in rows})


def load_demo(
    settings: Settings,
    library: str = DEFAULT_LIBRARY,
    *,
    queue: bool = False,
    grant: bool = True,
    quiet: bool = False,
    timeout: float = 1800,
) -> DemoLoad:
    """Create the demo library if needed and ingest what is not in it yet (in this process,
    or through the workers with `queue`)."""
    started = time.perf_counter()
    files = demo_files()
    library_id, created, granted = _create_library(settings, library, grant)
    summary: IngestSummary = ingest_paths(
        settings, files, library, False, not queue, quiet, timeout
    )
    return DemoLoad(
        library=library,
        library_id=library_id,
        created=created,
        files=len(files),
        added=summary.ready,
        ready=_ready_count(settings, library_id, files),
        failures=summary.failures,
        granted=granted,
        seconds=time.perf_counter() - started,
    )


@app.command("load")
def load(
    library: str = typer.Option(DEFAULT_LIBRARY, "--library", "-l", help="Library to load into"),
    queue: bool = typer.Option(
        False, "--queue", help="Hand the documents to the running workers instead of here"
    ),
    grant: bool = typer.Option(
        True,
        "--grant/--no-grant",
        help="When creating the library, let every department read it",
    ),
    timeout: float = typer.Option(1800, help="Seconds to wait for the documents"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary"),
) -> None:
    """Load the demo library: a few short documents about using Zhiku, in Chinese and English
    (idempotent)."""
    settings = get_settings()
    db.migrate(settings)
    if not as_json:
        typer.echo(
            f"Loading the demo library {library!r} ({len(demo_files())} documents, 中文/English)"
            + (" through the workers" if queue else "")
        )
    result = load_demo(settings, library, queue=queue, grant=grant, quiet=as_json, timeout=timeout)
    if as_json:
        typer.echo(json.dumps(result.as_json(), ensure_ascii=False))
    else:
        _report(result, grant)
    if result.failures:
        raise typer.Exit(2)


def _report(result: DemoLoad, grant: bool) -> None:
    if result.already_loaded:
        typer.echo(f"already loaded: {result.ready} documents ready in {result.library!r}")
    else:
        typer.echo(
            f"loaded {result.added} documents into {result.library!r} in {result.seconds:.0f} s "
            f"({result.ready}/{result.files} ready)"
        )
    for f in result.failures:
        typer.secho(f"  failed: {f['file']}: {f['reason']}", fg="red", err=True)
    if result.created:
        if result.granted:
            typer.echo(
                "Read access given to the departments "
                + ", ".join(result.granted)
                + " (and their sub-departments); administrators read every library."
            )
        else:
            reason = "" if not grant else " (there are no departments yet)"
            typer.echo(
                f"Only administrators can read it{reason}: give access under Manage → "
                f"Libraries → {result.library} → Access."
            )
    typer.echo("Ask it in the web UI (Ask), or here, e.g.:")
    for question in EXAMPLE_QUESTIONS:
        typer.echo(f'  .venv/bin/zhiku ask "{question}"')
