"""Accounts: creation with the password policy, role and state changes, password resets."""

from __future__ import annotations

from sqlmodel import Session, col, func, select

from core import passwords
from core.errors import Conflict, ZhikuError
from core.models import Group, GroupMember, Role, User, utcnow
from core.security import hash_password


def _clean_username(username: str) -> str:
    username = username.strip()
    if not username or len(username) > 150 or any(c.isspace() or ord(c) < 32 for c in username):
        raise ZhikuError(
            "username must be 1-150 characters without spaces", code="bad_username", status=422
        )
    return username


def create_user(
    session: Session,
    username: str,
    password: str | None,
    *,
    role: Role = Role.staff,
    display_name: str = "",
    auth_source: str = "local",
    must_change_password: bool = False,
) -> User:
    """A new account. `password=None` only for accounts of a directory provider."""
    username = _clean_username(username)
    if password is None and auth_source == "local":
        raise ZhikuError("a local account needs a password", code="weak_password", status=422)
    if password is not None:
        passwords.check(username, password)
    if get_by_username(session, username) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(
        username=username,
        display_name=display_name[:200],
        password_hash=hash_password(password) if password is not None else "",
        role=Role(role).value,
        auth_source=auth_source,
        must_change_password=must_change_password,
        password_changed_at=utcnow() if password is not None else None,
    )
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, user: User, password: str, *, must_change: bool = False) -> None:
    if user.auth_source != "local":
        raise ZhikuError(
            f"{user.username} signs in through {user.auth_source}; change the password there",
            code="external_account",
            status=409,
        )
    passwords.check(user.username, password)
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    user.must_change_password = must_change
    session.add(user)
    session.flush()


def get_by_username(session: Session, username: str) -> User | None:
    return session.exec(select(User).where(User.username == username.strip())).first()


def get(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def list_users(session: Session) -> list[User]:
    return list(session.exec(select(User).order_by(col(User.id))))


def count_admins(session: Session, *, active_only: bool = True) -> int:
    query = select(func.count()).select_from(User).where(User.role == Role.admin.value)
    if active_only:
        query = query.where(col(User.is_active).is_(True))
    return int(session.exec(query).one())


def group_names_of(session: Session, user_id: int) -> list[str]:
    rows = session.exec(
        select(Group.name)
        .join(GroupMember, col(GroupMember.group_id) == col(Group.id))
        .where(GroupMember.user_id == user_id)
        .order_by(col(Group.name))
    )
    return list(rows)
