from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import BearerDep, SessionDep, SettingsDep, UserDep, client_ip
from api.schemas import LoginIn, TokenOut, UserOut
from core.errors import Unauthorized
from core.repo import audit, tokens, users
from core.security import verify_password

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", response_model=TokenOut)
def login(body: LoginIn, request: Request, session: SessionDep, settings: SettingsDep) -> TokenOut:
    user = users.get_by_username(session, body.username)
    ok = verify_password(user.password_hash if user else None, body.password)
    if user is None or not ok or not user.is_active:
        audit.record(session, "login.failure", client_ip=client_ip(request), username=body.username)
        session.commit()
        raise Unauthorized("wrong username or password")
    token = tokens.issue(session, user, settings.token_ttl_hours)
    audit.record(session, "login.success", actor_user_id=user.id, client_ip=client_ip(request))
    session.commit()
    return TokenOut(access_token=token, expires_in=settings.token_ttl_hours * 3600)


@router.post("/logout", status_code=204)
def logout(request: Request, session: SessionDep, user: UserDep, creds: BearerDep) -> None:
    if creds is not None:
        tokens.revoke(session, creds.credentials)
        audit.record(session, "logout", actor_user_id=user.id, client_ip=client_ip(request))
        session.commit()


@router.get("/me", response_model=UserOut)
def me(user: UserDep) -> UserOut:
    return UserOut.model_validate(user, from_attributes=True)
