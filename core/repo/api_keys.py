"""API keys for office systems: shown once at creation, stored as a sha256 digest.

A key acts for its owner, narrowed by its scopes (`search`, `chat`, `ingest`; `metrics` reads
GET /metrics when the owner is an administrator) and, when
`library_ids` is non-empty, by those libraries. With `act_as` it may act for a named user and
then sees the intersection of its scope and that user's grants (core.access).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session, col, select

from core.models import ApiKey, User, utcnow
from core.security import new_token, token_digest

KEY_PREFIX = "zk_key_"
SCOPES = ("search", "chat", "ingest", "act_as", "metrics")


def create(
    session: Session,
    owner: User,
    name: str,
    scopes: Sequence[str] = ("search", "chat"),
    library_ids: Sequence[int] = (),
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """The stored key and its plaintext, which is never stored nor shown again."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; use {', '.join(SCOPES)}")
    assert owner.id is not None
    plaintext = new_token(KEY_PREFIX)
    key = ApiKey(
        name=name,
        prefix=plaintext[: len(KEY_PREFIX) + 6],
        key_hash=token_digest(plaintext),
        owner_id=owner.id,
        scopes=list(scopes),
        library_ids=list(library_ids),
        expires_at=expires_at,
    )
    session.add(key)
    session.flush()
    return key, plaintext


def authenticate(session: Session, plaintext: str) -> tuple[ApiKey, User] | None:
    """The key and its owner when the key is valid, unrevoked, unexpired and the owner active;
    records the time of use."""
    if not plaintext.startswith(KEY_PREFIX):
        return None
    key = session.exec(select(ApiKey).where(ApiKey.key_hash == token_digest(plaintext))).first()
    now = utcnow()
    if key is None or key.revoked_at is not None:
        return None
    if key.expires_at is not None and key.expires_at.replace(tzinfo=now.tzinfo) <= now:
        return None
    owner = session.get(User, key.owner_id)
    if owner is None or not owner.is_active:
        return None
    key.last_used_at = now
    session.add(key)
    return key, owner


def get(session: Session, key_id: int) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def list_keys(session: Session, owner_id: int | None = None) -> list[ApiKey]:
    """Every key, or one owner's, newest first."""
    stmt = select(ApiKey)
    if owner_id is not None:
        stmt = stmt.where(ApiKey.owner_id == owner_id)
    return list(session.exec(stmt.order_by(col(ApiKey.id).desc())))


def revoke(session: Session, key: ApiKey) -> bool:
    if key.revoked_at is not None:
        return False
    key.revoked_at = utcnow()
    session.add(key)
    session.flush()
    return True


def drop_library(session: Session, library_id: int) -> tuple[list[int], list[int]]:
    """A library is being deleted: keys limited to it lose it. A key left with no library is
    revoked — its empty list would otherwise mean every library its owner may read. Returns
    the ids of the keys narrowed and of those revoked."""
    narrowed: list[int] = []
    revoked: list[int] = []
    for key in session.exec(select(ApiKey)):
        if library_id not in key.library_ids or key.id is None:
            continue
        rest = [i for i in key.library_ids if i != library_id]
        if rest:
            key.library_ids = rest
            narrowed.append(key.id)
        elif key.revoked_at is None:
            key.revoked_at = utcnow()  # its list stays: the record of what it was for
            revoked.append(key.id)
        session.add(key)
    session.flush()
    return narrowed, revoked
