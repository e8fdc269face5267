"""Feedback on answers: readers rate an answer of their own conversations (helpful or not, with
an optional comment); administrators and librarians review it.

A verdict is kept with a copy of the question, the answer, the conversation's libraries and the
cited documents, so it outlives the conversation (deleting that only unlinks the message).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from api.deps import ChatPrincipal, ManagerPrincipal, SessionDep, client_ip
from core import access
from core.access import Principal
from core.errors import Forbidden, NotFound, ZhikuError
from core.models import Conversation, Document, Feedback, Message
from core.repo import audit, conversations, feedback

MAX_ID = 2**31 - 1
MAX_COMMENT = 2000
SUBMIT_ACTION = "feedback.submit"
WITHDRAW_ACTION = "feedback.withdraw"
MESSAGE_FEEDBACK = "/conversations/{conversation_id}/messages/{message_id}/feedback"

router = APIRouter(tags=["feedback"])


class FeedbackIn(BaseModel):
    rating: Literal[1, -1] = Field(description="+1 helpful, -1 not helpful")
    comment: str = Field("", max_length=MAX_COMMENT, description="Optional: what was wrong")

    @field_validator("comment")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("may not contain NUL characters")
        return value.strip()


class FeedbackOut(BaseModel):
    """Your feedback on one answer."""

    id: int
    conversation_id: int
    message_id: int
    rating: Literal[1, -1]
    comment: str
    created_at: datetime
    updated_at: datetime


class FeedbackItemOut(BaseModel):
    """One verdict, for review."""

    id: int
    rating: Literal[1, -1] = Field(description="+1 helpful, -1 not helpful")
    comment: str
    question: str = Field(description="The question the answer was for")
    answer: str = Field(description="The answer as it was rated ('' when withheld)")
    answer_withheld: bool = Field(
        False,
        description="The answer rests on libraries or documents you may not read: it, and "
        "their ids, are left out",
    )
    library_ids: list[int] = Field(description="The conversation's libraries (that you read)")
    document_ids: list[int] = Field(description="The documents the answer cited (you read)")
    message_id: int | None = Field(description="null once the conversation was deleted")
    user_id: int
    username: str
    created_at: datetime
    updated_at: datetime


class FeedbackPage(BaseModel):
    items: list[FeedbackItemOut]
    total: int = Field(description="How many match the filters in all")
    offset: int
    limit: int


def _via(p: Principal) -> int | None:
    """Through an API key, only the conversations held through that key (as conversations)."""
    return p.api_key.id if p.api_key is not None else None


def _own_answer(
    session: Session, p: Principal, conversation_id: int, message_id: int
) -> tuple[Conversation, Message]:
    """The caller's conversation and the answer in it; 404 for anyone else's conversation or a
    message of another conversation, 422 for a question."""
    assert p.user.id is not None
    conv = conversations.get_owned(session, conversation_id, p.user.id, _via(p))
    msg = session.get(Message, message_id)
    if msg is None or msg.conversation_id != conv.id:
        raise NotFound(f"message {message_id} not found")
    if msg.role != "assistant":
        raise ZhikuError(
            f"message {message_id} is a question, not an answer: feedback is for answers",
            code="not_an_answer",
            status=422,
        )
    return conv, msg


def _mine(fb: Feedback, conversation_id: int) -> FeedbackOut:
    assert fb.id is not None and fb.message_id is not None
    return FeedbackOut(
        id=fb.id,
        conversation_id=conversation_id,
        message_id=fb.message_id,
        rating=1 if fb.rating > 0 else -1,
        comment=fb.comment,
        created_at=fb.created_at,
        updated_at=fb.updated_at,
    )


@router.put(MESSAGE_FEEDBACK, response_model=FeedbackOut)
def put_feedback(
    conversation_id: int,
    message_id: int,
    body: FeedbackIn,
    request: Request,
    session: SessionDep,
    p: ChatPrincipal,
) -> FeedbackOut:
    """Rate an answer of one of your conversations; rating again replaces your earlier verdict
    (and comment). Someone else's conversation, or a message of another one, is 404."""
    assert p.user.id is not None
    for attempt in range(2):
        conv, msg = _own_answer(session, p, conversation_id, message_id)
        try:
            fb, created = feedback.upsert(
                session,
                user_id=p.user.id,
                conversation=conv,
                message=msg,
                rating=body.rating,
                comment=body.comment,
            )
            audit.record(
                session,
                SUBMIT_ACTION,
                **p.audit_fields(),
                target_type="message",
                target_id=message_id,
                client_ip=client_ip(request),
                conversation_id=conversation_id,
                rating=body.rating,
                comment_chars=len(body.comment),
                replaced=not created,
            )
            session.commit()
            return _mine(fb, conversation_id)
        except IntegrityError:  # a concurrent first verdict won: replace it
            session.rollback()
            if attempt:
                raise
    raise AssertionError("unreachable")


@router.delete(MESSAGE_FEEDBACK, status_code=204)
def delete_feedback(
    conversation_id: int,
    message_id: int,
    request: Request,
    session: SessionDep,
    p: ChatPrincipal,
) -> Response:
    """Withdraw your feedback on an answer (nothing to withdraw: 204 all the same)."""
    assert p.user.id is not None
    _own_answer(session, p, conversation_id, message_id)
    gone = feedback.withdraw(session, message_id, p.user.id)
    if gone is not None:
        audit.record(
            session,
            WITHDRAW_ACTION,
            **p.audit_fields(),
            target_type="message",
            target_id=message_id,
            client_ip=client_ip(request),
            conversation_id=conversation_id,
            rating=gone.rating,
        )
    session.commit()
    return Response(status_code=204)


class _Redactor:
    """What of a verdict a reviewer who is not an administrator may see: the libraries and
    cited documents they read; the answer only when they read everything it rests on."""

    def __init__(self, session: Session, p: Principal, rows: list[Feedback]) -> None:
        self.readable = set(access.library_permissions(session, p))
        cited = sorted({d for fb in rows for d in fb.document_ids})
        self.library_of: dict[int, int] = {}
        if cited:
            found = session.exec(
                select(Document.id, Document.library_id).where(col(Document.id).in_(cited))
            )
            self.library_of = {int(d): int(lib) for d, lib in found if d is not None}
        libs = set(self.library_of.values()) & self.readable
        self.narrowed = access.document_filters(session, p, libs)

    def _reads(self, document_id: int) -> bool:
        lib = self.library_of.get(document_id)
        if lib is None or lib not in self.readable:
            return False
        only = self.narrowed.get(lib)
        return only is None or only.permits(document_id)

    def item(self, fb: Feedback, username: str) -> FeedbackItemOut:
        libs = [x for x in fb.library_ids if x in self.readable]
        docs = [d for d in fb.document_ids if self._reads(d)]
        withheld = len(libs) < len(fb.library_ids) or len(docs) < len(fb.document_ids)
        return _item(fb, username, libs, docs, withheld)


def _item(
    fb: Feedback, username: str, libs: list[int], docs: list[int], withheld: bool
) -> FeedbackItemOut:
    assert fb.id is not None
    return FeedbackItemOut(
        id=fb.id,
        rating=1 if fb.rating > 0 else -1,
        comment=fb.comment,
        question=fb.question,
        answer="" if withheld else fb.answer,
        answer_withheld=withheld,
        library_ids=libs,
        document_ids=docs,
        message_id=fb.message_id,
        user_id=fb.user_id,
        username=username,
        created_at=fb.created_at,
        updated_at=fb.updated_at,
    )


@router.get("/feedback", response_model=FeedbackPage)
def list_feedback(
    session: SessionDep,
    p: ManagerPrincipal,
    rating: Annotated[
        int | None, Query(ge=-1, le=1, description="Only helpful (1) or only not helpful (-1)")
    ] = None,
    library_id: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="Only feedback on this library")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> FeedbackPage:
    """Feedback on answers, newest first. Administrators see all of it; librarians the feedback
    on conversations over libraries they manage — with the answer withheld when it rests on
    libraries or documents they may not read."""
    if rating == 0:
        raise ZhikuError("rating: 1 or -1", code="invalid_request", status=422)
    scope: set[int] | None
    if p.is_admin:
        scope = None if library_id is None else {library_id}
    else:
        managed = access.managed_library_ids(session, p)
        if library_id is not None and library_id not in managed:
            access.require_library(session, p, library_id)  # 404 when not even readable
            raise Forbidden(f"you do not manage library {library_id}")
        scope = managed if library_id is None else {library_id}
    rows, total = feedback.page(
        session, rating=rating, library_ids=scope, offset=offset, limit=limit
    )
    if p.is_admin:
        items = [_item(fb, name, fb.library_ids, fb.document_ids, False) for fb, name in rows]
    else:
        redactor = _Redactor(session, p, [fb for fb, _ in rows])
        items = [redactor.item(fb, name) for fb, name in rows]
    return FeedbackPage(items=items, total=total, offset=offset, limit=limit)
