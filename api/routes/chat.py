"""Chat: a cited answer from the libraries the caller may read, streamed as server-sent events
or returned whole."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from api.answers import Turnout, engine_for, prepare_turn, run_turn
from api.deps import AskPrincipal, SessionDep, SettingsDep, client_ip
from api.errors import error_body
from api.html_render import markdown_html
from api.schemas import ChatIn, ChatOut
from core import access
from core.errors import ZhikuError
from core.repo import conversations
from serving.answering import CitationEvent, Failure, Token

router = APIRouter(prefix="/chat", tags=["chat"])
HTML_EVERY_SECONDS = 0.25  # how often a stream sends the answer so far as safe HTML


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.post(
    "",
    response_model=ChatOut,
    responses={
        200: {
            "description": "The answer; with `stream: true`, `text/event-stream` events "
            "`token` {text}, `html` {html} (the answer so far as safe HTML, covering every "
            "token before it; at most every 250 ms: show later tokens as text until the next), "
            "`citation` {marker, document_id, …}, `done` (the ChatOut) and `error` {code, message}",
        },
        503: {"description": "The language model is unavailable; try again"},
    },
)
async def chat(
    body: ChatIn, request: Request, session: SessionDep, settings: SettingsDep, p: AskPrincipal
) -> Any:
    """Ask a question. Only libraries you may read are searched; follow-ups in a conversation
    are rewritten into standalone questions first. Blocked questions and "not found" are
    answers (`blocked`, `not_found`), not errors."""
    question = body.question.strip()
    if not question:
        raise ZhikuError("the question is empty", status=422)
    if len(question) > settings.max_question_chars:
        raise ZhikuError(
            f"the question is longer than {settings.max_question_chars} characters", status=422
        )
    user = p.user

    def prepare() -> Turnout:  # in a worker thread: nothing here may block the event loop
        requested = body.library_ids
        if requested is None and body.conversation_id is not None:
            assert user.id is not None
            conv = conversations.get_owned(
                session, body.conversation_id, user.id, p.api_key.id if p.api_key else None
            )
            # a library no longer readable is left out, not an error
            readable = set(access.library_permissions(session, p))
            requested = [i for i in conv.library_ids if i in readable] or None
        library_ids = access.readable_library_ids(session, p, requested)
        fields = p.audit_fields()
        try:
            return prepare_turn(
                session,
                user,
                library_ids,
                body.conversation_id,
                settings.history_turns,
                api_key_id=fields["actor_api_key_id"],
                client_ip=client_ip(request),
                filters=access.document_filters(session, p, library_ids),
                audit_detail={k: v for k, v in fields.items() if not k.startswith("actor_")},
            )
        finally:
            session.close()

    turn = await anyio.to_thread.run_sync(prepare)
    engine = await engine_for(request)

    if body.stream:

        async def events() -> AsyncIterator[str]:
            text, rendered_at = "", 0.0
            async for event, out in run_turn(engine, turn, question):
                if isinstance(event, Token):
                    yield sse("token", {"text": event.text})
                    text += event.text
                    now = time.monotonic()
                    if now - rendered_at >= HTML_EVERY_SECONDS:
                        rendered_at = now
                        yield sse("html", {"html": markdown_html(text)})
                elif isinstance(event, CitationEvent):
                    p = event.passage
                    yield sse(
                        "citation",
                        {
                            "marker": event.marker,
                            "document_id": p.document_id,
                            "chunk_id": p.chunk_id,
                            "title": p.title,
                            "library_id": p.library_id,
                            "page_start": p.page_start,
                            "page_end": p.page_end,
                        },
                    )
                elif isinstance(event, Failure):
                    yield sse("error", {"code": event.code, "message": event.message})
                elif out is not None:
                    yield sse("done", out.model_dump(mode="json"))

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async for event, out in run_turn(engine, turn, question):
        if isinstance(event, Failure):
            return JSONResponse(
                error_body(event.code, event.message), status_code=503, headers={"Retry-After": "5"}
            )
        if out is not None:
            return out
    raise RuntimeError("the answer ended without a result")
