"""Accounts. Admins manage them; librarians may list them (to grant access)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlmodel import Session

from api.access_schemas import PasswordResetIn, UserIn, UserOut, UserPatch, user_out
from api.deps import AdminDep, ManagerPrincipal, SessionDep, client_ip, limiter
from api.routes.auth import account_key
from core.errors import Conflict, NotFound
from core.models import Role, User
from core.repo import audit, tokens, users

router = APIRouter(prefix="/users", tags=["users"])


def _user(session: Session, user_id: int) -> User:
    user = users.get(session, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


@router.post("", response_model=UserOut, status_code=201)
def create_user(body: UserIn, request: Request, session: SessionDep, admin: AdminDep) -> UserOut:
    """Create a local account. By default the user must choose a new password at first
    sign-in, so the one given here is only ever temporary."""
    user = users.create_user(
        session,
        body.username,
        body.password,
        role=Role(body.role),
        display_name=body.display_name,
        must_change_password=body.must_change_password,
    )
    audit.record(
        session,
        "user.create",
        actor_user_id=admin.id,
        target_type="user",
        target_id=user.id or "",
        client_ip=client_ip(request),
        username=user.username,
        role=user.role,
    )
    session.commit()
    return user_out(session, user)


@router.get("", response_model=list[UserOut])
def list_users(session: SessionDep, _: ManagerPrincipal) -> list[UserOut]:
    return [user_out(session, u) for u in users.list_users(session)]


@router.get("/{user_id}", response_model=UserOut)
def get_user(user_id: int, session: SessionDep, _: ManagerPrincipal) -> UserOut:
    return user_out(session, _user(session, user_id))


@router.patch("/{user_id}", response_model=UserOut)
def update_user(
    user_id: int, body: UserPatch, request: Request, session: SessionDep, admin: AdminDep
) -> UserOut:
    """Rename, change the role, or disable/enable. Disabling ends every sign-in at once."""
    user = _user(session, user_id)
    changes: dict[str, Any] = {}
    demoting = (body.role is not None and body.role != Role.admin) or body.is_active is False
    if user.is_admin and demoting and users.count_admins(session) <= 1:
        raise Conflict("this is the last active administrator; make another admin first")
    if body.display_name is not None and body.display_name != user.display_name:
        user.display_name = body.display_name
        changes["display_name"] = body.display_name
    if body.role is not None and body.role != user.role:
        changes["role"] = [user.role, body.role]
        user.role = body.role
    if body.is_active is not None and body.is_active != user.is_active:
        user.is_active = body.is_active
        changes["is_active"] = body.is_active
        if not body.is_active:
            tokens.revoke_all(session, user_id)
    session.add(user)
    if changes:
        action = "user.disable" if changes.get("is_active") is False else "user.update"
        audit.record(
            session,
            action,
            actor_user_id=admin.id,
            target_type="user",
            target_id=user_id,
            client_ip=client_ip(request),
            **changes,
        )
    session.commit()
    return user_out(session, user)


@router.post("/{user_id}/password", status_code=204)
def reset_password(
    user_id: int, body: PasswordResetIn, request: Request, session: SessionDep, admin: AdminDep
) -> Response:
    """Set a temporary password (the user changes it at next sign-in), end the user's
    sign-ins and lift a lockout."""
    user = _user(session, user_id)
    users.set_password(session, user, body.password, must_change=body.must_change_password)
    tokens.revoke_all(session, user_id)
    limiter(request).reset(account_key(user.username))
    audit.record(
        session,
        "user.password_reset",
        actor_user_id=admin.id,
        target_type="user",
        target_id=user_id,
        client_ip=client_ip(request),
    )
    session.commit()
    return Response(status_code=204)


@router.post("/{user_id}/unlock", status_code=204)
def unlock(user_id: int, request: Request, session: SessionDep, admin: AdminDep) -> Response:
    """Lift a lockout after repeated failed sign-ins."""
    user = _user(session, user_id)
    limiter(request).reset(account_key(user.username))
    audit.record(
        session,
        "user.unlock",
        actor_user_id=admin.id,
        target_type="user",
        target_id=user_id,
        client_ip=client_ip(request),
    )
    session.commit()
    return Response(status_code=204)


@router.post("/{user_id}/logout", status_code=204)
def end_sessions(user_id: int, request: Request, session: SessionDep, admin: AdminDep) -> Response:
    """End every sign-in of the user (a lost laptop)."""
    _user(session, user_id)
    tokens.revoke_all(session, user_id)
    audit.record(
        session,
        "user.logout_all",
        actor_user_id=admin.id,
        target_type="user",
        target_id=user_id,
        client_ip=client_ip(request),
    )
    session.commit()
    return Response(status_code=204)
