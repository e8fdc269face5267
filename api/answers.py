"""Running an answer for a request: the engine per app, history in, the turn stored, results
serialized. Shared by /api/v1/chat, the OpenAI-compatible facade and `zhiku ask`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from sqlmodel import Session

from api.chat_engine import ChatEngine
from api.html_render import SNIPPET_CONTEXT_CHARS, highlight_html, markdown_html
from api.schemas import ChatOut, CitationOut, SourceOut
from core import db
from core.errors import ZhikuError
from core.models import User
from core.repo import audit, conversations
from core.settings import Settings
from core.types import DocFilter
from retrieval.service import Retriever
from serving.answering import AnswerResult, Done, Event, Failure
from serving.citations import cited_span
from serving.prompts import Turn


async def engine_for(request: Request) -> ChatEngine:
    """The app's engine for the running event loop (made on first use)."""
    from api.routes.search import get_retriever

    state = request.app.state
    loop = asyncio.get_running_loop()
    engine: ChatEngine | None = getattr(state, "chat_engine", None)
    # No model server yet (`zhiku models serve` still starting): look again on each request.
    if engine is None or engine.loop is not loop or engine.llm is None:
        retriever = get_retriever(request, state.settings)
        try:
            engine = ChatEngine(state.settings, retriever)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ZhikuError(
                f"answering is not available: {exc}. Check the model and safety settings "
                "(ZHIKU_MAIN_*, ZHIKU_SAFETY_*) and `zhiku models status`.",
                code="unavailable",
                status=503,
            ) from exc
        engine.metrics = getattr(state, "metrics", None)
        state.chat_engine = engine
        await engine.start()
    return engine


async def standalone_engine(settings: Settings) -> ChatEngine:
    engine = ChatEngine(settings, Retriever(settings))
    await engine.start()
    return engine


def serialize(result: AnswerResult, conversation_id: int | None, message_id: int | None) -> ChatOut:
    sentences = {(s.start, s.end): s.text for s in result.sentences}
    citations = []
    for c in result.citations:
        sentence = next((t for (a, b), t in sentences.items() if a <= c.start < b), "")
        start, end = cited_span(sentence, c.passage.text)
        p = c.passage
        citations.append(
            CitationOut(
                marker=c.marker,
                start=c.start,
                end=c.end,
                sentence=sentence.strip(),
                document_id=p.document_id,
                chunk_id=p.chunk_id,
                title=p.title,
                filename=p.filename,
                library_id=p.library_id,
                library_name=p.library_name,
                page_start=p.page_start,
                page_end=p.page_end,
                snippet=p.text[start:end],
                snippet_start=start,
                snippet_end=end,
                snippet_html=highlight_html(p.text, (start, end), context=SNIPPET_CONTEXT_CHARS),
            )
        )
    markers = {id(c.passage): c.marker for c in reversed(result.citations)}
    sources = [
        SourceOut(
            marker=markers.get(id(p), 0),
            document_id=p.document_id,
            chunk_ids=p.chunk_ids or [p.chunk_id],
            title=p.title,
            filename=p.filename,
            library_id=p.library_id,
            library_name=p.library_name,
            page_start=p.page_start,
            page_end=p.page_end,
            heading_path=p.heading_path,
            text=p.text,
        )
        for p in result.sources
    ]
    return ChatOut(
        conversation_id=conversation_id,
        message_id=message_id,
        question=result.question,
        standalone_question=result.standalone_question,
        answer=result.answer,
        answer_html=markdown_html(result.answer),
        citations=citations,
        sources=sources,
        not_found=result.not_found,
        blocked=result.blocked,
        flags=result.flags,
        reasoning=result.reasoning,
        timings=result.timings,
    )


@dataclass
class Turnout:
    """Where an answer is stored: the conversation (existing or to be made) and its history."""

    user: User
    library_ids: list[int]
    conversation_id: int | None
    history: list[Turn]
    api_key_id: int | None = None
    client_ip: str = ""
    store: bool = True
    # documents of partly readable libraries the asker may read (core.access.document_filters)
    filters: dict[int, DocFilter] = field(default_factory=dict)
    # extra audit detail: the key's owner when a key acts for a user
    audit_detail: dict[str, Any] = field(default_factory=dict)


def prepare_turn(
    session: Session,
    user: User,
    library_ids: list[int],
    conversation_id: int | None,
    history_turns: int,
    *,
    api_key_id: int | None = None,
    client_ip: str = "",
    filters: dict[int, DocFilter] | None = None,
    audit_detail: dict[str, Any] | None = None,
) -> Turnout:
    history: list[Turn] = []
    if conversation_id is not None:
        assert user.id is not None
        conversations.get_owned(session, conversation_id, user.id, api_key_id)
        for m in conversations.messages(session, conversation_id, limit=2 * history_turns):
            if m.role in ("user", "assistant") and not m.blocked:
                history.append(Turn(m.role, m.content))
    return Turnout(
        user,
        library_ids,
        conversation_id,
        history,
        api_key_id,
        client_ip,
        filters=filters or {},
        audit_detail=audit_detail or {},
    )


def store_turn(
    settings: Settings, turn: Turnout, result: AnswerResult
) -> tuple[int | None, int | None]:
    """Audit the question; persist it and the answer when the turn is stored. The conversation
    and answer message ids (None when not stored)."""
    conv_id = msg_id = None
    with db.session_scope(settings) as session:
        if turn.store:
            assert turn.user.id is not None
            if turn.conversation_id is None:
                conv = conversations.create(
                    session,
                    turn.user.id,
                    result.question[:60],
                    turn.library_ids,
                    api_key_id=turn.api_key_id,
                )
            else:
                conv = conversations.get_owned(
                    session, turn.conversation_id, turn.user.id, turn.api_key_id
                )
            conversations.add_message(session, conv, "user", result.question)
            out = serialize(result, None, None)
            msg = conversations.add_message(
                session,
                conv,
                "assistant",
                result.answer,
                standalone_question=result.standalone_question,
                reasoning=result.reasoning,
                citations=[c.model_dump(exclude={"snippet_html"}) for c in out.citations],
                sources=[s.model_dump() for s in out.sources],
                flags=result.flags,
                not_found=result.not_found,
                blocked=result.blocked,
            )
            conv_id, msg_id = conv.id, msg.id
        audit.record(
            session,
            "ask",
            actor_user_id=turn.user.id,  # None for the command line without --as-user
            target_type="conversation" if conv_id else "",
            target_id=conv_id or "",
            client_ip=turn.client_ip,
            actor_api_key_id=turn.api_key_id,
            libraries=turn.library_ids,
            documents=sorted({p.document_id for p in result.sources}),
            blocked=result.blocked,
            blocked_by=result.flags["blocked_by"],
            not_found=result.not_found,
            question_chars=len(result.question),
            **turn.audit_detail,
        )
    return conv_id, msg_id


async def run_turn(
    engine: ChatEngine, turn: Turnout, question: str, affinity: str | None = None
) -> AsyncIterator[tuple[Event, ChatOut | None]]:
    """The answer's events; the `Done` one comes with the stored, serialized result."""
    answerer = engine.answerer(turn.library_ids, turn.filters)
    key = affinity or (f"conv-{turn.conversation_id}" if turn.conversation_id else None)
    async for event in answerer.answer(question, turn.history, affinity_key=key):
        if engine.metrics is not None:
            if isinstance(event, Done):
                engine.metrics.observe_answer(event.result)
            elif isinstance(event, Failure):
                engine.metrics.observe_failure(event.code)
        if isinstance(event, Done):
            conv_id, msg_id = await asyncio.to_thread(
                store_turn, engine.settings, turn, event.result
            )
            yield event, serialize(event.result, conv_id, msg_id)
        else:
            yield event, None
