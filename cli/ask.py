"""`zhiku ask`: a cited answer from the command line, streamed as it is generated."""

from __future__ import annotations

import asyncio
import json

import typer

from api.answers import Turnout, prepare_turn, run_turn, standalone_engine
from api.schemas import ChatOut
from cli.scope import library_scope
from core import db
from core.errors import ZhikuError
from core.models import User
from core.settings import Settings, get_settings
from serving.answering import Failure, Token


def _pages(start: int | None, end: int | None) -> str:
    if start is None:
        return ""
    return f", p. {start}" if end in (None, start) else f", pp. {start}–{end}"


def ask(
    question: str = typer.Argument(..., help="The question"),
    library: list[str] = typer.Option(
        [], "--library", "-l", help="Library name (repeatable; default: all)"
    ),
    as_user: str | None = typer.Option(
        None, "--as-user", help="Ask with this user's permissions; the turn is stored as theirs"
    ),
    conversation: int | None = typer.Option(
        None, "--conversation", help="Continue this conversation (needs --as-user)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
) -> None:
    """Ask the knowledge base; the answer streams in, then its sources."""
    settings = get_settings()
    db.migrate(settings)
    try:
        with db.session_scope(settings) as session:
            scope = library_scope(session, library, as_user)
            ids, user = scope.library_ids, scope.user
            if conversation is not None and user is None:
                raise ZhikuError("--conversation needs --as-user (conversations have owners)")
            turn = (
                prepare_turn(
                    session,
                    user,
                    ids,
                    conversation,
                    settings.history_turns,
                    filters=scope.filters,
                )
                if user is not None
                else Turnout(
                    User(username="zhiku-cli", password_hash=""), ids, None, [], store=False
                )
            )
    except ZhikuError as exc:
        typer.secho(exc.reason, fg="red", err=True)
        raise typer.Exit(2) from None
    out = asyncio.run(_run(settings, turn, question, as_json))
    if out is None:
        raise typer.Exit(1)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "answer": out.answer,
                    "citations": [c.model_dump(mode="json") for c in out.citations],
                    "sources": [s.model_dump(mode="json") for s in out.sources],
                    "not_found": out.not_found,
                    "blocked": out.blocked,
                    "conversation_id": out.conversation_id,
                    "standalone_question": out.standalone_question,
                    "flags": out.flags,
                    "timings": out.timings,
                },
                ensure_ascii=False,
            )
        )
        return
    if out.blocked or out.not_found:
        return
    if out.sources:
        typer.echo("\nSources:")
        for s in out.sources:
            typer.echo(
                f"  [{s.marker}] {s.title} ({s.library_name}{_pages(s.page_start, s.page_end)})"
            )
    flagged = out.flags.get("unsupported_sentences") or []
    if isinstance(flagged, list) and flagged:
        typer.secho(f"  {len(flagged)} sentence(s) not supported by their sources", fg="yellow")


async def _run(settings: Settings, turn: Turnout, question: str, quiet: bool) -> ChatOut | None:
    engine = await standalone_engine(settings)
    streamed = False
    try:
        async for event, out in run_turn(engine, turn, question):
            if isinstance(event, Token) and not quiet:
                typer.echo(event.text, nl=False)
                streamed = True
            elif isinstance(event, Failure):
                typer.secho(f"\n{event.message}", fg="red", err=True)
                if event.detail:
                    typer.echo(event.detail, err=True)
                return None
            elif out is not None:
                if not quiet and (not streamed or out.blocked or out.not_found):
                    typer.echo(("\n" if streamed else "") + out.answer, nl=False)
                if not quiet:
                    typer.echo()
                return out
    finally:
        await engine.aclose()
    return None
