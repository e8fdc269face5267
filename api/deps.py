"""Request dependencies: settings, database session, the signed-in user, permissions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from core import db
from core.errors import Forbidden, NotFound, Unauthorized
from core.models import PERMISSION_RANK, Library, Permission, User
from core.repo import libraries, tokens
from core.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with Session(db.get_engine(settings), expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
_bearer = HTTPBearer(auto_error=False)


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def current_user(session: SessionDep, creds: BearerDep) -> User:
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthorized("sign in first: send 'Authorization: Bearer <token>' from /auth/login")
    user = tokens.user_for(session, creds.credentials)
    if user is None:
        raise Unauthorized("the token is invalid or expired; sign in again")
    return user


UserDep = Annotated[User, Depends(current_user)]


def require_admin(user: UserDep) -> User:
    if not user.is_admin:
        raise Forbidden("only administrators may do this")
    return user


AdminDep = Annotated[User, Depends(require_admin)]


def library_for(
    session: Session, user: User, library_id: int, need: Permission = Permission.read
) -> Library:
    """The library if the user may `need` it. A library the user may not read answers 404,
    so its existence does not leak; one readable but not writable answers 403."""
    lib = libraries.get(session, library_id)
    perm = libraries.permission_on(session, user, library_id) if lib is not None else None
    if lib is None or perm is None:
        raise NotFound(f"library {library_id} not found")
    if PERMISSION_RANK[perm] < PERMISSION_RANK[need]:
        raise Forbidden(f"you need '{need.value}' permission on this library")
    return lib


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""
