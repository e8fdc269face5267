from __future__ import annotations

import os
import secrets
from pathlib import Path

import typer

from core import db, passwords
from core.errors import ZhikuError
from core.models import Role, utcnow
from core.repo import audit, users
from core.settings import get_settings

app = typer.Typer(no_args_is_help=True)

INITIAL_ADMIN_FILE = "initial-admin.txt"
# No 0/o, 1/l: the password is read off a screen and typed. 32 symbols, 5 bits each.
_PASSWORD_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"


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


def generate_password(groups: int = 5, size: int = 4) -> str:
    """A random password of `groups` dash-separated groups (default 20 symbols, 100 bits)."""
    while True:
        password = "-".join(
            "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(size)) for _ in range(groups)
        )
        try:
            passwords.check("admin", password)
        except passwords.WeakPassword:  # practically never; the policy decides, not us
            continue
        return password


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by the owner only (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _file_username(path: Path) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "user":
            return value.strip()
    return None


@app.command("bootstrap")
def bootstrap(
    username: str = typer.Option("admin", "--username", help="Name of the first administrator"),
    url: str = typer.Option("", "--url", help="Where the web UI is (for the sign-in notice)"),
) -> None:
    """Create the first administrator if there is none: a random password, shown once here and
    kept in DATA_DIR/initial-admin.txt (mode 0600) until it has been changed. The account
    must choose a new password at first sign-in. Does nothing secret when an admin exists."""
    settings = get_settings()
    db.migrate(settings)
    path = settings.data_dir / INITIAL_ADMIN_FILE
    password = generate_password()
    try:
        with db.session_scope(settings) as session:
            if users.count_admins(session, active_only=False) > 0:
                created = False
                pending = False
                if path.exists():
                    named = _file_username(path)
                    holder = users.get_by_username(session, named) if named else None
                    pending = holder is not None and holder.must_change_password
            else:
                created = True
                user = users.create_user(
                    session, username, password, role=Role.admin, must_change_password=True
                )
                audit.record(
                    session,
                    "user.create",
                    target_type="user",
                    target_id=user.id or "",
                    username=user.username,
                    role=Role.admin.value,
                    via="cli",
                    bootstrap=True,
                )
                # Written before the commit: if the file cannot be written, no account exists
                # whose password nobody knows.
                _write_private(
                    path,
                    "Zhiku: the first administrator, created "
                    f"{utcnow():%Y-%m-%d %H:%M} UTC by `zhiku admin bootstrap`\n"
                    f"user: {user.username}\n"
                    f"password: {password}\n"
                    "Sign in and choose a new password (you are asked to at the first sign-in).\n"
                    "This file is deleted by the next `make run` (`zhiku admin bootstrap`) once\n"
                    "the password has been changed; you may delete it yourself.\n",
                )
    except ZhikuError as exc:
        typer.echo(f"error: {exc.reason}", err=True)
        raise typer.Exit(1) from None
    where = f" at {url}" if url else ""
    if created:
        typer.echo(
            "\nThe first administrator was created. Its password is shown this once:\n"
            f"  user:     {username.strip()}\n"
            f"  password: {password}\n"
            f"Sign in{where}; you will be asked to choose a new password.\n"
            f"(Also saved in {path}, readable only by you; it is deleted once the password\n"
            "has been changed.)\n"
        )
    elif pending:
        typer.echo(
            "an administrator exists; the first administrator's initial password is in "
            f"{path} until it is changed (sign in{where} to change it)"
        )
    else:
        if path.exists():
            path.unlink()
            typer.echo(f"removed {path}: the initial password has been changed")
        typer.echo(
            "an administrator exists (forgot the password? "
            ".venv/bin/zhiku admin reset-password NAME)"
        )
