"""`zhiku audit`: export the audit log, purge what is past retention."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core import audit_export, db
from core.audit_export import ExportFormat
from core.models import AuditEvent, utcnow
from core.repo import audit, users
from core.settings import Settings, get_settings

app = typer.Typer(no_args_is_help=True)


def _when(value: str | None, option: str) -> datetime | None:
    """ISO 8601 date or date-time; UTC unless it says otherwise."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 date or time (e.g. 2025-01-31 or "
            "2025-01-31T08:00:00+08:00)",
            param_hint=option,
        ) from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _actor_id(settings: Settings, username: str | None) -> int | None:
    if username is None:
        return None
    with db.session_scope(settings) as session:
        user = users.get_by_username(session, username)
        if user is None or user.id is None:
            typer.echo(f"error: no user named {username!r}", err=True)
            raise typer.Exit(1)
        return user.id


@app.command("export")
def export(
    fmt: str = typer.Option("csv", "--format", "-f", help="csv or jsonl"),
    out: str = typer.Option("-", "--out", "-o", help="Output file; '-' writes to stdout"),
    since: str | None = typer.Option(None, "--since", help="Events at or after (ISO 8601)"),
    until: str | None = typer.Option(None, "--until", help="Events before (ISO 8601)"),
    action: list[str] = typer.Option(
        [], "--action", "-a", help="Action, repeatable; 'login.' matches every login.…"
    ),
    user: str | None = typer.Option(None, "--user", "-u", help="Only events by this user"),
) -> None:
    """Write the audit log (oldest first) as CSV or JSON Lines. A CSV file gets a UTF-8 BOM
    for Excel; cells that look like formulas are prefixed with '."""
    if fmt not in audit_export.FORMATS:
        raise typer.BadParameter(
            f"use one of {', '.join(audit_export.FORMATS)}", param_hint="--format"
        )
    export_format: ExportFormat = "csv" if fmt == "csv" else "jsonl"
    settings = get_settings()
    db.migrate(settings)
    filters: dict[str, Any] = {
        "since": _when(since, "--since"),
        "until": _when(until, "--until"),
        "actions": tuple(a for a in action if a),
        "actor_user_id": _actor_id(settings, user),
    }
    to_file = out != "-"
    described = {
        k: (audit_export.iso_utc(v) if isinstance(v, datetime) else v)
        for k, v in filters.items()
        if v not in (None, ())
    }
    if "actions" in described:
        described["actions"] = list(described["actions"])
    if user is not None:
        described["user"] = user
    with db.session_scope(settings) as session:
        audit.record(
            session,
            "audit.export",
            format=export_format,
            filters=described,
            via="cli",
            os_user=_os_user(),
            out=str(Path(out).resolve()) if to_file else "-",
        )
    written = 0
    with ExitStack() as stack:
        session = stack.enter_context(db.session_scope(settings))
        stream: TextIO = (
            stack.enter_context(Path(out).open("w", encoding="utf-8", newline=""))
            if to_file
            else sys.stdout
        )
        progress = stack.enter_context(
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                disable=not to_file,
            )
        )
        task = progress.add_task("audit events", total=audit.count(session, **filters))

        def counted(events: Iterator[AuditEvent]) -> Iterator[AuditEvent]:
            nonlocal written
            for event in events:
                written += 1
                progress.advance(task)
                yield event

        events = counted(audit.iter_events(session, **filters))
        for piece in audit_export.iter_export(events, export_format, bom=to_file):
            stream.write(piece)
        stream.flush()
        progress.update(task, total=written)
    if to_file:
        typer.echo(f"wrote {written} audit events to {out}", err=True)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (e.g. a container without a passwd entry)
        return ""


@app.command("purge")
def purge(
    older_than_days: int | None = typer.Option(
        None,
        "--older-than-days",
        min=1,
        help="Delete events older than this many days (default: audit_retention_days)",
    ),
) -> None:
    """Delete audit events past retention (records one audit.purge event)."""
    settings = get_settings()
    db.migrate(settings)
    days = older_than_days if older_than_days is not None else settings.audit_retention_days
    if days <= 0:
        typer.echo("audit_retention_days is 0: audit events are kept for ever; nothing purged")
        return
    cutoff = utcnow() - timedelta(days=days)
    with db.session_scope(settings) as session:
        deleted = audit.purge_older_than(
            session, cutoff, via="cli", older_than_days=days, os_user=_os_user()
        )
    typer.echo(f"purged {deleted} audit events older than {audit_export.iso_utc(cutoff)}")
