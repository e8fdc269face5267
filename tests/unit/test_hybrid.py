"""Hybrid search: fusion arithmetic, and permission-first search over real indexes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from retrieval.analyzer import analyze
from retrieval.embedders import Embedder, load_embedder
from retrieval.fusion import reciprocal_rank_fusion
from retrieval.hybrid import DENSE, KEYWORD, HybridSearcher
from retrieval.index_store import sync_library


def test_rrf_sums_weighted_reciprocal_ranks() -> None:
    fused = dict(reciprocal_rank_fusion({"a": [1, 2, 3], "b": [3, 1]}, k=60))
    assert fused[1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[3] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[2] == pytest.approx(1 / 62)


def test_rrf_weights_and_deterministic_ties() -> None:
    fused = reciprocal_rank_fusion({"a": [1, 2], "b": [2, 1]}, {"a": 2.0, "b": 1.0})
    assert [i for i, _ in fused] == [1, 2]
    assert [i for i, _ in reciprocal_rank_fusion({"a": [5], "b": [4]})] == [4, 5]
    assert reciprocal_rank_fusion({"a": [1]}, {"a": 0.0}) == []


CORPUS = {
    1: {  # library 1
        10: "The quagga XQ-7731 zebra has been extinct since 1883.",
        11: "Annual leave: staff get twenty days of paid leave each year.",
        12: "差旅报销须在出差结束后十个工作日内提交。",
    },
    2: {  # library 2: overlaps library 1 on purpose
        20: "The quagga XQ-7731 zebra has been extinct since 1883.",
        21: "Quagga XQ-7731 quagga XQ-7731 quagga zebra notes.",
    },
}


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder("use-multilingual", threads=1)


def _index(root: Path, library: int, embedder: Embedder) -> None:
    docs = CORPUS[library]
    ids = sorted(docs)

    def fetch(wanted: Sequence[int]) -> np.ndarray:
        return embedder.embed([docs[i] for i in wanted])

    sync_library(
        root,
        library,
        embedder=embedder.name,
        dim=embedder.dim,
        wanted_ids=ids,
        wanted_tokens=[analyze(docs[i]) for i in ids],
        fetch_vectors=fetch,
        exact_max=1000,
    )


def test_only_permitted_libraries_are_searched_and_others_change_nothing(
    tmp_path: Path, embedder: Embedder
) -> None:
    _index(tmp_path, 1, embedder)
    searcher = HybridSearcher(tmp_path, embedder)
    before = searcher.search("quagga XQ-7731", [1], top_k=5)
    _index(tmp_path, 2, embedder)  # a library the caller may not read appears
    after = HybridSearcher(tmp_path, embedder).search("quagga XQ-7731", [1], top_k=5)
    assert before == after
    assert all(h.library_id == 1 for h in after)
    assert after[0].chunk_id == 10
    both = searcher.search("quagga XQ-7731", [1, 2], top_k=5)
    assert {h.library_id for h in both} == {1, 2}


def test_keyword_carries_exact_codes_and_chinese(tmp_path: Path, embedder: Embedder) -> None:
    _index(tmp_path, 1, embedder)
    searcher = HybridSearcher(tmp_path, embedder)
    hit = searcher.search("XQ-7731", [1], top_k=1)[0]
    assert hit.chunk_id == 10 and KEYWORD in hit.scores
    zh = searcher.search("出差报销期限", [1], top_k=1)[0]
    assert zh.chunk_id == 12 and set(zh.scores) == {DENSE, KEYWORD}
    assert searcher.search("   ", [1]) == [] and searcher.search("x", []) == []
