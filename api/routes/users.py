from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import AdminDep, SessionDep, client_ip
from api.schemas import UserIn, UserOut
from core.repo import audit, users

router = APIRouter(prefix="/users", tags=["users"])


@router.post("", response_model=UserOut, status_code=201)
def create_user(body: UserIn, request: Request, session: SessionDep, admin: AdminDep) -> UserOut:
    user = users.create_user(session, body.username, body.password, is_admin=body.is_admin)
    audit.record(
        session,
        "user.create",
        actor_user_id=admin.id,
        target_type="user",
        target_id=user.id or "",
        client_ip=client_ip(request),
        username=user.username,
        is_admin=user.is_admin,
    )
    session.commit()
    return UserOut.model_validate(user, from_attributes=True)


@router.get("", response_model=list[UserOut])
def list_users(session: SessionDep, _: AdminDep) -> list[UserOut]:
    return [UserOut.model_validate(u, from_attributes=True) for u in users.list_users(session)]
