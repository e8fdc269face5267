"""Hybrid search over a set of libraries: dense (FAISS) and keyword (BM25), fused by RRF.

Permission first: the caller passes only the libraries it may read, and only their snapshots
are opened and searched, so another library cannot change what is returned or its order.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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

    def search(
        self,
        query: str,
        library_ids: Sequence[int],
        *,
        top_k: int = 10,
        candidates: int = 50,
        weights: Mapping[str, float] | None = None,
        modes: Sequence[str] = (DENSE, KEYWORD),
    ) -> list[Hit]:
        """Top `top_k` chunks of the given libraries for `query`.

        Rankers (`modes`): "dense" (main embedder, every chunk), "dense_en" (English
        embedder, English chunks; skipped without one), "bm25". Each takes its `candidates`
        best per library; lists are merged across libraries
        by score (dense: cosine, comparable everywhere; BM25: per-library statistics) and fused
        by weighted reciprocal rank.
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
            snap = self.reader(lib).current()
            if snap is None:
                continue
            if qvec is not None:
                found[DENSE] += [(c, s, lib) for c, s in snap.vectors.search(qvec, candidates)]
            if (
                qvec_en is not None
                and snap.vectors_en is not None
                and self.embedder_en is not None
                and snap.manifest.embedder_en == self.embedder_en.name
            ):
                found[DENSE_EN] += [
                    (c, s, lib) for c, s in snap.vectors_en.search(qvec_en, candidates)
                ]
            if tokens:
                found[KEYWORD] += [(c, s, lib) for c, s in snap.keywords.search(tokens, candidates)]
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
