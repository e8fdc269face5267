"""The sensitive-word lexicon: administrators read and replace it; answers pick it up at once."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api.chat_engine import load_lexicon
from api.deps import AdminDep, SessionDep, SettingsDep, client_ip
from core.fsutil import atomic_write
from core.repo import audit
from serving.lexicon import Lexicon

router = APIRouter(prefix="/admin/lexicon", tags=["safety"])


class LexiconBody(BaseModel):
    text: str = Field(
        max_length=2_000_000,
        description='One term per line, optionally "term<TAB>category"; "#" starts a comment',
    )


class LexiconOut(LexiconBody):
    terms: int


@router.get("", response_model=LexiconOut)
def get_lexicon(settings: SettingsDep, admin: AdminDep) -> LexiconOut:
    load_lexicon(settings)  # creates it from the bundled default on first use
    text = settings.lexicon_path.read_text(encoding="utf-8")
    return LexiconOut(text=text, terms=len(Lexicon.from_lines(text.splitlines())))


@router.put("", response_model=LexiconOut)
def put_lexicon(
    body: LexiconBody, request: Request, session: SessionDep, settings: SettingsDep, admin: AdminDep
) -> LexiconOut:
    terms = len(Lexicon.from_lines(body.text.splitlines()))
    data = body.text.encode("utf-8")
    settings.lexicon_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(settings.lexicon_path, lambda f: f.write(data))
    audit.record(
        session,
        "lexicon.update",
        actor_user_id=admin.id,
        client_ip=client_ip(request),
        terms=terms,
    )
    session.commit()
    return LexiconOut(text=body.text, terms=terms)
