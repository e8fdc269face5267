"""Request dependencies: settings, database session, who is asking and what they may do.

Credentials, in order: `Authorization: Bearer zk_key_…` (an API key; with the `act_as` scope it
may name the end user in `X-Zhiku-User`), `Authorization: Bearer zk_…` (a sign-in token from
/auth/login), or the `zhiku_session` cookie from /auth/session — cookie requests that change
anything must echo the CSRF token in `X-CSRF-Token` (or a `csrf_token` form field).
Every principal is rate limited per user or key (429 with Retry-After).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from api.rate_limit import Limiter, enforce
from core import access, db
from core.access import Principal
from core.errors import Forbidden, Unauthorized
from core.instance_secrets import InstanceSecrets
from core.models import User
from core.repo import api_keys, tokens, users
from core.settings import Settings

SESSION_COOKIE = "zhiku_session"
CSRF_COOKIE = "zhiku_csrf"
CSRF_HEADER = "X-CSRF-Token"
ACT_AS_HEADER = "X-Zhiku-User"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Paths a user who must change their password may still use.
PASSWORD_CHANGE_PATHS = ("/auth/me", "/auth/password", "/auth/logout")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


# Sessions are closed by their own small set of threads. Closed from the shared threadpool, a
# finished request kept its connection until a thread was free, and the threads could all be
# waiting for a connection: nothing moved until the pool's timeout (30 s, then 500s).
_closers = anyio.CapacityLimiter(4)


async def get_session(settings: SettingsDep) -> AsyncIterator[Session]:
    """The request's session. Created here, used by the route (in the threadpool), and closed
    as soon as the route is done, whatever the threadpool is busy with."""
    session = Session(db.get_engine(settings), expire_on_commit=False)
    try:
        yield session
    finally:
        await anyio.to_thread.run_sync(session.close, limiter=_closers)


SessionDep = Annotated[Session, Depends(get_session)]


def release_connection(session: Session) -> None:
    """End the session's transaction (keeping what it loaded) so that its pooled connection
    is free again. Async code must call it before it awaits anything: a connection held across
    an await lets concurrent requests drain the pool, and the next checkout then blocks the
    event loop that would release them (30 s, then a 500)."""
    if session.in_transaction():
        session.commit()


_bearer = HTTPBearer(auto_error=False, description="A sign-in token or an API key")
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="Web session")
_act_as = APIKeyHeader(
    name=ACT_AS_HEADER, auto_error=False, description="With an act_as API key: the end user"
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
CookieDep = Annotated[str | None, Depends(_cookie)]
ActAsDep = Annotated[str | None, Depends(_act_as)]


def limiter(request: Request) -> Limiter:
    found: Limiter = request.app.state.limiter
    return found


def instance_secrets(request: Request) -> InstanceSecrets:
    found: InstanceSecrets = request.app.state.secrets
    return found


def csrf_token_for(secrets: InstanceSecrets, session_token: str) -> str:
    return hmac.new(secrets.csrf_key, session_token.encode(), hashlib.sha256).hexdigest()


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


async def _check_csrf(request: Request, session_token: str) -> None:
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER, "")
    content_type = request.headers.get("content-type", "")
    if not sent and content_type.startswith("application/x-www-form-urlencoded"):
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else ""
    expected = csrf_token_for(instance_secrets(request), session_token)
    if not sent or not hmac.compare_digest(sent, expected):
        raise Forbidden(
            f"missing or wrong CSRF token: send the {CSRF_HEADER} header from /auth/session",
            code="csrf",
        )


def _key_principal(session: Session, plaintext: str, act_as: str | None) -> Principal:
    found = api_keys.authenticate(session, plaintext)
    if found is None:
        raise Unauthorized("the API key is invalid, expired or revoked")
    key, owner = found
    session.commit()  # last-used time
    if not act_as:
        return Principal(user=owner, api_key=key)
    if "act_as" not in key.scopes:
        raise Forbidden(
            f"this API key may not act for users ({ACT_AS_HEADER}); it lacks the 'act_as' scope",
            code="missing_scope",
        )
    end_user = users.get_by_username(session, act_as)
    if end_user is None or not end_user.is_active:
        raise Forbidden(f"{ACT_AS_HEADER}: no active user {act_as[:150]!r}", code="act_as_denied")
    return Principal(user=end_user, api_key=key, key_owner=owner)


def _rate_key(p: Principal) -> str:
    """Limits count per API key, or per user when signed in."""
    return f"key:{p.api_key.id}" if p.api_key else f"user:{p.user.id}"


def _by_cookie(creds: HTTPAuthorizationCredentials | None, cookie: str | None) -> bool:
    return bool(cookie) and not (creds is not None and creds.scheme.lower() == "bearer")


def identify(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    creds: BearerDep,
    cookie: CookieDep,
    act_as: ActAsDep,
) -> Principal:
    """Who is asking (401 when nobody valid), from the database. A plain function, so FastAPI
    runs it in the threadpool: a wait for a pooled connection must never block the event loop."""
    idle = timedelta(minutes=settings.session_idle_minutes)
    principal: Principal | None = None
    if creds is not None and creds.scheme.lower() == "bearer":
        credential = creds.credentials
        if credential.startswith(api_keys.KEY_PREFIX):
            principal = _key_principal(session, credential, act_as)
        else:
            user = tokens.user_for(session, credential, idle=idle, kind="bearer")
            if user is None:
                raise Unauthorized("the token is invalid or expired; sign in again")
            principal = Principal(user=user)
    elif cookie:
        user = tokens.user_for(session, cookie, idle=idle, kind="cookie")
        if user is None:
            raise Unauthorized("your session has expired; sign in again", code="session_expired")
        principal = Principal(user=user)
    if principal is None:
        raise Unauthorized(
            "sign in first: send 'Authorization: Bearer <token or API key>' "
            "(POST /api/v1/auth/login) or use a web session"
        )
    if act_as and principal.api_key is None:
        raise Forbidden(f"{ACT_AS_HEADER} is only for API keys with the 'act_as' scope")
    if (
        principal.api_key is None
        and principal.user.must_change_password
        and not request.url.path.endswith(PASSWORD_CHANGE_PATHS)
    ):
        raise Forbidden(
            "change your password first: POST /api/v1/auth/password",
            code="password_change_required",
        )
    release_connection(session)  # what follows awaits; the session keeps what it loaded
    return principal


async def authenticate(
    request: Request,
    settings: SettingsDep,
    creds: BearerDep,
    cookie: CookieDep,
    principal: Principal = Depends(identify),
) -> Principal:
    """Who is asking, with the web session's CSRF token checked; rate limited."""
    if _by_cookie(creds, cookie):
        assert cookie is not None
        await _check_csrf(request, cookie)
    who = _rate_key(principal)
    enforce(limiter(request), f"req:{who}", settings.rate_limit_per_minute, 60, "requests")
    return principal


def _scoped(scope: str | None) -> Callable[..., Principal]:
    def dependency(
        request: Request, settings: SettingsDep, p: Principal = Depends(authenticate)
    ) -> Principal:
        if scope is None:
            access.require_user_session(p)
        else:
            access.require_scope(p, scope)
        return p

    return dependency


_chat_scope = _scoped("chat")


def _asking(
    request: Request, settings: SettingsDep, p: Principal = Depends(_chat_scope)
) -> Principal:
    """A question to the model: counted against the per-minute question limit (reading or
    renaming conversations is not)."""
    enforce(
        limiter(request),
        f"chat:{_rate_key(p)}",
        settings.rate_limit_chat_per_minute,
        60,
        "questions",
    )
    return p


# A signed-in user (no API keys).
UserPrincipal = Annotated[Principal, Depends(_scoped(None))]
# A user, or an API key with the scope.
SearchPrincipal = Annotated[Principal, Depends(_scoped("search"))]
ChatPrincipal = Annotated[Principal, Depends(_chat_scope)]
# ... who asks a question now (POST /api/v1/chat, /v1/chat/completions).
AskPrincipal = Annotated[Principal, Depends(_asking)]
IngestPrincipal = Annotated[Principal, Depends(_scoped("ingest"))]


def current_user(p: UserPrincipal) -> User:
    return p.user


UserDep = Annotated[User, Depends(current_user)]


def require_admin(p: UserPrincipal) -> User:
    access.require_admin(p)
    return p.user


AdminDep = Annotated[User, Depends(require_admin)]


def require_manager(p: UserPrincipal) -> Principal:
    access.require_staff_manager(p)
    return p


ManagerPrincipal = Annotated[Principal, Depends(require_manager)]
