from __future__ import annotations

import typer

from core import db
from core.errors import ZhikuError
from core.repo import audit, users
from core.settings import get_settings

app = typer.Typer(no_args_is_help=True)


@app.command("create-user")
def create_user(
    username: str,
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True),
    admin: bool = typer.Option(False, "--admin", help="Make the user an administrator"),
) -> None:
    """Create a user (the first admin bootstraps everything else)."""
    settings = get_settings()
    db.migrate(settings)
    try:
        with db.session_scope(settings) as session:
            user = users.create_user(session, username, password, is_admin=admin)
            audit.record(
                session,
                "user.create",
                target_type="user",
                target_id=user.id or "",
                username=username,
                is_admin=admin,
                via="cli",
            )
    except ZhikuError as exc:
        typer.echo(f"error: {exc.reason}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"created {'admin' if admin else 'user'} {username} (id {user.id})")
