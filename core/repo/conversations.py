"""Conversations and messages: every read is scoped to the owner."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col, select

from core.errors import NotFound
from core.models import Conversation, Message, utcnow
from core.repo import feedback


def create(
    session: Session,
    user_id: int,
    title: str,
    library_ids: Sequence[int] = (),
    api_key_id: int | None = None,
) -> Conversation:
    conv = Conversation(
        user_id=user_id, title=title[:200], library_ids=list(library_ids), api_key_id=api_key_id
    )
    session.add(conv)
    session.flush()
    return conv


def get_owned(
    session: Session, conversation_id: int, user_id: int, via_key: int | None = None
) -> Conversation:
    """The conversation if `user_id` owns it (and, with `via_key`, it was held through that API
    key: a key never sees what its user asked elsewhere); otherwise NotFound (never reveals
    that it exists)."""
    conv = session.get(Conversation, conversation_id)
    if (
        conv is None
        or conv.user_id != user_id
        or (via_key is not None and conv.api_key_id != via_key)
    ):
        raise NotFound(f"conversation {conversation_id} not found")
    return conv


def list_owned(
    session: Session, user_id: int, limit: int = 100, via_key: int | None = None
) -> list[Conversation]:
    stmt = select(Conversation).where(Conversation.user_id == user_id)
    if via_key is not None:
        stmt = stmt.where(Conversation.api_key_id == via_key)
    stmt = stmt.order_by(col(Conversation.updated_at).desc(), col(Conversation.id).desc()).limit(
        limit
    )
    return list(session.exec(stmt))


def messages(session: Session, conversation_id: int, limit: int | None = None) -> list[Message]:
    """Messages in order; with `limit`, only the most recent ones (still in order)."""
    stmt = select(Message).where(Message.conversation_id == conversation_id)
    if limit is None:
        return list(session.exec(stmt.order_by(col(Message.id))))
    recent = list(session.exec(stmt.order_by(col(Message.id).desc()).limit(limit)))
    return recent[::-1]


def add_message(
    session: Session, conv: Conversation, role: str, content: str, **fields: Any
) -> Message:
    assert conv.id is not None
    msg = Message(conversation_id=conv.id, role=role, content=content, **fields)
    session.add(msg)
    conv.updated_at = utcnow()
    session.add(conv)
    session.flush()
    return msg


def delete_owned(
    session: Session, conversation_id: int, user_id: int, via_key: int | None = None
) -> None:
    conv = get_owned(session, conversation_id, user_id, via_key)
    feedback.detach_conversation(session, conversation_id)  # kept for review, without its message
    session.execute(delete(Message).where(col(Message.conversation_id) == conversation_id))
    session.delete(conv)
