"""Hybrid search over a set of libraries: dense (FAISS) and keyword (BM25), fused by RRF.

Permission first: the caller passes only the libraries it may read, and only their snapshots
are opened and searched, so another library cannot change what is returned or its order. A
library readable only in part comes with a `ChunkFilter`, applied inside each index before
ranking: a forbidden chunk takes no candidate place in any ranker, so it cannot change which
permitted chunks are returned, how many, or their order (dense scores are untouched; BM25
scores keep the whole library's term statistics).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrieval.analyzer import analyze
from retrieval.embedders import Embedder, query_text
from retrieval.fusion import reciprocal_rank_fusion
from retrieval.index_store import LibraryReader

DENSE, DENSE_EN, KEYWORD = "dense", "dense_en", "bm25"


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    library_id: int
    score: float
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class ChunkFilter:
    """The chunks of one library a search may rank, when that is not all of them: with
    `allow` only `chunk_ids`, without it every chunk except those."""

    chunk_ids: np.ndarray
    allow: bool

    def __post_init__(self) -> None:
        ids = np.unique(np.asarray(self.chunk_ids, dtype=np.int64))
        object.__setattr__(self, "chunk_ids", ids)

    @property
    def allow_ids(self) -> np.ndarray | None:
        return self.chunk_ids if self.allow else None

    @property
    def deny_ids(self) -> np.ndarray | None:
        return None if self.allow else self.chunk_ids

    @property
    def permits_nothing(self) -> bool:
        return self.allow and len(self.chunk_ids) == 0

    def permits(self, chunk_id: int) -> bool:
        i = int(np.searchsorted(self.chunk_ids, chunk_id))
        found = i < len(self.chunk_ids) and int(self.chunk_ids[i]) == chunk_id
        return found == self.allow


class HybridSearcher:
    def __init__(self, indexes_dir: Path, embedder: Embedder, embedder_en: Embedder | None = None):
        self.indexes_dir = indexes_dir
        self.embedder = embedder
        self.embedder_en = embedder_en
        self._readers: dict[int, LibraryReader] = {}
        self._lock = threading.Lock()

    def reader(self, library_id: int) -> LibraryReader:
        with self._lock:
            reader = self._readers.get(library_id)
            if reader is None:
                reader = self._readers[library_id] = LibraryReader(self.indexes_dir, library_id)
            return reader

    def forget(self, library_id: int) -> None:
        """Drop the cached reader (and its snapshot) of a library that was deleted."""
        with self._lock:
            self._readers.pop(library_id, None)

    def search(
        self,
        query: str,
        library_ids: Sequence[int],
        *,
        top_k: int = 10,
        candidates: int = 50,
        weights: Mapping[str, float] | None = None,
        modes: Sequence[str] = (DENSE, KEYWORD),
        filters: Mapping[int, ChunkFilter] | None = None,
    ) -> list[Hit]:
        """Top `top_k` chunks of the given libraries for `query`.

        Rankers (`modes`): "dense" (main embedder, every chunk), "dense_en" (English
        embedder, English chunks; skipped without one), "bm25". Each takes its `candidates`
        best per library; lists are merged across libraries
        by score (dense: cosine, comparable everywhere; BM25: per-library statistics) and fused
        by weighted reciprocal rank.

        `filters` restricts a library to some of its chunks (a library without an entry is
        searched whole); each ranker applies it before taking its candidates.
        """
        if not query.strip() or not library_ids or top_k <= 0:
            return []
        found: dict[str, list[tuple[int, float, int]]] = {m: [] for m in modes}
        qvec = (
            self.embedder.embed([query_text(self.embedder, query)])[0] if DENSE in modes else None
        )
        qvec_en = None
        if DENSE_EN in modes and self.embedder_en is not None:
            qvec_en = self.embedder_en.embed([query_text(self.embedder_en, query)])[0]
        tokens = analyze(query) if KEYWORD in modes else []
        for lib in sorted(set(library_ids)):
            only = filters.get(lib) if filters else None
            if only is not None and only.permits_nothing:
                continue
            allow = only.allow_ids if only is not None else None
            deny = only.deny_ids if only is not None else None
            snap = self.reader(lib).current()
            if snap is None:
                continue
            if qvec is not None:
                found[DENSE] += [
                    (c, s, lib)
                    for c, s in snap.vectors.search(qvec, candidates, allow=allow, deny=deny)
                ]
            if (
                qvec_en is not None
                and snap.vectors_en is not None
                and self.embedder_en is not None
                and snap.manifest.embedder_en == self.embedder_en.name
            ):
                found[DENSE_EN] += [
                    (c, s, lib)
                    for c, s in snap.vectors_en.search(qvec_en, candidates, allow=allow, deny=deny)
                ]
            if tokens:
                found[KEYWORD] += [
                    (c, s, lib)
                    for c, s in snap.keywords.search(tokens, candidates, allow=allow, deny=deny)
                ]
        ranked = {
            name: sorted(hits, key=lambda h: (-h[1], h[0]))[:candidates]
            for name, hits in found.items()
        }
        library_of = {cid: lib for hits in ranked.values() for cid, _, lib in hits}
        raw = {name: {cid: s for cid, s, _ in hits} for name, hits in ranked.items()}
        fused = reciprocal_rank_fusion(
            {name: [cid for cid, _, _ in hits] for name, hits in ranked.items()}, weights
        )
        return [
            Hit(
                chunk_id=cid,
                library_id=library_of[cid],
                score=score,
                scores={name: raw[name][cid] for name in raw if cid in raw[name]},
            )
            for cid, score in fused[:top_k]
        ]
