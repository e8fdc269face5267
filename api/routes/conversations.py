"""Conversations: each user sees and deletes only their own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, StringConstraints
from sqlmodel import Session

from api.deps import ChatPrincipal, SessionDep
from api.html_render import citation_snippet_html, markdown_html
from api.schemas import ConversationDetailOut, ConversationOut, MessageFeedbackOut, MessageOut
from core import access
from core.access import Principal
from core.models import Conversation, Feedback, Message
from core.repo import conversations, feedback

router = APIRouter(prefix="/conversations", tags=["chat"])


def _via(p: Principal) -> int | None:
    """Through an API key, only the conversations held through that key."""
    return p.api_key.id if p.api_key is not None else None


def _out(conv: Conversation) -> ConversationOut:
    assert conv.id is not None
    return ConversationOut(
        id=conv.id,
        title=conv.title,
        library_ids=conv.library_ids,
        created_at=conv.created_at,
        updated_at=conv.updated_at,
    )


Visible = Callable[[dict[str, Any]], bool]


def _visibility(session: Session, p: Principal, stored: list[Message]) -> Visible:
    """Whether a stored citation or source is still readable by the caller: revoking a grant
    or restricting a folder also withholds the passages of earlier answers."""
    readable = access.library_permissions(session, p)
    cited = {int(x["library_id"]) for m in stored for x in m.sources if "library_id" in x}
    narrowed = access.document_filters(session, p, cited & set(readable))

    def visible(item: dict[str, Any]) -> bool:
        lib, doc = item.get("library_id"), item.get("document_id")
        if lib not in readable or not isinstance(doc, int):
            return False
        only = narrowed.get(lib)
        return only is None or only.permits(doc)

    return visible


def _message_out(m: Message, visible: Visible, mine: Feedback | None = None) -> MessageOut:
    """A stored message; its HTML rendered now (never stored HTML), so every answer gets the
    current renderer's escaping. Passages the caller may no longer read are withheld."""
    assistant = m.role == "assistant"
    sources = [x for x in m.sources if visible(x)]
    kept = [c for c in m.citations if visible(c)]
    flags = dict(m.flags)
    if len(kept) < len(m.citations) or len(sources) < len(m.sources):
        flags["sources_withheld"] = len(m.sources) - len(sources)
    citations = [
        {**c, "snippet_html": citation_snippet_html(c, sources)} if assistant else c for c in kept
    ]
    return MessageOut(
        id=m.id or 0,
        role=m.role,
        content=m.content,
        answer_html=markdown_html(m.content) if assistant else "",
        standalone_question=m.standalone_question,
        citations=citations,
        sources=sources,
        flags=flags,
        not_found=m.not_found,
        blocked=m.blocked,
        created_at=m.created_at,
        feedback=MessageFeedbackOut.model_validate(mine, from_attributes=True) if mine else None,
    )


@router.get("", response_model=list[ConversationOut])
def list_conversations(
    session: SessionDep, p: ChatPrincipal, limit: int = Query(100, ge=1, le=500)
) -> list[ConversationOut]:
    """Your conversations, most recent first."""
    user = p.user
    assert user.id is not None
    return [_out(c) for c in conversations.list_owned(session, user.id, limit, _via(p))]


@router.get("/{conversation_id}", response_model=ConversationDetailOut)
def get_conversation(
    conversation_id: int, session: SessionDep, p: ChatPrincipal
) -> ConversationDetailOut:
    """One of your conversations with its messages (someone else's answers 404)."""
    user = p.user
    assert user.id is not None
    conv = conversations.get_owned(session, conversation_id, user.id, _via(p))
    stored = conversations.messages(session, conversation_id)
    visible = _visibility(session, p, stored)
    mine = feedback.for_messages(session, user.id, [m.id for m in stored if m.id is not None])
    messages = [_message_out(m, visible, mine.get(m.id or 0)) for m in stored]
    return ConversationDetailOut(**_out(conv).model_dump(), messages=messages)


class ConversationTitleIn(BaseModel):
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


@router.patch("/{conversation_id}", response_model=ConversationOut)
def rename_conversation(
    conversation_id: int, body: ConversationTitleIn, session: SessionDep, p: ChatPrincipal
) -> ConversationOut:
    """Rename one of your conversations (someone else's answers 404). Its place in your list
    (by last activity) does not change."""
    user = p.user
    assert user.id is not None
    conv = conversations.get_owned(session, conversation_id, user.id, _via(p))
    conv.title = body.title
    session.add(conv)
    session.commit()
    return _out(conv)


@router.delete("/{conversation_id}", status_code=204)
def delete_conversation(conversation_id: int, session: SessionDep, p: ChatPrincipal) -> Response:
    user = p.user
    assert user.id is not None
    conversations.delete_owned(session, conversation_id, user.id, _via(p))
    session.commit()
    return Response(status_code=204)
