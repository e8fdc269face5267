"""BM25 keyword index over analyzer tokens (bm25s), addressed by chunk id."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import bm25s
import numpy as np


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the `k` highest scores, best first; ties go to the earlier position, so
    the choice depends only on the scores involved, not on the rest of the array."""
    n = len(scores)
    if k < n:
        kth = np.partition(scores, n - k)[n - k]  # the k-th highest score
        above = np.flatnonzero(scores > kth)
        tied = np.flatnonzero(scores == kth)[: k - len(above)]
        top = np.concatenate([above, tied])
    else:
        top = np.arange(n)
    return top[np.lexsort((top, -scores[top]))]


class KeywordIndex:
    def __init__(self, retriever: bm25s.BM25 | None, ids: np.ndarray):
        self._bm25 = retriever
        self.ids = ids

    @classmethod
    def build(cls, ids: Sequence[int], token_lists: Sequence[list[str]]) -> KeywordIndex:
        id_arr = np.asarray(ids, dtype=np.int64)
        if len(id_arr) == 0:
            return cls(None, id_arr)
        retriever = bm25s.BM25()
        # An empty token list would make bm25s drop the document; a sentinel keeps positions.
        corpus = [toks if toks else ["\u0000"] for toks in token_lists]
        retriever.index(corpus, show_progress=False)
        return cls(retriever, id_arr)

    def __len__(self) -> int:
        return len(self.ids)

    def search(
        self,
        tokens: Sequence[str],
        k: int,
        *,
        allow: np.ndarray | None = None,
        deny: np.ndarray | None = None,
    ) -> list[tuple[int, float]]:
        """The `k` best-scoring chunk ids (score > 0), best first.

        `allow` (only these ids) and `deny` (never these ids) zero the scores of the other
        chunks before the top k is taken, so they neither appear nor take a place. The scores
        themselves keep the whole library's statistics (IDF, average length): a permitted
        chunk scores the same with or without a filter. An empty `allow` permits nothing."""
        if self._bm25 is None or not tokens or k <= 0:
            return []
        if allow is not None and len(allow) == 0:
            return []
        vocab = self._bm25.vocab_dict
        known = [t for t in tokens if t in vocab]
        if not known:
            return []
        scores = self._bm25.get_scores(known)
        if allow is not None or (deny is not None and len(deny)):
            scores = np.array(scores)  # a copy: the mask must not touch bm25s's buffers
            if allow is not None:
                scores[~np.isin(self.ids, np.asarray(allow, dtype=np.int64))] = 0
            if deny is not None and len(deny):
                scores[np.isin(self.ids, np.asarray(deny, dtype=np.int64))] = 0
        top = _top_k(scores, k)
        return [(int(self.ids[i]), float(scores[i])) for i in top if scores[i] > 0]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "ids.npy", self.ids)
        if self._bm25 is not None:
            self._bm25.save(str(directory / "bm25"))

    @classmethod
    def load(cls, directory: Path) -> KeywordIndex:
        ids = np.load(directory / "ids.npy")
        bm25_dir = directory / "bm25"
        retriever = bm25s.BM25.load(str(bm25_dir)) if bm25_dir.exists() else None
        return cls(retriever, ids)
