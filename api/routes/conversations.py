"""Conversations: each user sees and deletes only their own."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from api.deps import SessionDep, UserDep
from api.schemas import ConversationDetailOut, ConversationOut, MessageOut
from core.models import Conversation
from core.repo import conversations

router = APIRouter(prefix="/conversations", tags=["chat"])


def _out(conv: Conversation) -> ConversationOut:
    assert conv.id is not None
    return ConversationOut(
        id=conv.id,
        title=conv.title,
        library_ids=conv.library_ids,
        created_at=conv.created_at,
        updated_at=conv.updated_at,
    )


@router.get("", response_model=list[ConversationOut])
def list_conversations(
    session: SessionDep, user: UserDep, limit: int = Query(100, ge=1, le=500)
) -> list[ConversationOut]:
    """Your conversations, most recent first."""
    assert user.id is not None
    return [_out(c) for c in conversations.list_owned(session, user.id, limit)]


@router.get("/{conversation_id}", response_model=ConversationDetailOut)
def get_conversation(
    conversation_id: int, session: SessionDep, user: UserDep
) -> ConversationDetailOut:
    """One of your conversations with its messages (someone else's answers 404)."""
    assert user.id is not None
    conv = conversations.get_owned(session, conversation_id, user.id)
    messages = [
        MessageOut(
            id=m.id or 0,
            role=m.role,
            content=m.content,
            standalone_question=m.standalone_question,
            citations=m.citations,
            sources=m.sources,
            flags=m.flags,
            not_found=m.not_found,
            blocked=m.blocked,
            created_at=m.created_at,
        )
        for m in conversations.messages(session, conversation_id)
    ]
    return ConversationDetailOut(**_out(conv).model_dump(), messages=messages)


@router.delete("/{conversation_id}", status_code=204)
def delete_conversation(conversation_id: int, session: SessionDep, user: UserDep) -> Response:
    assert user.id is not None
    conversations.delete_owned(session, conversation_id, user.id)
    session.commit()
    return Response(status_code=204)
