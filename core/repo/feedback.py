"""Feedback on answers: one row per user and message, replaced when they change their mind.

A row carries a copy of what it is about (the question, the answer, the conversation's
libraries, the cited documents), so reviewing it needs neither the conversation (deleting that
only clears `message_id`) nor the documents.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import ColumnElement, TextClause, bindparam, false, text, update
from sqlmodel import Session, col, func, select

from core.models import Conversation, Feedback, Message, User, utcnow


def cited_document_ids(message: Message) -> list[int]:
    """The documents an answer cites: those of its citations and cited sources."""
    ids: set[int] = set()
    for item in (*message.citations, *message.sources):
        doc = item.get("document_id") if isinstance(item, dict) else None
        if isinstance(doc, int) and not isinstance(doc, bool):
            ids.add(doc)
    return sorted(ids)


def question_before(session: Session, message: Message) -> str:
    """The user's message right before `message` in its conversation ('' when none)."""
    assert message.id is not None
    found = session.exec(
        select(Message.content)
        .where(
            Message.conversation_id == message.conversation_id,
            col(Message.id) < message.id,
            Message.role == "user",
        )
        .order_by(col(Message.id).desc())
        .limit(1)
    ).first()
    return found or ""


def get(session: Session, message_id: int, user_id: int) -> Feedback | None:
    return session.exec(
        select(Feedback).where(Feedback.message_id == message_id, Feedback.user_id == user_id)
    ).first()


def upsert(
    session: Session,
    *,
    user_id: int,
    conversation: Conversation,
    message: Message,
    rating: int,
    comment: str,
) -> tuple[Feedback, bool]:
    """Record `user_id`'s verdict on the answer `message` of `conversation` (the caller checked
    both); an earlier one is replaced. The row and whether it is new. The snapshot (question,
    answer, libraries, cited documents) is taken again each time. Two concurrent first
    verdicts collide on the unique (message_id, user_id): the caller retries after a
    rollback, and then updates."""
    assert message.id is not None
    now = utcnow()
    fb = get(session, message.id, user_id)
    created = fb is None
    if fb is None:
        fb = Feedback(message_id=message.id, user_id=user_id, rating=rating, created_at=now)
    fb.rating = rating
    fb.comment = comment
    fb.question = question_before(session, message)
    fb.answer = message.content
    fb.library_ids = sorted(set(conversation.library_ids))
    fb.document_ids = cited_document_ids(message)
    fb.updated_at = now
    session.add(fb)
    session.flush()
    return fb, created


def withdraw(session: Session, message_id: int, user_id: int) -> Feedback | None:
    """Delete `user_id`'s feedback on the message; the deleted row (None when there was none)."""
    fb = get(session, message_id, user_id)
    if fb is not None:
        session.delete(fb)
        session.flush()
    return fb


def for_messages(session: Session, user_id: int, message_ids: Iterable[int]) -> dict[int, Feedback]:
    """Message id → `user_id`'s feedback on it, for those of `message_ids` that have one."""
    ids = sorted(set(message_ids))
    if not ids:
        return {}
    rows = session.exec(
        select(Feedback).where(Feedback.user_id == user_id, col(Feedback.message_id).in_(ids))
    )
    return {fb.message_id: fb for fb in rows if fb.message_id is not None}


def detach_conversation(session: Session, conversation_id: int) -> int:
    """Before a conversation's messages are deleted: its feedback stays (with its snapshot) but
    no longer points at a message. How many rows were detached."""
    messages = select(Message.id).where(Message.conversation_id == conversation_id)
    result = session.execute(
        update(Feedback)
        .where(col(Feedback.message_id).in_(messages.scalar_subquery()))
        .values(message_id=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _any_library(
    session: Session, library_ids: Collection[int]
) -> ColumnElement[bool] | TextClause:
    """Rows whose `library_ids` (a JSON array) holds one of `library_ids`."""
    ids = sorted({int(i) for i in library_ids})
    if not ids:
        return false()
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        clause = text(
            "EXISTS (SELECT 1 FROM json_each(feedback.library_ids) AS j WHERE j.value IN :ids)"
        ).bindparams(bindparam("ids", value=ids, expanding=True))
    elif dialect == "postgresql":
        clause = text(
            "EXISTS (SELECT 1 FROM json_array_elements_text(feedback.library_ids) AS j(v) "
            "WHERE j.v IN :ids)"
        ).bindparams(bindparam("ids", value=[str(i) for i in ids], expanding=True))
    else:  # no JSON functions we know of: match in Python
        wanted = set(ids)
        matching = [
            fid
            for fid, libs in session.exec(select(Feedback.id, Feedback.library_ids))
            if fid is not None and wanted & {x for x in libs if isinstance(x, int)}
        ]
        return col(Feedback.id).in_(matching)
    return clause


def page(
    session: Session,
    *,
    rating: int | None = None,
    library_ids: Collection[int] | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[tuple[Feedback, str]], int]:
    """Feedback (with the giver's username), newest first, and how many match in all.
    `library_ids`: only rows about at least one of these libraries (None: every row)."""
    cond: list[Any] = []
    if rating is not None:
        cond.append(col(Feedback.rating) == rating)
    if library_ids is not None:
        cond.append(_any_library(session, library_ids))
    total = session.exec(select(func.count()).select_from(Feedback).where(*cond)).one()
    rows = session.exec(
        select(Feedback, User.username)
        .join(User, col(User.id) == col(Feedback.user_id))
        .where(*cond)
        .order_by(col(Feedback.created_at).desc(), col(Feedback.id).desc())
        .offset(offset)
        .limit(limit)
    )
    return [(fb, str(name)) for fb, name in rows], int(total)
