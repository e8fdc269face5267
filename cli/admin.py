from __future__ import annotations

import typer

from core import db
from core.errors import ZhikuError
from core.models import Role
from core.repo import audit, users
from core.settings import get_settings

app = typer.Typer(no_args_is_help=True)


@app.command("create-user")
def create_user(
    username: str,
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True),
    admin: bool = typer.Option(False, "--admin", help="Make the user an administrator"),
    role: Role = typer.Option(Role.staff, "--role", help="admin, librarian or staff"),
) -> None:
    """Create a user (the first admin bootstraps everything else). The password must have at
    least 12 characters and not be a common one."""
    settings = get_settings()
    db.migrate(settings)
    chosen = Role.admin if admin else role
    try:
        with db.session_scope(settings) as session:
            user = users.create_user(session, username, password, role=chosen)
            audit.record(
                session,
                "user.create",
                target_type="user",
                target_id=user.id or "",
                username=username,
                role=chosen.value,
                via="cli",
            )
    except ZhikuError as exc:
        typer.echo(f"error: {exc.reason}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"created {chosen.value} {username} (id {user.id})")


@app.command("create-api-key")
def create_api_key(
    name: str = typer.Argument(..., help="What the key is for, e.g. 'OA system'"),
    owner: str = typer.Option(..., "--owner", help="The user the key acts for"),
    library: list[str] = typer.Option(
        [],
        "--library",
        "-l",
        help="Limit the key to this library (repeatable; default: all the owner may read)",
    ),
    scope: list[str] = typer.Option(
        ["chat", "search"], "--scope", help="chat, search, ingest, act_as (repeatable)"
    ),
    days: int | None = typer.Option(None, "--days", help="Expire after this many days"),
) -> None:
    """Create an API key for an office system; the key is printed once and never stored."""
    from datetime import timedelta

    from core.models import utcnow
    from core.repo import api_keys, libraries

    settings = get_settings()
    db.migrate(settings)
    try:
        with db.session_scope(settings) as session:
            user = users.get_by_username(session, owner)
            if user is None:
                raise ZhikuError(f"no user named {owner!r}")
            ids = []
            for lib_name in library:
                lib = libraries.get_by_name(session, lib_name)
                if lib is None or lib.id is None:
                    raise ZhikuError(f"no library named {lib_name!r}")
                ids.append(lib.id)
            expires = utcnow() + timedelta(days=days) if days else None
            try:
                key, plaintext = api_keys.create(session, user, name, scope, ids, expires)
            except ValueError as exc:
                raise ZhikuError(str(exc)) from None
            audit.record(
                session,
                "api_key.create",
                actor_user_id=user.id,
                target_type="api_key",
                target_id=key.id or "",
                name=name,
                scopes=scope,
                libraries=ids,
                via="cli",
            )
    except ZhikuError as exc:
        typer.echo(f"error: {exc.reason}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"API key {key.prefix}… for {owner} ({', '.join(scope)}); shown once:")
    typer.echo(plaintext)


@app.command("reset-password")
def reset_password(
    username: str,
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True),
    must_change: bool = typer.Option(
        False, "--must-change", help="Make the user choose a new password at next sign-in"
    ),
) -> None:
    """Set a user's password from the server (e.g. the last admin forgot theirs); ends every
    sign-in of that user."""
    from core.repo import tokens

    settings = get_settings()
    db.migrate(settings)
    try:
        with db.session_scope(settings) as session:
            user = users.get_by_username(session, username)
            if user is None or user.id is None:
                raise ZhikuError(f"no user named {username!r}")
            users.set_password(session, user, password, must_change=must_change)
            tokens.revoke_all(session, user.id)
            audit.record(
                session, "user.password_reset", target_type="user", target_id=user.id, via="cli"
            )
    except ZhikuError as exc:
        typer.echo(f"error: {exc.reason}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"password of {username} changed; their sign-ins have ended")
