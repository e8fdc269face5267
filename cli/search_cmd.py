"""`zhiku search`: the search service from the command line."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer

from cli.scope import library_scope
from core import db
from core.errors import ZhikuError
from core.settings import get_settings
from core.types import Passage
from retrieval.service import MODES, Retriever

SNIPPET_CHARS = 400


def _pages(p: Passage) -> str:
    if p.page_start is None:
        return ""
    if p.page_end is None or p.page_end == p.page_start:
        return f"p. {p.page_start}"
    return f"pp. {p.page_start}–{p.page_end}"


def _describe(rank: int, p: Passage) -> str:
    name = p.title if p.title == p.filename or not p.filename else f"{p.title} ({p.filename})"
    where = " · ".join(
        x for x in (name, p.library_name, _pages(p), " › ".join(p.heading_path)) if x
    )
    scores = "  ".join(f"{k} {v:.4g}" for k, v in sorted(p.scores.items()))
    text = " ".join(p.text.split())
    if len(text) > SNIPPET_CHARS:
        text = text[:SNIPPET_CHARS] + "…"
    return f"[{rank}] {where}\n    score {p.score:.4g}  ({scores})\n    {text}"


def search(
    query: str = typer.Argument(..., help="Question or keywords"),
    library: list[str] = typer.Option(
        [], "--library", "-l", help="Library name (repeatable; default: all)"
    ),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Passages to show"),
    mode: str = typer.Option("hybrid", help=f"One of: {', '.join(MODES)}"),
    rerank: bool | None = typer.Option(
        None, "--rerank/--no-rerank", help="Default: rerank when a reranker is installed"
    ),
    as_user: str | None = typer.Option(
        None, "--as-user", help="Search with this user's permissions (what would they see?)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
) -> None:
    """Search the knowledge base and show passages with their provenance."""
    settings = get_settings()
    db.migrate(settings)
    try:
        with db.session_scope(settings) as session:
            scope = library_scope(session, library, as_user)
            ids = scope.library_ids
            result = Retriever(settings).search(
                session,
                query,
                ids,
                top_k=top_k,
                mode=mode,
                rerank=rerank,
                filters=scope.filters,
            )
    except ZhikuError as exc:
        typer.echo(f"error: {exc.reason}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        out = {
            "query": result.query,
            "language": result.language,
            "mode": result.mode,
            "reranked": result.reranked,
            "library_ids": ids,
            "took_ms": result.took_ms,
            "results": [asdict(p) for p in result.passages],
        }
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    if not result.passages:
        typer.echo("no passages found" + ("" if ids else ": no library to search"))
        return
    for rank, passage in enumerate(result.passages, start=1):
        typer.echo(_describe(rank, passage))
    typer.echo(
        f"({len(result.passages)} passages in {result.took_ms:.0f} ms, "
        f"{result.mode}{' + rerank' if result.reranked else ''})"
    )
