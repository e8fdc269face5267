"""Search: passages from the libraries the caller may read, ranked by hybrid retrieval."""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from api.deps import SearchPrincipal, SessionDep, SettingsDep, client_ip
from api.html_render import text_html
from api.schemas import PassageOut, SearchIn, SearchOut
from core import access
from core.repo import audit
from retrieval.service import Retriever

router = APIRouter(prefix="/search", tags=["search"])
_retriever_lock = threading.Lock()


def get_retriever(request: Request, settings: SettingsDep) -> Retriever:
    """One retriever per app, built on first use (it loads the query encoder)."""
    retriever: Retriever | None = getattr(request.app.state, "retriever", None)
    if retriever is None:
        with _retriever_lock:
            retriever = getattr(request.app.state, "retriever", None)
            if retriever is None:
                retriever = request.app.state.retriever = Retriever(settings)
    return retriever


RetrieverDep = Annotated[Retriever, Depends(get_retriever)]


@router.post("", response_model=SearchOut)
def search(
    body: SearchIn,
    request: Request,
    session: SessionDep,
    p: SearchPrincipal,
    retriever: RetrieverDep,
) -> SearchOut:
    """Rank passages for a question or keywords. Only libraries you may read are searched; a
    library id you may not read answers 404 like one that does not exist."""
    library_ids = access.readable_library_ids(session, p, body.library_ids)
    result = retriever.search(
        session,
        body.query,
        library_ids,
        top_k=body.top_k,
        mode=body.mode,
        rerank=body.rerank,
        filters=access.document_filters(session, p, library_ids),
    )
    audit.record(
        session,
        "search",
        **p.audit_fields(),
        client_ip=client_ip(request),
        libraries=library_ids,
        documents=sorted({p.document_id for p in result.passages}),
        query_chars=len(result.query),
    )
    session.commit()
    found = getattr(request.app.state, "metrics", None)
    if found is not None:
        found.observe_retrieval("search", result.took_ms / 1000)
    return SearchOut(
        query=result.query,
        language="zh" if result.language == "zh" else "en",
        mode=result.mode,
        reranked=result.reranked,
        library_ids=library_ids,
        took_ms=result.took_ms,
        results=[PassageOut(**asdict(p), text_html=text_html(p.text)) for p in result.passages],
    )
