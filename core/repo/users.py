from __future__ import annotations

from sqlmodel import Session, select

from core.errors import Conflict, ZhikuError
from core.models import User
from core.security import hash_password

MIN_PASSWORD_LENGTH = 8


def validate_new_password(username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ZhikuError(
            f"password too short: use at least {MIN_PASSWORD_LENGTH} characters",
            code="weak_password",
            status=422,
        )
    if password.lower() == username.lower():
        raise ZhikuError("password must not be the username", code="weak_password", status=422)


def create_user(session: Session, username: str, password: str, *, is_admin: bool = False) -> User:
    username = username.strip()
    if not username or len(username) > 150:
        raise ZhikuError("username must be 1-150 characters", code="bad_username", status=422)
    validate_new_password(username, password)
    if get_by_username(session, username) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), is_admin=is_admin)
    session.add(user)
    session.flush()
    return user


def get_by_username(session: Session, username: str) -> User | None:
    return session.exec(select(User).where(User.username == username)).first()


def get(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def list_users(session: Session) -> list[User]:
    return list(session.exec(select(User).order_by(User.id)))  # type: ignore[arg-type]
