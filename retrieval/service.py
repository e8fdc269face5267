"""The search service: query → passages with provenance, over the libraries a caller may read.

The caller (api, cli) decides which libraries may be searched; this service opens only those
libraries' index snapshots, so nothing about another library can influence the result. A
library the caller may read only in part comes with a `DocFilter`; it becomes a filter on chunk
ids that every ranker applies before ranking (see `retrieval.hybrid`). Steps:
hybrid ranking (dense + BM25, fused with the query language's weights) → hydration from the
database (chunks of deleted or superseded documents dropped) → optional cross-encoder rerank →
adjacent chunks of one document merged → near-duplicates collapsed → top k.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from sqlmodel import Session

from core.errors import ZhikuError
from core.repo import chunks as chunk_repo
from core.settings import Settings
from core.types import DocFilter, Passage
from retrieval.analyzer import is_keyword_query, text_language
from retrieval.embedders import Embedder, load_embedder
from retrieval.hybrid import DENSE, DENSE_EN, KEYWORD, ChunkFilter, HybridSearcher
from retrieval.passages import RankedChunk, collapse_near_duplicates, merge_adjacent
from retrieval.rerank import RERANK, Reranker, load_reranker
from retrieval.vector_index import set_search_threads

log = logging.getLogger(__name__)

MODES: dict[str, tuple[str, ...]] = {
    "dense": (DENSE, DENSE_EN),
    "bm25": (KEYWORD,),
    "hybrid": (DENSE, DENSE_EN, KEYWORD),
}
#: Chunks fetched per requested passage, so that merging, de-duplication and dropping deleted
#: documents still leave `top_k` passages.
OVERFETCH = 3


class BadQuery(ZhikuError):
    def __init__(self, message: str):
        super().__init__(message, code="bad_query", status=422)


@dataclass(frozen=True)
class SearchResult:
    query: str
    language: str
    mode: str
    reranked: bool
    passages: list[Passage]
    took_ms: float


class Retriever:
    """One per process: holds the query encoder, the optional reranker and index readers."""

    def __init__(
        self,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        reranker: Reranker | None = None,
    ):
        self.settings = settings
        set_search_threads(settings.search_threads)
        self.embedder = embedder or load_embedder(settings.embedder, threads=1)
        self.embedder_en = (
            load_embedder(settings.embedder_en, threads=1) if settings.embedder_en else None
        )
        self.reranker = reranker if reranker is not None else load_reranker(settings.reranker)
        self.searcher = HybridSearcher(settings.indexes_dir, self.embedder, self.embedder_en)

    def forget_library(self, library_id: int) -> None:
        """A library was deleted: let its cached index go."""
        self.searcher.forget(library_id)

    def check_query(self, query: str) -> str:
        """The query with full-width forms folded (NFKC) and white space collapsed."""
        query = " ".join(unicodedata.normalize("NFKC", query).split())
        if not query:
            raise BadQuery("the query is empty; type a question or some keywords")
        if len(query) > self.settings.max_query_chars:
            raise BadQuery(
                f"the query is {len(query)} characters long; the limit is "
                f"{self.settings.max_query_chars}. Shorten it to the question itself."
            )
        return query

    def search(
        self,
        session: Session,
        query: str,
        library_ids: Sequence[int],
        *,
        top_k: int | None = None,
        mode: str = "hybrid",
        rerank: bool | None = None,
        filters: Mapping[int, DocFilter] | None = None,
    ) -> SearchResult:
        """Passages for `query` from exactly `library_ids` (already permission-checked).

        `rerank`: None = rerank when a reranker is configured; True without one is an error.
        `filters`: per library id, the documents the caller may (or may not) read when that is
        not the whole library; a library without an entry is searched whole. Applied before
        ranking.
        """
        started = time.perf_counter()
        query = self.check_query(query)
        if mode not in MODES:
            raise BadQuery(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        k = top_k if top_k is not None else self.settings.search_top_k
        if not 1 <= k <= self.settings.search_max_top_k:
            raise BadQuery(f"top_k must be between 1 and {self.settings.search_max_top_k}")
        if rerank and self.reranker is None:
            raise BadQuery("no reranker is installed; set ZHIKU_RERANKER to a local model")
        lang = text_language(query)
        # A reranker serves the languages it was trained on; others keep the fused order.
        use_rerank = (
            self.reranker is not None and rerank is not False and lang in self.reranker.languages
        )
        # Look-ups (a name, a term, a product code) are decided by exact keyword matches.
        profile = "keyword" if is_keyword_query(query) else lang
        weights = self.settings.search_weights.get(profile) or self.settings.search_weights.get(
            lang
        )
        fetch = max(k * OVERFETCH, self.settings.rerank_candidates if use_rerank else 0)

        searched, chunk_filters = self._chunk_filters(session, library_ids, filters)
        hits = self.searcher.search(
            query,
            searched,
            top_k=fetch,
            candidates=max(self.settings.search_candidates, fetch),
            weights=weights,
            # The English embedder only serves English queries.
            modes=tuple(m for m in MODES[mode] if m != DENSE_EN or lang == "en"),
            filters=chunk_filters,
        )

        rows = chunk_repo.by_ids(session, [h.chunk_id for h in hits])
        if filters:
            rows = _permitted(rows, filters)
        ranked = [
            RankedChunk(
                chunk_id=h.chunk_id,
                document_id=row.chunk.document_id,
                library_id=row.chunk.library_id,
                ordinal=row.chunk.ordinal,
                text=row.chunk.text,
                title=row.title or row.filename,
                filename=row.filename,
                heading_path=list(row.chunk.heading_path),
                page_start=row.chunk.page_start,
                page_end=row.chunk.page_end,
                score=h.score,
                scores=dict(h.scores),
                library_name=row.library_name,
            )
            for h in hits
            # A chunk must belong to the library whose index returned it: a stale snapshot may
            # hold the id of a deleted chunk that SQLite gave to a new chunk elsewhere.
            if (row := rows.get(h.chunk_id)) is not None and row.chunk.library_id == h.library_id
        ]

        if use_rerank and self.reranker is not None and ranked:
            ranked = self._rerank(query, ranked)

        passages = collapse_near_duplicates(merge_adjacent(ranked))[:k]
        return SearchResult(
            query=query,
            language=lang,
            mode=mode,
            reranked=use_rerank,
            passages=passages,
            took_ms=_ms(started),
        )

    @staticmethod
    def _chunk_filters(
        session: Session, library_ids: Sequence[int], filters: Mapping[int, DocFilter] | None
    ) -> tuple[list[int], dict[int, ChunkFilter]]:
        """The libraries to search and their chunk filters. A library allowed no document is
        not searched at all; one with nothing denied is searched whole."""
        searched: list[int] = []
        out: dict[int, ChunkFilter] = {}
        for lib in library_ids:
            doc_filter = filters.get(lib) if filters else None
            if doc_filter is not None and doc_filter.document_ids:
                ids = chunk_repo.ids_for_documents(session, doc_filter.document_ids)
                out[lib] = ChunkFilter(np.asarray(ids, dtype=np.int64), doc_filter.allow)
            elif doc_filter is not None and doc_filter.allow:
                continue
            searched.append(lib)
        return searched, out

    def _rerank(self, query: str, ranked: list[RankedChunk]) -> list[RankedChunk]:
        """Re-order the head of the fused list by the reranker's scores.

        The reranker only judges passages in its languages: the others (Chinese passages
        under an English-only reranker) keep their fused positions, and the judged ones are
        sorted into the remaining positions. Only the head goes on, so every returned chunk
        was seen by the reranker or deliberately kept in place.
        """
        assert self.reranker is not None
        head = ranked[: self.settings.rerank_candidates]
        judged = [i for i, c in enumerate(head) if text_language(c.text) in self.reranker.languages]
        scores = self.reranker.score(query, [head[i].text for i in judged])
        rescored = sorted(
            (
                replace(head[i], score=s, scores={**head[i].scores, RERANK: s})
                for i, s in zip(judged, scores, strict=True)
            ),
            key=lambda c: -c.score,
        )
        out = list(head)
        for slot, chunk in zip(judged, rescored, strict=True):
            out[slot] = chunk
        return out


def _permitted(
    rows: dict[int, chunk_repo.ChunkWithSource], filters: Mapping[int, DocFilter]
) -> dict[int, chunk_repo.ChunkWithSource]:
    """Defence in depth: the rows whose document the filters permit. The indexes already
    applied the filters before ranking, so this never drops anything unless that is broken;
    if it does, the chunk is withheld and the fault logged."""
    out: dict[int, chunk_repo.ChunkWithSource] = {}
    for cid, row in rows.items():
        doc_filter = filters.get(row.chunk.library_id)
        if doc_filter is None or doc_filter.permits(row.chunk.document_id):
            out[cid] = row
        else:
            log.error(
                "search returned chunk %s of document %s, which the caller's filter forbids; "
                "withheld (the index filter failed)",
                cid,
                row.chunk.document_id,
            )
    return out


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)
