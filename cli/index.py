from __future__ import annotations

import typer

from core import db
from core.repo import libraries
from core.settings import get_settings
from workers.embedding import ingestion_embedder
from workers.indexing import sync_library_index

app = typer.Typer(no_args_is_help=True)


@app.command("rebuild")
def rebuild(library: str = typer.Option(..., "--library", "-l", help="Library name")) -> None:
    """Rebuild a library's vector and keyword indexes from its Chunk rows."""
    settings = get_settings()
    db.migrate(settings)
    with db.session_scope(settings) as session:
        lib = libraries.get_by_name(session, library)
    if lib is None or lib.id is None:
        typer.echo(f"error: no library named {library!r}", err=True)
        raise typer.Exit(1)
    result = sync_library_index(settings, lib.id, ingestion_embedder(settings), rebuild=True)
    if result is None:
        typer.echo(f"error: library {library!r} was deleted meanwhile", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"library {library}: index version {result.manifest.version}, "
        f"{result.manifest.count} chunks ({result.manifest.vector_kind})"
    )
