"""BM25 keyword index over analyzer tokens (bm25s), addressed by chunk id."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import bm25s
import numpy as np


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

    def search(self, tokens: Sequence[str], k: int) -> list[tuple[int, float]]:
        if self._bm25 is None or not tokens or k <= 0:
            return []
        vocab = self._bm25.vocab_dict
        known = [t for t in tokens if t in vocab]
        if not known:
            return []
        scores = self._bm25.get_scores(known)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
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
