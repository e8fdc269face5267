"""Sign in and out: bearer tokens for the API, cookie sessions (with CSRF) for the web.

Failed sign-ins are counted per account name and per client address; past the limits the
account is locked for `login_lockout_minutes` (429 with Retry-After), whether or not it exists,
so the answer never tells which names are real.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlmodel import Session

from api.access_schemas import LoginIn, PasswordChangeIn, SessionOut, TokenOut, UserOut, user_out
from api.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    BearerDep,
    CookieDep,
    SessionDep,
    SettingsDep,
    UserPrincipal,
    client_ip,
    csrf_token_for,
    instance_secrets,
    limiter,
)
from api.rate_limit import Limiter
from core import identity
from core.errors import RateLimited, Unauthorized
from core.models import User, utcnow
from core.repo import audit, tokens, users
from core.settings import Settings

router = APIRouter(prefix="/auth", tags=["auth"])


def account_key(username: str) -> str:
    return "login:user:" + username.strip().lower()


def _check_password(request: Request, session: Session, settings: Settings, body: LoginIn) -> User:
    """The user, after throttling and lockout; audits failures and the lockout."""
    lim: Limiter = limiter(request)
    window = settings.login_lockout_minutes * 60
    ip = client_ip(request)
    ip_state = lim.peek(f"login:ip:{ip}", settings.login_ip_max_failures, window)
    if not ip_state.allowed:
        raise RateLimited(
            f"too many failed sign-ins from your address; try again in "
            f"{max(1, ip_state.retry_after // 60)} minute(s)",
            retry_after=ip_state.retry_after,
        )
    account = lim.peek(account_key(body.username), settings.login_max_failures, window)
    if not account.allowed:
        audit.record(session, "login.locked", client_ip=ip, username=body.username[:150])
        session.commit()
        raise RateLimited(
            "this account is locked after repeated failed sign-ins; try again in "
            f"{max(1, account.retry_after // 60)} minute(s) or ask an administrator to unlock it",
            retry_after=account.retry_after,
            code="account_locked",
        )
    user = identity.sign_in(session, settings, body.username, body.password)
    if user is None or not user.is_active:
        lim.hit(f"login:ip:{ip}", settings.login_ip_max_failures, window)
        failed = lim.hit(account_key(body.username), settings.login_max_failures, window)
        audit.record(session, "login.failure", client_ip=ip, username=body.username[:150])
        if failed.count == settings.login_max_failures:
            audit.record(
                session,
                "login.lockout",
                actor_user_id=user.id if user else None,
                client_ip=ip,
                username=body.username[:150],
                minutes=settings.login_lockout_minutes,
            )
        session.commit()
        raise Unauthorized("wrong username or password")
    lim.reset(account_key(body.username))
    user.last_login_at = utcnow()
    session.add(user)
    return user


@router.post("/login", response_model=TokenOut)
def login(body: LoginIn, request: Request, session: SessionDep, settings: SettingsDep) -> TokenOut:
    """Sign in for API use: a bearer token."""
    user = _check_password(request, session, settings, body)
    token = tokens.issue(session, user, settings.token_ttl_hours, kind="bearer")
    audit.record(session, "login.success", actor_user_id=user.id, client_ip=client_ip(request))
    session.commit()
    return TokenOut(
        access_token=token,
        expires_in=settings.token_ttl_hours * 3600,
        must_change_password=user.must_change_password,
    )


def _secure(request: Request, settings: Settings) -> bool:
    if settings.cookie_secure is not None:
        return settings.cookie_secure
    return request.url.scheme == "https"


@router.post("/session", response_model=SessionOut)
def open_session(
    body: LoginIn, request: Request, response: Response, session: SessionDep, settings: SettingsDep
) -> SessionOut:
    """Sign in for the web: an HttpOnly session cookie, and a CSRF token (also in the
    `zhiku_csrf` cookie) to send as `X-CSRF-Token` on every request that changes something."""
    user = _check_password(request, session, settings, body)
    token = tokens.issue(session, user, settings.token_ttl_hours, kind="cookie")
    audit.record(
        session, "login.success", actor_user_id=user.id, client_ip=client_ip(request), web=True
    )
    session.commit()
    csrf = csrf_token_for(instance_secrets(request), token)
    secure = _secure(request, settings)
    max_age = settings.token_ttl_hours * 3600
    response.set_cookie(
        SESSION_COOKIE, token, max_age=max_age, httponly=True, secure=secure, samesite="lax"
    )
    response.set_cookie(
        CSRF_COOKIE, csrf, max_age=max_age, httponly=False, secure=secure, samesite="strict"
    )
    return SessionOut(csrf_token=csrf, expires_in=max_age, user=user_out(session, user))


@router.post("/logout", status_code=204)
def logout(
    request: Request,
    response: Response,
    session: SessionDep,
    principal: UserPrincipal,
    creds: BearerDep,
    cookie: CookieDep,
) -> None:
    """End this sign-in (the token or the web session)."""
    revoked = False
    if creds is not None:
        revoked = tokens.revoke(session, creds.credentials)
    elif cookie:
        revoked = tokens.revoke(session, cookie)
    response.delete_cookie(SESSION_COOKIE)
    response.delete_cookie(CSRF_COOKIE)
    if revoked:
        audit.record(
            session, "logout", actor_user_id=principal.user.id, client_ip=client_ip(request)
        )
        session.commit()


@router.get("/me", response_model=UserOut)
def me(session: SessionDep, principal: UserPrincipal) -> UserOut:
    return user_out(session, principal.user)


@router.post("/password", status_code=204)
def change_password(
    body: PasswordChangeIn,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: UserPrincipal,
    creds: BearerDep,
    cookie: CookieDep,
) -> None:
    """Change your own password (the current one is required). Every other sign-in of yours
    ends; this one stays."""
    user = principal.user
    if identity.sign_in(session, settings, user.username, body.current_password) is None:
        audit.record(
            session,
            "password.change_failure",
            actor_user_id=user.id,
            client_ip=client_ip(request),
        )
        session.commit()
        raise Unauthorized("the current password is wrong", code="wrong_password")
    users.set_password(session, user, body.new_password)
    assert user.id is not None
    current = creds.credentials if creds is not None else cookie
    tokens.revoke_all(session, user.id, keep=current)
    audit.record(session, "password.change", actor_user_id=user.id, client_ip=client_ip(request))
    session.commit()
