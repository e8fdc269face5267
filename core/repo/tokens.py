"""Sign-ins: opaque tokens stored as sha256, for the API (bearer) and the web (cookie).

A sign-in ends at logout, at its absolute expiry, after `idle` without use, or when an admin
disables the user or resets their password.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, col, select

from core.models import AuthToken, User, utcnow
from core.security import new_token, token_digest

# last_seen_at is written at most this often, so that reads do not all become writes
TOUCH_EVERY = timedelta(seconds=60)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=utcnow().tzinfo)


def issue(session: Session, user: User, ttl_hours: int, kind: str = "bearer") -> str:
    token = new_token()
    assert user.id is not None
    now = utcnow()
    session.add(
        AuthToken(
            token_hash=token_digest(token),
            user_id=user.id,
            kind=kind,
            last_seen_at=now,
            expires_at=now + timedelta(hours=ttl_hours),
        )
    )
    session.flush()
    return token


def user_for(
    session: Session, token: str, *, idle: timedelta | None = None, kind: str | None = None
) -> User | None:
    """The active user of a live sign-in, and marks it used."""
    row = session.exec(select(AuthToken).where(AuthToken.token_hash == token_digest(token))).first()
    now = utcnow()
    if row is None or row.revoked_at is not None or _aware(row.expires_at) <= now:
        return None
    if kind is not None and row.kind != kind:
        return None
    seen = _aware(row.last_seen_at or row.created_at)
    if idle is not None and seen + idle <= now:
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    if now - seen >= TOUCH_EVERY:
        row.last_seen_at = now
        session.add(row)
        session.commit()
    return user


def revoke(session: Session, token: str) -> bool:
    row = session.exec(select(AuthToken).where(AuthToken.token_hash == token_digest(token))).first()
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    session.add(row)
    return True


def revoke_all(session: Session, user_id: int, *, keep: str | None = None) -> None:
    """End every sign-in of the user, except the one whose token is `keep`."""
    cond = (col(AuthToken.user_id) == user_id) & col(AuthToken.revoked_at).is_(None)
    if keep:
        cond = cond & (col(AuthToken.token_hash) != token_digest(keep))
    session.execute(update(AuthToken).where(cond).values(revoked_at=utcnow()))
