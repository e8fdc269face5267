from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, select

from core.models import AuthToken, User, utcnow
from core.security import new_token, token_digest


def issue(session: Session, user: User, ttl_hours: int) -> str:
    token = new_token()
    assert user.id is not None
    session.add(
        AuthToken(
            token_hash=token_digest(token),
            user_id=user.id,
            expires_at=utcnow() + timedelta(hours=ttl_hours),
        )
    )
    session.flush()
    return token


def user_for(session: Session, token: str) -> User | None:
    row = session.exec(select(AuthToken).where(AuthToken.token_hash == token_digest(token))).first()
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    return user


def revoke(session: Session, token: str) -> None:
    row = session.exec(select(AuthToken).where(AuthToken.token_hash == token_digest(token))).first()
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
