"""OpenAI-compatible facade for OA and other office systems: `POST /v1/chat/completions` and
`GET /v1/models`, authenticated by API key, so any OpenAI SDK works unchanged.

`model` names a library (or `zhiku` for every library the key may read). The last user
message is the question; earlier user/assistant messages are the history (follow-ups are
rewritten like in the web chat); client system messages are ignored — the knowledge base's
own instructions apply. Answers carry their citations and sources in an extra `zhiku` field.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from api.answers import Turnout, engine_for, run_turn
from api.deps import AskPrincipal, ChatPrincipal, SessionDep, client_ip
from api.schemas import ChatOut
from core import access
from core.access import Principal
from core.errors import NotFound, Unauthorized, ZhikuError
from core.models import Library
from core.repo import libraries
from serving.answering import Failure, Token
from serving.prompts import Turn

router = APIRouter(prefix="/v1", tags=["openai-compatible"])
ALL_LIBRARIES = "zhiku"


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class CompletionIn(BaseModel):
    model: str = Field(description="A library name, or 'zhiku' for all you may read")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    user: str | None = None


def key_principal(p: ChatPrincipal) -> Principal:
    """Only API keys (with the `chat` scope) use the OpenAI-compatible endpoints; a key with
    `act_as` may name the end user in X-Zhiku-User."""
    if p.api_key is None:
        raise Unauthorized("send 'Authorization: Bearer <API key>' (zhiku admin create-api-key)")
    return p


def key_asker(p: AskPrincipal) -> Principal:
    """`key_principal` for a question: it counts against the question limit."""
    return key_principal(p)


KeyDep = Annotated[Principal, Depends(key_principal)]
AskKeyDep = Annotated[Principal, Depends(key_asker)]


def _scoped_libraries(session: SessionDep, p: Principal) -> list[Library]:
    readable = set(access.readable_library_ids(session, p))
    return [lib for lib in libraries.list_all(session) if lib.id in readable]


@router.get("/models")
def list_models(session: SessionDep, principal: KeyDep) -> dict[str, Any]:
    """`zhiku` plus one model per library the key may read."""
    created = int(time.time())
    names = [ALL_LIBRARIES] + [lib.name for lib in _scoped_libraries(session, principal)]
    return {
        "object": "list",
        "data": [
            {"id": n, "object": "model", "created": created, "owned_by": "zhiku"} for n in names
        ],
    }


def _completion(model: str, out: ChatOut, cid: str) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": out.answer},
                "finish_reason": "length" if out.flags.get("truncated") else "stop",
            }
        ],
        "zhiku": _extra(out),
    }


def _extra(out: ChatOut) -> dict[str, Any]:
    data = out.model_dump(mode="json")
    return {k: data[k] for k in ("citations", "sources", "not_found", "blocked", "flags")}


def _chunk(
    model: str, cid: str, delta: dict[str, str], finish: str | None = None
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _data(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


@router.post("/chat/completions")
async def chat_completions(
    body: CompletionIn, request: Request, session: SessionDep, principal: AskKeyDep
) -> Any:
    key = principal.api_key
    assert key is not None
    turns = [Turn(m.role, m.text()) for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user" or not turns[-1].content.strip():
        raise ZhikuError("the last message must be a non-empty user message", status=422)
    question, history = turns[-1].content, turns[:-1]
    first = next((t.content for t in turns if t.role == "user"), question)
    affinity = hashlib.sha256(f"{key.id}:{first}".encode()).hexdigest()[:16]

    def prepare() -> Turnout:  # in a worker thread: nothing here may block the event loop
        try:
            scoped = _scoped_libraries(session, principal)
            if body.model == ALL_LIBRARIES:
                library_ids = [lib.id for lib in scoped if lib.id is not None]
            else:
                match = [lib.id for lib in scoped if lib.name == body.model and lib.id is not None]
                if not match:
                    raise NotFound(f"model {body.model!r} not found; GET /v1/models lists yours")
                library_ids = match
            fields = principal.audit_fields()
            return Turnout(
                principal.user,
                library_ids,
                None,
                history,
                api_key_id=key.id,
                client_ip=client_ip(request),
                store=False,
                filters=access.document_filters(session, principal, library_ids),
                audit_detail={k: v for k, v in fields.items() if not k.startswith("actor_")},
            )
        finally:
            session.close()

    turn = await anyio.to_thread.run_sync(prepare)
    engine = await engine_for(request)
    cid = f"chatcmpl-zk-{uuid.uuid4().hex[:20]}"

    if body.stream:

        async def chunks() -> AsyncIterator[str]:
            yield _data(_chunk(body.model, cid, {"role": "assistant", "content": ""}))
            sent = False
            async for event, out in run_turn(engine, turn, question, affinity):
                if isinstance(event, Token):
                    sent = True
                    yield _data(_chunk(body.model, cid, {"content": event.text}))
                elif isinstance(event, Failure):
                    yield _data({"error": {"message": event.message, "type": event.code}})
                    break
                elif out is not None:
                    if not sent or out.blocked:
                        text = out.answer if not sent else "\n\n" + out.answer
                        yield _data(_chunk(body.model, cid, {"content": text}))
                    final = _chunk(body.model, cid, {}, "stop")
                    final["zhiku"] = _extra(out)
                    yield _data(final)
            yield "data: [DONE]\n\n"

        return StreamingResponse(
            chunks(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    async for event, out in run_turn(engine, turn, question, affinity):
        if isinstance(event, Failure):
            return JSONResponse(
                {"error": {"message": event.message, "type": event.code, "code": event.code}},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        if out is not None:
            return _completion(body.model, out, cid)
    raise RuntimeError("the answer ended without a result")
